//! Known-answer tests of both backends (RFC 6979, tiny-secp256k1, BIP-340, Wycheproof) and a
//! cross-check that they agree byte for byte on random keys and digests.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::*;

const RFC6979: &str = include_str!("../../../testdata/vectors/rfc6979_secp256k1_sha256.json");
const TINY: &str = include_str!("../../../testdata/vectors/tiny-secp256k1_ecdsa.json");
const BIP340: &str = include_str!("../../../testdata/vectors/bip340_test-vectors.csv");
const WYCHEPROOF_P1363: &str =
    include_str!("../../../testdata/vectors/ecdsa_secp256k1_sha256_p1363_test.json");
const WYCHEPROOF_BITCOIN: &str =
    include_str!("../../../testdata/vectors/ecdsa_secp256k1_sha256_bitcoin_test.json");

fn bytes<const N: usize>(hex_str: &str) -> [u8; N] {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn secret(hex_str: &str) -> WalletSecret {
    WalletSecret::from_bytes(&bytes::<32>(hex_str))
}

fn rfc6979_vectors<B: Backend>() -> usize {
    let doc: Value = serde_json::from_str(RFC6979).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        if v["rfc6979"] != Value::Bool(true) {
            continue; // fixed-nonce vectors cannot be reproduced through an RFC 6979 API
        }
        let key = B::load(&secret(v["private_key"].as_str().unwrap())).unwrap();
        let sig = B::sign_ecdsa(&key, &Digest32(bytes(v["digest"].as_str().unwrap())));
        let expected = format!("{}{}", v["r"].as_str().unwrap(), v["s"].as_str().unwrap());
        assert_eq!(hex::encode(sig.rs), expected, "{} {}", B::NAME, v["id"]);
        if let Some(recid) = v["recovery_id"].as_u64() {
            assert_eq!(u64::from(sig.recovery_id), recid, "{} {}", B::NAME, v["id"]);
        }
        assert!(B::verify_ecdsa_vartime(
            &B::public_key(&key),
            &Digest32(bytes(v["digest"].as_str().unwrap())),
            &sig.rs
        ));
        checked += 1;
    }
    checked
}

#[test]
fn rfc6979_k256() {
    assert_eq!(rfc6979_vectors::<K256>(), 27);
}

#[test]
fn rfc6979_libsecp256k1() {
    assert_eq!(rfc6979_vectors::<Libsecp256k1>(), 27);
}

fn tiny_secp256k1_vectors<B: Backend>() {
    let doc: Value = serde_json::from_str(TINY).unwrap();
    let valid = doc["valid"].as_array().unwrap();
    assert_eq!(valid.len(), 2020);
    for v in valid {
        let key = B::load(&secret(v["d"].as_str().unwrap())).unwrap();
        let sig = B::sign_ecdsa(&key, &Digest32(bytes(v["m"].as_str().unwrap())));
        assert_eq!(
            hex::encode(sig.rs),
            v["signature"].as_str().unwrap(),
            "{} d={}",
            B::NAME,
            v["d"]
        );
        assert_eq!(
            u64::from(sig.recovery_id),
            v["recoveryId"].as_u64().unwrap(),
            "{} d={}",
            B::NAME,
            v["d"]
        );
    }
    let invalid = doc["invalid"]["sign"].as_array().unwrap();
    assert_eq!(invalid.len(), 4);
    for v in invalid {
        let d = v["d"].as_str().unwrap();
        if d.len() == 64 {
            assert!(
                matches!(B::load(&secret(d)), Err(crate::Error::InvalidSecret)),
                "{} {}",
                B::NAME,
                v["description"]
            );
        }
    }
}

#[test]
fn tiny_secp256k1_k256() {
    tiny_secp256k1_vectors::<K256>();
}

#[test]
fn tiny_secp256k1_libsecp256k1() {
    tiny_secp256k1_vectors::<Libsecp256k1>();
}

fn bip340_vectors<B: Backend>() {
    let mut signed = 0;
    let mut verified = 0;
    for line in BIP340.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (index, sk, pk, aux, msg, sig, result) = (
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6],
        );
        let msg = hex::decode(msg).unwrap();
        let signature: [u8; 64] = bytes(sig);
        if !sk.is_empty() {
            let key = B::load(&secret(sk)).unwrap();
            assert_eq!(
                hex::encode_upper(B::public_key(&key).xonly()),
                pk,
                "{} #{index}",
                B::NAME
            );
            let made = B::sign_schnorr(&key, &msg, &bytes(aux)).unwrap();
            assert_eq!(made, signature, "{} #{index}", B::NAME);
            signed += 1;
        }
        let expect_valid = result == "TRUE";
        let xonly = hex::decode(pk).unwrap();
        let valid = <[u8; 32]>::try_from(xonly.as_slice())
            .is_ok_and(|x| B::verify_schnorr_vartime(&x, &msg, &signature));
        assert_eq!(valid, expect_valid, "{} verify #{index}", B::NAME);
        verified += 1;
    }
    assert_eq!((signed, verified), (8, 19));
}

#[test]
fn bip340_k256() {
    bip340_vectors::<K256>();
}

