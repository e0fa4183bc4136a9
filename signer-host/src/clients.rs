//! Per-client concurrency: the calls in flight and the sign streams open of one mutual-TLS client
//! (its certificate), across all of its connections, are limited to `[limits]
//! concurrency_per_client`; beyond it a call is refused RESOURCE_EXHAUSTED at once, so one busy
//! or stuck client cannot take every slot of the host from the others.
//!
//! Only an identity the TLS handshake authenticated is counted. An API key named in a stamp is
//! not verified by the host (the enclave verifies stamps), and a limit keyed on it would let
//! anyone who reaches the port use up another client's share by naming that client's key.
//! Without mutual TLS, the per-connection limits are what applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::Digest as _;
use signer_proto::transport::guard::GuardedInfo;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

/// SHA-256 of the client's leaf certificate (DER).
type Identity = [u8; 32];

/// Slots in use per client identity.
#[derive(Debug)]
pub struct ClientLimits {
    limit: usize,
    in_flight: Mutex<HashMap<Identity, usize>>,
}

/// One call's (or one stream's) slot; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ClientLimits>,
    identity: Identity,
}

impl ClientLimits {
    /// At most `limit` slots per client identity.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `request`'s client, `None` for a client without a certificate (not counted
    /// here).
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the client holds `limit` slots already.
    pub fn admit<T>(self: &Arc<Self>, request: &Request<T>) -> Result<Option<Slot>, Status> {
        identity(request)
            .map(|identity| self.take(identity))
            .transpose()
    }

    fn take(self: &Arc<Self>, identity: Identity) -> Result<Slot, Status> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let used = in_flight.entry(identity).or_insert(0);
        if *used >= self.limit {
            tracing::debug!(limit = self.limit, "client at its concurrency limit");
            return Err(Status::resource_exhausted(
                "too many calls in flight for this client",
            ));
        }
        *used += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            identity,
        })
    }

    /// Clients holding slots now (bounded by the clients in flight: entries go at zero).
    pub fn clients(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_flight = self
            .limits
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = in_flight.get_mut(&self.identity) {
            *used = used.saturating_sub(1);
            if *used == 0 {
                in_flight.remove(&self.identity);
            }
        }
    }
}

/// The client's certificate, as the TLS handshake on its (guarded) connection verified it.
fn identity<T>(request: &Request<T>) -> Option<Identity> {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<GuardedInfo<TcpConnectInfo>>>()?
        .peer_certs()?;
    let leaf = certs.first()?;
    Some(sha2::Sha256::digest(leaf.as_ref()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_limit_and_slots_come_back() {
        let limits = ClientLimits::new(2);
        let (a, b) = ([1; 32], [2; 32]);
        let first = limits.take(a).unwrap();
        let _second = limits.take(a).unwrap();
        let refused = limits.take(a).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Another client is not affected.
        let _other = limits.take(b).unwrap();
        drop(first);
        let _again = limits.take(a).unwrap();
        assert_eq!(limits.clients(), 2);
    }

    #[test]
    fn idle_clients_leave_no_entry() {
        let limits = ClientLimits::new(1);
        drop(limits.take([3; 32]).unwrap());
        assert_eq!(limits.clients(), 0);
    }

    #[test]
    fn a_request_without_a_client_certificate_is_not_counted() {
        let limits = ClientLimits::new(0);
        assert!(limits.admit(&Request::new(())).unwrap().is_none());
    }
}
