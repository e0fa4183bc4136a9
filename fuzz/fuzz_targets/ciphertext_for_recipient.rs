//! Fuzz target: KMS's `CiphertextForRecipient`, opened with the recorded fixture's RSA key.
#![no_main]

const KEY: &[u8] = include_bytes!(
    "../../testdata/fixtures/kms-ciphertext-for-recipient/enclaver_recipient_rsa2048_pkcs8.der"
);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    signer_enclave::fuzzing::ciphertext_for_recipient(data, KEY)
});
