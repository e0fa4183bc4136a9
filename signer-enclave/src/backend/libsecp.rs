//! The libsecp256k1 backend, through the `secp256k1` crate.

use secp256k1::ecdsa::RecoverableSignature;
use secp256k1::{Keypair, Message, schnorr};

use super::{Backend, Digest32, EcdsaSignature, PublicKey};
use crate::secret::WalletSecret;

/// libsecp256k1 (Bitcoin Core's library, constant-time signing). The crate re-randomises its
/// global context after every signing call, as shipped; the bench measures that cost.
#[derive(Debug)]
pub struct Libsecp256k1;

/// A prepared libsecp256k1 key pair, erased on drop.
///
/// The crate's `Keypair` does not wipe itself, and its `non_secure_erase` is the only erasure it
/// offers (best effort: the compiler may keep copies made by moves). We call it on drop.
pub struct LibsecpKey(Keypair);

impl Drop for LibsecpKey {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl core::fmt::Debug for LibsecpKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LibsecpKey").finish_non_exhaustive()
    }
}

impl Backend for Libsecp256k1 {
    type Key = LibsecpKey;
    const NAME: &'static str = "secp256k1";

    fn load(secret: &WalletSecret) -> Result<LibsecpKey, crate::Error> {
        Keypair::from_secret_bytes(*secret.expose_secret())
            .map(LibsecpKey)
            .map_err(|_| crate::Error::InvalidSecret)
    }

    fn secret(key: &LibsecpKey) -> WalletSecret {
        let mut bytes = key.0.to_secret_bytes();
        let secret = WalletSecret::from_bytes(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        secret
    }

    fn public_key_compressed(key: &LibsecpKey) -> [u8; 33] {
        key.0.public_key().serialize()
    }

    fn public_key(key: &LibsecpKey) -> PublicKey {
        PublicKey(key.0.public_key().serialize_uncompressed())
    }

    fn sign_ecdsa(key: &LibsecpKey, digest: &Digest32) -> EcdsaSignature {
        let mut secret = key.0.secret_key();
        // libsecp256k1 always produces low-S signatures.
        let signature =
            RecoverableSignature::sign_ecdsa_recoverable(Message::from_digest(digest.0), &secret);
        secret.non_secure_erase();
        let (recovery_id, rs) = signature.serialize_compact();
        EcdsaSignature {
            rs,
            recovery_id: u8::from(recovery_id),
        }
    }

    fn sign_schnorr(
        key: &LibsecpKey,
        msg: &[u8],
        aux_rand: &[u8; 32],
    ) -> Result<[u8; 64], crate::Error> {
        Ok(schnorr::sign_with_aux_rand(msg, &key.0, aux_rand).to_byte_array())
    }

    fn verify_ecdsa_vartime(public: &PublicKey, digest: &Digest32, rs: &[u8; 64]) -> bool {
        let Ok(key) = secp256k1::PublicKey::from_slice(&public.0) else {
            return false;
        };
        let Ok(signature) = secp256k1::ecdsa::Signature::from_compact(rs) else {
            return false;
        };
        // libsecp256k1's verify rejects high-S signatures.
        signature
            .verify(Message::from_digest(digest.0), &key)
            .is_ok()
    }

    fn verify_schnorr_vartime(xonly: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = secp256k1::XOnlyPublicKey::from_byte_array(*xonly) else {
            return false;
        };
        schnorr::Signature::from_byte_array(*signature)
            .verify(msg, &key)
            .is_ok()
    }
}
