//! The baseline of the end-to-end benchmark: a bare tonic two-hop relay (client → relay → server)
//! whose server signs with the same backend and does nothing else — no key store, no lifecycle,
//! no validation beyond the digest length. It answers the same `signer.v1.SignerService` calls the
//! load generator makes (`GetPublicKey`, `Sign`, `SignStream`), so the same SDK code drives both.

use std::pin::Pin;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use prost::Message as _;
use signer_enclave::backend::{Backend, BackendKind, Digest32, K256, Libsecp256k1};
use signer_enclave::ids::{KeyId, KeyringId};
use signer_enclave::secret::WalletSecret;
use signer_proto::pb;
use signer_proto::pb::signer_service_client::SignerServiceClient;
use signer_proto::pb::signer_service_server::{SignerService, SignerServiceServer};
use signer_proto::transport::{self, Address, DialOptions, Listener};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};

/// Baseline server or relay.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The signing server (stands where the enclave stands).
    Server {
        /// Listen address.
        #[arg(long)]
        listen: Address,
        /// Backend: k256 or secp256k1.
        #[arg(long)]
        backend: BackendKind,
    },
    /// The relay (stands where the host stands).
    Relay {
        /// Listen address.
        #[arg(long)]
        listen: Address,
        /// The server's address.
        #[arg(long)]
        upstream: Address,
    },
}

/// The one key the baseline server signs with.
pub const BASELINE_KEY_ID: &str = "k-0000000000000000000000000000000b";

struct SignServer<B: Backend> {
    inner: Arc<Signing<B>>,
}

struct Signing<B: Backend> {
    key: B::Key,
    info: pb::KeyInfo,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SignStreamResponse, Status>> + Send>>;

impl<B: Backend> Signing<B> {
    fn sign(&self, request: &pb::SignedRequest) -> Result<pb::SignResponse, Status> {
        // Decodes the stamped body like the enclave, and trusts it: no stamp is verified.
        let body = pb::RequestBody::decode(request.body.as_slice())
            .ok()
            .and_then(|b| match b.operation {
                Some(pb::request_body::Operation::Sign(sign)) => Some(sign),
                _ => None,
            })
            .ok_or_else(|| Status::invalid_argument("body"))?;
        let digest: [u8; 32] = body
            .payload
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("digest"))?;
        let signature = B::sign_ecdsa(&self.key, &Digest32(digest));
        Ok(pb::SignResponse {
            key_id: body.key_id,
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            signature: signature.rs.to_vec(),
            recovery_id: u32::from(signature.recovery_id),
        })
    }
}

#[tonic::async_trait]
impl<B: Backend> SignerService for SignServer<B> {
    async fn create_keyring(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn import_key(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn update_policy(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn create_key(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_public_key(
        &self,
        _: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        Ok(Response::new(pb::GetPublicKeyResponse {
            key: Some(self.inner.info.clone()),
        }))
    }
    async fn list_keys(
        &self,
        _: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn read_audit_trail(
        &self,
        _: Request<pb::ReadAuditTrailRequest>,
    ) -> Result<Response<pb::ReadAuditTrailResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        self.inner.sign(request.get_ref()).map(Response::new)
    }
    async fn sign_ethereum(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign_psbt(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign_batch(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn attest(
        &self,
        _: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type SignStreamStream = ResponseStream;
    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let this = Arc::clone(&self.inner);
        let out = request.into_inner().map(move |item| {
            let item = item?;
            let response = item.request.as_ref().map(|r| this.sign(r)).transpose()?;
            Ok(pb::SignStreamResponse {
                id: item.id,
                response,
                error: None,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

struct Relay {
    upstream: SignerServiceClient<Channel>,
}

#[tonic::async_trait]
impl SignerService for Relay {
    async fn create_keyring(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyringResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn import_key(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn update_policy(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn create_key(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        self.upstream
            .clone()
            .get_public_key(request.into_inner())
            .await
    }
    async fn list_keys(
        &self,
        _: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn read_audit_trail(
        &self,
        _: Request<pb::ReadAuditTrailRequest>,
    ) -> Result<Response<pb::ReadAuditTrailResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign(
        &self,
        request: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        self.upstream.clone().sign(request.into_inner()).await
    }
    async fn sign_ethereum(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignEthereumResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign_psbt(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignPsbtResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn sign_batch(
        &self,
        _: Request<pb::SignedRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn attest(
        &self,
        _: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type SignStreamStream = ResponseStream;
    async fn sign_stream(
        &self,
        request: Request<Streaming<pb::SignStreamRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let upstream = request.into_inner().map_while(Result::ok);
        let down = self
            .upstream
            .clone()
            .sign_stream(upstream)
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(down)))
    }
}

fn server<B: Backend>() -> SignerServiceServer<SignServer<B>> {
    let key =
        B::load(&WalletSecret::from_bytes(&[0x42; 32])).expect("0x42.. is a valid scalar qed");
    let key_id = KeyId::parse(BASELINE_KEY_ID).expect("constant id is well formed qed");
    let keyring = KeyringId::parse("kr-0000000000000000000000000000000b")
        .expect("constant id is well formed qed");
    let public = B::public_key(&key);
    // No statement: the baseline has no attested identity; the load generator vouches for this
    // key itself (`Client::trust_key`).
    let info = pb::KeyInfo {
        key_id: key_id.to_string(),
        keyring_id: keyring.to_string(),
        public_key_compressed: public.compressed().to_vec(),
        public_key_uncompressed: public.0.to_vec(),
        public_key_xonly: public.xonly().to_vec(),
        ethereum_address: signer_proto::ethereum_address(&public.0),
        policy_hash: signer_proto::canonical::policy_hash(&[]).to_vec(),
        label: "baseline".into(),
        ..pb::KeyInfo::default()
    };
    SignerServiceServer::new(SignServer {
        inner: Arc::new(Signing { key, info }),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = match Cli::parse().command {
        Command::Server { listen, backend } => {
            let router = match backend {
                BackendKind::K256 => Server::builder().add_service(server::<K256>()),
                BackendKind::Secp256k1 => Server::builder().add_service(server::<Libsecp256k1>()),
            };
            (listen, router)
        }
        Command::Relay { listen, upstream } => {
            let channel = transport::dial(&upstream, DialOptions::default())?;
            let relay = Relay {
                upstream: SignerServiceClient::new(channel),
            };
            (
                listen,
                Server::builder()
                    .tcp_nodelay(true)
                    .add_service(SignerServiceServer::new(relay)),
            )
        }
    };
    let (listen, router) = router;
    let listener = Listener::bind(&listen).await?;
    println!(
        "listening {}",
        listener
            .local_address()
            .map_or_else(|| listen.to_string(), |a| a.to_string())
    );
    listener.serve(router, std::future::pending()).await?;
    Ok(())
}
