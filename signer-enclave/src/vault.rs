//! The in-RAM vault: open keyrings, loaded wallet keys, and the lifecycle phase.
//!
//! Secrets enter only through [`Vault::load_keyring`] / [`Vault::create_keyring`] (keyring keys,
//! from the provider) and [`Vault::load_key`] / [`Vault::create_key`] / [`Vault::import_key`]
//! (wallet secrets, opened or generated here). Every method that signs, creates or changes a key
//! requires an [`Authorized`] proof, and commits it only at the point of no return; signing and
//! policy changes check the policy and act under one lookup. Nothing in this module returns or
//! logs a secret.

mod checked;
mod keyrings;
mod policies;
mod sync;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use self::checked::CheckedKey;
#[cfg(test)]
pub(crate) use self::keyrings::NewKeyring;
use self::keyrings::OpenKeyring;
pub(crate) use self::policies::PolicyEntry;
use self::policies::{Interned, PolicyTable};
pub(crate) use self::sync::Synced;
use crate::Error;
use crate::auth::{Authorized, Committed};
use crate::backend::{Backend, PublicKey};
use crate::config::Capacity;
use crate::derived::DerivedKeys;
use crate::hd::{HdPath, HdRoot, XpubVersion};
use crate::ids::{KeyId, KeyringId};
use crate::policy::KeyPolicy;
use crate::seal::{self, Binding, Opened};
use crate::secret::{ChainCode, WalletSecret};

/// Lifecycle phase. Only [`Phase::Ready`] signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
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
/// policies are shared by many keys and stored once; labels stay with the host.
pub(crate) struct LoadedKey<B: Backend> {
    /// The secret, or an HD root's master secret; usable once checked against its record.
    key: CheckedKey<B>,
    /// An HD root's chain code; `None` for a single key.
    chain: Option<Box<ChainCode>>,
    keyring: u32,
    policy: u32,
}

impl<B: Backend> LoadedKey<B> {
    /// The HD root this entry holds (`key` is its checked key), rebuilt for one derivation or
    /// re-seal.
    fn root(&self, key: &B::Key) -> Option<HdRoot> {
        self.chain.as_ref().map(|chain| {
            HdRoot::from_parts(B::secret(key), ChainCode::from_bytes(chain.expose_secret()))
        })
    }
}

/// What a new key holds, for sealing.
enum Material<'a> {
    Key(&'a WalletSecret),
    Root(&'a HdRoot),
}

/// A key derived under an HD root, as exported.
#[derive(Debug)]
pub(crate) struct Derived {
    /// The derived key's public key.
    pub public: PublicKey,
    /// Its extended public key (mainnet `xpub` version bytes).
    pub xpub: String,
}

/// A loaded key's public identity.
#[derive(Debug)]
pub(crate) struct KeySummary {
    /// The public key.
    pub public: PublicKey,
    /// The keyring that seals it.
    pub keyring_id: KeyringId,
    /// Its policy.
    pub policy: Arc<PolicyEntry>,
    /// For an HD root, its BIP-32 fingerprint.
    pub root_fingerprint: Option<[u8; 4]>,
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

impl From<SealedRecord> for signer_proto::pb::SealedKey {
    fn from(record: SealedRecord) -> Self {
        Self {
            key_id: record.key_id.to_string(),
            keyring_id: record.keyring_id.to_string(),
            public_key: record.public_key.to_vec(),
            policy: record.policy,
            label: record.label,
            sealed: record.sealed,
        }
    }
}

/// A key just created, imported or re-policied: its record for the host, its public key and
/// policy for the signed reply, and the committed request it answers.
#[derive(Debug)]
pub(crate) struct Changed {
    /// The sealed record to store.
    pub record: SealedRecord,
    /// The public key.
    pub public: PublicKey,
    /// The policy now in force.
    pub policy: Arc<PolicyEntry>,
    /// The request, committed.
    pub committed: Committed,
    /// For an HD root, its BIP-32 fingerprint.
    pub root_fingerprint: Option<[u8; 4]>,
}

/// Why a stored record was refused at load. Generic on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Its keyring is not open.
    UnknownKeyring,
    /// It is already loaded.
    Duplicate,
    /// It failed authentication (tampered, swapped, or sealed under another binding).
    SealCheckFailed,
    /// Its policy does not decode or validate.
    InvalidPolicy,
    /// The vault holds as many keys (or distinct policies) as it is configured for.
    OverCapacity,
    /// A ready vault holds the key under a newer policy than the record's.
    Stale,
}

impl Rejection {
    /// The generic reason reported to the host.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownKeyring => "unknown keyring",
            Rejection::Duplicate => "duplicate key id",
            Rejection::SealCheckFailed => "seal check failed",
            Rejection::InvalidPolicy => "invalid policy",
            Rejection::OverCapacity => "over capacity",
            Rejection::Stale => "older policy",
        }
    }
}

