//! The stamped intake: envelope limits, canonical bodies, time rules, field validation.

use super::*;
use crate::testing::{DEPLOYMENT, api, ready, stamp};

const NOW: u64 = 1_800_000_000_000;

fn rules() -> TimeRules {
    TimeRules {
        window_ms: 120_000,
        future_skew_ms: 10_000,
        boot_skew_ms: 5_000,
        boot_ms: NOW - 60_000,
    }
}

fn stamped(body: Vec<u8>) -> pb::SignedRequest {
    pb::SignedRequest {
        stamps: vec![stamp(5, &body)],
        body,
    }
}

fn body(operation: Operation) -> pb::RequestBody {
    pb::RequestBody {
        timestamp_ms: NOW,
        nonce: vec![7; 16],
        operation: Some(operation),
    }
}

fn good_sign() -> pb::SignBody {
    pb::SignBody {
        key_id: format!("k-{}", "ab".repeat(16)),
        scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
        payload: vec![1; 32],
        path: Vec::new(),
    }
}

fn decode_sign(body: &pb::RequestBody) -> Result<SignOp, Error> {
    let request = stamped(body.encode_to_vec());
    let (_, operation) = open(&request, &rules(), NOW)?;
    sign_op(operation)
}

fn quorum(seed: u8) -> Quorum {
    Quorum::parse(&[api(seed)], 1, "test").unwrap()
}

#[test]
fn accepts_a_good_body_and_verifies_the_members_stamp() {
    let op = decode_sign(&body(Operation::Sign(good_sign()))).unwrap();
    assert!(matches!(op.kind, SignKind::Ecdsa(_)));
    assert_eq!(op.scheme(), pb::SignatureScheme::EcdsaSecp256k1);
    let request = stamped(body(Operation::Sign(good_sign())).encode_to_vec());
    let (received, _) = open(&request, &rules(), NOW).unwrap();
    let batcher = StampBatcher::default();
    let auth = ready(received.authenticate(DEPLOYMENT, &[&quorum(5)], &batcher)).unwrap();
    assert_eq!(auth.approvals().keys().count(), 1);
    assert_eq!(auth.nonce(), &[7; 16]);
    // For another deployment the same stamp does not verify.
    let (received, _) = open(&request, &rules(), NOW).unwrap();
    assert!(matches!(
        ready(received.authenticate("production", &[&quorum(5)], &batcher)),
        Err(Error::Unauthenticated(_))
    ));
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
fn the_time_rules_apply_before_any_stamp_is_verified() {
    for timestamp_ms in [NOW - 120_001, NOW + 10_001, NOW - 65_001] {
        let body = pb::RequestBody {
            timestamp_ms,
            ..body(Operation::Sign(good_sign()))
        };
        // A garbage stamp: refused as stale all the same, so no verification was needed.
        let mut request = stamped(body.encode_to_vec());
        request.stamps[0].signature = vec![0; 64];
        assert!(matches!(
            open(&request, &rules(), NOW),
            Err(Error::Stale(_))
        ));
    }
}

#[test]
fn only_canonical_bodies_are_accepted() {
    let canonical = body(Operation::Sign(good_sign())).encode_to_vec();
    // An unknown field appended (field 99, varint 1): what an approver's tool might hide or
    // show differently.
    let mut unknown = canonical.clone();
    unknown.extend_from_slice(&[0xf8, 0x06, 0x01]);
    // A field given twice (the timestamp again): decoders keep the last, a tool may show the
    // first.
    let mut repeated_field = canonical.clone();
    repeated_field.extend_from_slice(&[0x08, 0x01]);
    // Fields out of order: the nonce (field 2) moved after the operation.
    let nonce_field = [&[0x12, 16][..], &[7; 16]].concat();
    let start = canonical
        .windows(nonce_field.len())
        .position(|w| w == nonce_field.as_slice())
        .unwrap();
    let mut reordered = canonical.clone();
    reordered.drain(start..start + nonce_field.len());
    reordered.extend_from_slice(&nonce_field);
    for bytes in [unknown, repeated_field, reordered] {
        assert!(
            pb::RequestBody::decode(bytes.as_slice()).is_ok(),
            "prost reads it"
        );
        assert!(matches!(
            open(&stamped(bytes), &rules(), NOW),
            Err(Error::InvalidArgument("body is not canonically encoded"))
        ));
    }
    assert!(open(&stamped(canonical), &rules(), NOW).is_ok());
}

#[test]
fn rejects_bad_envelopes() {
    let empty = pb::SignedRequest::default();
    assert!(matches!(
        open(&empty, &rules(), NOW),
        Err(Error::InvalidArgument("empty body"))
    ));
    let huge = stamped(vec![0; signer_proto::MAX_BODY_BYTES + 1]);
    assert!(matches!(
        open(&huge, &rules(), NOW),
        Err(Error::InvalidArgument("body too large"))
    ));
    let mut many = stamped(body(Operation::Sign(good_sign())).encode_to_vec());
    many.stamps = vec![many.stamps[0].clone(); signer_proto::MAX_STAMPS + 1];
    assert!(matches!(
        open(&many, &rules(), NOW),
        Err(Error::InvalidArgument("too many stamps"))
    ));
    let unstamped = pb::SignedRequest {
        body: body(Operation::Sign(good_sign())).encode_to_vec(),
        stamps: vec![],
    };
    assert!(matches!(
        open(&unstamped, &rules(), NOW),
        Err(Error::Unauthenticated("no stamps"))
    ));
    assert!(matches!(
        open(&stamped(vec![0xff; 40]), &rules(), NOW),
        Err(Error::InvalidArgument("malformed body"))
    ));
}

#[test]
fn new_keys_need_a_keyring_and_a_policy() {
    let policy = pb::Policy {
        approvers: vec![api(1)],
        threshold: 1,
        schemes: vec![1],
        ..Default::default()
    };
    let keyring = format!("kr-{}", "cd".repeat(16));
    let create = |keyring_id: &str, label: String, policy: Option<pb::Policy>| {
        let request = stamped(
            body(Operation::CreateKey(pb::CreateKeyBody {
                keyring_id: keyring_id.to_owned(),
                label,
                policy,
                kind: 0,
            }))
            .encode_to_vec(),
        );
        let (_, operation) = open(&request, &rules(), NOW).unwrap();
        create_key_op(operation)
    };
    let op = create(&keyring, "ok".into(), Some(policy.clone())).unwrap();
    assert_eq!(op.policy.version, 1, "the enclave sets the version");
    for (keyring_id, label, policy, expect) in [
        (
            "",
            String::new(),
            Some(policy.clone()),
            "keyring_id is required",
        ),
        (keyring.as_str(), String::new(), None, "policy is required"),
        (keyring.as_str(), "x".repeat(129), Some(policy), "label"),
    ] {
        match create(keyring_id, label, policy) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains(expect), "{msg}"),
            other => panic!("expected {expect}, got {other:?}"),
        }
    }
}
