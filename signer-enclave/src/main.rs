//! `signer-enclave`: the enclave process. Listens on vsock in production, a Unix socket or TCP
//! locally.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use signer_enclave::attestation::Attestor;
use signer_enclave::attestation::nsm::NsmAttestor;
use signer_enclave::backend::BackendKind;
use signer_enclave::provider::local::LocalProvider;
use signer_proto::transport::{Address, Listener};

/// The signer's enclave process.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where to serve the internal API: vsock://CID:PORT, unix:///path or tcp://HOST:PORT.
    #[arg(long, env = "SIGNER_ENCLAVE_LISTEN")]
    listen: Address,
    /// Signing backend.
    #[arg(long, value_enum, default_value_t = BackendKind::K256, env = "SIGNER_ENCLAVE_BACKEND")]
    backend: BackendKind,
    /// Master-key file of the local key-wrapping provider (a development stand-in for KMS).
    #[arg(long, env = "SIGNER_ENCLAVE_MASTER_KEY_FILE")]
    master_key_file: PathBuf,
    /// Create the master-key file (mode 0600) if it does not exist.
    #[arg(long)]
    create_master_key: bool,
    /// Attestor: `nsm` (the Nitro Security Module; refuses to start without /dev/nsm) or `dev`
    /// (development stand-in, only in builds with the `dev-attestor` feature).
    #[arg(long, default_value = "nsm", env = "SIGNER_ENCLAVE_ATTESTOR")]
    attestor: String,
    /// Directory of the development attestor's root (`dev-root.der`, `dev-root.key`); created
    /// on first use.
    #[arg(long, env = "SIGNER_ENCLAVE_DEV_ROOT_DIR")]
    dev_root_dir: Option<PathBuf>,
    /// Exit when standard input closes: a development host passes a pipe, so the enclave never
    /// outlives it (and never keeps keys in RAM after it), even if the host is killed.
    #[arg(long)]
    exit_with_parent: bool,
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
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "enclave stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), signer_enclave::Error> {
    report_entropy_source();
    tracing::warn!(
        "key-wrapping provider: local master-key file (development stand-in, not for production)"
    );
    let provider = Arc::new(LocalProvider::open(
        &cli.master_key_file,
        cli.create_master_key,
    )?);
    let attestor = attestor(&cli)?;
    let listener = Listener::bind(&cli.listen)
        .await
        .map_err(|e| signer_enclave::Error::Transport(Box::new(e)))?;
    let bound = listener
        .local_address()
        .map_or_else(|| cli.listen.to_string(), |a| a.to_string());
    tracing::info!(address = %bound, backend = ?cli.backend, "listening");
    signer_enclave::serve(
        listener,
        cli.backend,
        provider,
        attestor,
        shutdown_signal(cli.exit_with_parent),
    )
    .await
}

fn attestor(cli: &Cli) -> Result<Arc<dyn Attestor>, signer_enclave::Error> {
    match cli.attestor.as_str() {
        "nsm" => Ok(Arc::new(NsmAttestor::open()?)),
        #[cfg(feature = "dev-attestor")]
        "dev" => {
            let dir = cli
                .dev_root_dir
                .as_deref()
                .ok_or(signer_enclave::Error::InvalidArgument(
                    "--attestor dev needs --dev-root-dir",
                ))?;
            let dev = signer_enclave::attestation::dev::DevAttestor::open(dir)?;
            tracing::warn!(pcr0 = %hex::encode(dev.pcr0()), root = %dir.join("dev-root.der").display(), "attestor: development stand-in, NOT FOR PRODUCTION");
            Ok(Arc::new(dev))
        }
        _ => Err(signer_enclave::Error::InvalidArgument(
            "unknown --attestor (this build knows: nsm, plus dev with the dev-attestor feature)",
        )),
    }
}

/// Inside Nitro the kernel pool is fed by the NSM hwrng; say which source this machine uses.
fn report_entropy_source() {
    match std::fs::read_to_string("/sys/class/misc/hw_random/rng_current") {
        Ok(source) if source.trim() == "nsm-hwrng" => {
            tracing::info!("entropy: kernel pool fed by nsm-hwrng")
        }
        Ok(source) => tracing::info!(
            source = source.trim(),
            "entropy: kernel pool (not an enclave: no nsm-hwrng)"
        ),
        Err(_) => tracing::info!("entropy: kernel pool (no hardware RNG reported)"),
    }
}

async fn shutdown_signal(exit_with_parent: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let parent_gone = async {
        if !exit_with_parent {
            return std::future::pending().await;
        }
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut sink)
            .await
            .is_ok_and(|n| n > 0)
        {}
        tracing::info!("parent closed our standard input");
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = parent_gone => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
