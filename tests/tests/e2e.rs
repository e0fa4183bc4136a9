//! End-to-end tests over real processes: SDK → host (TCP) → enclave (Unix socket).
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step fails the test, helpers included"
)]

mod e2e {
    mod api;
    mod assess;
    mod audit;
    mod bad_input;
    mod batch;
    mod bitcoin;
    mod client_limits;
    mod disk_full;
    mod ethereum;
    mod faults;
    mod fleet;
    mod fleet_store;
    mod hd;
    mod hostile;
    mod hostile_authority;
    mod hostile_replay;
    mod interop;
    mod kms;
    mod logs;
    mod metrics;
    mod restart;
    mod secrets;
    mod signing;
    mod slow_clients;
    mod socket_cut;
    mod stamp_batches;
    mod tls;
}
