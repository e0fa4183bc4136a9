//! The host's one error type.

/// Everything that can go wrong on the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file does not parse or names unknown fields.
    #[error("configuration: {0}")]
    Config(#[from] Box<toml::de::Error>),
    /// The configuration parses but is inconsistent.
    #[error("configuration: {0}")]
    ConfigInvalid(&'static str),
    /// File or process I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The key store failed.
    #[error("key store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The PostgreSQL key store failed.
    #[error("key store: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The key store cannot be used as it is (an old schema, or a missing row).
    #[error("key store: {0}")]
    StoreState(String),
    /// A policy change lost a race: the store already holds this or a newer policy version.
    #[error("key store holds a policy of the same or a newer version for {0}")]
    StoreConflict(String),
    /// A stored row is not what the host wrote.
    #[error("key store holds a malformed row: {0}")]
    CorruptRow(&'static str),
    /// Binding, dialing or serving failed.
    #[error("transport: {0}")]
    Transport(#[from] Box<signer_proto::transport::Error>),
    /// AWS credentials for the enclave could not be obtained.
    #[error("AWS credentials: {0}")]
    Credentials(&'static str),
    /// The enclave refused or failed a call during loading.
    #[error("enclave: {0}")]
    Enclave(#[from] Box<tonic::Status>),
}
