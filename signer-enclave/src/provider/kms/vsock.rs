//! Reaching KMS from inside a Nitro enclave, which has no network: through the parent's
//! `vsock-proxy` (`vsock-proxy 8000 kms.<region>.amazonaws.com 443` on the parent instance).
//!
//! The AWS SDK's HTTP client only speaks TCP, so the enclave runs a loopback forwarder: TLS
//! connections to `kms.<region>.amazonaws.com:443` resolve to 127.0.0.1 ([`KmsResolver`]) and the
//! forwarder ([`forward`]) carries each one's bytes over vsock to the proxy. TLS still runs end to
//! end between the enclave and KMS, with the real server name and certificate checks: the parent
//! relays ciphertext only. The enclave image must bring up its loopback interface.

use std::net::{IpAddr, Ipv4Addr};

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use signer_proto::transport::Address;
use tokio::net::TcpListener;

/// Resolves exactly KMS's host name to the loopback forwarder, and nothing else.
#[derive(Clone, Debug)]
pub struct KmsResolver {
    host: String,
}

impl KmsResolver {
    /// A resolver for `kms.<region>.amazonaws.com`.
    pub fn new(region: &str) -> Self {
        Self {
            host: format!("kms.{region}.amazonaws.com"),
        }
    }
}

impl ResolveDns for KmsResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        let answer = if name.eq_ignore_ascii_case(&self.host) {
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        } else {
            Err(ResolveDnsError::new(format!(
                "the enclave resolves only {}",
                self.host
            )))
        };
        DnsFuture::ready(answer)
    }
}

async fn relay(mut inbound: tokio::net::TcpStream, target: &Address) -> std::io::Result<()> {
    match target {
        Address::Vsock { cid, port } => {
            let mut outbound =
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?;
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
        }
        Address::Tcp(addr) => {
            let mut outbound = tokio::net::TcpStream::connect(addr).await?;
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
        }
        Address::Unix(path) => {
            let mut outbound = tokio::net::UnixStream::connect(path).await?;
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
        }
    }
    Ok(())
}

/// Accepts connections on `listener` and relays each, byte for byte, to `target` (the parent's
/// vsock-proxy in production: `vsock://3:8000`). Runs until the listener fails.
pub async fn forward(listener: TcpListener, target: Address) {
    while let Ok((inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Err(error) = relay(inbound, &target).await {
                tracing::warn!(%error, %target, "KMS connection through the proxy failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn resolves_only_kms() {
        let resolver = KmsResolver::new("eu-central-1");
        let addresses = resolver
            .resolve_dns("kms.eu-central-1.amazonaws.com")
            .await
            .unwrap();
        assert_eq!(addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert!(
            resolver
                .resolve_dns("kms.us-east-1.amazonaws.com")
                .await
                .is_err()
        );
        assert!(resolver.resolve_dns("attacker.example").await.is_err());
    }

    #[tokio::test]
    async fn relays_bytes_both_ways() {
        // A stand-in for the vsock-proxy: answers what it receives, upper-cased.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_address = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).await.unwrap();
            stream
                .write_all(&buffer.to_ascii_uppercase())
                .await
                .unwrap();
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        tokio::spawn(forward(listener, Address::Tcp(upstream_address)));
        let mut client = tokio::net::TcpStream::connect(local).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HELLO");
    }
}