#[test]
fn bip340_libsecp256k1() {
    bip340_vectors::<Libsecp256k1>();
}

/// Runs a Wycheproof file; `parse` turns the vector's signature into r ‖ s or refuses it.
fn wycheproof<B: Backend>(doc: &str, parse: impl Fn(&[u8]) -> Option<[u8; 64]>) -> usize {
    let doc: Value = serde_json::from_str(doc).unwrap();
    let mut count = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let public = PublicKey(bytes(group["publicKey"]["uncompressed"].as_str().unwrap()));
        for t in group["tests"].as_array().unwrap() {
            let digest =
                Digest32(Sha256::digest(hex::decode(t["msg"].as_str().unwrap()).unwrap()).into());
            let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
            let valid =
                parse(&sig).is_some_and(|rs| B::verify_ecdsa_vartime(&public, &digest, &rs));
            let expected = t["result"].as_str().unwrap();
            assert!(
                expected != "acceptable",
                "no 'acceptable' cases in these files"
            );
            assert_eq!(
                valid,
                expected == "valid",
                "{} tcId {} ({})",
                B::NAME,
                t["tcId"],
                t["comment"]
            );
            count += 1;
        }
    }
    count
}

/// P1363 r ‖ s; Wycheproof counts high-S as valid, so normalise to low-S before our strict verify.
fn parse_p1363(sig: &[u8]) -> Option<[u8; 64]> {
    let signature = ::k256::ecdsa::Signature::from_slice(sig).ok()?;
    Some(signature.normalize_s().to_bytes().into())
}

/// Strict DER, no normalisation: Bitcoin rules reject high-S.
fn parse_der(sig: &[u8]) -> Option<[u8; 64]> {
    let signature = ::k256::ecdsa::Signature::from_der(sig).ok()?;
    Some(signature.to_bytes().into())
}

#[test]
fn wycheproof_k256() {
    assert_eq!(wycheproof::<K256>(WYCHEPROOF_P1363, parse_p1363), 252);
    assert_eq!(wycheproof::<K256>(WYCHEPROOF_BITCOIN, parse_der), 463);
}

#[test]
fn wycheproof_libsecp256k1() {
    assert_eq!(
        wycheproof::<Libsecp256k1>(WYCHEPROOF_P1363, parse_p1363),
        252
    );
    assert_eq!(
        wycheproof::<Libsecp256k1>(WYCHEPROOF_BITCOIN, parse_der),
        463
    );
}

/// The two backends agree byte for byte on random keys, digests and auxiliary randomness.
#[test]
fn backends_agree_on_random_inputs() {
    for _ in 0..2000 {
        let secret = WalletSecret::random().unwrap();
        let (Ok(a), Ok(b)) = (K256::load(&secret), Libsecp256k1::load(&secret)) else {
            // Both must refuse the same (astronomically unlikely) invalid scalar.
            assert!(K256::load(&secret).is_err() && Libsecp256k1::load(&secret).is_err());
            continue;
        };
        assert_eq!(K256::public_key(&a), Libsecp256k1::public_key(&b));
        let mut digest = [0u8; 32];
        let mut aux = [0u8; 32];
        getrandom::fill(&mut digest).unwrap();
        getrandom::fill(&mut aux).unwrap();
        let digest = Digest32(digest);
        let (ea, eb) = (
            K256::sign_ecdsa(&a, &digest),
            Libsecp256k1::sign_ecdsa(&b, &digest),
        );
        assert_eq!(ea, eb);
        assert!(Libsecp256k1::verify_ecdsa_vartime(
            &K256::public_key(&a),
            &digest,
            &ea.rs
        ));
        let sa = K256::sign_schnorr(&a, &digest.0, &aux).unwrap();
        let sb = Libsecp256k1::sign_schnorr(&b, &digest.0, &aux).unwrap();
        assert_eq!(sa, sb);
        assert!(K256::verify_schnorr_vartime(
            &K256::public_key(&a).xonly(),
            &digest.0,
            &sb
        ));
    }
}

#[test]
fn verify_rejects_high_s_and_wrong_digest() {
    let key = K256::load(&secret(
        "cca9fbcc1b41e5a95d369eaa6ddcff73b61a4efaa279cfc6567e8daa39cbaf50",
    ))
    .unwrap();
    let public = K256::public_key(&key);
    let digest = Digest32([9; 32]);
    let sig = K256::sign_ecdsa(&key, &digest);
    let high_s: [u8; 64] = ::k256::ecdsa::Signature::from_slice(&sig.rs)
        .map(|s| {
            let (r, s) = s.split_scalars();
            ::k256::ecdsa::Signature::from_scalars(r, -*s)
                .unwrap()
                .to_bytes()
                .into()
        })
        .unwrap();
    assert!(!K256::verify_ecdsa_vartime(&public, &digest, &high_s));
    assert!(!Libsecp256k1::verify_ecdsa_vartime(
        &public, &digest, &high_s
    ));
    assert!(!K256::verify_ecdsa_vartime(
        &public,
        &Digest32([8; 32]),
        &sig.rs
    ));
}
