//! The async client: connection, deadlines, retries on `UNAVAILABLE`, and verified results.

mod keys;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use signer_proto::pb;
use signer_proto::pb::signer_service_client::SignerServiceClient;
use signer_proto::transport::{self, Address, DialOptions};
use tonic::Code;
use tonic::transport::Channel;

pub use self::stream::{SignStream, StreamSignature};
use crate::Error;
use crate::attestation::AttestationPolicy;
use crate::stamper::Stamper;
use crate::trust::AttestedIdentity;
use crate::verify::{self, EcdsaSignature, KeyInfo, SchnorrSignature};

/// How `UNAVAILABLE` answers are retried.
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
    /// TLS to the host; `None` for plaintext (loopback development stacks only).
    pub tls: Option<ClientTls>,
    /// Connect and per-call deadlines.
    pub dial: DialOptions,
    /// Retries of `UNAVAILABLE`.
    pub retry: RetryPolicy,
    /// The API key(s) that stamp every request. Required for every call that acts on a key.
    pub stamper: Option<Arc<Stamper>>,
    /// How to verify the enclave (root, PCR allow-list). Required for every call that returns
    /// a public key: the SDK returns none it cannot trace to an attested enclave.
    pub enclave: Option<AttestationPolicy>,
}

impl ClientConfig {
    /// Defaults: 5 s to connect, 30 s per call, 6 attempts; no API key, no attestation policy.
    pub fn new(address: Address) -> Self {
        Self {
            address,
            tls: None,
            dial: DialOptions::default(),
            retry: RetryPolicy::default(),
            stamper: None,
            enclave: None,
        }
    }
}

/// A signer client. Cheap to clone; clones share the connection, the verified key cache and the
/// attested enclave identity.
#[derive(Clone, Debug)]
pub struct Client {
    inner: SignerServiceClient<Channel>,
    retry: RetryPolicy,
    keys: Arc<RwLock<HashMap<String, KeyInfo>>>,
    stamper: Option<Arc<Stamper>>,
    enclave: Option<AttestationPolicy>,
    identity: Arc<RwLock<Option<AttestedIdentity>>>,
}

/// SHA-256 of a request body: what the enclave's statements answer.
fn body_hash(body: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(body).to_vec()
}

/// Client clock in milliseconds, and a fresh 16-byte nonce: the replay fields of every body.
fn replay_fields() -> Result<(u64, Vec<u8>), Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut nonce = vec![0u8; 16];
    getrandom::fill(&mut nonce)?;
    Ok((now.max(1), nonce))
}

