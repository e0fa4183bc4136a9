//! Stamp verification against an independent implementation (Python `cryptography`, see
//! `testdata/vectors/PROVENANCE.md`) and against our own negative cases.

use super::*;

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
        let stamps = [stamp(
            scheme,
            hex::decode(&v.public_key).unwrap(),
            hex::decode(&v.signature).unwrap(),
        )];
        let result = verify_stamps(&body, &stamps);
        assert_eq!(result.is_ok(), v.valid, "vector {}", v.id);
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

fn ed25519_stamp(key: &ed25519_dalek::SigningKey, body: &[u8]) -> pb::Stamp {
    use ed25519_dalek::Signer as _;
    stamp(
        pb::StampScheme::Ed25519,
        key.verifying_key().to_bytes().to_vec(),
        key.sign(body).to_bytes().to_vec(),
    )
}

#[test]
fn one_bad_stamp_refuses_the_request_and_duplicates_count_once() {
    let body = b"body bytes";
    let (a, b) = (ed25519_key(1), ed25519_key(2));
    let good = verify_stamps(body, &[ed25519_stamp(&a, body), ed25519_stamp(&a, body)]).unwrap();
    assert_eq!(good.keys().count(), 1);
    let two = verify_stamps(body, &[ed25519_stamp(&a, body), ed25519_stamp(&b, body)]).unwrap();
    assert_eq!(two.keys().count(), 2);

    let mut forged = ed25519_stamp(&b, body);
    forged.signature[0] ^= 1;
    assert!(matches!(
        verify_stamps(body, &[ed25519_stamp(&a, body), forged]),
        Err(Error::Unauthenticated(_))
    ));
    let other_body = ed25519_stamp(&b, b"another body");
    assert!(verify_stamps(body, &[other_body]).is_err());
    let unknown_scheme = pb::Stamp {
        scheme: 7,
        ..ed25519_stamp(&a, body)
    };
    assert!(verify_stamps(body, &[unknown_scheme]).is_err());
    assert!(matches!(
        verify_stamps(body, &[]),
        Err(Error::Unauthenticated("no stamps"))
    ));
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
