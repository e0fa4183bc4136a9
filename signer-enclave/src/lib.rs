//! The signer's enclave: wallet keys in RAM, sealed records, constant-time signing.
#![doc = include_str!("../README.md")]

pub mod attestation;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod config;
pub mod derived;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hd;
pub(crate) mod identity;
pub mod ids;
pub(crate) mod intake;
pub(crate) mod keyinfo;
pub mod loopback;
pub mod policy;
pub mod provider;
pub(crate) mod psbt;
pub(crate) mod ratelimit;
pub mod replay;
pub mod seal;
pub mod secret;
pub(crate) mod service;
pub(crate) mod spend;
pub mod stamp;
#[cfg(test)]
mod testing;
pub(crate) mod vault;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use error::Error;
use signer_proto::pb::enclave_service_server::EnclaveServiceServer;
use signer_proto::transport::Listener;
use tonic::transport::Server;

use crate::attestation::Attestor;
use crate::backend::{Backend, BackendKind, K256, Libsecp256k1};
use crate::config::Settings;
use crate::provider::KeyWrapper;
use crate::provider::kms::HostCredentials;
use crate::service::EnclaveApi;

/// Everything an enclave is started with: backend, provider, attestor, credentials and its
/// measured configuration.
pub struct Setup {
    /// Secp256k1 implementation.
    pub backend: BackendKind,
    /// Key-wrapping provider (KMS, or the local stand-in).
    pub provider: Arc<dyn KeyWrapper>,
    /// Attestor (NSM, or the development stand-in).
    pub attestor: Arc<dyn Attestor>,
    /// AWS credentials handed over by the host.
    pub credentials: HostCredentials,
    /// The measured configuration.
    pub settings: Settings,
}

/// Serves the enclave API on `listener` until `shutdown` completes.
///
/// # Errors
/// [`Error::Transport`] if serving fails; [`Error::Rng`] if the boot id or identity cannot be
/// drawn.
pub async fn serve(
    listener: Listener,
    setup: Setup,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    match setup.backend {
        BackendKind::K256 => serve_with::<K256>(listener, setup, shutdown).await,
        BackendKind::Secp256k1 => serve_with::<Libsecp256k1>(listener, setup, shutdown).await,
    }
}

async fn serve_with<B: Backend>(
    listener: Listener,
    setup: Setup,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let api = EnclaveApi::<B>::new(
        setup.settings,
        setup.provider,
        setup.attestor,
        setup.credentials,
    )?;
    let api = EnclaveServiceServer::new(api)
        .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES);
    // No per-call server timeout: loading a million records is one long stream. The host sets
    // deadlines on its calls, and keepalives drop dead peers.
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .concurrency_limit_per_connection(4096)
        .add_service(api);
    tracing::info!(backend = B::NAME, "serving");
    listener
        .serve(router, shutdown)
        .await
        .map_err(|e| Error::Transport(Box::new(e)))
}