impl Client {
    /// Connects (lazily: the first call dials, and reconnects happen by themselves).
    ///
    /// # Errors
    /// [`Error::Transport`] for an unusable address.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let tls = config.tls.map(|tls| {
            let settings = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(tls.ca_pem))
                .domain_name(tls.domain);
            match tls.identity {
                Some((cert, key)) => {
                    settings.identity(tonic::transport::Identity::from_pem(cert, key))
                }
                None => settings,
            }
        });
        let channel = transport::dial_with(&config.address, config.dial, tls)?;
        Ok(Self {
            inner: SignerServiceClient::new(channel)
                .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES),
            retry: config.retry,
            keys: Arc::default(),
            stamper: config.stamper,
            enclave: config.enclave,
            identity: Arc::default(),
        })
    }

    /// Encodes `operation` with fresh replay fields and stamps the body.
    ///
    /// # Errors
    /// [`Error::NotConfigured`] without an API key; [`Error::Rng`].
    pub fn envelope(
        &self,
        operation: pb::request_body::Operation,
    ) -> Result<pb::SignedRequest, Error> {
        let stamper = self
            .stamper
            .as_ref()
            .ok_or(Error::NotConfigured("an API key (stamper) is required"))?;
        let body = Self::body(operation)?;
        Ok(pb::SignedRequest {
            stamps: stamper.stamp(&body),
            body,
        })
    }

    /// The encoded `RequestBody` for `operation`, with fresh replay fields, for callers who
    /// collect stamps from several approvers themselves.
    ///
    /// # Errors
    /// [`Error::Rng`].
    pub fn body(operation: pb::request_body::Operation) -> Result<Vec<u8>, Error> {
        let (timestamp_ms, nonce) = replay_fields()?;
        Ok(pb::RequestBody {
            timestamp_ms,
            nonce,
            operation: Some(operation),
        }
        .encode_to_vec())
    }

    /// The enclave's identity from a freshly verified attestation document (or the cached one).
    ///
    /// # Errors
    /// [`Error::NotConfigured`] without an attestation policy; [`Error::Attestation`].
    pub async fn enclave_identity(&self, refresh: bool) -> Result<AttestedIdentity, Error> {
        let cached = self
            .identity
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(identity) = cached.filter(|_| !refresh) {
            return Ok(identity);
        }
        let policy = self.enclave.as_ref().ok_or(Error::NotConfigured(
            "an enclave attestation policy is required",
        ))?;
        let verified = self.attest(policy).await?;
        let identity = AttestedIdentity::from_attestation(&verified)?;
        *self
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
        Ok(identity)
    }

    /// Verifies a key reply against the attested enclave (re-attesting once if the enclave
    /// restarted and has a new identity), then its internal consistency, and caches it.
    async fn checked_key(
        &self,
        reply: Option<pb::KeyInfo>,
        binding: &[u8],
        asked: Option<&str>,
    ) -> Result<KeyInfo, Error> {
        let reply = reply.ok_or(Error::Verification("reply without a key"))?;
        let identity = self.enclave_identity(false).await?;
        if identity.check_key(&reply, binding).is_err() {
            // A restarted enclave signs with a new identity: attest again, then decide.
            self.enclave_identity(true)
                .await?
                .check_key(&reply, binding)?;
        }
        self.verified_key(Some(reply), asked)
    }

    /// Runs `call`, retrying `UNAVAILABLE` with exponential backoff.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(SignerServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            match call(self.inner.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == Code::Unavailable && attempt < self.retry.max_attempts =>
                {
                    tracing::debug!(attempt, message = status.message(), "unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Creates a key in the only keyring, with the default policy (the client's API keys
    /// approve and administer it).
    ///
    /// A retried `CreateKey` may, rarely, create a key whose answer was lost; such a key is never
    /// returned to anyone, so nothing can be deposited to it.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`] if the reply does not trace to the attested
    /// enclave or is inconsistent.
    pub async fn create_key(&self, label: &str) -> Result<KeyInfo, Error> {
        self.create_key_with("", label, None).await
    }

    /// Creates a key in a named keyring (`""` for the only one) under `policy` (`None`: the
    /// default).
    ///
    /// # Errors
    /// As [`Client::create_key`].
    pub async fn create_key_with(
        &self,
        keyring_id: &str,
        label: &str,
        policy: Option<pb::Policy>,
    ) -> Result<KeyInfo, Error> {
        let request = self.envelope(pb::request_body::Operation::CreateKey(pb::CreateKeyBody {
            keyring_id: keyring_id.to_owned(),
            label: label.to_owned(),
            policy,
        }))?;
        let binding = body_hash(&request.body);
        let response = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.create_key(request).await }
            })
            .await?;
        self.checked_key(response.key, &binding, None).await
    }

    /// Checks a key reply (present, consistent, for the key asked about) and caches it.
    fn verified_key(
        &self,
        reply: Option<pb::KeyInfo>,
        asked: Option<&str>,
    ) -> Result<KeyInfo, Error> {
        let info = KeyInfo::try_from(reply.ok_or(Error::Verification("reply without a key"))?)?;
        if asked.is_some_and(|id| id != info.key_id) {
            return Err(Error::Verification("reply is for another key"));
        }
        self.remember(&info);
        Ok(info)
    }

    /// Adds a key the caller vouches for to the verified-key cache (for keys verified out of
    /// band; the benchmark's baseline, which has no attested identity). Sign calls then verify
    /// signatures against it without asking the service.
    pub fn trust_key(&self, info: KeyInfo) {
        self.remember(&info);
    }

    fn remember(&self, info: &KeyInfo) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(info.key_id.clone(), info.clone());
    }

    /// A key's public identity, verified against the attested enclave's signed statement and for
    /// internal consistency (cached after the first call).
    ///
    /// # Errors
    /// Service errors (`NOT_FOUND` for an unknown key); [`Error::Verification`].
    pub async fn public_key(&self, key_id: &str) -> Result<KeyInfo, Error> {
        if let Some(info) = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
        {
            return Ok(info.clone());
        }
        self.fresh_public_key(key_id).await
    }

    /// A key's public identity fetched now (not from the cache), bound to a fresh challenge and
    /// verified against the attested enclave.
    ///
    /// # Errors
    /// As [`Client::public_key`].
    pub async fn fresh_public_key(&self, key_id: &str) -> Result<KeyInfo, Error> {
        let mut challenge = vec![0u8; 32];
        getrandom::fill(&mut challenge)?;
        let request = pb::GetPublicKeyRequest {
            key_id: key_id.to_owned(),
            challenge: challenge.clone(),
        };
        let response = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.get_public_key(request).await }
            })
            .await?;
        self.checked_key(response.key, &challenge, Some(key_id))
            .await
    }

    /// One page of keys, oldest first, and the token of the next page (empty at the end).
    ///
    /// These are the host's records, checked for consistency only: before depositing to a key,
    /// get it with [`Client::public_key`], which verifies the enclave's statement.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`].
    pub async fn list_keys(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<KeyInfo>, String), Error> {
        let request = pb::ListKeysRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        let response = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.list_keys(request).await }
            })
            .await?;
        let keys = response
            .keys
            .into_iter()
            .map(KeyInfo::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, response.next_page_token))
    }

    /// The stamped envelope of a sign request.
    pub(crate) fn sign_request(
        &self,
        key_id: &str,
        scheme: pb::SignatureScheme,
        payload: Vec<u8>,
    ) -> Result<pb::SignedRequest, Error> {
        self.envelope(pb::request_body::Operation::Sign(pb::SignBody {
            key_id: key_id.to_owned(),
            scheme: scheme.into(),
            payload,
        }))
    }

    /// ECDSA over a 32-byte digest (RFC 6979, low-S, recovery id), verified before returning.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`] if the signature does not verify.
    pub async fn sign_digest(
        &self,
        key_id: &str,
        digest: [u8; 32],
    ) -> Result<EcdsaSignature, Error> {
        let key = self.public_key(key_id).await?;
        let request =
            self.sign_request(key_id, pb::SignatureScheme::EcdsaSecp256k1, digest.to_vec())?;
        let reply = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.sign(request).await }
            })
            .await?;
        verify::verify_ecdsa(&key, &digest, &reply)
    }

    /// BIP-340 Schnorr over a message, verified before returning.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`] if the signature does not verify.
    pub async fn sign_schnorr(
        &self,
        key_id: &str,
        message: &[u8],
    ) -> Result<SchnorrSignature, Error> {
        let key = self.public_key(key_id).await?;
        let request =
            self.sign_request(key_id, pb::SignatureScheme::Bip340Schnorr, message.to_vec())?;
        let reply = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.sign(request).await }
            })
            .await?;
        verify::verify_schnorr(&key, message, &reply)
    }

    /// Opens a signing stream for high-throughput callers (many requests in flight on one call).
    ///
    /// # Errors
    /// Service errors opening the stream.
    pub async fn sign_stream(&self) -> Result<SignStream, Error> {
        SignStream::open(self.clone(), self.inner.clone()).await
    }

    /// Fetches an attestation document binding a fresh random nonce and verifies it against
    /// `policy` (chain from the pinned root, PCR allow-list, nonce, freshness). Fails closed.
    ///
    /// # Errors
    /// Service errors; [`Error::Attestation`] when the document does not verify.
    pub async fn attest(
        &self,
        policy: &AttestationPolicy,
    ) -> Result<crate::attestation::VerifiedAttestation, Error> {
        let mut nonce = vec![0u8; 32];
        getrandom::fill(&mut nonce)?;
        let request = pb::AttestRequest {
            nonce: nonce.clone(),
        };
        let response = self
            .retrying(|mut c| {
                let request = request.clone();
                async move { c.attest(request).await }
            })
            .await?;
        let policy = AttestationPolicy {
            expected_nonce: Some(nonce),
            ..policy.clone()
        };
        crate::attestation::verify(&response.document, &policy, SystemTime::now())
    }

    /// The raw generated client, for callers who build their own envelopes.
    pub fn raw(&self) -> SignerServiceClient<Channel> {
        self.inner.clone()
    }
}
