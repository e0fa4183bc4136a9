//! Verification of everything the service returns: key identities and signatures. Key
//! identities and BIP-340 signatures are checked with `k256`; ECDSA signatures are parsed and
//! range-checked with `k256` and recovered with libsecp256k1 (rust-bitcoin's `secp256k1`, which
//! the SDK links for PSBTs anyway): its recovery costs about a third of `k256`'s, and a client
//! verifying every signature of a busy exchange pays it on each.

use std::sync::LazyLock;

use bitcoin::secp256k1::{self as libsecp, Secp256k1, VerifyOnly};
use k256::ecdsa::{Signature, VerifyingKey};
use k256::elliptic_curve::sec1::ToSec1Point as _;
use prost::Message as _;
use signer_proto::pb;

use crate::Error;

/// A key's verified public identity and the policy it is held under.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KeyInfo {
    /// `k-` id.
    pub key_id: String,
    /// `kr-` id of its keyring.
    pub keyring_id: String,
    /// SEC1 compressed public key, hex.
    #[serde(serialize_with = "as_hex")]
    pub public_key_compressed: [u8; 33],
    /// SEC1 uncompressed public key, hex.
    #[serde(serialize_with = "as_hex")]
    pub public_key_uncompressed: [u8; 65],
    /// BIP-340 x-only public key, hex.
    #[serde(serialize_with = "as_hex")]
    pub public_key_xonly: [u8; 32],
    /// EIP-55 Ethereum address.
    pub ethereum_address: String,
    /// SHA-256 of the key's policy, hex.
    #[serde(serialize_with = "as_hex")]
    pub policy_hash: [u8; 32],
    /// The policy in force: who approves, who administers, what may be signed.
    #[serde(serialize_with = "crate::policy::serialize")]
    pub policy: pb::Policy,
    /// The policy's version (1 at creation, one more at each change). The SDK refuses a key
    /// whose version is lower than one it has seen before.
    pub policy_version: u64,
    /// Creation label.
    pub label: String,
    /// For an HD root, or a key derived under one: what the enclave's statement says of it.
    pub hd: Option<HdKeyInfo>,
}

/// What the enclave's statement says of an HD root or of a key derived under one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HdKeyInfo {
    /// The root's BIP-32 fingerprint, which PSBTs name it by, hex.
    #[serde(serialize_with = "as_hex")]
    pub root_fingerprint: [u8; 4],
    /// The derived key's path from the root (hardened indices with bit 31 set); empty for the
    /// root itself, whose public key is then the master key's.
    pub path: Vec<u32>,
    /// The derived key's extended public key (checked against its public key, depth and
    /// index); `None` for the root itself.
    #[serde(serialize_with = "as_display")]
    pub xpub: Option<crate::hd::AccountXpub>,
}

fn as_display<S: serde::Serializer, T: std::fmt::Display>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&value.to_string()),
        None => serializer.serialize_none(),
    }
}

impl HdKeyInfo {
    /// What a verified statement says, checked against the reply's public key and the path
    /// asked for. `None` for a single key.
    ///
    /// # Errors
    /// [`Error::Verification`] naming the first mismatch.
    pub(crate) fn from_statement(
        statement: &pb::KeyStatement,
        kind: i32,
        asked_path: &[u32],
    ) -> Result<Option<Self>, Error> {
        let bad = Error::Verification;
        if statement.path != asked_path {
            return Err(bad("statement is for another derivation path"));
        }
        let claimed_root = kind == i32::from(pb::KeyKind::HdRoot);
        if statement.root_fingerprint.is_empty() {
            if claimed_root || !statement.path.is_empty() || !statement.xpub.is_empty() {
                return Err(bad("statement does not describe an HD root"));
            }
            return Ok(None);
        }
        if !claimed_root {
            return Err(bad("key kind differs from the enclave's statement"));
        }
        let root_fingerprint = statement
            .root_fingerprint
            .as_slice()
            .try_into()
            .map_err(|_| bad("root fingerprint length"))?;
        let xpub = match statement.path.last() {
            None if statement.xpub.is_empty() => None,
            None => return Err(bad("statement gives an xpub without a path")),
            Some(&index) => {
                let xpub: crate::hd::AccountXpub = statement
                    .xpub
                    .parse()
                    .map_err(|_| bad("statement's xpub does not decode"))?;
                if xpub.public_key().as_slice() != statement.public_key_compressed
                    || usize::from(xpub.depth()) != statement.path.len()
                    || xpub.child_index() != index
                {
                    return Err(bad("statement's xpub disagrees with its key and path"));
                }
                Some(xpub)
            }
        };
        Ok(Some(Self {
            root_fingerprint,
            path: statement.path.clone(),
            xpub,
        }))
    }
}

fn as_hex<S: serde::Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

pub use signer_proto::ethereum_address;

impl TryFrom<pb::KeyInfo> for KeyInfo {
    type Error = Error;

