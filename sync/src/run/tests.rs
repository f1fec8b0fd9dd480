//! The session, the claim and the lost-key logic against an etcd in memory (`fake.rs`), with
//! a real store in a temporary directory and real inotify (R27-R33).

use std::net::IpAddr;
use std::time::Duration;

use embedns_conf::multihost::keys::Layout;
use embedns_conf::multihost::peer::PeerRecord;
use embedns_conf::multihost::shared::{EtcdConf, SyncStatus};
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;

use super::{End, Worker};
use crate::fake::{Fake, FakeConnect};
use crate::local::LocalWatch;

const NET: &str = "n";
const WITHIN: Duration = Duration::from_secs(5);

/// A state directory with one local container on network `n`, as host `h1`.
struct Host {
    _dir: tempfile::TempDir,
    paths: StatePaths,
    store: NetworkStore,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let store = NetworkStore::new(&paths, NET);
        let host = Host {
            _dir: dir,
            paths,
            store,
        };
        host.add("c1", "web", [10, 1, 0, 2]);
        host
    }

    fn add(&self, cid: &str, name: &str, ip: [u8; 4]) {
        let record = Record::with_defaults(NET, cid, Some(name), &[], vec![IpAddr::from(ip)]);
        self.store
            .put(&self.store.lock().unwrap(), &record)
            .unwrap();
    }

    fn remove(&self, cid: &str) {
        let lock = self.store.lock().unwrap();
        self.store.remove(&lock, cid, "eth0").unwrap();
    }

    fn sync(&self) -> (Worker, LocalWatch) {
        let conf: EtcdConf = serde_json::from_value(serde_json::json!({
            "endpoints": ["http://fake-1:2379", "http://fake-2:2379"], "host": "h1", "ttl": 6,
        }))
        .unwrap();
        let sync = Worker::new(&self.paths, NET, conf.settle().unwrap(), None);
        (sync, LocalWatch::new(self.store.dir()).unwrap())
    }

    /// The other hosts' records held here, by name.
    fn remote_names(&self) -> Vec<String> {
        let listed = self.store.list_remote().unwrap();
        let mut names: Vec<String> = listed
            .into_iter()
            .filter_map(|(_, r)| r.ok()?.name)
            .collect();
        names.sort();
        names
    }

    fn status(&self) -> Option<SyncStatus> {
        let body = std::fs::read(self.paths.sync_status(NET)).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Waits (for at most [`WITHIN`]) until `done` holds of this host's store and status.
    async fn until(&self, what: &str, mut done: impl FnMut(&Host) -> bool) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        let mut every = tokio::time::interval(Duration::from_millis(10));
        while !done(self) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            every.tick().await;
        }
    }
}

fn keys() -> Layout<'static> {
    Layout::new("/embedns", NET)
}

fn peer(cid: &str, name: &str, ip: [u8; 4]) -> Vec<u8> {
    PeerRecord::encode(&Record::with_defaults(
        NET,
        cid,
        Some(name),
        &[],
        vec![IpAddr::from(ip)],
    ))
}

/// Waits until h1's container c1 is published, and returns its key.
async fn published(fake: &Fake) -> String {
    let mine = keys().record("h1", "c1@eth0");
    fake.until(WITHIN, |f| f.get(&mine).is_some()).await;
    mine
}

/// Runs `sync` until `body` is done; the sync must not end before.
async fn running(sync: Worker, fake: &Fake, local: LocalWatch, body: impl std::future::Future) {
    let connect = FakeConnect(fake.clone());
    let run = sync.run(&connect, local);
    tokio::select! {
        end = run => panic!("the sync ended: {end:?}"),
        _ = body => {}
    }
}

