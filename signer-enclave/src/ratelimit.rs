//! Per-key rate limits from policies: a token bucket per key, held only for keys whose policy
//! sets a limit. Buckets live in RAM and start full when the enclave starts.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::Error;
use crate::ids::KeyId;

#[derive(Debug)]
struct Bucket {
    /// Tokens, in units of 1/60,000 of a signature: a limit of N per minute refills exactly N
    /// units per millisecond, so no time is lost to rounding.
    units: u64,
    updated_ms: u64,
}

/// Token buckets by key.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<KeyId, Bucket>>,
}

impl RateLimiter {
    /// Takes `count` signatures from `key`'s bucket of `per_minute` (0: unlimited), all or none.
    ///
    /// # Errors
    /// [`Error::RateLimited`] when the bucket holds fewer (a batch larger than the limit never
    /// passes).
    pub(crate) fn take(
        &self,
        key: &KeyId,
        per_minute: u32,
        count: u32,
        now_ms: u64,
    ) -> Result<(), Error> {
        if per_minute == 0 {
            return Ok(());
        }
        const ONE: u64 = 60_000;
        let capacity = u64::from(per_minute) * ONE;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(*key).or_insert(Bucket {
            units: capacity,
            updated_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.updated_ms);
        let refill = elapsed.saturating_mul(u64::from(per_minute));
        bucket.units = bucket.units.saturating_add(refill).min(capacity);
        bucket.updated_ms = now_ms.max(bucket.updated_ms);
        let wanted = u64::from(count) * ONE;
        if bucket.units < wanted {
            return Err(Error::RateLimited);
        }
        bucket.units -= wanted;
        Ok(())
    }

    /// Forgets a key's bucket (its policy changed).
    pub(crate) fn reset(&self, key: &KeyId) {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refills_at_the_policy_rate() {
        let limiter = RateLimiter::default();
        let key = KeyId::random().unwrap();
        for _ in 0..3 {
            limiter.take(&key, 3, 1, 0).unwrap();
        }
        assert!(matches!(
            limiter.take(&key, 3, 1, 0),
            Err(Error::RateLimited)
        ));
        // 3 per minute: one token every 20 s.
        assert!(limiter.take(&key, 3, 1, 19_999).is_err());
        limiter.take(&key, 3, 1, 20_000).unwrap();
        assert!(limiter.take(&key, 3, 1, 20_001).is_err());
        limiter.take(&key, 0, 1, 20_001).unwrap();
        let other = KeyId::random().unwrap();
        limiter.take(&other, 3, 1, 20_001).unwrap();
    }

    #[test]
    fn a_batch_takes_all_its_tokens_or_none() {
        let limiter = RateLimiter::default();
        let key = KeyId::random().unwrap();
        assert!(matches!(
            limiter.take(&key, 3, 4, 0),
            Err(Error::RateLimited)
        ));
        limiter.take(&key, 3, 2, 0).unwrap();
        assert!(matches!(
            limiter.take(&key, 3, 2, 0),
            Err(Error::RateLimited)
        ));
        limiter.take(&key, 3, 1, 0).unwrap();
        assert!(limiter.take(&key, 3, 1, 0).is_err());
    }
}
