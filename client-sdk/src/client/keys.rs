//! Key administration: keyrings with admin sets, attested key import, policy changes. Each
//! reply is checked against the attested enclave's signed statement before it is returned.

use getrandom_sys_rng::SysRng;
use hpke::{Deserializable as _, Serializable as _};
use rand_core::UnwrapErr;
use signer_proto::canonical::IMPORT_INFO;
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;

use super::{Client, body_hash};
use crate::Error;
use crate::verify::KeyInfo;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

impl Client {
    /// Creates a keyring administered by `admins` (`threshold` of them authorise each key
    /// creation). The client's API keys must include `threshold` of the admins: the request is
    /// their proof of possession. Returns the keyring id once the enclave's statement verifies.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`].
    pub async fn create_keyring(
        &self,
        admins: Vec<pb::ApiKey>,
        threshold: u32,
    ) -> Result<String, Error> {
        let admins = pb::KeyringAdmins { admins, threshold };
        let request = self.envelope(Operation::CreateKeyring(pb::CreateKeyringBody {
            admins: Some(admins.clone()),
        }))?;
        let binding = body_hash(&request.body);
        // Not retried: a lost answer would leave a keyring nobody was told about.
        let response = self
            .raw()
            .create_keyring(request)
            .await
            .map_err(Error::from)?
            .into_inner();
        let check = |identity: &crate::AttestedIdentity| {
            identity.check_keyring(
                &response.keyring_id,
                response.statement.as_ref(),
                &admins,
                &binding,
            )
        };
        if check(&self.enclave_identity(false).await?).is_err() {
            check(&self.enclave_identity(true).await?)?;
        }
        Ok(response.keyring_id)
    }

    /// Imports an existing secp256k1 secret: verifies a fresh attestation document (chain, PCR
    /// allow-list, nonce), HPKE-encrypts the secret to the enclave key it carries, and sends
    /// only the ciphertext through the host. The returned key's public key is checked against
    /// the secret's.
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
        let expected = k256::SecretKey::from_slice(secret)
            .map_err(|_| Error::InvalidArgument("not a valid secp256k1 secret key"))?
            .public_key();
        let identity = self.enclave_identity(true).await?;
        let recipient = <Kem as hpke::Kem>::PublicKey::from_bytes(&identity.hpke_public_key)
            .map_err(|_| Error::Attestation("malformed enclave HPKE key"))?;
        let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &recipient,
            IMPORT_INFO,
            secret,
            keyring_id.as_bytes(),
            &mut UnwrapErr(SysRng),
        )
        .map_err(|_| Error::Attestation("enclave HPKE key unusable"))?;
        let request = self.envelope(Operation::ImportKey(pb::ImportKeyBody {
            keyring_id: keyring_id.to_owned(),
            label: label.to_owned(),
            policy,
            hpke_public_key: identity.hpke_public_key.to_vec(),
            encapsulated_key: encapped.to_bytes().to_vec(),
            ciphertext,
        }))?;
        let binding = body_hash(&request.body);
        let response = self
            .raw()
            .import_key(request)
            .await
            .map_err(Error::from)?
            .into_inner();
        let info = self.checked_key(response.key, &binding, None).await?;
        let compressed =
            k256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(expected.as_affine(), true);
        if compressed.as_bytes() != info.public_key_compressed {
            return Err(Error::Verification(
                "imported key's public key is not the secret's",
            ));
        }
        Ok(info)
    }

    /// Replaces a key's policy. The client's API keys must satisfy the current policy's admin
    /// quorum. The change names the current policy (from a fresh, verified `GetPublicKey`), so it
    /// cannot be replayed onto a later one.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`].
    pub async fn update_policy(&self, key_id: &str, policy: pb::Policy) -> Result<KeyInfo, Error> {
        let current = self.fresh_public_key(key_id).await?;
        let request = self.envelope(Operation::UpdatePolicy(pb::UpdatePolicyBody {
            key_id: key_id.to_owned(),
            current_policy_hash: current.policy_hash.to_vec(),
            policy: Some(policy),
        }))?;
        let binding = body_hash(&request.body);
        let response = self
            .raw()
            .update_policy(request)
            .await
            .map_err(Error::from)?
            .into_inner();
        self.checked_key(response.key, &binding, Some(key_id)).await
    }
}
