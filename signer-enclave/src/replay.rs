//! Replay protection. A body is accepted only while its timestamp is inside the enclave's time
//! rules ([`TimeRules`]): not older than the replay window, not further in the future than a
//! small skew, and not older than this boot (beyond a small skew), so a restart does not reopen
//! the bodies of the last window. Within those rules each nonce is accepted once
//! ([`ReplayGuard`]).
//!
//! A nonce is first *reserved*, when the request is authorised, and *committed* only when the
//! operation is certain to run; a reservation dropped uncommitted is released, so a request
//! refused for a retryable reason (enclave still loading, rate limit, KMS down) can be sent again
//! unchanged. Memory is bounded twice: by the cache's capacity, and by a quota per API key (the
//! first counted member of the quorum that authorised the request), so one client cannot fill
//! the cache for everyone. A full cache refuses; it never forgets a live nonce.
//!
//! Clock drift: the enclave's clock comes from the Nitro hypervisor and drifts (seconds per week
//! have been reported); the host cannot set it. `Status.clock_ms` and every attestation document
//! carry the enclave's clock, so clients can stamp by it (the SDK does) and operators can alarm
//! on drift.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::stamp::ApiKeyId;

/// Default replay window: bodies older than this are refused. With the SDK dating bodies by the
/// enclave's clock, drift does not eat into it; it bounds how long a nonce must be remembered.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// Default future skew: bodies dated further ahead than this are refused.
pub const DEFAULT_FUTURE_SKEW_MS: u64 = 10_000;
/// Default boot skew: bodies dated earlier than this before the boot are refused.
pub const DEFAULT_BOOT_SKEW_MS: u64 = 5_000;
/// Default number of live nonces remembered: at most window + future skew (70 s) of requests,
/// about 28,000 a second in all; about 93 bytes each (`bench --bin nonces`), ≈ 186 MiB full.
pub const DEFAULT_CAPACITY: usize = 2_000_000;
/// Default number of live nonces one API key may hold: about 14,000 requests a second, each
/// remembered for up to 70 s.
pub const DEFAULT_QUOTA_PER_KEY: usize = 1_000_000;

/// Milliseconds since the Unix epoch by the enclave's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which body timestamps the enclave accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRules {
    /// Oldest accepted body, relative to the enclave's clock.
    pub window_ms: u64,
    /// Furthest-ahead accepted body, relative to the enclave's clock.
    pub future_skew_ms: u64,
    /// Oldest accepted body relative to the boot.
    pub boot_skew_ms: u64,
    /// When this boot began.
    pub boot_ms: u64,
}

impl TimeRules {
    /// Refuses a body whose timestamp breaks a rule.
    ///
    /// # Errors
    /// [`Error::Stale`] naming the rule.
    pub fn check(&self, timestamp_ms: u64, now: u64) -> Result<(), Error> {
        if timestamp_ms.saturating_add(self.window_ms) < now {
            return Err(Error::Stale("body older than the replay window"));
        }
        if timestamp_ms > now.saturating_add(self.future_skew_ms) {
            return Err(Error::Stale("body dated beyond the future skew"));
        }
        if timestamp_ms.saturating_add(self.boot_skew_ms) < self.boot_ms {
            return Err(Error::Stale("body predates this enclave boot"));
        }
        Ok(())
    }

    /// When a body stamped at `timestamp_ms` leaves the window: its nonce can be forgotten then.
    fn expiry(&self, timestamp_ms: u64) -> u64 {
        timestamp_ms.saturating_add(self.window_ms)
    }
}

/// The time rules and the nonces seen under them.
#[derive(Debug)]
pub struct ReplayGuard {
    rules: TimeRules,
    capacity: usize,
    quota: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Entry {
    owner: u64,
    expires: u64,
}

#[derive(Debug, Default)]
struct Seen {
    nonces: HashMap<[u8; 16], Entry>,
    /// Nonces by the time (ms) after which their body is outside the window.
    expiry: BTreeMap<u64, Vec<[u8; 16]>>,
    /// Live nonces per owner (a fingerprint of the API key charged).
    per_owner: HashMap<u64, usize>,
}

/// A nonce held for a request that is authorised but not yet carried out. Commit it when the
/// operation is certain to run; dropping it uncommitted releases the nonce.
#[must_use = "a reservation dropped uncommitted releases its nonce"]
#[derive(Debug)]
pub struct Reservation<'g> {
    guard: &'g ReplayGuard,
    key: [u8; 16],
    committed: bool,
}

impl Reservation<'_> {
    /// Spends the nonce for good.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.guard.lock().release(&self.key);
        }
    }
}

impl ReplayGuard {
    /// A guard under `rules` remembering up to `capacity` nonces, at most `quota` per API key.
    pub fn new(rules: TimeRules, capacity: usize, quota: usize) -> Self {
        Self {
            rules,
            capacity,
            quota,
            seen: Mutex::default(),
        }
    }

    /// The time rules.
    pub fn rules(&self) -> &TimeRules {
        &self.rules
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `nonce` for a body stamped at `timestamp_ms`, charged to `owner`.
    ///
    /// # Errors
    /// [`Error::Stale`] outside the time rules; [`Error::Unauthenticated`] for a nonce already
    /// seen; [`Error::ReplayCacheFull`] when the cache or the owner's quota is full.
    pub fn reserve(
        &self,
        timestamp_ms: u64,
        nonce: &[u8],
        owner: &ApiKeyId,
        now: u64,
    ) -> Result<Reservation<'_>, Error> {
        self.rules.check(timestamp_ms, now)?;
        // Fixed-size keys: nonces are 16 to 32 client-chosen bytes inside stamped bodies.
        let key = fingerprint::<16>(nonce);
        let owner = u64::from_be_bytes(fingerprint::<8>(owner.as_bytes()));
        let mut seen = self.lock();
        seen.expire(now);
        if seen.nonces.contains_key(&key) {
            return Err(Error::Unauthenticated("nonce replayed"));
        }
        if seen.nonces.len() >= self.capacity {
            return Err(Error::ReplayCacheFull("nonce cache full"));
        }
        let charged = seen.per_owner.entry(owner).or_default();
        if *charged >= self.quota {
            return Err(Error::ReplayCacheFull("API key's nonce quota full"));
        }
        *charged += 1;
        let expires = self.rules.expiry(timestamp_ms);
        seen.nonces.insert(key, Entry { owner, expires });
        seen.expiry.entry(expires).or_default().push(key);
        Ok(Reservation {
            guard: self,
            key,
            committed: false,
        })
    }

    /// Live nonces remembered (reserved or committed).
    pub fn len(&self) -> usize {
        self.lock().nonces.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn fingerprint<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}

impl Seen {
    fn forget(&mut self, key: &[u8; 16]) -> Option<Entry> {
        let entry = self.nonces.remove(key)?;
        if let Some(count) = self.per_owner.get_mut(&entry.owner) {
            *count -= 1;
            if *count == 0 {
                self.per_owner.remove(&entry.owner);
            }
        }
        Some(entry)
    }

    fn release(&mut self, key: &[u8; 16]) {
        // Its expiry slot stays; `expire` skips keys no longer held under that expiry.
        self.forget(key);
    }

    fn expire(&mut self, now: u64) {
        while let Some(slot) = self.expiry.first_entry() {
            if *slot.key() >= now {
                break;
            }
            let expires = *slot.key();
            for key in slot.remove() {
                if self.nonces.get(&key).is_some_and(|e| e.expires == expires) {
                    self.forget(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
