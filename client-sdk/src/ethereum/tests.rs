//! The SDK's Ethereum verifier on the EIP-155 and EIP-712 examples, and what it refuses.

use k256::ecdsa::SigningKey;
use k256::elliptic_curve::sec1::ToSec1Point as _;
use serde_json::Value;

use super::*;
use crate::verify::ethereum_address;

const VECTORS: &str = include_str!("../../../testdata/vectors/ethereum_vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

fn key(secret: &str) -> KeyInfo {
    let key = SigningKey::from_slice(&unhex(secret)).unwrap();
    let point = key.verifying_key().as_affine();
    let uncompressed: [u8; 65] = point.to_sec1_point(false).as_bytes().try_into().unwrap();
    KeyInfo::try_from(pb::KeyInfo {
        key_id: "k-00000000000000000000000000000001".into(),
        keyring_id: "kr-00000000000000000000000000000001".into(),
        public_key_compressed: point.to_sec1_point(true).as_bytes().to_vec(),
        public_key_uncompressed: uncompressed.to_vec(),
        public_key_xonly: uncompressed[1..33].to_vec(),
        ethereum_address: ethereum_address(&uncompressed),
        policy_hash: signer_proto::canonical::policy_hash(&[]).to_vec(),
        ..Default::default()
    })
    .unwrap()
}

fn eip155() -> (KeyInfo, Vec<u8>, pb::SignEthereumResponse) {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let v = &doc["eip155_example"];
    let signature = [
        unhex(v["r_hex"].as_str().unwrap()),
        unhex(v["s_hex"].as_str().unwrap()),
        vec![27], // v = 37 = 35 + 2·1 + 0: y-parity 0
    ]
    .concat();
    let reply = pb::SignEthereumResponse {
        key_id: "k-00000000000000000000000000000001".into(),
        signature,
        y_parity: 0,
        digest: unhex(v["signing_hash"].as_str().unwrap()),
        signed_transaction: unhex(v["signed_tx"].as_str().unwrap()),
        transaction_hash: unhex(v["tx_hash"].as_str().unwrap()),
    };
    (
        key(v["private_key"].as_str().unwrap()),
        unhex(v["signing_data"].as_str().unwrap()),
        reply,
    )
}

#[test]
fn eip155_example_verifies() {
    let (key, unsigned, reply) = eip155();
    let signed = verify_transaction(&key, &unsigned, &reply).unwrap();
    assert_eq!(signed.encoded, reply.signed_transaction);
    assert_eq!(signed.hash.to_vec(), reply.transaction_hash);
    assert!(!signed.signature.y_parity);
}

#[test]
fn tampered_transaction_replies_are_refused() {
    let (key, unsigned, reply) = eip155();
    let refused =
        |reply: &pb::SignEthereumResponse| match verify_transaction(&key, &unsigned, reply) {
            Err(Error::Verification(why)) => why,
            other => panic!("expected a verification error, got {other:?}"),
        };
    let mut other_key = reply.clone();
    other_key.key_id = "k-00000000000000000000000000000002".into();
    assert_eq!(refused(&other_key), "reply is for another key");
    let mut parity = reply.clone();
    parity.y_parity = 1;
    assert_eq!(refused(&parity), "v disagrees with the y-parity");
    parity.signature[64] = 28;
    assert_eq!(
        refused(&parity),
        "ECDSA signature does not verify for this key"
    );
    // Same signature, another transaction: the nonce 9 becomes 8 in the signed bytes.
    let mut swapped = reply.clone();
    assert_eq!(swapped.signed_transaction[2], 0x09);
    swapped.signed_transaction[2] = 0x08;
    swapped.transaction_hash = keccak256(&swapped.signed_transaction).to_vec();
    assert_eq!(
        refused(&swapped),
        "signed transaction is not the one asked for"
    );
    let mut hash = reply.clone();
    hash.transaction_hash[0] ^= 1;
    assert_eq!(refused(&hash), "transaction hash disagrees");
    let mut trailing = reply.clone();
    trailing.signed_transaction.push(0);
    assert_eq!(refused(&trailing), "signed transaction does not decode");
    // A digest the SDK did not compute.
    assert_eq!(
        verify_transaction(&key, &unsigned[..unsigned.len() - 1], &reply)
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        "verification failed: reply signs another digest"
    );
}

#[test]
fn eip712_mail_example_verifies() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let v = &doc["eip712_mail_example"];
    let digest = typed_data_digest(&v["typed_data"].to_string()).unwrap();
    assert_eq!(digest.to_vec(), unhex(v["digest"].as_str().unwrap()));
    let reply = pb::SignEthereumResponse {
        key_id: "k-00000000000000000000000000000001".into(),
        signature: unhex(v["signature"].as_str().unwrap()),
        y_parity: 1,
        digest: digest.to_vec(),
        ..Default::default()
    };
    let cow = key(v["private_key"].as_str().unwrap());
    assert_eq!(
        cow.ethereum_address.to_lowercase(),
        v["address"].as_str().unwrap()
    );
    let signature = verify_signature(&cow, &digest, &reply).unwrap();
    assert_eq!(signature.to_alloy().as_bytes().to_vec(), reply.signature);
    let stranger = key(&"11".repeat(32));
    assert!(verify_signature(&stranger, &digest, &reply).is_err());
    assert!(typed_data_digest("{}").is_err());
}

#[test]
fn personal_message_digests_match_eip191() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    for case in doc["eip191_personal_sign"]["hash_only_cases"]
        .as_array()
        .unwrap()
    {
        let message = unhex(case["message_hex"].as_str().unwrap());
        assert_eq!(
            personal_message_digest(&message).to_vec(),
            unhex(case["message_hash"].as_str().unwrap())
        );
    }
}
