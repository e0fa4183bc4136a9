//! Three stacks of one deployment behind a [`Fleet`]: signing is spread over them, each enclave
//! is attested on its own, and when one stack is killed mid-load no error reaches the caller
//! and every signature still verifies.
//!
//! The three stacks serve the same sealed keys because they start from copies of one data
//! directory (the same local master key, development root and SQLite store); `fleet_store.rs`
//! runs stacks over one shared PostgreSQL store.

use std::collections::BTreeSet;

use signer_client::{ClientConfig, Fleet, KeyInfo};
use tempfile::TempDir;
use tests::Stack;

use super::faults::until_more;

/// One stack makes `keys` keys, then stops; its data directory and `copies` copies of it,
/// each ready to seed a stack that serves the same sealed keys.
async fn seeded(keys: usize, copies: usize) -> (Vec<KeyInfo>, TempDir, Vec<TempDir>) {
    let first = Stack::start("k256").await;
    let client = first.client().await;
    let mut made = Vec::new();
    for i in 0..keys {
        made.push(
            client
                .create_key(&first.keyring(), &format!("fleet {i}"))
                .await
                .unwrap(),
        );
    }
    drop(client);
    let dir = first.stop();
    let copies = (0..copies)
        .map(|_| {
            let copy = tempfile::tempdir().unwrap();
            tests::copy_data_files(dir.path(), copy.path());
            copy
        })
        .collect();
    (made, dir, copies)
}

