//! One contract for every key store, run against SQLite and a real PostgreSQL: round trips,
//! uniqueness, paging, policy versions only moving forward, revisions in commit order, and
//! writers racing on several threads (nothing lost, nothing duplicated, and a follower reading
//! changes while they write misses none).
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step fails the test, helpers included"
)]

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use prost::Message as _;
use signer_host::Error;
use signer_host::store::postgres::{PgStore, PoolSettings};
use signer_host::store::sqlite::SqliteStore;
use signer_host::store::{KeyStore, StoredAudit, StoredKey, StoredKeyring};
use signer_proto::pb;
use tests::postgres::Postgres;

const WRITERS: usize = 6;
const PER_WRITER: usize = 40;
const SHARED: usize = 10;

fn policy(version: u64, threshold: u32) -> Vec<u8> {
    pb::Policy {
        version,
        threshold,
        ..pb::Policy::default()
    }
    .encode_to_vec()
}

fn key(id: &str, keyring: &str) -> StoredKey {
    StoredKey {
        key_id: id.into(),
        keyring_id: keyring.into(),
        public_key: vec![2; 33],
        policy: policy(1, 1),
        label: format!("label of {id}"),
        sealed: id.as_bytes().to_vec(),
        info: vec![1],
    }
}

fn keyring(id: &str) -> StoredKeyring {
    StoredKeyring {
        keyring_id: id.into(),
        provider: "local".into(),
        wrapped_key: vec![1, 2, 3],
        admins: vec![4],
        admins_seal: vec![5],
    }
}

/// Every key, through `keys_after` in pages of 7.
fn all_keys(store: &dyn KeyStore) -> Vec<StoredKey> {
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let page = store.keys_after(after, 7).unwrap();
        let Some(&(last, _)) = page.last() else {
            return all;
        };
        after = last;
        all.extend(page.into_iter().map(|(_, k)| k));
    }
}

fn contract(store: Arc<dyn KeyStore>) {
    assert_eq!(store.revision().unwrap(), 0);
    store.insert_keyring(&keyring("kr-a")).unwrap();
    assert!(
        store.insert_keyring(&keyring("kr-a")).is_err(),
        "duplicate keyring"
    );
    store.insert_keyring(&keyring("kr-b")).unwrap();
    let rings: Vec<_> = store
        .keyrings()
        .unwrap()
        .into_iter()
        .map(|k| k.keyring_id)
        .collect();
    assert_eq!(rings, ["kr-a", "kr-b"], "oldest first");

    let first: Vec<_> = (0..20).map(|i| key(&format!("k-{i:02}"), "kr-a")).collect();
    for k in &first {
        store.insert_key(k).unwrap();
    }
    assert!(store.insert_key(&first[3]).is_err(), "duplicate key id");
    assert!(
        store.insert_key(&key("k-orphan", "kr-none")).is_err(),
        "unknown keyring"
    );
    assert_eq!(
        all_keys(&*store),
        first,
        "in insertion order, every field kept"
    );
    assert_eq!(
        store.label("k-05").unwrap().as_deref(),
        Some("label of k-05")
    );
    assert_eq!(store.label("k-nope").unwrap(), None);
    let revision = store.revision().unwrap();
    assert!(revision >= 20);

    // Policy changes: forward only; the change moves the key to the newest revision.
    let v2 = StoredKey {
        policy: policy(2, 1),
        sealed: b"resealed".to_vec(),
        info: vec![2],
        ..first[5].clone()
    };
    store.update_key(&v2).unwrap();
    let same_version = StoredKey {
        policy: policy(2, 2),
        ..v2.clone()
    };
    assert!(matches!(
        store.update_key(&same_version),
        Err(Error::StoreConflict(_))
    ));
    assert!(
        matches!(store.update_key(&first[5]), Err(Error::StoreConflict(_))),
        "older"
    );
    assert!(matches!(
        store.update_key(&StoredKey {
            policy: policy(3, 1),
            ..key("k-none", "kr-a")
        }),
        Err(Error::StoreState(_))
    ));
    let other_public = StoredKey {
        public_key: vec![3; 33],
        policy: policy(3, 1),
        ..v2.clone()
    };
    assert!(
        store.update_key(&other_public).is_err(),
        "only the same key"
    );
    let changes = store.changes_after(revision, 10).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].1, v2);
    assert_eq!(store.revision().unwrap(), changes[0].0);
    assert_eq!(all_keys(&*store)[5], v2, "position unchanged");

    racing_writers(&store);
    racing_policy_changes(&store);
    audit_trail(&*store);
}

fn audit(boot: u8, sequence: u64) -> StoredAudit {
    StoredAudit {
        boot_id: vec![boot; 16],
        sequence,
        entry: vec![boot, 1, 2],
        signature: vec![sequence.to_le_bytes()[0]; 64],
    }
}

