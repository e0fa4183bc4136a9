//! The in-RAM vault: open keyrings, loaded wallet keys, and the lifecycle phase.
//!
//! Secrets enter only through [`Vault::load_keyring`] / [`Vault::create_keyring`] (keyring keys,
//! from the provider) and [`Vault::load_key`] / [`Vault::create_key`] (wallet secrets, opened or
//! generated here). Nothing in this module returns or logs a secret.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use subtle::ConstantTimeEq as _;

use crate::Error;
use crate::backend::{Backend, PublicKey};
use crate::ids::{KeyId, KeyringId};
use crate::provider::KeyWrapper;
use crate::seal::{self, Binding};
use crate::secret::{KeyringKey, WalletSecret};

/// Lifecycle phase. Only [`Phase::Ready`] signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started empty; accepts keyrings and sealed records.
    AwaitingKeyrings,
    /// Loaded; signs and creates keys.
    Ready,
    /// An invariant broke; refuses everything until restarted.
    Unrecoverable,
}

impl Phase {
    const fn code(self) -> u8 {
        match self {
            Phase::AwaitingKeyrings => 1,
            Phase::Ready => 2,
            Phase::Unrecoverable => 3,
        }
    }
}

/// A wallet key held in RAM: kept small, since a vault holds millions of them. Keyrings and
/// policy hashes are shared by many keys and stored once; labels stay with the host.
pub struct LoadedKey<B: Backend> {
    /// The backend's prepared key (wipes its secret on drop).
    pub key: B::Key,
    keyring: u32,
    policy: u32,
}

/// A loaded key's public identity.
#[derive(Debug)]
pub struct KeyIdentity {
    /// The public key.
    pub public: PublicKey,
    /// The keyring that seals it.
    pub keyring_id: KeyringId,
    /// SHA-256 of its policy.
    pub policy_hash: [u8; 32],
}

/// Values shared by many keys, each stored once and referred to by index.
#[derive(Debug)]
struct Interned<T> {
    index: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Interned<T> {
    fn intern(&mut self, value: T) -> u32 {
        if let Some(&i) = self.index.get(&value) {
            return i;
        }
        let i = u32::try_from(self.values.len())
            .expect("fewer than 2^32 distinct keyrings or policies qed");
        self.values.push(value);
        self.index.insert(value, i);
        i
    }

    fn get(&self, i: u32) -> T {
        self.values[usize::try_from(i).expect("u32 fits in usize qed")]
    }
}

/// A sealed record as it travels between host and enclave.
#[derive(Debug)]
pub struct SealedRecord {
    /// The key's id.
    pub key_id: KeyId,
    /// The sealing keyring.
    pub keyring_id: KeyringId,
    /// SEC1 compressed public key.
    pub public_key: [u8; 33],
    /// The encoded policy.
    pub policy: Vec<u8>,
    /// The creation label.
    pub label: String,
    /// The sealed bytes.
    pub sealed: Vec<u8>,
}

/// Why a stored record was refused at load. Generic on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its keyring is not open.
    UnknownKeyring,
    /// It is already loaded.
    Duplicate,
    /// It failed authentication (tampered, swapped, or sealed under another binding).
    SealCheckFailed,
}

impl Rejection {
    /// The generic reason reported to the host.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownKeyring => "unknown keyring",
            Rejection::Duplicate => "duplicate key id",
            Rejection::SealCheckFailed => "seal check failed",
        }
    }
}

/// Keyrings, keys and phase.
pub struct Vault<B: Backend> {
    phase: AtomicU8,
    provider_calls: AtomicU64,
    keyrings: RwLock<HashMap<KeyringId, KeyringKey>>,
    keyring_ids: RwLock<Interned<KeyringId>>,
    policies: RwLock<Interned<[u8; 32]>>,
    keys: RwLock<HashMap<KeyId, LoadedKey<B>>>,
}

impl<B: Backend> Default for Vault<B> {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::AwaitingKeyrings.code()),
            provider_calls: AtomicU64::new(0),
            keyrings: RwLock::default(),
            keyring_ids: RwLock::default(),
            policies: RwLock::default(),
            keys: RwLock::default(),
        }
    }
}

