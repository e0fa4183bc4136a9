//! Per-client concurrency over mutual TLS: a client holding its limit of open sign streams is
//! refused RESOURCE_EXHAUSTED for more (a stream or a call) on any connection, another client of
//! the same CA is not affected, and a slot comes back when a stream ends.

use signer_client::Error;
use tests::{Stack, StackOptions};
use tonic::Code;

const LIMIT: usize = 2;

fn exhausted<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::Status(status)) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_limit_is_refused_and_others_are_not() {
    let pki = super::tls::pki();
    let files = tempfile::tempdir().unwrap();
    let options = StackOptions {
        tls: Some(super::tls::mutual_tls(files.path(), &pki)),
        host_args: vec![format!("--concurrency-per-client={LIMIT}")],
        ..StackOptions::default()
    };
    let stack = tokio::task::block_in_place(|| {
        Stack::spawn(tempfile::tempdir().unwrap(), "k256", &options)
    });
    super::tls::wait_serving(&stack, &pki).await;
    let busy = super::tls::client(&stack, &pki.ca, Some(&pki.client)).await;
    let keyring = busy
        .create_keyring(vec![stack.admin_key().public()], 1)
        .await
        .unwrap();
    let key = busy.create_key(&keyring, "limits").await.unwrap();

    // The busy client opens its limit of streams, each on a connection of its own.
    let mut streams = Vec::new();
    for _ in 0..LIMIT {
        let client = super::tls::client(&stack, &pki.ca, Some(&pki.client)).await;
        // The key's verified identity first (a call of its own), so the stream's sign request
        // needs none.
        client.public_key(&key.key_id).await.unwrap();
        let mut stream = client.sign_stream().await.unwrap();
        let id = stream.submit_digest(&key.key_id, [1; 32]).await.unwrap();
        let (answered, signature) = stream.next().await.unwrap().unwrap();
        assert_eq!(answered, id);
        signature.unwrap();
        streams.push((client, stream));
    }
    // More is refused, on its first connection and on a new one, a call as a stream.
    exhausted(busy.sign_digest(&key.key_id, [2; 32]).await);
    exhausted(busy.sign_stream().await);
    let fresh = super::tls::client(&stack, &pki.ca, Some(&pki.client)).await;
    exhausted(fresh.public_key(&key.key_id).await);

    // Another client of the same CA signs and streams.
    let other = super::tls::client(&stack, &pki.ca, Some(&pki.second_client)).await;
    other.sign_digest(&key.key_id, [3; 32]).await.unwrap();
    let mut stream = other.sign_stream().await.unwrap();
    stream.submit_digest(&key.key_id, [4; 32]).await.unwrap();
    stream.next().await.unwrap().unwrap().1.unwrap();

    // One of the busy client's streams ends: its slot comes back (once the host has seen the
    // end, which the next call may race; a refusal meanwhile is still RESOURCE_EXHAUSTED).
    let (_, mut ended) = streams.pop().unwrap();
    ended.close_send();
    while ended.next().await.is_some() {}
    drop(ended);
    let mut signed = false;
    for _ in 0..200 {
        match busy.sign_digest(&key.key_id, [5; 32]).await {
            Ok(_) => {
                signed = true;
                break;
            }
            Err(Error::Status(status)) if status.code() == Code::ResourceExhausted => {
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(signed, "the ended stream's slot came back");
}
