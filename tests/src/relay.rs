//! A hostile host in the middle, for end-to-end attacks: a real gRPC server on loopback that
//! serves the public `SignerService` to the SDK and relays every call to the real host, after
//! letting the test edit stamped requests (append its own stamps, swap bodies, lift
//! ciphertexts). It records every stamped request it sees, so the test can replay them later.
//! The attacker holds valid API keys of its own (`relay.keys`): authority it tries to smuggle in.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use signer_client::pb;
use signer_client::pb::signer_service_client::SignerServiceClient;
use signer_client::pb::signer_service_server::{SignerService, SignerServiceServer};
use signer_proto::transport::{Address, Listener};
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Which RPC a stamped request was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `CreateKeyring`.
    CreateKeyring,
    /// `CreateKey`.
    CreateKey,
    /// `ImportKey`.
    ImportKey,
    /// `UpdatePolicy`.
    UpdatePolicy,
    /// `Sign`.
    Sign,
    /// `SignEthereum`.
    SignEthereum,
    /// `SignPsbt`.
    SignPsbt,
    /// `SignBatch`.
    SignBatch,
}

/// Edits a stamped request on its way to the host.
pub type Tamper = Arc<dyn Fn(Method, &mut pb::SignedRequest) + Send + Sync>;

/// Edits a (not stamped) public-key lookup on its way to the host.
pub type TamperLookup = Arc<dyn Fn(&mut pb::GetPublicKeyRequest) + Send + Sync>;

/// Edits a signed PSBT on its way back to the SDK.
pub type TamperPsbtReply = Arc<dyn Fn(&mut pb::SignPsbtResponse) + Send + Sync>;

/// Edits a batch's signatures on their way back to the SDK.
pub type TamperBatchReply = Arc<dyn Fn(&mut pb::SignBatchResponse) + Send + Sync>;

#[derive(Default)]
struct Inner {
    tamper: Option<Tamper>,
    tamper_lookup: Option<TamperLookup>,
    tamper_psbt_reply: Option<TamperPsbtReply>,
    tamper_batch_reply: Option<TamperBatchReply>,
    seen: Vec<(Method, pb::SignedRequest)>,
}

/// The relay's handle: its address, what it saw, and the hook.
#[derive(Clone)]
pub struct HostileRelay {
    /// Where the SDK should connect instead of the host.
    pub address: Address,
    state: Arc<Mutex<Inner>>,
    upstream: SignerServiceClient<Channel>,
}

impl HostileRelay {
    /// Starts a relay to the host at `host` on a free loopback port.
    pub async fn start(host: &Address) -> HostileRelay {
        let upstream = SignerServiceClient::new(
            signer_proto::transport::dial(host, Default::default()).expect("valid address qed"),
        )
        .max_decoding_message_size(signer_proto::MAX_MESSAGE_BYTES);
        let state = Arc::new(Mutex::new(Inner::default()));
        let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().expect("address qed"))
            .await
            .expect("bind the relay");
        let address = listener
            .local_address()
            .expect("TCP listener has an address");
        let service = Service {
            state: Arc::clone(&state),
            upstream: upstream.clone(),
        };
        let router =
            tonic::transport::Server::builder().add_service(SignerServiceServer::new(service));
        tokio::spawn(listener.serve(router, std::future::pending()));
        HostileRelay {
            address,
            state,
            upstream,
        }
    }

    /// Sets (or clears) the hook applied to every stamped request from now on.
    pub fn tamper(&self, tamper: Option<Tamper>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper = tamper;
    }

    /// Sets (or clears) the hook applied to every `GetPublicKey` request from now on.
    pub fn tamper_lookup(&self, tamper: Option<TamperLookup>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_lookup = tamper;
    }

    /// Sets (or clears) the hook applied to every `SignPsbt` answer from now on.
    pub fn tamper_psbt_reply(&self, tamper: Option<TamperPsbtReply>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_psbt_reply = tamper;
    }

    /// Sets (or clears) the hook applied to every `SignBatch` answer from now on.
    pub fn tamper_batch_reply(&self, tamper: Option<TamperBatchReply>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_batch_reply = tamper;
    }

    /// The stamped requests seen so far, as they arrived (before any edit).
    pub fn seen(&self, method: Method) -> Vec<pb::SignedRequest> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// A raw client to the real host, for the attacker's own requests.
    pub fn host(&self) -> SignerServiceClient<Channel> {
        self.upstream.clone()
    }
}

struct Service {
    state: Arc<Mutex<Inner>>,
    upstream: SignerServiceClient<Channel>,
}

impl Service {
    fn edit(&self, method: Method, mut request: pb::SignedRequest) -> pb::SignedRequest {
        let tamper = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.seen.push((method, request.clone()));
            state.tamper.clone()
        };
        if let Some(tamper) = tamper {
            tamper(method, &mut request);
        }
        request
    }
}

type Answers = Pin<Box<dyn Stream<Item = Result<pb::SignStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SignerService for Service {
    async fn create_keyring(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        let request = self.edit(Method::CreateKeyring, request.into_inner());
        self.upstream.clone().create_keyring(request).await
    }

    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let request = self.edit(Method::CreateKey, request.into_inner());
        self.upstream.clone().create_key(request).await
    }

    async fn import_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let request = self.edit(Method::ImportKey, request.into_inner());
        self.upstream.clone().import_key(request).await
    }

    async fn update_policy(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let request = self.edit(Method::UpdatePolicy, request.into_inner());
        self.upstream.clone().update_policy(request).await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let mut request = request.into_inner();
        let tamper = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_lookup
            .clone();
        if let Some(tamper) = tamper {
            tamper(&mut request);
        }
        self.upstream.clone().get_public_key(request).await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.upstream.clone().list_keys(request.into_inner()).await
    }

    async fn read_audit_trail(
        &self,
        request: Request<pb::ReadAuditTrailRequest>,
    ) -> Result<Response<pb::ReadAuditTrailResponse>, Status> {
        self.upstream
            .clone()
            .read_audit_trail(request.into_inner())
            .await
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let request = self.edit(Method::Sign, request.into_inner());
        self.upstream.clone().sign(request).await
    }

    async fn sign_ethereum(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        let request = self.edit(Method::SignEthereum, request.into_inner());
        self.upstream.clone().sign_ethereum(request).await
    }

    async fn sign_psbt(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        let request = self.edit(Method::SignPsbt, request.into_inner());
        let mut reply = self.upstream.clone().sign_psbt(request).await?;
        let tamper = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_psbt_reply
            .clone();
        if let Some(tamper) = tamper {
            tamper(reply.get_mut());
        }
        Ok(reply)
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        let request = self.edit(Method::SignBatch, request.into_inner());
        let mut reply = self.upstream.clone().sign_batch(request).await?;
        let tamper = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tamper_batch_reply
            .clone();
        if let Some(tamper) = tamper {
            tamper(reply.get_mut());
        }
        Ok(reply)
    }

    type SignStreamStream = Answers;

    async fn sign_stream(
        &self,
        _: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<Answers>, Status> {
        Err(Status::unimplemented("not relayed"))
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        self.upstream.clone().attest(request.into_inner()).await
    }
}