impl<B: Backend> Vault<B> {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::AwaitingKeyrings,
            2 => Phase::Ready,
            _ => Phase::Unrecoverable,
        }
    }

    fn require(&self, wanted: Phase) -> Result<(), Error> {
        match (self.phase(), wanted) {
            (Phase::Unrecoverable, _) => Err(Error::Unrecoverable),
            (have, want) if have == want => Ok(()),
            (Phase::AwaitingKeyrings, Phase::Ready) => Err(Error::NotReady),
            _ => Err(Error::WrongPhase),
        }
    }

    /// Marks the vault unrecoverable: every later call fails until the enclave restarts.
    pub fn fail_closed(&self, why: &'static str) {
        tracing::error!(why, "invariant broken; enclave is now unrecoverable");
        self.phase
            .store(Phase::Unrecoverable.code(), Ordering::Release);
    }

    /// Number of open keyrings and loaded keys.
    pub fn counts(&self) -> (usize, usize) {
        (read(&self.keyrings).len(), read(&self.keys).len())
    }

    /// Calls made to the key-wrapping provider since start-up.
    pub fn provider_calls(&self) -> u64 {
        self.provider_calls.load(Ordering::Relaxed)
    }

    /// Makes a new keyring through the provider. Allowed while awaiting keyrings and when ready.
    ///
    /// # Errors
    /// Provider failures, or [`Error::Unrecoverable`].
    pub async fn create_keyring(
        &self,
        provider: &dyn KeyWrapper,
    ) -> Result<(KeyringId, Vec<u8>), Error> {
        if self.phase() == Phase::Unrecoverable {
            return Err(Error::Unrecoverable);
        }
        let id = KeyringId::random()?;
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let (key, wrapped) = provider.generate(&id).await?;
        write(&self.keyrings).insert(id, key);
        tracing::info!(keyring = %id, provider = provider.name(), "keyring created");
        Ok((id, wrapped))
    }

    /// Unwraps a stored keyring through the provider. Loading the same keyring twice is allowed
    /// only with the same key.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings; provider failures.
    pub async fn load_keyring(
        &self,
        provider: &dyn KeyWrapper,
        id: KeyringId,
        wrapped: &[u8],
    ) -> Result<(), Error> {
        self.require(Phase::AwaitingKeyrings)?;
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let key = provider.unwrap(&id, wrapped).await?;
        let mut keyrings = write(&self.keyrings);
        if let Some(existing) = keyrings.get(&id) {
            return if existing.ct_eq(&key) {
                Ok(())
            } else {
                Err(Error::SealCheckFailed)
            };
        }
        keyrings.insert(id, key);
        tracing::info!(keyring = %id, "keyring opened");
        Ok(())
    }

    /// Opens one sealed record, re-derives its public key and keeps it.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings. A record that fails is refused with a
    /// [`Rejection`]; an authenticated record whose public key does not match breaks an invariant
    /// and makes the vault unrecoverable.
    pub fn load_key(&self, record: &SealedRecord) -> Result<Result<(), Rejection>, Error> {
        self.require(Phase::AwaitingKeyrings)?;
        if read(&self.keys).contains_key(&record.key_id) {
            return Ok(Err(Rejection::Duplicate));
        }
        let policy_hash = seal::policy_hash(&record.policy);
        let binding = Binding {
            key_id: &record.key_id,
            keyring_id: &record.keyring_id,
            public_key: &record.public_key,
            policy_hash: &policy_hash,
        };
        let secret = {
            let keyrings = read(&self.keyrings);
            let Some(keyring_key) = keyrings.get(&record.keyring_id) else {
                return Ok(Err(Rejection::UnknownKeyring));
            };
            match seal::open(keyring_key, &binding, &record.sealed) {
                Ok(secret) => secret,
                Err(_) => return Ok(Err(Rejection::SealCheckFailed)),
            }
        };
        let key = B::load(&secret)
            .inspect_err(|_| self.fail_closed("authenticated record holds an invalid scalar"))?;
        let derived = B::public_key_compressed(&key);
        if !bool::from(derived.ct_eq(&record.public_key)) {
            self.fail_closed("authenticated record's public key does not match its secret");
            return Err(Error::Unrecoverable);
        }
        let loaded = self.loaded(key, record.keyring_id, policy_hash);
        // Loads run on several threads: the duplicate check that counts is this one, under the lock.
        match write(&self.keys).entry(record.key_id) {
            Entry::Occupied(_) => Ok(Err(Rejection::Duplicate)),
            Entry::Vacant(slot) => {
                slot.insert(loaded);
                Ok(Ok(()))
            }
        }
    }

    /// Ends loading; the vault starts signing.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings.
    pub fn finish_loading(&self) -> Result<(), Error> {
        self.require(Phase::AwaitingKeyrings)?;
        let _ = self.phase.compare_exchange(
            Phase::AwaitingKeyrings.code(),
            Phase::Ready.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let (keyrings, keys) = self.counts();
        tracing::info!(keyrings, keys, "ready");
        Ok(())
    }

    /// Generates a wallet key from the OS RNG in `keyring` (or the only open keyring), seals it
    /// and keeps it.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyringNotFound`], [`Error::InvalidArgument`] when no keyring
    /// is named and several are open.
    pub fn create_key(
        &self,
        keyring: Option<KeyringId>,
        label: &str,
    ) -> Result<(SealedRecord, PublicKey), Error> {
        self.require(Phase::Ready)?;
        let keyrings = read(&self.keyrings);
        let (keyring_id, keyring_key) = match keyring {
            Some(id) => keyrings.get_key_value(&id).ok_or(Error::KeyringNotFound)?,
            None if keyrings.len() == 1 => keyrings.iter().next().expect("one keyring qed"),
            None if keyrings.is_empty() => return Err(Error::KeyringNotFound),
            None => {
                return Err(Error::InvalidArgument(
                    "keyring_id is required when several keyrings are open",
                ));
            }
        };
        let (secret, key) = loop {
            let secret = WalletSecret::random()?;
            // A random 256-bit value is outside 1..n-1 with probability below 2^-127.
            if let Ok(key) = B::load(&secret) {
                break (secret, key);
            }
        };
        let public = B::public_key(&key);
        let record = SealedRecord {
            key_id: KeyId::random()?,
            keyring_id: *keyring_id,
            public_key: B::public_key_compressed(&key),
            policy: Vec::new(),
            label: label.to_owned(),
            sealed: Vec::new(),
        };
        let policy_hash = seal::policy_hash(&record.policy);
        let binding = Binding {
            key_id: &record.key_id,
            keyring_id: &record.keyring_id,
            public_key: &record.public_key,
            policy_hash: &policy_hash,
        };
        let sealed = seal::seal(keyring_key, &binding, &secret)?;
        drop(secret);
        let record = SealedRecord { sealed, ..record };
        drop(keyrings);
        let loaded = self.loaded(key, record.keyring_id, policy_hash);
        write(&self.keys).insert(record.key_id, loaded);
        Ok((record, public))
    }

    fn loaded(&self, key: B::Key, keyring_id: KeyringId, policy_hash: [u8; 32]) -> LoadedKey<B> {
        let keyring = write(&self.keyring_ids).intern(keyring_id);
        let policy = write(&self.policies).intern(policy_hash);
        LoadedKey {
            key,
            keyring,
            policy,
        }
    }

    /// A loaded key's public identity.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`].
    pub fn identity(&self, id: &KeyId) -> Result<KeyIdentity, Error> {
        let (public, keyring, policy) =
            self.with_key(id, |k| (B::public_key(&k.key), k.keyring, k.policy))?;
        Ok(KeyIdentity {
            public,
            keyring_id: read(&self.keyring_ids).get(keyring),
            policy_hash: read(&self.policies).get(policy),
        })
    }

    /// Runs `f` on a loaded key.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`].
    pub fn with_key<T>(&self, id: &KeyId, f: impl FnOnce(&LoadedKey<B>) -> T) -> Result<T, Error> {
        self.require(Phase::Ready)?;
        read(&self.keys).get(id).map(f).ok_or(Error::KeyNotFound)
    }
}

// A panic while holding a lock cannot leave these maps half-updated (every write is a single
// insert), so a poisoned lock is still sound to use. Release builds abort on panic anyway.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
