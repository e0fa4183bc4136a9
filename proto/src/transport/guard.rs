//! Slow-client protection for a public listener. A connection must deliver its first request
//! within a handshake deadline, however its bytes arrive (a trickled TLS or HTTP/2 handshake
//! cannot hold it open), and after that is closed once it has sent nothing for an idle timeout.
//! An HTTP/2 client that is merely quiet keeps its connection: it answers the server's
//! keep-alive PINGs, which are reads here; a peer trickling a frame cannot answer them, and the
//! server's keep-alive timeout closes it. The server marks the first request through
//! [`GuardedInfo::request_arrived`] (every request carries it in its extensions).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Far enough to mean "never" without overflowing an `Instant`.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Time allowed until the first bytes arrive.
    pub handshake: Duration,
    /// Time a connection may go without sending a byte.
    pub idle: Duration,
}

/// A connection under [`Deadlines`].
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    deadlines: Deadlines,
    started: Instant,
    last_read: Instant,
    first_request: Arc<AtomicBool>,
    timer: Pin<Box<Sleep>>,
}

fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t + FAR)
}

impl<S> Guarded<S> {
    /// Starts the handshake deadline now.
    pub fn new(inner: S, deadlines: Deadlines) -> Self {
        let now = Instant::now();
        Self {
            inner,
            deadlines,
            started: now,
            last_read: now,
            first_request: Arc::new(AtomicBool::new(false)),
            timer: Box::pin(tokio::time::sleep_until(after(now, deadlines.handshake))),
        }
    }

    /// Until the first request: the handshake deadline; then the idle timeout after the last
    /// byte read.
    fn deadline(&self) -> Instant {
        if self.first_request.load(Ordering::Relaxed) {
            after(self.last_read, self.deadlines.idle)
        } else {
            after(self.started, self.deadlines.handshake)
        }
    }
}

/// The connection info a guarded connection gives its requests.
#[derive(Clone, Debug)]
pub struct GuardedInfo<I> {
    /// The underlying connection's info.
    pub inner: I,
    first_request: Arc<AtomicBool>,
}

impl<I> GuardedInfo<I> {
    /// Marks that the connection delivered a request: the handshake deadline no longer applies.
    pub fn request_arrived(&self) {
        self.first_request.store(true, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // The timer is re-armed lazily: a read only moves the deadline later, so the
                // timer stays where it is until it fires (or the deadline moves earlier, which
                // happens once, when the first request swaps the handshake deadline for the
                // idle one), and is then set to the real deadline if that is still ahead. A
                // busy connection re-arms once an idle period instead of once a read.
                let deadline = self.deadline();
                if deadline < self.timer.deadline() {
                    self.timer.as_mut().reset(deadline);
                }
                loop {
                    match self.timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let deadline = self.deadline();
                            if Instant::now() >= deadline {
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "client missed the handshake or idle deadline",
                                )));
                            }
                            self.timer.as_mut().reset(deadline);
                        }
                    }
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = GuardedInfo<S::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        GuardedInfo {
            inner: self.inner.connect_info(),
            first_request: Arc::clone(&self.first_request),
        }
    }
}

#[cfg(test)]
mod tests;
