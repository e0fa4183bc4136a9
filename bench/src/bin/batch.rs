//! Batch signing end to end: `SignBatch` of 1, 16 and 256 digests against `Sign` of one digest,
//! same stack, same client, rounds interleaved. A batch pays for one stamp, one stamp check, one
//! nonce, one audit entry and one round trip per batch instead of per signature; the SDK still
//! verifies every signature. Reported per signature, the unit a caller pays for.
//!
//! Run: `bench/run-batch` (builds release binaries, then runs this).

use std::sync::Arc;

use bench::{Run, closed_loop, interleaved};
use clap::Parser;
use signer_client::Client;

/// Batch signing benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Measured signatures per row (a batch row sends this divided by its batch size).
    #[arg(long, default_value_t = 40_000)]
    signatures: usize,
    /// Unmeasured warm-up signatures before each measurement.
    #[arg(long, default_value_t = 4_000)]
    warmup: usize,
    /// Concurrency levels (requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Batch sizes to measure against `Sign`.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    batches: Vec<usize>,
    /// Rounds per row, interleaved; the median-throughput round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn digest(sequence: usize, item: usize) -> [u8; 32] {
    let mut digest = [0x3c; 32];
    digest[..8].copy_from_slice(&u64::try_from(sequence).unwrap_or(0).to_be_bytes());
    digest[8..16].copy_from_slice(&u64::try_from(item).unwrap_or(0).to_be_bytes());
    digest
}

/// `signatures` signatures at `concurrency`, as single `Sign`s (`batch` 0) or batches.
async fn load(
    client: &Client,
    key: &Arc<str>,
    batch: usize,
    concurrency: usize,
    signatures: usize,
) -> (hdrhistogram::Histogram<u64>, std::time::Duration, usize) {
    let (client, key) = (client.clone(), Arc::clone(key));
    let requests = signatures.div_ceil(batch.max(1));
    closed_loop(concurrency, requests, move |sequence| {
        let (client, key) = (client.clone(), Arc::clone(&key));
        async move {
            if batch == 0 {
                client
                    .sign_digest(&key, digest(sequence, 0))
                    .await
                    .map(|_| ())
            } else {
                let digests: Vec<_> = (0..batch).map(|item| digest(sequence, item)).collect();
                client.sign_digests(&key, &digests).await.map(|_| ())
            }
            .expect("signs");
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let stack = bench::stack().await;
    let client = stack.client().await;
    let key = client
        .create_key(&stack.keyring(), "batch")
        .await
        .expect("create key");
    let key: Arc<str> = key.key_id.into();
    let enclave = stack.enclave_pid().expect("host runs an enclave");
    // 0 is `Sign`, the baseline.
    let rows: Vec<usize> = std::iter::once(0)
        .chain(cli.batches.iter().copied())
        .collect();
    let name = |batch: usize| match batch {
        0 => "Sign (baseline)".to_owned(),
        n => format!("SignBatch of {n}"),
    };
    println!(
        "k256, {} measured signatures per row after {} warm-up, median of {} interleaved rounds",
        cli.signatures, cli.warmup, cli.rounds
    );
    println!();
    println!(
        "| call | conc. | req/s | signatures/s | p50 µs | p99 µs | enclave CPU µs/signature | signatures/s ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &c in &cli.concurrency {
        let medians = interleaved(
            &rows,
            cli.rounds,
            enclave,
            (cli.warmup, cli.signatures),
            |&batch, signatures| load(&client, &key, batch, c, signatures),
        )
        .await;
        let per_request = |batch: usize| f64::from(u32::try_from(batch.max(1)).unwrap_or(1));
        let signatures = |batch: usize, run: &Run| run.throughput() * per_request(batch);
        let base = signatures(0, &medians[0]);
        for (&batch, run) in rows.iter().zip(&medians) {
            println!(
                "| {} | {c} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} |",
                name(batch),
                run.throughput(),
                signatures(batch, run),
                run.p(0.5),
                run.p(0.99),
                run.cpu_us() / per_request(batch),
                signatures(batch, run) / base,
            );
        }
        if let Some((&largest, run)) = rows.iter().zip(&medians).skip(1).last() {
            println!(
                "\nc={c}: SignBatch of {largest} signs {:.2}× the signatures a second of Sign (target at c=64: ≥ 3)\n",
                signatures(largest, run) / base
            );
        }
    }
}
