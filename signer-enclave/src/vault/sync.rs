//! Records that reach a ready vault from a key store shared by several hosts: keys another
//! enclave of the deployment created, and policy changes it made.
//!
//! A record is taken only if it opens under an open keyring with its own binding, as at load.
//! A key already held keeps its secret, keyring and public key; only its policy can move, and
//! never to an older version. Two changes racing through two enclaves can both produce the same
//! next version: the store keeps one, and a record of the same version replaces the one held,
//! so every enclave converges on the store's. A host can therefore choose between policies the
//! key's approvers authorised at the same version — as at boot, where it chooses which stored
//! record to send — but cannot go back to an older version while the enclave runs.

use subtle::ConstantTimeEq as _;

use super::{Phase, Rejection, SealedRecord, Vault, read, write};
use crate::Error;
use crate::backend::Backend;
use crate::policy::KeyPolicy;
use crate::seal::{self, Binding};

/// What syncing one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Synced {
    /// A key this vault did not hold, now loaded.
    Added,
    /// A held key's policy, replaced by the record's.
    Replaced,
    /// Already held, under this policy.
    Current,
}

impl<B: Backend> Vault<B> {
    /// Brings one stored record into a ready vault.
    ///
    /// # Errors
    /// [`Error::WrongPhase`] unless ready; [`Error::Unrecoverable`] as at load. A record that
    /// does not open, names another keyring or public key than the held key, or carries an
    /// older policy is refused with a [`Rejection`].
    pub(crate) fn sync_key(
        &self,
        record: &SealedRecord,
    ) -> Result<Result<Synced, Rejection>, Error> {
        self.require(Phase::Ready)?;
        if !read(&self.keys).contains_key(&record.key_id) {
            let added = self.insert_record(record)?;
            // One key learned while ready: checked now rather than at its first use.
            if added.is_ok()
                && let Some(loaded) = read(&self.keys).get(&record.key_id)
            {
                self.key_of(loaded)?;
            }
            return Ok(added.map(|()| Synced::Added));
        }
        let policy_hash = seal::policy_hash(&record.policy);
        // The common case, a record this vault already holds as it is: nothing to open.
        if let Some(loaded) = read(&self.keys).get(&record.key_id)
            && read(&self.policies).get(loaded.policy).hash == policy_hash
            && read(&self.keyring_ids).get(loaded.keyring) == record.keyring_id
        {
            return Ok(Ok(Synced::Current));
        }
        let Ok(policy) = KeyPolicy::decode(&record.policy) else {
            return Ok(Err(Rejection::InvalidPolicy));
        };
        let binding = Binding {
            key_id: &record.key_id,
            keyring_id: &record.keyring_id,
            public_key: &record.public_key,
            policy_hash: &policy_hash,
        };
        {
            let keyrings = read(&self.keyrings);
            let Some(keyring) = keyrings.get(&record.keyring_id) else {
                return Ok(Err(Rejection::UnknownKeyring));
            };
            // Authenticates the record; the secret it holds is the held key's (checked below
            // through the public key) and is dropped unused.
            if seal::open_any(&keyring.key, &binding, &record.sealed).is_err() {
                return Ok(Err(Rejection::SealCheckFailed));
            }
        }
        let mut keys = write(&self.keys);
        let Some(loaded) = keys.get_mut(&record.key_id) else {
            return Ok(Err(Rejection::SealCheckFailed));
        };
        let same_key =
            bool::from(B::public_key_compressed(self.key_of(loaded)?).ct_eq(&record.public_key))
                && read(&self.keyring_ids).get(loaded.keyring) == record.keyring_id;
        if !same_key {
            return Ok(Err(Rejection::SealCheckFailed));
        }
        let current = read(&self.policies).get(loaded.policy);
        if current.hash == policy_hash {
            return Ok(Ok(Synced::Current));
        }
        if policy.version < current.policy.version {
            return Ok(Err(Rejection::Stale));
        }
        if policy.hd.is_some() != loaded.chain.is_some() {
            return Ok(Err(Rejection::InvalidPolicy));
        }
        let mut policies = write(&self.policies);
        if !policies.has_room_replacing(&policy_hash, loaded.policy) {
            return Ok(Err(Rejection::OverCapacity));
        }
        let version = policy.version;
        policies.release(loaded.policy);
        loaded.policy = policies.acquire(policy_hash, &record.policy, || Ok(policy))?;
        tracing::info!(key_id = %record.key_id, from = current.policy.version, to = version, "policy replaced from the store");
        Ok(Ok(Synced::Replaced))
    }
}
