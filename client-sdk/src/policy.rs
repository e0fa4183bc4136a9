//! Key policies on the client side: the default a new key gets, the canonical form the enclave
//! seals (so the SDK can check that a key carries exactly the policy it asked for), and a
//! readable rendering.

use serde::ser::SerializeStruct as _;
use signer_proto::pb;

use crate::Error;

mod bitcoin;
mod ethereum;
use crate::stamper::{Stamper, api_key_text, parse_api_key};
pub use bitcoin::BitcoinRulesJson;
pub use ethereum::{ContractCallJson, DomainJson, EthereumRulesJson, TierJson, TokenJson};

/// The policy [`crate::Client::create_key`] gives a new key: the stamper's API keys approve
/// (any one of them) and administer (any one), both signature schemes, no rate limit.
///
/// # Errors
/// [`Error::InvalidArgument`] when the stamper holds no key or more than 16.
pub fn default_for(stamper: &Stamper) -> Result<pb::Policy, Error> {
    let keys = stamper.public_keys();
    if keys.is_empty() || keys.len() > signer_proto::MAX_STAMPS {
        return Err(Error::InvalidArgument(
            "a default policy needs 1 to 16 API keys in the stamper",
        ));
    }
    Ok(pb::Policy {
        version: 0,
        approvers: keys.clone(),
        threshold: 1,
        schemes: vec![
            pb::SignatureScheme::EcdsaSecp256k1.into(),
            pb::SignatureScheme::Bip340Schnorr.into(),
        ],
        max_signatures_per_minute: 0,
        admins: keys,
        admin_threshold: 1,
        ethereum: None,
        hd: None,
        bitcoin: None,
    })
}

/// [`default_for`] for an HD root whose keys may be used under `subtrees` (paths from the
/// root, hardened indices with [`crate::hd::HARDENED`] set; typically account paths such as
/// `m/84'/0'/0'`).
///
/// # Errors
/// As [`default_for`]; [`Error::InvalidArgument`] for no subtree.
pub fn hd_root_for(stamper: &Stamper, subtrees: &[Vec<u32>]) -> Result<pb::Policy, Error> {
    if subtrees.is_empty() {
        return Err(Error::InvalidArgument(
            "an HD root needs at least one subtree",
        ));
    }
    Ok(pb::Policy {
        hd: Some(pb::HdRules {
            subtrees: subtrees
                .iter()
                .map(|indices| pb::DerivationPath {
                    indices: indices.clone(),
                })
                .collect(),
        }),
        ..default_for(stamper)?
    })
}

/// `policy` as the enclave will seal it at `version`: P-256 keys compressed, everything else
/// as given. Compare a key's encoded policy with this to know it is exactly what was asked.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed API key.
pub fn canonical(policy: &pb::Policy, version: u64) -> Result<pb::Policy, Error> {
    let normalise = |keys: &[pb::ApiKey]| -> Result<Vec<pb::ApiKey>, Error> {
        keys.iter()
            .map(|key| match pb::StampScheme::try_from(key.scheme) {
                Ok(pb::StampScheme::P256Sha256) => parse_api_key(&api_key_text(key)),
                _ => Ok(key.clone()),
            })
            .collect()
    };
    Ok(pb::Policy {
        version,
        approvers: normalise(&policy.approvers)?,
        admins: normalise(&policy.admins)?,
        ..policy.clone()
    })
}

/// Renders a policy for JSON output: API keys as `ed25519:<hex>` / `p256:<hex>`, schemes by
/// name.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: serde::Serializer>(
    policy: &pb::Policy,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let keys = |keys: &[pb::ApiKey]| keys.iter().map(api_key_text).collect::<Vec<_>>();
    let schemes: Vec<&str> = policy
        .schemes
        .iter()
        .map(|&s| match pb::SignatureScheme::try_from(s) {
            Ok(pb::SignatureScheme::EcdsaSecp256k1) => "ecdsa-secp256k1",
            Ok(pb::SignatureScheme::Bip340Schnorr) => "bip340-schnorr",
            _ => "unknown",
        })
        .collect();
    let mut out = serializer.serialize_struct("Policy", 10)?;
    out.serialize_field("version", &policy.version)?;
    out.serialize_field("approvers", &keys(&policy.approvers))?;
    out.serialize_field("threshold", &policy.threshold)?;
    out.serialize_field("schemes", &schemes)?;
    out.serialize_field(
        "max_signatures_per_minute",
        &policy.max_signatures_per_minute,
    )?;
    out.serialize_field("admins", &keys(&policy.admins))?;
    out.serialize_field("admin_threshold", &policy.admin_threshold)?;
    out.serialize_field(
        "ethereum",
        &policy.ethereum.as_ref().map(EthereumRulesJson::from),
    )?;
    let subtrees: Option<Vec<String>> = policy.hd.as_ref().map(|hd| {
        hd.subtrees
            .iter()
            .map(|path| crate::hd::format_path(&path.indices))
            .collect()
    });
    out.serialize_field("hd_subtrees", &subtrees)?;
    out.serialize_field(
        "bitcoin",
        &policy
            .bitcoin
            .as_ref()
            .map(|rules| BitcoinRulesJson::from_proto(rules, None)),
    )?;
    out.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamper::{ApiKeyPair, ApiKeyScheme};

    #[test]
    fn canonical_compresses_p256_keys_and_sets_the_version() {
        let key = ApiKeyPair::generate(ApiKeyScheme::P256).unwrap();
        let compressed = key.public();
        let point = p256::ecdsa::VerifyingKey::from_sec1_bytes(&compressed.public_key).unwrap();
        let uncompressed = pb::ApiKey {
            scheme: compressed.scheme,
            public_key: p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(
                point.as_affine(),
                false,
            )
            .as_bytes()
            .to_vec(),
        };
        let policy = pb::Policy {
            approvers: vec![uncompressed],
            threshold: 1,
            schemes: vec![1],
            ..Default::default()
        };
        let canonical = canonical(&policy, 1).unwrap();
        assert_eq!(canonical.version, 1);
        assert_eq!(canonical.approvers, vec![compressed]);
    }

    #[test]
    fn the_default_policy_names_the_stampers_keys() {
        let stamper = Stamper::new(vec![
            ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap(),
            ApiKeyPair::generate(ApiKeyScheme::P256).unwrap(),
        ]);
        let policy = default_for(&stamper).unwrap();
        assert_eq!(policy.approvers, stamper.public_keys());
        assert_eq!(policy.admins, stamper.public_keys());
        assert_eq!((policy.threshold, policy.admin_threshold), (1, 1));
        assert!(default_for(&Stamper::new(vec![])).is_err());
    }
}
