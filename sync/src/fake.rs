//! An etcd in memory for the unit tests of the session and the claim: keys with revisions
//! and leases, transactions with etcd's semantics for the few the session makes, watches
//! with history (and compaction), lease renewals and expiry, and an endpoint that refuses.
//! The multi-host integration tests run the real thing (`99_multihost*`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::{bail, Result};
use embedns_conf::multihost::shared::EtcdConf;
use tokio::sync::{mpsc, Notify};

use crate::etcd::{
    Cancelled, Connect, Created, Etcd, Event, Fence, Kv, Renew, Renewals, Watch, WatchBatch,
};

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
}

#[derive(Default)]
struct State {
    revision: i64,
    keys: BTreeMap<String, Entry>,
    /// Leases and whether each is alive.
    leases: BTreeMap<i64, bool>,
    history: Vec<Event>,
    compacted: i64,
    watchers: Vec<(String, mpsc::UnboundedSender<WatchBatch>)>,
    renewals: Vec<(i64, mpsc::UnboundedSender<i64>)>,
    /// Transactions that wrote, and listings made.
    writes: u64,
    listings: u64,
}

/// The cluster: shared by every session and the test.
#[derive(Clone, Default)]
pub struct Fake {
    state: Rc<RefCell<State>>,
    changed: Rc<Notify>,
    /// Connections are refused while set.
    pub refuse: Rc<Cell<bool>>,
    /// The next message of a watch is one over the client's limit (once).
    pub too_large: Rc<Cell<bool>>,
}

impl Fake {
    fn write(&self, key: &str, value: Option<Vec<u8>>, lease: i64) {
        let mut s = self.state.borrow_mut();
        s.revision += 1;
        let mod_revision = s.revision;
        let event = match value {
            Some(value) => {
                let entry = Entry {
                    value: value.clone(),
                    mod_revision,
                    lease,
                };
                s.keys.insert(key.to_string(), entry);
                Event {
                    deleted: false,
                    kv: Kv {
                        key: key.to_string(),
                        value,
                        mod_revision,
                        lease,
                    },
                }
            }
            None => {
                if s.keys.remove(key).is_none() {
                    s.revision -= 1;
                    return;
                }
                Event {
                    deleted: true,
                    kv: Kv {
                        key: key.to_string(),
                        value: Vec::new(),
                        mod_revision,
                        lease: 0,
                    },
                }
            }
        };
        let revision = s.revision;
        s.watchers.retain(|(prefix, tx)| {
            !event.kv.key.starts_with(prefix.as_str())
                || tx
                    .send(WatchBatch {
                        events: vec![event.clone()],
                        revision,
                        cancelled: None,
                    })
                    .is_ok()
        });
        s.history.push(event);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Another host (or anyone with write access) puts `key`.
    pub fn put(&self, key: &str, value: &[u8]) {
        self.write(key, Some(value.to_vec()), 0);
    }

    /// Someone deletes `key`.
    pub fn delete(&self, key: &str) {
        self.write(key, None, 0);
    }

    /// `key`'s value and lease.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        let s = self.state.borrow();
        s.keys.get(key).map(|e| (e.value.clone(), e.lease))
    }

    /// `key`'s revision of its last change.
    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        self.state.borrow().keys.get(key).map(|e| e.mod_revision)
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let s = self.state.borrow();
        s.keys
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Transactions that wrote so far, and listings.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.borrow();
        (s.writes, s.listings)
    }

    /// Events before `revision` are gone: a watch from before it is cancelled.
    pub fn compact(&self, revision: i64) {
        let mut s = self.state.borrow_mut();
        s.compacted = revision;
        s.history.retain(|e| e.kv.mod_revision >= revision);
    }

    /// Every watch ends (the member's connection dropped).
    pub fn drop_watches(&self) {
        self.state.borrow_mut().watchers.clear();
    }

    /// Waits until `done` holds (each change of the store wakes it), for at most `within`.
    pub async fn until(&self, within: std::time::Duration, mut done: impl FnMut(&Fake) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                assert!(done(self), "not within {within:?}");
                return;
            }
        }
    }

    fn lease_ok(&self, lease: i64) -> Result<()> {
        if lease != 0 && self.state.borrow().leases.get(&lease) != Some(&true) {
            bail!("etcdserver: requested lease not found");
        }
        Ok(())
    }
}

/// One session's connection to the fake.
pub struct Member(Fake);

/// Connects sessions to the fake, or refuses while [`Fake::refuse`] is set.
pub struct FakeConnect(pub Fake);

impl Connect for FakeConnect {
    type Etcd = Member;

    async fn connect(&self, _conf: &EtcdConf, endpoint: &str, _claim: &str) -> Result<Member> {
        if self.0.refuse.get() {
            bail!("{endpoint}: connection refused");
        }
        Ok(Member(self.0.clone()))
    }
}

pub struct FakeRenew(Fake, i64);
pub struct FakeRenewals(mpsc::UnboundedReceiver<i64>);
pub struct FakeWatch(mpsc::UnboundedReceiver<WatchBatch>, Rc<Cell<bool>>);

impl Etcd for Member {
    type Renew = FakeRenew;
    type Renewals = FakeRenewals;
    type Watch = FakeWatch;