/// A client configuration for `stack`'s deployment: its admin stamper and attestation policy.
fn config(stack: &Stack) -> ClientConfig {
    let mut config = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    config.stamper = Some(std::sync::Arc::new(stack.admin_stamper()));
    config.enclave = Some(stack.attestation_policy());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_fails_over_when_a_stack_dies_mid_load() {
    // One stack makes the keys, then stops; its directory seeds two more.
    let (keys, dir_a, copies) = seeded(3, 2).await;
    let [dir_b, dir_c] = <[TempDir; 2]>::try_from(copies).unwrap();
    let a = Stack::start_in(dir_a, "k256").await;
    let b = Stack::start_in(dir_b, "k256").await;
    let c = Stack::start_in(dir_c, "secp256k1").await;

    let endpoints = vec![a.address.clone(), b.address.clone(), c.address.clone()];
    let fleet = Fleet::connect(config(&a), endpoints).await.unwrap();

    // Before the kill: calls are spread over all three.
    let mut before = BTreeSet::new();
    for i in 0..30u8 {
        let key = &keys[usize::from(i) % keys.len()];
        let answered = fleet
            .sign(|client| {
                let id = key.key_id.clone();
                async move { client.sign_digest(&id, [i + 1; 32]).await }
            })
            .await
            .unwrap();
        before.insert(answered.endpoint.to_string());
    }
    assert_eq!(before.len(), 3, "{before:?}");

    // Stack B dies in the middle of the load; the load goes on.
    let dead = b.address.to_string();
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel();
    let (at_half_tx, at_half_rx) = tokio::sync::oneshot::channel::<()>();
    let load = {
        let keys = keys.clone();
        async move {
            let mut killed_rx = Some(killed_rx);
            let mut at_half_tx = Some(at_half_tx);
            let mut after_kill = Vec::new();
            for i in 0..120u32 {
                if i == 40 {
                    at_half_tx.take().unwrap().send(()).unwrap();
                    killed_rx.take().unwrap().await.unwrap();
                }
                let key = &keys[usize::try_from(i).unwrap() % keys.len()];
                let digest = {
                    let mut d = [7u8; 32];
                    d[..4].copy_from_slice(&i.to_be_bytes());
                    d
                };
                // No error surfaces: every call is answered by some stack.
                let answered = fleet
                    .sign(|client| {
                        let id = key.key_id.clone();
                        async move { client.sign_digest(&id, digest).await }
                    })
                    .await
                    .unwrap_or_else(|e| panic!("signature {i} failed: {e}"));
                // Verified by the SDK against the enclave that answered; again here.
                let mut compact = [0u8; 64];
                compact[..32].copy_from_slice(&answered.value.r);
                compact[32..].copy_from_slice(&answered.value.s);
                secp256k1::ecdsa::Signature::from_compact(&compact)
                    .unwrap()
                    .verify(
                        secp256k1::Message::from_digest(digest),
                        &secp256k1::PublicKey::from_slice(&key.public_key_compressed).unwrap(),
                    )
                    .unwrap();
                if i >= 40 {
                    after_kill.push(answered.endpoint.to_string());
                }
            }
            after_kill
        }
    };
    let killer = async move {
        at_half_rx.await.unwrap();
        tokio::task::block_in_place(|| drop(b.stop()));
        killed_tx.send(()).unwrap();
    };
    let (after_kill, ()) = tokio::join!(load, killer);
    assert_eq!(after_kill.len(), 80);
    assert!(!after_kill.contains(&dead), "the dead stack answered");
    let survivors: BTreeSet<_> = after_kill.into_iter().collect();
    assert_eq!(
        survivors,
        BTreeSet::from([a.address.to_string(), c.address.to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_serving_is_passed_over() {
    use tests::StackOptions;

    let (keys, dir_a, copies) = seeded(1, 1).await;
    let [dir_b] = <[TempDir; 1]>::try_from(copies).unwrap();
    let key = &keys[0];
    let a = Stack::start_in(dir_a, "k256").await;
    // B's host expects another enclave image: its health never says SERVING.
    let options = StackOptions {
        expected_pcr0: Some("00".repeat(48)),
        ..StackOptions::default()
    };
    let b = tokio::task::block_in_place(|| Stack::spawn(dir_b, "k256", &options));

    let fleet = Fleet::connect(config(&a), vec![b.address.clone(), a.address.clone()])
        .await
        .unwrap();
    let report = fleet.check_health().await;
    assert_eq!(
        report,
        vec![(b.address.clone(), false), (a.address.clone(), true)]
    );
    for i in 0..10u8 {
        let answered = fleet
            .sign(|client| {
                let id = key.key_id.clone();
                async move { client.sign_digest(&id, [i + 1; 32]).await }
            })
            .await
            .unwrap();
        assert_eq!(answered.endpoint, a.address, "signature {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_call_in_flight_when_its_host_dies_is_answered_by_another() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (keys, dir_a, copies) = seeded(1, 1).await;
    let [dir_b] = <[TempDir; 1]>::try_from(copies).unwrap();
    let key = &keys[0];
    let a = Stack::start_in(dir_a, "k256").await;
    let b = Stack::start_in(dir_b, "k256").await;
    let fleet = Arc::new(
        Fleet::connect(config(&a), vec![a.address.clone(), b.address.clone()])
            .await
            .unwrap(),
    );

    // Eight callers keep calls in flight on both hosts; B's host is SIGKILLed under them.
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(tokio::sync::watch::Sender::new(0u64));
    let by_b = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for worker in 0..8u8 {
        let (fleet, stop, signed, by_b) = (
            Arc::clone(&fleet),
            Arc::clone(&stop),
            Arc::clone(&signed),
            Arc::clone(&by_b),
        );
        let (id, b_address) = (key.key_id.clone(), b.address.clone());
        callers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for n in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut digest = [worker; 32];
                digest[..4].copy_from_slice(&n.to_be_bytes());
                let id = id.clone();
                match fleet
                    .sign(move |client| {
                        let id = id.clone();
                        async move { client.sign_digest(&id, digest).await }
                    })
                    .await
                {
                    Ok(answered) => {
                        if answered.endpoint == b_address {
                            by_b.fetch_add(1, Ordering::Relaxed);
                        }
                        signed.send_modify(|n| *n += 1);
                    }
                    Err(error) => errors.push(error.to_string()),
                }
            }
            errors
        }));
    }
    until_more(&signed, 200, 60, "signing goes on").await;
    assert!(by_b.load(Ordering::Relaxed) > 0, "B was answering");
    tokio::task::block_in_place(|| drop(b.stop()));
    until_more(&signed, 200, 60, "signing goes on").await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for caller in callers {
        errors.extend(caller.await.unwrap());
    }
    assert!(errors.is_empty(), "errors reached the callers: {errors:?}");
}
