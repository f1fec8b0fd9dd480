//! Fuzz target: any bytes as another host's value in etcd (what a sync process copies into
//! the local store and index). Nothing may crash; a value that is taken must leave an index
//! that still answers this host's record, and one that is not must change nothing.

use embedns_conf::index::IndexReader;
use embedns_conf::attachment::RemoteKey;
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;
use embedns_sync::mirror::Remote;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = NetworkStore::new(&StatePaths::new(dir.path()), "n");
    let lock = store.lock().expect("the network lock");
    let ours = Record::with_defaults("n", "c0", Some("web"), &[], vec!["10.0.0.2".parse().unwrap()]);
    store.put(&lock, &ours).expect("this host's record");
    let key: RemoteKey = "b/c1@eth0".parse().expect("a remote key");
    afl::fuzz!(|data: &[u8]| {
        let mut remote = Remote::default();
        let Some(change) = remote.put("n", key.clone(), data.to_vec()) else {
            assert!(store.list_remote().unwrap().is_empty());
            return;
        };
        store.apply_remote(&lock, &[change]).expect("applied or left out, never an error");
        let mut reader = IndexReader::new(store.dir());
        assert!(reader.addresses("web").unwrap().is_some());
        if let Some(rec) = store.list_remote().unwrap().into_iter().find_map(|(_, r)| r.ok()) {
            for name in rec.names() {
                let _ = reader.addresses(name);
            }
            for ip in &rec.ips {
                let _ = reader.pointer(ip);
            }
        }
        // Gone again, as a delete event would make it.
        let gone = remote.remove(&key).expect("held");
        store.apply_remote(&lock, &[gone]).expect("removed");
        assert!(store.list_remote().unwrap().is_empty());
    });
}
