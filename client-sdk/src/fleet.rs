//! Several hosts behind one logical signer, each with its own enclave: a [`Fleet`] holds one
//! [`Client`] per endpoint — so each enclave it meets is attested on its own, with its own
//! identity, and every answer is verified against the enclave that gave it — spreads signing
//! calls over them in turn, marks an endpoint down when it answers `UNAVAILABLE` (or cannot be
//! reached, or its connection breaks during a call) or its health is not SERVING
//! ([`Fleet::check_health`]) and tries the next, and says which endpoint answered.
//!
//! Only signing fails over: a signature asked of a second enclave is the same signature (RFC 6979)
//! or an equally valid one (BIP-340), so repeating it duplicates nothing a caller relies on —
//! except the enclave's rolling daily totals, which may count a repeated Ethereum or Bitcoin
//! signature twice. Key creation, import and policy changes are not idempotent: a request that
//! reached one host may have run there, so they go to one member ([`Fleet::member`]) and are
//! never repeated elsewhere.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use signer_proto::transport::Address;

use crate::{Client, ClientConfig, Error};

/// How long an endpoint that failed is passed over before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// An answer, and the endpoint that gave it.
#[derive(Clone, Debug)]
pub struct Answered<T> {
    /// The answer (verified, as every [`Client`] answer is).
    pub value: T,
    /// The host that answered.
    pub endpoint: Address,
}

#[derive(Debug)]
struct Member {
    endpoint: Address,
    client: Client,
    /// Set by a failed call, for [`DOWN_FOR`].
    down_until: Mutex<Option<Instant>>,
    /// Set by [`Fleet::check_health`] until the next check says otherwise.
    unhealthy: AtomicBool,
}

impl Member {
    fn is_down(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
            || self
                .down_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|until| Instant::now() < until)
    }

    fn mark(&self, down: bool) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = down.then(|| Instant::now() + DOWN_FOR);
    }
}

/// Clients of several hosts of one deployment.
#[derive(Debug)]
pub struct Fleet {
    members: Vec<Member>,
    next: AtomicUsize,
    /// Rounds over all members before giving up, and the wait between them.
    rounds: u32,
    backoff: Duration,
}

/// Whether an error says the endpoint, not the request, is the problem: `UNAVAILABLE`, no
/// connection, or a status tonic made itself from a transport failure during the call (a lost
/// connection comes as `UNKNOWN`, `CANCELLED` or `INTERNAL` by where it broke, always with the
/// transport's error as its source). A status a server sends carries no source, so a host
/// answering one of those codes is not taken for a dead one; and it could gain nothing by it:
/// a signing call repeated elsewhere duplicates nothing a caller relies on (the module's text).
fn endpoint_failed(error: &Error) -> bool {
    match error {
        Error::Status(status) => {
            status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
        }
        Error::Transport(_) => true,
        _ => false,
    }
}

