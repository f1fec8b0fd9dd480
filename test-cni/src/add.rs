//! The one way tests run ADD through cnitool: `w.adding(&net, &c)`, described by the
//! builder's calls, then `ok()` or `run()`.

use std::process::Output;

use serde_json::Value;

use crate::world::{added, Container, Network, World};

/// An ADD being described (see [`World::adding`]).
pub struct Add<'a> {
    w: &'a World,
    net: &'a Network,
    c: &'a Container,
    name: Option<String>,
    args: Vec<String>,
    cap: Option<Value>,
    env: Vec<(String, String)>,
}

impl World {
    /// An ADD of container `c` to `net`, described by the builder's calls and run by its
    /// `ok()` (must succeed: the result JSON) or `run()` (cnitool's output):
    /// `w.adding(&net, &c).name("web").args("K=V").cap(json!({...})).ok()`.
    pub fn adding<'a>(&'a self, net: &'a Network, c: &'a Container) -> Add<'a> {
        Add::new(self, net, c)
    }
}

impl<'a> Add<'a> {
    fn new(w: &'a World, net: &'a Network, c: &'a Container) -> Add<'a> {
        Add {
            w,
            net,
            c,
            name: None,
            args: Vec::new(),
            cap: None,
            env: Vec::new(),
        }
    }

    /// The container's name, as `K8S_POD_NAME` (what podman and CRI send).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// More CNI_ARGS (`K=V;K2=V2`), after `IgnoreUnknown=1` and the name.
    pub fn args(mut self, args: &str) -> Self {
        if !args.is_empty() {
            self.args.push(args.to_string());
        }
        self
    }

    /// The capability arguments (CAP_ARGS: aliases, dns, links, name).
    pub fn cap(mut self, cap: Value) -> Self {
        self.cap = Some(cap);
        self
    }

    /// [`Add::cap`] when there is one.
    pub fn cap_opt(mut self, cap: Option<Value>) -> Self {
        self.cap = cap;
        self
    }

    /// CNI_CONTAINERID (cnitool derives one from the netns path otherwise).
    pub fn id(self, id: &str) -> Self {
        self.env(&[("CNI_CONTAINERID", id)])
    }

    /// More environment for cnitool (PATH, CNI_IFNAME, ...).
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Runs it; cnitool's output, whatever it says.
    pub fn run(self) -> Output {
        let mut cni_args = String::from("IgnoreUnknown=1");
        if let Some(n) = &self.name {
            cni_args.push_str(&format!(";K8S_POD_NAME={n}"));
        }
        for a in &self.args {
            cni_args.push(';');
            cni_args.push_str(a);
        }
        let cap = self.cap.as_ref().map(Value::to_string);
        let mut all: Vec<(&str, &str)> = vec![("CNI_ARGS", &cni_args)];
        if let Some(c) = &cap {
            all.push(("CAP_ARGS", c));
        }
        all.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.w.cnitool("add", &self.net.name, self.c, &all)
    }

    /// Runs it; it must succeed. The CNI result.
    pub fn ok(self) -> Value {
        let (net, c) = (self.net, self.c);
        added(net, c, self.run())
    }
}
