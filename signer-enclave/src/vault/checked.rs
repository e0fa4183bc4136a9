//! A wallet key that cannot be used before its public key has been checked.
//!
//! A record from the store carries the secret (sealed) and the public key the enclave derived
//! when it made the key (bound into the seal). Loading keeps the opened secret and that public
//! key; the first use re-derives the public key from the secret and compares the two, once, and
//! only then hands the key out. No method of this type returns the key, its secret or its public
//! key without that check, so a key cannot sign, export a public key or be re-sealed unchecked.
//! This spreads the cost of loading (one base-point multiplication a key, ≈ 30 µs) from the load
//! to a background pass and to each key's first use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use subtle::ConstantTimeEq as _;

use crate::backend::Backend;
use crate::secret::WalletSecret;

/// A key's secret and the public key its record claims, until they are checked.
struct Pending {
    secret: WalletSecret,
    public_key: [u8; 33],
}

/// Why a key failed its check: either means the enclave sealed a record it should not have, an
/// invariant breach (the seal authenticates both halves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckFailed {
    /// The secret is not a valid scalar.
    InvalidScalar,
    /// The secret's public key is not the record's.
    Mismatch,
}

impl CheckFailed {
    /// For the enclave's log.
    pub(crate) const fn why(self) -> &'static str {
        match self {
            Self::InvalidScalar => "authenticated record holds an invalid scalar",
            Self::Mismatch => "authenticated record's public key does not match its secret",
        }
    }
}

/// A loaded key, checked on first use.
pub(crate) struct CheckedKey<B: Backend> {
    /// Set once, by [`CheckedKey::get`] after the check, or at construction for a key this
    /// enclave derived itself. Boxed: the vault's key table moves its entries when it grows and
    /// frees the old table unwiped, which would leave copies of inline secrets behind; a boxed
    /// key is never moved, and is wiped where it lives when it is dropped.
    key: OnceLock<Box<B::Key>>,
    /// The secret and claimed public key until the check; cleared (and wiped) by it.
    pending: Mutex<Option<Box<Pending>>>,
}

impl<B: Backend> CheckedKey<B> {
    /// A key whose public key comes from the key itself (made or imported here).
    pub(crate) fn derived(key: B::Key) -> Self {
        Self {
            key: OnceLock::from(Box::new(key)),
            pending: Mutex::new(None),
        }
    }

    /// A key opened from a record, to be checked against the record's public key before use.
    pub(crate) fn unchecked(secret: WalletSecret, public_key: [u8; 33]) -> Self {
        Self {
            key: OnceLock::new(),
            pending: Mutex::new(Some(Box::new(Pending { secret, public_key }))),
        }
    }

    /// Whether the check has been made.
    pub(crate) fn is_checked(&self) -> bool {
        self.key.get().is_some()
    }

    /// The key, after checking it if this is its first use (`checked` counts checks made).
    ///
    /// # Errors
    /// [`CheckFailed`], now and on every later call.
    pub(crate) fn get(&self, checked: &AtomicUsize) -> Result<&B::Key, CheckFailed> {
        if let Some(key) = self.key.get() {
            return Ok(&**key);
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have checked it while this one waited.
        if let Some(key) = self.key.get() {
            return Ok(&**key);
        }
        // Kept after a failed check, so every later use fails as well.
        let Some(claim) = pending.as_deref() else {
            return Err(CheckFailed::Mismatch);
        };
        let key = Box::new(B::load(&claim.secret).map_err(|_| CheckFailed::InvalidScalar)?);
        if !bool::from(B::public_key_compressed(&key).ct_eq(&claim.public_key)) {
            return Err(CheckFailed::Mismatch);
        }
        *pending = None;
        checked.fetch_add(1, Ordering::Relaxed);
        Ok(&**self.key.get_or_init(|| key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{K256, Libsecp256k1};

    fn check<B: Backend>() {
        let secret = WalletSecret::random().unwrap();
        let public = B::public_key_compressed(&B::load(&secret).unwrap());
        let count = AtomicUsize::new(0);

        let good =
            CheckedKey::<B>::unchecked(WalletSecret::from_bytes(secret.expose_secret()), public);
        assert!(!good.is_checked());
        let key = good.get(&count).unwrap();
        assert_eq!(B::public_key_compressed(key), public);
        assert!(good.is_checked());
        good.get(&count).unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 1, "checked once");

        let mut other = public;
        other[32] ^= 1;
        let bad = CheckedKey::<B>::unchecked(secret, other);
        assert_eq!(bad.get(&count).err(), Some(CheckFailed::Mismatch));
        assert_eq!(
            bad.get(&count).err(),
            Some(CheckFailed::Mismatch),
            "and stays refused"
        );
        assert!(!bad.is_checked());

        let zero = CheckedKey::<B>::unchecked(WalletSecret::from_bytes(&[0; 32]), public);
        assert_eq!(zero.get(&count).err(), Some(CheckFailed::InvalidScalar));
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_key_is_handed_out_only_once_its_public_key_matches() {
        check::<K256>();
        check::<Libsecp256k1>();
    }

    #[test]
    fn concurrent_first_uses_check_once() {
        let secret = WalletSecret::random().unwrap();
        let public = K256::public_key_compressed(&K256::load(&secret).unwrap());
        let key = CheckedKey::<K256>::unchecked(secret, public);
        let count = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert!(key.get(&count).is_ok()));
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }

    /// The vault's key table moves its entries when it grows; the key itself must stay put, so
    /// that no copy of it is left in a freed table.
    #[test]
    fn a_key_stays_where_it_is_while_its_table_grows() {
        let count = AtomicUsize::new(0);
        let mut table = std::collections::HashMap::new();
        let secret = WalletSecret::random().unwrap();
        let public = K256::public_key_compressed(&K256::load(&secret).unwrap());
        table.insert(0_u32, CheckedKey::<K256>::unchecked(secret, public));
        let at = std::ptr::from_ref(table[&0].get(&count).unwrap());
        let capacity = table.capacity();
        let mut n = 1;
        while table.capacity() == capacity {
            let key = K256::load(&WalletSecret::random().unwrap()).unwrap();
            table.insert(n, CheckedKey::derived(key));
            n += 1;
        }
        assert!(std::ptr::eq(at, table[&0].get(&count).unwrap()));
    }
}
