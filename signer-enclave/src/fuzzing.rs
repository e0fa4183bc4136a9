//! Entry points for the fuzz targets (`fuzz/`): every decoder that sees bytes from the host or a
//! client, fed arbitrary input. Built only with the `fuzzing` feature, which production builds
//! never enable. Each function must return, whatever the input: a panic, a hang or an
//! allocation the input size does not justify is a finding.

use std::sync::OnceLock;

use prost::Message as _;
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;

use crate::identity::{Boot, BootIdentity};
use crate::intake;
use crate::provider::recipient::Recipient;
use crate::replay::TimeRules;

/// Rules that let every timestamp through, so the fuzzer reaches the operation decoders.
const ANY_TIME: TimeRules = TimeRules {
    window_ms: u64::MAX,
    future_skew_ms: u64::MAX,
    boot_skew_ms: u64::MAX,
    boot_ms: 0,
};

fn operation(operation: &Operation) {
    let _ = intake::stamped::sign_op(operation.clone());
    let _ = intake::stamped::sign_batch_op(operation.clone());
    let _ = intake::stamped::create_key_op(operation.clone());
    let _ = intake::stamped::create_keyring_op(operation.clone());
    let _ = intake::stamped::update_policy_op(operation.clone());
    let _ = intake::import::import_key_op(operation.clone());
    let _ = intake::ethereum::sign_ethereum_op(operation.clone());
    let _ = intake::psbt::sign_psbt_op(operation.clone());
}

/// A `SignedRequest` from a client: the envelope, the canonical body, the time rules and every
/// operation's decoder (stamps are verified elsewhere, over these bytes).
pub fn signed_request(data: &[u8]) {
    let Ok(request) = pb::SignedRequest::decode(data) else {
        return;
    };
    if let Ok((_, op)) = intake::stamped::open(&request, &ANY_TIME, 1) {
        operation(&op);
    }
}

/// A `RequestBody` alone (the fuzzer reaches the operation decoders faster without the
/// envelope's canonical-encoding check).
pub fn request_body(data: &[u8]) {
    if let Ok(body) = pb::RequestBody::decode(data)
        && let Some(op) = body.operation
    {
        operation(&op);
    }
}

/// A sealed key record from the host's store.
pub fn sealed_key(data: &[u8]) {
    if let Ok(key) = pb::SealedKey::decode(data) {
        let _ = intake::host::record(key);
    }
}

/// A keyring from the host's store.
pub fn keyring(data: &[u8]) {
    if let Ok(request) = pb::LoadKeyringRequest::decode(data) {
        let _ = intake::host::keyring(request);
    }
}

/// An unsigned Ethereum transaction (legacy RLP or typed).
pub fn ethereum_transaction(data: &[u8]) {
    let _ = intake::ethereum::transaction(data);
}

/// EIP-712 typed data (JSON).
pub fn typed_data(data: &[u8]) {
    if let Ok(json) = std::str::from_utf8(data) {
        let _ = intake::ethereum::typed_data(json);
    }
}

/// An import from a client: the first byte picks the material, the rest is read as the opened
/// HPKE plaintext of that material (a client chooses it freely), then split into an
/// encapsulated key and a ciphertext and opened under a fixed enclave identity (a host or
/// client chooses those freely too; only a sealed ciphertext opens).
pub fn import(data: &[u8]) {
    static IDENTITY: OnceLock<BootIdentity> = OnceLock::new();
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let material = match selector % 3 {
        0 => pb::ImportMaterial::Secret,
        1 => pb::ImportMaterial::Seed,
        _ => pb::ImportMaterial::Mnemonic,
    };
    let _ = intake::import::read(material, rest);
    let identity = IDENTITY.get_or_init(|| {
        BootIdentity::generate(Boot {
            id: [0; 16],
            time_ms: 0,
            deployment_id: "fuzz".into(),
            config_hash: [0; 32],
        })
        .expect("the system RNG works qed")
    });
    if let Some((encapsulated_key, ciphertext)) = rest.split_at_checked(32) {
        let _ = identity.open_import(encapsulated_key, ciphertext, &[selector]);
    }
}

/// A PSBT.
pub fn psbt(data: &[u8]) {
    let _ = intake::psbt::decode(data);
}

/// KMS's `CiphertextForRecipient` (CMS EnvelopedData, BER), opened with a fixed RSA key (the
/// recorded fixture's, so the recorded samples are valid seeds; a recipient opens once, so each
/// input gets its own recipient around that key).
pub fn ciphertext_for_recipient(data: &[u8], recipient_pkcs8_der: &[u8]) {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        use rsa::pkcs8::DecodePrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs8_der(recipient_pkcs8_der)
            .expect("the fuzz target passes a PKCS#8 RSA key qed")
    });
    let recipient = Recipient::from_key(key.clone()).expect("an RSA key makes a recipient qed");
    let _ = recipient.open(data);
}
