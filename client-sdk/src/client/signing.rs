//! Signing: each request stamped afresh on every attempt, each answer verified against the
//! key's attested public key before it is returned.

use signer_proto::pb;

use super::call::Fresh;
use super::{Client, SignStream};
use crate::Error;
use crate::verify::{self, EcdsaSignature, SchnorrSignature};

impl Client {
    /// The stamped envelope of a sign request.
    pub(crate) fn sign_request(
        &self,
        key_id: &str,
        path: &[u32],
        scheme: pb::SignatureScheme,
        payload: &[u8],
    ) -> Result<pb::SignedRequest, Error> {
        self.envelope(pb::request_body::Operation::Sign(pb::SignBody {
            key_id: key_id.to_owned(),
            scheme: scheme.into(),
            payload: payload.to_vec(),
            path: path.to_vec(),
        }))
    }

    async fn sign_once(
        &self,
        key_id: &str,
        path: &[u32],
        scheme: pb::SignatureScheme,
        payload: &[u8],
    ) -> Result<pb::SignResponse, Error> {
        let (reply, _) = self
            .call(
                Fresh::EveryAttempt,
                || self.sign_request(key_id, path, scheme, payload),
                |mut c, r| async move { c.sign(r).await },
            )
            .await?;
        Ok(reply)
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
        self.sign_digest_at(key_id, &[], digest).await
    }

    /// [`Client::sign_digest`] with the key at `path` under an HD root, verified against that
    /// key's public key as the enclave's statement gives it ([`Client::derived_key`]).
    ///
    /// # Errors
    /// As [`Client::sign_digest`]; `PERMISSION_DENIED` for a path outside the root's subtrees.
    pub async fn sign_digest_at(
        &self,
        key_id: &str,
        path: &[u32],
        digest: [u8; 32],
    ) -> Result<EcdsaSignature, Error> {
        let key = self.verified_key_at(key_id, path).await?;
        let reply = self
            .sign_once(key_id, path, pb::SignatureScheme::EcdsaSecp256k1, &digest)
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
        self.sign_schnorr_at(key_id, &[], message).await
    }

    /// [`Client::sign_schnorr`] with the key at `path` under an HD root (untweaked: the
    /// derived key itself, not a Taproot output key).
    ///
    /// # Errors
    /// As [`Client::sign_digest_at`].
    pub async fn sign_schnorr_at(
        &self,
        key_id: &str,
        path: &[u32],
        message: &[u8],
    ) -> Result<SchnorrSignature, Error> {
        let key = self.verified_key_at(key_id, path).await?;
        let reply = self
            .sign_once(key_id, path, pb::SignatureScheme::Bip340Schnorr, message)
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
}
