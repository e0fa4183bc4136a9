//! Key policies and keyring admin sets: parsed, validated, and evaluated against the API keys
//! that stamped a request. Formats and hashes in `SPEC.md`.

use prost::Message as _;
use signer_proto::pb;

use crate::Error;
use crate::stamp::{ApiKeyId, Approvals, Verifier};

pub mod bitcoin;
pub mod ethereum;
pub mod hd;

pub use bitcoin::BitcoinRules;
pub use ethereum::EthereumRules;
pub use hd::HdRules;

/// Most members of one quorum (the most stamps a request can carry).
pub const MAX_MEMBERS: usize = signer_proto::MAX_STAMPS;

/// M of N distinct API keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    members: Vec<ApiKeyId>,
    /// `members[i]`'s key, parsed once.
    verifiers: Vec<Verifier>,
    threshold: usize,
}

impl Quorum {
    /// Parses a member list and threshold. An empty list with threshold 0 is the empty quorum,
    /// which nothing satisfies.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for malformed or repeated keys, more than [`MAX_MEMBERS`], or a
    /// threshold outside 1..=N.
    pub fn parse(
        members: &[pb::ApiKey],
        threshold: u32,
        what: &'static str,
    ) -> Result<Self, Error> {
        if members.len() > MAX_MEMBERS {
            return Err(Error::InvalidArgument(what));
        }
        let mut parsed = Vec::with_capacity(members.len());
        let mut verifiers = Vec::with_capacity(members.len());
        for key in members {
            let (id, verifier) = ApiKeyId::parse(key.scheme, &key.public_key)?;
            if parsed.contains(&id) {
                return Err(Error::InvalidArgument(what));
            }
            parsed.push(id);
            verifiers.push(verifier);
        }
        let threshold = usize::try_from(threshold).map_err(|_| Error::InvalidArgument(what))?;
        let valid = if parsed.is_empty() {
            threshold == 0
        } else {
            (1..=parsed.len()).contains(&threshold)
        };
        if !valid {
            return Err(Error::InvalidArgument(what));
        }
        Ok(Self {
            members: parsed,
            verifiers,
            threshold,
        })
    }

    /// Whether at least `threshold` distinct members stamped. Stamps by non-members do not count
    /// (and do not hurt). The empty quorum is never satisfied.
    pub fn satisfied_by(&self, approvals: &Approvals) -> bool {
        self.threshold > 0 && self.approving(approvals).count() >= self.threshold
    }

    /// Whether `key` is a member.
    pub fn has_member(&self, key: &ApiKeyId) -> bool {
        self.members.contains(key)
    }

    /// A member's parsed key, for verifying its stamp; `None` for a non-member.
    pub fn verifier(&self, key: &ApiKeyId) -> Option<&Verifier> {
        let at = self.members.iter().position(|member| member == key)?;
        self.verifiers.get(at)
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[ApiKeyId] {
        &self.members
    }

    /// The same members with another threshold, if it is in 1..=N.
    pub fn with_threshold(&self, threshold: u32) -> Option<Self> {
        let threshold = usize::try_from(threshold).ok()?;
        (1..=self.members.len()).contains(&threshold).then(|| Self {
            members: self.members.clone(),
            verifiers: self.verifiers.clone(),
            threshold,
        })
    }

    /// Distinct members needed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The quorum of every member of `self` (N of N): for proofs of possession.
    pub fn everyone(&self) -> Self {
        Self {
            members: self.members.clone(),
            verifiers: self.verifiers.clone(),
            threshold: self.members.len(),
        }
    }

    /// The members that stamped, in member order.
    pub fn approving<'a>(&'a self, approvals: &'a Approvals) -> impl Iterator<Item = &'a ApiKeyId> {
        self.members.iter().filter(|m| approvals.contains(m))
    }

    /// Canonical members (normalised keys), for re-encoding.
    pub(crate) fn to_proto(&self) -> Vec<pb::ApiKey> {
        self.members.iter().map(|k| k.to_proto()).collect()
    }

    pub(crate) fn threshold_u32(&self) -> u32 {
        u32::try_from(self.threshold).expect("threshold ≤ 16 qed")
    }
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Set by the enclave; grows by one at each change.
    pub version: u64,
    /// Who approves signatures.
    pub approvers: Quorum,
    /// Allowed signature schemes.
    pub schemes: Vec<pb::SignatureScheme>,
    /// Signatures per minute; 0 for no limit.
    pub max_per_minute: u32,
    /// Who may change the policy; empty for a permanent policy.
    pub admins: Quorum,
    /// Rules on the content of Ethereum signatures, if any.
    pub ethereum: Option<EthereumRules>,
    /// For HD roots (and only for them): where under the root keys may be used.
    pub hd: Option<HdRules>,
    /// For HD roots: rules on Bitcoin transactions, if any.
    pub bitcoin: Option<BitcoinRules>,
}

impl KeyPolicy {
    /// Validates a policy as sent by a client or stored in a record.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first problem.
    pub fn parse(policy: &pb::Policy) -> Result<Self, Error> {
        let approvers = Quorum::parse(&policy.approvers, policy.threshold, "policy approvers")?;
        if approvers.members.is_empty() {
            return Err(Error::InvalidArgument("policy needs at least one approver"));
        }
        let mut schemes = Vec::new();
        for &raw in &policy.schemes {
            match pb::SignatureScheme::try_from(raw) {
                Ok(pb::SignatureScheme::Unspecified) | Err(_) => {
                    return Err(Error::InvalidArgument("policy names an unknown scheme"));
                }
                Ok(scheme) if schemes.contains(&scheme) => {
                    return Err(Error::InvalidArgument("policy repeats a scheme"));
                }
                Ok(scheme) => schemes.push(scheme),
            }
        }
        if schemes.is_empty() {
            return Err(Error::InvalidArgument("policy allows no scheme"));
        }
        let ethereum = match &policy.ethereum {
            Some(rules) => Some(EthereumRules::parse(rules, &approvers)?),
            None => None,
        };
        if ethereum.is_some() && !schemes.contains(&pb::SignatureScheme::EcdsaSecp256k1) {
            return Err(Error::InvalidArgument(
                "ethereum rules need the ECDSA scheme",
            ));
        }
        let hd = policy.hd.as_ref().map(HdRules::parse).transpose()?;
        let bitcoin = policy
            .bitcoin
            .as_ref()
            .map(BitcoinRules::parse)
            .transpose()?;
        if bitcoin.is_some() && hd.is_none() {
            return Err(Error::InvalidArgument("bitcoin rules are for HD roots"));
        }
        Ok(Self {
            ethereum,
            hd,
            bitcoin,
            version: policy.version,
            approvers,
            schemes,
            max_per_minute: policy.max_signatures_per_minute,
            admins: Quorum::parse(&policy.admins, policy.admin_threshold, "policy admins")?,
        })
    }

