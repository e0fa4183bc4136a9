//! Addresses, listeners and dialers for every hop: vsock in production, Unix sockets and TCP
//! locally. One server code path for all three.
//!
//! Address forms: `vsock://CID:PORT`, `unix:///absolute/path`, `tcp://HOST:PORT`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_vsock::{VsockAddr, VsockListener};
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

pub mod guard;

/// Failures of address parsing, binding, dialing and serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is not one of the accepted forms.
    #[error("bad address {0:?}: expected vsock://CID:PORT, unix:///path or tcp://HOST:PORT")]
    BadAddress(String),
    /// Binding or accepting failed.
    #[error("I/O on {address}: {source}")]
    Io {
        /// The address involved.
        address: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where to listen or dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// AF_VSOCK context id and port (production, between parent instance and enclave).
    Vsock {
        /// Context id (the enclave's CID; 3 is the parent).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// A Unix domain socket path (local development and tests).
    Unix(PathBuf),
    /// A TCP socket address.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadAddress(text.to_owned());
        if let Some(rest) = text.strip_prefix("vsock://") {
            let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
            return Ok(Address::Vsock {
                cid: cid.parse().map_err(|_| bad())?,
                port: port.parse().map_err(|_| bad())?,
            });
        }
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return Ok(Address::Tcp(rest.parse().map_err(|_| bad())?));
        }
        Err(bad())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// A bound listener, ready to serve. Bind first, then announce or spawn dependents: no races.
#[derive(Debug)]
pub enum Listener {
    /// vsock.
    Vsock(VsockListener),
    /// Unix domain socket.
    Unix(UnixListener),
    /// TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`. A stale Unix socket file (nobody accepting) is replaced.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn bind(address: &Address) -> Result<Self, Error> {
        let io = |source| Error::Io {
            address: address.to_string(),
            source,
        };
        match address {
            Address::Vsock { cid, port } => Ok(Listener::Vsock(
                VsockListener::bind(VsockAddr::new(*cid, *port)).map_err(io)?,
            )),
            Address::Unix(path) => {
                if path.exists() && tokio::net::UnixStream::connect(path).await.is_err() {
                    std::fs::remove_file(path).map_err(io)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path).map_err(io)?))
            }
            Address::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await.map_err(io)?)),
        }
    }

    /// The bound address (with the real port when TCP port 0 was asked for).
    pub fn local_address(&self) -> Option<Address> {
        match self {
            Listener::Vsock(l) => l.local_addr().ok().map(|a| Address::Vsock {
                cid: a.cid(),
                port: a.port(),
            }),
            Listener::Unix(l) => l
                .local_addr()
                .ok()?
                .as_pathname()
                .map(|p| Address::Unix(p.to_owned())),
            Listener::Tcp(l) => l.local_addr().ok().map(Address::Tcp),
        }
    }

    /// Serves `router` on this listener until `shutdown` completes.
    ///
    /// # Errors
    /// [`Error::Transport`] when the server fails.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        self.serve_guarded(router, shutdown, None).await
    }

    /// [`Listener::serve`], cutting TCP clients that miss `deadlines` (the public API's
    /// listener; [`guard`]).
    ///
    /// # Errors
    /// [`Error::Transport`] when the server fails.
    pub async fn serve_guarded(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
        deadlines: Option<guard::Deadlines>,
    ) -> Result<(), Error> {
        match self {
            Listener::Vsock(l) => {
                router
                    .serve_with_incoming_shutdown(l.incoming(), shutdown)
                    .await?
            }
            Listener::Unix(l) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                    .await?
            }
            Listener::Tcp(l) => {
                // tonic's `Server::tcp_nodelay` applies only to listeners it binds itself: without
                // this, small replies wait for delayed ACKs (tens of milliseconds).
                let incoming = TcpListenerStream::new(l).map(move |stream| {
                    let stream = stream?;
                    stream.set_nodelay(true)?;
                    let deadlines = deadlines.unwrap_or(guard::Deadlines {
                        handshake: Duration::MAX,
                        idle: Duration::MAX,
                    });
                    Ok::<_, std::io::Error>(guard::Guarded::new(stream, deadlines))
                });
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Timeouts for a dialed channel.
#[derive(Clone, Copy, Debug)]
pub struct DialOptions {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Default deadline of each call made on the channel.
    pub request_timeout: Duration,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A lazily connected channel to `address`: it connects on first use and reconnects after
/// failures, so a peer that restarts is picked up without rebuilding clients.
///
/// # Errors
/// [`Error::BadAddress`] for a malformed TCP authority.
pub fn dial(address: &Address, options: DialOptions) -> Result<Channel, Error> {
    dial_with(address, options, None)
}

/// [`dial`], with TLS (and, if the config carries a client identity, mutual TLS) on TCP.
///
/// # Errors
/// [`Error::BadAddress`] for a malformed authority or TLS on a non-TCP address;
/// [`Error::Transport`] for an unusable TLS configuration.
pub fn dial_with(
    address: &Address,
    options: DialOptions,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, Error> {
    if tls.is_some() && !matches!(address, Address::Tcp(_)) {
        return Err(Error::BadAddress(address.to_string()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let authority = match address {
        Address::Tcp(addr) => format!("{scheme}://{addr}"),
        // The authority is only a label for non-TCP transports.
        Address::Unix(_) | Address::Vsock { .. } => "http://signer.local".to_owned(),
    };
    let endpoint = Endpoint::from_shared(authority)
        .map_err(|_| Error::BadAddress(address.to_string()))?
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls)?,
        None => endpoint,
    };
    let channel = match address.clone() {
        Address::Tcp(_) => endpoint.connect_lazy(),
        Address::Unix(path) => endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        })),
        Address::Vsock { cid, port } => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| async move {
                tokio_vsock::VsockStream::connect(VsockAddr::new(cid, port))
                    .await
                    .map(TokioIo::new)
            }))
        }
    };
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for text in [
            "vsock://16:5000",
            "unix:///run/signer/enclave.sock",
            "tcp://127.0.0.1:50051",
            "tcp://[::1]:1",
        ] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "vsock://16",
            "vsock://x:1",
            "unix://relative",
            "tcp://localhost",
            "http://1.2.3.4:5",
            "tcp://1.2.3.4",
        ] {
            assert!(
                matches!(bad.parse::<Address>(), Err(Error::BadAddress(_))),
                "{bad}"
            );
        }
    }
}
