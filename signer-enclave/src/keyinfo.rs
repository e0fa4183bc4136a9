//! A key's public identity as clients see it: SEC1 forms, BIP-340 x-only form, the Ethereum
//! address, its policy, and the enclave's signed statement binding them.

use signer_proto::pb;

use crate::backend::PublicKey;
use crate::identity::BootIdentity;
use crate::ids::{KeyId, KeyringId};
use crate::vault::PolicyEntry;

/// The Ethereum address of a public key, with the EIP-55 mixed-case checksum.
pub(crate) fn ethereum_address(public: &PublicKey) -> String {
    signer_proto::ethereum_address(&public.0)
}

/// What a statement says of an HD root, or of a key derived under one.
#[derive(Debug, Default)]
pub(crate) struct HdFacts {
    /// The root's BIP-32 fingerprint.
    pub root_fingerprint: [u8; 4],
    /// The derived key's path; empty for the root itself.
    pub path: Vec<u32>,
    /// The derived key's extended public key; empty for the root itself.
    pub xpub: String,
}

/// The wire form of a key's public identity, with the enclave's statement about it bound to
/// `request_binding` (the request's body hash, or the caller's challenge). `hd` is set for an
/// HD root (and `public` is then the key at `hd.path`).
pub(crate) fn key_info(
    identity: &BootIdentity,
    key_id: &KeyId,
    keyring_id: &KeyringId,
    public: &PublicKey,
    policy: &PolicyEntry,
    request_binding: &[u8],
    hd: Option<HdFacts>,
) -> pb::KeyInfo {
    let kind = if hd.is_some() {
        pb::KeyKind::HdRoot
    } else {
        pb::KeyKind::Secp256k1
    };
    let hd = hd.unwrap_or_default();
    let statement = identity.key_statement(&pb::KeyStatement {
        key_id: key_id.to_string(),
        keyring_id: keyring_id.to_string(),
        public_key_compressed: public.compressed().to_vec(),
        policy_hash: policy.hash.to_vec(),
        policy_version: policy.policy.version,
        request_binding: request_binding.to_vec(),
        root_fingerprint: match kind {
            pb::KeyKind::HdRoot => hd.root_fingerprint.to_vec(),
            pb::KeyKind::Secp256k1 => Vec::new(),
        },
        path: hd.path,
        xpub: hd.xpub,
    });
    pb::KeyInfo {
        key_id: key_id.to_string(),
        keyring_id: keyring_id.to_string(),
        public_key_compressed: public.compressed().to_vec(),
        public_key_uncompressed: public.0.to_vec(),
        public_key_xonly: public.xonly().to_vec(),
        ethereum_address: ethereum_address(public),
        policy_hash: policy.hash.to_vec(),
        // Labels are the host's bookkeeping: it fills them in from its store.
        label: String::new(),
        policy: policy.bytes.clone(),
        statement: Some(statement),
        kind: kind.into(),
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
}
