//! Fuzz target: any bytes as a network's shared index file. Readers must never crash on it
//! (every offset they follow is bounds-checked), and the next writer must replace whatever it
//! is with an index built from the records, which readers then answer from.

use embedns_conf::index::{IndexReader, IndexWriter};
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;

fn record() -> Record {
    let ips = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
    let mut r = Record::with_defaults("n", "c1", Some("web"), &["www"], ips);
    r.domain_name = Some("dns.test".into());
    r
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = NetworkStore::new(&StatePaths::new(dir.path()), "n");
    let lock = store.lock().expect("the network lock");
    store.put(&lock, &record()).expect("a record");
    let path = embedns_conf::index::index_path(store.dir());
    let tmp = dir.path().join("next-index");
    afl::fuzz!(|data: &[u8]| {
        // Renamed in, as a writer replaces it (never truncated under a reader's mapping).
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let mut reader = IndexReader::new(store.dir());
        let _ = reader.addresses("web");
        let _ = reader.addresses("www.dns.test");
        let _ = reader.pointer(&"10.0.0.2".parse().unwrap());
        let _ = reader.len();
        // The next writer leaves a usable index with the records' content.
        let locked = store.locked(&lock);
        let w = IndexWriter::open(&locked).expect("the index is rebuilt");
        drop(w.insert(&record()).expect("the record is indexed"));
        let mut reader = IndexReader::new(store.dir());
        let got = reader.addresses("web").expect("a readable index");
        assert_eq!(got.map(|v| v.len()), Some(2));
    });
}
