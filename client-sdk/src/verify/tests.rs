//! The SDK's verifier against Wycheproof and RFC 6979 vectors, and its refusals.

use k256::ecdsa::SigningKey;
use k256::sha2::Digest as _;
use serde_json::Value;

use super::*;

const RFC6979: &str = include_str!("../../../testdata/vectors/rfc6979_secp256k1_sha256.json");
const WYCHEPROOF_P1363: &str =
    include_str!("../../../testdata/vectors/ecdsa_secp256k1_sha256_p1363_test.json");
const WYCHEPROOF_BITCOIN: &str =
    include_str!("../../../testdata/vectors/ecdsa_secp256k1_sha256_bitcoin_test.json");

fn info_for(secret_hex: &str) -> pb::KeyInfo {
    let key = SigningKey::from_slice(&hex::decode(secret_hex).unwrap()).unwrap();
    let point = key.verifying_key().as_affine();
    let uncompressed: [u8; 65] = point.to_sec1_point(false).as_bytes().try_into().unwrap();
    pb::KeyInfo {
        key_id: "k-00000000000000000000000000000001".into(),
        keyring_id: "kr-00000000000000000000000000000001".into(),
        public_key_compressed: point.to_sec1_point(true).as_bytes().to_vec(),
        public_key_uncompressed: uncompressed.to_vec(),
        public_key_xonly: uncompressed[1..33].to_vec(),
        ethereum_address: ethereum_address(&uncompressed),
        policy_hash: signer_proto::canonical::policy_hash(&[]).to_vec(),
        label: String::new(),
        ..Default::default()
    }
}

fn reply(key_id: &str, rs: Vec<u8>, recovery_id: u32) -> pb::SignResponse {
    pb::SignResponse {
        key_id: key_id.into(),
        scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
        signature: rs,
        recovery_id,
    }
}

#[test]
fn accepts_rfc6979_vectors_with_recovery_ids_and_refuses_tampering() {
    let doc: Value = serde_json::from_str(RFC6979).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let Some(recid) = v["recovery_id"].as_u64() else {
            continue;
        };
        let info = KeyInfo::try_from(info_for(v["private_key"].as_str().unwrap())).unwrap();
        let digest: [u8; 32] = hex::decode(v["digest"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        // One transcribed s is 31 bytes without zero padding.
        let rs = hex::decode(format!(
            "{:0>64}{:0>64}",
            v["r"].as_str().unwrap(),
            v["s"].as_str().unwrap()
        ))
        .unwrap();
        let recid = u32::try_from(recid).unwrap();
        let ok = verify_ecdsa(&info, &digest, &reply(&info.key_id, rs.clone(), recid)).unwrap();
        assert_eq!(ok.to_bytes65()[..64], rs[..]);
        // Wrong recovery id, flipped bit, other key id: all refused.
        assert!(verify_ecdsa(&info, &digest, &reply(&info.key_id, rs.clone(), recid ^ 1)).is_err());
        let mut flipped = rs.clone();
        flipped[40] ^= 1;
        assert!(verify_ecdsa(&info, &digest, &reply(&info.key_id, flipped, recid)).is_err());
        assert!(
            verify_ecdsa(
                &info,
                &digest,
                &reply("k-00000000000000000000000000000002", rs, recid)
            )
            .is_err()
        );
        checked += 1;
    }
    assert!(checked >= 18, "{checked}");
}

#[test]
fn refuses_inconsistent_key_info() {
    let good = info_for("cca9fbcc1b41e5a95d369eaa6ddcff73b61a4efaa279cfc6567e8daa39cbaf50");
    assert!(KeyInfo::try_from(good.clone()).is_ok());
    let other = info_for("0000000000000000000000000000000000000000000000000000000000000001");
    for bad in [
        pb::KeyInfo {
            ethereum_address: other.ethereum_address.clone(),
            ..good.clone()
        },
        pb::KeyInfo {
            ethereum_address: good.ethereum_address.to_lowercase(),
            ..good.clone()
        },
        pb::KeyInfo {
            public_key_xonly: other.public_key_xonly.clone(),
            ..good.clone()
        },
        pb::KeyInfo {
            public_key_uncompressed: other.public_key_uncompressed.clone(),
            ..good.clone()
        },
        pb::KeyInfo {
            public_key_compressed: vec![2; 33],
            ..good.clone()
        },
        pb::KeyInfo {
            policy_hash: vec![0; 31],
            ..good.clone()
        },
        pb::KeyInfo {
            policy: vec![0x08, 0x01],
            ..good.clone()
        },
    ] {
        assert!(matches!(
            KeyInfo::try_from(bad),
            Err(Error::Verification(_))
        ));
    }
}

fn wycheproof(doc: &str, normalize: bool) -> usize {
    let doc: Value = serde_json::from_str(doc).unwrap();
    let mut count = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key: [u8; 33] = VerifyingKey::from_sec1_bytes(
            &hex::decode(group["publicKey"]["uncompressed"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
        .as_affine()
        .to_sec1_point(true)
        .as_bytes()
        .try_into()
        .unwrap();
        for t in group["tests"].as_array().unwrap() {
            let digest: [u8; 32] = sha2_256(&hex::decode(t["msg"].as_str().unwrap()).unwrap());
            let sig = hex::decode(t["sig"].as_str().unwrap()).unwrap();
            let rs: Option<Vec<u8>> = if normalize {
                Signature::from_slice(&sig)
                    .ok()
                    .map(|s| s.normalize_s().to_bytes().to_vec())
            } else {
                Signature::from_der(&sig)
                    .ok()
                    .map(|s| s.to_bytes().to_vec())
            };
            // Wycheproof gives no recovery id: valid means some recovery id recovers the key.
            let valid =
                rs.is_some_and(|rs| (0..4).any(|v| check_ecdsa(&key, &digest, &rs, v).is_ok()));
            assert_eq!(
                valid,
                t["result"] == "valid",
                "tcId {} ({})",
                t["tcId"],
                t["comment"]
            );
            count += 1;
        }
    }
    count
}

fn sha2_256(data: &[u8]) -> [u8; 32] {
    // The SDK does not need SHA-256 itself; k256 re-exports it for tests.
    sha2::Sha256::digest(data).into()
}

#[test]
fn wycheproof_p1363_normalised() {
    assert_eq!(wycheproof(WYCHEPROOF_P1363, true), 252);
}

#[test]
fn wycheproof_bitcoin_rules_reject_high_s() {
    assert_eq!(wycheproof(WYCHEPROOF_BITCOIN, false), 463);
}
