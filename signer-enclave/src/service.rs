//! The enclave's gRPC service: routes each call by lifecycle phase to the vault.
//!
//! Every failure is logged here with its detail and returned as a generic status.

use std::pin::Pin;
use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::enclave_service_server::EnclaveService;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

mod bitcoin;
mod calls;
mod ethereum;
mod load;

use self::calls::State;
use self::load::{LOAD_BATCH, load_batch, merge};
use crate::Error;
use crate::attestation::{AttestRequest, Attestor};
use crate::backend::Backend;
use crate::config::Settings;
use crate::identity::{Boot, BootIdentity};
use crate::intake;
use crate::provider::KeyWrapper;
use crate::provider::kms::{self, HostCredentials};
use crate::replay::{self, ReplayGuard, TimeRules};
use crate::vault::Phase;

/// The enclave service over a chosen backend.
pub(crate) struct EnclaveApi<B: Backend> {
    shared: Arc<State<B>>,
    provider: Arc<dyn KeyWrapper>,
    attestor: Arc<dyn Attestor>,
    credentials: HostCredentials,
}

impl<B: Backend> EnclaveApi<B> {
    /// A new, empty enclave awaiting keyrings, with a fresh identity; this boot begins now.
    ///
    /// # Errors
    /// [`Error::Rng`] if the boot id or identity keys cannot be drawn.
    pub(crate) fn new(
        settings: Settings,
        provider: Arc<dyn KeyWrapper>,
        attestor: Arc<dyn Attestor>,
        credentials: HostCredentials,
    ) -> Result<Self, Error> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)?;
        let boot = Boot {
            id,
            time_ms: replay::now_ms(),
            deployment_id: settings.deployment_id.clone(),
            config_hash: signer_proto::canonical::config_hash(&settings.encode()),
        };
        let rules = TimeRules {
            window_ms: settings.window_ms,
            future_skew_ms: settings.future_skew_ms,
            boot_skew_ms: settings.boot_skew_ms,
            boot_ms: boot.time_ms,
        };
        let guard = ReplayGuard::new(rules, settings.nonce_capacity, settings.nonce_quota_per_key);
        tracing::info!(
            deployment = %settings.deployment_id,
            creators = settings.creators.members().len(),
            config_hash = %hex::encode(boot.config_hash),
            "configuration"
        );
        Ok(Self {
            shared: calls::shared(settings, guard, BootIdentity::generate(boot)?),
            provider,
            attestor,
            credentials,
        })
    }
}

/// Logs an error's detail inside the enclave and turns it into its generic status.
/// The span of one relayed call: its method and the request id the host gave it (a plain short
/// token, or empty), which every log line of the call then carries.
fn call_span<T>(call: &'static str, request: &Request<T>) -> tracing::Span {
    let id = request
        .metadata()
        .get(signer_proto::REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| signer_proto::valid_request_id(id))
        .unwrap_or_default();
    tracing::info_span!("request", call, request_id = id)
}

pub(crate) fn status(call: &'static str, error: Error) -> Status {
    match &error {
        Error::InvalidArgument(_) | Error::KeyNotFound | Error::NotReady => {
            tracing::debug!(call, %error, "refused")
        }
        // Refusals of authentication and authorisation: the reason is logged here only.
        Error::Unauthenticated(_)
        | Error::Stale(_)
        | Error::Denied(_)
        | Error::Refused(_)
        | Error::RateLimited
        | Error::ReplayCacheFull(_)
        | Error::Capacity(_) => tracing::info!(call, %error, "refused"),
        _ => tracing::warn!(call, %error, "failed"),
    }
    Status::from(error)
}

