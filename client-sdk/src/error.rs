//! The SDK's one error type.

/// Everything an SDK call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service answered with an error status (after retries, for `UNAVAILABLE`).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
    /// The address or connection failed.
    #[error("transport: {0}")]
    Transport(#[from] Box<signer_proto::transport::Error>),
    /// An argument is malformed (checked before sending).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The service returned something that does not verify: a signature that fails, a public key
    /// whose forms disagree, a reply for another key. Never retried; report it.
    #[error("verification failed: {0}")]
    Verification(&'static str),
    /// An attestation document failed verification; the message names the first failed check.
    #[error("attestation rejected: {0}")]
    Attestation(&'static str),
    /// An API key file could not be read or written, or does not hold a supported key.
    #[error("API key: {0}")]
    ApiKey(String),
    /// The call needs something the client was not configured with (an API key, an
    /// attestation policy).
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    /// The OS RNG failed (request nonces).
    #[error("OS RNG failed")]
    Rng(#[from] getrandom::Error),
}

impl From<signer_attestation::Error> for Error {
    fn from(error: signer_attestation::Error) -> Self {
        match error {
            signer_attestation::Error::Attestation(why) => Error::Attestation(why),
            signer_attestation::Error::Image(why) => Error::InvalidArgument(why),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(Box::new(status))
    }
}

impl From<signer_proto::transport::Error> for Error {
    fn from(error: signer_proto::transport::Error) -> Self {
        Error::Transport(Box::new(error))
    }
}

impl Error {
    /// The gRPC code, when the service answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}
