//! Authenticating and decoding stamped requests: the one place where hostile bytes become domain
//! types. Stamps are verified over the raw body before any of it is decoded; nothing past this
//! module sees a protobuf message from the host.

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;

use crate::Error;
use crate::backend::Digest32;
use crate::ids::{KeyId, KeyringId};
use crate::policy::{KeyPolicy, KeyringAdmins};
use crate::replay::ReplayGuard;
use crate::stamp::{self, Approvals};

/// Largest BIP-340 message accepted (bodies are bounded anyway).
pub const MAX_SCHNORR_MESSAGE: usize = 16 * 1024;
/// Largest label accepted, in bytes.
pub const MAX_LABEL: usize = 128;

/// A request whose stamps verified and whose timestamp is inside the replay window. Its nonce is
/// not yet spent: that happens once the request is also authorised.
#[derive(Debug)]
pub struct Authenticated {
    /// The API keys that stamped the body.
    pub approvals: Approvals,
    /// The body's timestamp.
    pub timestamp_ms: u64,
    /// The body's nonce.
    pub nonce: Vec<u8>,
    /// SHA-256 of the body, echoed in signed statements.
    pub body_hash: [u8; 32],
}

impl Authenticated {
    /// Spends the nonce: the request is authorised and will be carried out.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a replay; [`Error::ReplayCacheFull`].
    pub fn spend_nonce(&self, guard: &ReplayGuard, now_ms: u64) -> Result<(), Error> {
        guard.admit(self.timestamp_ms, &self.nonce, now_ms)
    }
}

/// Verifies the envelope and every stamp, then decodes the body and checks its replay fields.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed envelope or body; [`Error::Unauthenticated`] for a
/// failed stamp or a timestamp outside the window.
pub fn authenticate(
    request: &pb::SignedRequest,
    guard: &ReplayGuard,
    now_ms: u64,
) -> Result<(Authenticated, Operation), Error> {
    if let Some(problem) = signer_proto::envelope_problem(request) {
        return Err(Error::InvalidArgument(problem));
    }
    let approvals = stamp::verify_stamps(&request.body, &request.stamps)?;
    let body = pb::RequestBody::decode(request.body.as_slice())
        .map_err(|_| Error::InvalidArgument("malformed body"))?;
    if body.timestamp_ms == 0 {
        return Err(Error::InvalidArgument("timestamp_ms is required"));
    }
    if !(16..=32).contains(&body.nonce.len()) {
        return Err(Error::InvalidArgument("nonce must be 16 to 32 bytes"));
    }
    guard.check_time(body.timestamp_ms, now_ms)?;
    let operation = body
        .operation
        .ok_or(Error::InvalidArgument("body names no operation"))?;
    Ok((
        Authenticated {
            approvals,
            timestamp_ms: body.timestamp_ms,
            nonce: body.nonce,
            body_hash: Sha256::digest(&request.body).into(),
        },
        operation,
    ))
}

const WRONG_OPERATION: Error = Error::InvalidArgument("body is for another operation");

/// A validated sign request.
#[derive(Debug)]
pub struct SignOp {
    /// The key to sign with.
    pub key_id: KeyId,
    /// What to sign.
    pub kind: SignKind,
}

impl SignOp {
    /// The scheme, as policies name it.
    pub fn scheme(&self) -> pb::SignatureScheme {
        match self.kind {
            SignKind::Ecdsa(_) => pb::SignatureScheme::EcdsaSecp256k1,
            SignKind::Schnorr(_) => pb::SignatureScheme::Bip340Schnorr,
        }
    }
}

/// What to sign, by scheme.
#[derive(Debug)]
pub enum SignKind {
    /// ECDSA over a 32-byte digest.
    Ecdsa(Digest32),
    /// BIP-340 over a message.
    Schnorr(Vec<u8>),
}

/// Validates a `SignBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn sign_op(operation: Operation) -> Result<SignOp, Error> {
    let Operation::Sign(body) = operation else {
        return Err(WRONG_OPERATION);
    };
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

/// A validated create-key (or the common part of an import) request.
#[derive(Debug)]
pub struct CreateOp {
    /// The keyring, or `None` for the only open keyring.
    pub keyring_id: Option<KeyringId>,
    /// The caller's label.
    pub label: String,
    /// The requested policy; `None` for the default built from the stamps.
    pub policy: Option<KeyPolicy>,
}

