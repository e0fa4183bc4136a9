//! A key's Ethereum rules (`pb::EthereumRules`): validated when a policy is set, kept exactly as
//! given for the policy's encoding, and evaluated on what a decoded payload does. A refusal
//! names the rule class ([`Error::Refused`]); which value broke it goes to the enclave's log.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, U256};
use signer_proto::pb;

use super::Quorum;
use crate::Error;
use crate::intake::ethereum::{Call, DomainFacts, TxFacts, address};

/// Most chain ids a key may name.
pub const MAX_CHAINS: usize = 64;
/// Most destinations, and most `(contract, selector)` pairs.
pub const MAX_ADDRESSES: usize = 1024;
/// Most ERC-20 tokens.
pub const MAX_TOKENS: usize = 256;
/// Most approval tiers.
pub const MAX_TIERS: usize = 8;
/// Most EIP-712 domains.
pub const MAX_DOMAINS: usize = 64;

/// What is counted against a rolling daily limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// Ether, in wei.
    Wei,
    /// An ERC-20 token, by contract, in token units.
    Token(Address),
    /// Bitcoin, in satoshis (an HD root's `BitcoinRules`).
    Satoshi,
}

/// An amount to add to a daily total, and the limit that total may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// What is spent.
    pub asset: Asset,
    /// How much.
    pub amount: U256,
    /// The most the key may spend of it in 24 hours.
    pub daily_limit: U256,
}

/// What a transaction that passed the rules still needs.
#[derive(Debug, Default)]
pub struct Verdict<'r> {
    /// A raised approver quorum (an approval tier), if its value reaches one.
    pub tier: Option<&'r Quorum>,
    /// Daily totals it adds to.
    pub spends: Vec<Spend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenLimits {
    max_amount: Option<U256>,
    max_per_day: Option<U256>,
    max_approval: Option<U256>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Domain {
    name: Option<String>,
    chain_id: Option<u64>,
    verifying_contract: Option<Address>,
}

/// Validated Ethereum rules.
#[derive(Debug, Clone, PartialEq)]
pub struct EthereumRules {
    wire: pb::EthereumRules,
    chain_ids: BTreeSet<u64>,
    destinations: BTreeSet<Address>,
    max_value: Option<U256>,
    max_per_day: Option<U256>,
    calls: BTreeSet<(Address, [u8; 4])>,
    tokens: BTreeMap<Address, TokenLimits>,
    /// Ascending by bound, thresholds rising.
    tiers: Vec<(U256, Quorum)>,
    domains: Vec<Domain>,
}

// The wire form holds only integers, bytes and booleans: its equality is total.
impl Eq for EthereumRules {}

/// An unsigned big-endian amount of at most 32 bytes without leading zeros; empty is `None`.
fn amount(bytes: &[u8], what: &'static str) -> Result<Option<U256>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > 32 || bytes[0] == 0 {
        return Err(Error::InvalidArgument(what));
    }
    Ok(Some(U256::from_be_slice(bytes)))
}

fn insert_new<T: Ord>(set: &mut BTreeSet<T>, item: T, what: &'static str) -> Result<(), Error> {
    if set.insert(item) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(what))
    }
}

fn refused(rule: &'static str, detail: impl std::fmt::Display) -> Error {
    tracing::info!(rule, %detail, "ethereum rule refused");
    Error::Refused(rule)
}

