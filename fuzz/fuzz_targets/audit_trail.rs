//! Fuzz target: an audit trail as a host serves it (`ReadAuditTrailResponse`, host-controlled
//! bytes) through the SDK's verifier — entries, boots' attestation documents, hash chains and
//! the per-collection signatures.
#![no_main]

use std::time::Duration;

use prost::Message as _;
use signer_attestation::{AttestationPolicy, TrustAnchor};
use signer_client::audit::verify_trail;
use signer_client::pb;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(trail) = pb::ReadAuditTrailResponse::decode(data) else {
        return;
    };
    let policy = AttestationPolicy {
        root: TrustAnchor::aws_nitro_g1(),
        allowed_pcrs: vec![[(0u16, vec![0u8; 48])].into_iter().collect()],
        expected_nonce: None,
        max_age: Duration::from_secs(300),
    };
    let report = verify_trail(&trail.entries, &trail.boots, &policy);
    // Nothing here is signed by an attested boot, so no non-empty trail is intact.
    assert!(trail.entries.is_empty() || !report.intact());
});
