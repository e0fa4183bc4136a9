//! The domain strings and hashes both ends of a stamped exchange compute: the enclave when it
//! seals and signs, the SDK when it checks. Formats in `signer-enclave/SPEC.md`.

use sha2::{Digest as _, Sha256};

/// Domain string signed before an encoded `KeyStatement`.
pub const KEY_STATEMENT_DOMAIN: &[u8] = b"signer.v1 key statement\0";
/// Domain string signed before an encoded `KeyringStatement`.
pub const KEYRING_STATEMENT_DOMAIN: &[u8] = b"signer.v1 keyring statement\0";
/// HPKE `info` for key import.
pub const IMPORT_INFO: &[u8] = b"signer.v1 key import\0";

const POLICY_DOMAIN: &[u8] = b"signer.v1 policy\0";
const ADMINS_DOMAIN: &[u8] = b"signer.v1 keyring admins\0";

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
