//! The async client: one connection, the attested enclave identity, and the verified state its
//! calls share. Its parts: [`config`] (settings), `call` (envelopes and the one retry loop),
//! `verified` (identity, key statements, policy versions), `keys` (administration), `signing`,
//! `ethereum` and `stream`.

mod batch;
mod bitcoin;
mod call;
mod config;
mod ethereum;
mod import;
mod keys;
mod signing;
mod stream;
mod verified;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};

use signer_proto::pb::signer_service_client::SignerServiceClient;
use signer_proto::transport;
use tonic::transport::Channel;

pub use self::batch::MAX_BATCH;
pub use self::config::{ClientConfig, ClientTls, RetryPolicy};
pub use self::stream::{SignStream, StreamSignature};
pub use self::verified::EnclaveAttestation;
use crate::Error;
use crate::attestation::AttestationPolicy;
use crate::stamper::Stamper;
use crate::trust::AttestedIdentity;
use crate::verify::KeyInfo;

/// A signer client. Cheap to clone; clones share the connection, the verified key cache, the
/// policy versions seen and the attested enclave identity.
#[derive(Clone, Debug)]
pub struct Client {
    inner: SignerServiceClient<Channel>,
    /// The same connection, for the host's health service.
    channel: Channel,
    retry: RetryPolicy,
    deployment_id: String,
    stamper: Option<Arc<Stamper>>,
    enclave: Option<AttestationPolicy>,
    state: Arc<State>,
}

/// What the client has verified, shared by its clones.
#[derive(Debug, Default)]
struct State {
    /// Shared, so a sign call borrows the verified key without copying its policy.
    keys: RwLock<HashMap<String, Arc<KeyInfo>>>,
    versions: Mutex<HashMap<String, u64>>,
    identity: RwLock<Option<AttestedIdentity>>,
    /// The enclave's clock minus ours, in ms, from the last verified attestation document.
    clock_offset_ms: AtomicI64,
}

impl Client {
    /// Connects (lazily: the first call dials, and reconnects happen by themselves).
    ///
    /// # Errors
    /// [`Error::Transport`] for an unusable address.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let tls = config.tls.map(|tls| {
            let settings = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(tls.ca_pem))
                .domain_name(tls.domain);
            match tls.identity {
                Some((cert, key)) => {
                    settings.identity(tonic::transport::Identity::from_pem(cert, key))
                }
                None => settings,
            }
        });
        let channel = transport::dial_with(&config.address, config.dial, tls)?;
        let state = State {
            versions: Mutex::new(config.known_policy_versions),
            ..State::default()
        };
        Ok(Self {
            channel: channel.clone(),
            inner: SignerServiceClient::new(channel)
                .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(signer_proto::MAX_MESSAGE_BYTES),
            retry: config.retry,
            deployment_id: config.deployment_id,
            stamper: config.stamper,
            enclave: config.enclave,
            state: Arc::new(state),
        })
    }

    /// Whether the host reports its API SERVING (`grpc.health.v1`): its enclave ready and, where
    /// the host checks it, freshly attested. `false` for NOT_SERVING, an error or no answer.
    pub async fn host_serving(&self) -> bool {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        health.check(request).await.is_ok_and(|reply| {
            reply.into_inner().status()
                == tonic_health::pb::health_check_response::ServingStatus::Serving
        })
    }

    /// The deployment this client stamps for.
    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// The raw generated client, for callers who build their own envelopes.
    pub fn raw(&self) -> SignerServiceClient<Channel> {
        self.inner.clone()
    }
}
