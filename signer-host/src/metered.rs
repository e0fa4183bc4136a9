//! The public API as served: the [`Relay`], each call counted, timed and tracked in flight by
//! [`Metrics`] under its method's name.

use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::signer_service_server::SignerService;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::relay::{Relay, ResponseStream};

/// The relay, metered.
pub struct Metered {
    relay: Relay,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Meters `relay` into `metrics`.
    pub fn new(relay: Relay, metrics: Arc<Metrics>) -> Self {
        Self { relay, metrics }
    }
}

#[tonic::async_trait]
impl SignerService for Metered {
    async fn create_keyring(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        let call = self.relay.create_keyring(request);
        self.metrics.observe("CreateKeyring", call).await
    }

    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let call = self.relay.create_key(request);
        self.metrics.observe("CreateKey", call).await
    }

    async fn import_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let call = self.relay.import_key(request);
        self.metrics.observe("ImportKey", call).await
    }

    async fn update_policy(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let call = self.relay.update_policy(request);
        self.metrics.observe("UpdatePolicy", call).await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let call = self.relay.get_public_key(request);
        self.metrics.observe("GetPublicKey", call).await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let call = self.relay.list_keys(request);
        self.metrics.observe("ListKeys", call).await
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let call = self.relay.sign(request);
        self.metrics.observe("Sign", call).await
    }

    async fn sign_ethereum(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        let call = self.relay.sign_ethereum(request);
        self.metrics.observe("SignEthereum", call).await
    }

    async fn sign_psbt(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        let call = self.relay.sign_psbt(request);
        self.metrics.observe("SignPsbt", call).await
    }

    type SignStreamStream = ResponseStream;

    /// Counted when the stream opens (its items are not counted one by one).
    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let call = self.relay.sign_stream(request);
        self.metrics.observe("SignStream", call).await
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let call = self.relay.attest(request);
        self.metrics.observe("Attest", call).await
    }
}
