//! An HD root's Bitcoin rules (`pb::BitcoinRules`): validated when a policy is set, kept exactly
//! as given for the policy's encoding, and evaluated on what a PSBT does — where value goes, how
//! much leaves, and the fee. A refusal names the rule ([`Error::Refused`]); the values that broke
//! it go to the enclave's log.

use signer_proto::pb;

use super::ethereum::{Asset, Spend};
use crate::Error;

/// Most destination scripts.
pub const MAX_DESTINATIONS: usize = 1024;
/// Longest destination script (the standard ones are at most 34 bytes; bare multisig and
/// data carriers are longer, and 100 covers them without inviting megabyte policies).
pub const MAX_SCRIPT: usize = 100;
/// The most satoshis there can ever be (21 million bitcoin).
pub const MAX_MONEY: u64 = 21_000_000 * 100_000_000;

/// What a PSBT does, as the enclave computed it from the PSBT's own committed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFacts<'a> {
    /// Scripts paid that are not this root's change, with their amounts.
    pub payments: Vec<(&'a [u8], u64)>,
    /// Inputs' amounts less outputs' amounts.
    pub fee: u64,
    /// A lower bound on the signed transaction's virtual size.
    pub vsize: u64,
}

/// Validated Bitcoin rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitcoinRules {
    wire: pb::BitcoinRules,
}

impl BitcoinRules {
    /// Validates the rules.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero limit, a limit above 21 million bitcoin, too many
    /// or oversized destinations, or a repeated one.
    pub fn parse(wire: &pb::BitcoinRules) -> Result<Self, Error> {
        if wire.destinations.len() > MAX_DESTINATIONS {
            return Err(Error::InvalidArgument(
                "bitcoin rules: over 1024 destinations",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for script in &wire.destinations {
            if script.is_empty() || script.len() > MAX_SCRIPT {
                return Err(Error::InvalidArgument(
                    "bitcoin rules: a destination script is empty or over 100 bytes",
                ));
            }
            if !seen.insert(script.as_slice()) {
                return Err(Error::InvalidArgument("bitcoin rules repeat a destination"));
            }
        }
        for limit in [
            wire.max_sat_per_tx,
            wire.max_sat_per_day,
            wire.max_fee_sat,
            wire.max_fee_rate_sat_per_vb,
        ] {
            if limit == 0 || limit > MAX_MONEY {
                return Err(Error::InvalidArgument(
                    "bitcoin rules: every limit is required, at most 21 million bitcoin",
                ));
            }
        }
        Ok(Self { wire: wire.clone() })
    }

    /// The wire form, exactly as validated.
    pub fn to_proto(&self) -> pb::BitcoinRules {
        self.wire.clone()
    }

    /// Whether `Sign` may sign a client-computed digest under this root.
    pub fn allows_blind_signing(&self) -> bool {
        self.wire.allow_blind_signing
    }

    /// Judges a transaction: every payment to an allowed script, the total paid within the
    /// per-transaction limit, the fee within both caps. Returns the daily total to add.
    ///
    /// # Errors
    /// [`Error::Refused`] naming the rule broken.
    pub fn judge(&self, facts: &TxFacts<'_>) -> Result<Spend, Error> {
        let mut paid: u64 = 0;
        for (script, amount) in &facts.payments {
            if !self.wire.destinations.iter().any(|d| d == script) {
                tracing::info!(script = %hex::encode(script), "bitcoin destination not allowed");
                return Err(Error::Refused("destination not allowed"));
            }
            paid = paid.saturating_add(*amount);
        }
        if paid > self.wire.max_sat_per_tx {
            tracing::info!(paid, "bitcoin amount above the per-transaction limit");
            return Err(Error::Refused("value above the per-transaction limit"));
        }
        if facts.fee > self.wire.max_fee_sat {
            tracing::info!(fee = facts.fee, "bitcoin fee above the cap");
            return Err(Error::Refused("fee above the cap"));
        }
        // fee / vsize > cap, without division: fee > cap * vsize.
        let most = u128::from(self.wire.max_fee_rate_sat_per_vb) * u128::from(facts.vsize.max(1));
        if u128::from(facts.fee) > most {
            tracing::info!(
                fee = facts.fee,
                vsize = facts.vsize,
                "bitcoin fee rate above the cap"
            );
            return Err(Error::Refused("fee rate above the cap"));
        }
        Ok(Spend {
            asset: Asset::Satoshi,
            amount: alloy_primitives::U256::from(paid),
            daily_limit: alloy_primitives::U256::from(self.wire.max_sat_per_day),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> BitcoinRules {
        BitcoinRules::parse(&pb::BitcoinRules {
            destinations: vec![vec![0x00, 0x14, 1], vec![0x51, 0x20, 2]],
            max_sat_per_tx: 100_000,
            max_sat_per_day: 150_000,
            max_fee_sat: 5_000,
            max_fee_rate_sat_per_vb: 20,
            allow_blind_signing: false,
        })
        .unwrap()
    }

    fn refusal(result: Result<Spend, Error>) -> &'static str {
        match result {
            Err(Error::Refused(rule)) => rule,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_rule_refuses_what_breaks_it_and_passes_its_neighbour() {
        let rules = rules();
        let ok = TxFacts {
            payments: vec![(&[0x00, 0x14, 1][..], 60_000), (&[0x51, 0x20, 2], 40_000)],
            fee: 2_000,
            vsize: 100,
        };
        let spend = rules.judge(&ok).unwrap();
        assert_eq!(spend.amount, alloy_primitives::U256::from(100_000));
        assert_eq!(spend.asset, Asset::Satoshi);
        let mut off_list = ok.clone();
        off_list.payments[1].0 = &[0x51, 0x20, 3];
        assert_eq!(refusal(rules.judge(&off_list)), "destination not allowed");
        let mut over = ok.clone();
        over.payments[1].1 = 40_001;
        assert_eq!(
            refusal(rules.judge(&over)),
            "value above the per-transaction limit"
        );
        let mut fee = ok.clone();
        fee.fee = 5_001;
        fee.vsize = 1_000;
        assert_eq!(refusal(rules.judge(&fee)), "fee above the cap");
        let mut rate = ok.clone();
        rate.fee = 2_001;
        assert_eq!(refusal(rules.judge(&rate)), "fee rate above the cap");
        // Change only (no payment): fine, and spends nothing.
        let consolidation = TxFacts {
            payments: vec![],
            fee: 100,
            vsize: 100,
        };
        assert_eq!(
            rules.judge(&consolidation).unwrap().amount,
            alloy_primitives::U256::ZERO
        );
    }

    #[test]
    fn malformed_rules_are_refused() {
        let good = rules().to_proto();
        let bad = [
            pb::BitcoinRules {
                max_fee_sat: 0,
                ..good.clone()
            },
            pb::BitcoinRules {
                max_sat_per_day: MAX_MONEY + 1,
                ..good.clone()
            },
            pb::BitcoinRules {
                destinations: vec![vec![1; 101]],
                ..good.clone()
            },
            pb::BitcoinRules {
                destinations: vec![vec![]],
                ..good.clone()
            },
            pb::BitcoinRules {
                destinations: vec![vec![1], vec![1]],
                ..good.clone()
            },
            pb::BitcoinRules {
                destinations: vec![vec![1]; MAX_DESTINATIONS + 1],
                ..good
            },
        ];
        for rules in bad {
            assert!(BitcoinRules::parse(&rules).is_err(), "{rules:?}");
        }
    }
}
