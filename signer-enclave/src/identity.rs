//! The enclave's per-boot identity: an Ed25519 key that signs statements about keys and
//! keyrings and the audit trail's entries, and an X25519 key for HPKE key import. Both public halves travel in the
//! attestation document's `user_data`, so a client that verified the document can tell the
//! enclave's answers from a relay's. Formats in `SPEC.md`.

use ed25519_dalek::Signer as _;
use getrandom_sys_rng::SysRng;
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use prost::Message as _;
use rand_core::UnwrapErr;
use signer_proto::pb;
use zeroize::Zeroizing;

use crate::Error;

pub(crate) use signer_proto::canonical::{
    AUDIT_ENTRY_DOMAIN, IMPORT_INFO, KEY_STATEMENT_DOMAIN, KEYRING_STATEMENT_DOMAIN,
};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// What a boot is, as attested alongside the identity keys.
#[derive(Clone, Debug)]
pub(crate) struct Boot {
    /// Random id of this boot.
    pub id: [u8; 16],
    /// When it began, by the enclave's clock (ms).
    pub time_ms: u64,
    /// The deployment served.
    pub deployment_id: String,
    /// SHA-256 of the encoded configuration.
    pub config_hash: [u8; 32],
}

/// The identity keys. Both private halves wipe themselves on drop.
pub(crate) struct BootIdentity {
    signing: ed25519_dalek::SigningKey,
    hpke_private: <Kem as hpke::Kem>::PrivateKey,
    hpke_public: [u8; 32],
    boot: Boot,
}

impl core::fmt::Debug for BootIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BootIdentity")
            .field(
                "signing_public_key",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .field("hpke_public_key", &hex::encode(self.hpke_public))
            .finish_non_exhaustive()
    }
}

