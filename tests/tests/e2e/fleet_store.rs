//! Full stacks sharing one real PostgreSQL key store: what one host writes reaches the other's
//! enclave (a new keyring, a new key, a policy change) within a measured time, both write at
//! once without losing or duplicating a key, and a host killed mid-write loses nothing it
//! acknowledged.
//!
//! Each stack is its own host and enclave; they share the deployment (the same local master
//! key, development root and admin key, copied from the first stack's directory) and the store.

use std::time::{Duration, Instant};

use signer_client::{Client, pb};
use tests::postgres::Postgres;
use tests::{Stack, StackOptions};

/// Longest a change may take to reach the other host (the loader polls every 500 ms even if a
/// notification were lost; a notification makes it far quicker).
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(5);

/// Two stacks over one database: `a` first (it creates the deployment's keyring), then `b`
/// from a copy of `a`'s directory.
async fn two_stacks(url: &str) -> (Stack, Stack) {
    let options = StackOptions {
        store_url: Some(url.to_owned()),
        ..StackOptions::default()
    };
    let a = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    drop(a.client().await);
    let dir_b = tempfile::tempdir().unwrap();
    tests::copy_data_files(a.dir.path(), dir_b.path());
    let b = Stack::start_with(dir_b, &options).await;
    (a, b)
}

/// Retries `attempt` until it returns `Some`, up to the deadline; how long that took.
async fn within_deadline<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = attempt().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < PROPAGATION_DEADLINE,
            "{what} did not propagate within {PROPAGATION_DEADLINE:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn signs(client: &Client, key_id: &str) -> bool {
    client.sign_digest(key_id, [7; 32]).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keyring_and_policy_made_on_one_host_reach_the_other() {
    let cluster = Postgres::start();
    let url = cluster.database("fleet");
    let (a, b) = two_stacks(&url).await;
    let (on_a, on_b) = (a.client().await, b.client().await);

    // A key created through A signs through B.
    let key = on_a.create_key(&a.keyring(), "made on a").await.unwrap();
    let (_, took) = within_deadline("a new key", || async {
        signs(&on_b, &key.key_id).await.then_some(())
    })
    .await;
    eprintln!("new key: signing through the other host after {took:?}");

    // A keyring created through A after B was ready, and a key in it, reach B.
    let keyring = on_a
        .create_keyring(vec![a.admin_key().public()], 1)
        .await
        .unwrap();
    let in_new_ring = on_a.create_key(&keyring, "second ring").await.unwrap();
    within_deadline("a new keyring", || async {
        signs(&on_b, &in_new_ring.key_id).await.then_some(())
    })
    .await;

    // A policy change through A (ECDSA only) is enforced by B.
    assert!(on_b.sign_schnorr(&key.key_id, b"before").await.is_ok());
    let admin = a.admin_key().public();
    let changed = on_a
        .update_policy(
            &key.key_id,
            pb::Policy {
                approvers: vec![admin.clone()],
                threshold: 1,
                schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
                admins: vec![admin],
                admin_threshold: 1,
                ..pb::Policy::default()
            },
        )
        .await
        .unwrap();
    let (_, took) = within_deadline("a policy change", || async {
        on_b.sign_schnorr(&key.key_id, b"after")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    eprintln!("policy change: enforced by the other host after {took:?}");
    let seen_by_b = on_b.fresh_public_key(&key.key_id).await.unwrap();
    assert_eq!(seen_by_b.policy_hash, changed.policy_hash);
    assert!(signs(&on_b, &key.key_id).await, "ECDSA still allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_and_a_host_killed_mid_write_lose_nothing_acknowledged() {
    let cluster = Postgres::start();
    let url = cluster.database("fleet");
    let (a, b) = two_stacks(&url).await;
    let (on_a, on_b) = (a.client().await, b.client().await);
    let keyring = a.keyring();

    // Both hosts create keys at once.
    let create = |client: Client, keyring: String, n: usize, tag: &'static str| {
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..n {
                match client.create_key(&keyring, &format!("{tag} {i}")).await {
                    Ok(key) => made.push(key.key_id),
                    Err(_) => break,
                }
            }
            made
        })
    };
    let from_a = create(on_a.clone(), keyring.clone(), 15, "a");
    let from_b = create(on_b.clone(), keyring.clone(), 15, "b");
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    assert_eq!((from_a.len(), from_b.len()), (15, 15));
    let stored = cluster.psql("fleet", "SELECT count(*), count(DISTINCT key_id) FROM keys");
    assert_eq!(stored.trim(), "30|30");

    // A's host is killed (SIGKILL) while it is creating keys; whatever it acknowledged signs
    // through B.
    let writer = create(on_a.clone(), keyring.clone(), 1_000, "doomed");
    let (acknowledged_before_kill, _) = within_deadline("keys being created", || async {
        let count = cluster.psql(
            "fleet",
            "SELECT count(*) FROM keys WHERE label LIKE 'doomed%'",
        );
        (count.trim().parse::<u32>().unwrap() >= 3).then_some(())
    })
    .await;
    let () = acknowledged_before_kill;
    drop(a.stop());
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() >= 2, "{acknowledged:?}");
    assert!(
        acknowledged.len() < 1_000,
        "the kill interrupted the writer"
    );
    for key_id in from_a.iter().chain(&from_b).chain(&acknowledged) {
        let (_, _) = within_deadline("an acknowledged key", || async {
            signs(&on_b, key_id).await.then_some(())
        })
        .await;
    }
    eprintln!(
        "{} keys acknowledged before the kill, all signing through the survivor",
        acknowledged.len()
    );
}