    async fn lease_alive(&mut self, lease: i64) -> Result<bool> {
        Ok(self.0.state.borrow().leases.get(&lease) == Some(&true))
    }

    async fn grant(&mut self, _ttl: u64) -> Result<i64> {
        let mut s = self.0.state.borrow_mut();
        let id = 0x1000 + s.leases.len() as i64;
        s.leases.insert(id, true);
        Ok(id)
    }

    async fn keep_alive(&mut self, lease: i64) -> Result<(FakeRenew, FakeRenewals)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.state.borrow_mut().renewals.push((lease, tx));
        Ok((FakeRenew(self.0.clone(), lease), FakeRenewals(rx)))
    }

    async fn revoke(&mut self, lease: i64) -> Result<()> {
        let gone: Vec<String> = {
            let mut s = self.0.state.borrow_mut();
            s.leases.insert(lease, false);
            s.writes += 1;
            let held = s.keys.iter().filter(|(_, e)| e.lease == lease);
            held.map(|(k, _)| k.clone()).collect()
        };
        for key in gone {
            self.0.write(&key, None, 0);
        }
        Ok(())
    }

    async fn create(&mut self, key: &str, value: &str, lease: i64) -> Result<Created> {
        self.0.lease_ok(lease)?;
        if let Some((value, lease)) = self.0.get(key) {
            return Ok(Created::Held { value, lease });
        }
        self.0.state.borrow_mut().writes += 1;
        self.0.write(key, Some(value.as_bytes().to_vec()), lease);
        Ok(Created::Created)
    }

    async fn renew_claim(&mut self, key: &str, value: &str, lease: i64) -> Result<bool> {
        self.0.lease_ok(lease)?;
        if self.0.get(key).is_none_or(|(v, _)| v != value.as_bytes()) {
            return Ok(false);
        }
        self.0.state.borrow_mut().writes += 1;
        self.0.write(key, Some(value.as_bytes().to_vec()), lease);
        Ok(true)
    }

    async fn put_fenced(
        &mut self,
        fence: Fence<'_>,
        puts: &[(String, Vec<u8>)],
        lease: i64,
    ) -> Result<Option<i64>> {
        self.0.lease_ok(lease)?;
        if self.0.get(fence.claim).map(|(v, _)| v) != Some(fence.claimant.as_bytes().to_vec()) {
            return Ok(None);
        }
        self.0.state.borrow_mut().writes += 1;
        for (key, body) in puts {
            self.0.write(key, Some(body.clone()), lease);
        }
        Ok(Some(self.0.state.borrow().revision))
    }

    async fn delete_fenced(
        &mut self,
        fence: Fence<'_>,
        key: &str,
        mod_revision: i64,
    ) -> Result<()> {
        let held = self.0.get(fence.claim).map(|(v, _)| v);
        if held == Some(fence.claimant.as_bytes().to_vec())
            && self.0.mod_revision(key) == Some(mod_revision)
        {
            self.0.state.borrow_mut().writes += 1;
            self.0.write(key, None, 0);
        }
        Ok(())
    }

    async fn list(&mut self, prefix: &str) -> Result<(i64, Vec<Kv>)> {
        let mut s = self.0.state.borrow_mut();
        s.listings += 1;
        let kvs = (s.keys.iter())
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| Kv {
                key: k.clone(),
                value: e.value.clone(),
                mod_revision: e.mod_revision,
                lease: e.lease,
            })
            .collect();
        Ok((s.revision, kvs))
    }

    async fn watch(&mut self, prefix: &str, from: i64) -> Result<FakeWatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.0.state.borrow_mut();
        if from < s.compacted {
            let _ = tx.send(WatchBatch {
                cancelled: Some(Cancelled {
                    reason: "mvcc: required revision has been compacted".into(),
                    compact_revision: s.compacted,
                }),
                ..WatchBatch::default()
            });
            return Ok(FakeWatch(rx, self.0.too_large.clone()));
        }
        let events: Vec<Event> = (s.history.iter())
            .filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        if !events.is_empty() {
            let revision = s.revision;
            let _ = tx.send(WatchBatch {
                events,
                revision,
                cancelled: None,
            });
        }
        s.watchers.push((prefix.to_string(), tx));
        Ok(FakeWatch(rx, self.0.too_large.clone()))
    }
}

impl Renew for FakeRenew {
    async fn renew(&mut self) -> Result<()> {
        let alive = self.0.state.borrow().leases.get(&self.1) == Some(&true);
        let s = self.0.state.borrow();
        for (_, tx) in s.renewals.iter().filter(|(l, _)| *l == self.1) {
            let _ = tx.send(if alive { 6 } else { 0 });
        }
        Ok(())
    }
}

impl Renewals for FakeRenewals {
    async fn next(&mut self) -> Result<Option<i64>> {
        Ok(self.0.recv().await)
    }
}

impl Watch for FakeWatch {
    async fn next(&mut self) -> Result<Option<WatchBatch>> {
        let batch = self.0.recv().await;
        if self.1.replace(false) {
            return Err(crate::etcd::EtcdError::TooLarge(16 << 20).into());
        }
        Ok(batch)
    }
}
