//! A hostile host in the middle: the test holds the wire (a raw client to the host's public
//! API) and edits bodies, drops, reuses and duplicates stamps, replays requests and policy
//! changes, and substitutes public keys. Every attack fails; honest requests still succeed.

use signer_client::pb::request_body::Operation;
use signer_client::{ApiKeyPair, ApiKeyScheme, Client, Stamper, pb};
use tests::Stack;
use tonic::Code;

pub(super) fn sign_body(client: &Client, key_id: &str, digest: [u8; 32]) -> Vec<u8> {
    client
        .body(Operation::Sign(pb::SignBody {
            key_id: key_id.to_owned(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: digest.to_vec(),
            path: Vec::new(),
        }))
        .unwrap()
}

pub(super) async fn code(client: &Client, request: pb::SignedRequest) -> Code {
    client
        .raw()
        .sign(request)
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_edited_replayed_and_underapproved_requests_fail() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let [a, b, c, stranger] = [0; 4].map(|_| ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap());
    let p256 = ApiKeyPair::generate(ApiKeyScheme::P256).unwrap();
    // 2-of-3 approvers (one of them P-256), ECDSA only, administered by the stack's admin.
    let policy = pb::Policy {
        approvers: vec![a.public(), b.public(), p256.public()],
        threshold: 2,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![stack.admin_key().public()],
        admin_threshold: 1,
        ..Default::default()
    };
    let key = admin
        .create_key_with(&stack.keyring(), "2-of-3", policy)
        .await
        .unwrap();
    let id = key.key_id.as_str();

    // Quorum: one approver is refused; the same approver twice is one; two distinct sign.
    assert_eq!(
        code(&admin, stack.stamped(sign_body(&admin, id, [1; 32]), &[&a])).await,
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            &admin,
            stack.stamped(sign_body(&admin, id, [1; 32]), &[&a, &a])
        )
        .await,
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            &admin,
            stack.stamped(sign_body(&admin, id, [1; 32]), &[&a, &stranger])
        )
        .await,
        Code::PermissionDenied,
        "a stranger's stamp does not count"
    );
    let honest = stack.stamped(sign_body(&admin, id, [2; 32]), &[&a, &p256]);
    assert_eq!(code(&admin, honest.clone()).await, Code::Ok);
    // Through the SDK too, with a two-key stamper; the signature verifies against the key.
    let quorum = stack
        .client_with(Some(Stamper::new(vec![
            ApiKeyPair::from_pem(&a.to_pem().unwrap()).unwrap(),
            ApiKeyPair::from_pem(&b.to_pem().unwrap()).unwrap(),
        ])))
        .await;
    quorum.sign_digest(id, [3; 32]).await.unwrap();
    // Schnorr is not in the policy.
    assert!(quorum.sign_schnorr(id, b"msg").await.is_err());

    // The relay replays the honest request: refused.
    assert_eq!(code(&admin, honest.clone()).await, Code::Unauthenticated);
    // Edits a byte of the body: the stamps no longer verify.
    let mut edited = stack.stamped(sign_body(&admin, id, [4; 32]), &[&a, &b]);
    let last = edited.body.len() - 1;
    edited.body[last] ^= 1;
    assert_eq!(code(&admin, edited).await, Code::Unauthenticated);
    // Moves the honest stamps onto a body of its own.
    let reused = pb::SignedRequest {
        body: sign_body(&admin, id, [5; 32]),
        stamps: honest.stamps.clone(),
    };
    assert_eq!(code(&admin, reused).await, Code::Unauthenticated);
    // Drops every stamp, or one of two.
    let mut dropped = stack.stamped(sign_body(&admin, id, [6; 32]), &[&a, &b]);
    let kept = dropped.stamps.remove(0);
    assert_eq!(code(&admin, dropped.clone()).await, Code::PermissionDenied);
    dropped.stamps.clear();
    assert_eq!(code(&admin, dropped).await, Code::Unauthenticated);
    // Adds a garbage stamp to an honest request.
    let mut padded = stack.stamped(sign_body(&admin, id, [7; 32]), &[&a, &b]);
    padded.stamps.push(pb::Stamp {
        signature: vec![0; 64],
        ..kept
    });
    assert_eq!(code(&admin, padded).await, Code::Unauthenticated);
    // A stale body (timestamp an hour old), honestly stamped.
    let stale = pb::RequestBody {
        timestamp_ms: 1_000,
        nonce: vec![9; 16],
        operation: Some(Operation::Sign(pb::SignBody {
            key_id: id.to_owned(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![8; 32],
            path: Vec::new(),
        })),
    };
    let stale = stack.stamped(prost::Message::encode_to_vec(&stale), &[&a, &b]);
    assert_eq!(code(&admin, stale).await, Code::Unauthenticated);
    // Approvers are not keyring admins: they cannot create keys.
    assert!(
        quorum
            .create_key(&stack.keyring(), "not allowed")
            .await
            .is_err()
    );

    // Policy change by the admin: c replaces p256; the old quorum no longer signs.
    let new_policy = pb::Policy {
        approvers: vec![a.public(), b.public(), c.public()],
        threshold: 2,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![stack.admin_key().public()],
        admin_threshold: 1,
        ..Default::default()
    };
    let changed = admin.update_policy(id, new_policy.clone()).await.unwrap();
    assert_ne!(changed.policy_hash, key.policy_hash);
    assert_eq!(changed.public_key_compressed, key.public_key_compressed);
    assert_eq!(
        code(
            &admin,
            stack.stamped(sign_body(&admin, id, [10; 32]), &[&a, &p256])
        )
        .await,
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            &admin,
            stack.stamped(sign_body(&admin, id, [10; 32]), &[&a, &c])
        )
        .await,
        Code::Ok
    );
    // The relay replays the original policy back (a change naming the first policy): refused.
    let rollback = stack.admin_stamper();
    let old_policy_request = {
        let body = admin
            .body(Operation::UpdatePolicy(pb::UpdatePolicyBody {
                key_id: id.to_owned(),
                current_policy_hash: key.policy_hash.to_vec(),
                policy: Some(new_policy),
            }))
            .unwrap();
        pb::SignedRequest {
            stamps: rollback.stamp(&stack.deployment_id, &body),
            body,
        }
    };
    let refused = admin
        .raw()
        .update_policy(old_policy_request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // An approver cannot change the policy.
    let by_approver = quorum
        .update_policy(
            id,
            pb::Policy {
                approvers: vec![a.public()],
                threshold: 1,
                schemes: vec![1],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(by_approver.code(), Some(Code::PermissionDenied));
    // The generic messages say nothing about why.
    let denied = admin
        .raw()
        .sign(stack.stamped(sign_body(&admin, id, [11; 32]), &[&a]))
        .await
        .unwrap_err();
    assert_eq!(denied.message(), "request not permitted");
    assert!(
        stack.log().contains("approver quorum not met"),
        "the reason is in the enclave's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_public_keys_are_caught_by_the_sdk() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let mine = client.create_key(&stack.keyring(), "mine").await.unwrap();
    let other = client.create_key(&stack.keyring(), "other").await.unwrap();
    let identity = client.enclave_identity(false).await.unwrap();
    let reply = |key_id: &str, challenge: Vec<u8>| {
        let client = client.clone();
        let key_id = key_id.to_owned();
        async move {
            client
                .raw()
                .get_public_key(pb::GetPublicKeyRequest {
                    key_id,
                    challenge,
                    path: Vec::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .key
                .unwrap()
        }
    };
    let honest = reply(&mine.key_id, vec![1; 32]).await;
    identity.check_key(&honest, &[1; 32]).unwrap();
    // The host swaps in another public key (its own, or another wallet's) with a consistent
    // address: the enclave's statement does not cover it.
    let forged = pb::KeyInfo {
        public_key_compressed: other.public_key_compressed.to_vec(),
        public_key_uncompressed: other.public_key_uncompressed.to_vec(),
        public_key_xonly: other.public_key_xonly.to_vec(),
        ethereum_address: other.ethereum_address.clone(),
        ..honest.clone()
    };
    assert!(identity.check_key(&forged, &[1; 32]).is_err());
    // Or the other key's whole signed reply under this key's id.
    let theirs = reply(&other.key_id, vec![1; 32]).await;
    let swapped = pb::KeyInfo {
        key_id: mine.key_id.clone(),
        ..theirs
    };
    assert!(identity.check_key(&swapped, &[1; 32]).is_err());
    // Or replays an old statement for a new challenge.
    assert!(identity.check_key(&honest, &[2; 32]).is_err());
    // Or signs its own statement with a key of its own.
    let mut self_signed = honest.clone();
    if let Some(statement) = self_signed.statement.as_mut() {
        statement.signing_public_key = vec![7; 32];
    }
    assert!(identity.check_key(&self_signed, &[1; 32]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_secret_signs_as_its_known_key_and_never_reaches_the_host() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    // The EIP-712 reference example's key (testdata/vectors/ethereum_vectors.json).
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/vectors/ethereum_vectors.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let example = &vectors["eip712_mail_example"];
    let secret_hex = example["private_key"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x");
    let secret: [u8; 32] = hex::decode(secret_hex).unwrap().try_into().unwrap();
    let key = client
        .import_key(&stack.keyring(), "imported", None, &secret)
        .await
        .unwrap();
    assert_eq!(
        key.ethereum_address.to_lowercase(),
        example["address"].as_str().unwrap()
    );
    let signature = client.sign_digest(&key.key_id, [0x55; 32]).await.unwrap();
    assert!(signature.v <= 1);

    // A ciphertext for this enclave does not import when replayed (nonce), and an approver
    // cannot import (keyring admins only).
    let approver = ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap();
    let outsider = stack.client_with(Some(Stamper::new(vec![approver]))).await;
    assert_eq!(
        outsider
            .import_key(&stack.keyring(), "x", None, &secret)
            .await
            .unwrap_err()
            .code(),
        Some(Code::PermissionDenied)
    );

    let memory = super::secrets::process_memory(stack.host_pid());
    assert!(!super::secrets::contains(&memory, &secret));
    assert!(!super::secrets::contains(&memory, secret_hex.as_bytes()));
    for name in ["keys.sqlite3", "host.log"] {
        let bytes = std::fs::read(stack.dir.path().join(name)).unwrap();
        assert!(!super::secrets::contains(&bytes, &secret), "{name}");
        assert!(
            !super::secrets::contains(&bytes, secret_hex.as_bytes()),
            "{name}"
        );
    }
}
