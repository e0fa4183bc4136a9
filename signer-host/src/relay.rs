//! The public `SignerService`: validates sizes, relays to the enclave, persists what the enclave
//! creates. It never decodes a request body beyond what routing needs, and never holds a secret.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message as _;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use signer_proto::pb::signer_service_server::SignerService;
use signer_proto::{REQUEST_ID_HEADER, pb};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::Error;
use crate::clients::ClientLimits;
use crate::metrics::Metrics;
use crate::store::{KeyStore, StoredKey, StoredKeyring, blocking};

/// Largest `ListKeys` page.
const MAX_PAGE: u32 = 1_000;
const DEFAULT_PAGE: u32 = 100;

/// The public API, relaying to one enclave.
pub struct Relay {
    enclave: EnclaveServiceClient<Channel>,
    store: Arc<dyn KeyStore>,
    metrics: Arc<Metrics>,
    hung: Arc<AtomicBool>,
    clients: Arc<ClientLimits>,
}

impl Relay {
    /// A relay to `enclave`, persisting into `store`, timing enclave round trips into `metrics`;
    /// while `hung` is set (by the loader's probe) calls are refused at once; each mutual-TLS
    /// client holds at most its share of `clients`.
    pub fn new(
        enclave: EnclaveServiceClient<Channel>,
        store: Arc<dyn KeyStore>,
        metrics: Arc<Metrics>,
        hung: Arc<AtomicBool>,
        clients: Arc<ClientLimits>,
    ) -> Self {
        Self {
            enclave,
            store,
            metrics,
            hung,
            clients,
        }
    }

    /// UNAVAILABLE at once while the enclave is hung, rather than a call that waits out its
    /// deadline (the client retries, or its fleet moves to another host).
    fn answering(&self) -> Result<(), Status> {
        if self.hung.load(Ordering::Relaxed) {
            Err(Status::unavailable("enclave unavailable"))
        } else {
            Ok(())
        }
    }
}

/// The request as it goes on to the enclave: the message and the call's request id only (none
/// of the client's other metadata).
fn onward<T>(request: Request<T>) -> Request<T> {
    let id = request.metadata().get(REQUEST_ID_HEADER).cloned();
    let mut onward = Request::new(request.into_inner());
    if let Some(id) = id {
        onward.metadata_mut().insert(REQUEST_ID_HEADER, id);
    }
    onward
}

/// The enclave's own UNAVAILABLE messages, passed through; any other UNAVAILABLE is the transport.
const ENCLAVE_UNAVAILABLE: [&str; 3] = [
    "attestation unavailable",
    "enclave is loading keys",
    "enclave is unrecoverable; restart it",
];

/// Passes the enclave's generic statuses through; turns transport failures into UNAVAILABLE
/// (including CANCELLED: a call to an enclave that died mid-request is cancelled, and the caller
/// should retry, not give up).
fn relayed(status: Status) -> Status {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::DeadlineExceeded => Status::new(status.code(), status.message()),
        Code::Unavailable if ENCLAVE_UNAVAILABLE.contains(&status.message()) => {
            Status::unavailable(status.message())
        }
        Code::Internal => Status::internal("internal error"),
        _ => {
            tracing::warn!(code = ?status.code(), detail = status.message(), "enclave call failed");
            Status::unavailable("enclave unavailable")
        }
    }
}

/// Splits an enclave's key reply into what the client gets and what the store keeps.
fn stored_key(created: pb::EnclaveCreateKeyResponse) -> Result<(pb::KeyInfo, StoredKey), Status> {
    let (Some(mut info), Some(sealed)) = (created.key, created.sealed) else {
        tracing::error!("enclave answered without a key or sealed record");
        return Err(Status::unavailable("enclave unavailable"));
    };
    // Labels are the host's bookkeeping, outside the enclave's signed statement.
    info.label = sealed.label.clone();
    let encoded = info.encode_to_vec();
    Ok((info, StoredKey::from_sealed(sealed, encoded)))
}

impl Relay {
    /// Stores a new key's sealed record before its identity reaches the caller.
    async fn persist_new(
        &self,
        created: pb::EnclaveCreateKeyResponse,
    ) -> Result<pb::CreateKeyResponse, Status> {
        let (info, stored) = stored_key(created)?;
        let store = Arc::clone(&self.store);
        let key_id = stored.key_id.clone();
        blocking(move || store.insert_key(&stored))
            .await
            .map_err(|error| {
                // The key exists only in enclave RAM and is lost at its next restart; the caller
                // never learned its id, so nothing was deposited to it.
                tracing::error!(%error, %key_id, "could not persist a new key");
                Status::unavailable("key store unavailable")
            })?;
        Ok(pb::CreateKeyResponse { key: Some(info) })
    }
}

