//! Batches: up to [`MAX_BATCH`] digests or messages signed with one key under one stamped body
//! (one stamp check, one nonce and one audit entry in the enclave), every signature verified
//! against its own payload and the key's attested public key before any is returned.

use std::sync::Arc;

use signer_proto::pb;

use super::Client;
use super::call::Fresh;
use crate::Error;
use crate::verify::{self, EcdsaSignature, KeyInfo, SchnorrSignature};

/// Most payloads one batch holds (the enclave refuses more).
pub use signer_proto::MAX_BATCH;

impl Client {
    /// ECDSA over each 32-byte digest, in order, with one request. All or nothing: the enclave
    /// signs every digest or none, and every signature is verified before any is returned.
    /// A rate limit counts each digest.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch or more than [`MAX_BATCH`] digests (not
    /// sent); service errors;
    /// [`Error::Verification`] if any signature does not verify against its own digest.
    pub async fn sign_digests(
        &self,
        key_id: &str,
        digests: &[[u8; 32]],
    ) -> Result<Vec<EcdsaSignature>, Error> {
        self.sign_digests_at(key_id, &[], digests).await
    }

    /// [`Client::sign_digests`] with the key at `path` under an HD root.
    ///
    /// # Errors
    /// As [`Client::sign_digests`]; `PERMISSION_DENIED` for a path outside the root's subtrees.
    pub async fn sign_digests_at(
        &self,
        key_id: &str,
        path: &[u32],
        digests: &[[u8; 32]],
    ) -> Result<Vec<EcdsaSignature>, Error> {
        let payloads: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
        let (key, signatures) = self
            .batch(key_id, path, pb::SignatureScheme::EcdsaSecp256k1, &payloads)
            .await?;
        digests
            .iter()
            .zip(signatures)
            .map(|(digest, reply)| verify::verify_ecdsa(&key, digest, &reply))
            .collect()
    }

    /// BIP-340 Schnorr over each message, in order, with one request; as
    /// [`Client::sign_digests`].
    ///
    /// # Errors
    /// As [`Client::sign_digests`].
    pub async fn sign_schnorr_batch(
        &self,
        key_id: &str,
        messages: &[&[u8]],
    ) -> Result<Vec<SchnorrSignature>, Error> {
        let (key, signatures) = self
            .batch(key_id, &[], pb::SignatureScheme::Bip340Schnorr, messages)
            .await?;
        messages
            .iter()
            .zip(signatures)
            .map(|(message, reply)| verify::verify_schnorr(&key, message, &reply))
            .collect()
    }

    /// The stamped envelope of a batch.
    pub(crate) fn batch_request(
        &self,
        key_id: &str,
        path: &[u32],
        scheme: pb::SignatureScheme,
        payloads: &[&[u8]],
    ) -> Result<pb::SignedRequest, Error> {
        self.envelope(pb::request_body::Operation::SignBatch(pb::SignBatchBody {
            key_id: key_id.to_owned(),
            scheme: scheme.into(),
            payloads: payloads.iter().map(|p| p.to_vec()).collect(),
            path: path.to_vec(),
        }))
    }

    /// Sends a batch and returns the key it must verify against, with one single-signature view
    /// of each answer (so each is checked exactly as a `Sign` answer is), in the payloads'
    /// order; refuses an answer for another key or scheme, or with another count.
    async fn batch(
        &self,
        key_id: &str,
        path: &[u32],
        scheme: pb::SignatureScheme,
        payloads: &[&[u8]],
    ) -> Result<(Arc<KeyInfo>, Vec<pb::SignResponse>), Error> {
        if payloads.is_empty() || payloads.len() > MAX_BATCH {
            return Err(Error::InvalidArgument("a batch holds 1 to 256 payloads"));
        }
        let key = self.verified_key_at(key_id, path).await?;
        let (reply, _) = self
            .call(
                Fresh::EveryAttempt,
                || self.batch_request(key_id, path, scheme, payloads),
                |mut c, r| async move { c.sign_batch(r).await },
            )
            .await?;
        let reply: pb::SignBatchResponse = reply;
        if reply.key_id != key_id || reply.scheme() != scheme {
            return Err(Error::Verification("reply is for another key or scheme"));
        }
        if reply.signatures.len() != payloads.len() {
            return Err(Error::Verification(
                "reply holds another number of signatures",
            ));
        }
        let views = reply
            .signatures
            .into_iter()
            .map(|signed| pb::SignResponse {
                key_id: reply.key_id.clone(),
                scheme: reply.scheme,
                signature: signed.signature,
                recovery_id: signed.recovery_id,
            })
            .collect();
        Ok((key, views))
    }
}