#[tokio::test]
async fn r27_r32_a_session_claims_publishes_and_takes_in_other_hosts_records() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        let mine = published(&fake).await;
        let (claim, claim_lease) = fake.get(&keys().claim("h1")).expect("the claim");
        assert!(String::from_utf8(claim)
            .unwrap()
            .ends_with(&*h.paths.root().to_string_lossy()));
        let (body, lease) = fake.get(&mine).unwrap();
        assert_eq!(lease, claim_lease, "records and claim live by one lease");
        assert_eq!(
            PeerRecord::decode(&body).unwrap().name.as_deref(),
            Some("web")
        );
        // Another host's record arrives through the watch.
        fake.put(&keys().claim("h2"), b"other 1");
        fake.put(
            &keys().record("h2", "c9@eth0"),
            &peer("c9", "db", [10, 2, 0, 9]),
        );
        h.until("db held here", |h| h.remote_names() == ["db"])
            .await;
        // A local ADD is published, a DEL withdrawn.
        h.add("c2", "api", [10, 1, 0, 3]);
        let api = keys().record("h1", "c2@eth0");
        fake.until(WITHIN, |f| f.get(&api).is_some()).await;
        h.remove("c2");
        fake.until(WITHIN, |f| f.get(&api).is_none()).await;
        h.until("the status", |h| {
            h.status()
                .is_some_and(|s| s.published == 1 && s.remote_records == 1)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn r32_a_claim_held_by_another_machine_is_refused_and_nothing_is_published() {
    let h = Host::new();
    let fake = Fake::default();
    fake.put(&keys().claim("h1"), b"0123 /run/embedns");
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        h.until("the refusal in the status", |h| {
            h.status().and_then(|s| s.claim_refused).as_deref() == Some("0123 /run/embedns")
        })
        .await;
        assert!(fake.keys(&keys().host_records("h1")).is_empty());
        // Once the other's claim goes, this host claims its name and publishes.
        fake.delete(&keys().claim("h1"));
        published(&fake).await;
    })
    .await;
}

#[tokio::test]
async fn r32_a_claim_left_by_an_earlier_process_of_this_host_is_taken_over() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    let claimant = sync.claimant.as_str().to_string();
    // An earlier process's claim, under a lease of its own that has not expired yet.
    fake.put(&keys().claim("h1"), claimant.as_bytes());
    running(sync, &fake, local, async {
        let mine = published(&fake).await;
        let (_, record_lease) = fake.get(&mine).unwrap();
        assert_eq!(fake.get(&keys().claim("h1")).unwrap().1, record_lease);
    })
    .await;
}

#[tokio::test]
async fn r28_a_key_of_this_host_deleted_by_someone_else_is_put_back() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        let mine = published(&fake).await;
        let first = fake.mod_revision(&mine).unwrap();
        fake.delete(&mine);
        fake.until(WITHIN, |f| f.mod_revision(&mine).is_some_and(|r| r > first))
            .await;
    })
    .await;
}

#[tokio::test]
async fn r32_a_claim_deleted_or_taken_mid_session_stops_publishing_until_claimed_again() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        let claim = keys().claim("h1");
        published(&fake).await;
        // Taken by a clone: the session ends, the next is refused, nothing more is put.
        fake.put(&claim, b"clone /run/embedns");
        h.until("the refusal", |h| {
            h.status().and_then(|s| s.claim_refused).is_some()
        })
        .await;
        let writes = fake.counts().0;
        h.add("c2", "api", [10, 1, 0, 3]);
        h.until("the refusal again", |h| {
            h.status()
                .and_then(|s| s.last_error)
                .is_some_and(|e| e.contains("in use"))
        })
        .await;
        assert_eq!(
            fake.counts().0,
            writes,
            "no write while the claim is another's"
        );
        assert!(fake.get(&keys().record("h1", "c2@eth0")).is_none());
        // Deleted: this host claims it again and publishes what it has.
        fake.delete(&claim);
        fake.until(WITHIN, |f| f.get(&keys().record("h1", "c2@eth0")).is_some())
            .await;
    })
    .await;
}

