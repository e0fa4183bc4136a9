//! End-to-end load generator: drives `signer-host` + `signer-enclave` (separate processes, Unix
//! socket between them, TCP from client to host) through the SDK, and in the same run a baseline
//! two-hop tonic relay whose server only signs (`baseline`). Prints latency percentiles,
//! throughput, server CPU per request, ratios to the baseline, and the targets of bench/RESULTS.md.
//!
//! Run: `bench/run-e2e` (builds release binaries, then runs this).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{closed_loop, cpu_seconds, spawn_announcing, wait_serving};
use clap::Parser;
use hdrhistogram::Histogram;
use signer_client::{Client, ClientConfig, RetryPolicy};
use signer_proto::pb::{self, enclave_service_client::EnclaveServiceClient};
use signer_proto::transport::Address;

/// End-to-end signing benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Signing backend for both the signer and the baseline.
    #[arg(long, default_value = "k256")]
    backend: String,
    /// Measured requests per (system, mode, concurrency).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Unmeasured warm-up requests before each measurement.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Rounds per row, baseline and signer interleaved; the round with the median throughput is
    /// reported (this machine is shared and noisy).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure, in the same rounds, a second signer stack running this enclave binary (an
    /// older build, say): the row "compare" shows what a change to the enclave did.
    #[arg(long)]
    compare_enclave: Option<std::path::PathBuf>,
    /// Also measure, in the same rounds, a second signer stack running the `signer-host` and
    /// `signer-enclave` in this directory (another build of both); with `--compare-enclave`,
    /// that enclave instead of this directory's.
    #[arg(long)]
    compare_bins: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Unary,
    Stream,
}

#[derive(Debug)]
struct Run {
    latency: Histogram<u64>,
    elapsed: Duration,
    requests: usize,
    front_cpu: f64,
    back_cpu: f64,
    client_cpu: f64,
}

impl Run {
    fn throughput(&self) -> f64 {
        f64::from(u32::try_from(self.requests).unwrap_or(u32::MAX)) / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        // Nanoseconds recorded; reported in microseconds.
        let nanos = self.latency.value_at_quantile(q);
        f64::from(u32::try_from(nanos / 100).unwrap_or(u32::MAX)) / 10.0
    }
    fn cpu_us(&self, seconds: f64) -> f64 {
        seconds * 1e6 / f64::from(u32::try_from(self.requests).unwrap_or(u32::MAX))
    }
}

struct Target {
    client: Client,
    key_id: String,
    front: u32,
    back: u32,
}

fn digest(task: usize, i: usize) -> [u8; 32] {
    let mut d = [0x5a; 32];
    d[..8].copy_from_slice(&u64::try_from(task).unwrap_or(0).to_be_bytes());
    d[8..16].copy_from_slice(&u64::try_from(i).unwrap_or(0).to_be_bytes());
    d
}

async fn unary(target: &Target, concurrency: usize, requests: usize) -> (Histogram<u64>, Duration) {
    let (client, key_id) = (
        target.client.clone(),
        Arc::<str>::from(target.key_id.as_str()),
    );
    let (latency, elapsed, _) = closed_loop(concurrency, requests, move |sequence| {
        let (client, key_id) = (client.clone(), Arc::clone(&key_id));
        async move {
            client
                .sign_digest(&key_id, digest(0, sequence))
                .await
                .expect("sign");
        }
    })
    .await;
    (latency, elapsed)
}

async fn stream(target: &Target, window: usize, requests: usize) -> (Histogram<u64>, Duration) {
    let mut stream = target.client.sign_stream().await.expect("open stream");
    let mut hist = Histogram::<u64>::new(3).expect("3 significant figures qed");
    let mut sent_at = HashMap::with_capacity(window);
    let start = Instant::now();
    let mut sent = 0;
    while sent < window.min(requests) {
        let id = stream
            .submit_digest(&target.key_id, digest(0, sent))
            .await
            .expect("submit");
        sent_at.insert(id, Instant::now());
        sent += 1;
    }
    let mut done = 0;
    while done < requests {
        let (id, result) = stream
            .next()
            .await
            .expect("stream open")
            .expect("stream healthy");
        result.expect("signature verifies");
        let t = sent_at.remove(&id).expect("known id");
        hist.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("in range");
        done += 1;
        if sent < requests {
            let id = stream
                .submit_digest(&target.key_id, digest(0, sent))
                .await
                .expect("submit");
            sent_at.insert(id, Instant::now());
            sent += 1;
        }
    }
    stream.close_send();
    (hist, start.elapsed())
}