    /// Decodes and validates stored policy bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if they do not decode or validate.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let policy =
            pb::Policy::decode(bytes).map_err(|_| Error::InvalidArgument("malformed policy"))?;
        Self::parse(&policy)
    }

    /// The policy's canonical encoding: normalised keys, in order, with `version`.
    pub fn encode(&self) -> Vec<u8> {
        pb::Policy {
            version: self.version,
            approvers: self.approvers.to_proto(),
            threshold: self.approvers.threshold_u32(),
            schemes: self.schemes.iter().map(|&s| s.into()).collect(),
            max_signatures_per_minute: self.max_per_minute,
            admins: self.admins.to_proto(),
            admin_threshold: self.admins.threshold_u32(),
            ethereum: self.ethereum.as_ref().map(EthereumRules::to_proto),
            hd: self.hd.as_ref().map(HdRules::to_proto),
            bitcoin: self.bitcoin.as_ref().map(BitcoinRules::to_proto),
        }
        .encode_to_vec()
    }

    /// Whether the policy lets `scheme` sign.
    pub fn allows(&self, scheme: pb::SignatureScheme) -> bool {
        self.schemes.contains(&scheme)
    }

    /// Whether `Sign` may produce `scheme` over a client-computed digest: the scheme is
    /// allowed and, for ECDSA, no Ethereum rules forbid blind signing.
    ///
    /// # Errors
    /// [`Error::Denied`] for a scheme the policy does not allow; [`Error::Refused`] for blind
    /// ECDSA under Ethereum rules.
    pub fn check_blind(&self, scheme: pb::SignatureScheme) -> Result<(), Error> {
        if !self.allows(scheme) {
            return Err(Error::Denied("scheme not allowed by the key's policy"));
        }
        let ethereum_closed = self.ethereum.as_ref().is_some_and(|rules| {
            scheme == pb::SignatureScheme::EcdsaSecp256k1 && !rules.allows_blind_signing()
        });
        let bitcoin_closed = self
            .bitcoin
            .as_ref()
            .is_some_and(|rules| !rules.allows_blind_signing());
        if ethereum_closed || bitcoin_closed {
            return Err(Error::Refused("blind signing not allowed"));
        }
        Ok(())
    }
}

/// A keyring's admin set: parsed, with its canonical encoding and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringAdmins {
    /// The quorum that authorises key creation and import.
    pub quorum: Quorum,
}

impl KeyringAdmins {
    /// Validates an admin set.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty, oversized or malformed set.
    pub fn parse(admins: &pb::KeyringAdmins) -> Result<Self, Error> {
        let quorum = Quorum::parse(&admins.admins, admins.threshold, "keyring admins")?;
        if quorum.members.is_empty() {
            return Err(Error::InvalidArgument("keyring needs at least one admin"));
        }
        Ok(Self { quorum })
    }

    /// Decodes and validates stored admin bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if they do not decode or validate.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let admins = pb::KeyringAdmins::decode(bytes)
            .map_err(|_| Error::InvalidArgument("malformed keyring admins"))?;
        Self::parse(&admins)
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The canonical wire form.
    pub fn to_proto(&self) -> pb::KeyringAdmins {
        pb::KeyringAdmins {
            admins: self.quorum.to_proto(),
            threshold: self.quorum.threshold_u32(),
        }
    }
}

pub use signer_proto::canonical::admins_hash;

#[cfg(test)]
mod tests;
