//! Host configuration: TOML with unknown fields rejected. Paths, addresses and limits only,
//! never a secret value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use signer_proto::transport::Address;

use crate::Error;
use crate::credentials::CredentialSource;

/// The whole host configuration. See `signer-host.example.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to serve the public API, e.g. `tcp://0.0.0.0:50051`.
    #[serde(deserialize_with = "address")]
    pub listen: Address,
    /// How to reach (and, in development, run) the enclave.
    pub enclave: EnclaveConfig,
    /// Where sealed key material is stored.
    pub store: StoreConfig,
    /// Limits on the public API.
    #[serde(default)]
    pub limits: Limits,
    /// TLS on the public API. Absent: plaintext (only for loopback or a private network).
    pub tls: Option<TlsSettings>,
    /// The Prometheus endpoint. Absent: no metrics listener.
    pub metrics: Option<MetricsSettings>,
    /// What the enclave must attest to for the host to report SERVING. Absent: health follows
    /// the enclave's readiness only (a warning at start).
    pub attestation: Option<AttestationSettings>,
}

/// The host's own attestation check of its enclave, for health.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSettings {
    /// Allowed PCR0 values (the enclave image's SHA-384), hex; at least one.
    pub allowed_pcr0: Vec<String>,
    /// Health is NOT_SERVING once the last verified attestation is older than this.
    #[serde(default = "default_attestation_max_age_secs")]
    pub max_age_secs: u64,
    /// A development root certificate (DER or PEM) instead of the AWS Nitro root G1: only for
    /// the development attestor.
    pub development_root_file: Option<PathBuf>,
}

impl AttestationSettings {
    /// The parsed expectation.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] for no PCR0, or one that is not 48 bytes of hex.
    pub fn expectation(&self) -> Result<crate::attested::Expectation, Error> {
        let allowed_pcr0 = self
            .allowed_pcr0
            .iter()
            .map(|text| {
                hex_48(text).ok_or(Error::ConfigInvalid(
                    "attestation.allowed_pcr0 must be 48 bytes of hex",
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if allowed_pcr0.is_empty() {
            return Err(Error::ConfigInvalid(
                "attestation.allowed_pcr0 needs at least one value",
            ));
        }
        Ok(crate::attested::Expectation {
            root: self.development_root_file.clone().map_or(
                crate::attested::Root::AwsNitroG1,
                crate::attested::Root::DevelopmentFile,
            ),
            allowed_pcr0,
            max_age: Duration::from_secs(self.max_age_secs),
        })
    }
}

/// 48 bytes from 96 hex digits.
fn hex_48(text: &str) -> Option<Vec<u8>> {
    if text.len() != 96 {
        return None;
    }
    (0..48)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn default_attestation_max_age_secs() -> u64 {
    300
}

/// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP: bind it to loopback or the
/// monitoring network; it carries counts and timings only).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// A TCP address, e.g. `tcp://127.0.0.1:9464` (port 0: any free port, announced on stdout).
    #[serde(deserialize_with = "address")]
    pub listen: Address,
}

/// TLS for the public API: paths only; the files hold the host's TLS key, never wallet secrets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Server private key, PEM.
    pub key_file: PathBuf,
    /// CA certificates (PEM) whose client certificates are accepted. Present: mutual TLS is
    /// required. The enclave trusts none of this: it is defence in depth on the host.
    pub client_ca_file: Option<PathBuf>,
}

/// The enclave connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    /// The enclave's address: `vsock://CID:PORT` in production, `unix:///path` locally.
    #[serde(deserialize_with = "address")]
    pub address: Address,
    /// How often to probe the enclave's status, in milliseconds (a restart is noticed this fast).
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// A status probe unanswered this long (ms) marks the enclave hung: client calls are refused
    /// at once with UNAVAILABLE until it answers again.
    #[serde(default = "default_status_timeout_ms")]
    pub status_timeout_ms: u64,
    /// Development only: start the enclave binary as a child process and restart it when it exits.
    pub dev: Option<DevEnclave>,
    /// Where the enclave's AWS credentials for KMS come from: `imds` (the instance role; the
    /// production choice), `environment` (this process's AWS_* variables) or `none` (the enclave
    /// uses the local provider).
    #[serde(default)]
    pub aws_credentials: CredentialSource,
    /// The instance metadata service, `HOST:PORT`.
    #[serde(default = "default_imds")]
    pub imds_address: String,
}

/// A development enclave run as a supervised child process over a Unix socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevEnclave {
    /// Path of the `signer-enclave` binary.
    pub binary: PathBuf,
    /// Signing backend: `k256` or `secp256k1`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Master-key file of the local key-wrapping provider (development stand-in for KMS);
    /// created with mode 0600 if missing.
    pub master_key_file: PathBuf,
    /// Directory of the development attestor's root (a stand-in for the NSM's AWS chain);
    /// verifiers must be given `dev-root.der` from here explicitly.
    pub dev_root_dir: PathBuf,
    /// Use AWS KMS with attestation instead of the local provider (a KMS-API test server on a
    /// developer machine). Absent: the local provider, a development stand-in.
    pub kms: Option<KmsSettings>,
    /// Longest wait between restarts, in milliseconds (backoff doubles from 100 ms up to this).
    #[serde(default = "default_max_backoff_ms")]
    pub max_restart_backoff_ms: u64,
    /// The deployment id the enclave serves (stamps name it).
    #[serde(default = "default_deployment_id")]
    pub deployment_id: String,
    /// API keys that may create keyrings (`ed25519:<hex>` or `p256:<hex>`). In production
    /// these are part of the enclave image's command line (measured); here the development
    /// host passes them.
    #[serde(default)]
    pub keyring_creators: Vec<String>,
    /// Further enclave options, passed through as given (limits, skews).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// The enclave's KMS key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSettings {
    /// The key's full ARN (its region is the one called).
    pub key_arn: String,
    /// Endpoint URL (a KMS-API test server); absent for AWS.
    pub endpoint: Option<String>,
}

/// What `signer-host dev` is told about its enclave.
#[derive(Debug)]
pub struct DevEnclaveOptions {
    /// The enclave binary.
    pub binary: PathBuf,
    /// Signing backend.
    pub backend: String,
    /// KMS instead of the local provider.
    pub kms: Option<KmsSettings>,
    /// The deployment id.
    pub deployment_id: String,
    /// Keyring creators.
    pub keyring_creators: Vec<String>,
    /// Further enclave options.
    pub extra_args: Vec<String>,
}

/// Key store backend: exactly one of `sqlite` and `url`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Path of the SQLite database file (the embedded default, one host), created if missing.
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL URL, for a store several hosts share:
    /// `postgres://user:password@host:5432/db?sslmode=verify-full&sslrootcert=/path/ca.pem`.
    pub url: Option<String>,
    /// Most connections to PostgreSQL this host opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest wait for a PostgreSQL connection or statement, in milliseconds.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_connections() -> u32 {
    8
}

