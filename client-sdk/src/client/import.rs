//! Attested key import: a secp256k1 secret, a BIP-32 seed or a BIP-39 mnemonic, HPKE-sealed to
//! the enclave key a freshly verified attestation document carries, bound to the keyring, the
//! policy, the request's nonce and the material's form. The reply is checked against what the
//! material makes locally (the public key, or an HD root's master key and fingerprint), so a
//! relay cannot substitute another key.

use bitcoin::bip32::Xpriv;
use bitcoin::secp256k1::Secp256k1;
use getrandom_sys_rng::SysRng;
use hpke::{Deserializable as _, Serializable as _};
use prost::Message as _;
use rand_core::UnwrapErr;
use signer_proto::canonical::{IMPORT_INFO, import_aad};
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;
use zeroize::Zeroizing;

use super::Client;
use super::call::{Fresh, body_hash};
use crate::Error;
use crate::policy;
use crate::verify::KeyInfo;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The message the enclave answers an import sealed to another of its boots with.
const OTHER_IDENTITY: &str = "import encrypted to another enclave identity; attest again";
/// Longest mnemonic phrase, and longest passphrase, the enclave reads (bytes of UTF-8).
const MAX_MNEMONIC_PART: usize = 1024;

impl Client {
    /// Imports an existing secp256k1 secret into `keyring_id` under `policy` (`None`: the
    /// default policy): verifies a fresh attestation document (chain, PCR allow-list, nonce),
    /// HPKE-encrypts the secret to the enclave key it carries, bound to the keyring, the policy
    /// and this request's nonce, and sends only the ciphertext through the host. The returned
    /// key's public key is checked against the secret's, and its policy against the one asked.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a value that is not a secret key; service errors;
    /// [`Error::Attestation`]; [`Error::Verification`].
    pub async fn import_key(
        &self,
        keyring_id: &str,
        label: &str,
        policy: Option<pb::Policy>,
        secret: &[u8; 32],
    ) -> Result<KeyInfo, Error> {
        let expected_public = k256::SecretKey::from_slice(secret)
            .map_err(|_| Error::InvalidArgument("not a valid secp256k1 secret key"))?
            .public_key();
        let policy = match policy {
            Some(policy) => policy,
            None => self.stamper_policy()?,
        };
        let info = self
            .import(
                keyring_id,
                label,
                policy,
                pb::ImportMaterial::Secret,
                secret,
            )
            .await?;
        let compressed = k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(
            expected_public.as_affine(),
            true,
        );
        if compressed.as_bytes() != info.public_key_compressed || info.hd.is_some() {
            return Err(Error::Verification(
                "imported key's public key is not the secret's",
            ));
        }
        Ok(info)
    }

    /// Imports an HD root from its BIP-32 seed (16, 32 or 64 bytes) into `keyring_id` under
    /// `policy`, which must carry `hd` rules ([`policy::hd_root_for`]); sealed as
    /// [`Client::import_key`] seals a secret. The reply's master public key and fingerprint are
    /// checked against the seed's.
    ///
    /// # Errors
    /// As [`Client::import_key`].
    pub async fn import_hd_seed(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
        seed: &[u8],
    ) -> Result<KeyInfo, Error> {
        if ![16, 32, 64].contains(&seed.len()) {
            return Err(Error::InvalidArgument("a seed is 16, 32 or 64 bytes"));
        }
        let info = self
            .import(keyring_id, label, policy, pb::ImportMaterial::Seed, seed)
            .await?;
        check_root(&info, seed)?;
        Ok(info)
    }

