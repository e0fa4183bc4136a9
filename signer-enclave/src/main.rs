//! `signer-enclave`: the enclave process. Listens on vsock in production, a Unix socket or TCP
//! locally.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use signer_enclave::attestation::Attestor;
use signer_enclave::attestation::nsm::NsmAttestor;
use signer_enclave::backend::BackendKind;
use signer_enclave::config::{Capacity, Settings};
use signer_enclave::provider::KeyWrapper;
use signer_enclave::provider::kms::{HostCredentials, KeyArn, KmsConfig, KmsProvider};
use signer_enclave::replay;
use signer_proto::transport::{Address, Listener};

/// The signer's enclave process. In production every option comes from the enclave image's
/// command line, so it is measured into PCR0; the host cannot change it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where to serve the internal API: vsock://CID:PORT, unix:///path or tcp://HOST:PORT.
    #[arg(long, env = "SIGNER_ENCLAVE_LISTEN")]
    listen: Address,
    /// Signing backend: k256 or secp256k1.
    #[arg(long, default_value_t = BackendKind::K256, env = "SIGNER_ENCLAVE_BACKEND")]
    backend: BackendKind,
    /// Key-wrapping provider.
    #[arg(long, value_enum, default_value_t = ProviderKind::Kms, env = "SIGNER_ENCLAVE_PROVIDER")]
    provider: ProviderKind,
    /// The KMS key that wraps keyring keys, as a full ARN
    /// (arn:aws:kms:REGION:ACCOUNT:key/ID; provider kms). Every KMS answer must name it.
    #[arg(long, env = "SIGNER_ENCLAVE_KMS_KEY_ARN")]
    kms_key_arn: Option<KeyArn>,
    /// KMS endpoint URL (provider kms); default https://kms.REGION.amazonaws.com. Set it to a
    /// KMS-API test server on a developer machine.
    #[arg(long, env = "SIGNER_ENCLAVE_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// Inside Nitro: reach KMS through the parent's vsock-proxy at this address (e.g.
    /// vsock://3:8000), via a loopback forwarder on 127.0.0.1:443 (provider kms).
    #[arg(long, env = "SIGNER_ENCLAVE_KMS_VSOCK_PROXY")]
    kms_vsock_proxy: Option<Address>,
    /// Master-key file of the local provider.
    #[arg(long, env = "SIGNER_ENCLAVE_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Create the master-key file (mode 0600) if it does not exist.
    #[arg(long)]
    create_master_key: bool,
    /// Attestor.
    #[arg(long, value_enum, default_value_t = AttestorKind::Nsm, env = "SIGNER_ENCLAVE_ATTESTOR")]
    attestor: AttestorKind,
    /// Directory of the development attestor's root (`dev-root.der`, `dev-root.key`); created
    /// on first use.
    #[arg(long, env = "SIGNER_ENCLAVE_DEV_ROOT_DIR")]
    dev_root_dir: Option<PathBuf>,
    /// Exit when standard input closes: a development host passes a pipe, so the enclave never
    /// outlives it (and never keeps keys in RAM after it), even if the host is killed.
    #[arg(long)]
    exit_with_parent: bool,
    /// The deployment this enclave serves (1 to 64 of a-z 0-9 . _ -). Stamps sign it, so a
    /// body stamped for another deployment (staging, say) is refused here.
    #[arg(long, env = "SIGNER_ENCLAVE_DEPLOYMENT_ID")]
    deployment_id: String,
    /// An API key allowed to create keyrings (`ed25519:<hex>` or `p256:<hex>`); repeat or
    /// separate with commas. None: no keyring can be created (existing ones still load).
    #[arg(
        long = "keyring-creator",
        env = "SIGNER_ENCLAVE_KEYRING_CREATORS",
        value_delimiter = ','
    )]
    keyring_creators: Vec<String>,
    /// How many of the keyring creators must stamp each `CreateKeyring`.
    #[arg(
        long,
        default_value_t = 1,
        env = "SIGNER_ENCLAVE_KEYRING_CREATOR_THRESHOLD"
    )]
    keyring_creator_threshold: u32,
    /// Most keyrings open at once (each costs one KMS call per boot).
    #[arg(long, default_value_t = Capacity::default().keyrings, env = "SIGNER_ENCLAVE_MAX_KEYRINGS")]
    max_keyrings: usize,
    /// Most wallet keys held at once.
    #[arg(long, default_value_t = Capacity::default().keys, env = "SIGNER_ENCLAVE_MAX_KEYS")]
    max_keys: usize,
    /// Most distinct key policies held at once.
    #[arg(long, default_value_t = Capacity::default().policies, env = "SIGNER_ENCLAVE_MAX_POLICIES")]
    max_policies: usize,
    /// Most keys derived under HD roots kept in RAM (a cache, about 250 bytes a key: see
    /// bench/RESULTS.md); 0 derives on every signature.
    #[arg(long, default_value_t = Capacity::default().derived_keys, env = "SIGNER_ENCLAVE_DERIVED_KEY_CACHE")]
    derived_key_cache: usize,
    /// Replay window: bodies stamped more than this many seconds before the enclave's clock
    /// are refused (see SPEC.md on clock drift).
    #[arg(long, default_value_t = replay::DEFAULT_WINDOW_MS / 1_000, value_parser = clap::value_parser!(u64).range(1..=3600), env = "SIGNER_ENCLAVE_REPLAY_WINDOW_SECS")]
    replay_window_secs: u64,
    /// Bodies stamped more than this many seconds after the enclave's clock are refused.
    #[arg(long, default_value_t = replay::DEFAULT_FUTURE_SKEW_MS / 1_000, value_parser = clap::value_parser!(u64).range(0..=600), env = "SIGNER_ENCLAVE_FUTURE_SKEW_SECS")]
    future_skew_secs: u64,
    /// Bodies stamped more than this many seconds before this boot are refused, so a restart
    /// does not reopen the last window's requests.
    #[arg(long, default_value_t = replay::DEFAULT_BOOT_SKEW_MS / 1_000, value_parser = clap::value_parser!(u64).range(0..=600), env = "SIGNER_ENCLAVE_BOOT_SKEW_SECS")]
    boot_skew_secs: u64,
    /// Most nonces remembered at once (about 93 bytes each, bench/RESULTS.md); when full, new requests are
    /// refused with RESOURCE_EXHAUSTED until old ones leave the window.
    #[arg(long, default_value_t = replay::DEFAULT_CAPACITY, env = "SIGNER_ENCLAVE_NONCE_CAPACITY")]
    nonce_capacity: usize,
    /// Most nonces one API key may hold at once, so one client cannot fill the cache.
    #[arg(long, default_value_t = replay::DEFAULT_QUOTA_PER_KEY, env = "SIGNER_ENCLAVE_NONCE_QUOTA_PER_KEY")]
    nonce_quota_per_key: usize,
}

