//! What the host supplies on its own account: stored keyrings, sealed records and AWS
//! credentials. Parsed into domain types; their authenticity is checked where they are opened
//! (the provider for keyrings, the seal for records).

use signer_proto::pb;

use crate::Error;
use crate::hd::HdPath;
use crate::ids::{KeyId, KeyringId};
use crate::vault::SealedRecord;

/// A sealed record as the host stored it.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed id or public key.
pub(crate) fn record(key: pb::SealedKey) -> Result<SealedRecord, Error> {
    Ok(SealedRecord {
        key_id: KeyId::parse(&key.key_id)?,
        keyring_id: KeyringId::parse(&key.keyring_id)?,
        public_key: key
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("public key"))?,
        policy: key.policy,
        label: key.label,
        sealed: key.sealed,
    })
}

/// A stored keyring to open.
#[derive(Debug)]
pub(crate) struct StoredKeyring {
    /// Its id.
    pub id: KeyringId,
    /// The provider-wrapped keyring key.
    pub wrapped: Vec<u8>,
    /// The encoded admin set, as created.
    pub admins: Vec<u8>,
    /// The seal binding the admin set to the keyring key.
    pub admins_seal: Vec<u8>,
}

/// Largest wrapped keyring key accepted (a KMS `CiphertextBlob` is under 200 bytes).
const MAX_WRAPPED: usize = 4096;

/// A `LoadKeyring` request.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed id or oversized fields.
pub(crate) fn keyring(request: pb::LoadKeyringRequest) -> Result<StoredKeyring, Error> {
    if request.wrapped_key.len() > MAX_WRAPPED || request.admins.len() > MAX_WRAPPED {
        return Err(Error::InvalidArgument("stored keyring too large"));
    }
    Ok(StoredKeyring {
        id: KeyringId::parse(&request.keyring_id)?,
        wrapped: request.wrapped_key,
        admins: request.admins,
        admins_seal: request.admins_seal,
    })
}

/// A `GetPublicKey` request: the key, the path under an HD root (empty for none), and the
/// caller's challenge (at most 64 bytes), echoed in the signed statement.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed id, an oversized challenge or a path deeper than
/// 255.
pub(crate) fn key_request(request: &pb::GetKeyRequest) -> Result<(KeyId, HdPath, &[u8]), Error> {
    if request.challenge.len() > 64 {
        return Err(Error::InvalidArgument("challenge longer than 64 bytes"));
    }
    Ok((
        KeyId::parse(&request.key_id)?,
        HdPath::from_indices(&request.path)?,
        &request.challenge,
    ))
}

/// Checks the shape of `SetCredentials` (the values themselves are KMS's to judge).
///
/// # Errors
/// [`Error::InvalidArgument`].
pub(crate) fn credentials(c: &pb::AwsCredentials) -> Result<(), Error> {
    if c.access_key_id.is_empty()
        || c.secret_access_key.is_empty()
        || c.access_key_id.len() > 256
        || c.secret_access_key.len() > 256
        || c.session_token.len() > 8192
    {
        return Err(Error::InvalidArgument("malformed credentials"));
    }
    Ok(())
}
