//! `SignStream`: many sign requests in flight on one bidirectional call, each answer verified.

use std::collections::HashMap;
use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::signer_service_client::SignerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::Client;
use crate::Error;
use crate::verify::{self, EcdsaSignature, KeyInfo, SchnorrSignature};

/// Requests buffered towards the service before `submit` waits.
const SEND_BUFFER: usize = 1024;

/// A verified answer from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamSignature {
    /// ECDSA.
    Ecdsa(EcdsaSignature),
    /// BIP-340.
    Schnorr(SchnorrSignature),
}

enum Pending {
    Ecdsa(Arc<KeyInfo>, [u8; 32]),
    Schnorr(Arc<KeyInfo>, Vec<u8>),
}

/// A signing stream. Submit requests, then read answers (in any order) with [`SignStream::next`].
pub struct SignStream {
    client: Client,
    tx: Option<mpsc::Sender<pb::SignStreamRequest>>,
    rx: Streaming<pb::SignStreamResponse>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

impl core::fmt::Debug for SignStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignStream")
            .field("in_flight", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl SignStream {
    pub(super) async fn open(
        client: Client,
        mut raw: SignerServiceClient<Channel>,
    ) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let responses = raw.sign_stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self {
            client,
            tx: Some(tx),
            rx: responses,
            next_id: 1,
            pending: HashMap::new(),
        })
    }

    async fn submit(
        &mut self,
        key_id: &str,
        scheme: pb::SignatureScheme,
        payload: Vec<u8>,
        pending: Pending,
    ) -> Result<u64, Error> {
        let request = self.client.sign_request(key_id, &[], scheme, &payload)?;
        let id = self.next_id;
        self.next_id += 1;
        let tx = self
            .tx
            .as_ref()
            .ok_or(Error::InvalidArgument("stream already closed for sending"))?;
        tx.send(pb::SignStreamRequest {
            id,
            request: Some(request),
        })
        .await
        .map_err(|_| Error::Status(Box::new(tonic::Status::unavailable("stream closed"))))?;
        self.pending.insert(id, pending);
        Ok(id)
    }

    /// Queues an ECDSA request; returns its id.
    ///
    /// # Errors
    /// Key lookup failures, or a closed stream.
    pub async fn submit_digest(&mut self, key_id: &str, digest: [u8; 32]) -> Result<u64, Error> {
        let key = self.client.verified_key(key_id).await?;
        self.submit(
            key_id,
            pb::SignatureScheme::EcdsaSecp256k1,
            digest.to_vec(),
            Pending::Ecdsa(key, digest),
        )
        .await
    }

    /// Queues a BIP-340 request; returns its id.
    ///
    /// # Errors
    /// Key lookup failures, or a closed stream.
    pub async fn submit_schnorr(&mut self, key_id: &str, message: &[u8]) -> Result<u64, Error> {
        let key = self.client.verified_key(key_id).await?;
        self.submit(
            key_id,
            pb::SignatureScheme::Bip340Schnorr,
            message.to_vec(),
            Pending::Schnorr(key, message.to_vec()),
        )
        .await
    }

    /// Requests submitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Stops sending; answers to submitted requests still arrive.
    pub fn close_send(&mut self) {
        self.tx = None;
    }

    /// The next answer: its request id and the verified signature, or that request's error.
    /// `None` when the stream has ended.
    ///
    /// # Errors
    /// The outer error is the stream's (it ended abnormally); the inner is one request's.
    pub async fn next(&mut self) -> Option<Result<(u64, Result<StreamSignature, Error>), Error>> {
        let item = match self.rx.message().await {
            Ok(Some(item)) => item,
            Ok(None) => return None,
            Err(status) => return Some(Err(status.into())),
        };
        let Some(pending) = self.pending.remove(&item.id) else {
            return Some(Err(Error::Verification("answer for a request never sent")));
        };
        let result = match (item.response, item.error, pending) {
            (Some(reply), None, Pending::Ecdsa(key, digest)) => {
                verify::verify_ecdsa(&key, &digest, &reply).map(StreamSignature::Ecdsa)
            }
            (Some(reply), None, Pending::Schnorr(key, message)) => {
                verify::verify_schnorr(&key, &message, &reply).map(StreamSignature::Schnorr)
            }
            (None, Some(error), _) => {
                Err(tonic::Status::new(tonic::Code::from_i32(error.code), error.message).into())
            }
            _ => Err(Error::Verification("malformed stream answer")),
        };
        Some(Ok((item.id, result)))
    }
}
