//! Fuzz target: `signer_enclave::fuzzing::import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signer_enclave::fuzzing::import(data));
