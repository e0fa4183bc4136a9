//! The enclave's one error type, and its single mapping to a gRPC status with a static message.

use tonic::Status;

/// Everything that can go wrong inside the enclave.
///
/// Detail stays here and in the enclave's log; the gRPC status a caller sees carries only a
/// generic, static message per failure class (see the `From<Error> for Status` impl).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request field is malformed. The message is static and names the field.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A stamp failed to verify, there were none, or the body is stale or replayed. The detail
    /// is static and goes only to the enclave's log.
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// The body's timestamp breaks the time rules (older than the window, dated beyond the
    /// future skew, or before this boot). Retryable by stamping a new body.
    #[error("stale: {0}")]
    Stale(&'static str),
    /// The stamps verified but do not satisfy the policy (quorum, approvers, scheme).
    #[error("not permitted: {0}")]
    Denied(&'static str),
    /// A rule on the content of what is to be signed refused it. The message names the rule
    /// class ("value above limit") and is shown to the caller; it never holds request content.
    #[error("refused by rule: {0}")]
    Refused(&'static str),
    /// The key's rate limit is used up.
    #[error("rate limit exceeded")]
    RateLimited,
    /// The nonce cache, or one API key's quota in it, is full of live nonces; accepting more
    /// would mean forgetting some.
    #[error("replay cache: {0}")]
    ReplayCacheFull(&'static str),
    /// The enclave holds as many keyrings, keys or policies as it is configured for.
    #[error("capacity: {0}")]
    Capacity(&'static str),
    /// No such key is loaded.
    #[error("key not found")]
    KeyNotFound,
    /// No such keyring is open.
    #[error("keyring not found")]
    KeyringNotFound,
    /// The enclave is still loading keys.
    #[error("enclave is not ready")]
    NotReady,
    /// The call is not allowed in the current phase.
    #[error("call not allowed in this phase")]
    WrongPhase,
    /// An invariant broke; the enclave refuses everything until restarted.
    #[error("enclave is unrecoverable")]
    Unrecoverable,
    /// Bytes are not a valid secp256k1 secret scalar.
    #[error("invalid secret scalar")]
    InvalidSecret,
    /// A sealed record or wrapped key failed authentication, or is malformed. One opaque variant
    /// for every cryptographic failure, so callers cannot build an oracle.
    #[error("seal check failed")]
    SealCheckFailed,
    /// Attestation failed (no NSM, or the module refused).
    #[error("attestation: {0}")]
    Attestation(&'static str),
    /// The key-wrapping provider failed.
    #[error("key-wrapping provider failed: {0}")]
    Provider(&'static str),
    /// The operating system's RNG failed.
    #[error("OS RNG failed")]
    Rng(#[from] getrandom::Error),
    /// File or socket I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Serving gRPC failed.
    #[error("transport: {0}")]
    Transport(#[from] Box<signer_proto::transport::Error>),
    /// Any other internal failure.
    #[error("internal error")]
    Internal,
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(field) => Status::invalid_argument(field),
            Error::Unauthenticated(_) => Status::unauthenticated("request not authenticated"),
            Error::Stale(_) => Status::unauthenticated(signer_proto::STALE_MESSAGE),
            Error::Denied(_) => Status::permission_denied("request not permitted"),
            Error::Refused(rule) => Status::permission_denied(rule),
            Error::RateLimited => Status::resource_exhausted("rate limit exceeded"),
            Error::ReplayCacheFull(_) => {
                Status::resource_exhausted("too many requests; retry later")
            }
            Error::Capacity(_) => Status::resource_exhausted("enclave capacity reached"),
            Error::KeyNotFound => Status::not_found("key not found"),
            Error::KeyringNotFound => Status::not_found("keyring not found"),
            Error::NotReady => Status::unavailable("enclave is loading keys"),
            Error::WrongPhase => Status::failed_precondition("call not allowed in this phase"),
            Error::Unrecoverable => Status::unavailable("enclave is unrecoverable; restart it"),
            Error::SealCheckFailed => Status::permission_denied("seal check failed"),
            // Static, secret-free causes ("KMS unreachable: …"): the host logs them for operators;
            // its public API turns them into a generic UNAVAILABLE.
            Error::Provider(cause) => Status::unavailable(cause),
            Error::Attestation(_) => Status::unavailable("attestation unavailable"),
            Error::InvalidSecret
            | Error::Rng(_)
            | Error::Io(_)
            | Error::Transport(_)
            | Error::Internal => Status::internal("internal error"),
        }
    }
}