fn default_store_timeout_ms() -> u64 {
    10_000
}

/// Limits on the public API.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Deadline for each call, in milliseconds. The call to the enclave gets four fifths of it,
    /// so an enclave that does not answer yields UNAVAILABLE (retry, or another host) before
    /// the client's deadline.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Concurrent calls allowed on one client connection.
    #[serde(default = "default_concurrency")]
    pub concurrency_per_connection: usize,
    /// Calls in flight and sign streams open allowed to one mutual-TLS client (its
    /// certificate) across all its connections; clients without a certificate are held to the
    /// per-connection limits only.
    #[serde(default = "default_concurrency_per_client")]
    pub concurrency_per_client: usize,
    /// Concurrent HTTP/2 streams one client connection may open.
    #[serde(default = "default_streams")]
    pub max_concurrent_streams: u32,
    /// A client connection (and its TLS handshake) must send its first bytes within this
    /// (ms); one that connects and sends nothing is closed.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A client connection that sends nothing for this long is closed (ms). The host PINGs every
    /// connection at a sixth of it and live HTTP/2 clients answer, so only dead or stalled ones
    /// reach it; a PING unanswered for a third of it closes the connection too.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_request_timeout_ms(),
            concurrency_per_connection: default_concurrency(),
            concurrency_per_client: default_concurrency_per_client(),
            max_concurrent_streams: default_streams(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
}

impl Limits {
    /// The per-call deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Deadline for the call to the enclave within one client call: four fifths of it.
    pub fn enclave_timeout(&self) -> Duration {
        self.request_timeout() * 4 / 5
    }

    /// HTTP/2 keep-alive: PING interval and the wait for its answer.
    pub fn keepalive(&self) -> (Duration, Duration) {
        let idle = Duration::from_millis(self.idle_timeout_ms);
        (idle / 6, idle / 3)
    }

