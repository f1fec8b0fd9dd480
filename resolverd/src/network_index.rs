//! One network as a resolver sees it: the network's shared index (every attachment, read at
//! query time from the memory-mapped file the plugin keeps, `embedns_conf::index`) and the
//! asking container's own records on it, whole (its links, TTL, search list, upstreams),
//! which the plugin's `reload` refreshes.
//!
//! Nothing here grows with the network: peers live in the shared file, not in the resolver.
//! The resolver only reads the store (it runs unprivileged), so it never repairs the index: a
//! damaged one is rebuilt by the next writer (ADD, DEL, GC). Until then the resolver answers
//! from the network's records themselves, read into memory at most once a second: slower, but
//! never a wrong or missing answer.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use embedns_conf::index::{Entry, IndexReader, ReadError};
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;

use crate::log::Limiter;
use crate::peers::{addresses_in, pointer_in, Peers, Pointer, Unavailable};

/// How old the records read in place of a damaged index may be.
const FALLBACK_FRESH: Duration = Duration::from_secs(1);

/// One network as the resolver sees it: the shared index and the container's own records.
pub struct NetworkIndex {
    pub network: String,
    /// The asking container's own records on this network (one per interface).
    own: Vec<Record>,
    store: NetworkStore,
    reader: Mutex<IndexReader>,
    /// The records, read while the index is damaged, and when.
    fallback: Mutex<Option<(Instant, Vec<Entry>)>>,
    /// A damaged index is met by every query until it is rebuilt: logged at most every 2 s.
    log_limit: Limiter,
}

impl NetworkIndex {
    /// Network `network` of the state directory, with the container's own records on it.
    pub fn new(paths: &StatePaths, network: &str, own: Vec<Record>) -> Self {
        let store = NetworkStore::new(paths, network);
        NetworkIndex {
            network: network.to_string(),
            own,
            reader: Mutex::new(IndexReader::new(store.dir())),
            store,
            fallback: Mutex::new(None),
            log_limit: Limiter::new(Duration::from_secs(2)),
        }
    }

    /// The same network with the container's own records replaced (the shared view kept).
    pub fn with_own(self, own: Vec<Record>) -> Self {
        NetworkIndex { own, ..self }
    }

    /// [`Peers::addresses`], from the index (or, while it is damaged, the records).
    pub fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable> {
        self.read(|r| r.addresses(name), |entries| addresses_in(entries, name))
    }

    /// [`Peers::pointer`], from the index (or, while it is damaged, the records).
    pub fn pointer(&self, ip: &IpAddr) -> Result<Option<Pointer>, Unavailable> {
        self.read(|r| r.pointer(ip), |entries| pointer_in(entries, ip))
    }

    /// How many attachments the network has.
    pub fn len(&self) -> usize {
        self.read(|r| r.len().map(Some), |entries| Some(entries.len()))
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Whether the network has no attachment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The asking container's own records on the network.
    pub fn own(&self) -> &[Record] {
        &self.own
    }

    /// A read of the shared index; while it cannot be read (damaged, or a writer died in
    /// the middle of a change), the same question asked of the records.
    fn read<T>(
        &self,
        f: impl Fn(&mut IndexReader) -> Result<Option<T>, ReadError>,
        from_records: impl Fn(&[Entry]) -> Option<T>,
    ) -> Result<Option<T>, Unavailable> {
        let e = match f(&mut self.reader.lock().unwrap()) {
            Ok(v) => {
                self.fallback.lock().unwrap().take();
                return Ok(v);
            }
            // Only before the network's first record; nothing to answer from.
            Err(ReadError::Missing) => return Ok(None),
            Err(e) => e,
        };
        if let Some(held) = self.log_limit.allow() {
            tracing::warn!(network = %self.network, held_back = held, "index unreadable ({e:?}); answering from the records until a writer rebuilds it");
        }
        let mut fallback = self.fallback.lock().unwrap();
        let stale = fallback
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= FALLBACK_FRESH);
        if stale {
            *fallback = Some((Instant::now(), self.records()?));
        }
        Ok(fallback
            .as_ref()
            .and_then(|(_, entries)| from_records(entries)))
    }

    /// What the index would hold, from the records (a corrupt one is logged and skipped).
    fn records(&self) -> Result<Vec<Entry>, Unavailable> {
        let listed = self.store.list_all().map_err(|e| {
            tracing::error!(network = %self.network, "reading the records: {e}");
            Unavailable
        })?;
        let mut entries = Vec::with_capacity(listed.len());
        for (key, rec) in listed {
            match rec {
                Ok(r) => entries.push(Entry::keyed(key, &r)),
                Err(e) => tracing::error!(network = %self.network, %key, "not indexed: {e}"),
            }
        }
        Ok(entries)
    }
}

impl Peers for NetworkIndex {
    fn network(&self) -> &str {
        &self.network
    }

    fn addresses(&self, name: &str) -> Result<Option<Vec<IpAddr>>, Unavailable> {
        NetworkIndex::addresses(self, name)
    }

    fn pointer(&self, ip: &IpAddr) -> Result<Option<Pointer>, Unavailable> {
        NetworkIndex::pointer(self, ip)
    }

    fn own(&self) -> &[Record] {
        NetworkIndex::own(self)
    }
}
