//! Enclave crashes and restarts: keys come back; tampered or swapped records are refused.

use signer_client::Error;
use tests::Stack;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_enclave_is_restarted_and_reloaded_with_the_same_keys() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let keys: Vec<_> = futures_keys(&client, &stack.keyring(), 5).await;
    let digest = [0x42; 32];
    let before: Vec<_> = futures_sign(&client, &keys, digest).await;

    let old_pid = stack.kill_enclave();
    // A fresh client (no cached public keys): every identity comes from the restarted enclave.
    let fresh = stack.client().await;
    for (key, signature) in keys.iter().zip(&before) {
        // The SDK retries UNAVAILABLE while the host restarts and reloads the enclave.
        assert_eq!(
            &fresh.sign_digest(&key.key_id, digest).await.unwrap(),
            signature
        );
        assert_eq!(&fresh.public_key(&key.key_id).await.unwrap(), key);
    }
    assert_ne!(stack.enclave_pid(), Some(old_pid));
    assert!(stack.log().contains("loaded=5"), "{}", stack.log());
    // Keys created after the restart persist too.
    let later = fresh
        .create_key(&stack.keyring(), "after restart")
        .await
        .unwrap();
    fresh.sign_digest(&later.key_id, digest).await.unwrap();

    // The whole stack restarts over the same store.
    let dir = stack.stop();
    let stack = Stack::start_in(dir, "secp256k1").await;
    let client = stack.client().await;
    for (key, signature) in keys.iter().zip(&before) {
        assert_eq!(
            &client.sign_digest(&key.key_id, digest).await.unwrap(),
            signature,
            "other backend, same bytes"
        );
    }
    client.sign_digest(&later.key_id, digest).await.unwrap();
}

async fn futures_keys(
    client: &signer_client::Client,
    keyring: &str,
    n: usize,
) -> Vec<signer_client::KeyInfo> {
    let mut keys = Vec::new();
    for i in 0..n {
        keys.push(client.create_key(keyring, &format!("k{i}")).await.unwrap());
    }
    keys
}

async fn futures_sign(
    client: &signer_client::Client,
    keys: &[signer_client::KeyInfo],
    digest: [u8; 32],
) -> Vec<signer_client::EcdsaSignature> {
    let mut out = Vec::new();
    for key in keys {
        out.push(client.sign_digest(&key.key_id, digest).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_swapped_records_are_refused_and_the_rest_load() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let keys = futures_keys(&client, &stack.keyring(), 4).await;
    let (tampered, swap_a, swap_b, honest) = (&keys[0], &keys[1], &keys[2], &keys[3]);

    // A hostile host edits the store: flips a byte of one record, swaps two others.
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    let sealed = |id: &str| -> Vec<u8> {
        db.query_row("SELECT sealed FROM keys WHERE key_id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let mut flipped = sealed(&tampered.key_id);
    flipped[30] ^= 0x01;
    let (a, b) = (sealed(&swap_a.key_id), sealed(&swap_b.key_id));
    for (id, bytes) in [
        (&tampered.key_id, flipped),
        (&swap_a.key_id, b),
        (&swap_b.key_id, a),
    ] {
        db.execute(
            "UPDATE keys SET sealed = ?1 WHERE key_id = ?2",
            rusqlite::params![bytes, id],
        )
        .unwrap();
    }
    drop(db);

    stack.kill_enclave();
    let fresh = stack.client().await;
    // The honest key signs (this waits, with retries, for the reload).
    fresh.sign_digest(&honest.key_id, [1; 32]).await.unwrap();
    for refused in [tampered, swap_a, swap_b] {
        match fresh.sign_digest(&refused.key_id, [1; 32]).await {
            Err(Error::Status(status)) => assert_eq!(status.code(), Code::NotFound),
            other => panic!("expected NOT_FOUND for {}, got {other:?}", refused.key_id),
        }
        let line = stack
            .log()
            .lines()
            .find(|l| l.contains("refused a stored key") && l.contains(&refused.key_id))
            .map(str::to_owned);
        assert!(
            line.is_some_and(|l| l.contains("seal check failed")),
            "{}",
            stack.log()
        );
    }
    assert!(
        stack.log().contains("loaded=1 rejected=3"),
        "{}",
        stack.log()
    );
}