impl BootIdentity {
    /// Fresh keys from the OS RNG.
    ///
    /// # Errors
    /// [`Error::Rng`].
    pub(crate) fn generate(boot: Boot) -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut())?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let (hpke_private, public) = Kem::gen_keypair_with_rng(&mut UnwrapErr(SysRng));
        let hpke_public: [u8; 32] = public
            .to_bytes()
            .as_slice()
            .try_into()
            .map_err(|_| Error::Internal)?;
        Ok(Self {
            signing,
            hpke_private,
            hpke_public,
            boot,
        })
    }

    /// The boot this identity belongs to.
    pub(crate) fn boot(&self) -> &Boot {
        &self.boot
    }

    /// The encoded `EnclaveIdentity`, bound into attestation documents as `user_data`.
    pub(crate) fn user_data(&self) -> Vec<u8> {
        pb::EnclaveIdentity {
            signing_public_key: self.signing.verifying_key().to_bytes().to_vec(),
            hpke_public_key: self.hpke_public.to_vec(),
            boot_id: self.boot.id.to_vec(),
            boot_time_ms: self.boot.time_ms,
            deployment_id: self.boot.deployment_id.clone(),
            config_hash: self.boot.config_hash.to_vec(),
        }
        .encode_to_vec()
    }

    /// The HPKE public key.
    pub(crate) fn hpke_public(&self) -> &[u8; 32] {
        &self.hpke_public
    }

    fn sign(&self, domain: &[u8], statement: Vec<u8>) -> pb::SignedStatement {
        let mut message = Vec::with_capacity(domain.len() + statement.len());
        message.extend_from_slice(domain);
        message.extend_from_slice(&statement);
        pb::SignedStatement {
            signature: self.signing.sign(&message).to_bytes().to_vec(),
            statement,
            signing_public_key: self.signing.verifying_key().to_bytes().to_vec(),
        }
    }

    /// Signs a statement about a key.
    pub(crate) fn key_statement(&self, statement: &pb::KeyStatement) -> pb::SignedStatement {
        self.sign(KEY_STATEMENT_DOMAIN, statement.encode_to_vec())
    }

    /// Signs an encoded audit entry.
    pub(crate) fn audit_entry(&self, entry: Vec<u8>) -> pb::SignedAuditEntry {
        let signed = self.sign(AUDIT_ENTRY_DOMAIN, entry);
        pb::SignedAuditEntry {
            entry: signed.statement,
            signature: signed.signature,
        }
    }

    /// Signs a statement about a keyring.
    pub(crate) fn keyring_statement(
        &self,
        statement: &pb::KeyringStatement,
    ) -> pb::SignedStatement {
        self.sign(KEYRING_STATEMENT_DOMAIN, statement.encode_to_vec())
    }

    /// Opens an import's ciphertext: HPKE base mode with [`IMPORT_INFO`] and `aad`. The
    /// plaintext is read by [`crate::intake::import::ImportOp::read`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the encapsulated key or ciphertext is malformed or does not
    /// open (one message for every case).
    pub(crate) fn open_import(
        &self,
        encapsulated_key: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        const REFUSED: Error = Error::InvalidArgument("import ciphertext does not open");
        let encapped =
            <Kem as hpke::Kem>::EncappedKey::from_bytes(encapsulated_key).map_err(|_| REFUSED)?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &self.hpke_private,
            &encapped,
            IMPORT_INFO,
            ciphertext,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| REFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_boot() -> Boot {
        Boot {
            id: [7; 16],
            time_ms: 1,
            deployment_id: "test".into(),
            config_hash: [0; 32],
        }
    }

    #[test]
    fn user_data_carries_the_boot_and_configuration() {
        let identity = BootIdentity::generate(test_boot()).unwrap();
        let attested = pb::EnclaveIdentity::decode(identity.user_data().as_slice()).unwrap();
        assert_eq!(attested.boot_time_ms, 1);
        assert_eq!(attested.deployment_id, "test");
        assert_eq!(attested.config_hash, vec![0; 32]);
        // The NSM caps user_data at 512 bytes; a deployment id at its longest still fits.
        let long = BootIdentity::generate(Boot {
            deployment_id: "a".repeat(64),
            ..test_boot()
        })
        .unwrap();
        assert!(long.user_data().len() <= 512);
    }

    #[test]
    fn statements_verify_under_the_attested_key_and_nothing_else() {
        let identity = BootIdentity::generate(test_boot()).unwrap();
        let attested = pb::EnclaveIdentity::decode(identity.user_data().as_slice()).unwrap();
        let statement = pb::KeyStatement {
            key_id: "k-00".into(),
            ..Default::default()
        };
        let signed = identity.key_statement(&statement);
        assert_eq!(signed.signing_public_key, attested.signing_public_key);
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            &attested.signing_public_key.as_slice().try_into().unwrap(),
        )
        .unwrap();
        let signature =
            ed25519_dalek::Signature::from_bytes(&signed.signature.as_slice().try_into().unwrap());
        let mut message = KEY_STATEMENT_DOMAIN.to_vec();
        message.extend_from_slice(&signed.statement);
        key.verify_strict(&message, &signature).unwrap();
        // The same bytes under the keyring domain do not verify: statements cannot be confused.
        let mut other = KEYRING_STATEMENT_DOMAIN.to_vec();
        other.extend_from_slice(&signed.statement);
        assert!(key.verify_strict(&other, &signature).is_err());
    }

    #[test]
    fn import_opens_only_what_was_sealed_to_this_enclave_with_this_aad() {
        let identity = BootIdentity::generate(test_boot()).unwrap();
        let secret = [0x42u8; 32];
        let public = <Kem as hpke::Kem>::PublicKey::from_bytes(identity.hpke_public()).unwrap();
        let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &public,
            IMPORT_INFO,
            &secret,
            b"kr-1",
            &mut UnwrapErr(SysRng),
        )
        .unwrap();
        let enc = encapped.to_bytes();
        let opened = identity.open_import(&enc, &ciphertext, b"kr-1").unwrap();
        assert_eq!(opened.as_slice(), &secret);
        assert!(identity.open_import(&enc, &ciphertext, b"kr-2").is_err());
        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        assert!(identity.open_import(&enc, &tampered, b"kr-1").is_err());
        let other = BootIdentity::generate(test_boot()).unwrap();
        assert!(other.open_import(&enc, &ciphertext, b"kr-1").is_err());
    }
}
