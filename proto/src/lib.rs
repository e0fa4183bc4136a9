//! Generated gRPC code for package `signer.v1`, plus the descriptor set for server reflection.
#![doc = include_str!("../README.md")]

mod generated {
    #![allow(
        missing_docs,
        unreachable_pub,
        unused_qualifications,
        clippy::all,
        clippy::pedantic,
        clippy::as_conversions,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "generated code"
    )]
    tonic::include_proto!("signer.v1");
}

pub mod transport;

/// The generated messages, clients and servers of package `signer.v1`.
pub mod pb {
    pub use super::generated::*;
}

/// Encoded `FileDescriptorSet` of every `signer.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signer_descriptor.bin"));

/// Maximum size of one gRPC message on any of the signer's services, in bytes.
///
/// Bodies are at most 64 KiB; this leaves room for stamps and framing while keeping a hostile
/// peer from making a server buffer large messages.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Maximum size of `SignedRequest.body`, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Maximum number of stamps on one request.
pub const MAX_STAMPS: usize = 16;