/// Keyrings, keys and phase.
pub(crate) struct Vault<B: Backend> {
    phase: AtomicU8,
    provider_calls: AtomicU64,
    /// Loaded keys whose public key has been re-derived and compared with their record's.
    checked: AtomicUsize,
    capacity: Capacity,
    keyrings: RwLock<HashMap<KeyringId, OpenKeyring>>,
    keyring_ids: RwLock<Interned<KeyringId>>,
    policies: RwLock<PolicyTable>,
    keys: RwLock<HashMap<KeyId, LoadedKey<B>>>,
    derived: DerivedKeys<B>,
}

impl<B: Backend> Default for Vault<B> {
    fn default() -> Self {
        Self::new(Capacity::default())
    }
}

impl<B: Backend> Vault<B> {
    /// An empty vault awaiting keyrings, holding at most `capacity`.
    pub(crate) fn new(capacity: Capacity) -> Self {
        Self {
            phase: AtomicU8::new(Phase::AwaitingKeyrings.code()),
            provider_calls: AtomicU64::new(0),
            checked: AtomicUsize::new(0),
            capacity,
            keyrings: RwLock::default(),
            keyring_ids: RwLock::default(),
            policies: RwLock::new(PolicyTable::new(capacity.policies)),
            keys: RwLock::default(),
            derived: DerivedKeys::new(capacity.derived_keys),
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::AwaitingKeyrings,
            2 => Phase::Ready,
            _ => Phase::Unrecoverable,
        }
    }

    /// Refuses unless the vault is ready (a cheap check before costlier work).
    ///
    /// # Errors
    /// [`Error::NotReady`]; [`Error::Unrecoverable`].
    pub(crate) fn ready(&self) -> Result<(), Error> {
        self.require(Phase::Ready)
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
    pub(crate) fn fail_closed(&self, why: &'static str) {
        tracing::error!(why, "invariant broken; enclave is now unrecoverable");
        self.phase
            .store(Phase::Unrecoverable.code(), Ordering::Release);
    }

    /// Number of open keyrings and loaded keys.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (read(&self.keyrings).len(), read(&self.keys).len())
    }

    /// Calls made to the key-wrapping provider since start-up.
    pub(crate) fn provider_calls(&self) -> u64 {
        self.provider_calls.load(Ordering::Relaxed)
    }

    /// Loaded keys whose public key has been checked against their record (keys made here
    /// count as checked).
    pub(crate) fn checked_keys(&self) -> usize {
        self.checked.load(Ordering::Relaxed)
    }

