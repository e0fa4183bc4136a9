//! Everything the client believes about the enclave and its keys, and why: the enclave's
//! identity from a verified attestation document, key replies checked against its signed
//! statements, the highest policy version seen per key (a lower one is a rolled-back record),
//! and the cache of verified public keys.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use signer_proto::pb;

use super::Client;
use super::call::Fresh;
use crate::Error;
use crate::attestation::{AttestationPolicy, VerifiedAttestation};
use crate::trust::AttestedIdentity;
use crate::verify::{HdKeyInfo, KeyInfo};

/// A verified attestation document and the enclave identity and configuration it carries.
#[derive(Clone, Debug)]
pub struct EnclaveAttestation {
    /// The document's verified contents.
    pub document: VerifiedAttestation,
    /// The identity and configuration.
    pub identity: AttestedIdentity,
}

impl Client {
    /// The enclave's identity from a freshly verified attestation document (or the cached one).
    /// Also measures the enclave's clock, which later bodies are dated by.
    ///
    /// # Errors
    /// [`Error::NotConfigured`] without an attestation policy; [`Error::Attestation`], also when
    /// the enclave serves another deployment than this client's.
    pub async fn enclave_identity(&self, refresh: bool) -> Result<AttestedIdentity, Error> {
        let cached = self
            .state
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
        let attested = self.attest(policy).await?;
        if attested.identity.deployment_id != self.deployment_id {
            return Err(Error::Attestation(
                "the enclave serves another deployment than this client's",
            ));
        }
        *self
            .state
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(attested.identity.clone());
        Ok(attested.identity)
    }

