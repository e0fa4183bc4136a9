//! The domain strings, messages and hashes both ends of a stamped exchange compute: the client
//! when it stamps and seals, the enclave when it verifies, seals and signs, the SDK when it
//! checks. Formats in `signer-enclave/SPEC.md`.

use sha2::{Digest as _, Sha256};

/// Domain string signed before an encoded `KeyStatement`.
pub const KEY_STATEMENT_DOMAIN: &[u8] = b"signer.v1 key statement\0";
/// Domain string signed before an encoded `KeyringStatement`.
pub const KEYRING_STATEMENT_DOMAIN: &[u8] = b"signer.v1 keyring statement\0";
/// Domain of audit entries: signed and hashed as this string followed by the encoded entry.
pub const AUDIT_ENTRY_DOMAIN: &[u8] = b"signer.v1 audit entry\0";

/// The hash that chains audit entries: SHA-256 of [`AUDIT_ENTRY_DOMAIN`] and the encoded entry.
pub fn audit_entry_hash(entry: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(AUDIT_ENTRY_DOMAIN);
    hasher.update(entry);
    hasher.finalize().into()
}
/// HPKE `info` for key import.
pub const IMPORT_INFO: &[u8] = b"signer.v1 key import\0";
/// Domain string that starts every stamp message.
pub const STAMP_DOMAIN: &[u8] = b"signer.v1 stamp\0";

const POLICY_DOMAIN: &[u8] = b"signer.v1 policy\0";
const ADMINS_DOMAIN: &[u8] = b"signer.v1 keyring admins\0";
const IMPORT_AAD_DOMAIN: &[u8] = b"signer.v1 key import aad\0";
const CONFIG_DOMAIN: &[u8] = b"signer.v1 enclave config\0";

/// Longest deployment id, in bytes.
pub const MAX_DEPLOYMENT_ID: usize = 64;

/// Whether `id` is a well-formed deployment id: 1 to 64 of `a-z 0-9 . _ -`.
pub fn valid_deployment_id(id: &str) -> bool {
    (1..=MAX_DEPLOYMENT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// What a stamp signs: the stamp domain, the deployment id (length-prefixed) and the exact body
/// bytes. `deployment_id` must satisfy [`valid_deployment_id`] (at most 64 bytes).
pub fn stamp_message(deployment_id: &str, body: &[u8]) -> Vec<u8> {
    let id = deployment_id.as_bytes();
    let mut message = Vec::with_capacity(STAMP_DOMAIN.len() + 1 + id.len() + body.len());
    message.extend_from_slice(STAMP_DOMAIN);
    message.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    message.extend_from_slice(id);
    message.extend_from_slice(body);
    message
}

/// SHA-256 over the policy domain string and the encoded `Policy`, as bound into sealed records.
pub fn policy_hash(policy: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(POLICY_DOMAIN)
        .chain_update(policy)
        .finalize()
        .into()
}

/// SHA-256 over the admin-set domain string and the encoded `KeyringAdmins`.
pub fn admins_hash(admins: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(ADMINS_DOMAIN)
        .chain_update(admins)
        .finalize()
        .into()
}

/// SHA-256 over the config domain string and the encoded `EnclaveConfig`.
pub fn config_hash(config: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(CONFIG_DOMAIN)
        .chain_update(config)
        .finalize()
        .into()
}

/// The HPKE associated data of a key import: everything that decides who controls the imported
/// key. `keyring_id` as named in the body (required, at most 255 bytes), `policy` the policy's
/// canonical encoding at version 1 (what the enclave will seal), `nonce` the body's nonce (so the
/// ciphertext is good for exactly one request), `material` the `ImportMaterial` value (what the
/// plaintext is, so it is read only as that).
pub fn import_aad(keyring_id: &str, policy: &[u8], nonce: &[u8], material: u8) -> Vec<u8> {
    let mut aad = Vec::with_capacity(IMPORT_AAD_DOMAIN.len() + 3 + keyring_id.len() + 32 + 32);
    aad.extend_from_slice(IMPORT_AAD_DOMAIN);
    aad.push(u8::try_from(keyring_id.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(keyring_id.as_bytes());
    aad.extend_from_slice(&policy_hash(policy));
    aad.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(nonce);
    aad.push(material);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids() {
        for good in ["local", "prod-eu-1", "a", "x.y_z-0", &"a".repeat(64)] {
            assert!(valid_deployment_id(good), "{good}");
        }
        for bad in ["", "Prod", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_deployment_id(bad), "{bad}");
        }
    }

    #[test]
    fn stamp_messages_separate_deployments_and_bodies() {
        let message = stamp_message("prod", b"\x08\x01");
        assert_eq!(message, b"signer.v1 stamp\0\x04prod\x08\x01");
        // The length prefix keeps the deployment id from running into the body.
        assert_ne!(stamp_message("prod", b"x"), stamp_message("prodx", b""));
        assert_ne!(stamp_message("staging", b"x"), stamp_message("prod", b"x"));
    }

    #[test]
    fn import_aad_binds_every_part() {
        let base = import_aad("kr-1", b"policy", &[1; 16], 0);
        assert_ne!(base, import_aad("kr-2", b"policy", &[1; 16], 0));
        assert_ne!(base, import_aad("kr-1", b"other", &[1; 16], 0));
        assert_ne!(base, import_aad("kr-1", b"policy", &[2; 16], 0));
        assert_ne!(base, import_aad("kr-1", b"policy", &[1; 16], 1));
        assert!(base.starts_with(b"signer.v1 key import aad\0\x04kr-1"));
    }
}