/// The member goes away (the watch ends, connections are refused) and another host's record
/// `db` is put meanwhile, its event compacted away if `compacted`; the member comes back once
/// the session has ended.
async fn away_while_db_is_put(h: &Host, fake: &Fake, compacted: bool) {
    fake.refuse.set(true);
    fake.drop_watches();
    let db = keys().record("h2", "c9@eth0");
    fake.put(&db, &peer("c9", "db", [10, 2, 0, 9]));
    if compacted {
        fake.compact(fake.mod_revision(&db).unwrap() + 1);
    }
    h.until("the session to end", |h| {
        h.status().is_some_and(|s| s.endpoint.is_none())
    })
    .await;
    fake.refuse.set(false);
}

#[tokio::test]
async fn r28_a_session_that_ends_resumes_with_its_lease_and_its_watch() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        let mine = published(&fake).await;
        let (_, lease) = fake.get(&mine).unwrap();
        let (_, listings) = fake.counts();
        assert_eq!(listings, 1);
        away_while_db_is_put(&h, &fake, false).await;
        h.until("db held here", |h| h.remote_names() == ["db"])
            .await;
        assert_eq!(fake.counts().1, 1, "no new listing");
        assert_eq!(fake.get(&mine).unwrap().1, lease, "the same lease");
        h.until("in step again", |h| {
            h.status()
                .is_some_and(|s| s.endpoint.is_some() && s.lease == lease)
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn r31_a_watch_message_too_large_to_take_makes_the_next_session_list_again() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        published(&fake).await;
        // The next watch message (db's put) is over the client's limit: resuming would meet
        // the same message; the next session lists instead.
        fake.too_large.set(true);
        let db = keys().record("h2", "c9@eth0");
        fake.put(&db, &peer("c9", "db", [10, 2, 0, 9]));
        h.until("db held here", |h| h.remote_names() == ["db"])
            .await;
        assert_eq!(fake.counts().1, 2, "listed again");
    })
    .await;
}

#[tokio::test]
async fn r28_events_compacted_away_make_the_next_session_list_again() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    running(sync, &fake, local, async {
        published(&fake).await;
        away_while_db_is_put(&h, &fake, true).await;
        h.until("db held here", |h| h.remote_names() == ["db"])
            .await;
        assert_eq!(fake.counts().1, 2, "listed again");
    })
    .await;
}

#[tokio::test]
async fn r27_the_last_local_container_leaving_revokes_the_lease() {
    let h = Host::new();
    let fake = Fake::default();
    let (sync, local) = h.sync();
    let connect = FakeConnect(fake.clone());
    let run = sync.run(&connect, local);
    tokio::pin!(run);
    let mine = keys().record("h1", "c1@eth0");
    tokio::select! {
        end = &mut run => panic!("ended early: {end:?}"),
        _ = fake.until(WITHIN, |f| f.get(&mine).is_some()) => {}
    }
    h.remove("c1");
    let end = tokio::time::timeout(WITHIN, run)
        .await
        .expect("the sync ends");
    assert_eq!(end, End::LastLeft);
    assert!(
        fake.keys(&keys().network()).is_empty(),
        "claim and records gone"
    );
}

#[tokio::test]
async fn a_config_naming_ports_the_worker_may_not_reach_ends_it_for_a_new_one() {
    let host = Host::new();
    let (worker, _) = host.sync();
    let mut worker = worker.with_tcp_ports(vec![2379]);
    let conf = |endpoint: &str| -> EtcdConf {
        serde_json::from_value(serde_json::json!({"endpoints": [endpoint], "host": "h2"}))
            .map(|c: EtcdConf| c.settle().unwrap())
            .unwrap()
    };
    // The same port: taken up by this worker.
    assert_eq!(worker.adopt(conf("http://fake-3:2379")), Ok(()));
    assert_eq!(worker.conf.host(), "h2");
    // Another port: Landlock cannot be widened, so a new worker must take over (exit 3).
    let end = worker.adopt(conf("http://fake-3:2380")).unwrap_err();
    assert_eq!(end, End::NewPorts);
    assert_eq!(end.exit_code(), 3);
    assert_eq!(End::LastLeft.exit_code(), 0);
}