/// Where keyring keys come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProviderKind {
    /// AWS KMS with Nitro attestation.
    Kms,
    /// Development stand-in: a master key in a 0600 file. Only builds with the `dev-provider`
    /// feature have it; the enclave image does not.
    Local,
}

/// Who signs attestation documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AttestorKind {
    /// The Nitro Security Module (refuses to start without /dev/nsm).
    Nsm,
    /// Development stand-in. Only builds with the `dev-attestor` feature have it; the enclave
    /// image does not.
    Dev,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signer_proto::init_logging();
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
    let attestor = attestor(&cli)?;
    let credentials = HostCredentials::default();
    let provider: Arc<dyn KeyWrapper> = match cli.provider {
        ProviderKind::Kms => {
            let config = KmsConfig {
                key_arn: cli
                    .kms_key_arn
                    .clone()
                    .ok_or(signer_enclave::Error::InvalidArgument(
                        "--provider kms needs --kms-key-arn",
                    ))?,
                endpoint: cli.kms_endpoint.clone(),
                vsock_proxy: cli.kms_vsock_proxy.clone(),
            };
            if let Some(proxy) = &config.vsock_proxy {
                // Inside Nitro the loopback interface boots down.
                signer_enclave::loopback::ensure_up()?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:443").await.map_err(|_| {
                    signer_enclave::Error::Provider("cannot listen on 127.0.0.1:443 for the KMS forwarder (loopback interface down?)")
                })?;
                tracing::info!(%proxy, "KMS traffic goes through the parent's vsock-proxy");
                tokio::spawn(signer_enclave::provider::kms::vsock::forward(
                    listener,
                    proxy.clone(),
                ));
            }
            tracing::info!(key_arn = %config.key_arn, endpoint = ?config.endpoint, "key-wrapping provider: AWS KMS with attestation");
            Arc::new(KmsProvider::new(
                config,
                credentials.clone(),
                Arc::clone(&attestor),
            )?)
        }
        ProviderKind::Local => local_provider(&cli)?,
    };

    let listener = Listener::bind(&cli.listen)
        .await
        .map_err(|e| signer_enclave::Error::Transport(Box::new(e)))?;
    let bound = listener
        .local_address()
        .map_or_else(|| cli.listen.to_string(), |a| a.to_string());
    tracing::info!(address = %bound, backend = ?cli.backend, "listening");
    let settings = settings(&cli, provider.name())?;
    let setup = signer_enclave::Setup {
        backend: cli.backend,
        provider,
        attestor,
        credentials,
        settings,
    };
    signer_enclave::serve(listener, setup, shutdown_signal(cli.exit_with_parent)).await
}