impl Fleet {
    /// One client per endpoint, each configured as `config` (deployment, TLS, API keys,
    /// attestation policy) but for its address, and trying at most twice: the fleet retries
    /// across endpoints, `config.retry.max_attempts` rounds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without endpoints; [`Error::Transport`] for an unusable one.
    pub async fn connect(config: ClientConfig, endpoints: Vec<Address>) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "a fleet needs at least one endpoint",
            ));
        }
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let mut member = config.clone();
            member.address = endpoint.clone();
            // Two attempts on one host: enough to stamp an expired body afresh (after that
            // enclave restarted) or ride out one blip; failing over is the fleet's.
            member.retry.max_attempts = 2;
            members.push(Member {
                endpoint,
                client: Client::connect(member).await?,
                down_until: Mutex::new(None),
                unhealthy: AtomicBool::new(false),
            });
        }
        Ok(Self {
            members,
            next: AtomicUsize::new(0),
            rounds: config.retry.max_attempts.max(1),
            backoff: config.retry.initial_backoff,
        })
    }

    /// Asks every host for its health and marks each member up or down by it, until the next
    /// check: a host whose enclave is not ready, or (where the host checks it) not freshly
    /// attested, is passed over while any other member is up.
    /// Returns each endpoint with whether it is SERVING. Call it at start and from time to time.
    pub async fn check_health(&self) -> Vec<(Address, bool)> {
        let mut report = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let serving = member.client.host_serving().await;
            member.unhealthy.store(!serving, Ordering::Relaxed);
            report.push((member.endpoint.clone(), serving));
        }
        report
    }

    /// The member at `endpoint`'s client, for calls that must not fail over.
    pub fn client(&self, endpoint: &Address) -> Option<&Client> {
        self.members
            .iter()
            .find(|member| member.endpoint == *endpoint)
            .map(|member| &member.client)
    }

    /// A member that is not marked down (the next in turn), for a call that must go to exactly
    /// one host: key creation, import, policy changes. Its answer's endpoint is returned with it.
    pub fn member(&self) -> Answered<Client> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.members.len();
        let chosen = (0..count)
            .map(|i| &self.members[(start + i) % count])
            .find(|member| !member.is_down())
            .unwrap_or(&self.members[start % count]);
        Answered {
            value: chosen.client.clone(),
            endpoint: chosen.endpoint.clone(),
        }
    }

    /// Runs a signing call (`op` given a member's client) on the next member in turn; when an
    /// endpoint fails (`UNAVAILABLE`, unreachable, its connection broken during the call) marks
    /// it down and runs it on the next, for up to the configured rounds over all members. Any
    /// other error is the answer.
    ///
    /// `op` may run on several members, so it must be a signing call: never a key creation,
    /// import or policy change, which may already have run where the connection broke (those
    /// go to [`Fleet::member`]).
    ///
    /// # Errors
    /// `op`'s error; the last endpoint failure when every member failed every round.
    pub async fn sign<T, F, Fut>(&self, op: F) -> Result<Answered<T>, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        let mut backoff = self.backoff;
        for round in 0..self.rounds {
            for member in (0..count).map(|i| &self.members[(start + i) % count]) {
                // Members marked down are passed over in the first round only.
                if round == 0 && member.is_down() {
                    continue;
                }
                match op(member.client.clone()).await {
                    Ok(value) => {
                        member.mark(false);
                        return Ok(Answered {
                            value,
                            endpoint: member.endpoint.clone(),
                        });
                    }
                    Err(error) if endpoint_failed(&error) => {
                        tracing::warn!(endpoint = %member.endpoint, %error, "endpoint down; trying the next");
                        member.mark(true);
                        last = Some(error);
                    }
                    Err(error) => return Err(error),
                }
            }
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        Err(last.unwrap_or(Error::NotConfigured("no endpoint could be tried")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endpoint_failures_fail_over() {
        assert!(endpoint_failed(&Error::Status(Box::new(
            tonic::Status::unavailable("down")
        ))));
        for refusal in [
            tonic::Status::permission_denied("no"),
            tonic::Status::invalid_argument("bad"),
            tonic::Status::unauthenticated("who"),
        ] {
            assert!(!endpoint_failed(&Error::Status(Box::new(refusal))));
        }
        // A connection lost during the call (tonic's own status, the transport's error as its
        // source) fails over; the same codes sent by a server do not.
        let lost = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(lost.code(), tonic::Code::Unknown);
        assert!(endpoint_failed(&Error::Status(Box::new(lost))));
        for sent in [
            tonic::Status::unknown("sent by the host"),
            tonic::Status::cancelled("sent by the host"),
            tonic::Status::internal("sent by the host"),
        ] {
            assert!(!endpoint_failed(&Error::Status(Box::new(sent))));
        }
        // A wrong answer is reported, not retried elsewhere.
        assert!(!endpoint_failed(&Error::Verification("bad signature")));
    }

    #[tokio::test]
    async fn a_fleet_needs_an_endpoint_and_spreads_its_members() {
        let config = ClientConfig::new("tcp://127.0.0.1:1".parse().unwrap(), "test");
        assert!(matches!(
            Fleet::connect(config.clone(), Vec::new()).await,
            Err(Error::InvalidArgument(_))
        ));
        let endpoints: Vec<Address> = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let fleet = Fleet::connect(config, endpoints.clone()).await.unwrap();
        let first = fleet.member().endpoint;
        let second = fleet.member().endpoint;
        assert_ne!(first, second);
        // A member marked down is passed over while another is up.
        fleet.members[0].mark(true);
        assert_eq!(fleet.member().endpoint, endpoints[1]);
        assert_eq!(fleet.member().endpoint, endpoints[1]);
        assert!(fleet.client(&endpoints[0]).is_some());
    }
}
