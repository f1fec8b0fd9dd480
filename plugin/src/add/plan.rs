//! What ADD decides, apart from what it does: which attachment slot the container's network
//! takes in its sandbox, what becomes of its resolver, and which rules a reused resolver
//! needs. Pure: the facts come in (a closure for the one that costs a question to the
//! resolver), the decision goes out; `attach.rs` carries it out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use embedns_conf::sandbox::{Attachment, Sandbox};

/// What becomes of the container's resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverPlan {
    /// The running resolver serves this netns: it reloads (it reads the new record).
    Reload,
    /// None serves this netns: a new one starts.
    Start,
    /// The running one lacks what this network needs (a host-netns thread for the host's
    /// upstreams, R18, made only at its start): it stops and a new one starts.
    Restart,
}

/// What the facts of an ADD make of the resolver: `serves`, a live resolver recorded in the
/// sandbox serves this netns; `wants_host`, this network takes the host's upstreams;
/// `has_host`, whether the running resolver has its host-netns thread (asked only when it
/// matters).
pub fn resolver(serves: bool, wants_host: bool, has_host: impl FnOnce() -> bool) -> ResolverPlan {
    match (serves, wants_host) {
        (false, _) => ResolverPlan::Start,
        (true, false) => ResolverPlan::Reload,
        (true, true) if has_host() => ResolverPlan::Reload,
        (true, true) => ResolverPlan::Restart,
    }
}

/// The rules a reloaded resolver's netns needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// As they are.
    Keep,
    /// Put back whole: a remover a DEL left (cancelled now) may have taken them away.
    Reinstall,
    /// The catch (R26) changed, its servers or its exempt owner: set again, with the jump to
    /// its chain when the rules had none (`jump`, installed by an earlier version).
    Catch { jump: bool },
}

/// The rules of a reload: `remover_cancelled`, a DEL's remover was stopped for this netns;
/// `catch_changed`, the caught servers or the owner exempt differ from what is installed;
/// `has_catch`, the installed rules have the catch chain's jump.
pub fn rules(remover_cancelled: bool, catch_changed: bool, has_catch: bool) -> Rules {
    if remover_cancelled {
        Rules::Reinstall
    } else if catch_changed {
        Rules::Catch { jump: !has_catch }
    } else {
        Rules::Keep
    }
}

/// The container's attachment for `network`/`ifname` in `sb`, with the nameservers it
/// catches now (R26): the one it has (an ADD repeated), or a new one on the first nameserver
/// address no other attachment of the container uses.
pub fn slot(sb: &mut Sandbox, network: &str, ifname: &str, caught: &[IpAddr]) -> Attachment {
    let (v4, v6) = split_families(caught);
    let same = |a: &&mut Attachment| a.network == network && a.ifname == ifname;
    if let Some(a) = sb.attachments.iter_mut().find(same) {
        (a.caught, a.caught6) = (v4, v6);
        return a.clone();
    }
    let a = Attachment {
        network: network.to_string(),
        ifname: ifname.to_string(),
        nameserver: sb.free_nameserver(),
        caught: v4,
        caught6: v6,
    };
    sb.attachments.push(a.clone());
    a
}

/// The nameservers caught, by family (the sandbox keeps them apart: `Attachment::caught6`).
fn split_families(caught: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in caught {
        match ip {
            IpAddr::V4(a) => v4.push(*a),
            IpAddr::V6(a) => v6.push(*a),
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolver_is_started_unless_one_serves_this_netns() {
        let never = || panic!("the resolver is not asked when nothing serves");
        assert_eq!(resolver(false, false, never), ResolverPlan::Start);
        assert_eq!(resolver(false, true, never), ResolverPlan::Start);
    }

    #[test]
    fn a_serving_resolver_reloads_and_is_asked_of_its_host_thread_only_when_it_matters() {
        let never = || panic!("no host upstreams wanted: nothing to ask");
        assert_eq!(resolver(true, false, never), ResolverPlan::Reload);
        assert_eq!(resolver(true, true, || true), ResolverPlan::Reload);
        assert_eq!(resolver(true, true, || false), ResolverPlan::Restart);
    }

    #[test]
    fn a_cancelled_remover_puts_the_rules_back_whole_whatever_else_changed() {
        assert_eq!(rules(true, false, true), Rules::Reinstall);
        assert_eq!(rules(true, true, false), Rules::Reinstall);
    }

    #[test]
    fn a_changed_catch_is_set_again_with_its_jump_only_where_it_was_missing() {
        assert_eq!(rules(false, true, true), Rules::Catch { jump: false });
        assert_eq!(rules(false, true, false), Rules::Catch { jump: true });
        assert_eq!(rules(false, false, true), Rules::Keep);
        assert_eq!(rules(false, false, false), Rules::Keep);
    }

    #[test]
    fn a_new_network_takes_the_next_free_nameserver_and_a_repeated_add_keeps_its_own() {
        let mut sb = Sandbox::default();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::a".parse().unwrap();
        let first = slot(&mut sb, "a", "eth0", &[v4]);
        let second = slot(&mut sb, "b", "eth1", &[v6]);
        assert_ne!(first.nameserver, second.nameserver);
        assert_eq!(second.caught6, vec!["fd00::a".parse::<Ipv6Addr>().unwrap()]);
        assert!(second.caught.is_empty());
        // The same network and interface again: its slot, with what it catches now.
        let again = slot(&mut sb, "a", "eth0", &[v4, v6]);
        assert_eq!(again.nameserver, first.nameserver);
        assert_eq!(sb.attachments.len(), 2);
        assert_eq!(sb.attachments[0].caught6.len(), 1);
        assert_eq!(sb.caught(), vec![v4, v6]);
    }
}
