//! One network as a resolver sees it: the network's shared index (every attachment, read at
//! query time from the memory-mapped file the plugin keeps, `embedns_conf::index`) and the
//! asking container's own records on it, whole (its links, TTL, search list, upstreams),
//! which the plugin's `reload` refreshes.
//!
//! Nothing here grows with the network: peers live in the shared file, not in the resolver.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use embedns_conf::index::{IndexReader, IndexWriter, ReadError};
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;

use crate::log::Limiter;

/// The network's index could not be read: the query gets SERVFAIL, never a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub struct NetworkIndex {
    pub network: String,
    /// The asking container's own records on this network (one per interface).
    own: Vec<Record>,
    store: NetworkStore,
    reader: Mutex<IndexReader>,
    /// A damaged index is met by every query until it is repaired: logged at most every 2 s.
    log_limit: Limiter,
}

impl NetworkIndex {
    pub fn new(paths: &StatePaths, network: &str, own: Vec<Record>) -> Self {
        let store = NetworkStore::new(paths, network);
        NetworkIndex {
            network: network.to_string(),
            own,
            reader: Mutex::new(IndexReader::new(&store)),
            store,
            log_limit: Limiter::new(Duration::from_secs(2)),
        }
    }

    /// The same network with the container's own records replaced (the shared view kept).
    pub fn with_own(self, own: Vec<Record>) -> Self {
        NetworkIndex { own, ..self }
    }

    /// Every address of the attachments answering to a normalized name (container name,
    /// alias, `name.<domain>`); `None` when none does.
    pub fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable> {
        self.read(|r| r.addresses(name))
    }

    /// The container name of an attachment holding `ip`.
    pub fn pointer(&self, ip: &IpAddr) -> Result<Option<String>, Unavailable> {
        self.read(|r| r.pointer(ip))
    }

    /// How many attachments the network has.
    pub fn len(&self) -> usize {
        self.read(|r| r.len().map(Some)).ok().flatten().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The asking container's own records on the network.
    pub fn own(&self) -> impl Iterator<Item = &Record> {
        self.own.iter()
    }

    /// A read; when a writer held the index too long (it died mid-change) and no writer
    /// holds the network lock now, the index is repaired here and the read retried once.
    fn read<T>(
        &self,
        f: impl Fn(&mut IndexReader) -> Result<Option<T>, ReadError>,
    ) -> Result<Option<T>, Unavailable> {
        let mut reader = self.reader.lock().unwrap();
        match f(&mut reader) {
            Ok(v) => Ok(v),
            // Only before the network's first record; nothing to answer from.
            Err(ReadError::Missing) => Ok(None),
            Err(e) => {
                let log = self.log_limit.allow();
                if let Some(held) = log {
                    tracing::warn!(network = %self.network, held_back = held, "index unreadable ({e:?}); repairing it");
                }
                self.repair(log.is_some());
                f(&mut reader).map_err(|e| {
                    if log.is_some() {
                        tracing::error!(network = %self.network, "index still unreadable ({e:?})");
                    }
                    Unavailable
                })
            }
        }
    }

    fn repair(&self, log: bool) {
        let failed = match self.store.try_lock() {
            Ok(Some(lock)) => IndexWriter::open(&self.store, &lock).err(),
            Ok(None) => None, // a writer is at work; it repairs what it finds
            Err(e) => Some(e),
        };
        if let Some(e) = failed.filter(|_| log) {
            tracing::error!(network = %self.network, "repairing the index: {e}");
        }
    }
}
