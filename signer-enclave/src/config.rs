//! The enclave's configuration: fixed at start-up from the command line of its measured image
//! (so in production it is part of PCR0), attested through `EnclaveIdentity.config_hash`, and
//! never changed by the host afterwards. It names the deployment stamps are bound to, the
//! keyring creators, and every capacity and time limit.

use prost::Message as _;
use signer_proto::pb;

use crate::Error;
use crate::policy::Quorum;

/// How many keyrings, keys and distinct policies the enclave holds at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Open keyrings (each costs one KMS call per boot).
    pub keyrings: usize,
    /// Wallet keys.
    pub keys: usize,
    /// Distinct policies.
    pub policies: usize,
    /// Keys derived under HD roots kept in RAM (a cache; 0 derives on every use).
    pub derived_keys: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            keyrings: 64,
            keys: 10_000_000,
            policies: 100_000,
            derived_keys: 1_000_000,
        }
    }
}

/// The enclave's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The deployment stamps name.
    pub deployment_id: String,
    /// Who may create keyrings (empty: nobody).
    pub creators: Quorum,
    /// Capacities.
    pub capacity: Capacity,
    /// Oldest accepted body, relative to the enclave's clock (ms).
    pub window_ms: u64,
    /// Furthest-ahead accepted body (ms).
    pub future_skew_ms: u64,
    /// Oldest accepted body relative to the boot (ms).
    pub boot_skew_ms: u64,
    /// Live nonces remembered at most.
    pub nonce_capacity: usize,
    /// Live nonces one API key may hold.
    pub nonce_quota_per_key: usize,
    /// The key-wrapping provider's name.
    pub provider: String,
    /// The KMS key's ARN (empty for the local provider).
    pub kms_key_arn: String,
}

impl Settings {
    /// Checks the deployment id and parses the creators (`ed25519:<hex>` or `p256:<hex>`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the problem.
    pub fn creators(keys: &[String], threshold: u32) -> Result<Quorum, Error> {
        let parsed = keys
            .iter()
            .map(|text| parse_api_key(text))
            .collect::<Result<Vec<_>, _>>()?;
        let threshold = if parsed.is_empty() { 0 } else { threshold };
        Quorum::parse(&parsed, threshold, "keyring creators or their threshold")
    }

    /// Validates the settings as a whole.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the problem.
    pub fn validate(&self) -> Result<(), Error> {
        if !signer_proto::canonical::valid_deployment_id(&self.deployment_id) {
            return Err(Error::InvalidArgument(
                "deployment id must be 1 to 64 of a-z 0-9 . _ -",
            ));
        }
        if self.nonce_quota_per_key == 0 || self.nonce_capacity == 0 {
            return Err(Error::InvalidArgument(
                "nonce capacity and quota must be positive",
            ));
        }
        if self.capacity.keyrings == 0 || self.capacity.keys == 0 || self.capacity.policies == 0 {
            return Err(Error::InvalidArgument("capacities must be positive"));
        }
        Ok(())
    }

    /// The wire form, attested by its hash.
    pub fn to_proto(&self) -> pb::EnclaveConfig {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        pb::EnclaveConfig {
            deployment_id: self.deployment_id.clone(),
            keyring_creators: Some(pb::KeyringAdmins {
                admins: self.creators.to_proto(),
                threshold: self.creators.threshold_u32(),
            }),
            max_keyrings: u32::try_from(self.capacity.keyrings).unwrap_or(u32::MAX),
            max_keys: wide(self.capacity.keys),
            max_policies: u32::try_from(self.capacity.policies).unwrap_or(u32::MAX),
            replay_window_ms: self.window_ms,
            future_skew_ms: self.future_skew_ms,
            boot_skew_ms: self.boot_skew_ms,
            nonce_capacity: wide(self.nonce_capacity),
            nonce_quota_per_key: wide(self.nonce_quota_per_key),
            provider: self.provider.clone(),
            kms_key_arn: self.kms_key_arn.clone(),
        }
    }

    /// The encoded `EnclaveConfig`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }
}

/// Parses `ed25519:<hex>` or `p256:<hex>` (either SEC1 form; normalised when parsed into a
/// quorum).
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn parse_api_key(text: &str) -> Result<pb::ApiKey, Error> {
    const BAD: Error = Error::InvalidArgument("API keys are written ed25519:<hex> or p256:<hex>");
    let (scheme, key) = text.split_once(':').ok_or(BAD)?;
    let scheme = match scheme {
        "ed25519" => pb::StampScheme::Ed25519,
        "p256" => pb::StampScheme::P256Sha256,
        _ => return Err(BAD),
    };
    Ok(pb::ApiKey {
        scheme: scheme.into(),
        public_key: hex::decode(key).map_err(|_| BAD)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            deployment_id: "test".into(),
            creators: Settings::creators(&[format!("ed25519:{}", "11".repeat(32))], 1).unwrap(),
            capacity: Capacity::default(),
            window_ms: 1,
            future_skew_ms: 1,
            boot_skew_ms: 1,
            nonce_capacity: 1,
            nonce_quota_per_key: 1,
            provider: "local".into(),
            kms_key_arn: String::new(),
        }
    }

    #[test]
    fn creators_and_deployment_ids_are_checked() {
        assert!(settings().validate().is_ok());
        let none = Settings::creators(&[], 1).unwrap();
        assert!(none.members().is_empty(), "no creators: creation disabled");
        assert!(Settings::creators(&["rsa:00".into()], 1).is_err());
        assert!(Settings::creators(&[format!("ed25519:{}", "11".repeat(32))], 2).is_err());
        let bad = Settings {
            deployment_id: "Prod!".into(),
            ..settings()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_encoding_carries_every_setting() {
        let config = pb::EnclaveConfig::decode(settings().encode().as_slice()).unwrap();
        assert_eq!(config.deployment_id, "test");
        assert_eq!(config.keyring_creators.unwrap().admins.len(), 1);
        assert_eq!(config.max_keyrings, 64);
    }
}