    /// The slow-client deadlines of the public API.
    pub fn deadlines(&self) -> signer_proto::transport::guard::Deadlines {
        signer_proto::transport::guard::Deadlines {
            handshake: Duration::from_millis(self.handshake_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

fn default_imds() -> String {
    crate::credentials::IMDS.to_owned()
}
fn default_status_interval_ms() -> u64 {
    500
}
fn default_status_timeout_ms() -> u64 {
    2_000
}
fn default_backend() -> String {
    "k256".to_owned()
}
fn default_max_backoff_ms() -> u64 {
    5_000
}
fn default_deployment_id() -> String {
    "local-dev".to_owned()
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_concurrency() -> usize {
    256
}
fn default_concurrency_per_client() -> usize {
    1024
}
fn default_streams() -> u32 {
    256
}

fn address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Config {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    /// [`Error::Config`] for syntax and unknown fields, [`Error::ConfigInvalid`] for inconsistencies.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: Config = toml::from_str(text).map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks consistency.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] naming the problem.
    pub fn validate(&self) -> Result<(), Error> {
        let config = self;
        if let Some(dev) = &config.enclave.dev {
            if !matches!(config.enclave.address, Address::Unix(_) | Address::Tcp(_)) {
                return Err(Error::ConfigInvalid(
                    "a dev enclave listens on a unix:// or tcp:// address",
                ));
            }
            if !matches!(dev.backend.as_str(), "k256" | "secp256k1") {
                return Err(Error::ConfigInvalid(
                    "enclave.dev.backend must be k256 or secp256k1",
                ));
            }
        }
        if config.store.sqlite.is_some() == config.store.url.is_some() {
            return Err(Error::ConfigInvalid(
                "[store] takes exactly one of sqlite (a file) and url (PostgreSQL)",
            ));
        }
        if config.store.max_connections == 0 || config.store.timeout_ms == 0 {
            return Err(Error::ConfigInvalid(
                "store.max_connections and store.timeout_ms must be positive",
            ));
        }
        if config.enclave.status_interval_ms == 0
            || config.enclave.status_timeout_ms == 0
            || config.limits.request_timeout_ms == 0
            || config.limits.concurrency_per_client == 0
            || config.limits.handshake_timeout_ms == 0
            || config.limits.idle_timeout_ms < 600
        {
            return Err(Error::ConfigInvalid(
                "intervals, timeouts and limits.concurrency_per_client must be positive, and \
                 limits.idle_timeout_ms at least 600",
            ));
        }
        Ok(())
    }

    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable, else as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::parse(&std::fs::read_to_string(path)?)
    }

    /// The configuration `signer-host dev` uses: everything under one data directory.
    pub fn dev(data_dir: &Path, listen: Address, enclave: DevEnclaveOptions) -> Self {
        let DevEnclaveOptions {
            binary: enclave_binary,
            backend,
            kms,
            deployment_id,
            keyring_creators,
            extra_args,
        } = enclave;
        Config {
            listen,
            enclave: EnclaveConfig {
                address: Address::Unix(data_dir.join("enclave.sock")),
                status_interval_ms: default_status_interval_ms(),
                status_timeout_ms: default_status_timeout_ms(),
                aws_credentials: if kms.is_some() {
                    CredentialSource::Environment
                } else {
                    CredentialSource::None
                },
                imds_address: default_imds(),
                dev: Some(DevEnclave {
                    binary: enclave_binary,
                    backend,
                    master_key_file: data_dir.join("master.key"),
                    dev_root_dir: data_dir.to_owned(),
                    kms,
                    max_restart_backoff_ms: default_max_backoff_ms(),
                    deployment_id,
                    keyring_creators,
                    extra_args,
                }),
            },
            store: StoreConfig {
                sqlite: Some(data_dir.join("keys.sqlite3")),
                url: None,
                max_connections: default_max_connections(),
                timeout_ms: default_store_timeout_ms(),
            },
            limits: Limits::default(),
            tls: None,
            metrics: None,
            attestation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let config = Config::parse(include_str!("../signer-host.example.toml")).unwrap();
        assert_eq!(config.listen.to_string(), "tcp://0.0.0.0:50051");
        assert!(matches!(
            config.enclave.address,
            Address::Vsock {
                cid: 16,
                port: 5000
            }
        ));
        assert!(config.enclave.dev.is_none());
        assert_eq!(config.enclave.status_timeout_ms, 2_000);
        assert_eq!(config.enclave.aws_credentials, CredentialSource::Imds);
        assert!(
            config
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some())
        );
        assert_eq!(
            config.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("tcp://127.0.0.1:9464")
        );
        let expectation = config.attestation.unwrap().expectation().unwrap();
        assert_eq!(expectation.allowed_pcr0.len(), 1);
        assert!(matches!(
            expectation.root,
            crate::attested::Root::AwsNitroG1
        ));
        let bad = AttestationSettings {
            allowed_pcr0: vec!["00".into()],
            max_age_secs: 1,
            development_root_file: None,
        };
        assert!(bad.expectation().is_err());
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let good = "listen = \"tcp://127.0.0.1:1\"\n[enclave]\naddress = \"unix:///tmp/x\"\n[store]\nsqlite = \"k.db\"\n";
        assert!(Config::parse(good).is_ok());
        assert!(matches!(
            Config::parse(&format!("{good}typo = 1\n")),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Config::parse(&good.replace("tcp://127.0.0.1:1", "127.0.0.1:1")),
            Err(Error::Config(_))
        ));
        let probe = |ms: u64| {
            Config::parse(&good.replace(
                "unix:///tmp/x\"\n",
                &format!("unix:///tmp/x\"\nstatus_timeout_ms = {ms}\n"),
            ))
        };
        assert_eq!(probe(30_000).unwrap().enclave.status_timeout_ms, 30_000);
        assert!(matches!(probe(0), Err(Error::ConfigInvalid(_))));
        let vsock_dev = good.replace("unix:///tmp/x", "vsock://16:5000")
            + "[enclave.dev]\nbinary = \"e\"\nmaster_key_file = \"m\"\ndev_root_dir = \"d\"\n";
        assert!(matches!(
            Config::parse(&vsock_dev),
            Err(Error::ConfigInvalid(_))
        ));
    }
}
