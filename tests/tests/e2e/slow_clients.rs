//! Slow clients on the public API: a connection that sends nothing, stalls after the HTTP/2
//! preface, or trickles its handshake is closed at the handshake deadline; a quiet but live
//! client keeps its connection (a sign stream left idle for longer than the idle timeout still
//! answers).

use std::time::{Duration, Instant};

use tests::{Stack, StackOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HANDSHAKE_MS: u64 = 500;
const IDLE_MS: u64 = 1_500;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn options() -> StackOptions {
    StackOptions {
        host_args: vec![
            format!("--handshake-timeout-ms={HANDSHAKE_MS}"),
            format!("--idle-timeout-ms={IDLE_MS}"),
        ],
        ..StackOptions::default()
    }
}

async fn stack() -> Stack {
    Stack::start_with(tempfile::tempdir().unwrap(), &options()).await
}

async fn connect(stack: &Stack) -> TcpStream {
    let signer_proto::transport::Address::Tcp(address) = stack.address else {
        panic!("the stack listens on TCP");
    };
    TcpStream::connect(address).await.unwrap()
}

/// Reads (and discards what the server sends, such as SETTINGS and PINGs) until the server
/// closes the connection; how long that took. Fails the test after 10 s.
async fn closed_after(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    started: Instant,
) -> Duration {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the host closes the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_stall_or_trickle_are_closed() {
    let stack = stack().await;

    // Opens and sends nothing: closed at the handshake deadline.
    let started = Instant::now();
    let mut silent = connect(&stack).await;
    let took = closed_after(&mut silent, started).await;
    assert!(took >= Duration::from_millis(HANDSHAKE_MS - 50), "{took:?}");

    // The HTTP/2 preface, then nothing.
    let started = Instant::now();
    let mut stalled = connect(&stack).await;
    stalled.write_all(PREFACE).await.unwrap();
    let took = closed_after(&mut stalled, started).await;
    assert!(
        took < Duration::from_millis(HANDSHAKE_MS + 1_000),
        "{took:?}"
    );

    // The preface, then a SETTINGS frame one byte every 100 ms: bytes keep coming, well inside
    // the idle timeout, but no request arrives within the handshake deadline.
    let started = Instant::now();
    let (mut reader, mut writer) = connect(&stack).await.into_split();
    writer.write_all(PREFACE).await.unwrap();
    let trickle = tokio::spawn(async move {
        for byte in [0u8, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100].repeat(4) {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let took = closed_after(&mut reader, started).await;
    assert!(
        took < Duration::from_millis(HANDSHAKE_MS + 1_000),
        "a trickler was cut after {took:?}"
    );
    trickle.abort();

    // The host still serves.
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "after").await.unwrap();
    client.sign_digest(&key.key_id, [1; 32]).await.unwrap();
}

/// Signs once on a stream, stays quiet for twice the idle timeout, signs again on it.
async fn quiet_stream(client: &signer_client::Client, key_id: &str) {
    let mut stream = client.sign_stream().await.unwrap();
    let id = stream.submit_digest(key_id, [2; 32]).await.unwrap();
    let (answered, signature) = stream.next().await.unwrap().unwrap();
    assert_eq!(answered, id);
    signature.unwrap();
    // Quiet for twice the idle timeout (and past the handshake deadline): the client answers the
    // host's PINGs, so the stream, which cannot outlive its connection, still works.
    tokio::time::sleep(Duration::from_millis(IDLE_MS * 2)).await;
    let id = stream.submit_digest(key_id, [3; 32]).await.unwrap();
    let (answered, signature) = stream.next().await.unwrap().unwrap();
    assert_eq!(answered, id);
    signature.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_client_keeps_its_connection() {
    let stack = stack().await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "quiet").await.unwrap();
    quiet_stream(&client, &key.key_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_client_keeps_its_mutual_tls_connection() {
    let pki = super::tls::pki();
    let files = tempfile::tempdir().unwrap();
    let options = StackOptions {
        tls: Some(super::tls::mutual_tls(files.path(), &pki)),
        ..options()
    };
    let stack = tokio::task::block_in_place(|| {
        Stack::spawn(tempfile::tempdir().unwrap(), "k256", &options)
    });
    let client = super::tls::client(&stack, &pki.ca, Some(&pki.client)).await;
    super::tls::wait_serving(&stack, &pki).await;
    let keyring = client
        .create_keyring(vec![stack.admin_key().public()], 1)
        .await
        .unwrap();
    let key = client.create_key(&keyring, "quiet").await.unwrap();
    quiet_stream(&client, &key.key_id).await;
}
