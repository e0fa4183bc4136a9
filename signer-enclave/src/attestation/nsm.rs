//! The Nitro Security Module attestor (`/dev/nsm`), through `aws-nitro-enclaves-nsm-api`.

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use serde_bytes::ByteBuf;

use super::{AttestRequest, Attestor};
use crate::Error;

/// The real attestor. Holds the NSM device open for the life of the enclave.
#[derive(Debug)]
pub struct NsmAttestor {
    fd: i32,
}

impl NsmAttestor {
    /// Opens `/dev/nsm`.
    ///
    /// # Errors
    /// [`Error::Attestation`] when there is no NSM device: this is not a Nitro enclave, and the
    /// enclave must not start pretending to be one.
    pub fn open() -> Result<Self, Error> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(Error::Attestation(
                "no Nitro Security Module (/dev/nsm): not running in a Nitro enclave",
            ));
        }
        Ok(Self { fd })
    }
}

impl Drop for NsmAttestor {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

impl Attestor for NsmAttestor {
    fn name(&self) -> &'static str {
        "nsm"
    }

    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, Error> {
        request.check()?;
        let bytes = |b: Option<&[u8]>| b.map(|b| ByteBuf::from(b.to_vec()));
        let response = driver::nsm_process_request(
            self.fd,
            Request::Attestation {
                user_data: bytes(request.user_data),
                nonce: bytes(request.nonce),
                public_key: bytes(request.public_key),
            },
        );
        match response {
            Response::Attestation { document } => Ok(document),
            Response::Error(code) => {
                tracing::error!(?code, "NSM refused an attestation request");
                Err(Error::Attestation(
                    "the NSM refused the attestation request",
                ))
            }
            _ => Err(Error::Attestation("unexpected NSM response")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On machines without `/dev/nsm` (every development machine and CI), opening fails with a
    /// clear error instead of producing anything.
    #[test]
    fn refuses_to_start_without_the_nsm() {
        if std::path::Path::new("/dev/nsm").exists() {
            return; // inside a real enclave: nothing to refuse
        }
        assert!(matches!(NsmAttestor::open(), Err(Error::Attestation(_))));
    }
}
