//! The enclave's gRPC service: routes each call by lifecycle phase to the vault.
//!
//! Every failure is logged here with its detail and returned as a generic status.

use std::pin::Pin;
use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::enclave_service_server::EnclaveService;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::attestation::{AttestRequest, Attestor};
use crate::backend::Backend;
use crate::ids::{KeyId, KeyringId};
use crate::keyinfo::key_info;
use crate::provider::KeyWrapper;
use crate::provider::kms::{self, HostCredentials};
use crate::request::{self, SignKind};
use crate::vault::{Phase, Rejection, SealedRecord, Vault};

/// The enclave service over a chosen backend.
pub struct EnclaveApi<B: Backend> {
    vault: Arc<Vault<B>>,
    provider: Arc<dyn KeyWrapper>,
    attestor: Arc<dyn Attestor>,
    credentials: HostCredentials,
    boot_id: [u8; 16],
}

impl<B: Backend> EnclaveApi<B> {
    /// A new, empty enclave awaiting keyrings.
    ///
    /// # Errors
    /// [`Error::Rng`] if the boot id cannot be drawn.
    pub fn new(
        provider: Arc<dyn KeyWrapper>,
        attestor: Arc<dyn Attestor>,
        credentials: HostCredentials,
    ) -> Result<Self, Error> {
        let mut boot_id = [0u8; 16];
        getrandom::fill(&mut boot_id)?;
        Ok(Self {
            vault: Arc::default(),
            provider,
            attestor,
            credentials,
            boot_id,
        })
    }

    /// Signs one stamped request.
    fn sign_one(vault: &Vault<B>, request: &pb::SignedRequest) -> Result<pb::SignResponse, Error> {
        let op = request::decode_sign(request)?;
        let key_id = op.key_id.to_string();
        match op.kind {
            SignKind::Ecdsa(digest) => {
                let signature = vault.with_key(&op.key_id, |k| B::sign_ecdsa(&k.key, &digest))?;
                Ok(pb::SignResponse {
                    key_id,
                    scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                    signature: signature.rs.to_vec(),
                    recovery_id: u32::from(signature.recovery_id),
                })
            }
            SignKind::Schnorr(message) => {
                let mut aux = [0u8; 32];
                getrandom::fill(&mut aux)?;
                let signature =
                    vault.with_key(&op.key_id, |k| B::sign_schnorr(&k.key, &message, &aux))??;
                Ok(pb::SignResponse {
                    key_id,
                    scheme: pb::SignatureScheme::Bip340Schnorr.into(),
                    signature: signature.to_vec(),
                    recovery_id: 0,
                })
            }
        }
    }
}

/// Logs an error's detail inside the enclave and turns it into its generic status.
fn status(call: &'static str, error: Error) -> Status {
    match &error {
        Error::InvalidArgument(_) | Error::KeyNotFound | Error::NotReady => {
            tracing::debug!(call, %error, "refused")
        }
        _ => tracing::warn!(call, %error, "failed"),
    }
    Status::from(error)
}

fn parse_record(key: pb::SealedKey) -> Result<SealedRecord, Error> {
    Ok(SealedRecord {
        key_id: KeyId::parse(&key.key_id)?,
        keyring_id: KeyringId::parse(&key.keyring_id)?,
        public_key: key
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("public key"))?,
        policy: key.policy,
        label: key.label,
        sealed: key.sealed,
    })
}

/// Records opened per blocking task during `LoadKeys`.
const LOAD_BATCH: usize = 1024;

/// Opens a batch of stored records; refusals are collected, invariant breaches end the load.
fn load_batch<B: Backend>(
    vault: &Vault<B>,
    records: Vec<pb::SealedKey>,
) -> Result<pb::LoadKeysResponse, Status> {
    let mut outcome = pb::LoadKeysResponse::default();
    for key in records {
        let claimed: String = key.key_id.chars().take(64).collect();
        let result = match parse_record(key) {
            Ok(record) => match vault.load_key(&record).map_err(|e| status("LoadKeys", e))? {
                // Already in RAM (a load retried after an interrupted stream): nothing to report.
                Err(Rejection::Duplicate) => {
                    tracing::debug!(key_id = %claimed, "sealed record already loaded");
                    continue;
                }
                other => other.map_err(Rejection::reason),
            },
            Err(_) => Err("malformed"),
        };
        match result {
            Ok(()) => outcome.loaded += 1,
            Err(reason) => {
                tracing::warn!(key_id = %claimed, reason, "sealed record refused");
                outcome.rejected.push(pb::RejectedKey {
                    key_id: claimed,
                    reason: reason.to_owned(),
                });
            }
        }
    }
    Ok(outcome)
}

