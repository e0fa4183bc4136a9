//! The in-RAM vault: open keyrings, loaded wallet keys, and the lifecycle phase.
//!
//! Secrets enter only through [`Vault::load_keyring`] / [`Vault::create_keyring`] (keyring keys,
//! from the provider) and [`Vault::load_key`] / [`Vault::create_key`] (wallet secrets, opened or
//! generated here). Nothing in this module returns or logs a secret.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use subtle::ConstantTimeEq as _;

use crate::Error;
use crate::backend::{Backend, PublicKey};
use crate::ids::{KeyId, KeyringId};
use crate::policy::{self, KeyPolicy, KeyringAdmins};
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
    /// Its policy.
    pub policy: Arc<PolicyEntry>,
}

/// A policy in force for one or more keys: parsed once, shared by every key that has it.
#[derive(Debug)]
pub struct PolicyEntry {
    /// SHA-256 of `bytes` (see [`seal::policy_hash`]).
    pub hash: [u8; 32],
    /// The encoded policy, as sealed.
    pub bytes: Vec<u8>,
    /// The parsed policy.
    pub policy: KeyPolicy,
}

#[derive(Debug, Default)]
struct PolicyTable {
    index: HashMap<[u8; 32], u32>,
    entries: Vec<Arc<PolicyEntry>>,
}

/// An open keyring: its key and its admin set.
struct OpenKeyring {
    key: KeyringKey,
    admins: Arc<KeyringAdmins>,
    admins_hash: [u8; 32],
}

/// A keyring made by [`Vault::create_keyring`], for the host to store.
#[derive(Debug)]
pub struct NewKeyring {
    /// Its id.
    pub id: KeyringId,
    /// The provider-wrapped keyring key.
    pub wrapped: Vec<u8>,
    /// The encoded admin set.
    pub admins: Vec<u8>,
    /// SHA-256 of the admin set (see [`policy::admins_hash`]).
    pub admins_hash: [u8; 32],
    /// The seal binding the admin set to the keyring key.
    pub admins_seal: Vec<u8>,
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
    /// Its policy does not decode or validate.
    InvalidPolicy,
}

impl Rejection {
    /// The generic reason reported to the host.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownKeyring => "unknown keyring",
            Rejection::Duplicate => "duplicate key id",
            Rejection::SealCheckFailed => "seal check failed",
            Rejection::InvalidPolicy => "invalid policy",
        }
    }
}

/// Keyrings, keys and phase.
pub struct Vault<B: Backend> {
    phase: AtomicU8,
    provider_calls: AtomicU64,
    keyrings: RwLock<HashMap<KeyringId, OpenKeyring>>,
    keyring_ids: RwLock<Interned<KeyringId>>,
    policies: RwLock<PolicyTable>,
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

    /// Makes a new keyring through the provider, administered by `admins`. Allowed while
    /// awaiting keyrings and when ready.
    ///
    /// # Errors
    /// Provider failures, or [`Error::Unrecoverable`].
    pub async fn create_keyring(
        &self,
        provider: &dyn KeyWrapper,
        admins: KeyringAdmins,
    ) -> Result<NewKeyring, Error> {
        if self.phase() == Phase::Unrecoverable {
            return Err(Error::Unrecoverable);
        }
        let id = KeyringId::random()?;
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let (key, wrapped) = provider.generate(&id).await?;
        let encoded = admins.encode();
        let admins_hash = policy::admins_hash(&encoded);
        let admins_seal = seal::seal_admins(&key, &id, &admins_hash)?;
        write(&self.keyrings).insert(
            id,
            OpenKeyring {
                key,
                admins: Arc::new(admins),
                admins_hash,
            },
        );
        tracing::info!(keyring = %id, provider = provider.name(), "keyring created");
        Ok(NewKeyring {
            id,
            wrapped,
            admins: encoded,
            admins_hash,
            admins_seal,
        })
    }

