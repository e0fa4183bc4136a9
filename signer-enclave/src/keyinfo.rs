//! A loaded key's public identity: SEC1 forms, BIP-340 x-only form, and the Ethereum address.

use sha3::{Digest as _, Keccak256};
use signer_proto::pb;

use crate::backend::PublicKey;
use crate::ids::{KeyId, KeyringId};

/// The Ethereum address of a public key, with the EIP-55 mixed-case checksum.
pub fn ethereum_address(public: &PublicKey) -> String {
    let hash = Keccak256::digest(&public.0[1..]);
    eip55(&hash[12..])
}

/// EIP-55: hex digits are upper-cased where the Keccak-256 of the lower-case hex has a nibble ≥ 8.
fn eip55(address: &[u8]) -> String {
    let lower = hex::encode(address);
    let checksum = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (checksum[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// The wire form of a key's public identity.
pub fn key_info(
    key_id: &KeyId,
    keyring_id: &KeyringId,
    public: &PublicKey,
    policy_hash: &[u8; 32],
    label: &str,
) -> pb::KeyInfo {
    pb::KeyInfo {
        key_id: key_id.to_string(),
        keyring_id: keyring_id.to_string(),
        public_key_compressed: public.compressed().to_vec(),
        public_key_uncompressed: public.0.to_vec(),
        public_key_xonly: public.xonly().to_vec(),
        ethereum_address: ethereum_address(public),
        policy_hash: policy_hash.to_vec(),
        label: label.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, K256};
    use crate::secret::WalletSecret;

    const ETHEREUM: &str = include_str!("../../testdata/vectors/ethereum_vectors.json");

    #[test]
    fn eip712_example_address() {
        let doc: serde_json::Value = serde_json::from_str(ETHEREUM).unwrap();
        let example = &doc["eip712_mail_example"];
        let secret: [u8; 32] = hex::decode(
            example["private_key"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
        )
        .unwrap()
        .try_into()
        .unwrap();
        let key = K256::load(&WalletSecret::from_bytes(&secret)).unwrap();
        let address = ethereum_address(&K256::public_key(&key));
        assert_eq!(address.to_lowercase(), example["address"].as_str().unwrap());
        // The checksummed form printed by the EIP-712 reference example (assets/eip-712/Example.js).
        assert_eq!(address, "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826");
    }

    #[test]
    fn eip55_examples() {
        // The examples in the text of EIP-55.
        for expected in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let bytes = hex::decode(expected[2..].to_lowercase()).unwrap();
            assert_eq!(eip55(&bytes), expected);
        }
    }
}
