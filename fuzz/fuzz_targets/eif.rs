//! Fuzz target: an enclave image file measured by `signer-cli pcrs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = signer_attestation::eif::measure(data);
});
