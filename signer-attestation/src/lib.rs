//! Verification of Nitro attestation documents, failing closed.
//!
//! A document is a COSE_Sign1 (ES384) whose payload carries the enclave's PCRs and a certificate
//! chain. [`verify`] accepts it only when: the structure and every field are within the limits
//! NSM documents obey; the chain runs from the **pinned** root (the AWS Nitro root G1 unless a
//! development root is configured explicitly) through every certificate, each signature valid
//! and each certificate valid at the given time; the COSE signature verifies with the leaf key;
//! the PCRs match one of the allowed sets (no allowed set means rejection, never acceptance); the
//! nonce matches when one is expected; and the document is fresh.

#![forbid(unsafe_code)]

mod cbor;
pub mod eif;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::{Decode as _, Encode as _};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::Certificate;

/// Why a document was refused: the first check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The document failed this check.
    #[error("attestation rejected: {0}")]
    Attestation(&'static str),
    /// An enclave image file could not be measured.
    #[error("enclave image rejected: {0}")]
    Image(&'static str),
}

/// The AWS Nitro Enclaves root certificate G1 (PEM), as AWS publishes it. SHA-256 fingerprint
/// `641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b`.
const AWS_NITRO_ROOT_G1_PEM: &str =
    include_str!("../../testdata/fixtures/nitro-attestation/aws_nitro_enclaves_root_g1.pem");

/// Largest document accepted (NSM documents are about 4.5 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// Largest certificate chain accepted, root and leaf included.
pub const MAX_CHAIN: usize = 8;
/// How far ahead of the verifier's clock a document's timestamp may be (enclave clocks drift).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// ecdsa-with-SHA384.
const ECDSA_WITH_SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// The root a chain must start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    der: Vec<u8>,
}

impl TrustAnchor {
    /// The AWS Nitro Enclaves root G1: what production enclaves chain to.
    ///
    /// # Panics
    /// Never: the pinned PEM is checked by a unit test.
    pub fn aws_nitro_g1() -> Self {
        Self {
            der: pem_to_der(AWS_NITRO_ROOT_G1_PEM).expect("pinned AWS root parses qed"),
        }
    }

    /// A development root, DER-encoded. Production verifiers must not use this.
    pub fn development(der: Vec<u8>) -> Self {
        Self { der }
    }

    /// A development root from a DER or PEM certificate file's bytes; `None` if it is neither.
    pub fn development_from_der_or_pem(bytes: &[u8]) -> Option<Self> {
        let der = match std::str::from_utf8(bytes)
            .ok()
            .filter(|t| t.contains("-----BEGIN"))
        {
            Some(pem) => pem_to_der(pem)?,
            None => bytes.to_vec(),
        };
        Certificate::from_der(&der).ok()?;
        Some(Self::development(der))
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (label, der) = der::pem::decode_vec(pem.as_bytes()).ok()?;
    (label == "CERTIFICATE").then_some(der)
}

/// One allowed set of PCR values: every listed register must match exactly.
pub type PcrSet = BTreeMap<u16, Vec<u8>>;

/// What a document must satisfy.
#[derive(Clone, Debug)]
pub struct AttestationPolicy {
    /// The pinned root.
    pub root: TrustAnchor,
    /// Allowed PCR sets (several, for rolling deployments). Empty means reject everything.
    pub allowed_pcrs: Vec<PcrSet>,
    /// The nonce the caller sent, if any; the document must carry exactly it.
    pub expected_nonce: Option<Vec<u8>>,
    /// How old the document may be.
    pub max_age: Duration,
}

/// A document that passed [`verify`]. Only [`verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedAttestation {
    /// The enclave's module id.
    pub module_id: String,
    /// When the NSM signed it.
    pub timestamp: SystemTime,
    /// Every PCR in the document.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// The public key the enclave bound into the document, if any.
    pub public_key: Option<Vec<u8>>,
    /// User data the enclave bound into the document, if any.
    pub user_data: Option<Vec<u8>>,
    /// The nonce, if any.
    pub nonce: Option<Vec<u8>>,
}

