//! Attestation: documents signed by the Nitro Security Module that bind the enclave's
//! measurements (PCRs) to a caller's nonce and, optionally, a public key or user data.
//!
//! [`nsm::NsmAttestor`] is the real one (refuses to start without `/dev/nsm`).
//! `dev::DevAttestor`, behind the `dev-attestor` cargo feature, is a **development stand-in**:
//! same COSE_Sign1 format and fields, signed by a development root that verifiers pinned to the
//! AWS root reject.

#[cfg(feature = "dev-attestor")]
pub mod dev;
pub mod nsm;

use crate::Error;

/// NSM's limit on `public_key`, in bytes.
pub const MAX_PUBLIC_KEY: usize = 1024;
/// NSM's limit on `user_data` and on `nonce`, in bytes each.
pub const MAX_USER_DATA: usize = 512;

/// What to bind into a document.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttestRequest<'a> {
    /// A public key the enclave holds the private half of.
    pub public_key: Option<&'a [u8]>,
    /// Data the enclave vouches for.
    pub user_data: Option<&'a [u8]>,
    /// The verifier's freshness nonce.
    pub nonce: Option<&'a [u8]>,
}

impl AttestRequest<'_> {
    /// Checks NSM's size limits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field over its limit.
    pub fn check(&self) -> Result<(), Error> {
        if self.public_key.is_some_and(|k| k.len() > MAX_PUBLIC_KEY) {
            return Err(Error::InvalidArgument("public_key longer than 1024 bytes"));
        }
        if self.user_data.is_some_and(|d| d.len() > MAX_USER_DATA) {
            return Err(Error::InvalidArgument("user_data longer than 512 bytes"));
        }
        if self.nonce.is_some_and(|n| n.len() > MAX_USER_DATA) {
            return Err(Error::InvalidArgument("nonce longer than 512 bytes"));
        }
        Ok(())
    }
}

/// Produces attestation documents.
pub trait Attestor: Send + Sync + 'static {
    /// Short name for status and logs ("nsm", "development").
    fn name(&self) -> &'static str;

    /// A COSE_Sign1 attestation document binding `request`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] over NSM's limits; [`Error::Attestation`] if the module fails.
    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, Error>;
}