fn merge(
    total: &mut pb::LoadKeysResponse,
    joined: Option<Result<Result<pb::LoadKeysResponse, Status>, tokio::task::JoinError>>,
) -> Result<(), Status> {
    let Some(joined) = joined else { return Ok(()) };
    let batch = joined.map_err(|_| Status::internal("internal error"))??;
    total.loaded += batch.loaded;
    total.rejected.extend(batch.rejected);
    Ok(())
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SignStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> EnclaveService for EnclaveApi<B> {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let phase = match self.vault.phase() {
            Phase::AwaitingKeyrings => pb::Phase::AwaitingKeyrings,
            Phase::Ready => pb::Phase::Ready,
            Phase::Unrecoverable => pb::Phase::Unrecoverable,
        };
        let (keyrings, keys) = self.vault.counts();
        Ok(Response::new(pb::StatusResponse {
            phase: phase.into(),
            boot_id: self.boot_id.to_vec(),
            backend: B::NAME.to_owned(),
            provider: self.provider.name().to_owned(),
            keyrings: u32::try_from(keyrings).unwrap_or(u32::MAX),
            keys: u64::try_from(keys).unwrap_or(u64::MAX),
            provider_calls: self.vault.provider_calls(),
            attestor: self.attestor.name().to_owned(),
        }))
    }

    async fn create_keyring(
        &self,
        _: Request<pb::CreateKeyringRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        let (id, wrapped) = self
            .vault
            .create_keyring(self.provider.as_ref())
            .await
            .map_err(|e| status("CreateKeyring", e))?;
        Ok(Response::new(pb::CreateKeyringResponse {
            keyring_id: id.to_string(),
            wrapped_key: wrapped,
            provider: self.provider.name().to_owned(),
        }))
    }

    async fn load_keyring(
        &self,
        request: Request<pb::LoadKeyringRequest>,
    ) -> Result<Response<pb::LoadKeyringResponse>, Status> {
        let request = request.into_inner();
        let id = KeyringId::parse(&request.keyring_id).map_err(|e| status("LoadKeyring", e))?;
        self.vault
            .load_keyring(self.provider.as_ref(), id, &request.wrapped_key)
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
                let vault = Arc::clone(&self.vault);
                let records = std::mem::replace(&mut batch, Vec::with_capacity(LOAD_BATCH));
                workers.spawn_blocking(move || load_batch(&vault, records));
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
        _: Request<pb::FinishLoadingRequest>,
    ) -> Result<Response<pb::FinishLoadingResponse>, Status> {
        self.vault
            .finish_loading()
            .map_err(|e| status("FinishLoading", e))?;
        Ok(Response::new(pb::FinishLoadingResponse {}))
    }

    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::EnclaveCreateKeyResponse>, Status> {
        let op = request::decode_create(request.get_ref()).map_err(|e| status("CreateKey", e))?;
        let (record, public) = self
            .vault
            .create_key(op.keyring_id, &op.label)
            .map_err(|e| status("CreateKey", e))?;
        let policy_hash = crate::seal::policy_hash(&record.policy);
        let info = key_info(
            &record.key_id,
            &record.keyring_id,
            &public,
            &policy_hash,
            &record.label,
        );
        tracing::info!(key_id = %record.key_id, keyring = %record.keyring_id, "key created");
        Ok(Response::new(pb::EnclaveCreateKeyResponse {
            key: Some(info),
            sealed: Some(pb::SealedKey {
                key_id: record.key_id.to_string(),
                keyring_id: record.keyring_id.to_string(),
                public_key: record.public_key.to_vec(),
                policy: record.policy,
                label: record.label,
                sealed: record.sealed,
            }),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let id = KeyId::parse(&request.get_ref().key_id).map_err(|e| status("GetPublicKey", e))?;
        let identity = self
            .vault
            .identity(&id)
            .map_err(|e| status("GetPublicKey", e))?;
        // Labels are the host's bookkeeping: it fills them in from its store.
        Ok(Response::new(key_info(
            &id,
            &identity.keyring_id,
            &identity.public,
            &identity.policy_hash,
            "",
        )))
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        Self::sign_one(&self.vault, request.get_ref())
            .map(Response::new)
            .map_err(|e| status("Sign", e))
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let nonce = request.into_inner().nonce;
        let attestor = Arc::clone(&self.attestor);
        // The NSM call blocks on an ioctl; keep it off the async workers.
        let document = tokio::task::spawn_blocking(move || {
            attestor.attest(AttestRequest {
                nonce: Some(&nonce),
                ..AttestRequest::default()
            })
        })
        .await
        .map_err(|_| Status::internal("internal error"))?
        .map_err(|e| status("Attest", e))?;
        Ok(Response::new(pb::AttestResponse { document }))
    }

    async fn set_credentials(
        &self,
        request: Request<pb::AwsCredentials>,
    ) -> Result<Response<pb::SetCredentialsResponse>, Status> {
        let c = request.into_inner();
        if c.access_key_id.is_empty()
            || c.secret_access_key.is_empty()
            || c.access_key_id.len() > 256
            || c.secret_access_key.len() > 256
            || c.session_token.len() > 8192
        {
            return Err(status(
                "SetCredentials",
                Error::InvalidArgument("malformed credentials"),
            ));
        }
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
        let vault = Arc::clone(&self.vault);
        // Items are signed concurrently, up to STREAM_IN_FLIGHT per stream on every core, and
        // answered as they finish; each answer carries its request's id.
        let tasks = request.into_inner().map(move |item| {
            let vault = Arc::clone(&vault);
            tokio::spawn(async move { Self::stream_item(&vault, item) })
        });
        let responses = futures_util::StreamExt::buffer_unordered(tasks, STREAM_IN_FLIGHT)
            .map(|joined| joined.unwrap_or_else(|_| Err(Status::internal("internal error"))));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// Items of one stream signed concurrently.
const STREAM_IN_FLIGHT: usize = 64;

impl<B: Backend> EnclaveApi<B> {
    /// Answers one streamed item: a transport error ends the stream, a refused request is
    /// answered with its status and the stream goes on.
    fn stream_item(
        vault: &Vault<B>,
        item: Result<pb::SignStreamRequest, Status>,
    ) -> Result<pb::SignStreamResponse, Status> {
        let item = item?;
        let result = item
            .request
            .as_ref()
            .ok_or(Error::InvalidArgument("missing request"))
            .and_then(|r| Self::sign_one(vault, r));
        Ok(match result {
            Ok(response) => pb::SignStreamResponse {
                id: item.id,
                response: Some(response),
                error: None,
            },
            Err(error) => {
                let status = status("SignStream", error);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::K256;
    use crate::provider::local::LocalProvider;

    /// A load retried after an interrupted stream sends records that are already in RAM: they
    /// are not reported as refused (the host would tell operators they are lost).
    #[tokio::test]
    async fn reloading_a_loaded_record_is_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::open(&dir.path().join("master.key"), true).unwrap();
        let first = Vault::<K256>::default();
        let (keyring, wrapped) = first.create_keyring(&provider).await.unwrap();
        first.finish_loading().unwrap();
        let (record, _) = first.create_key(None, "").unwrap();
        let wire = pb::SealedKey {
            key_id: record.key_id.to_string(),
            keyring_id: record.keyring_id.to_string(),
            public_key: record.public_key.to_vec(),
            policy: record.policy.clone(),
            label: String::new(),
            sealed: record.sealed.clone(),
        };
        let mut tampered = wire.clone();
        tampered.key_id = KeyId::random().unwrap().to_string();

        let second = Vault::<K256>::default();
        second
            .load_keyring(&provider, keyring, &wrapped)
            .await
            .unwrap();
        let outcome = load_batch(&second, vec![wire.clone(), wire, tampered]).unwrap();
        assert_eq!(outcome.loaded, 1);
        assert_eq!(
            outcome.rejected.len(),
            1,
            "only the record under another id is refused"
        );
        assert_eq!(outcome.rejected[0].reason, "seal check failed");
    }
}
