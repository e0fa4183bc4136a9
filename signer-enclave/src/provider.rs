//! Key-wrapping providers: where keyring keys come from and how they are unwrapped at boot.
//!
//! Production uses [`kms::KmsProvider`]: AWS KMS with Nitro attestation. `local::LocalProvider`
//! is a **development stand-in** that keeps a master key in a 0600 file; it exists only in builds
//! with the `dev-provider` feature (and in unit tests).

pub mod kms;
#[cfg(any(test, feature = "dev-provider"))]
pub mod local;
pub mod recipient;

use crate::Error;
use crate::ids::KeyringId;
use crate::secret::KeyringKey;

/// Makes and unwraps keyring keys. One call per keyring, never per wallet key.
#[async_trait::async_trait]
pub trait KeyWrapper: Send + Sync + 'static {
    /// Short name reported in status ("local", "aws-kms").
    fn name(&self) -> &'static str;

    /// Makes a new keyring key bound to `keyring_id`; returns it and its wrapped form, which the
    /// host stores.
    ///
    /// # Errors
    /// [`Error::Provider`] or [`Error::Rng`] when the key cannot be made.
    async fn generate(&self, keyring_id: &KeyringId) -> Result<(KeyringKey, Vec<u8>), Error>;

    /// Unwraps a stored keyring key; fails if it was wrapped for another keyring id.
    ///
    /// # Errors
    /// [`Error::SealCheckFailed`] when the wrapped key does not open; [`Error::Provider`] when
    /// the provider cannot be reached.
    async fn unwrap(&self, keyring_id: &KeyringId, wrapped: &[u8]) -> Result<KeyringKey, Error>;
}
