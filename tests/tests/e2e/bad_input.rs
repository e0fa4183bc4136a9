//! Bad input gets a clear status, never a panic or a hang, and the service keeps serving.

use std::time::Duration;

use signer_client::pb;
use tests::Stack;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

fn body(
    client: &signer_client::Client,
    key_id: &str,
    scheme: pb::SignatureScheme,
    payload: Vec<u8>,
) -> Vec<u8> {
    client
        .body(pb::request_body::Operation::Sign(pb::SignBody {
            key_id: key_id.into(),
            scheme: scheme.into(),
            payload,
            path: Vec::new(),
        }))
        .unwrap()
}

async fn code_of(
    raw: &mut pb::signer_service_client::SignerServiceClient<tonic::transport::Channel>,
    stack: &Stack,
    body: Vec<u8>,
) -> Code {
    // Stamped by the key's approver: what is refused is the body, not the caller.
    let stamps = if body.len() <= signer_proto::MAX_BODY_BYTES {
        stack.admin_stamper().stamp(&stack.deployment_id, &body)
    } else {
        vec![]
    };
    raw.sign(pb::SignedRequest { stamps, body })
        .await
        .map(|_| Code::Ok)
        .unwrap_or_else(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_status_and_the_service_keeps_serving() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "target").await.unwrap();
    // A raw client without the SDK's own size limits, so the server's answers are what is tested.
    let mut raw = pb::signer_service_client::SignerServiceClient::new(
        signer_proto::transport::dial(&stack.address, Default::default()).unwrap(),
    );
    let ecdsa = pb::SignatureScheme::EcdsaSecp256k1;

    // Idle and garbage connections are open the whole time.
    let pb_addr = match &stack.address {
        signer_client::Address::Tcp(addr) => *addr,
        other => panic!("unexpected {other}"),
    };
    let _idle = tokio::net::TcpStream::connect(pb_addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(pb_addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef].repeat(100))
        .await
        .unwrap();
    // The server closes a connection that is not HTTP/2.
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "garbage connection was not closed");

    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "digest of 31 bytes",
            body(&client, &key.key_id, ecdsa, vec![1; 31]),
            Code::InvalidArgument,
        ),
        (
            "digest of 33 bytes",
            body(&client, &key.key_id, ecdsa, vec![1; 33]),
            Code::InvalidArgument,
        ),
        (
            "unknown key",
            body(
                &client,
                "k-00000000000000000000000000000000",
                ecdsa,
                vec![1; 32],
            ),
            Code::NotFound,
        ),
        (
            "malformed key id",
            body(&client, "../../etc/passwd", ecdsa, vec![1; 32]),
            Code::InvalidArgument,
        ),
        (
            "unknown scheme",
            body(
                &client,
                &key.key_id,
                pb::SignatureScheme::Unspecified,
                vec![1; 32],
            ),
            Code::InvalidArgument,
        ),
        ("empty body", vec![], Code::InvalidArgument),
        ("garbage body", vec![0xff; 64], Code::InvalidArgument),
        (
            "body over 64 KiB",
            vec![0; signer_proto::MAX_BODY_BYTES + 1],
            Code::InvalidArgument,
        ),
        // tonic answers a message over the decoder's limit with OUT_OF_RANGE.
        (
            "message over 256 KiB",
            vec![0; signer_proto::MAX_MESSAGE_BYTES + 1],
            Code::OutOfRange,
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(code_of(&mut raw, &stack, bytes).await, expected, "{name}");
    }
    let status = raw
        .get_public_key(pb::GetPublicKeyRequest {
            key_id: "x".repeat(10_000),
            challenge: vec![],
            path: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = raw
        .list_keys(pb::ListKeysRequest {
            page_size: 5_000,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = raw
        .list_keys(pb::ListKeysRequest {
            page_size: 1,
            page_token: "not a token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // Messages are generic: nothing from the body or the enclave's internals.
    let status = raw
        .sign(pb::SignedRequest {
            body: vec![0xff; 64],
            stamps: stack
                .admin_stamper()
                .stamp(&stack.deployment_id, &[0xff; 64]),
        })
        .await
        .unwrap_err();
    // Honestly stamped garbage reaches the decoder, whose message names the problem.
    assert_eq!(status.message(), "malformed body");

    // And the service still signs.
    client.sign_digest(&key.key_id, [3; 32]).await.unwrap();
    assert!(!stack.log().contains("panicked"), "{}", stack.log());
}
