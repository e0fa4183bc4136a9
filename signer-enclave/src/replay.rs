//! Replay protection: a body is accepted only inside a time window around the enclave's clock,
//! and each nonce only once while its body could still be accepted. Memory is bounded: when the
//! cache is full of live nonces, new requests are refused rather than old nonces forgotten.
//!
//! Clock drift: the enclave's clock comes from the Nitro hypervisor and drifts (seconds per week
//! have been reported); the host cannot set it. The window is symmetric, `now ± window`, so a
//! client whose clock differs from the enclave's by `d` keeps working while `d` plus its
//! request's transit time stays under the window. The default window (120 s) absorbs weeks of
//! drift; the enclave reports its clock in `Status.clock_ms` so operators can watch the offset
//! against the parent's NTP-synced clock, and clients may read it from an attestation document.
//! A nonce is remembered until its body's timestamp leaves the window, so no replay is possible
//! however the clocks drift.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::Error;

/// Default half-width of the window.
pub const DEFAULT_WINDOW_MS: u64 = 120_000;
/// Default number of live nonces remembered (about 64 MiB at most).
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Milliseconds since the Unix epoch by the enclave's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The window and the nonces seen inside it.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    nonces: HashSet<[u8; 16]>,
    /// Nonces by the time (ms) after which their body is outside the window.
    expiry: BTreeMap<u64, Vec<[u8; 16]>>,
}

impl ReplayGuard {
    /// A guard accepting bodies within `window_ms` of the clock, remembering up to `capacity`
    /// nonces.
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Self {
            window_ms,
            capacity,
            seen: Mutex::default(),
        }
    }

    /// The window's half-width in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Refuses a body whose timestamp is outside `now ± window`.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`].
    pub fn check_time(&self, timestamp_ms: u64, now: u64) -> Result<(), Error> {
        if timestamp_ms.abs_diff(now) > self.window_ms {
            return Err(Error::Unauthenticated(
                "timestamp outside the replay window",
            ));
        }
        Ok(())
    }

    /// Records `nonce` for a body stamped at `timestamp_ms` (already inside the window), or
    /// refuses it if it was seen.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a replay; [`Error::ReplayCacheFull`] when full.
    pub fn admit(&self, timestamp_ms: u64, nonce: &[u8], now: u64) -> Result<(), Error> {
        self.check_time(timestamp_ms, now)?;
        // Fixed-size keys: nonces are 16 to 32 client-chosen bytes inside stamped bodies.
        let digest = Sha256::digest(nonce);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.expire(now);
        if seen.nonces.contains(&key) {
            return Err(Error::Unauthenticated("nonce replayed"));
        }
        if seen.nonces.len() >= self.capacity {
            return Err(Error::ReplayCacheFull);
        }
        seen.nonces.insert(key);
        let expires = timestamp_ms.saturating_add(self.window_ms);
        seen.expiry.entry(expires).or_default().push(key);
        Ok(())
    }

    /// Live nonces remembered.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .nonces
            .len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Seen {
    fn expire(&mut self, now: u64) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for key in entry.remove() {
                self.nonces.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn window_is_symmetric() {
        let guard = ReplayGuard::new(1_000, 10);
        assert!(guard.check_time(NOW - 1_000, NOW).is_ok());
        assert!(guard.check_time(NOW + 1_000, NOW).is_ok());
        assert!(guard.check_time(NOW - 1_001, NOW).is_err());
        assert!(guard.check_time(NOW + 1_001, NOW).is_err());
        assert!(guard.check_time(0, NOW).is_err());
    }

    #[test]
    fn a_nonce_is_accepted_once_until_its_body_expires() {
        let guard = ReplayGuard::new(1_000, 10);
        guard.admit(NOW, &[1; 16], NOW).unwrap();
        assert!(matches!(
            guard.admit(NOW, &[1; 16], NOW + 500),
            Err(Error::Unauthenticated("nonce replayed"))
        ));
        // Same nonce under a new timestamp is still a replay while the first is remembered.
        assert!(guard.admit(NOW + 900, &[1; 16], NOW + 900).is_err());
        guard.admit(NOW, &[2; 16], NOW).unwrap();
        assert_eq!(guard.len(), 2);
        // Once the first body is outside the window its nonce is forgotten, and that body
        // itself can no longer be replayed: the timestamp check refuses it.
        assert!(guard.admit(NOW, &[1; 16], NOW + 1_001).is_err());
        guard.admit(NOW + 1_001, &[3; 16], NOW + 1_001).unwrap();
        assert_eq!(guard.len(), 1, "expired nonces are dropped");
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let guard = ReplayGuard::new(1_000, 2);
        guard.admit(NOW, &[1; 16], NOW).unwrap();
        guard.admit(NOW, &[2; 16], NOW).unwrap();
        assert!(matches!(
            guard.admit(NOW, &[3; 16], NOW),
            Err(Error::ReplayCacheFull)
        ));
        assert!(guard.admit(NOW, &[1; 16], NOW).is_err(), "still remembered");
        guard.admit(NOW + 1_001, &[3; 16], NOW + 1_001).unwrap();
    }
}
