//! Stamp verification against an independent implementation (Python `cryptography`, see
//! `testdata/vectors/PROVENANCE.md`) and against our own negative cases.

use super::*;
use crate::testing::ready;

const PYTHON: &str = include_str!("../../../testdata/vectors/stamps_python_cryptography.json");

#[derive(serde::Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    id: u32,
    scheme: String,
    public_key: String,
    body: String,
    signature: String,
    valid: bool,
}

fn stamp(scheme: pb::StampScheme, public_key: Vec<u8>, signature: Vec<u8>) -> pb::Stamp {
    pb::Stamp {
        scheme: scheme.into(),
        public_key,
        signature,
    }
}

/// The vectors sign raw bodies: they check the signature primitives (P-256 in either SEC1
/// form, strict Ed25519) against OpenSSL, independent of the stamp message's framing.
#[test]
fn python_cryptography_vectors() {
    let file: File = serde_json::from_str(PYTHON).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for v in file.vectors {
        let scheme = match v.scheme.as_str() {
            "P256_SHA256" => pb::StampScheme::P256Sha256,
            "ED25519" => pb::StampScheme::Ed25519,
            other => panic!("unknown scheme {other}"),
        };
        let body = hex::decode(&v.body).unwrap();
        let key = hex::decode(&v.public_key).unwrap();
        let signature = hex::decode(&v.signature).unwrap();
        let accepted = ApiKeyId::parse(scheme.into(), &key)
            .is_ok_and(|(_, verifier)| verifier.verify(&body, &signature));
        assert_eq!(accepted, v.valid, "vector {}", v.id);
        if v.valid {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(
        valid >= 16 && invalid >= 15,
        "{valid} valid, {invalid} invalid"
    );
}

fn ed25519_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn message(body: &[u8]) -> Vec<u8> {
    signer_proto::canonical::stamp_message("unit-test", body)
}

fn ed25519_stamp(key: &ed25519_dalek::SigningKey, body: &[u8]) -> pb::Stamp {
    use ed25519_dalek::Signer as _;
    stamp(
        pb::StampScheme::Ed25519,
        key.verifying_key().to_bytes().to_vec(),
        key.sign(&message(body)).to_bytes().to_vec(),
    )
}

fn id(key: &ed25519_dalek::SigningKey) -> ApiKeyId {
    ApiKeyId::Ed25519(key.verifying_key().to_bytes())
}

/// `id`'s key, parsed as a policy parses its members.
fn verifier(id: &ApiKeyId) -> Verifier {
    let key = id.to_proto();
    ApiKeyId::parse(key.scheme, &key.public_key).unwrap().1
}

fn verify(body: &[u8], stamps: &[pb::Stamp], members: &[ApiKeyId]) -> Result<Approvals, Error> {
    let parsed: Vec<(ApiKeyId, Verifier)> = members.iter().map(|m| (*m, verifier(m))).collect();
    relevant(
        || message(body),
        stamps,
        |k| parsed.iter().find(|(id, _)| id == k).map(|(_, v)| v),
    )
    .and_then(|stamps| ready(stamps.verify(&StampBatcher::default())))
}

#[test]
fn one_bad_relevant_stamp_refuses_the_request_and_duplicates_count_once() {
    let body = b"body bytes";
    let (a, b) = (ed25519_key(1), ed25519_key(2));
    let members = [id(&a), id(&b)];
    let good = verify(
        body,
        &[ed25519_stamp(&a, body), ed25519_stamp(&a, body)],
        &members,
    )
    .unwrap();
    assert_eq!(good.keys().count(), 1);
    let two = verify(
        body,
        &[ed25519_stamp(&a, body), ed25519_stamp(&b, body)],
        &members,
    )
    .unwrap();
    assert_eq!(two.keys().count(), 2);

    let mut forged = ed25519_stamp(&b, body);
    forged.signature[0] ^= 1;
    assert!(matches!(
        verify(body, &[ed25519_stamp(&a, body), forged], &members),
        Err(Error::Unauthenticated(_))
    ));
    let other_body = ed25519_stamp(&b, b"another body");
    assert!(verify(body, &[other_body], &members).is_err());
    let unknown_scheme = pb::Stamp {
        scheme: 7,
        ..ed25519_stamp(&a, body)
    };
    assert!(verify(body, &[unknown_scheme], &members).is_err());
    assert!(matches!(
        verify(body, &[], &members),
        Err(Error::Unauthenticated("no stamps"))
    ));
}

#[test]
fn strangers_stamps_are_ignored_without_being_verified() {
    let body = b"body bytes";
    let (member, stranger) = (ed25519_key(1), ed25519_key(2));
    let mut garbage = ed25519_stamp(&stranger, body);
    garbage.signature = vec![0; 64];
    let member_key = verifier(&id(&member));
    let mut verified = false;
    let approvals = relevant(
        || {
            verified = true;
            message(body)
        },
        &[garbage.clone(), garbage.clone()],
        |k| (*k == id(&member)).then_some(&member_key),
    )
    .and_then(|stamps| ready(stamps.verify(&StampBatcher::default())))
    .unwrap();
    assert_eq!(approvals.keys().count(), 0);
    assert!(!verified, "no stamp was relevant: nothing was verified");
    // Beside a member's good stamp, the stranger's garbage changes nothing.
    let approvals = verify(
        body,
        &[garbage, ed25519_stamp(&member, body)],
        &[id(&member)],
    )
    .unwrap();
    assert!(approvals.contains(&id(&member)));
}

#[test]
fn stamps_sign_the_deployment_and_the_body() {
    use ed25519_dalek::Signer as _;
    let body = b"body bytes";
    let key = ed25519_key(1);
    let members = [id(&key)];
    // Over the raw body (no domain), or for another deployment: refused.
    for signed in [
        body.to_vec(),
        signer_proto::canonical::stamp_message("staging", body),
    ] {
        let stamp = stamp(
            pb::StampScheme::Ed25519,
            key.verifying_key().to_bytes().to_vec(),
            key.sign(&signed).to_bytes().to_vec(),
        );
        assert!(matches!(
            verify(body, &[stamp], &members),
            Err(Error::Unauthenticated(_))
        ));
    }
    assert!(verify(body, &[ed25519_stamp(&key, body)], &members).is_ok());
}

#[test]
fn stamp_keys_must_be_canonical() {
    let uncompressed = hex::decode(
        "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    )
    .unwrap();
    assert!(matches!(
        ApiKeyId::from_stamp(pb::StampScheme::P256Sha256.into(), &uncompressed),
        Err(Error::InvalidArgument(_))
    ));
    let compressed =
        hex::decode("036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap();
    let from_stamp = ApiKeyId::from_stamp(pb::StampScheme::P256Sha256.into(), &compressed).unwrap();
    let (from_policy, _) =
        ApiKeyId::parse(pb::StampScheme::P256Sha256.into(), &uncompressed).unwrap();
    assert_eq!(from_stamp, from_policy, "a policy may list either form");
    let mut bad_prefix = compressed.clone();
    bad_prefix[0] = 0x04;
    assert!(ApiKeyId::from_stamp(pb::StampScheme::P256Sha256.into(), &bad_prefix).is_err());
}

#[test]
fn p256_keys_have_one_identity_in_either_encoding() {
    let uncompressed = hex::decode(
        "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    )
    .unwrap();
    let compressed =
        hex::decode("036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap();
    let (a, _) = ApiKeyId::parse(pb::StampScheme::P256Sha256.into(), &uncompressed).unwrap();
    let (b, _) = ApiKeyId::parse(pb::StampScheme::P256Sha256.into(), &compressed).unwrap();
    assert_eq!(a, b);
    assert!(ApiKeyId::parse(pb::StampScheme::P256Sha256.into(), &compressed[..32]).is_err());
    assert!(ApiKeyId::parse(pb::StampScheme::Ed25519.into(), &compressed).is_err());
}