fn create_op(
    keyring_id: &str,
    label: String,
    policy: Option<&pb::Policy>,
) -> Result<CreateOp, Error> {
    if label.len() > MAX_LABEL {
        return Err(Error::InvalidArgument("label longer than 128 bytes"));
    }
    let keyring_id = match keyring_id {
        "" => None,
        text => Some(KeyringId::parse(text)?),
    };
    let policy = policy.map(KeyPolicy::parse).transpose()?;
    Ok(CreateOp {
        keyring_id,
        label,
        policy,
    })
}

/// Validates a `CreateKeyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn create_key_op(operation: Operation) -> Result<CreateOp, Error> {
    let Operation::CreateKey(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    create_op(&body.keyring_id, body.label, body.policy.as_ref())
}

/// A validated import request.
#[derive(Debug)]
pub struct ImportOp {
    /// Keyring, label and policy.
    pub create: CreateOp,
    /// The HPKE key the client encrypted to.
    pub hpke_public_key: Vec<u8>,
    /// HPKE encapsulated key.
    pub encapsulated_key: Vec<u8>,
    /// HPKE ciphertext of the secret.
    pub ciphertext: Vec<u8>,
    /// The keyring id exactly as sent (the HPKE associated data).
    pub aad: Vec<u8>,
}

/// Validates an `ImportKeyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn import_key_op(operation: Operation) -> Result<ImportOp, Error> {
    let Operation::ImportKey(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    if body.encapsulated_key.len() != 32 || body.ciphertext.len() != 48 {
        return Err(Error::InvalidArgument(
            "import ciphertext has the wrong size",
        ));
    }
    Ok(ImportOp {
        aad: body.keyring_id.clone().into_bytes(),
        create: create_op(&body.keyring_id, body.label, body.policy.as_ref())?,
        hpke_public_key: body.hpke_public_key,
        encapsulated_key: body.encapsulated_key,
        ciphertext: body.ciphertext,
    })
}

/// Validates a `CreateKeyringBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn create_keyring_op(operation: Operation) -> Result<KeyringAdmins, Error> {
    let Operation::CreateKeyring(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    KeyringAdmins::parse(
        body.admins
            .as_ref()
            .ok_or(Error::InvalidArgument("keyring admins are required"))?,
    )
}

/// A validated policy change.
#[derive(Debug)]
pub struct UpdatePolicyOp {
    /// The key.
    pub key_id: KeyId,
    /// Hash of the policy the change replaces.
    pub current_policy_hash: [u8; 32],
    /// The new policy (version still to be set).
    pub policy: KeyPolicy,
}

