//! Rolling 24-hour spend totals per key and asset, for the Ethereum and Bitcoin rules' daily
//! limits. Kept in
//! enclave RAM in 15-minute buckets: a spend counts against the limit for between 24 h and
//! 24 h 15 min after it was signed. Totals start at zero when the enclave starts (documented in
//! SPEC.md: a restart forgets them) and survive policy changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use alloy_primitives::U256;

use crate::Error;
use crate::ids::KeyId;
use crate::policy::ethereum::{Asset, Spend};

/// Width of one bucket.
const BUCKET_MS: u64 = 15 * 60 * 1000;
/// Buckets that still count: the current one and the 96 before it.
const BUCKETS: u64 = 24 * 4 + 1;

/// (bucket index, total in it), oldest first.
type Buckets = VecDeque<(u64, U256)>;

/// Spend totals by key and asset.
#[derive(Debug, Default)]
pub(crate) struct SpendLedger {
    totals: Mutex<HashMap<(KeyId, Asset), Buckets>>,
}

fn live(buckets: &mut Buckets, now_bucket: u64) -> U256 {
    while buckets
        .front()
        .is_some_and(|(index, _)| index + BUCKETS <= now_bucket)
    {
        buckets.pop_front();
    }
    buckets
        .iter()
        .fold(U256::ZERO, |sum, (_, amount)| sum.saturating_add(*amount))
}

impl SpendLedger {
    /// Adds every spend to its total if none would pass its daily limit; otherwise adds none.
    ///
    /// # Errors
    /// [`Error::Refused`] ("daily value limit reached" for wei, "daily token limit reached" for a
    /// token) when one would.
    pub(crate) fn spend(&self, key: &KeyId, spends: &[Spend], now_ms: u64) -> Result<(), Error> {
        if spends.is_empty() {
            return Ok(());
        }
        let now_bucket = now_ms / BUCKET_MS;
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        for spend in spends {
            let spent = totals
                .get_mut(&(*key, spend.asset))
                .map_or(U256::ZERO, |b| live(b, now_bucket));
            let within = spent
                .checked_add(spend.amount)
                .is_some_and(|total| total <= spend.daily_limit);
            if !within {
                tracing::info!(%key, asset = ?spend.asset, %spent, "daily limit reached");
                return Err(Error::Refused(match spend.asset {
                    Asset::Wei => "daily value limit reached",
                    Asset::Token(_) => "daily token limit reached",
                    Asset::Satoshi => "daily bitcoin limit reached",
                }));
            }
        }
        for spend in spends {
            let buckets = totals.entry((*key, spend.asset)).or_default();
            match buckets.back_mut() {
                Some((index, total)) if *index == now_bucket => {
                    *total = total.saturating_add(spend.amount);
                }
                _ => buckets.push_back((now_bucket, spend.amount)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn wei(amount: u64, limit: u64) -> Spend {
        Spend {
            asset: Asset::Wei,
            amount: U256::from(amount),
            daily_limit: U256::from(limit),
        }
    }

    #[test]
    fn totals_roll_after_a_day_and_a_refusal_adds_nothing() {
        let ledger = SpendLedger::default();
        let key = KeyId::random().unwrap();
        let t0 = 1_800_000_000_000 / BUCKET_MS * BUCKET_MS;
        ledger.spend(&key, &[wei(60, 100)], t0).unwrap();
        ledger.spend(&key, &[wei(40, 100)], t0 + 1).unwrap();
        assert!(matches!(
            ledger.spend(&key, &[wei(1, 100)], t0 + DAY - 1),
            Err(Error::Refused("daily value limit reached"))
        ));
        // The refused spend of a token beside it is not recorded either.
        let token = Spend {
            asset: Asset::Token([1; 20].into()),
            ..wei(5, 5)
        };
        assert!(ledger.spend(&key, &[token, wei(1, 100)], t0 + 2).is_err());
        ledger.spend(&key, &[token], t0 + 3).unwrap();
        // Counted for at least 24 h, at most 24 h 15 min.
        assert!(
            ledger
                .spend(&key, &[wei(1, 100)], t0 + DAY + BUCKET_MS - 1)
                .is_err()
        );
        ledger
            .spend(&key, &[wei(100, 100)], t0 + DAY + BUCKET_MS)
            .unwrap();
        // Another key has its own totals; an amount that overflows is refused.
        let other = KeyId::random().unwrap();
        let max = Spend {
            amount: U256::MAX,
            daily_limit: U256::MAX,
            ..wei(0, 0)
        };
        ledger.spend(&other, &[max], t0).unwrap();
        assert!(ledger.spend(&other, &[wei(1, u64::MAX)], t0).is_err());
    }
}
