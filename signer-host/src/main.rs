//! `signer-host`: the parent-instance process serving the public API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use signer_host::config::{Config, KmsSettings, TlsSettings};
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
        /// Use AWS KMS (with attestation) for keyring keys: the KMS key id. Without it the local
        /// provider is used, a development stand-in. Credentials come from AWS_ACCESS_KEY_ID /
        /// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN in this process's environment.
        #[arg(long, requires = "kms_region")]
        kms_key_id: Option<String>,
        /// AWS region of the KMS key.
        #[arg(long)]
        kms_region: Option<String>,
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
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            kms_key_id,
            kms_region,
            kms_endpoint,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            std::fs::create_dir_all(&data_dir)?;
            let data_dir = std::fs::canonicalize(&data_dir)?;
            let binary = match enclave_binary {
                Some(path) => path,
                None => std::env::current_exe()?.with_file_name("signer-enclave"),
            };
            let kms = kms_key_id
                .zip(kms_region)
                .map(|(key_id, region)| KmsSettings {
                    key_id,
                    region,
                    endpoint: kms_endpoint,
                });
            let mut config = Config::dev(&data_dir, listen, binary, &backend, kms);
            config.tls = tls_cert
                .zip(tls_key)
                .map(|(cert_file, key_file)| TlsSettings {
                    cert_file,
                    key_file,
                    client_ca_file: tls_client_ca,
                });
            config.validate()?;
            config
        }
    };
    // The one line on stdout: where the API listens (tests and scripts read it).
    let announce = |address: &str| println!("listening {address}");
    signer_host::run(config, announce, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
