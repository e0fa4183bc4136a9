//! A hostile host that records, replays, restarts the enclave at will and rewinds the store; and
//! clients that flood. Each attack is refused (or caught by the SDK) and the honest path beside
//! it succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use signer_client::pb::request_body::Operation;
use signer_client::{ApiKeyPair, ApiKeyScheme, Client, ClientConfig, Error, pb};
use tests::relay::Method;
use tests::{HostileRelay, Stack, StackOptions, stamper};
use tonic::Code;

use super::hostile::{code, sign_body};

fn ed25519() -> ApiKeyPair {
    ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap()
}

fn approved_by(approvers: &[&ApiKeyPair], admin: &ApiKeyPair) -> pb::Policy {
    pb::Policy {
        approvers: approvers.iter().map(|k| k.public()).collect(),
        threshold: 1,
        schemes: vec![1, 2],
        admins: vec![admin.public()],
        admin_threshold: 1,
        ..Default::default()
    }
}

fn is_stale(status: &tonic::Status) -> bool {
    status.code() == Code::Unauthenticated && status.message() == signer_proto::STALE_MESSAGE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_voids_every_body_stamped_before_it() {
    // No boot skew: every body stamped before the restart is void after it.
    let options = StackOptions {
        enclave_args: vec!["--boot-skew-secs=0".into()],
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let admin = stack.client().await;
    let key = admin.create_key(&stack.keyring(), "wallet").await.unwrap();
    let relay = HostileRelay::start(&stack.address).await;
    let through = stack
        .client_at(relay.address.clone(), Some(stack.admin_stamper()))
        .await;
    let before = through.sign_digest(&key.key_id, [1; 32]).await.unwrap();
    through
        .create_key(&stack.keyring(), "second")
        .await
        .unwrap();
    let recorded = [
        (Method::Sign, relay.seen(Method::Sign).pop().unwrap()),
        (
            Method::CreateKey,
            relay.seen(Method::CreateKey).pop().unwrap(),
        ),
    ];

    // The host restarts the enclave: nonce cache, rate limits, all gone.
    stack.kill_enclave();
    // The honest path: the SDK signs again (re-attesting the new boot, dating by its clock).
    let after = admin.sign_digest(&key.key_id, [1; 32]).await.unwrap();
    assert_eq!(before, after, "RFC 6979: the same signature");
    let keys_before = admin.list_keys(100, "").await.unwrap().0.len();

    // The recorded bodies are replayed into the fresh enclave: refused as from before its boot.
    let mut host = relay.host();
    for (method, request) in recorded {
        let status = match method {
            Method::Sign => host.sign(request).await.map(|_| ()),
            Method::CreateKey => host.create_key(request).await.map(|_| ()),
            _ => unreachable!(),
        }
        .unwrap_err();
        assert!(is_stale(&status), "{method:?}: {status:?}");
    }
    assert!(stack.log().contains("body predates this enclave boot"));
    assert_eq!(
        admin.list_keys(100, "").await.unwrap().0.len(),
        keys_before,
        "no duplicate key was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dated_ahead_beyond_the_small_skew_is_refused() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let key = admin.create_key(&stack.keyring(), "wallet").await.unwrap();
    let admin_key = stack.admin_key();
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let dated = |offset_ms: u64, nonce: u8| {
        let body = pb::RequestBody {
            timestamp_ms: now + offset_ms,
            nonce: vec![nonce; 16],
            operation: Some(Operation::Sign(pb::SignBody {
                key_id: key.key_id.clone(),
                scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                payload: vec![3; 32],
                path: Vec::new(),
            })),
        };
        stack.stamped(body.encode_to_vec(), &[&admin_key])
    };
    // At the old window's edge (two minutes ahead): a body the host could hold and use later.
    let status = admin.raw().sign(dated(119_000, 1)).await.unwrap_err();
    assert!(is_stale(&status), "{status:?}");
    // Within the skew: accepted.
    assert_eq!(code(&admin, dated(2_000, 2)).await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_refuses_a_policy_rolled_back_across_a_restart() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let (x, y) = (ed25519(), ed25519());
    let admin_key = stack.admin_key();
    let key = admin
        .create_key_with(&stack.keyring(), "wallet", approved_by(&[&x], &admin_key))
        .await
        .unwrap();
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    let (old_policy, old_sealed): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT policy, sealed FROM keys WHERE key_id = ?1",
            [&key.key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // x is compromised: the admins replace it with y.
    let changed = admin
        .update_policy(&key.key_id, approved_by(&[&y], &admin_key))
        .await
        .unwrap();
    assert_eq!(
        (changed.policy_version, changed.policy.approvers.clone()),
        (2, vec![y.public()])
    );
    let persisted = admin.policy_versions();
    assert_eq!(persisted.get(&key.key_id), Some(&2));

    // The host puts the old record back and restarts the enclave: x approves again there.
    db.execute(
        "UPDATE keys SET policy = ?1, sealed = ?2 WHERE key_id = ?3",
        rusqlite::params![old_policy, old_sealed, key.key_id],
    )
    .unwrap();
    drop(db);
    stack.kill_enclave();
    // The same client has seen version 2: it refuses version 1.
    match admin.fresh_public_key(&key.key_id).await {
        Err(Error::Verification(message)) => assert!(message.contains("rolled back"), "{message}"),
        other => panic!("a rolled-back policy must be refused: {other:?}"),
    }
    // So does a new client given the versions persisted by the first.
    let mut config = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    config.enclave = Some(stack.attestation_policy());
    config.known_policy_versions = persisted;
    let restarted = Client::connect(config).await.unwrap();
    assert!(matches!(
        restarted.fresh_public_key(&key.key_id).await,
        Err(Error::Verification(_))
    ));
    // What the limit is: a client that persisted nothing sees version 1 and cannot tell.
    let forgetful = stack.client_with(None).await;
    let seen = forgetful.fresh_public_key(&key.key_id).await.unwrap();
    assert_eq!(seen.policy_version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_racing_signatures_takes_effect_at_once() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let (x, y) = (ed25519(), ed25519());
    let admin_key = stack.admin_key();
    let key = admin
        .create_key_with(&stack.keyring(), "raced", approved_by(&[&x], &admin_key))
        .await
        .unwrap();
    let signer = stack.client_with(Some(stamper(&[&x]))).await;
    signer.public_key(&key.key_id).await.unwrap();

    // Signers stamped by x run flat out while the admin removes x.
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for task in 0..4u8 {
        let (signer, key_id) = (signer.clone(), key.key_id.clone());
        let (stop, signed, progress) = (
            Arc::clone(&stop),
            Arc::clone(&signed),
            Arc::clone(&progress),
        );
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let mut digest = [task; 32];
                digest[..4].copy_from_slice(&n.to_be_bytes());
                n += 1;
                let sent = Instant::now();
                let outcome = signer
                    .sign_digest(&key_id, digest)
                    .await
                    .map_err(|e| e.code());
                signed.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
                outcomes.push((sent, outcome));
            }
            outcomes
        }));
    }
    let wait_for = |target: usize| {
        let (signed, progress) = (Arc::clone(&signed), Arc::clone(&progress));
        async move {
            loop {
                let notified = progress.notified();
                if signed.load(Ordering::SeqCst) >= target {
                    return;
                }
                notified.await;
            }
        }
    };
    wait_for(20).await;
    admin
        .update_policy(&key.key_id, approved_by(&[&y], &admin_key))
        .await
        .unwrap();
    let changed = Instant::now();
    let at_change = signed.load(Ordering::SeqCst);
    wait_for(at_change + 40).await;
    stop.store(true, Ordering::SeqCst);
    let mut before_ok = 0;
    let mut after = 0;
    for task in tasks {
        for (sent, outcome) in task.await.unwrap() {
            if sent >= changed {
                after += 1;
                assert_eq!(
                    outcome,
                    Err(Some(Code::PermissionDenied)),
                    "x signed after its removal"
                );
            } else if outcome.is_ok() {
                before_ok += 1;
            }
        }
    }
    assert!(
        before_ok >= 1 && after >= 20,
        "{before_ok} before, {after} after"
    );
    // The honest path after the change: y signs.
    let y_client = stack.client_with(Some(stamper(&[&y]))).await;
    y_client.sign_digest(&key.key_id, [9; 32]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_key_cannot_exhaust_the_nonce_cache_for_others() {
    let options = StackOptions {
        enclave_args: vec!["--nonce-quota-per-key=5".into()],
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let admin = stack.client().await;
    let (a, b) = (ed25519(), ed25519());
    let key = admin
        .create_key_with(
            &stack.keyring(),
            "shared",
            approved_by(&[&a, &b], &stack.admin_key()),
        )
        .await
        .unwrap();
    let flooder = stack.client_with(Some(stamper(&[&a]))).await;
    for i in 0..5u8 {
        flooder.sign_digest(&key.key_id, [i; 32]).await.unwrap();
    }
    let flooded = flooder.sign_digest(&key.key_id, [5; 32]).await.unwrap_err();
    assert_eq!(flooded.code(), Some(Code::ResourceExhausted));
    // Another approver of the same key is not affected.
    let other = stack.client_with(Some(stamper(&[&b]))).await;
    other.sign_digest(&key.key_id, [6; 32]).await.unwrap();
    // Fifteen strangers' garbage stamps beside b's are ignored, not verified, and cost b nothing.
    let body = sign_body(&other, &key.key_id, [7; 32]);
    let mut padded = stack.stamped(body, &[&b]);
    for _ in 0..15 {
        let stranger = ed25519();
        padded.stamps.push(pb::Stamp {
            signature: vec![0; 64],
            ..stranger.stamp(&stack.deployment_id, b"anything")
        });
    }
    assert_eq!(code(&other, padded).await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_bind_the_deployment_and_only_canonical_bodies_count() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let key = admin.create_key(&stack.keyring(), "wallet").await.unwrap();
    let admin_key = stack.admin_key();
    // A body stamped for staging, sent to this deployment.
    let body = sign_body(&admin, &key.key_id, [1; 32]);
    let staging = pb::SignedRequest {
        stamps: vec![admin_key.stamp("staging", &body)],
        body: body.clone(),
    };
    assert_eq!(code(&admin, staging).await, Code::Unauthenticated);
    // An unknown field appended, honestly stamped: one body, two readings, refused.
    let mut extended = body.clone();
    extended.extend_from_slice(&[0xf8, 0x06, 0x01]);
    let status = admin
        .raw()
        .sign(stack.stamped(extended, &[&admin_key]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "body is not canonically encoded");
    // The honest body.
    assert_eq!(
        code(&admin, stack.stamped(body, &[&admin_key])).await,
        Code::Ok
    );
    // A client configured for another deployment refuses this enclave.
    let mut config = ClientConfig::new(stack.address.clone(), "staging");
    config.enclave = Some(stack.attestation_policy());
    let wrong = Client::connect(config).await.unwrap();
    assert!(matches!(
        wrong.enclave_identity(true).await,
        Err(Error::Attestation(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_seconds_after_start_never_turn_a_retry_into_a_refusal() {
    // The reproduction: start, then at once create a keyring, a key, and sign.
    let stack = tokio::task::block_in_place(|| {
        Stack::spawn(
            tempfile::tempdir().unwrap(),
            "k256",
            &StackOptions::default(),
        )
    });
    let admin = stack.client().await;
    let key = admin.create_key(&stack.keyring(), "early").await.unwrap();
    admin.sign_digest(&key.key_id, [1; 32]).await.unwrap();
    assert!(!stack.log().contains("nonce replayed"), "{}", stack.log());

    // Deterministically: the enclave is held loading (its keyring's seal does not check), and
    // one stamped CreateKeyring body is sent again and again, unchanged.
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    let seal: Vec<u8> = db
        .query_row("SELECT admins_seal FROM keyrings", [], |r| r.get(0))
        .unwrap();
    let mut broken = seal.clone();
    broken[5] ^= 1;
    db.execute("UPDATE keyrings SET admins_seal = ?1", [&broken])
        .unwrap();
    stack.kill_enclave();
    let admin_key = stack.admin_key();
    let body = admin
        .body(Operation::CreateKeyring(pb::CreateKeyringBody {
            admins: Some(pb::KeyringAdmins {
                admins: vec![admin_key.public()],
                threshold: 1,
            }),
        }))
        .unwrap();
    let request = stack.stamped(body, &[&admin_key]);
    let host = admin.raw();
    let attempt = || {
        let (mut host, request) = (host.clone(), request.clone());
        async move { host.create_keyring(request).await.map(|_| ()) }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the restarted enclave itself answers "loading" (before that the host answers for
    // an enclave it cannot reach): UNAVAILABLE both times, nothing spent.
    loop {
        let status = attempt().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        if status.message() == "enclave is loading keys" {
            break;
        }
        assert!(Instant::now() < deadline, "the enclave never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The store is repaired; the host's next load succeeds; the same bytes now go through.
    db.execute("UPDATE keyrings SET admins_seal = ?1", [&seal])
        .unwrap();
    drop(db);
    loop {
        match attempt().await {
            Ok(()) => break,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And once, not twice: the nonce is spent now.
    let status = attempt().await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
