//! Memory of the enclave's nonce cache: resident bytes per live nonce once `--nonces` of them
//! (default 1,000,000) are remembered, their expiries spread over 70 s as under load at the
//! default window and future skew. Run with `cargo run --release -p bench --bin nonces`.

use clap::Parser;
use signer_enclave::replay::{ReplayGuard, TimeRules};
use signer_enclave::stamp::ApiKeyId;

/// Measures the nonce cache's memory.
#[derive(Debug, Parser)]
struct Cli {
    /// Live nonces to hold.
    #[arg(long, default_value_t = 1_000_000)]
    nonces: u64,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn main() {
    let cli = Cli::parse();
    const NOW: u64 = 1_800_000_000_000;
    let rules = TimeRules {
        window_ms: 60_000,
        future_skew_ms: 10_000,
        boot_skew_ms: 5_000,
        boot_ms: NOW - 60_000,
    };
    let capacity = usize::try_from(cli.nonces).expect("fits");
    let guard = ReplayGuard::new(rules, capacity, capacity);
    let owners: Vec<ApiKeyId> = (0..16u8).map(|i| ApiKeyId::Ed25519([i; 32])).collect();
    let before = rss_bytes();
    for i in 0..cli.nonces {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&i.to_be_bytes());
        let owner = &owners[usize::try_from(i % 16).expect("small")];
        // Timestamps from 60 s in the past to 10 s ahead: expiries spread over 70 s.
        let timestamp = NOW - 60_000 + i % 70_000;
        guard
            .reserve(timestamp, &nonce, owner, NOW)
            .expect("within capacity")
            .commit();
    }
    let after = rss_bytes();
    println!(
        "{} live nonces: {} bytes of resident memory per nonce",
        guard.len(),
        (after - before) / cli.nonces
    );
}