    /// Imports an HD root from a BIP-39 English mnemonic and its passphrase (empty for none)
    /// into `keyring_id` under `policy` (with `hd` rules). The enclave makes the BIP-39 seed
    /// and keeps only the root; the reply is checked against the root made here.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a phrase that is not a valid mnemonic or a part longer
    /// than 1024 bytes; as [`Client::import_key`].
    pub async fn import_mnemonic(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
        phrase: &str,
        passphrase: &str,
    ) -> Result<KeyInfo, Error> {
        if phrase.len() > MAX_MNEMONIC_PART || passphrase.len() > MAX_MNEMONIC_PART {
            return Err(Error::InvalidArgument("mnemonic or passphrase too long"));
        }
        let mnemonic = bip39::Mnemonic::parse_in(bip39::Language::English, phrase)
            .map_err(|_| Error::InvalidArgument("not a valid English BIP-39 mnemonic"))?;
        let seed = Zeroizing::new(mnemonic.to_seed(passphrase));
        let mut plaintext = Zeroizing::new(Vec::with_capacity(2 + phrase.len() + passphrase.len()));
        plaintext.extend_from_slice(
            &u16::try_from(phrase.len())
                .map_err(|_| Error::InvalidArgument("mnemonic too long"))?
                .to_be_bytes(),
        );
        plaintext.extend_from_slice(phrase.as_bytes());
        plaintext.extend_from_slice(passphrase.as_bytes());
        let info = self
            .import(
                keyring_id,
                label,
                policy,
                pb::ImportMaterial::Mnemonic,
                &plaintext,
            )
            .await?;
        check_root(&info, seed.as_slice())?;
        Ok(info)
    }

    /// Seals `plaintext` (of form `material`) to the attested enclave and sends the import,
    /// once more if the enclave restarted under a new identity meanwhile.
    async fn import(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
        material: pb::ImportMaterial,
        plaintext: &[u8],
    ) -> Result<KeyInfo, Error> {
        let sealed_policy = policy::canonical(&policy, 1)?.encode_to_vec();
        let form = u8::try_from(i32::from(material)).unwrap_or(u8::MAX);
        let mut identity = self.enclave_identity(true).await?;
        let mut outcome = None;
        for _ in 0..2 {
            let recipient = <Kem as hpke::Kem>::PublicKey::from_bytes(&identity.hpke_public_key)
                .map_err(|_| Error::Attestation("malformed enclave HPKE key"))?;
            let make = || {
                let fields = self.replay_fields()?;
                let aad = import_aad(keyring_id, &sealed_policy, &fields.nonce, form);
                let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
                    &hpke::OpModeS::Base,
                    &recipient,
                    IMPORT_INFO,
                    plaintext,
                    &aad,
                    &mut UnwrapErr(SysRng),
                )
                .map_err(|_| Error::Attestation("enclave HPKE key unusable"))?;
                let operation = Operation::ImportKey(pb::ImportKeyBody {
                    keyring_id: keyring_id.to_owned(),
                    label: label.to_owned(),
                    policy: Some(policy.clone()),
                    hpke_public_key: identity.hpke_public_key.to_vec(),
                    encapsulated_key: encapped.to_bytes().to_vec(),
                    ciphertext,
                    material: material.into(),
                });
                self.stamp(Self::encode_body(&fields, operation))
            };
            let attempt = self
                .call(Fresh::WhenExpired, make, |mut c, r| async move {
                    c.import_key(r).await
                })
                .await;
            match attempt {
                Err(Error::Status(status)) if status.message() == OTHER_IDENTITY => {
                    identity = self.enclave_identity(true).await?;
                    outcome = Some(Err(Error::Status(status)));
                }
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        let (response, request) =
            outcome.unwrap_or(Err(Error::Attestation("import not attempted")))?;
        self.checked_key(
            response.key,
            &body_hash(&request.body),
            None,
            Some(&sealed_policy),
        )
        .await
    }
}

/// Refuses a reply that is not the HD root `seed` makes: its master public key and fingerprint.
fn check_root(info: &KeyInfo, seed: &[u8]) -> Result<(), Error> {
    let secp = Secp256k1::signing_only();
    let mut master = Xpriv::new_master(bitcoin::NetworkKind::Main, seed)
        .map_err(|_| Error::InvalidArgument("seed derives no valid root key"))?;
    let public = master.private_key.public_key(&secp).serialize();
    let fingerprint = master.fingerprint(&secp).to_bytes();
    master.private_key.non_secure_erase();
    let matches = info
        .hd
        .as_ref()
        .is_some_and(|hd| hd.path.is_empty() && hd.root_fingerprint == fingerprint);
    if !matches || info.public_key_compressed != public {
        return Err(Error::Verification(
            "imported root's master key is not the seed's",
        ));
    }
    Ok(())
}