    /// Checks that every form of the public key describes the same point, and that the policy
    /// decodes and matches its hash.
    fn try_from(info: pb::KeyInfo) -> Result<Self, Error> {
        let bad = Error::Verification;
        let verifying_key = VerifyingKey::from_sec1_bytes(&info.public_key_compressed)
            .map_err(|_| bad("public key is not a curve point"))?;
        let uncompressed: [u8; 65] = verifying_key
            .as_affine()
            .to_sec1_point(false)
            .as_bytes()
            .try_into()
            .map_err(|_| bad("point encoding"))?;
        if info.public_key_uncompressed != uncompressed {
            return Err(bad(
                "uncompressed public key disagrees with the compressed one",
            ));
        }
        if info.public_key_xonly != uncompressed[1..33] {
            return Err(bad("x-only public key disagrees with the compressed one"));
        }
        if info.ethereum_address != ethereum_address(&uncompressed) {
            return Err(bad("Ethereum address disagrees with the public key"));
        }
        if signer_proto::canonical::policy_hash(&info.policy).as_slice() != info.policy_hash {
            return Err(bad("policy does not match its hash"));
        }
        let policy =
            pb::Policy::decode(info.policy.as_slice()).map_err(|_| bad("malformed policy"))?;
        Ok(KeyInfo {
            public_key_compressed: info
                .public_key_compressed
                .as_slice()
                .try_into()
                .map_err(|_| bad("compressed length"))?,
            public_key_uncompressed: uncompressed,
            public_key_xonly: info
                .public_key_xonly
                .as_slice()
                .try_into()
                .map_err(|_| bad("x-only length"))?,
            policy_hash: info
                .policy_hash
                .as_slice()
                .try_into()
                .map_err(|_| bad("policy hash length"))?,
            key_id: info.key_id,
            keyring_id: info.keyring_id,
            ethereum_address: info.ethereum_address,
            policy_version: policy.version,
            policy,
            label: info.label,
            hd: None,
        })
    }
}

/// A verified ECDSA signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EcdsaSignature {
    /// r, big-endian.
    #[serde(serialize_with = "as_hex")]
    pub r: [u8; 32],
    /// s, big-endian, low-S.
    #[serde(serialize_with = "as_hex")]
    pub s: [u8; 32],
    /// Recovery id (0 or 1; 2 or 3 are astronomically unlikely).
    pub v: u8,
}

impl EcdsaSignature {
    /// r ‖ s ‖ v, the 65-byte form (add 27, or EIP-155's offset, for Ethereum's `v` as needed).
    pub fn to_bytes65(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(&self.r);
        out[32..64].copy_from_slice(&self.s);
        out[64] = self.v;
        out
    }
}

/// A verified BIP-340 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchnorrSignature(#[serde(serialize_with = "as_hex")] pub [u8; 64]);

/// Verifies an ECDSA reply: well-formed, low-S, and its recovery id recovers exactly the key.
///
/// Recovery computes Q = r⁻¹(s·R − z·G) from the signature; Q equal to the key's public key is
/// the ECDSA verification equation itself (as Ethereum's `ecrecover` relies on), so one recovery
/// both verifies the signature and proves the recovery id — at the cost of one verification.
///
/// # Errors
/// [`Error::Verification`] on any mismatch.
pub fn verify_ecdsa(
    key: &KeyInfo,
    digest: &[u8; 32],
    reply: &pb::SignResponse,
) -> Result<EcdsaSignature, Error> {
    if reply.key_id != key.key_id || reply.scheme() != pb::SignatureScheme::EcdsaSecp256k1 {
        return Err(Error::Verification("reply is for another key or scheme"));
    }
    let v = u8::try_from(reply.recovery_id)
        .map_err(|_| Error::Verification("recovery id out of range"))?;
    let signature = check_ecdsa(&key.public_key_compressed, digest, &reply.signature, v)?;
    let (r, s) = signature.split_bytes();
    Ok(EcdsaSignature {
        r: r.into(),
        s: s.into(),
        v,
    })
}

/// libsecp256k1's verification context, made once.
fn secp() -> &'static Secp256k1<VerifyOnly> {
    static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);
    &SECP
}

/// Strict ECDSA check of r ‖ s with recovery id `v` over a digest: r and s in 1..n−1, low-S, and
/// recovery yields `key` (SEC1 compressed).
pub(crate) fn check_ecdsa(
    key: &[u8; 33],
    digest: &[u8; 32],
    rs: &[u8],
    v: u8,
) -> Result<Signature, Error> {
    let bad = Error::Verification;
    let signature = Signature::from_slice(rs).map_err(|_| bad("malformed ECDSA signature"))?;
    if signature.normalize_s() != signature {
        return Err(bad("high-S ECDSA signature"));
    }
    let recovery_id = libsecp::ecdsa::RecoveryId::from_i32(i32::from(v))
        .map_err(|_| bad("recovery id out of range"))?;
    let recoverable =
        libsecp::ecdsa::RecoverableSignature::from_compact(&signature.to_bytes(), recovery_id)
            .map_err(|_| bad("malformed ECDSA signature"))?;
    let recovered = secp()
        .recover_ecdsa(&libsecp::Message::from_digest(*digest), &recoverable)
        .map_err(|_| bad("ECDSA signature does not verify"))?;
    if &recovered.serialize() != key {
        return Err(bad("ECDSA signature does not verify for this key"));
    }
    Ok(signature)
}

/// Verifies a BIP-340 reply against the key's x-only public key.
///
/// # Errors
/// [`Error::Verification`] on any mismatch.
pub fn verify_schnorr(
    key: &KeyInfo,
    message: &[u8],
    reply: &pb::SignResponse,
) -> Result<SchnorrSignature, Error> {
    let bad = Error::Verification;
    if reply.key_id != key.key_id || reply.scheme() != pb::SignatureScheme::Bip340Schnorr {
        return Err(bad("reply is for another key or scheme"));
    }
    let bytes: [u8; 64] = reply
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| bad("BIP-340 signature length"))?;
    let verifying = k256::schnorr::VerifyingKey::from_bytes((&key.public_key_xonly).into())
        .map_err(|_| bad("x-only key"))?;
    let signature = k256::schnorr::Signature::try_from(&bytes[..])
        .map_err(|_| bad("malformed BIP-340 signature"))?;
    verifying
        .verify_raw(message, &signature)
        .map_err(|_| bad("BIP-340 signature does not verify"))?;
    Ok(SchnorrSignature(bytes))
}

#[cfg(test)]
mod tests;
