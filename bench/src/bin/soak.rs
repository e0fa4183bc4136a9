//! Soak: a bounded run at a steady signing rate with the host's and the enclave's resident
//! memory and open file descriptors sampled throughout. Growth is measured from the first
//! sample after the warm-up (a tenth of the run) to the last, and judged against the bounds
//! given (defaults: 16 MiB of RSS and 8 descriptors per process); the exit status says whether
//! they held. Every signature is verified against the key's public key.
//!
//! `--mixed-per-second N` adds a worker of other operations, N a second in turn: create a key,
//! change the policy of a key it created (the enclave re-seals, the host stores), sign a batch
//! of 16, fetch a key's statement afresh. Their successes and failures are counted apart.
//!
//! Run: `bench/run-soak` (release binaries; defaults: 10 minutes at 500 signatures/s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::rss_bytes;
use clap::Parser;
use signer_client::{KeyInfo, pb};

/// Soak benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Length of the run, in seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Signatures per second asked for, spread over the workers.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Concurrent workers (each on its own client).
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Keys signed with, in turn.
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Sampling interval, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    sample_ms: u64,
    /// Largest resident-memory growth allowed per process after the warm-up, in MiB.
    #[arg(long, default_value_t = 16)]
    max_rss_growth_mib: u64,
    /// Largest growth in open file descriptors allowed per process after the warm-up.
    #[arg(long, default_value_t = 8)]
    max_fd_growth: u64,
    /// Other operations a second (create, change a policy, batch of 16, fetch a statement, in
    /// turn) from one more worker; 0 signs only.
    #[arg(long, default_value_t = 0)]
    mixed_per_second: u32,
}

#[derive(Default)]
struct Counts {
    signed: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    mixed: AtomicU64,
    mixed_failed: AtomicU64,
}

struct Sample {
    at: Duration,
    host: (u64, u64),
    enclave: (u64, u64),
    signed: u64,
    failed: u64,
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_or(0, |d| u64::try_from(d.count()).unwrap_or(u64::MAX))
}

fn mib(bytes: u64) -> f64 {
    f64::from(u32::try_from(bytes / 1024).unwrap_or(u32::MAX)) / 1024.0
}