    /// Unwraps a stored keyring through the provider and checks its admin set's seal. Loading
    /// the same keyring twice is allowed only with the same key and admin set.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings; provider failures;
    /// [`Error::SealCheckFailed`] for an admin set that is not the keyring's.
    pub async fn load_keyring(
        &self,
        provider: &dyn KeyWrapper,
        id: KeyringId,
        wrapped: &[u8],
        admins: &[u8],
        admins_seal: &[u8],
    ) -> Result<(), Error> {
        self.require(Phase::AwaitingKeyrings)?;
        let parsed = KeyringAdmins::decode(admins)?;
        let admins_hash = policy::admins_hash(admins);
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let key = provider.unwrap(&id, wrapped).await?;
        seal::open_admins(&key, &id, &admins_hash, admins_seal)?;
        let mut keyrings = write(&self.keyrings);
        if let Some(existing) = keyrings.get(&id) {
            return if existing.key.ct_eq(&key) && existing.admins_hash == admins_hash {
                Ok(())
            } else {
                Err(Error::SealCheckFailed)
            };
        }
        keyrings.insert(
            id,
            OpenKeyring {
                key,
                admins: Arc::new(parsed),
                admins_hash,
            },
        );
        tracing::info!(keyring = %id, "keyring opened");
        Ok(())
    }

