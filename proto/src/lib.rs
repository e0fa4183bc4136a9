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

pub mod canonical;
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

/// Most payloads one `SignBatch` signs.
pub const MAX_BATCH: usize = 256;

/// The gRPC metadata key of a call's request id: a client may send one, the host makes one
/// otherwise, answers with it, and passes it to the enclave, so one call's log lines in both
/// processes can be found together.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Whether `id` is an acceptable request id: 1 to 64 of `A-Z a-z 0-9 . _ -` (anything else
/// is replaced, never logged).
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Logging for the signer's processes: to stderr, filtered by `RUST_LOG` (default `info`), as
/// JSON lines when `SIGNER_LOG_FORMAT=json` (each line carrying its spans' fields, the request
/// id among them), as text otherwise.
#[cfg(feature = "logging")]
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SIGNER_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().with_span_list(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// The `UNAUTHENTICATED` message for a body whose timestamp the enclave's time rules refuse (too
/// old, dated too far ahead, or from before the enclave's boot). Unlike every other
/// authentication failure it is worth retrying: stamp a new body with a current timestamp.
pub const STALE_MESSAGE: &str = "request expired; stamp it again";

impl core::fmt::Debug for pb::AwsCredentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field("session_token", &"[REDACTED]")
            .field("expiration_unix", &self.expiration_unix)
            .finish()
    }
}

/// The first problem with a stamped envelope's shape, if any: an empty or oversized body, or
/// too many stamps. Host and enclave both apply it; the message is static and safe to return.
pub fn envelope_problem(request: &pb::SignedRequest) -> Option<&'static str> {
    if request.body.is_empty() {
        Some("empty body")
    } else if request.body.len() > MAX_BODY_BYTES {
        Some("body too large")
    } else if request.stamps.len() > MAX_STAMPS {
        Some("too many stamps")
    } else {
        None
    }
}

/// The Ethereum address of an uncompressed SEC1 public key (`0x04 ‖ x ‖ y`), with the EIP-55
/// mixed-case checksum: Keccak-256 of `x ‖ y`, last 20 bytes; a hex digit is upper-cased where
/// the Keccak-256 of the lower-case hex has a nibble ≥ 8.
pub fn ethereum_address(uncompressed: &[u8; 65]) -> String {
    use sha3::{Digest as _, Keccak256};
    let hash = Keccak256::digest(&uncompressed[1..]);
    eip55(&hash[12..])
}

fn eip55(address: &[u8]) -> String {
    use sha3::{Digest as _, Keccak256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let lower: Vec<u8> = address
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]])
        .collect();
    let checksum = Keccak256::digest(&lower);
    let mut out = String::with_capacity(2 + lower.len());
    out.push_str("0x");
    for (i, c) in lower.iter().enumerate() {
        let nibble = if i % 2 == 0 {
            checksum[i / 2] >> 4
        } else {
            checksum[i / 2] & 0x0f
        };
        out.push(char::from(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            *c
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_short_and_plain() {
        for good in ["a", "req-42", "0f1e2d.3c_4b", &"x".repeat(64)] {
            assert!(valid_request_id(good), "{good}");
        }
        for bad in ["", "a b", "id\n", "é", "a/b", &"x".repeat(65)] {
            assert!(!valid_request_id(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn eip55_examples() {
        // The examples in the text of EIP-55.
        for expected in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let bytes: Vec<u8> = (2..42)
                .step_by(2)
                .map(|i| u8::from_str_radix(&expected[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(eip55(&bytes), expected);
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let credentials = pb::AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: "IQoJb3JpZ2lu".into(),
            expiration_unix: 7,
        };
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("AKIDEXAMPLE")
                && !printed.contains("wJalrXUtnFEMI")
                && !printed.contains("IQoJb3JpZ2lu"),
            "{printed}"
        );
    }

    #[test]
    fn envelope_limits() {
        let ok = pb::SignedRequest {
            body: vec![1],
            stamps: vec![],
        };
        assert_eq!(envelope_problem(&ok), None);
        assert_eq!(
            envelope_problem(&pb::SignedRequest::default()),
            Some("empty body")
        );
        let big = pb::SignedRequest {
            body: vec![0; MAX_BODY_BYTES + 1],
            stamps: vec![],
        };
        assert_eq!(envelope_problem(&big), Some("body too large"));
        let stamped = pb::SignedRequest {
            body: vec![1],
            stamps: vec![pb::Stamp::default(); MAX_STAMPS + 1],
        };
        assert_eq!(envelope_problem(&stamped), Some("too many stamps"));
    }
}
