//! Client settings: where the host is, how to reach it, which deployment and enclave to trust,
//! which API keys stamp, and how retries go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use signer_proto::transport::{Address, DialOptions};

use crate::attestation::AttestationPolicy;
use crate::stamper::Stamper;

/// How retryable failures (`UNAVAILABLE`, an expired body) are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// First wait; doubles after each attempt.
    pub initial_backoff: Duration,
    /// Longest single wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// TLS to the host: the CA to trust, the name to expect, and optionally a client certificate
/// (for hosts that require mutual TLS).
#[derive(Clone)]
pub struct ClientTls {
    /// CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// The server name the host's certificate must carry.
    pub domain: String,
    /// Client certificate chain and private key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl core::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain", &self.domain)
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The host's public address (`tcp://HOST:PORT`).
    pub address: Address,
    /// The deployment the client stamps for; the attested enclave must serve it.
    pub deployment_id: String,
    /// TLS to the host; `None` for plaintext (loopback development stacks only).
    pub tls: Option<ClientTls>,
    /// Connect and per-call deadlines.
    pub dial: DialOptions,
    /// Retries of `UNAVAILABLE` and of expired bodies.
    pub retry: RetryPolicy,
    /// The API key(s) that stamp every request. Required for every call that acts on a key.
    pub stamper: Option<Arc<Stamper>>,
    /// How to verify the enclave (root, PCR allow-list). Required for every call that returns
    /// a public key: the SDK returns none it cannot trace to an attested enclave.
    pub enclave: Option<AttestationPolicy>,
    /// The highest policy version seen per key id, from [`crate::Client::policy_versions`] of an
    /// earlier run: persist it to refuse rolled-back policies across the client's own restarts.
    pub known_policy_versions: HashMap<String, u64>,
}

impl ClientConfig {
    /// Defaults: 5 s to connect, 30 s per call, 6 attempts; no API key, no attestation policy.
    pub fn new(address: Address, deployment_id: impl Into<String>) -> Self {
        Self {
            address,
            deployment_id: deployment_id.into(),
            tls: None,
            dial: DialOptions::default(),
            retry: RetryPolicy::default(),
            stamper: None,
            enclave: None,
            known_policy_versions: HashMap::new(),
        }
    }
}
