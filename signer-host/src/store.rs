//! The host's key store: wrapped keyring keys and sealed wallet records. It holds nothing an
//! attacker with full access to it could sign with.
//!
//! [`KeyStore`] is synchronous; async callers run it on the blocking pool. SQLite is the
//! embedded default ([`sqlite::SqliteStore`]); PostgreSQL ([`postgres::PgStore`]) is the store
//! several hosts share.
//!
//! Every insert and update of a key takes the next value of a store-wide *revision*, in commit
//! order; a host whose enclave is ready follows [`KeyStore::changes_after`] to bring it keys and
//! policy changes that other hosts wrote.

pub mod postgres;
pub mod sqlite;

use prost::Message as _;

use signer_proto::pb;

use crate::Error;

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Io(std::io::Error::other("store task failed")))?
}

/// A keyring as stored: its id and its key wrapped by the enclave's provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKeyring {
    /// `kr-` id.
    pub keyring_id: String,
    /// Provider that wrapped it ("local", "aws-kms").
    pub provider: String,
    /// The wrapped keyring key (opaque to the host).
    pub wrapped_key: Vec<u8>,
    /// The encoded admin set (public keys).
    pub admins: Vec<u8>,
    /// The enclave's seal binding the admin set to the keyring key (opaque to the host).
    pub admins_seal: Vec<u8>,
}

/// A wallet key as stored: public identity and the sealed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    /// `k-` id.
    pub key_id: String,
    /// Sealing keyring.
    pub keyring_id: String,
    /// SEC1 compressed public key.
    pub public_key: Vec<u8>,
    /// Encoded policy, bound into the sealed record.
    pub policy: Vec<u8>,
    /// Creation label.
    pub label: String,
    /// The sealed record (opaque to the host).
    pub sealed: Vec<u8>,
    /// The encoded `KeyInfo` the enclave returned at creation, served by `ListKeys`.
    pub info: Vec<u8>,
}

impl StoredKey {
    /// What the store keeps of a sealed record the enclave returned, with the encoded
    /// `KeyInfo` it answered with.
    pub fn from_sealed(sealed: pb::SealedKey, info: Vec<u8>) -> Self {
        Self {
            key_id: sealed.key_id,
            keyring_id: sealed.keyring_id,
            public_key: sealed.public_key,
            policy: sealed.policy,
            label: sealed.label,
            sealed: sealed.sealed,
            info,
        }
    }
}

impl From<StoredKey> for pb::SealedKey {
    fn from(key: StoredKey) -> Self {
        pb::SealedKey {
            key_id: key.key_id,
            keyring_id: key.keyring_id,
            public_key: key.public_key,
            policy: key.policy,
            label: key.label,
            sealed: key.sealed,
        }
    }
}

impl From<pb::EnclaveCreateKeyringResponse> for StoredKeyring {
    fn from(created: pb::EnclaveCreateKeyringResponse) -> Self {
        Self {
            keyring_id: created.keyring_id,
            provider: created.provider,
            wrapped_key: created.wrapped_key,
            admins: created.admins,
            admins_seal: created.admins_seal,
        }
    }
}

impl From<&StoredKeyring> for pb::LoadKeyringRequest {
    fn from(keyring: &StoredKeyring) -> Self {
        pb::LoadKeyringRequest {
            keyring_id: keyring.keyring_id.clone(),
            wrapped_key: keyring.wrapped_key.clone(),
            admins: keyring.admins.clone(),
            admins_seal: keyring.admins_seal.clone(),
        }
    }
}

/// An audit entry as stored: the enclave's signed bytes, and where it sits in its boot's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAudit {
    /// The boot that made it.
    pub boot_id: Vec<u8>,
    /// Its sequence in that boot's chain.
    pub sequence: u64,
    /// The encoded `AuditEntry`.
    pub entry: Vec<u8>,
    /// The enclave's signature over it.
    pub signature: Vec<u8>,
}