fn check_envelope(request: &pb::SignedRequest) -> Result<(), Status> {
    signer_proto::envelope_problem(request)
        .map_or(Ok(()), |problem| Err(Status::invalid_argument(problem)))
}

impl Relay {
    /// Forwards one stamped request to the enclave after the envelope's size checks, and maps
    /// the enclave's answer for the public API.
    async fn forward<T, Fut>(
        &self,
        method: &'static str,
        request: Request<pb::SignedRequest>,
        call: impl FnOnce(EnclaveServiceClient<Channel>, Request<pb::SignedRequest>) -> Fut,
    ) -> Result<T, Status>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        check_envelope(request.get_ref())?;
        self.answering()?;
        let _slot = self.clients.admit(&request)?;
        self.metrics
            .enclave(method, call(self.enclave.clone(), onward(request)))
            .await
            .map(Response::into_inner)
            .map_err(relayed)
    }
}

pub(crate) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::SignStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SignerService for Relay {
    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let created = self
            .forward("CreateKey", request, |mut e, r| async move {
                e.create_key(r).await
            })
            .await?;
        self.persist_new(created).await.map(Response::new)
    }

    async fn import_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let created = self
            .forward("ImportKey", request, |mut e, r| async move {
                e.import_key(r).await
            })
            .await?;
        self.persist_new(created).await.map(Response::new)
    }

    async fn update_policy(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let changed = self
            .forward("UpdatePolicy", request, |mut e, r| async move {
                e.update_policy(r).await
            })
            .await?;
        let (mut info, stored) = stored_key(changed)?;
        let store = Arc::clone(&self.store);
        let key_id = stored.key_id.clone();
        info.label = blocking(move || {
            let label = store.label(&stored.key_id)?.unwrap_or_default();
            store.update_key(&stored).map(|()| label)
        })
        .await
        .map_err(|error| match error {
            // Another host stored a change of the same version first: this enclave follows
            // the store back to it. The caller reads the key and decides again.
            Error::StoreConflict(_) => {
                tracing::warn!(%key_id, "a concurrent policy change was stored first");
                Status::aborted(
                    "a concurrent policy change was stored first; read the key's policy and retry",
                )
            }
            // The enclave applies the new policy until it restarts; after a restart the stored
            // (old) record is loaded again. The caller sees the failure and can repeat the change.
            error => {
                tracing::error!(%error, %key_id, "could not persist a policy change");
                Status::unavailable("key store unavailable")
            }
        })?;
        Ok(Response::new(pb::UpdatePolicyResponse { key: Some(info) }))
    }

    async fn create_keyring(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        let mut created = self
            .forward("CreateKeyring", request, |mut e, r| async move {
                e.create_keyring(r).await
            })
            .await?;
        let answer = pb::CreateKeyringResponse {
            keyring_id: created.keyring_id.clone(),
            statement: created.statement.take(),
        };
        let keyring = StoredKeyring::from(created);
        let store = Arc::clone(&self.store);
        blocking(move || store.insert_keyring(&keyring))
            .await
            .map_err(|error| {
                tracing::error!(%error, "could not persist a new keyring");
                Status::unavailable("key store unavailable")
            })?;
        tracing::info!(keyring = %answer.keyring_id, "keyring created");
        Ok(Response::new(answer))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let _slot = self.clients.admit(&request)?;
        let id = request.metadata().get(REQUEST_ID_HEADER).cloned();
        let pb::GetPublicKeyRequest {
            key_id,
            challenge,
            path,
        } = request.into_inner();
        if key_id.len() > 64 {
            return Err(Status::invalid_argument("malformed KeyId"));
        }
        if path.len() > 255 {
            return Err(Status::invalid_argument("derivation path deeper than 255"));
        }
        let mut info = self
            .metrics
            .enclave(
                "GetPublicKey",
                self.enclave.clone().get_public_key({
                    let mut onward = Request::new(pb::GetKeyRequest {
                        key_id: key_id.clone(),
                        challenge,
                        path,
                    });
                    if let Some(id) = id {
                        onward.metadata_mut().insert(REQUEST_ID_HEADER, id);
                    }
                    onward
                }),
            )
            .await
            .map_err(relayed)?
            .into_inner();
        // The enclave answers for the key; the label is the host's own bookkeeping.
        let store = Arc::clone(&self.store);
        info.label = blocking(move || store.label(&key_id))
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading a label failed");
                Status::unavailable("key store unavailable")
            })?
            .unwrap_or_default();
        Ok(Response::new(pb::GetPublicKeyResponse { key: Some(info) }))
    }

    async fn read_audit_trail(
        &self,
        request: Request<pb::ReadAuditTrailRequest>,
    ) -> Result<Response<pb::ReadAuditTrailResponse>, Status> {
        let _slot = self.clients.admit(&request)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let store = Arc::clone(&self.store);
        let after = request.after_position;
        let response = blocking(move || {
            let page = store.audit_after(after, limit)?;
            let mut boots: Vec<pb::AuditBoot> = Vec::new();
            for (_, entry) in &page {
                if boots.iter().any(|b| b.boot_id == entry.boot_id) {
                    continue;
                }
                if let Some(document) = store.audit_boot(&entry.boot_id)? {
                    boots.push(pb::AuditBoot {
                        boot_id: entry.boot_id.clone(),
                        attestation_document: document,
                    });
                }
            }
            let entries = page
                .into_iter()
                .map(|(position, entry)| pb::StoredAuditEntry {
                    position,
                    signed: Some(pb::SignedAuditEntry {
                        entry: entry.entry,
                        signature: entry.signature,
                    }),
                })
                .collect();
            Ok(pb::ReadAuditTrailResponse { entries, boots })
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "reading the audit trail failed");
            Status::unavailable("key store unavailable")
        })?;
        Ok(Response::new(response))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let _slot = self.clients.admit(&request)?;
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => return Err(Status::invalid_argument("page_size must be at most 1000")),
        };
        let after = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse::<u64>()
                .map_err(|_| Status::invalid_argument("malformed page_token"))?,
        };
        let store = Arc::clone(&self.store);
        let limit = usize::try_from(page_size).unwrap_or(usize::MAX);
        let page = blocking(move || store.keys_after(after, limit))
            .await
            .map_err(|error| {
                tracing::error!(%error, "listing keys failed");
                Status::unavailable("key store unavailable")
            })?;
        let next_page_token = match page.last() {
            Some((position, _)) if page.len() == limit => position.to_string(),
            _ => String::new(),
        };
        let keys = page
            .into_iter()
            .map(|(_, key)| pb::KeyInfo::decode(key.info.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                tracing::error!("key store holds an undecodable key info");
                Status::unavailable("key store unavailable")
            })?;
        Ok(Response::new(pb::ListKeysResponse {
            keys,
            next_page_token,
        }))
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        self.forward("Sign", request, |mut e, r| async move { e.sign(r).await })
            .await
            .map(Response::new)
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        self.forward("SignBatch", request, |mut e, r| async move {
            e.sign_batch(r).await
        })
        .await
        .map(Response::new)
    }

    async fn sign_ethereum(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        self.forward("SignEthereum", request, |mut e, r| async move {
            e.sign_ethereum(r).await
        })
        .await
        .map(Response::new)
    }

    async fn sign_psbt(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        self.forward("SignPsbt", request, |mut e, r| async move {
            e.sign_psbt(r).await
        })
        .await
        .map(Response::new)
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let _slot = self.clients.admit(&request)?;
        if request.get_ref().nonce.len() > 512 {
            return Err(Status::invalid_argument("nonce longer than 512 bytes"));
        }
        let response = self
            .metrics
            .enclave("Attest", self.enclave.clone().attest(onward(request)))
            .await
            .map_err(relayed)?;
        Ok(Response::new(response.into_inner()))
    }

    type SignStreamStream = ResponseStream;

    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        self.answering()?;
        // The stream holds its client's slot until it ends.
        let slot = self.clients.admit(&request)?;
        // The client's stream ends the enclave's at its first transport error.
        let upstream = request.into_inner().map_while(Result::ok);
        let downstream = self
            .enclave
            .clone()
            .sign_stream(upstream)
            .await
            .map_err(relayed)?
            .into_inner();
        Ok(Response::new(Box::pin(downstream.map(move |item| {
            let _held = &slot;
            item.map_err(relayed)
        }))))
    }
}
