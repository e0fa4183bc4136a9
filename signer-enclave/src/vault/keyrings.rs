//! Keyrings in the vault: made through the provider under an authorisation, or opened from the
//! host's store at boot; each with its admin set bound to its key by a seal.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Phase, Vault, read, write};
use crate::Error;
use crate::auth::{Authorized, Committed};
use crate::backend::Backend;
use crate::ids::KeyringId;
use crate::intake::host::StoredKeyring;
use crate::policy::{self, KeyringAdmins};
use crate::provider::KeyWrapper;
use crate::seal;
use crate::secret::KeyringKey;

/// An open keyring: its key and its admin set.
pub(super) struct OpenKeyring {
    /// Boxed: the keyring table moves its entries when it grows and frees the old table
    /// unwiped; a boxed key stays where it is and is wiped where it was made.
    pub(super) key: Box<KeyringKey>,
    pub(super) admins: Arc<KeyringAdmins>,
    admins_hash: [u8; 32],
}

/// A keyring made by [`Vault::create_keyring`], for the host to store.
#[derive(Debug)]
pub(crate) struct NewKeyring {
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

impl<B: Backend> Vault<B> {
    /// Refuses one more keyring beyond the capacity, `open` being how many are open.
    fn keyring_room(&self, open: usize) -> Result<(), Error> {
        if open >= self.capacity.keyrings {
            return Err(Error::Capacity("keyring capacity reached"));
        }
        Ok(())
    }

    fn insert_keyring(
        &self,
        id: KeyringId,
        key: KeyringKey,
        admins: KeyringAdmins,
        admins_hash: [u8; 32],
    ) -> Result<(), Error> {
        let mut keyrings = write(&self.keyrings);
        if let Some(existing) = keyrings.get(&id) {
            // The same keyring loaded twice: only with the same key and admin set.
            return if existing.key.ct_eq(&key) && existing.admins_hash == admins_hash {
                Ok(())
            } else {
                Err(Error::SealCheckFailed)
            };
        }
        // Checked again under the lock: concurrent creations or loads may have filled it.
        self.keyring_room(keyrings.len())?;
        keyrings.insert(
            id,
            OpenKeyring {
                key: Box::new(key),
                admins: Arc::new(admins),
                admins_hash,
            },
        );
        Ok(())
    }

    /// Makes a new keyring through the provider, administered by `admins`. Requires ready, so
    /// that a refusal while loading leaves the request retryable. The nonce is spent only once
    /// the provider has answered.
    ///
    /// # Errors
    /// [`Error::NotReady`]; [`Error::Capacity`]; provider failures.
    pub(crate) async fn create_keyring(
        &self,
        provider: &dyn KeyWrapper,
        admins: KeyringAdmins,
        mut authorized: Authorized<'_>,
    ) -> Result<(NewKeyring, Committed), Error> {
        self.require(Phase::Ready)?;
        self.keyring_room(read(&self.keyrings).len())?;
        let id = KeyringId::random()?;
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let (key, wrapped) = provider.generate(&id).await?;
        let encoded = admins.encode();
        let admins_hash = policy::admins_hash(&encoded);
        let admins_seal = seal::seal_admins(&key, &id, &admins_hash)?;
        self.insert_keyring(id, key, admins, admins_hash)?;
        authorized.about(id);
        let committed = authorized.commit();
        tracing::info!(keyring = %id, provider = provider.name(), "keyring created");
        Ok((
            NewKeyring {
                id,
                wrapped,
                admins: encoded,
                admins_hash,
                admins_seal,
            },
            committed,
        ))
    }

    /// Unwraps a stored keyring through the provider and checks its admin set's seal. Loading
    /// the same keyring twice is allowed only with the same key and admin set.
    ///
    /// # Errors
    /// A ready vault takes keyrings too: another enclave sharing the host's store may have made
    /// one (the provider unwraps only this deployment's, and the admin seal is checked alike).
    ///
    /// # Errors
    /// [`Error::Unrecoverable`]; [`Error::Capacity`]; provider failures;
    /// [`Error::SealCheckFailed`] for an admin set that is not the keyring's.
    pub(crate) async fn load_keyring(
        &self,
        provider: &dyn KeyWrapper,
        stored: &StoredKeyring,
    ) -> Result<(), Error> {
        if self.phase() == Phase::Unrecoverable {
            return Err(Error::Unrecoverable);
        }
        let id = stored.id;
        {
            let keyrings = read(&self.keyrings);
            if !keyrings.contains_key(&id) {
                self.keyring_room(keyrings.len())?;
            }
        }
        let parsed = KeyringAdmins::decode(&stored.admins)?;
        let admins_hash = policy::admins_hash(&stored.admins);
        self.provider_calls.fetch_add(1, Ordering::Relaxed);
        let key = provider.unwrap(&id, &stored.wrapped).await?;
        seal::open_admins(&key, &id, &admins_hash, &stored.admins_seal)?;
        self.insert_keyring(id, key, parsed, admins_hash)?;
        tracing::info!(keyring = %id, "keyring opened");
        Ok(())
    }

    /// An open keyring's admin set (fixed at its creation).
    ///
    /// # Errors
    /// [`Error::NotReady`]; [`Error::KeyringNotFound`].
    pub(crate) fn keyring_admins(&self, keyring: &KeyringId) -> Result<Arc<KeyringAdmins>, Error> {
        self.require(Phase::Ready)?;
        read(&self.keyrings)
            .get(keyring)
            .map(|open| Arc::clone(&open.admins))
            .ok_or(Error::KeyringNotFound)
    }
}