impl StoredAudit {
    /// What the store keeps of an entry the enclave handed over; `None` if it does not decode
    /// (an enclave never sends such an entry; the host keeps nothing it cannot index).
    pub fn from_signed(signed: pb::SignedAuditEntry) -> Option<Self> {
        let entry = pb::AuditEntry::decode(signed.entry.as_slice()).ok()?;
        Some(Self {
            boot_id: entry.boot_id,
            sequence: entry.sequence,
            entry: signed.entry,
            signature: signed.signature,
        })
    }
}

/// Durable storage of keyrings and sealed records.
pub trait KeyStore: Send + Sync + 'static {
    /// Every keyring, oldest first.
    ///
    /// # Errors
    /// Store failures.
    fn keyrings(&self) -> Result<Vec<StoredKeyring>, Error>;

    /// Adds a keyring. Durable when this returns.
    ///
    /// # Errors
    /// Store failures, including a duplicate id.
    fn insert_keyring(&self, keyring: &StoredKeyring) -> Result<(), Error>;

    /// Adds a wallet key. Durable when this returns.
    ///
    /// # Errors
    /// Store failures, including a duplicate id.
    fn insert_key(&self, key: &StoredKey) -> Result<(), Error>;

    /// Replaces a key's policy, sealed record and info after a policy change, only if the
    /// stored policy is of an older version (two changes racing through two hosts: the first
    /// stored wins). Durable when this returns.
    ///
    /// # Errors
    /// [`Error::StoreConflict`] if the stored policy is as new or newer; store failures,
    /// including an unknown key.
    fn update_key(&self, key: &StoredKey) -> Result<(), Error>;

    /// The label stored with a key, if the key is stored.
    ///
    /// # Errors
    /// Store failures.
    fn label(&self, key_id: &str) -> Result<Option<String>, Error>;

    /// Up to `limit` keys after position `after` (0 for the start), oldest first, each with its
    /// position for the next call.
    ///
    /// # Errors
    /// Store failures.
    fn keys_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error>;

    /// The latest revision (0 for an empty store).
    ///
    /// # Errors
    /// Store failures.
    fn revision(&self) -> Result<u64, Error>;

    /// Up to `limit` keys inserted or updated after `revision`, in revision order, each with its
    /// revision for the next call.
    ///
    /// # Errors
    /// Store failures.
    fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error>;

    /// Stores audit entries; one already stored (same boot and sequence) is left as it is.
    /// Durable when this returns.
    ///
    /// # Errors
    /// Store failures.
    fn append_audit(&self, entries: &[StoredAudit]) -> Result<(), Error>;

    /// Up to `limit` audit entries after position `after`, in stored order, with positions.
    ///
    /// # Errors
    /// Store failures.
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredAudit)>, Error>;

    /// The last stored audit entry, if any.
    ///
    /// # Errors
    /// Store failures.
    fn last_audit(&self) -> Result<Option<StoredAudit>, Error>;

    /// Keeps the attestation document that vouches for a boot's signing key (the first one
    /// stored for a boot stays).
    ///
    /// # Errors
    /// Store failures.
    fn put_audit_boot(&self, boot_id: &[u8], document: &[u8]) -> Result<(), Error>;

    /// The stored attestation document of a boot.
    ///
    /// # Errors
    /// Store failures.
    fn audit_boot(&self, boot_id: &[u8]) -> Result<Option<Vec<u8>>, Error>;
}

/// The version of an encoded policy (0 for one that does not decode; the enclave never seals
/// such a record, and 0 is older than any real version).
pub(crate) fn policy_version(policy: &[u8]) -> u64 {
    pb::Policy::decode(policy).map_or(0, |policy| policy.version)
}

/// Converts a stored integer to `u64`.
pub(crate) fn unsigned(value: i64, what: &'static str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::CorruptRow(what))
}

/// Converts a `u64` to a stored integer.
pub(crate) fn signed(value: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::CorruptRow(what))
}
