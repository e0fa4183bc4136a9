//! The RustCrypto `k256` backend.

use std::sync::OnceLock;

use k256::elliptic_curve::sec1::ToSec1Point as _;
use k256::{NonZeroScalar, ProjectivePoint, Secp256k1};
use zeroize::Zeroize as _;

use super::{Backend, Digest32, EcdsaSignature, PublicKey};
use crate::secret::WalletSecret;

/// RustCrypto `k256` (NCC-audited, pure Rust, constant-time).
#[derive(Debug)]
pub struct K256;

/// A prepared `k256` key: the secret scalar and its compressed public key (81 bytes with the
/// lazy BIP-340 slot; `k256::ecdsa::SigningKey` would also cache an 88-byte affine point).
///
/// ECDSA signs with the scalar directly (RFC 6979 through `ecdsa::hazmat`). The BIP-340 key
/// (scalar negated for odd y) is derived on first use, so keys that only sign ECDSA never pay for
/// it. The scalar is wiped on drop.
pub struct K256Key {
    scalar: NonZeroScalar,
    compressed: [u8; 33],
    schnorr: OnceLock<Box<k256::schnorr::SigningKey>>,
}

impl Drop for K256Key {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
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
        let scalar = NonZeroScalar::try_from(&secret.expose_secret()[..])
            .map_err(|_| crate::Error::InvalidSecret)?;
        let point = ProjectivePoint::mul_by_generator(&scalar).to_affine();
        let compressed = point
            .to_sec1_point(true)
            .as_bytes()
            .try_into()
            .map_err(|_| crate::Error::Internal)?;
        Ok(K256Key {
            scalar,
            compressed,
            schnorr: OnceLock::new(),
        })
    }

    fn secret(key: &K256Key) -> WalletSecret {
        let mut bytes: [u8; 32] = key.scalar.to_bytes().into();
        let secret = WalletSecret::from_bytes(&bytes);
        bytes.zeroize();
        secret
    }

    fn public_key_compressed(key: &K256Key) -> [u8; 33] {
        key.compressed
    }

    fn public_key(key: &K256Key) -> PublicKey {
        let point = k256::PublicKey::from_sec1_bytes(&key.compressed)
            .expect("derived from a non-zero scalar qed");
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_affine().to_sec1_point(false).as_bytes());
        PublicKey(out)
    }

    fn sign_ecdsa(key: &K256Key, digest: &Digest32) -> EcdsaSignature {
        // k256 sets NORMALIZE_S, so the signature is low-S and the recovery id matches it.
        let (signature, recovery_id) = ecdsa::hazmat::sign_prehashed_rfc6979::<
            Secp256k1,
            sha2::Sha256,
        >(&key.scalar, &digest.0, b"");
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
        let schnorr = key
            .schnorr
            .get_or_init(|| Box::new(k256::schnorr::SigningKey::from(key.scalar)));
        let signature = schnorr
            .sign_raw(msg, aux_rand)
            .map_err(|_| crate::Error::Internal)?;
        Ok(signature.to_bytes())
    }

    fn verify_ecdsa_vartime(public: &PublicKey, digest: &Digest32, rs: &[u8; 64]) -> bool {
        use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
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