async fn measure(
    target: &Target,
    mode: Mode,
    concurrency: usize,
    warmup: usize,
    requests: usize,
) -> Run {
    let go = |n| async move {
        match mode {
            Mode::Unary => unary(target, concurrency, n).await,
            Mode::Stream => stream(target, concurrency, n).await,
        }
    };
    go(warmup).await;
    let (front0, back0, client0) = (
        cpu_seconds(target.front),
        cpu_seconds(target.back),
        cpu_seconds(std::process::id()),
    );
    let (latency, elapsed) = go(requests).await;
    Run {
        latency,
        elapsed,
        requests,
        front_cpu: cpu_seconds(target.front) - front0,
        back_cpu: cpu_seconds(target.back) - back0,
        client_cpu: cpu_seconds(std::process::id()) - client0,
    }
}

/// A stack's measured client and key: the harness's client creates the keyring and verifies the
/// key against the attested enclave; the measured client stamps with the same admin key.
async fn signer_target(host: &tests::Stack) -> Target {
    wait_serving(&host.address).await;
    let admin = host.client().await;
    let key = admin
        .create_key(&host.keyring(), "bench")
        .await
        .expect("create key");
    let client = client(&host.address, &host.deployment_id, host.admin_stamper()).await;
    client.trust_key(key.clone());
    Target {
        client,
        key_id: key.key_id,
        front: host.host_pid(),
        back: host.enclave_pid().expect("host runs an enclave"),
    }
}

/// A client stamping with `stamper` (both systems get stamped requests, so client-side costs
/// match; the baseline does not check them).
async fn client(address: &Address, deployment_id: &str, stamper: signer_client::Stamper) -> Client {
    let mut config = ClientConfig::new(address.clone(), deployment_id);
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    config.stamper = Some(Arc::new(stamper));
    Client::connect(config).await.expect("address qed")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let bins = bench::bin_dir();
    let options = tests::StackOptions {
        bin_dir: Some(bins.clone()),
        ..tests::StackOptions::default()
    };
    let host = tests::Stack::spawn(
        tempfile::tempdir().expect("tempdir"),
        &cli.backend,
        &options,
    );
    let signer = signer_target(&host).await;
    let comparing = cli.compare_enclave.is_some() || cli.compare_bins.is_some();
    let compare_host = comparing.then(|| {
        let options = tests::StackOptions {
            bin_dir: Some(cli.compare_bins.clone().unwrap_or_else(|| bins.clone())),
            enclave_binary: cli.compare_enclave.clone(),
            ..options.clone()
        };
        tests::Stack::spawn(
            tempfile::tempdir().expect("tempdir"),
            &cli.backend,
            &options,
        )
    });
    let compare = match &compare_host {
        Some(host) => Some(signer_target(host).await),
        None => None,
    };

    // The enclave's own status, over its socket, for how many requests' stamps it batched.
    let enclave = host.enclave_client();

    let socket = host.dir.path().join("baseline.sock");
    let mut server_cmd = Command::new(bins.join("baseline"));
    server_cmd
        .args(["server", "--backend", &cli.backend, "--listen"])
        .arg(format!("unix://{}", socket.display()))
        .stderr(Stdio::null());
    let server = spawn_announcing(server_cmd);
    let mut relay_cmd = Command::new(bins.join("baseline"));
    relay_cmd
        .args(["relay", "--listen", "tcp://127.0.0.1:0", "--upstream"])
        .arg(format!("unix://{}", socket.display()))
        .stderr(Stdio::null());
    let relay = spawn_announcing(relay_cmd);
    let baseline_client = client(&relay.address, &host.deployment_id, host.admin_stamper()).await;
    let baseline_key = baseline_client
        .raw()
        .get_public_key(pb::GetPublicKeyRequest {
            key_id: "k-0000000000000000000000000000000b".to_owned(),
            challenge: vec![],
            path: vec![],
        })
        .await
        .expect("baseline key")
        .into_inner()
        .key
        .expect("baseline key");
    baseline_client.trust_key(
        signer_client::KeyInfo::try_from(baseline_key).expect("consistent baseline key"),
    );
    let baseline = Target {
        client: baseline_client,
        key_id: "k-0000000000000000000000000000000b".to_owned(),
        front: relay.child.id(),
        back: server.child.id(),
    };

    println!(
        "backend {}, {} measured requests per row after {} warm-up, median of {} interleaved rounds, {} cores",
        cli.backend,
        cli.requests,
        cli.warmup,
        cli.rounds.max(1),
        cores()
    );
    println!();
    println!(
        "| system | call | conc. | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | relay/host CPU µs/req | server/enclave CPU µs/req | client CPU µs/req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results: HashMap<(&str, Mode, usize), Run> = HashMap::new();
    let mut batching = Vec::new();
    for &c in &cli.concurrency {
        for mode in [Mode::Unary, Mode::Stream] {
            // Baseline and signer back to back, so both see the same machine load.
            let mut rounds: HashMap<&str, Vec<Run>> = HashMap::new();
            let before = stamp_batches(&enclave).await;
            for round in 0..cli.rounds.max(1) {
                let systems: Vec<_> = [("baseline", &baseline), ("signer", &signer)]
                    .into_iter()
                    .chain(compare.as_ref().map(|target| ("compare", target)))
                    .collect();
                for (name, target) in bench::rotation(systems.len(), round).map(|i| systems[i]) {
                    rounds
                        .entry(name)
                        .or_default()
                        .push(measure(target, mode, c, cli.warmup, cli.requests).await);
                }
            }
            let after = stamp_batches(&enclave).await;
            let sent = cli.rounds.max(1) * (cli.warmup + cli.requests);
            batching.push((mode, c, sent, after.0 - before.0, after.1 - before.1));
            for name in ["baseline", "signer", "compare"] {
                let Some(mut runs) = rounds.remove(name) else {
                    continue;
                };
                runs.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
                let run = runs.swap_remove(runs.len() / 2);
                println!(
                    "| {name} | {} | {c} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    if mode == Mode::Unary {
                        "Sign"
                    } else {
                        "SignStream"
                    },
                    run.throughput(),
                    run.p(0.5),
                    run.p(0.9),
                    run.p(0.99),
                    run.p(0.999),
                    run.cpu_us(run.front_cpu),
                    run.cpu_us(run.back_cpu),
                    run.cpu_us(run.client_cpu),
                );
                results.insert((name, mode, c), run);
            }
        }
    }
    println!();
    println!("| call | conc. | p50 ratio | p99 ratio | throughput ratio |");
    println!("|---|---:|---:|---:|---:|");
    for &c in &cli.concurrency {
        for mode in [Mode::Unary, Mode::Stream] {
            let b = &results[&("baseline", mode, c)];
            for name in ["signer", "compare"] {
                let Some(s) = results.get(&(name, mode, c)) else {
                    continue;
                };
                println!(
                    "| {}{} | {c} | {:.2} | {:.2} | {:.2} |",
                    if mode == Mode::Unary {
                        "Sign"
                    } else {
                        "SignStream"
                    },
                    if name == "compare" { " (compare)" } else { "" },
                    s.p(0.5) / b.p(0.5),
                    s.p(0.99) / b.p(0.99),
                    s.throughput() / b.throughput()
                );
            }
        }
    }
    println!();
    println!(
        "| call | conc. | requests whose stamps were verified in a batch | requests per batch |"
    );
    println!("|---|---:|---:|---:|");
    for (mode, c, sent, batches, batched) in batching {
        println!(
            "| {} | {c} | {:.0} % | {:.1} |",
            if mode == Mode::Unary {
                "Sign"
            } else {
                "SignStream"
            },
            100.0 * as_f64(batched) / as_f64(u64::try_from(sent).unwrap_or(u64::MAX)),
            as_f64(batched) / as_f64(batches.max(1)),
        );
    }
    targets(&results);
}