/// Validates an `UpdatePolicyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub fn update_policy_op(operation: Operation) -> Result<UpdatePolicyOp, Error> {
    let Operation::UpdatePolicy(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    Ok(UpdatePolicyOp {
        key_id: KeyId::parse(&body.key_id)?,
        current_policy_hash: body
            .current_policy_hash
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("current_policy_hash must be 32 bytes"))?,
        policy: KeyPolicy::parse(
            body.policy
                .as_ref()
                .ok_or(Error::InvalidArgument("policy is required"))?,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::Signer as _;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn guard() -> ReplayGuard {
        ReplayGuard::new(120_000, 100)
    }

    fn stamped(body: Vec<u8>) -> pb::SignedRequest {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        pb::SignedRequest {
            stamps: vec![pb::Stamp {
                scheme: pb::StampScheme::Ed25519.into(),
                public_key: key.verifying_key().to_bytes().to_vec(),
                signature: key.sign(&body).to_bytes().to_vec(),
            }],
            body,
        }
    }

    fn body(operation: Operation) -> pb::RequestBody {
        pb::RequestBody {
            timestamp_ms: NOW,
            nonce: vec![0; 16],
            operation: Some(operation),
        }
    }

    fn good_sign() -> pb::SignBody {
        pb::SignBody {
            key_id: format!("k-{}", "ab".repeat(16)),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![1; 32],
        }
    }

    fn decode_sign(body: &pb::RequestBody) -> Result<SignOp, Error> {
        let (_, operation) = authenticate(&stamped(body.encode_to_vec()), &guard(), NOW)?;
        sign_op(operation)
    }

    #[test]
    fn accepts_a_good_body() {
        let op = decode_sign(&body(Operation::Sign(good_sign()))).unwrap();
        assert!(matches!(op.kind, SignKind::Ecdsa(_)));
        assert_eq!(op.scheme(), pb::SignatureScheme::EcdsaSecp256k1);
    }

    #[test]
    fn rejects_each_bad_field() {
        let cases: Vec<(pb::RequestBody, &str)> = vec![
            (
                body(Operation::Sign(pb::SignBody {
                    payload: vec![1; 31],
                    ..good_sign()
                })),
                "32-byte",
            ),
            (
                body(Operation::Sign(pb::SignBody {
                    payload: vec![1; 33],
                    ..good_sign()
                })),
                "32-byte",
            ),
            (
                body(Operation::Sign(pb::SignBody {
                    scheme: 0,
                    ..good_sign()
                })),
                "scheme",
            ),
            (
                body(Operation::Sign(pb::SignBody {
                    scheme: 99,
                    ..good_sign()
                })),
                "scheme",
            ),
            (
                body(Operation::Sign(pb::SignBody {
                    key_id: "nope".into(),
                    ..good_sign()
                })),
                "KeyId",
            ),
            (
                pb::RequestBody {
                    timestamp_ms: 0,
                    ..body(Operation::Sign(good_sign()))
                },
                "timestamp",
            ),
            (
                pb::RequestBody {
                    nonce: vec![0; 15],
                    ..body(Operation::Sign(good_sign()))
                },
                "nonce",
            ),
            (
                pb::RequestBody {
                    nonce: vec![0; 33],
                    ..body(Operation::Sign(good_sign()))
                },
                "nonce",
            ),
            (
                pb::RequestBody {
                    operation: None,
                    ..body(Operation::Sign(good_sign()))
                },
                "no operation",
            ),
            (
                body(Operation::CreateKey(pb::CreateKeyBody::default())),
                "another operation",
            ),
        ];
        for (body, expect) in cases {
            match decode_sign(&body) {
                Err(Error::InvalidArgument(msg)) => {
                    assert!(msg.contains(expect), "{msg} vs {expect}")
                }
                other => panic!("expected InvalidArgument({expect}), got {other:?}"),
            }
        }
    }

    #[test]
    fn stale_and_future_bodies_are_unauthenticated() {
        for timestamp_ms in [NOW - 120_001, NOW + 120_001] {
            let stale = pb::RequestBody {
                timestamp_ms,
                ..body(Operation::Sign(good_sign()))
            };
            assert!(matches!(
                decode_sign(&stale),
                Err(Error::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn stamps_are_checked_before_the_body_is_decoded() {
        // Garbage under a forged stamp is refused as unauthenticated, not as malformed: the
        // body's bytes were never parsed.
        let mut garbage = stamped(vec![0xff; 40]);
        garbage.stamps[0].signature[3] ^= 1;
        assert!(matches!(
            authenticate(&garbage, &guard(), NOW),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            authenticate(&stamped(vec![0xff; 40]), &guard(), NOW),
            Err(Error::InvalidArgument("malformed body"))
        ));
        let unstamped = pb::SignedRequest {
            body: body(Operation::Sign(good_sign())).encode_to_vec(),
            stamps: vec![],
        };
        assert!(matches!(
            authenticate(&unstamped, &guard(), NOW),
            Err(Error::Unauthenticated("no stamps"))
        ));
    }

    #[test]
    fn rejects_bad_envelopes() {
        let empty = pb::SignedRequest::default();
        assert!(matches!(
            authenticate(&empty, &guard(), NOW),
            Err(Error::InvalidArgument("empty body"))
        ));
        let huge = stamped(vec![0; signer_proto::MAX_BODY_BYTES + 1]);
        assert!(matches!(
            authenticate(&huge, &guard(), NOW),
            Err(Error::InvalidArgument("body too large"))
        ));
        let mut many = stamped(body(Operation::Sign(good_sign())).encode_to_vec());
        many.stamps = vec![many.stamps[0].clone(); signer_proto::MAX_STAMPS + 1];
        assert!(matches!(
            authenticate(&many, &guard(), NOW),
            Err(Error::InvalidArgument("too many stamps"))
        ));
        let long_label = body(Operation::CreateKey(pb::CreateKeyBody {
            label: "x".repeat(129),
            ..Default::default()
        }));
        let (_, operation) =
            authenticate(&stamped(long_label.encode_to_vec()), &guard(), NOW).unwrap();
        assert!(create_key_op(operation).is_err());
    }
}
