//! `SignBatch`: many payloads, one key, one stamped body. The honest path (every signature the
//! one `Sign` gives for the same payload, one audit entry) and a hostile host's attempts on it:
//! stretching the batch, editing or replaying it, moving it to another operation, outrunning a
//! rate limit, and reordering or dropping signatures on the way back.

use std::sync::Arc;

use prost::Message as _;
use signer_client::pb::request_body::Operation;
use signer_client::{Client, Error, MAX_BATCH, pb};
use tests::Stack;
use tests::relay::HostileRelay;
use tonic::Code;

use super::audit::{decoded, trail};
use super::hostile::{code, sign_body};

fn batch_body(client: &Client, key_id: &str, payloads: Vec<Vec<u8>>) -> Vec<u8> {
    client
        .body(Operation::SignBatch(pb::SignBatchBody {
            key_id: key_id.to_owned(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payloads,
            path: Vec::new(),
        }))
        .unwrap()
}

async fn batch_code(client: &Client, request: pb::SignedRequest) -> Code {
    client
        .raw()
        .sign_batch(request)
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

fn digests(count: usize, salt: u8) -> Vec<[u8; 32]> {
    (0..count)
        .map(|i| {
            let mut digest = [salt; 32];
            digest[..8].copy_from_slice(&u64::try_from(i).unwrap().to_be_bytes());
            digest
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_signs_each_payload_as_sign_would_with_one_audit_entry() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "batch").await.unwrap();
    let id = key.key_id.as_str();

    let sixteen = digests(16, 1);
    let signed = client.sign_digests(id, &sixteen).await.unwrap();
    assert_eq!(signed.len(), 16);
    // RFC 6979: each is byte for byte what a single Sign of the same digest gives, in order.
    for (digest, signature) in sixteen.iter().zip(&signed).take(3) {
        assert_eq!(&client.sign_digest(id, *digest).await.unwrap(), signature);
    }
    for (digest, signature) in sixteen.iter().zip(&signed) {
        assert!(tests::ecdsa_verifies(
            &key,
            digest,
            &signature.r,
            &signature.s
        ));
    }
    let full = client
        .sign_digests(id, &digests(MAX_BATCH, 2))
        .await
        .unwrap();
    assert_eq!(full.len(), MAX_BATCH);

    // BIP-340, checked with libsecp256k1.
    let messages: [&[u8]; 3] = [b"one", b"", &[7; 300]];
    let schnorr = client.sign_schnorr_batch(id, &messages).await.unwrap();
    let xonly = secp256k1::XOnlyPublicKey::from_byte_array(key.public_key_xonly).unwrap();
    for (message, signature) in messages.iter().zip(&schnorr) {
        secp256k1::schnorr::Signature::from_byte_array(signature.0)
            .verify(message, &xonly)
            .unwrap();
    }

    // The SDK does not send an empty or oversized batch.
    assert!(matches!(
        client.sign_digests(id, &[]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        client.sign_digests(id, &digests(MAX_BATCH + 1, 3)).await,
        Err(Error::InvalidArgument(_))
    ));

    // One audit entry per batch (boot, keyring, key, batch, 3 signs, batch, batch), its body
    // hash the hash of the whole stamped body.
    let (entries, _) = trail(&client, 9).await;
    let actions: Vec<_> = decoded(&entries).iter().map(|e| e.action()).collect();
    assert_eq!(
        actions[3..9],
        [
            pb::AuditAction::SignBatch,
            pb::AuditAction::Sign,
            pb::AuditAction::Sign,
            pb::AuditAction::Sign,
            pb::AuditAction::SignBatch,
            pb::AuditAction::SignBatch,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_stretch_edit_replay_or_reorder_a_batch() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let approver = stack.admin_key();
    let policy = pb::Policy {
        approvers: vec![approver.public()],
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![approver.public()],
        admin_threshold: 1,
        max_signatures_per_minute: 10,
        ..Default::default()
    };
    let key = admin
        .create_key_with(&stack.keyring(), "limited", policy)
        .await
        .unwrap();
    let id = key.key_id.as_str();
    let payloads = |count: usize, salt: u8| -> Vec<Vec<u8>> {
        digests(count, salt).into_iter().map(Vec::from).collect()
    };

    // Malformed batches, stamped by the approver: refused before anything is spent.
    for bad in [
        Vec::new(),
        payloads(MAX_BATCH + 1, 1),
        vec![vec![1; 32], vec![2; 31]],
    ] {
        let request = stack.stamped(batch_body(&admin, id, bad), &[&approver]);
        assert_eq!(batch_code(&admin, request).await, Code::InvalidArgument);
    }
    // A batch sent as a Sign, a Sign sent as a batch.
    let batch = stack.stamped(batch_body(&admin, id, payloads(2, 2)), &[&approver]);
    assert_eq!(code(&admin, batch).await, Code::InvalidArgument);
    let single = stack.stamped(sign_body(&admin, id, [3; 32]), &[&approver]);
    assert_eq!(batch_code(&admin, single).await, Code::InvalidArgument);

    // Rate limit 10 a minute, counted per payload: 11 at once are refused and spend nothing,
    // so the same stamped body is refused again for the limit, not as a replay.
    let eleven = stack.stamped(batch_body(&admin, id, payloads(11, 4)), &[&approver]);
    assert_eq!(
        batch_code(&admin, eleven.clone()).await,
        Code::ResourceExhausted
    );
    assert_eq!(batch_code(&admin, eleven).await, Code::ResourceExhausted);
    let nine = stack.stamped(batch_body(&admin, id, payloads(9, 5)), &[&approver]);
    assert_eq!(batch_code(&admin, nine.clone()).await, Code::Ok);
    // Replayed: refused, and it took no token (one is left for the Sign below).
    assert_eq!(
        batch_code(&admin, nine.clone()).await,
        Code::Unauthenticated
    );
    // Edited: a payload changed, or one appended, under the approver's stamp.
    let mut body = pb::RequestBody::decode(nine.body.as_slice()).unwrap();
    let Some(Operation::SignBatch(batch)) = body.operation.as_mut() else {
        panic!("a batch body");
    };
    batch.payloads[0][0] ^= 1;
    let edited = pb::SignedRequest {
        body: body.encode_to_vec(),
        stamps: nine.stamps.clone(),
    };
    assert_eq!(batch_code(&admin, edited).await, Code::Unauthenticated);
    let mut body = pb::RequestBody::decode(nine.body.as_slice()).unwrap();
    if let Some(Operation::SignBatch(batch)) = body.operation.as_mut() {
        batch.payloads.push(vec![9; 32]);
    }
    let stretched = pb::SignedRequest {
        body: body.encode_to_vec(),
        stamps: nine.stamps,
    };
    assert_eq!(batch_code(&admin, stretched).await, Code::Unauthenticated);
    // The tenth token, then nothing: the batch took nine.
    admin.sign_digest(id, [6; 32]).await.unwrap();
    assert!(matches!(
        admin.sign_digest(id, [7; 32]).await,
        Err(Error::Status(status)) if status.code() == Code::ResourceExhausted
    ));

    // On the way back: signatures swapped, or one dropped, are caught by the SDK.
    let open = admin.create_key(&stack.keyring(), "open").await.unwrap();
    let relay = HostileRelay::start(&stack.address).await;
    let through = stack
        .client_at(relay.address.clone(), Some(stack.admin_stamper()))
        .await;
    let four = digests(4, 8);
    through.sign_digests(&open.key_id, &four).await.unwrap();
    relay.tamper_batch_reply(Some(Arc::new(|reply: &mut pb::SignBatchResponse| {
        reply.signatures.swap(0, 1);
    })));
    assert!(matches!(
        through.sign_digests(&open.key_id, &four).await,
        Err(Error::Verification(_))
    ));
    relay.tamper_batch_reply(Some(Arc::new(|reply: &mut pb::SignBatchResponse| {
        reply.signatures.pop();
    })));
    assert!(matches!(
        through.sign_digests(&open.key_id, &four).await,
        Err(Error::Verification(_))
    ));
    // And a BIP-340 batch under an ECDSA-only policy is refused.
    assert!(matches!(
        admin.sign_schnorr_batch(id, &[b"m"]).await,
        Err(Error::Status(status)) if status.code() == Code::PermissionDenied
    ));
}