async fn worker(
    client: signer_client::Client,
    keys: Arc<Vec<KeyInfo>>,
    period: Duration,
    until: Instant,
    counts: Arc<Counts>,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while Instant::now() < until {
        ticks.tick().await;
        n += 1;
        let key = &keys[n % keys.len()];
        let mut digest = [0u8; 32];
        getrandom::fill(&mut digest).expect("OS RNG qed");
        match client.sign_digest(&key.key_id, digest).await {
            Ok(signature) if tests::ecdsa_verifies(key, &digest, &signature.r, &signature.s) => {
                counts.signed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The other operations, in turn, until `until`.
async fn mixed(
    client: signer_client::Client,
    keyring: String,
    admin: pb::ApiKey,
    keys: Arc<Vec<KeyInfo>>,
    period: Duration,
    until: Instant,
    counts: Arc<Counts>,
) {
    let policy = |limit: u32| pb::Policy {
        approvers: vec![admin.clone()],
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![admin.clone()],
        admin_threshold: 1,
        max_signatures_per_minute: limit,
        ..Default::default()
    };
    let mut created: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while Instant::now() < until {
        ticks.tick().await;
        n += 1;
        let ok = match n % 4 {
            0 => match client
                .create_key_with(&keyring, &format!("mixed {n}"), policy(0))
                .await
            {
                Ok(key) => {
                    created.push(key.key_id);
                    true
                }
                Err(_) => false,
            },
            1 => match created.last() {
                Some(id) => {
                    let limit = 1_000 + u32::try_from(n).unwrap_or(0);
                    client.update_policy(id, policy(limit)).await.is_ok()
                }
                None => true,
            },
            2 => {
                let digests: Vec<[u8; 32]> = (0..16u8)
                    .map(|i| {
                        let mut digest = [i; 32];
                        digest[16..24]
                            .copy_from_slice(&u64::try_from(n).unwrap_or(0).to_be_bytes());
                        digest
                    })
                    .collect();
                let key = &keys[n % keys.len()];
                client.sign_digests(&key.key_id, &digests).await.is_ok()
            }
            _ => {
                let key = &keys[n % keys.len()];
                client.fresh_public_key(&key.key_id).await.is_ok()
            }
        };
        let counter = if ok {
            &counts.mixed
        } else {
            &counts.mixed_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Growth of (RSS, descriptors) from sample `from` to the last, zero where they shrank.
fn growth(samples: &[Sample], from: usize, pick: fn(&Sample) -> (u64, u64)) -> (u64, u64) {
    let first = pick(&samples[from]);
    let last = pick(&samples[samples.len() - 1]);
    (
        last.0.saturating_sub(first.0),
        last.1.saturating_sub(first.1),
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stack = bench::stack().await;
    let admin = stack.client().await;
    let mut keys = Vec::with_capacity(cli.keys);
    for i in 0..cli.keys {
        keys.push(
            admin
                .create_key(&stack.keyring(), &format!("soak {i}"))
                .await
                .expect("create key"),
        );
    }
    let keys = Arc::new(keys);
    let (host, enclave) = (
        stack.host_pid(),
        stack.enclave_pid().expect("host runs an enclave"),
    );
    let period = Duration::from_secs_f64(f64::from(cli.concurrency) / f64::from(cli.rate.max(1)));
    let start = Instant::now();
    let until = start + Duration::from_secs(cli.seconds);
    let counts = Arc::new(Counts::default());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cli.concurrency.max(1) {
        let client = stack.client().await;
        workers.spawn(worker(
            client,
            Arc::clone(&keys),
            period,
            until,
            Arc::clone(&counts),
        ));
    }
    let sample = |at: Duration| Sample {
        at,
        host: (rss_bytes(host), fds(host)),
        enclave: (rss_bytes(enclave), fds(enclave)),
        signed: counts.signed.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
    };
    if cli.mixed_per_second > 0 {
        workers.spawn(mixed(
            stack.client().await,
            stack.keyring(),
            stack.admin_key().public(),
            Arc::clone(&keys),
            Duration::from_secs_f64(1.0 / f64::from(cli.mixed_per_second)),
            until,
            Arc::clone(&counts),
        ));
    }
    let mut samples = vec![sample(Duration::ZERO)];
    let mut ticks = tokio::time::interval(Duration::from_millis(cli.sample_ms.max(100)));
    ticks.tick().await;
    while Instant::now() < until {
        ticks.tick().await;
        samples.push(sample(start.elapsed()));
    }
    while workers.join_next().await.is_some() {}
    samples.push(sample(start.elapsed()));

    println!(
        "soak: {} s at {} signatures/s asked for, {} workers, {} keys, {} other operations/s, k256",
        cli.seconds, cli.rate, cli.concurrency, cli.keys, cli.mixed_per_second
    );
    println!();
    println!("| t s | signed | failed | host RSS MiB | host fds | enclave RSS MiB | enclave fds |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let every = (samples.len() / 12).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % every == 0 || i == samples.len() - 1 {
            println!(
                "| {:.0} | {} | {} | {:.1} | {} | {:.1} | {} |",
                s.at.as_secs_f64(),
                s.signed,
                s.failed,
                mib(s.host.0),
                s.host.1,
                mib(s.enclave.0),
                s.enclave.1
            );
        }
    }
    let warm = samples
        .iter()
        .position(|s| s.at >= Duration::from_secs(cli.seconds) / 10)
        .unwrap_or(0);
    let (host_rss, host_fds) = growth(&samples, warm, |s| s.host);
    let (enclave_rss, enclave_fds) = growth(&samples, warm, |s| s.enclave);
    let (signed, wrong, failed) = (
        counts.signed.load(Ordering::Relaxed),
        counts.wrong.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    println!();
    println!(
        "{signed} signatures ({:.0}/s), {wrong} wrong, {failed} failed; after the warm-up \
         ({:.0} s): host RSS +{:.1} MiB, fds +{host_fds}; enclave RSS +{:.1} MiB, fds \
         +{enclave_fds} (bounds: {} MiB, {} fds)",
        f64::from(u32::try_from(signed).unwrap_or(u32::MAX)) / start.elapsed().as_secs_f64(),
        samples[warm].at.as_secs_f64(),
        mib(host_rss),
        mib(enclave_rss),
        cli.max_rss_growth_mib,
        cli.max_fd_growth,
    );
    let bound = cli.max_rss_growth_mib * 1024 * 1024;
    let held = wrong == 0
        && counts.mixed_failed.load(Ordering::Relaxed) == 0
        && host_rss <= bound
        && enclave_rss <= bound
        && host_fds <= cli.max_fd_growth
        && enclave_fds <= cli.max_fd_growth;
    if cli.mixed_per_second > 0 {
        println!(
            "other operations: {} done, {} failed",
            counts.mixed.load(Ordering::Relaxed),
            counts.mixed_failed.load(Ordering::Relaxed)
        );
    }
    println!("bounds {}", if held { "held" } else { "EXCEEDED" });
    if held {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