impl EthereumRules {
    /// Validates rules under a policy whose approvers are `approvers`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first malformed, repeated or over-limit field.
    pub fn parse(wire: &pb::EthereumRules, approvers: &Quorum) -> Result<Self, Error> {
        let over = |len: usize, max: usize, what| {
            if len > max {
                Err(Error::InvalidArgument(what))
            } else {
                Ok(())
            }
        };
        over(
            wire.chain_ids.len(),
            MAX_CHAINS,
            "ethereum rules: over 64 chain ids",
        )?;
        over(
            wire.destinations.len(),
            MAX_ADDRESSES,
            "ethereum rules: over 1024 destinations",
        )?;
        over(
            wire.contract_calls.len(),
            MAX_ADDRESSES,
            "ethereum rules: over 1024 contract calls",
        )?;
        over(
            wire.tokens.len(),
            MAX_TOKENS,
            "ethereum rules: over 256 tokens",
        )?;
        over(
            wire.tiers.len(),
            MAX_TIERS,
            "ethereum rules: over 8 approval tiers",
        )?;
        over(
            wire.typed_data_domains.len(),
            MAX_DOMAINS,
            "ethereum rules: over 64 domains",
        )?;
        if wire.chain_ids.is_empty() {
            return Err(Error::InvalidArgument("ethereum rules name no chain id"));
        }
        let mut chain_ids = BTreeSet::new();
        for &id in &wire.chain_ids {
            if id == 0 {
                return Err(Error::InvalidArgument("ethereum rules: chain id 0"));
            }
            insert_new(&mut chain_ids, id, "ethereum rules repeat a chain id")?;
        }
        let mut destinations = BTreeSet::new();
        for d in &wire.destinations {
            let d = address(d, "ethereum rules: destination is not 20 bytes")?;
            insert_new(&mut destinations, d, "ethereum rules repeat a destination")?;
        }
        let mut calls = BTreeSet::new();
        for c in &wire.contract_calls {
            let contract = address(&c.contract, "ethereum rules: contract is not 20 bytes")?;
            let selector: [u8; 4] =
                c.selector.as_slice().try_into().map_err(|_| {
                    Error::InvalidArgument("ethereum rules: selector is not 4 bytes")
                })?;
            insert_new(
                &mut calls,
                (contract, selector),
                "ethereum rules repeat a contract call",
            )?;
        }
        let mut tokens = BTreeMap::new();
        for t in &wire.tokens {
            let contract = address(&t.contract, "ethereum rules: token is not 20 bytes")?;
            const BAD: &str = "ethereum rules: malformed token amount";
            let limits = TokenLimits {
                max_amount: amount(&t.max_amount, BAD)?,
                max_per_day: amount(&t.max_amount_per_day, BAD)?,
                max_approval: amount(&t.max_approval, BAD)?,
            };
            if tokens.insert(contract, limits).is_some() {
                return Err(Error::InvalidArgument("ethereum rules repeat a token"));
            }
        }
        let mut tiers: Vec<(U256, Quorum)> = Vec::with_capacity(wire.tiers.len());
        for t in &wire.tiers {
            const BAD: &str = "ethereum rules: tier bound is malformed";
            let above = amount(&t.above_wei, BAD)?.unwrap_or(U256::ZERO);
            let quorum = approvers
                .with_threshold(t.threshold)
                .ok_or(Error::InvalidArgument(
                    "ethereum rules: tier threshold outside the approvers' count",
                ))?;
            tiers.push((above, quorum));
        }
        tiers.sort_by_key(|(above, _)| *above);
        let rising = tiers
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1.threshold() < w[1].1.threshold())
            && tiers
                .first()
                .is_none_or(|(_, q)| q.threshold() > approvers.threshold());
        if !rising {
            return Err(Error::InvalidArgument(
                "ethereum rules: tiers must have distinct bounds and rising thresholds above the base",
            ));
        }
        let mut domains = Vec::with_capacity(wire.typed_data_domains.len());
        for d in &wire.typed_data_domains {
            let domain = Domain {
                name: (!d.name.is_empty()).then(|| d.name.clone()),
                chain_id: (d.chain_id != 0).then_some(d.chain_id),
                verifying_contract: if d.verifying_contract.is_empty() {
                    None
                } else {
                    Some(address(
                        &d.verifying_contract,
                        "ethereum rules: verifying contract is not 20 bytes",
                    )?)
                },
            };
            if domains.contains(&domain) {
                return Err(Error::InvalidArgument("ethereum rules repeat a domain"));
            }
            domains.push(domain);
        }
        Ok(Self {
            chain_ids,
            destinations,
            max_value: amount(&wire.max_value_wei, "ethereum rules: malformed max value")?,
            max_per_day: amount(
                &wire.max_value_per_day_wei,
                "ethereum rules: malformed daily limit",
            )?,
            calls,
            tokens,
            tiers,
            domains,
            wire: wire.clone(),
        })
    }

    /// The rules as given, for the policy's encoding.
    pub fn to_proto(&self) -> pb::EthereumRules {
        self.wire.clone()
    }

    /// Whether `Sign` with ECDSA over a client-computed digest is still allowed.
    pub fn allows_blind_signing(&self) -> bool {
        self.wire.allow_blind_signing
    }

    fn destination(&self, to: &Address) -> Result<(), Error> {
        if self.destinations.is_empty() || self.destinations.contains(to) {
            Ok(())
        } else {
            Err(refused("destination not allowed", to))
        }
    }

    /// Judges a transaction.
    ///
    /// # Errors
    /// [`Error::Refused`] naming the first rule it breaks.
    pub(crate) fn transaction(&self, tx: &TxFacts) -> Result<Verdict<'_>, Error> {
        if !self.chain_ids.contains(&tx.chain_id) {
            return Err(refused("chain not allowed", tx.chain_id));
        }
        if self.max_value.is_some_and(|max| tx.value > max) {
            return Err(refused("value above limit", tx.value));
        }
        let mut spends = Vec::new();
        if let Some(daily_limit) = self.max_per_day
            && !tx.value.is_zero()
        {
            spends.push(Spend {
                asset: Asset::Wei,
                amount: tx.value,
                daily_limit,
            });
        }
        match tx.to {
            None if !self.wire.allow_contract_creation => {
                return Err(refused("contract creation not allowed", "create"));
            }
            None => {}
            Some(to) => {
                if !tx.value.is_zero() || tx.call == Call::None {
                    self.destination(&to)?;
                }
                self.call(&to, &tx.call, &mut spends)?;
            }
        }
        let tier = self
            .tiers
            .iter()
            .rev()
            .find(|(above, _)| tx.value > *above)
            .map(|(_, quorum)| quorum);
        Ok(Verdict { tier, spends })
    }

    fn call(&self, to: &Address, call: &Call, spends: &mut Vec<Spend>) -> Result<(), Error> {
        let token = self.tokens.get(to);
        let selector = match (call, token) {
            (Call::None, _) => return Ok(()),
            (
                Call::TokenTransfer {
                    recipient, amount, ..
                },
                Some(limits),
            ) => {
                self.destination(recipient)?;
                if limits.max_amount.is_some_and(|max| *amount > max) {
                    return Err(refused("token amount above limit", amount));
                }
                if let Some(daily_limit) = limits.max_per_day
                    && !amount.is_zero()
                {
                    spends.push(Spend {
                        asset: Asset::Token(*to),
                        amount: *amount,
                        daily_limit,
                    });
                }
                return Ok(());
            }
            (
                Call::TokenApprove {
                    spender, amount, ..
                },
                Some(limits),
            ) => {
                self.destination(spender)?;
                if limits.max_approval.is_some_and(|max| *amount > max) {
                    return Err(refused("approval above limit", amount));
                }
                return Ok(());
            }
            (Call::TokenTransfer { selector, .. } | Call::TokenApprove { selector, .. }, None) => {
                Some(*selector)
            }
            (Call::Other(selector), _) => *selector,
        };
        match selector {
            Some(selector) if self.calls.contains(&(*to, selector)) => Ok(()),
            _ => Err(refused("contract call not allowed", to)),
        }
    }

    /// Judges a `personal_sign` message.
    ///
    /// # Errors
    /// [`Error::Refused`] unless the rules allow them.
    pub(crate) fn personal_message(&self) -> Result<(), Error> {
        if self.wire.allow_personal_sign {
            Ok(())
        } else {
            Err(refused("personal_sign not allowed", "message"))
        }
    }

    /// Judges typed data by its domain.
    ///
    /// # Errors
    /// [`Error::Refused`] unless a listed domain matches.
    pub(crate) fn typed_data(&self, domain: &DomainFacts) -> Result<(), Error> {
        let matches = |d: &Domain| {
            d.name
                .as_ref()
                .is_none_or(|n| domain.name.as_ref() == Some(n))
                && d.chain_id
                    .is_none_or(|c| domain.chain_id == Some(U256::from(c)))
                && d.verifying_contract
                    .is_none_or(|v| domain.verifying_contract == Some(v))
        };
        if self.domains.iter().any(matches) {
            Ok(())
        } else {
            Err(refused(
                "typed data domain not allowed",
                format_args!("{:?}", domain.verifying_contract),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
