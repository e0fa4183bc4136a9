//! Stamps: client API-key signatures over a domain string, the deployment id and the exact body
//! bytes. Only stamps by keys in the set an operation is authorised by are verified; what
//! survives is the set of those API keys that signed, which quorums then count.

use std::collections::BTreeSet;

use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use signer_proto::pb;

use crate::Error;

pub(crate) mod batch;

pub(crate) use batch::StampBatcher;

/// An API key's public half, normalised (P-256 keys compressed) so that one key has one
/// identity however it was encoded. Public data: comparing it needs no constant time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiKeyId {
    /// ECDSA P-256 with SHA-256; SEC1 compressed.
    P256([u8; 33]),
    /// Ed25519.
    Ed25519([u8; 32]),
}

impl ApiKeyId {
    /// Parses and validates an API public key (on the curve; for Ed25519, not of small order).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown scheme or a malformed key.
    pub fn parse(scheme: i32, public_key: &[u8]) -> Result<(Self, Verifier), Error> {
        match pb::StampScheme::try_from(scheme) {
            Ok(pb::StampScheme::P256Sha256) => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
                    .map_err(|_| Error::InvalidArgument("malformed P-256 API key"))?;
                let compressed: [u8; 33] = key
                    .as_affine()
                    .to_sec1_point(true)
                    .as_bytes()
                    .try_into()
                    .map_err(|_| Error::Internal)?;
                Ok((ApiKeyId::P256(compressed), Verifier::P256(key)))
            }
            Ok(pb::StampScheme::Ed25519) => {
                let bytes: [u8; 32] = public_key
                    .try_into()
                    .map_err(|_| Error::InvalidArgument("Ed25519 API key must be 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| Error::InvalidArgument("malformed Ed25519 API key"))?;
                if key.is_weak() {
                    return Err(Error::InvalidArgument("Ed25519 API key of small order"));
                }
                Ok((ApiKeyId::Ed25519(bytes), Verifier::Ed25519(key)))
            }
            Ok(pb::StampScheme::Unspecified) | Err(_) => {
                Err(Error::InvalidArgument("unknown stamp scheme"))
            }
        }
    }

    /// The key's bytes (scheme-specific length).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ApiKeyId::P256(key) => key,
            ApiKeyId::Ed25519(key) => key,
        }
    }

    /// The key as it appears in a policy.
    pub fn to_proto(self) -> pb::ApiKey {
        match self {
            ApiKeyId::P256(key) => pb::ApiKey {
                scheme: pb::StampScheme::P256Sha256.into(),
                public_key: key.to_vec(),
            },
            ApiKeyId::Ed25519(key) => pb::ApiKey {
                scheme: pb::StampScheme::Ed25519.into(),
                public_key: key.to_vec(),
            },
        }
    }
}

/// A parsed API public key, ready to verify. Policies keep their members' keys parsed, so a
/// stamp's verification does not decompress its key again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Verifier {
    /// Whether `signature` is this key's valid signature over `message`: P-256 ECDSA over
    /// SHA-256 (64-byte r‖s; high-S accepted, as P-256 ECDSA is not normalised), or strict
    /// Ed25519 (canonical S, no small-order R or key).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            // The same strict check the batcher makes of a lone request and of a failed batch.
            Verifier::Ed25519(key) => <[u8; 64]>::try_from(signature).is_ok_and(|bytes| {
                batch::verify_each(
                    message,
                    &[(*key, ed25519_dalek::Signature::from_bytes(&bytes))],
                )
            }),
        }
    }
}

/// The distinct API keys whose stamps verified over a body.
#[derive(Debug, Default)]
pub struct Approvals(BTreeSet<ApiKeyId>);

impl Approvals {
    /// Whether `key` stamped the body.
    pub fn contains(&self, key: &ApiKeyId) -> bool {
        self.0.contains(key)
    }

    /// The stamping keys, in a stable order.
    pub fn keys(&self) -> impl Iterator<Item = &ApiKeyId> {
        self.0.iter()
    }

    /// Approvals by exactly `keys`, for tests of the policy arithmetic.
    #[cfg(test)]
    pub fn of(keys: impl IntoIterator<Item = ApiKeyId>) -> Self {
        Self(keys.into_iter().collect())
    }
}

