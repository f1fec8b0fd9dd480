//! The shared index of one network: `networks/<net>/.index`, a memory-mapped file that every
//! resolver on the network reads at query time and that the plugin changes in place, under
//! the network's lock, when a record comes or goes.
//!
//! Why a shared file: with one resolver per container, a private copy of the network in each
//! resolver makes every change O(n) in all (n resolvers woken, each re-reading a record) and
//! makes a new resolver read n records before it answers. Here a change costs O(1) amortized
//! and wakes nobody, a new resolver maps one file, and the records' memory is the page
//! cache's, shared by every resolver of the network.
//!
//! Layout (native-endian; the file never leaves the machine): a 64-byte header; the peer
//! table (8 bytes a slot: offset and length of the peer's blob in the heap); the bucket
//! table (open addressing with linear probing, 12 bytes a bucket: kind, hash tag, slot; a
//! peer has one bucket per name it answers to, per address and for its key); the heap
//! (peer blobs, appended; a removed blob's bytes are counted as garbage).
//!
//! Consistency is a seqlock: the writer makes `seq` odd, changes the file, makes it even
//! again; a reader copies out what it needs and retries if `seq` moved meanwhile. Every
//! offset a reader follows is bounds-checked, so a torn read costs a retry, never a crash.
//! When a table is full the writer builds a new file sized for twice the content, renames it
//! over `.index` and sets `superseded` in the old one, which readers check on every lookup.
//!
//! The JSON records stay the source of truth: a missing or damaged index (wrong magic, or a
//! writer that died with `seq` odd) is rebuilt from them by the next writer.
//!
//! The parts: `layout` (the file's layout and the only unsafe access to a mapping), `entry`
//! (an attachment's bytes, written and read back in one place, and the hashes), `reader`
//! (the resolvers' seqlock reader), `writer` (the plugin's in-place writer). The index knows
//! a directory and the records it is rebuilt from ([`Source`]), nothing of the record store.

mod entry;
mod layout;
mod reader;
mod writer;