    /// Fetches an attestation document binding a fresh random nonce and verifies it against
    /// `policy` (chain from the pinned root, PCR allow-list, nonce, freshness) and the
    /// configuration against the attested hash. Fails closed.
    ///
    /// # Errors
    /// Service errors; [`Error::Attestation`] when the document does not verify.
    pub async fn attest(&self, policy: &AttestationPolicy) -> Result<EnclaveAttestation, Error> {
        let mut nonce = vec![0u8; 32];
        getrandom::fill(&mut nonce)?;
        let request = pb::AttestRequest {
            nonce: nonce.clone(),
        };
        // Its own retry loop, not `call`: `call` re-attests when a body expired, and an
        // attestation never expires.
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        let response = loop {
            match self.inner.clone().attest(request.clone()).await {
                Ok(response) => break response.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && attempt < self.retry.max_attempts =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        };
        let received = Self::local_now_ms();
        let policy = AttestationPolicy {
            expected_nonce: Some(nonce),
            ..policy.clone()
        };
        let document = crate::attestation::verify(&response.document, &policy, SystemTime::now())?;
        let identity = AttestedIdentity::from_attestation(&document, &response.config)?;
        let enclave_ms = document
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.set_clock(enclave_ms, received);
        Ok(EnclaveAttestation { document, identity })
    }

    /// An attestation document for a fresh random nonce, **unverified**: evidence for an
    /// assessment (`deployment::assess`), which verifies it against the roots and measurements
    /// it judges. One attempt, no retries.
    ///
    /// # Errors
    /// Service errors.
    pub async fn attestation_evidence(
        &self,
    ) -> Result<crate::deployment::assess::AttestationEvidence, Error> {
        let mut nonce = vec![0u8; 32];
        getrandom::fill(&mut nonce)?;
        let request = pb::AttestRequest {
            nonce: nonce.clone(),
        };
        let response = self.inner.clone().attest(request).await?.into_inner();
        Ok(crate::deployment::assess::AttestationEvidence {
            document: response.document,
            config: response.config,
            nonce,
        })
    }

    /// Verifies a key reply against the attested enclave (re-attesting once if the enclave
    /// restarted and has a new identity), that it carries `expected_policy` exactly when one is
    /// given (the canonical encoding the enclave seals), that its policy version is not below
    /// one seen before, and caches it.
    pub(super) async fn checked_key(
        &self,
        reply: Option<pb::KeyInfo>,
        binding: &[u8],
        asked: Option<&str>,
        expected_policy: Option<&[u8]>,
    ) -> Result<KeyInfo, Error> {
        self.checked_key_at(reply, binding, asked, &[], expected_policy)
            .await
    }

    /// [`Client::checked_key`] for the key at `path` under an HD root (an empty path: the root
    /// itself, or a single key): the statement must name that path, and its extended public key
    /// must agree with the public key.
    pub(super) async fn checked_key_at(
        &self,
        reply: Option<pb::KeyInfo>,
        binding: &[u8],
        asked: Option<&str>,
        path: &[u32],
        expected_policy: Option<&[u8]>,
    ) -> Result<KeyInfo, Error> {
        let reply = reply.ok_or(Error::Verification("reply without a key"))?;
        let identity = self.enclave_identity(false).await?;
        let statement = match identity.check_key(&reply, binding) {
            Ok(statement) => statement,
            // A restarted enclave signs with a new identity: attest again, then decide.
            Err(_) => self
                .enclave_identity(true)
                .await?
                .check_key(&reply, binding)?,
        };
        let hd = HdKeyInfo::from_statement(&statement, reply.kind, path)?;
        if expected_policy.is_some_and(|expected| expected != reply.policy.as_slice()) {
            return Err(Error::Verification(
                "the key carries another policy than the one requested",
            ));
        }
        let mut info = KeyInfo::try_from(reply)?;
        info.hd = hd;
        if asked.is_some_and(|id| id != info.key_id) {
            return Err(Error::Verification("reply is for another key"));
        }
        self.note_version(&info.key_id, info.policy_version)?;
        self.remember(&info);
        Ok(info)
    }

    /// Refuses a policy version below the highest seen for the key; records a higher one.
    fn note_version(&self, key_id: &str, version: u64) -> Result<(), Error> {
        let mut versions = self
            .state
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = versions.entry(key_id.to_owned()).or_insert(0);
        if version < *known {
            tracing::error!(
                key_id,
                version,
                known = *known,
                "policy version went back: a rolled-back record"
            );
            return Err(Error::Verification(
                "policy version is lower than one seen before: the key's record was rolled back",
            ));
        }
        *known = version;
        Ok(())
    }

    /// The highest policy version seen per key. Persist it and pass it back as
    /// [`crate::ClientConfig::known_policy_versions`] so a rollback is caught across this
    /// client's own restarts too.
    pub fn policy_versions(&self) -> HashMap<String, u64> {
        self.state
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds a key the caller vouches for to the verified-key cache (for keys verified out of
    /// band; the benchmark's baseline, which has no attested identity). Sign calls then verify
    /// signatures against it without asking the service.
    pub fn trust_key(&self, info: KeyInfo) {
        self.remember(&info);
    }

    fn remember(&self, info: &KeyInfo) {
        let path = info.hd.as_ref().map_or(&[][..], |hd| hd.path.as_slice());
        self.state
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_name(&info.key_id, path), Arc::new(info.clone()));
    }

    /// The key at `path` under the HD root `key_id`: its public key and extended public key,
    /// verified against the attested enclave's statement (bound to a fresh challenge, naming
    /// this path), so deposit addresses can be derived from the xpub without asking again.
    /// Cached after the first call. The path must lie inside the root's `HdRules`.
    ///
    /// # Errors
    /// Service errors (`PERMISSION_DENIED` outside the root's subtrees, `INVALID_ARGUMENT` for
    /// a key that is not a root); [`Error::Verification`].
    pub async fn derived_key(&self, key_id: &str, path: &[u32]) -> Result<KeyInfo, Error> {
        Ok(self.verified_key_at(key_id, path).await?.as_ref().clone())
    }

    /// [`Client::derived_key`] without the copy; an empty path is [`Client::verified_key`].
    pub(crate) async fn verified_key_at(
        &self,
        key_id: &str,
        path: &[u32],
    ) -> Result<Arc<KeyInfo>, Error> {
        if path.is_empty() {
            return self.verified_key(key_id).await;
        }
        if let Some(info) = self
            .state
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_name(key_id, path))
        {
            return Ok(Arc::clone(info));
        }
        let mut challenge = vec![0u8; 32];
        getrandom::fill(&mut challenge)?;
        let request = pb::GetPublicKeyRequest {
            key_id: key_id.to_owned(),
            challenge: challenge.clone(),
            path: path.to_vec(),
        };
        let (response, _) = self
            .call(
                Fresh::WhenExpired,
                || Ok(request.clone()),
                |mut c, r| async move { c.get_public_key(r).await },
            )
            .await?;
        self.checked_key_at(response.key, &challenge, Some(key_id), path, None)
            .await
            .map(Arc::new)
    }

    /// A key's public identity, verified against the attested enclave's signed statement and for
    /// internal consistency. Cached after the first call: a public key never changes, but its
    /// policy may, so use [`Client::fresh_public_key`] to see the policy in force now.
    ///
    /// # Errors
    /// Service errors (`NOT_FOUND` for an unknown key); [`Error::Verification`].
    pub async fn public_key(&self, key_id: &str) -> Result<KeyInfo, Error> {
        Ok(self.verified_key(key_id).await?.as_ref().clone())
    }

    /// [`Client::public_key`] without the copy: what every sign call verifies its answer
    /// against (a policy with a thousand destinations is not cloned per signature).
    pub(crate) async fn verified_key(&self, key_id: &str) -> Result<Arc<KeyInfo>, Error> {
        if let Some(info) = self
            .state
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
        {
            return Ok(Arc::clone(info));
        }
        self.fresh_public_key(key_id).await.map(Arc::new)
    }

    /// A key's public identity and current policy fetched now, bound to a fresh challenge,
    /// verified against the attested enclave, and checked against the highest policy version
    /// seen (a lower one means the host loaded an old record into a restarted enclave).
    ///
    /// # Errors
    /// As [`Client::public_key`].
    pub async fn fresh_public_key(&self, key_id: &str) -> Result<KeyInfo, Error> {
        let mut challenge = vec![0u8; 32];
        getrandom::fill(&mut challenge)?;
        let request = pb::GetPublicKeyRequest {
            key_id: key_id.to_owned(),
            challenge: challenge.clone(),
            path: Vec::new(),
        };
        let (response, _) = self
            .call(
                Fresh::WhenExpired,
                || Ok(request.clone()),
                |mut c, r| async move { c.get_public_key(r).await },
            )
            .await?;
        self.checked_key(response.key, &challenge, Some(key_id), None)
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
        let (response, _) = self
            .call(
                Fresh::WhenExpired,
                || Ok(request.clone()),
                |mut c, r| async move { c.list_keys(r).await },
            )
            .await?;
        let keys = response
            .keys
            .into_iter()
            .map(KeyInfo::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, response.next_page_token))
    }
}