/// The enclave's stamp batches and the requests in them, since it started.
async fn stamp_batches(enclave: &EnclaveServiceClient<tonic::transport::Channel>) -> (u64, u64) {
    let status = enclave
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("enclave status")
        .into_inner();
    (status.stamp_batches, status.stamps_batched)
}

fn as_f64(count: u64) -> f64 {
    f64::from(u32::try_from(count).unwrap_or(u32::MAX))
}

fn targets(results: &HashMap<(&str, Mode, usize), Run>) {
    let get = |name, mode, c| results.get(&(name, mode, c));
    println!();
    let check = |label: &str, value: Option<f64>, ok: fn(f64) -> bool| match value {
        Some(v) => println!(
            "- {label}: {v:.2} — {}",
            if ok(v) { "met" } else { "MISSED" }
        ),
        None => println!("- {label}: not measured (concurrency level not run)"),
    };
    let ratio = |mode, c, f: fn(&Run) -> f64| {
        Some(f(get("signer", mode, c)?) / f(get("baseline", mode, c)?))
    };
    check(
        "Sign c=1 p50 / baseline p50 (≤ 1.25)",
        ratio(Mode::Unary, 1, |r| r.p(0.5)),
        |v| v <= 1.25,
    );
    check(
        "Sign c=64 throughput / baseline (≥ 0.8)",
        ratio(Mode::Unary, 64, Run::throughput),
        |v| v >= 0.8,
    );
    check(
        "Sign c=64 p99 / baseline p99 (≤ 1.5)",
        ratio(Mode::Unary, 64, |r| r.p(0.99)),
        |v| v <= 1.5,
    );
    let stream_vs_unary = get("signer", Mode::Stream, 64)
        .zip(get("signer", Mode::Unary, 64))
        .map(|(s, u)| s.throughput() / u.throughput());
    check(
        "SignStream c=64 throughput / Sign c=64 (≥ 1.3)",
        stream_vs_unary,
        |v| v >= 1.3,
    );
    let best = results
        .iter()
        .filter(|((n, _, _), _)| *n == "signer")
        .map(|(_, r)| r.throughput())
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    check(
        "best signer throughput, signatures/s (≥ 9000)",
        best,
        |v| v >= 9000.0,
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
