//! The public API as served: the [`Relay`], each call counted, timed and tracked in flight by
//! [`Metrics`] under its method's name, and given a request id (the client's `x-request-id` if
//! it is a plain short token, a fresh random one otherwise) that the host's and the enclave's log
//! lines for the call carry and the answer returns.

use std::future::Future;
use std::sync::Arc;

use signer_proto::pb::signer_service_server::SignerService;
use signer_proto::{REQUEST_ID_HEADER, pb, valid_request_id};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

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

impl Metered {
    /// Serves `call` as `method`: metered, in a span carrying the request id, answered with it.
    async fn serve<T>(
        &self,
        method: &'static str,
        id: MetadataValue<Ascii>,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let span =
            tracing::info_span!("call", method, request_id = id.to_str().unwrap_or_default());
        let result = self
            .metrics
            .observe(method, call)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!("answered"),
            Err(status) => tracing::info!(code = ?status.code(), "refused"),
        });
        match result {
            Ok(mut response) => {
                response.metadata_mut().insert(REQUEST_ID_HEADER, id);
                Ok(response)
            }
            Err(mut status) => {
                status.metadata_mut().insert(REQUEST_ID_HEADER, id);
                Err(status)
            }
        }
    }
}

/// The call's request id: the client's, if it sent an acceptable one, or a fresh one; set on
/// the request for the relay to pass on.
fn tagged<T>(mut request: Request<T>) -> (Request<T>, MetadataValue<Ascii>) {
    let given = request
        .metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| valid_request_id(id))
        .and_then(|id| MetadataValue::try_from(id).ok());
    let mut id = given.unwrap_or_else(fresh_id);
    // Every id is new, so HTTP/2 header compression gains nothing from indexing it, and each
    // one would push the connection's repeated headers out of its table: sent never-indexed.
    id.set_sensitive(true);
    request.metadata_mut().insert(REQUEST_ID_HEADER, id.clone());
    (request, id)
}

/// A fresh request id: 16 random bytes in hex.
fn fresh_id() -> MetadataValue<Ascii> {
    let mut bytes = [0u8; 16];
    // Without the OS RNG the id is still unique enough to read a log by: the time.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_be_bytes();
    }
    let mut text = [0u8; 32];
    hex::encode_to_slice(bytes, &mut text)
        .ok()
        .and_then(|()| MetadataValue::try_from(&text[..]).ok())
        .unwrap_or(MetadataValue::from_static("unset"))
}

#[tonic::async_trait]
impl SignerService for Metered {
    async fn create_keyring(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.create_keyring(request);
        self.serve("CreateKeyring", id, call).await
    }

    async fn create_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.create_key(request);
        self.serve("CreateKey", id, call).await
    }

    async fn import_key(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.import_key(request);
        self.serve("ImportKey", id, call).await
    }

    async fn update_policy(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.update_policy(request);
        self.serve("UpdatePolicy", id, call).await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.get_public_key(request);
        self.serve("GetPublicKey", id, call).await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.list_keys(request);
        self.serve("ListKeys", id, call).await
    }

    async fn read_audit_trail(
        &self,
        request: Request<pb::ReadAuditTrailRequest>,
    ) -> Result<Response<pb::ReadAuditTrailResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.read_audit_trail(request);
        self.serve("ReadAuditTrail", id, call).await
    }

    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.sign(request);
        self.serve("Sign", id, call).await
    }

    async fn sign_batch(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.sign_batch(request);
        self.serve("SignBatch", id, call).await
    }

    async fn sign_ethereum(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.sign_ethereum(request);
        self.serve("SignEthereum", id, call).await
    }

    async fn sign_psbt(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.sign_psbt(request);
        self.serve("SignPsbt", id, call).await
    }

    type SignStreamStream = ResponseStream;

    /// Counted when the stream opens (its items are not counted one by one).
    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.sign_stream(request);
        self.serve("SignStream", id, call).await
    }

    async fn attest(
        &self,
        request: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        let (request, id) = tagged(request);
        let call = self.relay.attest(request);
        self.serve("Attest", id, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_id_is_32_hex_digits_valid_on_the_wire_and_new_each_time() {
        let first = fresh_id();
        let text = first.to_str().expect("ascii");
        assert_eq!(text.len(), 32);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(valid_request_id(text));
        assert_ne!(fresh_id(), first);
    }

    #[test]
    fn a_clients_acceptable_id_is_kept_and_any_other_replaced() {
        let mut request = Request::new(());
        request.metadata_mut().insert(
            REQUEST_ID_HEADER,
            MetadataValue::from_static("order-42.a_b"),
        );
        let (request, id) = tagged(request);
        assert_eq!(id, "order-42.a_b");
        assert_eq!(request.metadata().get(REQUEST_ID_HEADER), Some(&id));

        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(REQUEST_ID_HEADER, MetadataValue::from_static("no spaces"));
        let (_, id) = tagged(request);
        assert_eq!(id.to_str().expect("ascii").len(), 32);
    }
}
