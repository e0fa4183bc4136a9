//! The signer's host: the public gRPC API on the parent instance, relaying to the enclave.
#![doc = include_str!("../README.md")]

pub mod attested;
pub mod audit;
pub mod clients;
pub mod config;
pub mod credentials;
mod error;
pub mod follow;
pub mod loader;
pub mod metered;
pub mod metrics;
pub mod relay;
mod shutdown;
pub mod store;
pub mod supervisor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use signer_proto::pb::signer_service_server::SignerServiceServer;
use signer_proto::transport::{self, DialOptions, Listener};
use tokio::sync::{Notify, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::Config;
use crate::config::StoreConfig;
use crate::credentials::CredentialSource;
use crate::loader::Credentials;
use crate::metered::Metered;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::store::KeyStore;
use crate::store::postgres::{PgStore, PoolSettings};
use crate::store::sqlite::SqliteStore;

/// Where the host listens, once bound.
#[derive(Clone, Debug)]
pub struct Bound {
    /// The public API.
    pub api: String,
    /// The Prometheus endpoint, if configured.
    pub metrics: Option<String>,
}

/// Runs the host until `shutdown` completes: binds the public listener (and the metrics one, if
/// configured), calls `on_bound` with their addresses, starts (in dev mode) and loads the
/// enclave, and serves.
///
/// # Errors
/// Store, bind or serve failures.
pub async fn run(
    config: Config,
    on_bound: impl FnOnce(&Bound),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let metrics = Metrics::new()?;
    let (store, shared): (Arc<dyn KeyStore>, Option<PgStore>) = match &config.store {
        StoreConfig {
            url: Some(url),
            max_connections,
            timeout_ms,
            ..
        } => {
            let settings = PoolSettings {
                max_connections: *max_connections,
                timeout: Duration::from_millis(*timeout_ms),
            };
            let store = PgStore::connect(url, settings).await?;
            tracing::info!("key store: PostgreSQL, shared");
            (Arc::new(store.clone()), Some(store))
        }
        StoreConfig {
            sqlite: Some(path), ..
        } => (Arc::new(SqliteStore::open(path)?), None),
        _ => return Err(Error::ConfigInvalid("no key store configured")),
    };
    let limits = config.limits;
    let enclave_channel = transport::dial(
        &config.enclave.address,
        DialOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: limits.enclave_timeout(),
        },
    )
    .map_err(Box::new)?;
    let enclave = EnclaveServiceClient::new(enclave_channel)
        .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES);

    let (stop_tx, stop_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(dev) = config.enclave.dev {
        tasks.spawn(supervisor::supervise(
            dev,
            config.enclave.address.clone(),
            Arc::clone(&wake),
            stop_rx.clone(),
        ));
    }
    if let Some(shared) = shared {
        // Another host's writes wake the loader, which brings them to this enclave.
        let (wake, stop) = (Arc::clone(&wake), stop_rx.clone());
        tasks.spawn(async move { shared.follow(wake, stop).await });
    }
    let credentials = match config.enclave.aws_credentials {
        CredentialSource::None => Credentials::NotNeeded,
        ref source => {
            let (current, receiver) = watch::channel(None);
            tasks.spawn(credentials::refresh(
                source.clone(),
                config.enclave.imds_address.clone(),
                current,
                enclave.clone(),
                stop_rx.clone(),
            ));
            Credentials::Required(receiver)
        }
    };
    let hung = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<SignerServiceServer<Relay>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if config.attestation.is_some() {
        // Registered from the start, so it can be watched: unknown until the first check.
        health
            .set_service_status(
                loader::ATTESTATION_SERVICE,
                tonic_health::ServingStatus::Unknown,
            )
            .await;
    }
    // The loader's own calls (status, a long LoadKeys stream) use a channel without the per-call
    // deadline of client traffic.
    let loader_channel = transport::dial(
        &config.enclave.address,
        DialOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3600),
        },
    )
    .map_err(Box::new)?;
    let metrics_bound = match &config.metrics {
        Some(settings) => {
            let transport::Address::Tcp(address) = &settings.listen else {
                return Err(Error::ConfigInvalid(
                    "metrics listen must be a tcp:// address",
                ));
            };
            let listener = tokio::net::TcpListener::bind(address).await?;
            let local = listener.local_addr()?;
            let mut stop = stop_rx.clone();
            let served = Arc::clone(&metrics);
            tasks.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                if let Err(error) = metrics::serve(served, listener, stopped).await {
                    tracing::error!(%error, "the metrics endpoint stopped");
                }
            });
            tracing::info!(address = %local, "metrics listening");
            Some(format!("tcp://{local}"))
        }
        None => None,
    };
    tasks.spawn(loader::watch_enclave(
        EnclaveServiceClient::new(loader_channel)
            .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES),
        Arc::clone(&store),
        loader::Observers {
            health,
            metrics: Arc::clone(&metrics),
            hung: Arc::clone(&hung),
            attestation: config
                .attestation
                .as_ref()
                .map(config::AttestationSettings::expectation)
                .transpose()?,
        },
        loader::Probe {
            interval: Duration::from_millis(config.enclave.status_interval_ms),
            timeout: Duration::from_millis(config.enclave.status_timeout_ms),
        },
        wake,
        credentials,
        stop_rx,
    ));

    // Reflection in both versions: v1, and v1alpha for Python's `grpcio-reflection`, grpcurl
    // before 1.9 and other older tools, which speak only that.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(signer_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|_| Error::ConfigInvalid("reflection descriptors"))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|_| Error::ConfigInvalid("reflection descriptors"))?;
    let relay = Relay::new(
        enclave,
        Arc::clone(&store),
        Arc::clone(&metrics),
        hung,
        clients::ClientLimits::new(limits.concurrency_per_client),
    );
    let api = SignerServiceServer::new(Metered::new(relay, metrics))
        .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES);
    let mut server = Server::builder();
    if let Some(tls) = &config.tls {
        let identity = Identity::from_pem(
            std::fs::read(&tls.cert_file)?,
            std::fs::read(&tls.key_file)?,
        );
        let mut settings = ServerTlsConfig::new()
            .identity(identity)
            .timeout(limits.deadlines().handshake);
        if let Some(ca) = &tls.client_ca_file {
            settings = settings.client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
        }
        server = server
            .tls_config(settings)
            .map_err(|e| Error::Transport(Box::new(e.into())))?;
        tracing::info!(
            mutual = tls.client_ca_file.is_some(),
            "TLS on the public API"
        );
    } else {
        tracing::warn!("public API without TLS: bind it to loopback or a private network only");
    }
    let router = server
        .timeout(limits.request_timeout())
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(Some(limits.keepalive().0))
        .http2_keepalive_timeout(Some(limits.keepalive().1))
        .tcp_nodelay(true)
        .add_service(InterceptedService::new(health_service, first_request))
        .add_service(InterceptedService::new(reflection, first_request))
        .add_service(InterceptedService::new(reflection_v1alpha, first_request))
        .add_service(InterceptedService::new(api, first_request));

    let listener = Listener::bind(&config.listen).await.map_err(Box::new)?;
    let bound = listener
        .local_address()
        .map_or_else(|| config.listen.to_string(), |a| a.to_string());
    tracing::info!(address = %bound, "public API listening");
    on_bound(&Bound {
        api: bound,
        metrics: metrics_bound,
    });
    let served = listener
        .serve_guarded(router, shutdown, Some(limits.deadlines()))
        .await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    served.map_err(|e| Error::Transport(Box::new(e)))
}

/// Marks a guarded connection's first request, which ends its handshake deadline
/// (`signer_proto::transport::guard`).
fn first_request(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    use signer_proto::transport::guard::GuardedInfo;
    // Under TLS too: tonic inserts the inner connection's info beside `TlsConnectInfo`.
    if let Some(info) = request
        .extensions()
        .get::<GuardedInfo<tonic::transport::server::TcpConnectInfo>>()
    {
        info.request_arrived();
    }
    Ok(request)
}
