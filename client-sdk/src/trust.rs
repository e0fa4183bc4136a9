//! Trusting the enclave's answers: its identity comes from a verified attestation document, and
//! every key (or keyring) it reports carries a statement signed by that identity. A relay that
//! substitutes a public key, a policy or a keyring's admins cannot produce the signature.

use prost::Message as _;
use signer_proto::canonical::{
    KEY_STATEMENT_DOMAIN, KEYRING_STATEMENT_DOMAIN, admins_hash, config_hash,
};
use signer_proto::pb;

use crate::Error;
use crate::attestation::VerifiedAttestation;

pub use signer_proto::canonical::policy_hash;

/// The enclave identity bound into a verified attestation document, with the enclave's
/// configuration (checked against the attested hash).
#[derive(Clone, Debug, PartialEq)]
pub struct AttestedIdentity {
    /// Ed25519 key that signs statements.
    pub signing_public_key: [u8; 32],
    /// X25519 key for HPKE key import.
    pub hpke_public_key: [u8; 32],
    /// The enclave boot.
    pub boot_id: Vec<u8>,
    /// When the boot began, by the enclave's clock (ms since the Unix epoch).
    pub boot_time_ms: u64,
    /// The deployment the enclave serves.
    pub deployment_id: String,
    /// The enclave's configuration (keyring creators, limits, KMS key).
    pub config: pb::EnclaveConfig,
}

impl AttestedIdentity {
    /// Reads the identity from a document's `user_data`, and the configuration that came with
    /// the document, which must hash to the attested `config_hash`.
    ///
    /// # Errors
    /// [`Error::Attestation`] when either is missing, malformed or mismatched.
    pub fn from_attestation(verified: &VerifiedAttestation, config: &[u8]) -> Result<Self, Error> {
        let data = verified
            .user_data
            .as_deref()
            .ok_or(Error::Attestation("document carries no enclave identity"))?;
        let identity = pb::EnclaveIdentity::decode(data)
            .map_err(|_| Error::Attestation("malformed enclave identity"))?;
        if config_hash(config).as_slice() != identity.config_hash {
            return Err(Error::Attestation(
                "enclave configuration does not match its attested hash",
            ));
        }
        let config = pb::EnclaveConfig::decode(config)
            .map_err(|_| Error::Attestation("malformed enclave configuration"))?;
        if config.deployment_id != identity.deployment_id {
            return Err(Error::Attestation(
                "attested deployment id disagrees with the configuration",
            ));
        }
        Ok(Self {
            signing_public_key: identity
                .signing_public_key
                .as_slice()
                .try_into()
                .map_err(|_| Error::Attestation("malformed enclave signing key"))?,
            hpke_public_key: identity
                .hpke_public_key
                .as_slice()
                .try_into()
                .map_err(|_| Error::Attestation("malformed enclave HPKE key"))?,
            boot_id: identity.boot_id,
            boot_time_ms: identity.boot_time_ms,
            deployment_id: identity.deployment_id,
            config,
        })
    }

    fn open(&self, signed: &pb::SignedStatement, domain: &[u8]) -> Result<(), Error> {
        let bad = || Error::Verification("statement not signed by the attested enclave");
        if signed.signing_public_key != self.signing_public_key {
            return Err(bad());
        }
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&self.signing_public_key).map_err(|_| bad())?;
        let signature: [u8; 64] = signed.signature.as_slice().try_into().map_err(|_| bad())?;
        let mut message = domain.to_vec();
        message.extend_from_slice(&signed.statement);
        key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature))
            .map_err(|_| bad())
    }

    /// Checks a key reply: the statement verifies under this identity, names this key, its
    /// public key and policy, and answers `binding` (the request's body hash or challenge).
    /// Returns the statement.
    ///
    /// # Errors
    /// [`Error::Verification`] naming the first mismatch.
    pub fn check_key(&self, info: &pb::KeyInfo, binding: &[u8]) -> Result<pb::KeyStatement, Error> {
        let signed = info.statement.as_ref().ok_or(Error::Verification(
            "key reply without an enclave statement",
        ))?;
        self.open(signed, KEY_STATEMENT_DOMAIN)?;
        let statement = pb::KeyStatement::decode(signed.statement.as_slice())
            .map_err(|_| Error::Verification("malformed key statement"))?;
        if statement.key_id != info.key_id
            || statement.keyring_id != info.keyring_id
            || statement.public_key_compressed != info.public_key_compressed
            || statement.policy_hash != info.policy_hash
        {
            return Err(Error::Verification(
                "key reply differs from the enclave's statement",
            ));
        }
        if statement.request_binding != binding {
            return Err(Error::Verification(
                "enclave statement answers another request",
            ));
        }
        if policy_hash(&info.policy).as_slice() != info.policy_hash {
            return Err(Error::Verification("policy does not match its hash"));
        }
        let policy = pb::Policy::decode(info.policy.as_slice())
            .map_err(|_| Error::Verification("malformed policy"))?;
        if policy.version != statement.policy_version {
            return Err(Error::Verification(
                "policy version differs from the enclave's statement",
            ));
        }
        Ok(statement)
    }

    /// Checks a keyring reply: signed by this identity, for this keyring, these admins and this
    /// request.
    ///
    /// # Errors
    /// [`Error::Verification`] naming the first mismatch.
    pub fn check_keyring(
        &self,
        keyring_id: &str,
        statement: Option<&pb::SignedStatement>,
        admins: &pb::KeyringAdmins,
        binding: &[u8],
    ) -> Result<(), Error> {
        let signed = statement.ok_or(Error::Verification(
            "keyring reply without an enclave statement",
        ))?;
        self.open(signed, KEYRING_STATEMENT_DOMAIN)?;
        let statement = pb::KeyringStatement::decode(signed.statement.as_slice())
            .map_err(|_| Error::Verification("malformed keyring statement"))?;
        if statement.keyring_id != keyring_id
            || statement.admins_hash != admins_hash(&admins.encode_to_vec())
            || statement.request_binding != binding
        {
            return Err(Error::Verification(
                "keyring reply differs from the enclave's statement",
            ));
        }
        Ok(())
    }
}
