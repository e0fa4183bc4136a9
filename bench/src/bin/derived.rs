//! The derived-key cache: memory per cached key at the default budget (1M keys), and what a
//! signature's key costs cold (derived from the root: five BIP-32 steps, three hardened, then
//! loaded into the backend) against cached (a lookup), measured in the same run.
//!
//! Memory is this process's resident set before and after filling the cache, divided by the
//! keys held; the keys are real backend keys (loaded from distinct secrets), not one key shared.
//!
//! Run: `cargo run --release -p bench --bin derived -- --keys 1000000`.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use signer_enclave::backend::{Backend, K256};
use signer_enclave::derived::DerivedKeys;
use signer_enclave::hd::{HARDENED, HdPath, HdSeed};
use signer_enclave::ids::KeyId;
use signer_enclave::secret::WalletSecret;

/// Derived-key cache benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Keys to cache (the budget is set to exactly this).
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Timed samples of each path (cold and cached).
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
}

fn path(index: u32) -> Vec<u32> {
    vec![
        84 | HARDENED,
        HARDENED,
        HARDENED,
        index / 1_000_000,
        index % 1_000_000,
    ]
}

fn micros(hist: &Histogram<u64>, q: f64) -> f64 {
    f64::from(u32::try_from(hist.value_at_quantile(q)).unwrap_or(u32::MAX)) / 1_000.0
}

fn main() {
    let cli = Cli::parse();
    let root_id = KeyId::random().expect("rng");
    let root = HdSeed::random()
        .and_then(|seed| seed.root())
        .expect("a root");

    // Cold: derive the key at a fresh path from the root and load it into the backend.
    let mut cold = Histogram::<u64>::new(3).expect("3 significant figures qed");
    for i in 0..cli.samples {
        let indices = path(u32::try_from(i).unwrap_or(0));
        let start = Instant::now();
        let hd_path = HdPath::from_indices(&indices).expect("a path");
        let secret = root.derive(&hd_path).expect("derives");
        let key = K256::load(&secret).expect("loads");
        std::hint::black_box(&key);
        cold.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("in range");
    }

    // Fill the cache with distinct keys (secrets derived cheaply by counter: the memory is the
    // keys', however they were made).
    let cache = DerivedKeys::<K256>::new(cli.keys.saturating_mul(2));
    let before = bench::rss_bytes(std::process::id());
    let fill = Instant::now();
    for i in 0..cli.keys {
        let mut bytes = [0x11u8; 32];
        bytes[24..].copy_from_slice(&u64::try_from(i).unwrap_or(0).to_be_bytes());
        let key = K256::load(&WalletSecret::from_bytes(&bytes)).expect("loads");
        cache.insert(
            &root_id,
            &path(u32::try_from(i).unwrap_or(0)),
            Arc::new(key),
        );
    }
    let filled = fill.elapsed();
    let after = bench::rss_bytes(std::process::id());
    assert_eq!(cache.len(), cli.keys, "the budget holds every key");

    // Cached: a lookup of a key in the full cache.
    let mut cached = Histogram::<u64>::new(3).expect("3 significant figures qed");
    let step = (cli.keys / cli.samples.max(1)).max(1);
    for i in (0..cli.keys).step_by(step).take(cli.samples) {
        let indices = path(u32::try_from(i).unwrap_or(0));
        let start = Instant::now();
        let key = cache.get(&root_id, &indices).expect("cached");
        std::hint::black_box(&key);
        cached
            .record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("in range");
    }

    let grown = f64::from(u32::try_from(after.saturating_sub(before) / 1024).unwrap_or(u32::MAX));
    let keys = f64::from(u32::try_from(cli.keys).unwrap_or(u32::MAX));
    let per_key = grown * 1024.0 / keys;
    println!(
        "k256, {} keys cached, {} timed samples each",
        cli.keys, cli.samples
    );
    println!();
    println!("| key for a signature | p50 µs | p99 µs | p50 ratio to cold |");
    println!("|---|---:|---:|---:|");
    println!(
        "| cold: derive m/84'/0'/0'/0/i from the root, load | {:.1} | {:.1} | 1.00 |",
        micros(&cold, 0.5),
        micros(&cold, 0.99)
    );
    println!(
        "| cached: lookup in a cache of {} | {:.2} | {:.2} | {:.4} |",
        cli.keys,
        micros(&cached, 0.5),
        micros(&cached, 0.99),
        micros(&cached, 0.5) / micros(&cold, 0.5)
    );
    println!();
    println!(
        "memory: {:.0} MiB resident for {} cached keys = {per_key:.0} B a key (filled in {:.1} s)",
        grown / 1024.0,
        cli.keys,
        filled.as_secs_f64()
    );
}
