//! The RustCrypto `k256` backend.

use std::sync::OnceLock;

use k256::ecdsa::SigningKey;
use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
use k256::elliptic_curve::sec1::ToSec1Point;

use super::{Backend, Digest32, EcdsaSignature, PublicKey};
use crate::secret::WalletSecret;

/// RustCrypto `k256` (NCC-audited, pure Rust, constant-time; wipes secrets on drop).
#[derive(Debug)]
pub struct K256;

/// A prepared `k256` key. The BIP-340 key (secret negated for odd y) is derived on first use,
/// so keys that only sign ECDSA pay for one scalar multiplication at load, not two.
pub struct K256Key {
    ecdsa: SigningKey,
    schnorr: OnceLock<Box<k256::schnorr::SigningKey>>,
}

impl core::fmt::Debug for K256Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("K256Key").finish_non_exhaustive()
    }
}

impl Backend for K256 {
    type Key = K256Key;
    const NAME: &'static str = "k256";

    fn load(secret: &WalletSecret) -> Result<K256Key, crate::Error> {
        let ecdsa = SigningKey::from_slice(secret.expose_secret())
            .map_err(|_| crate::Error::InvalidSecret)?;
        Ok(K256Key {
            ecdsa,
            schnorr: OnceLock::new(),
        })
    }

    fn public_key(key: &K256Key) -> PublicKey {
        let point = key.ecdsa.verifying_key().as_affine().to_sec1_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_bytes());
        PublicKey(out)
    }

    fn sign_ecdsa(key: &K256Key, digest: &Digest32) -> EcdsaSignature {
        // k256 sets NORMALIZE_S, so the signature is low-S and the recovery id matches it.
        let (signature, recovery_id) = key.ecdsa.sign_prehash_recoverable(&digest.0);
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&signature.to_bytes());
        EcdsaSignature {
            rs,
            recovery_id: recovery_id.to_byte(),
        }
    }

    fn sign_schnorr(
        key: &K256Key,
        msg: &[u8],
        aux_rand: &[u8; 32],
    ) -> Result<[u8; 64], crate::Error> {
        let schnorr = key.schnorr.get_or_init(|| {
            Box::new(k256::schnorr::SigningKey::from(
                key.ecdsa.as_nonzero_scalar().to_owned(),
            ))
        });
        let signature = schnorr
            .sign_raw(msg, aux_rand)
            .map_err(|_| crate::Error::Internal)?;
        Ok(signature.to_bytes())
    }

    fn verify_ecdsa_vartime(public: &PublicKey, digest: &Digest32, rs: &[u8; 64]) -> bool {
        let Ok(key) = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public.0) else {
            return false;
        };
        let Ok(signature) = k256::ecdsa::Signature::from_slice(rs) else {
            return false;
        };
        if signature.normalize_s() != signature {
            return false;
        }
        key.verify_prehash(&digest.0, &signature).is_ok()
    }

    fn verify_schnorr_vartime(xonly: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = k256::schnorr::VerifyingKey::from_bytes(xonly.into()) else {
            return false;
        };
        let Ok(signature) = k256::schnorr::Signature::try_from(&signature[..]) else {
            return false;
        };
        key.verify_raw(msg, &signature).is_ok()
    }
}
