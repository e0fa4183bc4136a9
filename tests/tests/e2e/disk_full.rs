//! A full disk under the key store: the host runs in its own mount namespace (`unshare`, no
//! privileges needed) with its SQLite store on a small tmpfs, which the test fills to the last
//! byte; and the same with the store in PostgreSQL, its data directory alone on such a tmpfs.
//! New keys are refused with UNAVAILABLE and never acknowledged, signing with stored keys goes
//! on, and once space is freed new keys are stored again; an enclave restarted afterwards
//! loads every acknowledged key from the store (nothing half-written), and no key the client
//! was refused turns up.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use signer_client::{Client, ClientConfig, Error, RetryPolicy};
use tests::{Stack, StackOptions};
use tonic::Code;

/// The store's volume.
const VOLUME_BYTES: u64 = 2 * 1024 * 1024;

/// Writes zeros to `path` until the filesystem is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += u64::try_from(n).unwrap(),
            Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
            Err(error) => panic!("filling the volume: {error}"),
        }
    }
    let _ = file.sync_all();
    written
}

/// A client that makes one attempt per call, so the host's answer is what it sees: a retry
/// resends the same stamped body, which the enclave (having created that key in RAM before the
/// store refused it) refuses as a replay, UNAUTHENTICATED, as `Client::create_key` documents.
async fn impatient(stack: &Stack) -> Client {
    let mut config = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    config.retry = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    };
    config.stamper = Some(std::sync::Arc::new(stack.admin_stamper()));
    config.enclave = Some(stack.attestation_policy());
    Client::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_keys_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let volume: PathBuf = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let options = StackOptions {
        host_wrapper: vec![
            "unshare".into(),
            "--user".into(),
            "--map-root-user".into(),
            "--mount".into(),
            "sh".into(),
            "-c".into(),
            format!("mount -t tmpfs -o size={VOLUME_BYTES} signer-store \"$0\" && exec \"$@\""),
            volume.display().to_string(),
        ],
        host_args: vec![format!(
            "--sqlite={}",
            volume.join("keys.sqlite3").display()
        )],
        ..StackOptions::default()
    };
    let stack = tokio::task::block_in_place(|| Stack::spawn(dir, "k256", &options));
    stack.wait_serving().await;
    // The volume as the host sees it, through its own mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root", stack.host_pid())).join(
        volume
            .strip_prefix("/")
            .expect("temporary directories are absolute"),
    );
    assert!(
        seen.join("keys.sqlite3").exists(),
        "the store lives on the volume"
    );

    let (acknowledged, refused, filled) = fill_refuse_recover(&stack, &seen).await;
    assert!(filled < VOLUME_BYTES, "{filled}");
    eprintln!(
        "full SQLite volume: {acknowledged} keys acknowledged (all loaded again), {refused} \
         refused UNAVAILABLE, {filled} bytes of filler"
    );
}

/// With the store on the (nearly empty) volume at `volume`: four keys, the volume filled, new
/// keys until three are refused UNAVAILABLE, stored keys still signing, space freed and one more
/// key stored; then a fresh enclave loads exactly the acknowledged keys. The counts of keys
/// acknowledged and refused, and the filler's bytes.
async fn fill_refuse_recover(stack: &Stack, volume: &Path) -> (usize, u32, u64) {
    let client = stack.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..4 {
        acknowledged.push(
            client
                .create_key(&stack.keyring(), &format!("before {i}"))
                .await
                .unwrap(),
        );
    }
    let filler = volume.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the volume had room");

    // New keys until the store's next write needs space it cannot have (SQLite may first use
    // room left in pages and its write-ahead log).
    let creator = impatient(stack).await;
    let mut refused = 0;
    for i in 0..400 {
        match creator
            .create_key(&stack.keyring(), &format!("full {i}"))
            .await
        {
            Ok(key) => acknowledged.push(key),
            Err(Error::Status(status)) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 3, "a full volume must refuse new keys");
    assert!(
        stack.log().contains("could not persist a new key"),
        "{}",
        stack.log()
    );
    // Stored keys sign on (reads and signing need no space).
    for key in &acknowledged {
        client.sign_digest(&key.key_id, [9; 32]).await.unwrap();
    }

    // Space comes back: keys are stored again.
    std::fs::remove_file(&filler).unwrap();
    acknowledged.push(client.create_key(&stack.keyring(), "after").await.unwrap());

    // A fresh enclave loads everything from the store: every acknowledged key, and nothing the
    // client was refused (the store lists exactly the acknowledged keys of this keyring).
    stack.kill_enclave();
    let fresh = stack.client().await;
    for key in &acknowledged {
        assert_eq!(&fresh.public_key(&key.key_id).await.unwrap(), key);
        fresh.sign_digest(&key.key_id, [10; 32]).await.unwrap();
    }
    let (listed, next) = fresh.list_keys(1_000, "").await.unwrap();
    assert!(next.is_empty());
    let mut listed: Vec<String> = listed.into_iter().map(|k| k.key_id).collect();
    let mut expected: Vec<String> = acknowledged.iter().map(|k| k.key_id.clone()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "exactly the acknowledged keys are stored");
    (acknowledged.len(), refused, filled)
}

/// The same with the store in PostgreSQL, whose data directory is alone on a small volume: a
/// full volume makes PostgreSQL refuse to extend a table (an error, not a crash: its WAL
/// segments are allocated ahead), which the host answers UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgresql_volume_refuses_new_keys_cleanly_and_loses_nothing() {
    const PG_VOLUME_BYTES: u64 = 64 * 1024 * 1024;
    let cluster = tests::postgres::Postgres::start_on_volume(PG_VOLUME_BYTES);
    let options = StackOptions {
        store_url: Some(cluster.database("full")),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let volume = cluster.volume();
    assert!(
        volume.join("data/PG_VERSION").exists(),
        "the cluster lives on the volume"
    );
    let (acknowledged, refused, filled) = fill_refuse_recover(&stack, &volume).await;
    assert!(filled < PG_VOLUME_BYTES, "{filled}");
    eprintln!(
        "full PostgreSQL volume: {acknowledged} keys acknowledged (all loaded again), {refused} \
         refused UNAVAILABLE, {filled} bytes of filler"
    );
}