impl Client {
    /// The whole stored audit trail, page by page, with the attestation documents of the boots
    /// it names. Check it with [`crate::audit::verify_trail`].
    ///
    /// # Errors
    /// Service errors.
    pub async fn read_audit_trail(
        &self,
    ) -> Result<(Vec<pb::StoredAuditEntry>, Vec<pb::AuditBoot>), Error> {
        let (mut entries, mut boots): (Vec<pb::StoredAuditEntry>, Vec<pb::AuditBoot>) =
            (Vec::new(), Vec::new());
        loop {
            let request = pb::ReadAuditTrailRequest {
                after_position: entries.last().map_or(0, |e| e.position),
                limit: 1_000,
            };
            let (page, _) = self
                .call(
                    Fresh::WhenExpired,
                    || Ok(request),
                    |mut c, r| async move { c.read_audit_trail(r).await },
                )
                .await?;
            if page.entries.is_empty() {
                return Ok((entries, boots));
            }
            if page.entries.iter().map(|e| e.position).min() <= entries.last().map(|e| e.position) {
                return Err(Error::Verification(
                    "the audit trail's positions went backwards",
                ));
            }
            for boot in page.boots {
                if !boots.iter().any(|b| b.boot_id == boot.boot_id) {
                    boots.push(boot);
                }
            }
            entries.extend(page.entries);
        }
    }
}

/// The cache's name for a key: its id, and for a derived key its path.
fn cache_name(key_id: &str, path: &[u32]) -> String {
    let mut name = key_id.to_owned();
    for index in path {
        name.push('/');
        name.push_str(&index.to_string());
    }
    name
}