impl ApiKeyId {
    /// A stamp's key id from its canonical wire form, without curve arithmetic: P-256 keys are
    /// 33-byte SEC1 compressed points, Ed25519 keys 32 bytes. Lets the enclave decide whether a
    /// stamp is relevant before spending anything on it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown scheme or a key in another form.
    pub fn from_stamp(scheme: i32, public_key: &[u8]) -> Result<Self, Error> {
        match pb::StampScheme::try_from(scheme) {
            Ok(pb::StampScheme::P256Sha256) => match <[u8; 33]>::try_from(public_key) {
                Ok(bytes) if matches!(bytes[0], 0x02 | 0x03) => Ok(ApiKeyId::P256(bytes)),
                _ => Err(Error::InvalidArgument(
                    "P-256 stamp keys must be SEC1 compressed (33 bytes)",
                )),
            },
            Ok(pb::StampScheme::Ed25519) => <[u8; 32]>::try_from(public_key)
                .map(ApiKeyId::Ed25519)
                .map_err(|_| Error::InvalidArgument("Ed25519 API key must be 32 bytes")),
            Ok(pb::StampScheme::Unspecified) | Err(_) => {
                Err(Error::InvalidArgument("unknown stamp scheme"))
            }
        }
    }
}

/// The stamps over `message` (the stamp message: domain, deployment id and body) of every API
/// key for which `relevant` gives a (parsed) verifier, ready to verify; stamps by other keys count
/// for nothing and are ignored without being verified, so a stranger's stamps cost the enclave
/// nothing. The same key stamping twice counts once, but both stamps must verify.
///
/// # Errors
/// [`Error::Unauthenticated`] when there are no stamps; [`Error::InvalidArgument`] for a stamp
/// key that is not in canonical form.
pub(crate) fn relevant<'v>(
    message: impl FnOnce() -> Vec<u8>,
    stamps: &[pb::Stamp],
    relevant: impl Fn(&ApiKeyId) -> Option<&'v Verifier>,
) -> Result<Relevant, Error> {
    if stamps.is_empty() {
        return Err(Error::Unauthenticated("no stamps"));
    }
    let mut approvals = BTreeSet::new();
    let mut checks = Vec::new();
    for stamp in stamps {
        let id = ApiKeyId::from_stamp(stamp.scheme, &stamp.public_key)?;
        if let Some(verifier) = relevant(&id) {
            approvals.insert(id);
            checks.push((verifier.clone(), stamp.signature.clone()));
        }
    }
    let message = if checks.is_empty() {
        Vec::new()
    } else {
        message()
    };
    Ok(Relevant {
        approvals,
        message,
        checks,
    })
}

/// A request's relevant stamps, not yet verified.
#[derive(Debug)]
pub(crate) struct Relevant {
    approvals: BTreeSet<ApiKeyId>,
    message: Vec<u8>,
    checks: Vec<(Verifier, Vec<u8>)>,
}

impl Relevant {
    /// Verifies every relevant stamp: P-256 ones here, Ed25519 ones through `batcher`, together
    /// with the stamps of concurrent requests. Every
    /// relevant stamp is verified even after one fails, so the time taken does not say which
    /// failed. A relay that edits or mangles one gets the request refused.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when a relevant stamp fails.
    pub(crate) async fn verify(self, batcher: &StampBatcher) -> Result<Approvals, Error> {
        let mut all_valid = true;
        let mut ed25519 = Vec::new();
        for (verifier, signature) in &self.checks {
            match verifier {
                Verifier::P256(_) => all_valid &= verifier.verify(&self.message, signature),
                Verifier::Ed25519(key) => match <[u8; 64]>::try_from(signature.as_slice()) {
                    Ok(bytes) => ed25519.push((*key, ed25519_dalek::Signature::from_bytes(&bytes))),
                    Err(_) => all_valid = false,
                },
            }
        }
        if !ed25519.is_empty() {
            all_valid &= batcher.verify(self.message, ed25519).await;
        }
        if all_valid {
            Ok(Approvals(self.approvals))
        } else {
            Err(Error::Unauthenticated("a stamp did not verify"))
        }
    }
}

#[cfg(test)]
mod tests;
