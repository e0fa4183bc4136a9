//! Fleet benchmark: signing throughput and latency through an SDK `Fleet` over two full stacks
//! (two hosts, two enclaves) sharing one PostgreSQL key store, against one stack over its
//! embedded SQLite file as the baseline, in the same run, rounds interleaved. Also the time a
//! key created through one host takes to sign through the other.
//!
//! On a 2-core machine the two stacks and the client share the same cores, so this measures
//! what a shared store costs on the signing path (nothing should: signing reads no store), not
//! how a fleet scales across machines.
//!
//! Run: `bench/run-fleet` (release build, then this).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::closed_loop;
use clap::Parser;
use hdrhistogram::Histogram;
use signer_client::{ClientConfig, Fleet};
use tests::postgres::Postgres;
use tests::{Stack, StackOptions};

/// Fleet over PostgreSQL against one host over SQLite.
#[derive(Debug, Parser)]
struct Cli {
    /// Measured requests per system and round.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Unmeasured warm-up requests before each measurement.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds, systems interleaved; the round with the median throughput is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

struct Run {
    latency: Histogram<u64>,
    elapsed: Duration,
    requests: usize,
}

impl Run {
    fn throughput(&self) -> f64 {
        f64::from(u32::try_from(self.requests).unwrap_or(u32::MAX)) / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        Duration::from_nanos(self.latency.value_at_quantile(q)).as_secs_f64() * 1e3
    }
}

fn digest(sequence: usize) -> [u8; 32] {
    let mut d = [0xa5; 32];
    d[..8].copy_from_slice(&u64::try_from(sequence).unwrap_or(0).to_be_bytes());
    d
}

async fn load(fleet: &Arc<Fleet>, key_id: &str, concurrency: usize, requests: usize) -> Run {
    let (fleet, key_id) = (Arc::clone(fleet), Arc::<str>::from(key_id));
    let (latency, elapsed, requests) = closed_loop(concurrency, requests, move |sequence| {
        let (fleet, key_id) = (Arc::clone(&fleet), Arc::clone(&key_id));
        async move {
            fleet
                .sign(|client| {
                    let key_id = Arc::clone(&key_id);
                    async move { client.sign_digest(&key_id, digest(sequence)).await }
                })
                .await
                .expect("sign");
        }
    })
    .await;
    Run {
        latency,
        elapsed,
        requests,
    }
}

/// A fleet of `stacks` (one member for the baseline), stamping with the first's admin key.
async fn fleet(stacks: &[&Stack]) -> Arc<Fleet> {
    let first = stacks[0];
    let mut config = ClientConfig::new(first.address.clone(), first.deployment_id.clone());
    config.stamper = Some(Arc::new(first.admin_stamper()));
    config.enclave = Some(first.attestation_policy());
    let endpoints = stacks.iter().map(|s| s.address.clone()).collect();
    Arc::new(Fleet::connect(config, endpoints).await.expect("fleet"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let bins = bench::bin_dir();
    let cluster = Postgres::start();
    let url = cluster.database("fleet");
    let sqlite_options = StackOptions {
        bin_dir: Some(bins.clone()),
        ..StackOptions::default()
    };
    let pg_options = StackOptions {
        store_url: Some(url),
        ..sqlite_options.clone()
    };
    let single = Stack::start_with(tempfile::tempdir().expect("tempdir"), &sqlite_options).await;
    let single_key = single
        .client()
        .await
        .create_key(&single.keyring(), "bench")
        .await
        .expect("key")
        .key_id;
    let a = Stack::start_with(tempfile::tempdir().expect("tempdir"), &pg_options).await;
    let on_a = a.client().await;
    let b_dir = tempfile::tempdir().expect("tempdir");
    tests::copy_data_files(a.dir.path(), b_dir.path());
    let b = Stack::start_with(b_dir, &pg_options).await;
    let on_b = b.client().await;

    // Cross-host propagation: created through A, first signature through B.
    let mut propagation = Vec::new();
    for i in 0..20 {
        let key = on_a
            .create_key(&a.keyring(), &format!("propagation {i}"))
            .await
            .expect("key");
        let started = Instant::now();
        while on_b.sign_digest(&key.key_id, [9; 32]).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never reached B"
            );
        }
        propagation.push(started.elapsed());
    }
    propagation.sort();
    let fleet_key = on_a
        .create_key(&a.keyring(), "bench")
        .await
        .expect("key")
        .key_id;
    while on_b.sign_digest(&fleet_key, [9; 32]).await.is_err() {}

    let (single_fleet, pair) = (fleet(&[&single]).await, fleet(&[&a, &b]).await);
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let systems = [(&single_fleet, &single_key), (&pair, &fleet_key)];
    for round in 0..cli.rounds {
        for i in bench::rotation(systems.len(), round) {
            let (f, key) = systems[i];
            load(f, key, cli.concurrency, cli.warmup).await;
            runs[i].push(load(f, key, cli.concurrency, cli.requests).await);
        }
    }
    let median = |mut v: Vec<Run>| {
        v.sort_by(|x, y| x.throughput().total_cmp(&y.throughput()));
        v.remove(v.len() / 2)
    };
    let [single_runs, pair_runs] = runs;
    let (base, fleet) = (median(single_runs), median(pair_runs));
    println!(
        "| system (c={}) | p50 (ms) | p99 (ms) | throughput (sig/s) | throughput ratio | p50 ratio |",
        cli.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, run) in [
        ("1 host, SQLite (baseline)", &base),
        ("2 hosts, one PostgreSQL, SDK Fleet", &fleet),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |",
            run.p(0.5),
            run.p(0.99),
            run.throughput(),
            run.throughput() / base.throughput(),
            run.p(0.5) / base.p(0.5),
        );
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    println!(
        "\nkey created through host A, first signature through host B: p50 {:.1} ms, max {:.1} ms over {} keys",
        ms(&propagation[propagation.len() / 2]),
        ms(propagation.last().expect("measured")),
        propagation.len()
    );
}