/// Entries kept in stored order, a repeated one (host re-reading after a crash) ignored;
/// the first attestation document of a boot stays.
fn audit_trail(store: &dyn KeyStore) {
    assert_eq!(store.last_audit().unwrap(), None);
    store.append_audit(&[audit(1, 0), audit(1, 1)]).unwrap();
    store
        .append_audit(&[audit(1, 1), audit(1, 2), audit(2, 0)])
        .unwrap();
    let stored: Vec<_> = store.audit_after(0, 10).unwrap();
    let got: Vec<_> = stored.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(got, [audit(1, 0), audit(1, 1), audit(1, 2), audit(2, 0)]);
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0));
    let after_two = store.audit_after(stored[1].0, 1).unwrap();
    assert_eq!(after_two[0].1, audit(1, 2));
    assert_eq!(store.last_audit().unwrap(), Some(audit(2, 0)));
    store.put_audit_boot(&[1; 16], b"first").unwrap();
    store.put_audit_boot(&[1; 16], b"second").unwrap();
    assert_eq!(
        store.audit_boot(&[1; 16]).unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(store.audit_boot(&[3; 16]).unwrap(), None);
}

/// Writers on several threads insert their own keys and all try the same shared ones, while a
/// follower reads changes after the last revision it saw.
fn racing_writers(store: &Arc<dyn KeyStore>) {
    let start = store.revision().unwrap();
    let before: BTreeSet<String> = all_keys(&**store).into_iter().map(|k| k.key_id).collect();
    let barrier = Arc::new(Barrier::new(WRITERS + 1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                for i in 0..PER_WRITER {
                    store
                        .insert_key(&key(&format!("k-w{w}-{i:03}"), "kr-b"))
                        .unwrap();
                    if i < SHARED {
                        let shared = format!("k-shared-{i:02}");
                        if store.insert_key(&key(&shared, "kr-a")).is_ok() {
                            won.push(shared);
                        }
                    }
                }
                won
            })
        })
        .collect();
    let follower = {
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            let (mut after, mut seen, mut revisions) = (start, Vec::new(), Vec::new());
            for _ in 0..200 {
                for (revision, key) in store.changes_after(after, 25).unwrap() {
                    revisions.push(revision);
                    seen.push(key.key_id);
                    after = revision;
                }
            }
            (after, seen, revisions)
        })
    };
    let mut winners = Vec::new();
    for writer in writers {
        winners.extend(writer.join().unwrap());
    }
    let (mut after, mut seen, mut revisions) = follower.join().unwrap();
    loop {
        let page = store.changes_after(after, 25).unwrap();
        if page.is_empty() {
            break;
        }
        for (revision, key) in page {
            revisions.push(revision);
            seen.push(key.key_id);
            after = revision;
        }
    }
    winners.sort();
    let expected_shared: Vec<_> = (0..SHARED).map(|i| format!("k-shared-{i:02}")).collect();
    assert_eq!(
        winners, expected_shared,
        "each shared id inserted exactly once"
    );
    let now: Vec<String> = all_keys(&**store).into_iter().map(|k| k.key_id).collect();
    let distinct: BTreeSet<_> = now.iter().cloned().collect();
    assert_eq!(distinct.len(), now.len(), "no id stored twice");
    assert_eq!(
        now.len(),
        before.len() + WRITERS * PER_WRITER + SHARED,
        "none lost"
    );
    let new: BTreeSet<_> = distinct.difference(&before).cloned().collect();
    let followed: BTreeSet<_> = seen.iter().cloned().collect();
    let missed: Vec<_> = new.difference(&followed).collect();
    assert!(missed.is_empty(), "the follower missed {missed:?}");
    assert_eq!(followed, new);
    assert_eq!(seen.len(), new.len());
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions increase"
    );
}

/// Policy changes of the same version racing for one key: exactly one is stored.
fn racing_policy_changes(store: &Arc<dyn KeyStore>) {
    let base = key("k-00", "kr-a");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let racers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            let change = StoredKey {
                policy: policy(2, u32::try_from(w).unwrap() + 1),
                ..base.clone()
            };
            std::thread::spawn(move || {
                barrier.wait();
                store.update_key(&change)
            })
        })
        .collect();
    let outcomes: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::StoreConflict(_))))
        .count();
    assert_eq!((stored, conflicts), (1, WRITERS - 1));
}

#[test]
fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.sqlite3")).unwrap();
    contract(Arc::new(store));
}

#[test]
fn postgres_keeps_the_contract() {
    let cluster = Postgres::start();
    let url = cluster.database("contract");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(PgStore::connect(&url, PoolSettings::default()))
        .unwrap();
    contract(Arc::new(store));

    // Migrations ran once; a second host connecting finds them applied.
    runtime
        .block_on(PgStore::connect(&url, PoolSettings::default()))
        .unwrap();
    assert_eq!(
        cluster
            .psql(
                "contract",
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM signer_schema_migrations"
            )
            .trim(),
        "1,2"
    );
    // A database a newer host migrated is refused, not written to.
    cluster.psql(
        "contract",
        "INSERT INTO signer_schema_migrations (version) VALUES (99)",
    );
    let refused = runtime.block_on(PgStore::connect(&url, PoolSettings::default()));
    assert!(matches!(refused, Err(Error::StoreState(_))), "{refused:?}");
}
