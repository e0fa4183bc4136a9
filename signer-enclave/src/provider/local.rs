//! The local key-wrapping provider: a **development stand-in** for AWS KMS.
//!
//! A 256-bit master key lives in a file readable only by its owner (mode 0600). Keyring keys are
//! wrapped with AES-256-GCM under it, bound to the keyring id. Anyone who can read the file can
//! unwrap every keyring: it gives none of the guarantees of KMS with attestation, and exists so the
//! whole stack runs on a laptop or in CI without an AWS account.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use zeroize::Zeroizing;

use super::KeyWrapper;
use crate::Error;
use crate::ids::KeyringId;
use crate::seal::frame;
use crate::secret::{KeyringKey, MasterKey, SECRET_LEN};

const WRAP_VERSION: u8 = 1;
const WRAP_DOMAIN: &[u8] = b"signer.v1 local keyring\0";

/// The development stand-in provider. Never use it in production.
pub struct LocalProvider {
    master: MasterKey,
}

impl core::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalProvider").finish_non_exhaustive()
    }
}

impl LocalProvider {
    /// Opens the master-key file, creating it (mode 0600, fresh random key) when `create` is set
    /// and the file does not exist.
    ///
    /// # Errors
    /// [`Error::Provider`] when the file is readable by group or others, or is not exactly 32
    /// bytes; [`Error::Io`] on I/O failure.
    pub fn open(path: &Path, create: bool) -> Result<Self, Error> {
        if create && !path.exists() {
            let master = MasterKey::random()?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(master.expose_secret())?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), "created a new local master key (development stand-in for KMS)");
            return Ok(Self { master });
        }
        let mut file = OpenOptions::new().read(true).open(path)?;
        if file.metadata()?.mode() & 0o077 != 0 {
            return Err(Error::Provider(
                "master-key file must not be readable by group or others (chmod 600)",
            ));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(SECRET_LEN + 1));
        std::io::Read::by_ref(&mut file)
            .take(u64::try_from(SECRET_LEN + 1).expect("32 fits in u64 qed"))
            .read_to_end(&mut bytes)?;
        let bytes: &[u8; SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Provider("master-key file must hold exactly 32 bytes"))?;
        Ok(Self {
            master: MasterKey::from_bytes(bytes),
        })
    }

    fn aad(keyring_id: &KeyringId) -> Vec<u8> {
        [WRAP_DOMAIN, keyring_id.to_string().as_bytes()].concat()
    }
}

#[async_trait::async_trait]
impl KeyWrapper for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, keyring_id: &KeyringId) -> Result<(KeyringKey, Vec<u8>), Error> {
        let key = KeyringKey::random()?;
        let wrapped = frame::seal(
            self.master.expose_secret(),
            WRAP_VERSION,
            key.expose_secret(),
            &Self::aad(keyring_id),
        )?;
        Ok((key, wrapped))
    }

    async fn unwrap(&self, keyring_id: &KeyringId, wrapped: &[u8]) -> Result<KeyringKey, Error> {
        let key = frame::open::<SECRET_LEN>(
            self.master.expose_secret(),
            WRAP_VERSION,
            wrapped,
            &Self::aad(keyring_id),
        )?;
        Ok(KeyringKey::from_bytes(&key))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn wraps_and_unwraps_bound_to_keyring_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let provider = LocalProvider::open(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let id = KeyringId::random().unwrap();
        let (key, wrapped) = provider.generate(&id).await.unwrap();
        // Reopening the same file unwraps what the first instance wrapped.
        let reopened = LocalProvider::open(&path, false).unwrap();
        assert!(reopened.unwrap(&id, &wrapped).await.unwrap().ct_eq(&key));
        assert!(matches!(
            reopened
                .unwrap(&KeyringId::random().unwrap(), &wrapped)
                .await,
            Err(Error::SealCheckFailed)
        ));
        let mut tampered = wrapped.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            reopened.unwrap(&id, &tampered).await,
            Err(Error::SealCheckFailed)
        ));
    }

    #[test]
    fn refuses_loose_permissions_and_bad_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            LocalProvider::open(&path, false),
            Err(Error::Provider(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(LocalProvider::open(&path, false).is_ok());
        std::fs::write(&path, [1u8; 33]).unwrap();
        assert!(matches!(
            LocalProvider::open(&path, false),
            Err(Error::Provider(_))
        ));
        assert!(matches!(
            LocalProvider::open(&dir.path().join("missing"), false),
            Err(Error::Io(_))
        ));
    }
}
