//! Rust SDK of the signer: connect, create and list keys, sign, verify every answer.
#![doc = include_str!("../README.md")]

pub use signer_attestation as attestation;
pub mod audit;
pub mod bitcoin;
mod client;
pub mod deployment;
mod error;
pub mod ethereum;
pub mod fleet;
pub mod hd;
pub mod policy;
pub mod stamper;
pub mod trust;
pub mod verify;

pub use client::{
    Client, ClientConfig, ClientTls, EnclaveAttestation, MAX_BATCH, RetryPolicy, SignStream,
    StreamSignature,
};
pub use error::Error;
pub use ethereum::{EthereumSignature, SignedTransaction};
pub use fleet::{Answered, Fleet};
pub use signer_proto::pb;
pub use signer_proto::transport::Address;
pub use stamper::{ApiKeyPair, ApiKeyScheme, Stamper};
pub use trust::AttestedIdentity;
pub use verify::{EcdsaSignature, KeyInfo, SchnorrSignature};