    /// A loaded key, checked against its record if this is its first use. A failed check is an
    /// invariant breach (the seal authenticated the record): the vault fails closed.
    fn key_of<'k>(&self, loaded: &'k LoadedKey<B>) -> Result<&'k B::Key, Error> {
        loaded.key.get(&self.checked).map_err(|failed| {
            self.fail_closed(failed.why());
            Error::Unrecoverable
        })
    }

    /// Checks every loaded key not yet checked, on `workers` threads, taking the key table's
    /// read lock for a few hundred keys at a time so that key creation is not held up.
    /// Returns the number of keys checked by this pass.
    ///
    /// # Errors
    /// [`Error::Unrecoverable`] at the first key that fails its check (the vault fails closed).
    pub(crate) fn check_pending(&self, workers: usize) -> Result<usize, Error> {
        const CHUNK: usize = 256;
        let before = self.checked_keys();
        let pending: Vec<KeyId> = read(&self.keys)
            .iter()
            .filter(|(_, loaded)| !loaded.key.is_checked())
            .map(|(id, _)| *id)
            .collect();
        let share = pending.len().div_ceil(workers.max(1)).max(1);
        std::thread::scope(|scope| {
            let tasks: Vec<_> = pending
                .chunks(share)
                .map(|ids| {
                    scope.spawn(move || {
                        for chunk in ids.chunks(CHUNK) {
                            let keys = read(&self.keys);
                            for loaded in chunk.iter().filter_map(|id| keys.get(id)) {
                                self.key_of(loaded)?;
                            }
                        }
                        Ok::<(), Error>(())
                    })
                })
                .collect();
            tasks
                .into_iter()
                .try_for_each(|task| task.join().map_err(|_| Error::Internal)?)
        })?;
        Ok(self.checked_keys().saturating_sub(before))
    }

    /// Opens one sealed record and keeps it; its public key is checked on first use.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings. A record that fails is refused with a
    /// [`Rejection`]. An authenticated record whose public key does not match its secret
    /// breaks an invariant: found at the key's first use or by [`Vault::check_pending`], it
    /// makes the vault unrecoverable.
    pub(crate) fn load_key(&self, record: &SealedRecord) -> Result<Result<(), Rejection>, Error> {
        self.require(Phase::AwaitingKeyrings)?;
        self.insert_record(record)
    }

    /// Opens a sealed record of a key not yet loaded and keeps it (at load, or when a ready
    /// vault learns of a key another enclave of the deployment made).
    fn insert_record(&self, record: &SealedRecord) -> Result<Result<(), Rejection>, Error> {
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
        let opened = {
            let keyrings = read(&self.keyrings);
            let Some(keyring) = keyrings.get(&record.keyring_id) else {
                return Ok(Err(Rejection::UnknownKeyring));
            };
            match seal::open_any(&keyring.key, &binding, &record.sealed) {
                Ok(opened) => opened,
                Err(_) => return Ok(Err(Rejection::SealCheckFailed)),
            }
        };
        // The public key is checked against the secret on first use (`CheckedKey`), not here:
        // a load of many keys does not pay a base-point multiplication for each.
        let (key, chain) = match opened {
            Opened::Key(secret) => (CheckedKey::unchecked(secret, record.public_key), None),
            Opened::Root(root) => (
                CheckedKey::unchecked(
                    WalletSecret::from_bytes(root.secret().expose_secret()),
                    record.public_key,
                ),
                Some(Box::new(ChainCode::from_bytes(
                    root.chain_code().expose_secret(),
                ))),
            ),
        };
        // Loads run on several threads: the checks that count are these, under the lock.
        let mut keys = write(&self.keys);
        if keys.len() >= self.capacity.keys {
            return Ok(Err(Rejection::OverCapacity));
        }
        let Entry::Vacant(slot) = keys.entry(record.key_id) else {
            return Ok(Err(Rejection::Duplicate));
        };
        // Taken only once authenticated, so a hostile host cannot fill the table.
        let policy = write(&self.policies).acquire(policy_hash, &record.policy, || {
            KeyPolicy::decode(&record.policy)
        });
        let policy = match policy {
            Ok(policy) => policy,
            Err(Error::Capacity(_)) => return Ok(Err(Rejection::OverCapacity)),
            Err(_) => return Ok(Err(Rejection::InvalidPolicy)),
        };
        // A root's policy has HD rules and only a root's does (both are sealed together, so a
        // mismatch is a record this enclave never made).
        if read(&self.policies).get(policy).policy.hd.is_some() != chain.is_some() {
            write(&self.policies).release(policy);
            return Ok(Err(Rejection::InvalidPolicy));
        }
        slot.insert(LoadedKey {
            key,
            chain,
            keyring: write(&self.keyring_ids).intern(record.keyring_id),
            policy,
        });
        Ok(Ok(()))
    }

    /// Ends loading; the vault starts signing.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless awaiting keyrings.
    pub(crate) fn finish_loading(&self) -> Result<(), Error> {
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

    /// Generates a wallet key from the OS RNG in `keyring_id` under `policy` (given at version
    /// 1), seals it and keeps it, spending `authorized`.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyringNotFound`], [`Error::Capacity`].
    pub(crate) fn create_key(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
        authorized: Authorized<'_>,
    ) -> Result<Changed, Error> {
        self.require(Phase::Ready)?;
        single_key_policy(&policy)?;
        let (secret, key) = loop {
            let secret = WalletSecret::random()?;
            // A random 256-bit value is outside 1..n-1 with probability below 2^-127.
            if let Ok(key) = B::load(&secret) {
                break (secret, key);
            }
        };
        self.insert_new(
            keyring_id,
            label,
            policy,
            Material::Key(&secret),
            key,
            authorized,
        )
    }

    /// Generates an HD root from a 256-bit seed from the OS RNG, in `keyring_id` under
    /// `policy` (which must carry HD rules), seals it and keeps it, spending `authorized`.
    ///
    /// # Errors
    /// As [`Vault::create_key`]; [`Error::InvalidArgument`] for a policy without HD rules.
    pub(crate) fn create_root(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
        authorized: Authorized<'_>,
    ) -> Result<Changed, Error> {
        self.require(Phase::Ready)?;
        root_policy(&policy)?;
        let (root, key) = loop {
            let root = HdRoot::random()?;
            if let Ok(key) = B::load(root.secret()) {
                break (root, key);
            }
        };
        self.insert_new(
            keyring_id,
            label,
            policy,
            Material::Root(&root),
            key,
            authorized,
        )
    }

    /// Keeps an imported HD root (from a seed or mnemonic) as a new key in `keyring_id` under
    /// `policy` (version 1, with HD rules), spending `authorized`.
    ///
    /// # Errors
    /// As [`Vault::create_root`]; [`Error::InvalidArgument`] for a master secret that is not a
    /// valid key.
    pub(crate) fn import_root(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
        root: &HdRoot,
        authorized: Authorized<'_>,
    ) -> Result<Changed, Error> {
        self.require(Phase::Ready)?;
        root_policy(&policy)?;
        let key = B::load(root.secret())
            .map_err(|_| Error::InvalidArgument("imported root is not a valid key"))?;
        self.insert_new(
            keyring_id,
            label,
            policy,
            Material::Root(root),
            key,
            authorized,
        )
    }

    /// Keeps an imported secret as a new key in `keyring_id` under `policy` (version 1),
    /// spending `authorized`.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyringNotFound`], [`Error::Capacity`],
    /// [`Error::InvalidArgument`] for a value that is not a valid secp256k1 secret.
    pub(crate) fn import_key(
        &self,
        keyring_id: KeyringId,
        label: &str,
        policy: KeyPolicy,
        secret: &WalletSecret,
        authorized: Authorized<'_>,
    ) -> Result<Changed, Error> {
        self.require(Phase::Ready)?;
        single_key_policy(&policy)?;
        let key = B::load(secret)
            .map_err(|_| Error::InvalidArgument("imported secret is not a valid key"))?;
        self.insert_new(
            keyring_id,
            label,
            policy,
            Material::Key(secret),
            key,
            authorized,
        )
    }

    fn insert_new(
        &self,
        keyring_id: KeyringId,
        label: &str,
        mut policy: KeyPolicy,
        material: Material<'_>,
        key: B::Key,
        mut authorized: Authorized<'_>,
    ) -> Result<Changed, Error> {
        policy.version = 1;
        let (chain, root_fingerprint) = match &material {
            Material::Key(_) => (None, None),
            Material::Root(root) => (
                Some(Box::new(ChainCode::from_bytes(
                    root.chain_code().expose_secret(),
                ))),
                Some(root.fingerprint()?),
            ),
        };
        let policy_bytes = policy.encode();
        let policy_hash = seal::policy_hash(&policy_bytes);
        let public = B::public_key(&key);
        let key_id = KeyId::random()?;
        let public_key = B::public_key_compressed(&key);
        let sealed =
            self.seal_record(&key_id, &keyring_id, &public_key, &policy_hash, &material)?;
        let mut keys = write(&self.keys);
        if keys.len() >= self.capacity.keys {
            return Err(Error::Capacity("key capacity reached"));
        }
        let policy_index =
            write(&self.policies).acquire(policy_hash, &policy_bytes, || Ok(policy))?;
        let keyring = write(&self.keyring_ids).intern(keyring_id);
        keys.insert(
            key_id,
            LoadedKey {
                key: CheckedKey::derived(key),
                chain,
                keyring,
                policy: policy_index,
            },
        );
        self.checked.fetch_add(1, Ordering::Relaxed);
        authorized.about(key_id);
        let committed = authorized.commit();
        Ok(Changed {
            record: SealedRecord {
                key_id,
                keyring_id,
                public_key,
                policy: policy_bytes,
                label: label.to_owned(),
                sealed,
            },
            public,
            policy: read(&self.policies).get(policy_index),
            committed,
            root_fingerprint,
        })
    }

    fn seal_record(
        &self,
        key_id: &KeyId,
        keyring_id: &KeyringId,
        public_key: &[u8; 33],
        policy_hash: &[u8; 32],
        material: &Material<'_>,
    ) -> Result<Vec<u8>, Error> {
        let keyrings = read(&self.keyrings);
        let keyring = keyrings.get(keyring_id).ok_or(Error::KeyringNotFound)?;
        let binding = Binding {
            key_id,
            keyring_id,
            public_key,
            policy_hash,
        };
        match material {
            Material::Key(secret) => seal::seal(&keyring.key, &binding, secret),
            Material::Root(root) => seal::seal_root(&keyring.key, &binding, root),
        }
    }

    /// Replaces a key's policy, if its current policy hashes to `current_hash` and `authorize`,
    /// given the current policy under the same lock as the change, returns the proof (the admin
    /// quorum check). The new policy's version is the current one's plus one. Returns the new
    /// sealed record.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`], [`Error::Denied`] when the current policy is
    /// not the one named, [`Error::Capacity`], and whatever `authorize` returns.
    pub(crate) fn update_policy<'g>(
        &self,
        key_id: &KeyId,
        current_hash: &[u8; 32],
        mut policy: KeyPolicy,
        authorize: impl FnOnce(&PolicyEntry) -> Result<Authorized<'g>, Error>,
    ) -> Result<Changed, Error> {
        self.require(Phase::Ready)?;
        // The write lock makes check-and-replace atomic against concurrent changes and signs.
        let mut keys = write(&self.keys);
        let loaded = keys.get_mut(key_id).ok_or(Error::KeyNotFound)?;
        let current = read(&self.policies).get(loaded.policy);
        if &current.hash != current_hash {
            return Err(Error::Denied("change names a policy that is not current"));
        }
        if policy.hd.is_some() != loaded.chain.is_some() {
            return Err(Error::InvalidArgument(
                "hd rules are for HD roots, and HD roots need them",
            ));
        }
        policy.version = current
            .policy
            .version
            .checked_add(1)
            .ok_or(Error::InvalidArgument("policy version exhausted"))?;
        let policy_bytes = policy.encode();
        let policy_hash = seal::policy_hash(&policy_bytes);
        if !read(&self.policies).has_room_replacing(&policy_hash, loaded.policy) {
            return Err(Error::Capacity("policy capacity reached"));
        }
        let keyring_id = read(&self.keyring_ids).get(loaded.keyring);
        let key = self.key_of(loaded)?;
        let public_key = B::public_key_compressed(key);
        let public = B::public_key(key);
        let root = loaded.root(key);
        let sealed = match &root {
            Some(root) => self.seal_record(
                key_id,
                &keyring_id,
                &public_key,
                &policy_hash,
                &Material::Root(root),
            )?,
            None => {
                let secret = B::secret(key);
                self.seal_record(
                    key_id,
                    &keyring_id,
                    &public_key,
                    &policy_hash,
                    &Material::Key(&secret),
                )?
            }
        };
        let root_fingerprint = root.map(|root| root.fingerprint()).transpose()?;
        let authorized = authorize(&current)?;
        // Released first, so a key that was its old policy's last user can always move on;
        // the room check above (under the same keys lock) makes the acquire succeed.
        let policy_index = {
            let mut policies = write(&self.policies);
            policies.release(loaded.policy);
            policies.acquire(policy_hash, &policy_bytes, || Ok(policy))?
        };
        loaded.policy = policy_index;
        let committed = authorized.commit();
        Ok(Changed {
            record: SealedRecord {
                key_id: *key_id,
                keyring_id,
                public_key,
                policy: policy_bytes,
                label: String::new(),
                sealed,
            },
            public,
            policy: read(&self.policies).get(policy_index),
            committed,
            root_fingerprint,
        })
    }

    /// Signs with a loaded key, or with the key at `path` under a loaded HD root: `authorize`
    /// is given the key's current policy and must return the proof (quorum, scheme, rate limit,
    /// nonce), and `sign` runs under the same lookup, so a policy change cannot land between the
    /// check and the signature. A root's path is checked against the current policy's HD rules
    /// here, under the same lookup.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`], [`Error::InvalidArgument`] for a path given
    /// to a single key or none given to a root, [`Error::Denied`] for a path outside the root's
    /// subtrees, and whatever `authorize` returns.
    pub(crate) fn sign<'g, T>(
        &self,
        key_id: &KeyId,
        path: &HdPath,
        authorize: impl FnOnce(&PolicyEntry) -> Result<Authorized<'g>, Error>,
        sign: impl FnOnce(&B::Key) -> T,
    ) -> Result<(T, Committed), Error> {
        self.require(Phase::Ready)?;
        let keys = read(&self.keys);
        let loaded = keys.get(key_id).ok_or(Error::KeyNotFound)?;
        let policy = read(&self.policies).get(loaded.policy);
        let derived = self.at_path(key_id, loaded, &policy, path)?;
        // Checked before the proof is spent: a key that fails its check spends no nonce.
        let key = match &derived {
            Some(derived) => derived,
            None => self.key_of(loaded)?,
        };
        let committed = authorize(&policy)?.commit();
        Ok((sign(key), committed))
    }

    /// For an operation that signs with several keys under one HD root (a PSBT): the keys at
    /// `paths`, each checked against the root's current HD rules, handed with the current
    /// policy to `act`, which judges, signs and authorises; the nonce is spent only when `act`
    /// succeeds.
    ///
    /// # Errors
    /// As [`Vault::sign`]; [`Error::InvalidArgument`] for a key that is not a root; whatever
    /// `act` returns.
    pub(crate) fn with_keys<'g, T>(
        &self,
        key_id: &KeyId,
        paths: &[HdPath],
        act: impl FnOnce(&PolicyEntry, &[Arc<B::Key>]) -> Result<(T, Authorized<'g>), Error>,
    ) -> Result<(T, Committed), Error> {
        self.require(Phase::Ready)?;
        let keys = read(&self.keys);
        let loaded = keys.get(key_id).ok_or(Error::KeyNotFound)?;
        let policy = read(&self.policies).get(loaded.policy);
        if loaded.chain.is_none() {
            return Err(Error::InvalidArgument("not an HD root"));
        }
        let derived = paths
            .iter()
            .map(|path| {
                self.at_path(key_id, loaded, &policy, path)?
                    .ok_or(Error::Internal)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (value, authorized) = act(&policy, &derived)?;
        Ok((value, authorized.commit()))
    }

    /// The key at `path` under a root (from the cache, or derived and cached), after checking
    /// the path against the root's current HD rules; `None` for a single key and no path.
    fn at_path(
        &self,
        key_id: &KeyId,
        loaded: &LoadedKey<B>,
        policy: &PolicyEntry,
        path: &HdPath,
    ) -> Result<Option<Arc<B::Key>>, Error> {
        let (Some(rules), Some(_)) = (&policy.policy.hd, loaded.chain.as_ref()) else {
            if path.depth() > 0 {
                return Err(Error::InvalidArgument("a path is only for HD roots"));
            }
            return Ok(None);
        };
        if path.depth() == 0 {
            return Err(Error::InvalidArgument("an HD root signs only at a path"));
        }
        rules.check(path)?;
        let indices = path.indices();
        if let Some(key) = self.derived.get(key_id, &indices) {
            return Ok(Some(key));
        }
        let root = loaded.root(self.key_of(loaded)?).ok_or(Error::Internal)?;
        let key = Arc::new(B::load(&root.derive(path)?)?);
        self.derived.insert(key_id, &indices, Arc::clone(&key));
        Ok(Some(key))
    }

    /// The public key and extended public key at `path` under an HD root, if the root's current
    /// policy allows the path.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`], [`Error::InvalidArgument`] for a key that is
    /// not a root, [`Error::Denied`] for a path outside its subtrees.
    pub(crate) fn derived_identity(&self, key_id: &KeyId, path: &HdPath) -> Result<Derived, Error> {
        self.require(Phase::Ready)?;
        let keys = read(&self.keys);
        let loaded = keys.get(key_id).ok_or(Error::KeyNotFound)?;
        let policy = read(&self.policies).get(loaded.policy);
        let (Some(rules), Some(root)) = (&policy.policy.hd, loaded.root(self.key_of(loaded)?))
        else {
            return Err(Error::InvalidArgument("a path is only for HD roots"));
        };
        rules.check(path)?;
        let (public, xpub) = root.public_at(path, XpubVersion::Xpub)?;
        Ok(Derived { public, xpub })
    }

    /// A loaded key's current policy (a snapshot: it may change before the caller acts, so
    /// decisions that matter are made again under [`Vault::sign`] or [`Vault::update_policy`]).
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`].
    pub(crate) fn policy(&self, id: &KeyId) -> Result<Arc<PolicyEntry>, Error> {
        self.require(Phase::Ready)?;
        let keys = read(&self.keys);
        let loaded = keys.get(id).ok_or(Error::KeyNotFound)?;
        Ok(read(&self.policies).get(loaded.policy))
    }

    /// A loaded key's public identity.
    ///
    /// # Errors
    /// [`Error::NotReady`], [`Error::KeyNotFound`].
    pub(crate) fn identity(&self, id: &KeyId) -> Result<KeySummary, Error> {
        self.require(Phase::Ready)?;
        let keys = read(&self.keys);
        let loaded = keys.get(id).ok_or(Error::KeyNotFound)?;
        let key = self.key_of(loaded)?;
        Ok(KeySummary {
            public: B::public_key(key),
            keyring_id: read(&self.keyring_ids).get(loaded.keyring),
            policy: read(&self.policies).get(loaded.policy),
            root_fingerprint: loaded
                .root(key)
                .map(|root| root.fingerprint())
                .transpose()?,
        })
    }
}

/// Refuses a root's policy without HD rules.
fn root_policy(policy: &KeyPolicy) -> Result<(), Error> {
    if policy.hd.is_none() {
        return Err(Error::InvalidArgument("an HD root's policy needs hd rules"));
    }
    Ok(())
}

/// Refuses HD rules on a key that is not a root.
fn single_key_policy(policy: &KeyPolicy) -> Result<(), Error> {
    if policy.hd.is_some() {
        return Err(Error::InvalidArgument("hd rules are only for HD roots"));
    }
    Ok(())
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