fn bad(why: &'static str) -> Error {
    Error::Attestation(why)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verifies a chain root → … → leaf at time `now`; returns the leaf's P-384 key.
fn verify_chain(
    root: &TrustAnchor,
    cabundle: &[Vec<u8>],
    leaf: &[u8],
    now: SystemTime,
) -> Result<VerifyingKey, Error> {
    if cabundle.first().map(Vec::as_slice) != Some(root.der.as_slice()) {
        return Err(bad("certificate chain does not start at the pinned root"));
    }
    let mut issuer_key: Option<VerifyingKey> = None;
    let now = unix_seconds(now);
    for der in cabundle.iter().map(Vec::as_slice).chain([leaf]) {
        let cert = Certificate::from_der(der).map_err(|_| bad("malformed certificate"))?;
        let validity = &cert.tbs_certificate().validity();
        let (not_before, not_after) = (
            validity.not_before.to_unix_duration().as_secs(),
            validity.not_after.to_unix_duration().as_secs(),
        );
        if now < not_before || now > not_after {
            return Err(bad("certificate not valid at the given time"));
        }
        if cert.signature_algorithm().oid != ECDSA_WITH_SHA384 {
            return Err(bad("certificate not signed with ECDSA P-384 / SHA-384"));
        }
        let spki = cert.tbs_certificate().subject_public_key_info();
        let subject_key = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| bad("certificate key is not P-384"))?;
        // The root signs itself; every other certificate is signed by the one before it.
        let signer = issuer_key.as_ref().unwrap_or(&subject_key);
        let tbs = cert
            .tbs_certificate()
            .to_der()
            .map_err(|_| bad("malformed certificate"))?;
        let signature = Signature::from_der(cert.signature().raw_bytes())
            .map_err(|_| bad("malformed certificate signature"))?;
        signer
            .verify(&tbs, &signature)
            .map_err(|_| bad("certificate signature does not verify"))?;
        issuer_key = Some(subject_key);
    }
    issuer_key.ok_or(bad("empty certificate chain"))
}

/// Verifies a Nitro attestation document against `policy` at time `now`.
///
/// # Errors
/// [`Error::Attestation`] naming the first check that failed.
pub fn verify(
    document: &[u8],
    policy: &AttestationPolicy,
    now: SystemTime,
) -> Result<VerifiedAttestation, Error> {
    if policy.allowed_pcrs.is_empty() || policy.allowed_pcrs.iter().any(BTreeMap::is_empty) {
        return Err(bad("no PCR allow-list configured: refusing every document"));
    }
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(bad("document too large"));
    }
    let sign1 = cbor::CoseSign1::parse(document)?;
    let payload = cbor::Payload::parse(&sign1.payload)?;
    if payload.cabundle.len() + 1 > MAX_CHAIN {
        return Err(bad("certificate chain too long"));
    }
    let leaf_key = verify_chain(&policy.root, &payload.cabundle, &payload.certificate, now)?;
    let signature =
        Signature::from_slice(&sign1.signature).map_err(|_| bad("malformed COSE signature"))?;
    leaf_key
        .verify(&sign1.to_be_signed()?, &signature)
        .map_err(|_| bad("COSE signature does not verify"))?;

    let allowed = policy.allowed_pcrs.iter().any(|set| {
        set.iter()
            .all(|(index, value)| payload.pcrs.get(index) == Some(value))
    });
    if !allowed {
        return Err(bad("PCRs match no allowed set"));
    }
    if policy
        .expected_nonce
        .as_ref()
        .is_some_and(|expected| payload.nonce.as_ref() != Some(expected))
    {
        return Err(bad("nonce does not match"));
    }
    let timestamp = UNIX_EPOCH + Duration::from_millis(payload.timestamp_ms);
    if timestamp > now + MAX_CLOCK_SKEW {
        return Err(bad("document is from the future"));
    }
    if now.duration_since(timestamp).unwrap_or_default() > policy.max_age {
        return Err(bad("document is too old"));
    }
    Ok(VerifiedAttestation {
        module_id: payload.module_id,
        timestamp,
        pcrs: payload.pcrs,
        public_key: payload.public_key,
        user_data: payload.user_data,
        nonce: payload.nonce,
    })
}

/// What a document claims, unverified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claimed {
    /// When the NSM (supposedly) signed it.
    pub timestamp: SystemTime,
    /// The registers.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    /// The nonce, if any.
    pub nonce: Option<Vec<u8>>,
}

/// What a document *claims*, read without verifying anything: for reports that show an operator
/// the attested values beside the expected ones even when they differ. Never trust it; decide
/// with [`verify`].
///
/// # Errors
/// [`Error::Attestation`] when the document does not parse.
pub fn read_unverified(document: &[u8]) -> Result<Claimed, Error> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(bad("document too large"));
    }
    let payload = cbor::Payload::parse(&cbor::CoseSign1::parse(document)?.payload)?;
    Ok(Claimed {
        timestamp: UNIX_EPOCH + Duration::from_millis(payload.timestamp_ms),
        pcrs: payload.pcrs,
        nonce: payload.nonce,
    })
}

/// Verifies a document kept as evidence (an audit trail's boot), at the time it was signed:
/// the chain must have been valid then; the policy's nonce and age are ignored.
///
/// # Errors
/// [`Error::Attestation`] naming the first check that failed.
pub fn verify_as_of_signing(
    document: &[u8],
    policy: &AttestationPolicy,
) -> Result<VerifiedAttestation, Error> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(bad("document too large"));
    }
    let sign1 = cbor::CoseSign1::parse(document)?;
    let payload = cbor::Payload::parse(&sign1.payload)?;
    let signed_at = UNIX_EPOCH + Duration::from_millis(payload.timestamp_ms);
    let then = AttestationPolicy {
        expected_nonce: None,
        max_age: Duration::MAX,
        ..policy.clone()
    };
    verify(document, &then, signed_at)
}

#[cfg(test)]
mod tests;