pub use entry::Entry;
pub use layout::{index_path, INDEX_FILE};
pub use reader::{IndexReader, Pointer, ReadError};
pub use writer::{IndexWriter, Source};

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::paths::StatePaths;
    use crate::record::Record;
    use crate::store::NetworkStore;

    fn rec(cid: &str, name: &str, aliases: &[&str], ips: &[&str]) -> Record {
        let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        Record::with_defaults("n", cid, Some(name), aliases, ips)
    }

    /// Network `n` in a fresh state dir (kept while the returned guard lives).
    fn network() -> (tempfile::TempDir, NetworkStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(&StatePaths::new(tmp.path()), "n");
        (tmp, store)
    }

    fn ip_of(i: usize) -> String {
        format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
    }

    fn sorted(v: Option<Vec<IpAddr>>) -> Vec<String> {
        let mut v: Vec<String> = v
            .unwrap_or_default()
            .iter()
            .map(|i| i.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_local_attachment_keeps_the_ptr_of_its_address_against_another_hosts() {
        use crate::store::RemoteChange;
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        let mut reader = IndexReader::new(store.dir());
        // Another host's record claims 10.0.0.2 first, then the local one takes it.
        let forged = RemoteChange::Put {
            host: "other".into(),
            record: Box::new(rec("x1", "forged", &[], &["10.0.0.2"])),
        };
        assert!(store.apply_remote(&lock, &[forged]).unwrap().is_empty());
        let ptr = |r: &mut IndexReader| {
            (r.pointer(&"10.0.0.2".parse().unwrap()).unwrap()).map(|p| p.name)
        };
        assert_eq!(ptr(&mut reader).as_deref(), Some("forged"));
        store
            .put(&lock, &rec("c1", "web", &[], &["10.0.0.2"]))
            .unwrap();
        assert_eq!(ptr(&mut reader).as_deref(), Some("web"));
        // And the other way round: a claim that comes later does not take it either.
        let later = RemoteChange::Put {
            host: "third".into(),
            record: Box::new(rec("x2", "later", &[], &["10.0.0.2"])),
        };
        assert!(store.apply_remote(&lock, &[later]).unwrap().is_empty());
        assert_eq!(ptr(&mut reader).as_deref(), Some("web"));
    }

    #[test]
    fn an_index_of_a_release_before_r35_is_rebuilt_with_its_name_forms() {
        use std::os::unix::fs::FileExt;
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        let mut reader = IndexReader::new(store.dir());
        store
            .put(&lock, &rec("c1", "old", &[], &["10.0.0.2"]))
            .unwrap();
        assert_eq!(sorted(reader.addresses("/old").unwrap()), ["10.0.0.2"]);
        // What an earlier release wrote: no forms field (zero). The record changed on disk
        // behind the index's back shows whether the next writer rebuilt it from the records.
        let mut renamed = rec("c1", "renamed", &[], &["10.0.0.2"]);
        renamed.ifname = "eth0".into();
        let record_file = store.dir().join(format!("{}.json", renamed.key()));
        assert!(record_file.exists(), "{}", record_file.display());
        std::fs::write(&record_file, serde_json::to_vec(&renamed).unwrap()).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(index_path(store.dir()))
            .unwrap();
        file.write_all_at(&0u32.to_ne_bytes(), layout::H_FORMS as u64)
            .unwrap();
        let mut scoped = rec("c2", "new", &[], &["10.0.0.3"]);
        scoped.namespace = Some("a".into());
        store.put(&lock, &scoped).unwrap();
        let mut reader = IndexReader::new(store.dir());
        assert_eq!(
            reader.addresses("old").unwrap(),
            None,
            "rebuilt from the records"
        );
        assert_eq!(sorted(reader.addresses("/renamed").unwrap()), ["10.0.0.2"]);
        assert_eq!(sorted(reader.addresses("a/new").unwrap()), ["10.0.0.3"]);
        assert_eq!(sorted(reader.addresses("new").unwrap()), ["10.0.0.3"]);
        assert_eq!(reader.addresses("/new").unwrap(), None);
    }

    #[test]
    fn insert_lookup_replace_remove() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        let mut reader = IndexReader::new(store.dir());
        assert_eq!(reader.addresses("web"), Err(ReadError::Missing));
        store
            .put(&lock, &rec("c1", "web", &["www"], &["10.0.0.2", "fd00::2"]))
            .unwrap();
        store
            .put(&lock, &rec("c2", "api", &["www"], &["10.0.0.3"]))
            .unwrap();
        assert_eq!(
            sorted(reader.addresses("web").unwrap()),
            ["10.0.0.2", "fd00::2"]
        );
        assert_eq!(
            sorted(reader.addresses("www").unwrap()),
            ["10.0.0.2", "10.0.0.3", "fd00::2"]
        );
        assert_eq!(reader.addresses("nope").unwrap(), None);
        assert_eq!(
            reader
                .pointer(&"10.0.0.3".parse().unwrap())
                .unwrap()
                .map(|p| p.name)
                .as_deref(),
            Some("api")
        );
        assert_eq!(reader.pointer(&"10.0.0.9".parse().unwrap()).unwrap(), None);
        assert_eq!(reader.len().unwrap(), 2);
        // Replacing a record drops its old names and addresses.
        store
            .put(&lock, &rec("c1", "web", &[], &["10.0.0.4"]))
            .unwrap();
        assert_eq!(sorted(reader.addresses("www").unwrap()), ["10.0.0.3"]);
        assert_eq!(sorted(reader.addresses("web").unwrap()), ["10.0.0.4"]);
        assert_eq!(reader.pointer(&"10.0.0.2".parse().unwrap()).unwrap(), None);
        assert_eq!(reader.len().unwrap(), 2);
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(reader.addresses("api").unwrap(), None);
        assert_eq!(reader.addresses("www").unwrap(), None);
        assert_eq!(reader.len().unwrap(), 1);
        // Removing what is not there changes nothing.
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(reader.len().unwrap(), 1);
    }

    #[test]
    fn growth_and_churn_keep_an_open_reader_right() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        store
            .put(&lock, &rec("c0", "c0", &[], &[&ip_of(0)]))
            .unwrap();
        let mut reader = IndexReader::new(store.dir());
        assert_eq!(reader.len().unwrap(), 1);
        let first_len = std::fs::metadata(index_path(store.dir())).unwrap().len();
        for i in 1..1000 {
            store
                .put(
                    &lock,
                    &rec(&format!("c{i}"), &format!("c{i}"), &["all"], &[&ip_of(i)]),
                )
                .unwrap();
        }
        assert!(std::fs::metadata(index_path(store.dir())).unwrap().len() > first_len);
        assert_eq!(reader.len().unwrap(), 1000);
        assert_eq!(sorted(reader.addresses("c999").unwrap()), [ip_of(999)]);
        assert_eq!(reader.addresses("all").unwrap().unwrap().len(), 999);
        // Churn: tombstones and garbage are compacted by rebuilds, and nothing is lost.
        for round in 0..3 {
            for i in (1..1000).step_by(2) {
                store.remove(&lock, &format!("c{i}"), "eth0").unwrap();
            }
            assert_eq!(reader.len().unwrap(), 500, "round {round}");
            assert_eq!(reader.addresses("c3").unwrap(), None);
            for i in (1..1000).step_by(2) {
                store
                    .put(
                        &lock,
                        &rec(&format!("c{i}"), &format!("c{i}"), &["all"], &[&ip_of(i)]),
                    )
                    .unwrap();
            }
            assert_eq!(reader.len().unwrap(), 1000);
            assert_eq!(sorted(reader.addresses("c3").unwrap()), [ip_of(3)]);
            assert_eq!(reader.addresses("all").unwrap().unwrap().len(), 999);
        }
        let size = std::fs::metadata(index_path(store.dir())).unwrap().len();
        assert!(size < 2 << 20, "index of 1000 records is {size} bytes");
    }

    #[test]
    fn a_writer_that_died_mid_change_is_repaired_from_the_records() {
        let (_tmp, store) = network();
        let lock = store.lock().unwrap();
        store
            .put(&lock, &rec("c1", "web", &[], &["10.0.0.2"]))
            .unwrap();
        let mut reader = IndexReader::new(store.dir());
        assert!(reader.addresses("web").unwrap().is_some());
        // A writer dies with seq odd: readers give up after their patience, not forever.
        {
            let locked = store.locked(&lock);
            let w = IndexWriter::open(&locked).unwrap();
            w.mem().seq().fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(reader.addresses("web"), Err(ReadError::Busy));
        // The next writer rebuilds from the JSON records and the reader moves to the new file.
        store
            .put(&lock, &rec("c2", "api", &[], &["10.0.0.3"]))
            .unwrap();
        assert_eq!(sorted(reader.addresses("web").unwrap()), ["10.0.0.2"]);
        assert_eq!(sorted(reader.addresses("api").unwrap()), ["10.0.0.3"]);
        // Garbage in place of the index is rebuilt too.
        std::fs::write(index_path(store.dir()), b"not an index").unwrap();
        let mut fresh = IndexReader::new(store.dir());
        assert_eq!(fresh.addresses("web"), Err(ReadError::Damaged));
        store.remove(&lock, "c2", "eth0").unwrap();
        assert_eq!(sorted(fresh.addresses("web").unwrap()), ["10.0.0.2"]);
        assert_eq!(fresh.addresses("api").unwrap(), None);
    }

    #[test]
    fn readers_never_see_a_wrong_answer_while_a_writer_churns() {
        let (_tmp, store) = network();
        {
            let lock = store.lock().unwrap();
            store
                .put(&lock, &rec("c0", "c0", &[], &[&ip_of(0)]))
                .unwrap();
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut r = IndexReader::new(store.dir());
                let (mut hits, mut lookups) = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    for i in 0..300 {
                        lookups += 1;
                        // Each name only ever has its own address.
                        if let Some(ips) = r.addresses(&format!("c{i}")).unwrap() {
                            assert_eq!(sorted(Some(ips)), [ip_of(i)]);
                            hits += 1;
                        }
                    }
                }
                (hits, lookups)
            });
            for round in 0..4 {
                for i in 1..300 {
                    let lock = store.lock().unwrap();
                    if round & 1 == 0 {
                        store
                            .put(
                                &lock,
                                &rec(&format!("c{i}"), &format!("c{i}"), &[], &[&ip_of(i)]),
                            )
                            .unwrap();
                    } else {
                        store.remove(&lock, &format!("c{i}"), "eth0").unwrap();
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            let (hits, lookups) = reader.join().unwrap();
            assert!(hits > 0 && lookups > hits, "{hits} hits of {lookups}");
        });
    }
}
