//! The `Backend` trait: one secp256k1 implementation chosen at start-up, `k256` or libsecp256k1.
//!
//! Both produce byte-identical results: RFC 6979 ECDSA with low-S and recovery id, and BIP-340
//! signatures for the same auxiliary randomness. The tests hold them to that.

mod k256;
mod libsecp;

pub use self::k256::K256;
pub use self::libsecp::Libsecp256k1;

use crate::secret::WalletSecret;

/// A 32-byte message digest, hashed by the caller with its chain's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest32(pub [u8; 32]);

/// A recoverable ECDSA signature: r ‖ s (low-S) and the recovery id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// r ‖ s, 32 bytes each, big-endian; s ≤ n/2.
    pub rs: [u8; 64],
    /// Recovery id, 0..=3.
    pub recovery_id: u8,
}

/// An uncompressed SEC1 public key, 0x04 ‖ x ‖ y.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 65]);

impl PublicKey {
    /// SEC1 compressed form.
    pub fn compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = if self.0[64] & 1 == 1 { 0x03 } else { 0x02 };
        out[1..].copy_from_slice(&self.0[1..33]);
        out
    }

    /// BIP-340 x-only form.
    pub fn xonly(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0[1..33]);
        out
    }
}

/// Which backend to run, chosen at start-up: `k256` or `secp256k1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// RustCrypto `k256`: pure Rust, wipes its secret on drop. The default.
    K256,
    /// libsecp256k1 through the `secp256k1` crate.
    Secp256k1,
}

impl core::str::FromStr for BackendKind {
    type Err = crate::Error;

    fn from_str(name: &str) -> Result<Self, crate::Error> {
        match name {
            "k256" => Ok(Self::K256),
            "secp256k1" => Ok(Self::Secp256k1),
            _ => Err(crate::Error::InvalidArgument(
                "the backend is k256 or secp256k1",
            )),
        }
    }
}

impl core::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::K256 => "k256",
            Self::Secp256k1 => "secp256k1",
        })
    }
}

/// A secp256k1 signing implementation.
///
/// `Key` is the backend's prepared form of a secret (public key computed once, at load). It must
/// wipe its secret on drop.
pub trait Backend: Send + Sync + 'static {
    /// The prepared key.
    type Key: Send + Sync + 'static;

    /// The backend's name, as reported in status and logs.
    const NAME: &'static str;

    /// Prepares a secret: checks that it is a valid scalar (1..n-1) and derives its public key.
    ///
    /// # Errors
    /// [`crate::Error::InvalidSecret`] when the bytes are not a valid secret scalar.
    fn load(secret: &WalletSecret) -> Result<Self::Key, crate::Error>;

    /// The secret scalar, for re-sealing a key under a new policy. Never leaves the enclave.
    fn secret(key: &Self::Key) -> WalletSecret;

    /// The key's SEC1 compressed public key (cheap: kept with the key).
    fn public_key_compressed(key: &Self::Key) -> [u8; 33];

    /// The key's public key, uncompressed (may cost a decompression).
    fn public_key(key: &Self::Key) -> PublicKey;

    /// RFC 6979 ECDSA over a 32-byte digest, low-S, with recovery id.
    fn sign_ecdsa(key: &Self::Key, digest: &Digest32) -> EcdsaSignature;

    /// BIP-340 Schnorr over `msg` (any length) with the given auxiliary randomness.
    ///
    /// # Errors
    /// [`crate::Error::Internal`] if the backend fails to sign (a derived nonce of zero).
    fn sign_schnorr(
        key: &Self::Key,
        msg: &[u8],
        aux_rand: &[u8; 32],
    ) -> Result<[u8; 64], crate::Error>;

    /// Verifies a low-S ECDSA signature (r ‖ s) over a 32-byte digest. Variable time: public
    /// inputs only. High-S signatures are rejected.
    fn verify_ecdsa_vartime(public: &PublicKey, digest: &Digest32, rs: &[u8; 64]) -> bool;

    /// Verifies a BIP-340 signature against an x-only public key. Variable time: public inputs only.
    fn verify_schnorr_vartime(xonly: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool;
}

#[cfg(test)]
mod tests;