    /// Resolves a keyring (`None`: the only open one) and returns its admin set.
    ///
    /// # Errors
    /// [`Error::KeyringNotFound`]; [`Error::InvalidArgument`] when none is named and several are
    /// open.
    pub fn keyring_admins(
        &self,
        keyring: Option<KeyringId>,
    ) -> Result<(KeyringId, Arc<KeyringAdmins>), Error> {
        if self.phase() == Phase::Unrecoverable {
            return Err(Error::Unrecoverable);
        }
        let keyrings = read(&self.keyrings);
        let (id, open) = match keyring {
            Some(id) => keyrings.get_key_value(&id).ok_or(Error::KeyringNotFound)?,
            None if keyrings.len() == 1 => keyrings.iter().next().expect("one keyring qed"),
            None if keyrings.is_empty() => return Err(Error::KeyringNotFound),
            None => {
                return Err(Error::InvalidArgument(
                    "keyring_id is required when several keyrings are open",
                ));
            }
        };
        Ok((*id, Arc::clone(&open.admins)))
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
            let Some(keyring) = keyrings.get(&record.keyring_id) else {
                return Ok(Err(Rejection::UnknownKeyring));
            };
            match seal::open(&keyring.key, &binding, &record.sealed) {
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
        // Interned only once authenticated, so a hostile host cannot fill the table.
        let Ok(policy) = self.intern_policy(&record.policy) else {
            return Ok(Err(Rejection::InvalidPolicy));
        };
        let loaded = LoadedKey {
            key,
            keyring: write(&self.keyring_ids).intern(record.keyring_id),
            policy,
        };
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

    /// Generates a wallet key from the OS RNG in `keyring_id` under `policy` (version 1),
    /// seals it and keeps it.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyringNotFound`].
    pub fn create_key(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
    ) -> Result<(SealedRecord, PublicKey), Error> {
        self.require(Phase::Ready)?;
        let (secret, key) = loop {
            let secret = WalletSecret::random()?;
            // A random 256-bit value is outside 1..n-1 with probability below 2^-127.
            if let Ok(key) = B::load(&secret) {
                break (secret, key);
            }
        };
        self.insert_new(keyring_id, label, policy, &secret, key)
    }

    /// Keeps an imported secret as a new key in `keyring_id` under `policy` (version 1).
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyringNotFound`], [`Error::InvalidArgument`] for a value
    /// that is not a valid secp256k1 secret.
    pub fn import_key(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
        secret: &WalletSecret,
    ) -> Result<(SealedRecord, PublicKey), Error> {
        self.require(Phase::Ready)?;
        let key = B::load(secret)
            .map_err(|_| Error::InvalidArgument("imported secret is not a valid key"))?;
        self.insert_new(keyring_id, label, policy, secret, key)
    }

    fn insert_new(
        &self,
        keyring_id: KeyringId,
        label: &str,
        mut policy: KeyPolicy,
        secret: &WalletSecret,
        key: B::Key,
    ) -> Result<(SealedRecord, PublicKey), Error> {
        policy.version = 1;
        let policy_bytes = policy.encode();
        let policy_index = self.intern_policy(&policy_bytes)?;
        let public = B::public_key(&key);
        let key_id = KeyId::random()?;
        let public_key = B::public_key_compressed(&key);
        let sealed = self.seal_record(&key_id, &keyring_id, &public_key, &policy_bytes, secret)?;
        let loaded = LoadedKey {
            key,
            keyring: write(&self.keyring_ids).intern(keyring_id),
            policy: policy_index,
        };
        write(&self.keys).insert(key_id, loaded);
        let record = SealedRecord {
            key_id,
            keyring_id,
            public_key,
            policy: policy_bytes,
            label: label.to_owned(),
            sealed,
        };
        Ok((record, public))
    }

    fn seal_record(
        &self,
        key_id: &KeyId,
        keyring_id: &KeyringId,
        public_key: &[u8; 33],
        policy: &[u8],
        secret: &WalletSecret,
    ) -> Result<Vec<u8>, Error> {
        let keyrings = read(&self.keyrings);
        let keyring = keyrings.get(keyring_id).ok_or(Error::KeyringNotFound)?;
        let policy_hash = seal::policy_hash(policy);
        let binding = Binding {
            key_id,
            keyring_id,
            public_key,
            policy_hash: &policy_hash,
        };
        seal::seal(&keyring.key, &binding, secret)
    }

    /// Replaces a key's policy, if its current policy hashes to `current_hash` and `authorize`
    /// accepts the current policy (the admin quorum check). The new policy's version is the
    /// current one's plus one. Returns the new sealed record.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`], [`Error::Denied`] when the current policy is
    /// not the one named, and whatever `authorize` returns.
    pub fn update_policy(
        &self,
        key_id: &KeyId,
        current_hash: &[u8; 32],
        mut policy: KeyPolicy,
        authorize: impl FnOnce(&KeyPolicy) -> Result<(), Error>,
    ) -> Result<(SealedRecord, PublicKey), Error> {
        self.require(Phase::Ready)?;
        // The write lock makes check-and-replace atomic: two concurrent changes to one key
        // cannot both apply to the same current policy.
        let mut keys = write(&self.keys);
        let loaded = keys.get_mut(key_id).ok_or(Error::KeyNotFound)?;
        let current = self.policy_entry(loaded.policy);
        if &current.hash != current_hash {
            return Err(Error::Denied("change names a policy that is not current"));
        }
        authorize(&current.policy)?;
        policy.version = current
            .policy
            .version
            .checked_add(1)
            .ok_or(Error::InvalidArgument("policy version exhausted"))?;
        let policy_bytes = policy.encode();
        let policy_index = self.intern_policy(&policy_bytes)?;
        let keyring_id = read(&self.keyring_ids).get(loaded.keyring);
        let public_key = B::public_key_compressed(&loaded.key);
        let secret = B::secret(&loaded.key);
        let sealed = self.seal_record(key_id, &keyring_id, &public_key, &policy_bytes, &secret)?;
        drop(secret);
        loaded.policy = policy_index;
        let public = B::public_key(&loaded.key);
        Ok((
            SealedRecord {
                key_id: *key_id,
                keyring_id,
                public_key,
                policy: policy_bytes,
                label: String::new(),
                sealed,
            },
            public,
        ))
    }

    /// Parses (once per distinct policy) and interns a policy.
    fn intern_policy(&self, bytes: &[u8]) -> Result<u32, Error> {
        let hash = seal::policy_hash(bytes);
        if let Some(&i) = read(&self.policies).index.get(&hash) {
            return Ok(i);
        }
        let policy = KeyPolicy::decode(bytes)?;
        let mut table = write(&self.policies);
        if let Some(&i) = table.index.get(&hash) {
            return Ok(i);
        }
        let i = u32::try_from(table.entries.len())
            .map_err(|_| Error::InvalidArgument("too many distinct policies"))?;
        table.entries.push(Arc::new(PolicyEntry {
            hash,
            bytes: bytes.to_vec(),
            policy,
        }));
        table.index.insert(hash, i);
        Ok(i)
    }

    fn policy_entry(&self, i: u32) -> Arc<PolicyEntry> {
        Arc::clone(&read(&self.policies).entries[usize::try_from(i).expect("u32 fits usize qed")])
    }

    /// A loaded key's policy.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`].
    pub fn policy(&self, id: &KeyId) -> Result<Arc<PolicyEntry>, Error> {
        let index = self.with_key(id, |k| k.policy)?;
        Ok(self.policy_entry(index))
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
            policy: self.policy_entry(policy),
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