/// Answers a refused stamped request, and records the refusal in the audit trail.
fn refused<B: Backend>(
    shared: &State<B>,
    action: pb::AuditAction,
    request: &Request<pb::SignedRequest>,
    call: &'static str,
    error: Error,
) -> Status {
    let answer = status(call, error);
    shared
        .audit
        .refused(action, &request.get_ref().body, answer.code());
    answer
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SignStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> EnclaveService for EnclaveApi<B> {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let vault = &self.shared.vault;
        let phase = match vault.phase() {
            Phase::AwaitingKeyrings => pb::Phase::AwaitingKeyrings,
            Phase::Ready => pb::Phase::Ready,
            Phase::Unrecoverable => pb::Phase::Unrecoverable,
        };
        let (keyrings, keys) = vault.counts();
        let boot = self.shared.identity.boot();
        let stamps = self.shared.stamps.stats();
        Ok(Response::new(pb::StatusResponse {
            phase: phase.into(),
            boot_id: boot.id.to_vec(),
            boot_time_ms: boot.time_ms,
            deployment_id: boot.deployment_id.clone(),
            backend: B::NAME.to_owned(),
            provider: self.provider.name().to_owned(),
            keyrings: u32::try_from(keyrings).unwrap_or(u32::MAX),
            keys: u64::try_from(keys).unwrap_or(u64::MAX),
            provider_calls: vault.provider_calls(),
            attestor: self.attestor.name().to_owned(),
            clock_ms: replay::now_ms(),
            keys_checked: u64::try_from(vault.checked_keys()).unwrap_or(u64::MAX),
            stamp_batches: stamps.batches,
            stamps_batched: stamps.requests,
            stamp_batches_failed: stamps.failed,
        }))
    }

    async fn create_keyring(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::EnclaveCreateKeyringResponse>, Status> {
        let run = calls::create_keyring(&self.shared, self.provider.as_ref(), request.get_ref());
        self.stamped(
            &request,
            "CreateKeyring",
            pb::AuditAction::CreateKeyring,
            run,
        )
        .await
    }

    async fn load_keyring(
        &self,
        request: Request<pb::LoadKeyringRequest>,
    ) -> Result<Response<pb::LoadKeyringResponse>, Status> {
        let stored =
            intake::host::keyring(request.into_inner()).map_err(|e| status("LoadKeyring", e))?;
        self.shared
            .vault
            .load_keyring(self.provider.as_ref(), &stored)
            .await
            .map_err(|e| status("LoadKeyring", e))?;
        Ok(Response::new(pb::LoadKeyringResponse {}))
    }

    async fn load_keys(
        &self,
        request: Request<Streaming<pb::SealedKey>>,
    ) -> Result<Response<pb::LoadKeysResponse>, Status> {
        // Opening a record and re-deriving its public key costs a scalar multiplication: records
        // are opened in batches on the blocking pool, one batch per core at a time.
        let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut stream = request.into_inner();
        let mut response = pb::LoadKeysResponse::default();
        let mut workers = tokio::task::JoinSet::new();
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        loop {
            let next = stream.next().await.transpose()?;
            let finished = next.is_none();
            batch.extend(next);
            if batch.len() == LOAD_BATCH || (finished && !batch.is_empty()) {
                let shared = Arc::clone(&self.shared);
                let records = std::mem::replace(&mut batch, Vec::with_capacity(LOAD_BATCH));
                workers.spawn_blocking(move || load_batch(&shared.vault, records));
                while workers.len() >= parallelism {
                    merge(&mut response, workers.join_next().await)?;
                }
            }
            if finished {
                break;
            }
        }
        while let Some(joined) = workers.join_next().await {
            merge(&mut response, Some(joined))?;
        }
        Ok(Response::new(response))
    }

    async fn finish_loading(
        &self,
        request: Request<pb::FinishLoadingRequest>,
    ) -> Result<Response<pb::FinishLoadingResponse>, Status> {
        // The boot entry first: every decision of this boot follows it in the chain.
        self.shared
            .audit
            .boot(&request.get_ref().previous_audit_hash);
        self.shared
            .vault
            .finish_loading()
            .map_err(|e| status("FinishLoading", e))?;
        // Keys are checked before their first use; the rest are checked now, on every core,
        // while the vault already signs.
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let workers = std::thread::available_parallelism().map_or(1, usize::from);
            match shared.vault.check_pending(workers) {
                Ok(checked) => tracing::info!(
                    checked,
                    ms = started.elapsed().as_millis(),
                    "loaded keys checked"
                ),
                Err(error) => tracing::error!(%error, "checking loaded keys failed"),
            }
        });
        Ok(Response::new(pb::FinishLoadingResponse {}))
    }

    async fn read_audit(
        &self,
        request: Request<pb::ReadAuditRequest>,
    ) -> Result<Response<pb::ReadAuditResponse>, Status> {
        let request = request.into_inner();
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        // Signs up to READ_LIMIT entries: on the blocking pool, off the async workers.
        let shared = Arc::clone(&self.shared);
        let entries =
            tokio::task::spawn_blocking(move || shared.audit.read(request.after_sequence, limit))
                .await
                .map_err(|_| Status::internal("internal error"))?;
        Ok(Response::new(pb::ReadAuditResponse { entries }))
    }

    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::EnclaveCreateKeyResponse>, Status> {
        let run = calls::create_key(&self.shared, request.get_ref());
        self.stamped(&request, "CreateKey", pb::AuditAction::CreateKey, run)
            .await
    }

    async fn import_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::EnclaveCreateKeyResponse>, Status> {
        let run = calls::import_key(&self.shared, request.get_ref());
        self.stamped(&request, "ImportKey", pb::AuditAction::ImportKey, run)
            .await
    }

    async fn update_policy(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::EnclaveCreateKeyResponse>, Status> {
        let run = calls::update_policy(&self.shared, request.get_ref());
        self.stamped(&request, "UpdatePolicy", pb::AuditAction::UpdatePolicy, run)
            .await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let _span = call_span("GetPublicKey", &request).entered();
        calls::public_key(&self.shared, request.get_ref())
            .map(Response::new)
            .map_err(|e| status("GetPublicKey", e))
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let run = calls::sign(&self.shared, request.get_ref());
        self.stamped(&request, "Sign", pb::AuditAction::Sign, run)
            .await
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        let run = calls::sign_batch(&self.shared, request.get_ref());
        self.stamped(&request, "SignBatch", pb::AuditAction::SignBatch, run)
            .await
    }

    async fn sign_ethereum(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        let run = ethereum::sign_ethereum(&self.shared, request.get_ref());
        self.stamped(&request, "SignEthereum", pb::AuditAction::SignEthereum, run)
            .await
    }

    async fn sign_psbt(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        let run = bitcoin::sign_psbt(&self.shared, request.get_ref());
        self.stamped(&request, "SignPsbt", pb::AuditAction::SignPsbt, run)
            .await
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let nonce = request.into_inner().nonce;
        let attestor = Arc::clone(&self.attestor);
        // The document carries the enclave's identity (statement-signing and HPKE keys).
        let user_data = self.shared.identity.user_data();
        // The NSM call blocks on an ioctl; keep it off the async workers.
        let document = tokio::task::spawn_blocking(move || {
            attestor.attest(AttestRequest {
                nonce: Some(&nonce),
                user_data: Some(&user_data),
                public_key: None,
            })
        })
        .await
        .map_err(|_| Status::internal("internal error"))?
        .map_err(|e| status("Attest", e))?;
        Ok(Response::new(pb::AttestResponse {
            document,
            config: self.shared.config.clone(),
        }))
    }

    async fn set_credentials(
        &self,
        request: Request<pb::AwsCredentials>,
    ) -> Result<Response<pb::SetCredentialsResponse>, Status> {
        let c = request.into_inner();
        intake::host::credentials(&c).map_err(|e| status("SetCredentials", e))?;
        self.credentials.set(kms::credentials(
            c.access_key_id,
            c.secret_access_key,
            c.session_token,
            c.expiration_unix,
        ));
        tracing::info!(
            expiration_unix = c.expiration_unix,
            "AWS credentials received from the host"
        );
        Ok(Response::new(pb::SetCredentialsResponse {}))
    }

    type SignStreamStream = ResponseStream;

    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let shared = Arc::clone(&self.shared);
        // Items are signed concurrently, up to STREAM_IN_FLIGHT per stream on every core, and
        // answered as they finish; each answer carries its request's id.
        let tasks = request.into_inner().map(move |item| {
            let shared = Arc::clone(&shared);
            let arrival = shared.stamps.arrival();
            tokio::spawn(async move {
                let answer = Self::stream_item(&shared, item).await;
                drop(arrival);
                answer
            })
        });
        let responses = futures_util::StreamExt::buffer_unordered(tasks, STREAM_IN_FLIGHT)
            .map(|joined| joined.unwrap_or_else(|_| Err(Status::internal("internal error"))));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Items of one stream signed concurrently.
const STREAM_IN_FLIGHT: usize = 64;

impl<B: Backend> EnclaveApi<B> {
    /// Runs a stamped call in its request's span; a refusal is answered, logged and audited
    /// there too.
    async fn stamped<R>(
        &self,
        request: &Request<pb::SignedRequest>,
        call: &'static str,
        action: pb::AuditAction,
        run: impl Future<Output = Result<R, Error>>,
    ) -> Result<Response<R>, Status> {
        let _arrival = self.shared.stamps.arrival();
        async {
            run.await
                .map(Response::new)
                .map_err(|e| refused(&self.shared, action, request, call, e))
        }
        .instrument(call_span(call, request))
        .await
    }

    /// Answers one streamed item: a transport error ends the stream, a refused request is
    /// answered with its status and the stream goes on.
    async fn stream_item(
        shared: &State<B>,
        item: Result<pb::SignStreamRequest, Status>,
    ) -> Result<pb::SignStreamResponse, Status> {
        let item = item?;
        let result = match item.request.as_ref() {
            Some(request) => calls::sign(shared, request).await,
            None => Err(Error::InvalidArgument("missing request")),
        };
        Ok(match result {
            Ok(response) => pb::SignStreamResponse {
                id: item.id,
                response: Some(response),
                error: None,
            },
            Err(error) => {
                let status = status("SignStream", error);
                let body = item.request.as_ref().map_or(&[][..], |r| r.body.as_slice());
                shared
                    .audit
                    .refused(pb::AuditAction::Sign, body, status.code());
                pb::SignStreamResponse {
                    id: item.id,
                    response: None,
                    error: Some(pb::StreamError {
                        code: status.code().into(),
                        message: status.message().to_owned(),
                    }),
                }
            }
        })
    }
}
