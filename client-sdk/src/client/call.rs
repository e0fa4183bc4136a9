//! Building stamped envelopes and sending calls: one retry loop for every RPC.
//!
//! Bodies are dated by the enclave's clock as last measured from a verified attestation
//! document (the host can delay a document but not forge its time), so the enclave's small
//! future skew and boot rule hold even when the two clocks drift apart.
//!
//! Retries: `UNAVAILABLE` is retried with the same request, so a stamped body whose first
//! attempt was carried out is refused as a replay instead of acting twice; an expired body
//! (the enclave restarted, or the clocks moved) is stamped afresh after re-measuring the
//! enclave's clock. Signing re-stamps on every attempt ([`Fresh::EveryAttempt`]): a second
//! signature over the same payload is harmless and a retry then never meets a spent nonce.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use signer_proto::pb;
use signer_proto::pb::signer_service_client::SignerServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use super::Client;
use crate::Error;

/// When a retried call builds its request anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// Only when the body expired: retries resend the same bytes.
    WhenExpired,
    /// On every retry.
    EveryAttempt,
}

/// The replay fields of one body.
#[derive(Clone, Debug)]
pub(crate) struct ReplayFields {
    pub(crate) timestamp_ms: u64,
    pub(crate) nonce: Vec<u8>,
}

fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SHA-256 of a request body: what the enclave's statements answer.
pub(crate) fn body_hash(body: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(body).to_vec()
}

fn is_expired(status: &tonic::Status) -> bool {
    status.code() == Code::Unauthenticated && status.message() == signer_proto::STALE_MESSAGE
}

impl Client {
    /// Records the enclave's clock as read from a verified document received at `local_ms`.
    pub(super) fn set_clock(&self, enclave_ms: u64, local_ms: i64) {
        let enclave = i64::try_from(enclave_ms).unwrap_or(i64::MAX);
        self.state
            .clock_offset_ms
            .store(enclave.saturating_sub(local_ms), Ordering::Relaxed);
    }

    pub(super) fn local_now_ms() -> i64 {
        local_now_ms()
    }

    /// The enclave's clock now, as far as this client knows it.
    fn enclave_now_ms(&self) -> u64 {
        let offset = self.state.clock_offset_ms.load(Ordering::Relaxed);
        u64::try_from(local_now_ms().saturating_add(offset)).unwrap_or(1)
    }

    /// Fresh replay fields: the enclave's clock and 16 random bytes.
    pub(crate) fn replay_fields(&self) -> Result<ReplayFields, Error> {
        let mut nonce = vec![0u8; 16];
        getrandom::fill(&mut nonce)?;
        Ok(ReplayFields {
            timestamp_ms: self.enclave_now_ms().max(1),
            nonce,
        })
    }

    /// The encoded `RequestBody` for `operation`, with fresh replay fields, for callers who
    /// collect stamps from several approvers themselves (each stamps it with
    /// [`crate::ApiKeyPair::stamp`] for [`Client::deployment_id`]).
    ///
    /// # Errors
    /// [`Error::Rng`].
    pub fn body(&self, operation: pb::request_body::Operation) -> Result<Vec<u8>, Error> {
        let fields = self.replay_fields()?;
        Ok(Self::encode_body(&fields, operation))
    }

    pub(crate) fn encode_body(
        fields: &ReplayFields,
        operation: pb::request_body::Operation,
    ) -> Vec<u8> {
        pb::RequestBody {
            timestamp_ms: fields.timestamp_ms,
            nonce: fields.nonce.clone(),
            operation: Some(operation),
        }
        .encode_to_vec()
    }

    /// `body` with this client's stamps.
    ///
    /// # Errors
    /// [`Error::NotConfigured`] without an API key or a deployment id.
    pub fn stamp(&self, body: Vec<u8>) -> Result<pb::SignedRequest, Error> {
        let stamper = self
            .stamper
            .as_ref()
            .ok_or(Error::NotConfigured("an API key (stamper) is required"))?;
        if !signer_proto::canonical::valid_deployment_id(&self.deployment_id) {
            return Err(Error::NotConfigured(
                "a deployment id (1 to 64 of a-z 0-9 . _ -) is required",
            ));
        }
        Ok(pb::SignedRequest {
            stamps: stamper.stamp(&self.deployment_id, &body),
            body,
        })
    }

    /// Encodes `operation` with fresh replay fields and stamps the body.
    ///
    /// # Errors
    /// [`Error::NotConfigured`] without an API key or deployment id; [`Error::Rng`].
    pub fn envelope(
        &self,
        operation: pb::request_body::Operation,
    ) -> Result<pb::SignedRequest, Error> {
        self.stamp(self.body(operation)?)
    }

    /// Sends a request built by `make`, retrying `UNAVAILABLE` with backoff and rebuilding it as
    /// `fresh` says (always after an expired body). Returns the answer and the request that got
    /// it.
    pub(crate) async fn call<R, T, Fut>(
        &self,
        fresh: Fresh,
        mut make: impl FnMut() -> Result<R, Error>,
        mut send: impl FnMut(SignerServiceClient<Channel>, R) -> Fut,
    ) -> Result<(T, R), Error>
    where
        R: Clone,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut request = make()?;
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let status = match send(self.inner.clone(), request.clone()).await {
                Ok(response) => return Ok((response.into_inner(), request)),
                Err(status) => status,
            };
            let expired = is_expired(&status);
            if !(status.code() == Code::Unavailable || expired)
                || attempt >= self.retry.max_attempts
            {
                return Err(status.into());
            }
            tracing::debug!(attempt, message = status.message(), "retrying");
            if expired {
                // The enclave restarted or the clocks moved: measure its clock again.
                if self.enclave.is_some() {
                    let _ = self.enclave_identity(true).await;
                }
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max_backoff);
            }
            if expired || fresh == Fresh::EveryAttempt {
                request = make()?;
            }
            attempt += 1;
        }
    }
}
