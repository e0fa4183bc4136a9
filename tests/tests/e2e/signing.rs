//! Create keys, sign with both backends, verify with the other implementation.

use signer_client::StreamSignature;
use tests::Stack;

/// Verifies an SDK-returned ECDSA signature with libsecp256k1 (the SDK itself verified with k256).
fn verify_with_libsecp(public: &[u8; 33], digest: &[u8; 32], sig: &signer_client::EcdsaSignature) {
    let key = secp256k1::PublicKey::from_slice(public).unwrap();
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&sig.r);
    rs[32..].copy_from_slice(&sig.s);
    let standard = secp256k1::ecdsa::Signature::from_compact(&rs).unwrap();
    standard
        .verify(secp256k1::Message::from_digest(*digest), &key)
        .unwrap();
    let recid = secp256k1::ecdsa::RecoveryId::try_from(i32::from(sig.v)).unwrap();
    let recoverable = secp256k1::ecdsa::RecoverableSignature::from_compact(&rs, recid).unwrap();
    assert_eq!(
        recoverable
            .recover_ecdsa(secp256k1::Message::from_digest(*digest))
            .unwrap(),
        key
    );
}

async fn create_sign_verify(backend: &str) {
    let stack = Stack::start(backend).await;
    let client = stack.client().await;
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(
            client
                .create_key(&stack.keyring(), &format!("wallet {i}"))
                .await
                .unwrap(),
        );
    }
    for (i, key) in keys.iter().enumerate() {
        let digest = [u8::try_from(i).unwrap() + 1; 32];
        let sig = client.sign_digest(&key.key_id, digest).await.unwrap();
        verify_with_libsecp(&key.public_key_compressed, &digest, &sig);
        // RFC 6979: the same digest signs to the same bytes.
        assert_eq!(client.sign_digest(&key.key_id, digest).await.unwrap(), sig);

        let message = b"BIP-340 message of any length";
        let schnorr = client.sign_schnorr(&key.key_id, message).await.unwrap();
        let xonly = secp256k1::XOnlyPublicKey::from_byte_array(key.public_key_xonly).unwrap();
        secp256k1::schnorr::Signature::from_byte_array(schnorr.0)
            .verify(message, &xonly)
            .unwrap();
    }
    // ListKeys pages through all of them, oldest first.
    let (first, token) = client.list_keys(2, "").await.unwrap();
    let (rest, end) = client.list_keys(2, &token).await.unwrap();
    assert!(end.is_empty());
    let listed: Vec<_> = first.into_iter().chain(rest).collect();
    assert_eq!(listed, keys);
    assert!(stack.log().contains(&format!("backend=\"{backend}\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k256_backend_signs_and_libsecp256k1_verifies() {
    create_sign_verify("k256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secp256k1_backend_signs_and_k256_verifies() {
    create_sign_verify("secp256k1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_stream_answers_every_item_and_survives_bad_ones() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "stream").await.unwrap();
    let other = client
        .create_key(&stack.keyring(), "stream 2")
        .await
        .unwrap();
    let mut stream = client.sign_stream().await.unwrap();
    let mut expected = std::collections::HashMap::new();
    for i in 0..200u32 {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes()).into();
        let id = if i % 2 == 0 {
            stream.submit_digest(&key.key_id, digest).await.unwrap()
        } else {
            stream.submit_schnorr(&other.key_id, &digest).await.unwrap()
        };
        expected.insert(id, i);
    }
    // A request the enclave refuses (empty body) is answered with its error; the stream goes on.
    let mut raw = client.raw();
    let bad = signer_client::pb::SignStreamRequest {
        id: 9_999,
        request: Some(Default::default()),
    };
    let answers: Vec<_> = tokio_stream::StreamExt::collect(
        raw.sign_stream(tokio_stream::iter([bad]))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let answer = answers[0].as_ref().unwrap();
    assert_eq!(answer.id, 9_999);
    assert_eq!(
        answer.error.as_ref().unwrap().code,
        i32::from(tonic::Code::InvalidArgument)
    );

    stream.close_send();
    let mut seen = 0;
    while let Some(item) = stream.next().await {
        let (id, result) = item.unwrap();
        let i = expected.remove(&id).expect("each id answered once");
        match result.unwrap() {
            StreamSignature::Ecdsa(_) => assert_eq!(i % 2, 0),
            StreamSignature::Schnorr(_) => assert_eq!(i % 2, 1),
        }
        seen += 1;
    }
    assert_eq!(seen, 200);
    assert!(expected.is_empty());
}
