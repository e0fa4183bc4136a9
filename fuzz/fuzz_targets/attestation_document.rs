//! Fuzz target: a Nitro attestation document (COSE_Sign1 over CBOR) through the SDK's verifier
//! and the unverified reader the assessment uses.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signer_attestation::{AttestationPolicy, TrustAnchor};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let policy = AttestationPolicy {
        root: TrustAnchor::aws_nitro_g1(),
        allowed_pcrs: vec![[(0u16, vec![0u8; 48])].into_iter().collect()],
        expected_nonce: None,
        max_age: Duration::from_secs(300),
    };
    // The recorded document's time, so a seed from it gets past the chain's validity.
    let then = UNIX_EPOCH + Duration::from_secs(1_736_182_168);
    let _ = signer_attestation::verify(data, &policy, then);
    let _ = signer_attestation::verify(data, &policy, SystemTime::now());
    let _ = signer_attestation::read_unverified(data);
});
