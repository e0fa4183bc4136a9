//! The guard's deadlines on tokio's paused clock: when a connection is closed, to the
//! millisecond, however often its timer was re-armed.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};

/// A guarded connection with these deadlines (in seconds), its peer, and when it started.
fn connection(handshake: u64, idle: u64) -> (DuplexStream, Guarded<DuplexStream>, Instant) {
    let (peer, ours) = duplex(64);
    let deadlines = Deadlines {
        handshake: Duration::from_secs(handshake),
        idle: Duration::from_secs(idle),
    };
    (peer, Guarded::new(ours, deadlines), Instant::now())
}

/// Reads one byte, or the guard's error.
async fn read_byte(guarded: &mut Guarded<DuplexStream>) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    guarded.read_exact(&mut byte).await?;
    Ok(byte[0])
}

/// Asserts `elapsed` is `expected`, give or take the timer wheel's millisecond.
fn assert_at(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(2),
        "closed after {elapsed:?}, expected {expected:?}"
    );
}

/// What the server's request handler holds (`DuplexStream` has no connect info of its own).
fn info(guarded: &Guarded<DuplexStream>) -> GuardedInfo<()> {
    GuardedInfo {
        inner: (),
        first_request: Arc::clone(&guarded.first_request),
    }
}

fn timed_out(result: io::Result<u8>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::TimedOut)
}

#[tokio::test(start_paused = true)]
async fn silent_connection_is_closed_at_the_handshake_deadline() {
    let (_peer, mut guarded, start) = connection(10, 30);
    assert!(timed_out(read_byte(&mut guarded).await));
    assert_at(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn each_byte_extends_the_idle_deadline_and_silence_then_closes() {
    let (mut peer, mut guarded, start) = connection(10, 30);
    let writer = tokio::spawn(async move {
        for i in 0..6u8 {
            peer.write_all(&[i]).await.expect("write");
            // Every 20 s: under the idle timeout, and the whole run far beyond it.
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        peer
    });
    assert_eq!(read_byte(&mut guarded).await.expect("first byte"), 0);
    info(&guarded).request_arrived();
    for i in 1..6u8 {
        assert_eq!(read_byte(&mut guarded).await.expect("byte"), i);
    }
    // The last byte came at 100 s; the peer then stays open and silent.
    let _peer = writer.await.expect("writer");
    assert!(timed_out(read_byte(&mut guarded).await));
    assert_at(start.elapsed(), Duration::from_secs(130));
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_shorter_than_the_handshake_applies_from_the_first_request() {
    let (mut peer, mut guarded, start) = connection(30, 5);
    peer.write_all(&[7]).await.expect("write");
    assert_eq!(read_byte(&mut guarded).await.expect("byte"), 7);
    info(&guarded).request_arrived();
    assert!(timed_out(read_byte(&mut guarded).await));
    assert_at(start.elapsed(), Duration::from_secs(5));
}
