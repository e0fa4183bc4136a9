//! Ethereum rules as JSON people write: addresses and selectors as `0x` hex, amounts as decimal
//! or `0x` strings. Converts to and from `pb::EthereumRules`; the enclave checks the rest.

use alloy_primitives::{Address, U256};
use signer_proto::pb;

use crate::Error;

/// A `(contract, selector)` pair.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractCallJson {
    /// `0x` address.
    pub contract: String,
    /// `0x` and 4 bytes.
    pub selector: String,
}

/// One ERC-20 token's limits (amounts in token units; absent: no limit).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenJson {
    /// `0x` address.
    pub contract: String,
    /// Most per transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<String>,
    /// Most per rolling 24 hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_amount_per_day: Option<String>,
    /// Largest `approve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_approval: Option<String>,
}

/// An approval tier: above `above_wei`, `threshold` approvers.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierJson {
    /// Wei.
    pub above_wei: String,
    /// Approvers needed.
    pub threshold: u32,
}

/// An allowed EIP-712 domain; absent fields match anything.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainJson {
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `chainId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// `verifyingContract`, `0x` address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifying_contract: Option<String>,
}

/// `pb::EthereumRules` as JSON (see the `.proto` for what each rule means).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EthereumRulesJson {
    /// Allowed chain ids.
    pub chain_ids: Vec<u64>,
    /// Where value and tokens may go (empty: anywhere).
    pub destinations: Vec<String>,
    /// Most wei per transaction (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_wei: Option<String>,
    /// Most wei per rolling 24 hours (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_per_day_wei: Option<String>,
    /// Whether contracts may be created.
    pub allow_contract_creation: bool,
    /// Other contract calls allowed.
    pub contract_calls: Vec<ContractCallJson>,
    /// ERC-20 tokens and their limits.
    pub tokens: Vec<TokenJson>,
    /// Approval tiers.
    pub tiers: Vec<TierJson>,
    /// Whether `personal_sign` is allowed.
    pub allow_personal_sign: bool,
    /// Allowed EIP-712 domains.
    pub typed_data_domains: Vec<DomainJson>,
    /// Whether `Sign` over a raw digest stays allowed.
    pub allow_blind_signing: bool,
}

fn address(text: &str) -> Result<Vec<u8>, Error> {
    text.parse::<Address>()
        .map(|a| a.to_vec())
        .map_err(|_| Error::InvalidArgument("ethereum rules: malformed address"))
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn amount(text: &str) -> Result<Vec<u8>, Error> {
    let value: U256 = text
        .parse()
        .map_err(|_| Error::InvalidArgument("ethereum rules: malformed amount"))?;
    Ok(value.to_be_bytes_trimmed_vec())
}

/// A limit: zero has no encoding (empty means "no limit"), so it is refused rather than
/// silently read as unlimited.
fn limit(text: Option<&String>) -> Result<Vec<u8>, Error> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => {
            let bytes = amount(text)?;
            if bytes.is_empty() {
                return Err(Error::InvalidArgument(
                    "ethereum rules: a limit of 0 cannot be set (omit it for no limit)",
                ));
            }
            Ok(bytes)
        }
    }
}

fn shown(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| U256::from_be_slice(bytes).to_string())
}

impl EthereumRulesJson {
    /// The wire form.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed address, selector or amount, or a zero limit.
    pub fn to_proto(&self) -> Result<pb::EthereumRules, Error> {
        Ok(pb::EthereumRules {
            chain_ids: self.chain_ids.clone(),
            destinations: self
                .destinations
                .iter()
                .map(|d| address(d))
                .collect::<Result<_, _>>()?,
            max_value_wei: limit(self.max_value_wei.as_ref())?,
            max_value_per_day_wei: limit(self.max_value_per_day_wei.as_ref())?,
            allow_contract_creation: self.allow_contract_creation,
            contract_calls: self
                .contract_calls
                .iter()
                .map(|c| {
                    let selector = hex::decode(c.selector.trim_start_matches("0x"))
                        .ok()
                        .filter(|s| s.len() == 4)
                        .ok_or(Error::InvalidArgument(
                            "ethereum rules: selector is not 4 bytes",
                        ))?;
                    Ok(pb::ContractCall {
                        contract: address(&c.contract)?,
                        selector,
                    })
                })
                .collect::<Result<_, Error>>()?,
            tokens: self
                .tokens
                .iter()
                .map(|t| {
                    Ok(pb::TokenRule {
                        contract: address(&t.contract)?,
                        max_amount: limit(t.max_amount.as_ref())?,
                        max_amount_per_day: limit(t.max_amount_per_day.as_ref())?,
                        max_approval: limit(t.max_approval.as_ref())?,
                    })
                })
                .collect::<Result<_, Error>>()?,
            tiers: self
                .tiers
                .iter()
                .map(|t| {
                    Ok(pb::ApprovalTier {
                        above_wei: amount(&t.above_wei)?,
                        threshold: t.threshold,
                    })
                })
                .collect::<Result<_, Error>>()?,
            allow_personal_sign: self.allow_personal_sign,
            typed_data_domains: self
                .typed_data_domains
                .iter()
                .map(|d| {
                    Ok(pb::TypedDataDomain {
                        name: d.name.clone().unwrap_or_default(),
                        chain_id: d.chain_id.unwrap_or_default(),
                        verifying_contract: match &d.verifying_contract {
                            Some(v) => address(v)?,
                            None => Vec::new(),
                        },
                    })
                })
                .collect::<Result<_, Error>>()?,
            allow_blind_signing: self.allow_blind_signing,
        })
    }
}

impl From<&pb::EthereumRules> for EthereumRulesJson {
    fn from(rules: &pb::EthereumRules) -> Self {
        Self {
            chain_ids: rules.chain_ids.clone(),
            destinations: rules.destinations.iter().map(|d| hex0x(d)).collect(),
            max_value_wei: shown(&rules.max_value_wei),
            max_value_per_day_wei: shown(&rules.max_value_per_day_wei),
            allow_contract_creation: rules.allow_contract_creation,
            contract_calls: rules
                .contract_calls
                .iter()
                .map(|c| ContractCallJson {
                    contract: hex0x(&c.contract),
                    selector: hex0x(&c.selector),
                })
                .collect(),
            tokens: rules
                .tokens
                .iter()
                .map(|t| TokenJson {
                    contract: hex0x(&t.contract),
                    max_amount: shown(&t.max_amount),
                    max_amount_per_day: shown(&t.max_amount_per_day),
                    max_approval: shown(&t.max_approval),
                })
                .collect(),
            tiers: rules
                .tiers
                .iter()
                .map(|t| TierJson {
                    above_wei: shown(&t.above_wei).unwrap_or_else(|| "0".into()),
                    threshold: t.threshold,
                })
                .collect(),
            allow_personal_sign: rules.allow_personal_sign,
            typed_data_domains: rules
                .typed_data_domains
                .iter()
                .map(|d| DomainJson {
                    name: (!d.name.is_empty()).then(|| d.name.clone()),
                    chain_id: (d.chain_id != 0).then_some(d.chain_id),
                    verifying_contract: (!d.verifying_contract.is_empty())
                        .then(|| hex0x(&d.verifying_contract)),
                })
                .collect(),
            allow_blind_signing: rules.allow_blind_signing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_zero_limits_are_refused() {
        let json = serde_json::json!({
            "chain_ids": [1],
            "destinations": ["0xb0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"],
            "max_value_wei": "1000000000000000000",
            "tokens": [{"contract": "0x7070707070707070707070707070707070707070", "max_amount": "0x3e8"}],
            "tiers": [{"above_wei": "0", "threshold": 2}],
            "contract_calls": [{"contract": "0xdededededededededededededededededededede", "selector": "0x12345678"}],
            "typed_data_domains": [{"name": "Permit2", "chain_id": 1}]
        });
        let rules: EthereumRulesJson = serde_json::from_value(json).unwrap();
        let wire = rules.to_proto().unwrap();
        assert_eq!(
            wire.max_value_wei,
            U256::from(10u64.pow(18)).to_be_bytes_trimmed_vec()
        );
        assert_eq!(wire.tokens[0].max_amount, vec![0x03, 0xe8]);
        assert!(wire.tiers[0].above_wei.is_empty());
        assert_eq!(EthereumRulesJson::from(&wire).to_proto().unwrap(), wire);
        let zero = EthereumRulesJson {
            max_value_wei: Some("0".into()),
            ..rules.clone()
        };
        assert!(zero.to_proto().is_err());
        assert!(serde_json::from_str::<EthereumRulesJson>(r#"{"chain_id": [1]}"#).is_err());
    }
}
