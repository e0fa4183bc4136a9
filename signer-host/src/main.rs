//! `signer-host`: the parent-instance process serving the public API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use signer_host::config::{
    AttestationSettings, Config, DevEnclaveOptions, KmsSettings, TlsSettings,
};
use signer_proto::transport::Address;

/// The signer's host process.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Command {
    /// Run with a configuration file (production).
    Run {
        /// Configuration file (TOML).
        #[arg(long, env = "SIGNER_HOST_CONFIG")]
        config: PathBuf,
    },
    /// Run a complete local stack: the enclave as a supervised child process over a Unix socket,
    /// the local key-wrapping provider (a development stand-in for KMS) and SQLite, all under one
    /// data directory.
    Dev {
        /// Directory for the socket, master key and database; created if missing.
        #[arg(long, default_value = ".signer-dev")]
        data_dir: PathBuf,
        /// Where to serve the public API.
        #[arg(long, default_value = "tcp://127.0.0.1:50051")]
        listen: Address,
        /// Signing backend: k256 or secp256k1.
        #[arg(long, default_value = "k256")]
        backend: String,
        /// The enclave binary; defaults to `signer-enclave` beside this binary.
        #[arg(long)]
        enclave_binary: Option<PathBuf>,
        /// Use AWS KMS (with attestation) for keyring keys: the KMS key's full ARN. Without it the
        /// local provider is used, a development stand-in. Credentials come from
        /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN in this process's
        /// environment.
        #[arg(long)]
        kms_key_arn: Option<String>,
        /// KMS endpoint URL, e.g. a KMS-API test server on loopback.
        #[arg(long)]
        kms_endpoint: Option<String>,
        /// Serve TLS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS private key (PEM).
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// Require client certificates from this CA (mutual TLS).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Serve Prometheus metrics here (`tcp://127.0.0.1:0`: any free port, announced on
        /// stdout after the API's address).
        #[arg(long)]
        metrics_listen: Option<Address>,
        /// The PCR0 (hex) the enclave must attest to for the host to report SERVING. Default: the
        /// SHA-384 of the enclave binary, which is what the development attestor reports.
        #[arg(long)]
        expected_pcr0: Option<String>,
        /// Keep keys in this PostgreSQL database (shared with other hosts) instead of the data
        /// directory's SQLite file.
        #[arg(long, env = "SIGNER_STORE_URL")]
        store_url: Option<String>,
        /// Keep the SQLite store in this file instead of `DATA_DIR/keys.sqlite3` (on its own
        /// volume, say).
        #[arg(long, conflicts_with = "store_url")]
        sqlite: Option<PathBuf>,
        /// The deployment id the enclave serves; clients stamp for it.
        #[arg(long, default_value = "local-dev")]
        deployment_id: String,
        /// An API key allowed to create keyrings (`ed25519:<hex>` or `p256:<hex>`); repeat.
        /// In production the enclave image fixes these; here this development host passes them.
        #[arg(long = "keyring-creator")]
        keyring_creators: Vec<String>,
        /// A further option for the enclave (e.g. `--enclave-arg=--nonce-quota-per-key=100`);
        /// repeat.
        #[arg(long = "enclave-arg", allow_hyphen_values = true)]
        enclave_args: Vec<String>,
        /// A client connection must send its first bytes within this (ms).
        #[arg(long, default_value_t = 10_000)]
        handshake_timeout_ms: u64,
        /// A client connection that sends nothing for this long is closed (ms).
        #[arg(long, default_value_t = 60_000)]
        idle_timeout_ms: u64,
        /// Calls in flight and sign streams open allowed to one mutual-TLS client.
        #[arg(long, default_value_t = 1024)]
        concurrency_per_client: usize,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signer_proto::init_logging();
    match start(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "host stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> Result<(), signer_host::Error> {
    let config = match cli.command {
        Command::Run { config } => Config::load(&config)?,
        Command::Dev {
            data_dir,
            listen,
            backend,
            enclave_binary,
            kms_key_arn,
            kms_endpoint,
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_listen,
            expected_pcr0,
            store_url,
            sqlite,
            deployment_id,
            keyring_creators,
            enclave_args,
            handshake_timeout_ms,
            idle_timeout_ms,
            concurrency_per_client,
        } => {
            std::fs::create_dir_all(&data_dir)?;
            let data_dir = std::fs::canonicalize(&data_dir)?;
            let binary = match enclave_binary {
                Some(path) => path,
                None => std::env::current_exe()?.with_file_name("signer-enclave"),
            };
            let pcr0 = match expected_pcr0 {
                Some(pcr0) => pcr0,
                None => sha384_hex(&std::fs::read(&binary)?),
            };
            let attestation = AttestationSettings {
                allowed_pcr0: vec![pcr0],
                max_age_secs: 300,
                development_root_file: Some(data_dir.join("dev-root.der")),
            };
            let kms = kms_key_arn.map(|key_arn| KmsSettings {
                key_arn,
                endpoint: kms_endpoint,
            });
            let enclave = DevEnclaveOptions {
                binary,
                backend,
                kms,
                deployment_id,
                keyring_creators,
                extra_args: enclave_args,
            };
            let mut config = Config::dev(&data_dir, listen, enclave);
            config.tls = tls_cert
                .zip(tls_key)
                .map(|(cert_file, key_file)| TlsSettings {
                    cert_file,
                    key_file,
                    client_ca_file: tls_client_ca,
                });
            config.metrics =
                metrics_listen.map(|listen| signer_host::config::MetricsSettings { listen });
            config.attestation = Some(attestation);
            if let Some(path) = sqlite {
                config.store.sqlite = Some(path);
            }
            if let Some(url) = store_url {
                config.store.sqlite = None;
                config.store.url = Some(url);
            }
            config.limits.handshake_timeout_ms = handshake_timeout_ms;
            config.limits.idle_timeout_ms = idle_timeout_ms;
            config.limits.concurrency_per_client = concurrency_per_client;
            config.validate()?;
            config
        }
    };
    // Stdout: where the API listens (tests and scripts read it), then where metrics are served,
    // if they are.
    let announce = |bound: &signer_host::Bound| {
        println!("listening {}", bound.api);
        if let Some(metrics) = &bound.metrics {
            println!("metrics {metrics}");
        }
    };
    signer_host::run(config, announce, shutdown_signal()).await
}

/// The SHA-384 of `bytes`, lower-case hex: the development attestor's PCR0 of a binary.
fn sha384_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha384::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