fn settings(cli: &Cli, provider: &str) -> Result<Settings, signer_enclave::Error> {
    let settings = Settings {
        deployment_id: cli.deployment_id.clone(),
        creators: Settings::creators(&cli.keyring_creators, cli.keyring_creator_threshold)?,
        capacity: Capacity {
            keyrings: cli.max_keyrings,
            keys: cli.max_keys,
            policies: cli.max_policies,
            derived_keys: cli.derived_key_cache,
        },
        window_ms: cli.replay_window_secs * 1_000,
        future_skew_ms: cli.future_skew_secs * 1_000,
        boot_skew_ms: cli.boot_skew_secs * 1_000,
        nonce_capacity: cli.nonce_capacity,
        nonce_quota_per_key: cli.nonce_quota_per_key,
        provider: provider.to_owned(),
        kms_key_arn: cli
            .kms_key_arn
            .as_ref()
            .filter(|_| provider == "aws-kms")
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    settings.validate()?;
    Ok(settings)
}

#[cfg(feature = "dev-provider")]
fn local_provider(cli: &Cli) -> Result<Arc<dyn KeyWrapper>, signer_enclave::Error> {
    tracing::warn!(
        "key-wrapping provider: local master-key file (development stand-in, not for production)"
    );
    let path = cli
        .master_key_file
        .as_deref()
        .ok_or(signer_enclave::Error::InvalidArgument(
            "--provider local needs --master-key-file",
        ))?;
    Ok(Arc::new(
        signer_enclave::provider::local::LocalProvider::open(path, cli.create_master_key)?,
    ))
}

#[cfg(not(feature = "dev-provider"))]
fn local_provider(_: &Cli) -> Result<Arc<dyn KeyWrapper>, signer_enclave::Error> {
    Err(signer_enclave::Error::InvalidArgument(
        "this build has no local provider (it is a development stand-in: feature dev-provider)",
    ))
}

fn attestor(cli: &Cli) -> Result<Arc<dyn Attestor>, signer_enclave::Error> {
    match cli.attestor {
        AttestorKind::Nsm => Ok(Arc::new(NsmAttestor::open()?)),
        #[cfg(feature = "dev-attestor")]
        AttestorKind::Dev => {
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
        #[cfg(not(feature = "dev-attestor"))]
        AttestorKind::Dev => Err(signer_enclave::Error::InvalidArgument(
            "this build has no development attestor (feature dev-attestor)",
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
