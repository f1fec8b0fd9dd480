//! Fuzz target: any bytes as the plugin's stdin, and as the text of CNI_ARGS, EMBEDNS_LINKS,
//! a resolv.conf and the names that become paths and DNS names. It must never panic; what
//! it accepts must be safe to use as a path component.

use embedns_conf::cni::{self, ResultDns};
use embedns_conf::names;
use embedns_conf::netconf::{links_from_args, parse_cni_args, NetConf};
use embedns_conf::resolv::ResolvConf;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(conf) = NetConf::parse(data) {
            assert!(!conf.name.contains('/') && conf.name != "." && conf.name != "..");
            let _ = cni::check_version(&conf.cni_version, "ADD");
            if let Some(prev) = &conf.prev_result {
                let _ = cni::container_ips(prev);
                let out = cni::add_result(Some(prev), &conf.cni_version, &ResultDns::default());
                assert!(out.is_object());
            }
            for a in &conf.aliases {
                assert!(names::dns_name("alias", a).is_ok());
            }
            // What the container's resolv.conf is made of never adds a line.
            let rc = ResolvConf {
                nameservers: vec![],
                search: conf
                    .dns
                    .search
                    .iter()
                    .chain(&conf.dns_capability.searches)
                    .cloned()
                    .collect(),
                options: conf
                    .dns
                    .options
                    .iter()
                    .chain(&conf.dns_capability.options)
                    .cloned()
                    .collect(),
            };
            let rendered = rc.render();
            assert_eq!(
                rendered.lines().count(),
                4 - usize::from(rc.search.is_empty()),
                "{rendered}"
            );
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = parse_cni_args(text);
            let _ = links_from_args(text);
            let rc = ResolvConf::parse(text);
            assert!(rc.upstreams().len() <= 3);
            let rendered = rc.render();
            let servers = rendered
                .lines()
                .filter(|l| l.starts_with("nameserver"))
                .count();
            assert_eq!(servers, 1, "{rendered}");
            if names::network(text).is_ok() || names::container_id(text).is_ok() {
                assert!(!text.contains('/') && !text.starts_with('.'));
            }
        }
    });
}
