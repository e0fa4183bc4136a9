//! Decoding and validating stamped requests: the one place where hostile bytes become domain
//! types. Nothing past this module sees a protobuf message from the host.

use prost::Message as _;
use signer_proto::pb;

use crate::Error;
use crate::backend::Digest32;
use crate::ids::{KeyId, KeyringId};

/// Largest BIP-340 message accepted (bodies are bounded anyway).
pub const MAX_SCHNORR_MESSAGE: usize = 16 * 1024;
/// Largest label accepted, in bytes.
pub const MAX_LABEL: usize = 128;

/// A validated sign request.
#[derive(Debug)]
pub struct SignOp {
    /// The key to sign with.
    pub key_id: KeyId,
    /// What to sign.
    pub kind: SignKind,
}

/// What to sign, by scheme.
#[derive(Debug)]
pub enum SignKind {
    /// ECDSA over a 32-byte digest.
    Ecdsa(Digest32),
    /// BIP-340 over a message.
    Schnorr(Vec<u8>),
}

/// A validated create-key request.
#[derive(Debug)]
pub struct CreateOp {
    /// The keyring, or `None` for the only open keyring.
    pub keyring_id: Option<KeyringId>,
    /// The caller's label.
    pub label: String,
}

/// Checks the envelope's shape (see [`signer_proto::envelope_problem`]).
///
/// Stamp signatures are not verified yet (see the README's status section); the wire format is
/// final, so verification lands without changing it.
fn check_envelope(request: &pb::SignedRequest) -> Result<(), Error> {
    signer_proto::envelope_problem(request)
        .map_or(Ok(()), |problem| Err(Error::InvalidArgument(problem)))
}

fn check_replay_fields(timestamp_ms: u64, nonce: &[u8]) -> Result<(), Error> {
    if timestamp_ms == 0 {
        return Err(Error::InvalidArgument("timestamp_ms is required"));
    }
    if !(16..=32).contains(&nonce.len()) {
        return Err(Error::InvalidArgument("nonce must be 16 to 32 bytes"));
    }
    Ok(())
}

/// Decodes and validates a stamped `SignBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn decode_sign(request: &pb::SignedRequest) -> Result<SignOp, Error> {
    check_envelope(request)?;
    let body = pb::SignBody::decode(request.body.as_slice())
        .map_err(|_| Error::InvalidArgument("malformed body"))?;
    check_replay_fields(body.timestamp_ms, &body.nonce)?;
    let key_id = KeyId::parse(&body.key_id)?;
    let kind = match pb::SignatureScheme::try_from(body.scheme) {
        Ok(pb::SignatureScheme::EcdsaSecp256k1) => {
            let digest: [u8; 32] =
                body.payload.as_slice().try_into().map_err(|_| {
                    Error::InvalidArgument("ECDSA payload must be a 32-byte digest")
                })?;
            SignKind::Ecdsa(Digest32(digest))
        }
        Ok(pb::SignatureScheme::Bip340Schnorr) => {
            if body.payload.len() > MAX_SCHNORR_MESSAGE {
                return Err(Error::InvalidArgument("BIP-340 message too long"));
            }
            SignKind::Schnorr(body.payload)
        }
        Ok(pb::SignatureScheme::Unspecified) | Err(_) => {
            return Err(Error::InvalidArgument("unknown signature scheme"));
        }
    };
    Ok(SignOp { key_id, kind })
}

/// Decodes and validates a stamped `CreateKeyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn decode_create(request: &pb::SignedRequest) -> Result<CreateOp, Error> {
    check_envelope(request)?;
    let body = pb::CreateKeyBody::decode(request.body.as_slice())
        .map_err(|_| Error::InvalidArgument("malformed body"))?;
    check_replay_fields(body.timestamp_ms, &body.nonce)?;
    if body.label.len() > MAX_LABEL {
        return Err(Error::InvalidArgument("label longer than 128 bytes"));
    }
    let keyring_id = match body.keyring_id.as_str() {
        "" => None,
        text => Some(KeyringId::parse(text)?),
    };
    Ok(CreateOp {
        keyring_id,
        label: body.label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &impl prost::Message) -> pb::SignedRequest {
        pb::SignedRequest {
            body: body.encode_to_vec(),
            stamps: vec![],
        }
    }

    fn good_body() -> pb::SignBody {
        pb::SignBody {
            key_id: format!("k-{}", "ab".repeat(16)),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![1; 32],
            timestamp_ms: 1,
            nonce: vec![0; 16],
        }
    }

    #[test]
    fn accepts_a_good_body() {
        assert!(matches!(
            decode_sign(&signed(&good_body())).unwrap().kind,
            SignKind::Ecdsa(_)
        ));
    }

    #[test]
    fn rejects_each_bad_field() {
        let cases: Vec<(pb::SignBody, &str)> = vec![
            (
                pb::SignBody {
                    payload: vec![1; 31],
                    ..good_body()
                },
                "32-byte",
            ),
            (
                pb::SignBody {
                    payload: vec![1; 33],
                    ..good_body()
                },
                "32-byte",
            ),
            (
                pb::SignBody {
                    scheme: 0,
                    ..good_body()
                },
                "scheme",
            ),
            (
                pb::SignBody {
                    scheme: 99,
                    ..good_body()
                },
                "scheme",
            ),
            (
                pb::SignBody {
                    key_id: "nope".into(),
                    ..good_body()
                },
                "KeyId",
            ),
            (
                pb::SignBody {
                    timestamp_ms: 0,
                    ..good_body()
                },
                "timestamp",
            ),
            (
                pb::SignBody {
                    nonce: vec![0; 15],
                    ..good_body()
                },
                "nonce",
            ),
            (
                pb::SignBody {
                    nonce: vec![0; 33],
                    ..good_body()
                },
                "nonce",
            ),
        ];
        for (body, expect) in cases {
            match decode_sign(&signed(&body)) {
                Err(Error::InvalidArgument(msg)) => {
                    assert!(msg.contains(expect), "{msg} vs {expect}")
                }
                other => panic!("expected InvalidArgument({expect}), got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_envelopes() {
        let empty = pb::SignedRequest {
            body: vec![],
            stamps: vec![],
        };
        assert!(matches!(
            decode_sign(&empty),
            Err(Error::InvalidArgument("empty body"))
        ));
        let garbage = pb::SignedRequest {
            body: vec![0xff; 40],
            stamps: vec![],
        };
        assert!(matches!(
            decode_sign(&garbage),
            Err(Error::InvalidArgument("malformed body"))
        ));
        let huge = pb::SignedRequest {
            body: vec![0; signer_proto::MAX_BODY_BYTES + 1],
            stamps: vec![],
        };
        assert!(matches!(
            decode_sign(&huge),
            Err(Error::InvalidArgument("body too large"))
        ));
        let mut many = signed(&good_body());
        many.stamps = vec![pb::Stamp::default(); signer_proto::MAX_STAMPS + 1];
        assert!(matches!(
            decode_sign(&many),
            Err(Error::InvalidArgument("too many stamps"))
        ));
        let long_label = pb::CreateKeyBody {
            label: "x".repeat(129),
            timestamp_ms: 1,
            nonce: vec![0; 16],
            ..Default::default()
        };
        assert!(decode_create(&signed(&long_label)).is_err());
    }
}
