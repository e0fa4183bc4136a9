//! HD and Bitcoin signing end to end (SDK → host → enclave), against `Sign` with a single key in
//! the same run (same stack, same client, rounds interleaved): `Sign` with a key derived under
//! an HD root, cached and cold (a fresh path every request, so every request derives), and
//! `SignPsbt` with 1, 10 and 100 P2WPKH inputs and 10 Taproot inputs (keys cached after the
//! warm-up; the SDK computes every sighash again and verifies every signature).
//!
//! Run: `bench/run-bitcoin` (builds release binaries, then runs this).

use std::time::{Duration, Instant};

use bench::cpu_seconds;
use bitcoin::psbt::Psbt;
use clap::Parser;
use hdrhistogram::Histogram;
use signer_client::hd::parse_path;
use signer_client::{Client, pb};
use tests::wallet::{Foreign, Kind, Wallet, pay, psbt};

/// HD and Bitcoin signing benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Measured requests for a one-signature row; a PSBT row of n inputs makes this / n (at
    /// least 30).
    #[arg(long, default_value_t = 3_000)]
    requests: usize,
    /// Rounds per row, interleaved; the median-throughput round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone, Copy, Debug)]
enum Row {
    Single,
    DerivedCached,
    DerivedCold,
    Psbt(Kind, u32),
}

impl Row {
    fn name(self) -> String {
        match self {
            Row::Single => "Sign, single key (baseline)".into(),
            Row::DerivedCached => "Sign, derived key, cached".into(),
            Row::DerivedCold => "Sign, derived key, cold (fresh path)".into(),
            Row::Psbt(Kind::P2tr, n) => format!("SignPsbt, {n} P2TR inputs"),
            Row::Psbt(_, n) => format!("SignPsbt, {n} P2WPKH inputs"),
        }
    }

    fn inputs(self) -> usize {
        match self {
            Row::Psbt(_, n) => usize::try_from(n).unwrap_or(1),
            _ => 1,
        }
    }
}

struct Run {
    latency: Histogram<u64>,
    elapsed: Duration,
    requests: usize,
    enclave_cpu: f64,
}

/// A count or a nanosecond value as `f64` (exact below 2^53, far beyond these).
fn float(n: impl TryInto<u32>) -> f64 {
    f64::from(n.try_into().unwrap_or(u32::MAX))
}

impl Run {
    fn throughput(&self) -> f64 {
        float(self.requests) / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        float(self.latency.value_at_quantile(q) / 100) / 10.0
    }
    fn cpu_us(&self) -> f64 {
        self.enclave_cpu * 1e6 / float(self.requests)
    }
}

struct Fixture {
    client: Client,
    single: String,
    root: String,
    wallet: Wallet,
    alice: bitcoin::ScriptBuf,
}

impl Fixture {
    fn psbt(&self, kind: Kind, inputs: u32) -> Psbt {
        let value = 100_000;
        psbt(
            (0..inputs)
                .map(|i| self.wallet.input(kind, i, value))
                .collect(),
            vec![
                pay(&self.alice, 1_000),
                self.wallet
                    .change(kind, 0, u64::from(inputs) * value - 1_000 - 500),
            ],
        )
    }
}

async fn one(fixture: &Fixture, row: Row, psbts: &[Psbt], i: usize, cold_base: u32) {
    let mut digest = [0x5a; 32];
    digest[..8].copy_from_slice(&u64::try_from(i).unwrap_or(0).to_be_bytes());
    let account = parse_path("m/84'/1'/0'").expect("a path");
    let at = |index: u32| [account.as_slice(), &[0, index]].concat();
    let client = &fixture.client;
    match row {
        Row::Single => client
            .sign_digest(&fixture.single, digest)
            .await
            .map(|_| ()),
        Row::DerivedCached => client
            .sign_digest_at(&fixture.root, &at(0), digest)
            .await
            .map(|_| ()),
        Row::DerivedCold => {
            let index = cold_base + u32::try_from(i).unwrap_or(0);
            client
                .sign_digest_at(&fixture.root, &at(index), digest)
                .await
                .map(|_| ())
        }
        Row::Psbt(..) => client.sign_psbt(&fixture.root, &psbts[0]).await.map(|_| ()),
    }
    .expect("signs");
}

async fn measure(fixture: &Fixture, row: Row, requests: usize, cold_base: u32) -> Run {
    let psbts = match row {
        Row::Psbt(kind, n) => vec![fixture.psbt(kind, n)],
        _ => Vec::new(),
    };
    // The SDK asks for each derived key's verified public key once; warm that and (for every
    // row but the cold one) the enclave's cache.
    one(fixture, row, &psbts, usize::MAX / 2, cold_base).await;
    let enclave = fixture_enclave_pid();
    let cpu = cpu_seconds(enclave);
    let mut latency = Histogram::<u64>::new(3).expect("3 significant figures qed");
    let start = Instant::now();
    for i in 0..requests {
        let t = Instant::now();
        one(fixture, row, &psbts, i, cold_base).await;
        latency
            .record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("in range");
    }
    Run {
        latency,
        elapsed: start.elapsed(),
        requests,
        enclave_cpu: cpu_seconds(enclave) - cpu,
    }
}

static ENCLAVE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn fixture_enclave_pid() -> u32 {
    *ENCLAVE.get().expect("set at start")
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let stack = bench::stack().await;
    ENCLAVE
        .set(stack.enclave_pid().expect("host runs an enclave"))
        .expect("once");
    let client = stack.client().await;
    let admin = stack.admin_stamper();
    let single = client
        .create_key(&stack.keyring(), "single")
        .await
        .expect("create key")
        .key_id;
    let alice = Foreign::new(0xa1).script();
    let subtrees: Vec<_> = [Kind::P2wpkh, Kind::P2shP2wpkh, Kind::P2tr]
        .into_iter()
        .map(Kind::account)
        .collect();
    let policy = pb::Policy {
        bitcoin: Some(pb::BitcoinRules {
            destinations: vec![alice.to_bytes()],
            max_sat_per_tx: 21_000_000 * 100_000_000,
            max_sat_per_day: 21_000_000 * 100_000_000,
            max_fee_sat: 1_000_000,
            max_fee_rate_sat_per_vb: 1_000,
            // The Sign rows use the root's keys directly.
            allow_blind_signing: true,
        }),
        hd: Some(pb::HdRules {
            subtrees: subtrees
                .iter()
                .map(|indices| pb::DerivationPath {
                    indices: indices.clone(),
                })
                .collect(),
        }),
        ..signer_client::policy::default_for(&admin).expect("a policy")
    };
    let root = client
        .create_hd_root(&stack.keyring(), "bench", policy)
        .await
        .expect("create root")
        .key_id;
    let fixture = Fixture {
        wallet: Wallet::open(&client, &root).await,
        client,
        single,
        root,
        alice,
    };
    let rows = [
        Row::Single,
        Row::DerivedCached,
        Row::DerivedCold,
        Row::Psbt(Kind::P2wpkh, 1),
        Row::Psbt(Kind::P2wpkh, 10),
        Row::Psbt(Kind::P2wpkh, 100),
        Row::Psbt(Kind::P2tr, 10),
    ];
    println!(
        "k256, concurrency 1, {} requests for a one-signature row, median of {} interleaved rounds",
        cli.requests, cli.rounds
    );
    println!();
    println!(
        "| call | requests | req/s | p50 µs | p99 µs | enclave CPU µs/req | µs/signature (p50) | p50 ratio | CPU ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rounds: Vec<Vec<Run>> = rows.iter().map(|_| Vec::new()).collect();
    let mut cold_base = 1_000_000;
    for round in 0..cli.rounds.max(1) {
        for slot in bench::rotation(rows.len(), round) {
            let row = rows[slot];
            let requests = (cli.requests / row.inputs()).max(30);
            rounds[slot].push(measure(&fixture, row, requests, cold_base).await);
            if matches!(row, Row::DerivedCold) {
                cold_base += u32::try_from(requests).unwrap_or(0) + 1;
            }
        }
    }
    let medians: Vec<Run> = rounds
        .into_iter()
        .map(|mut runs| {
            runs.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
            runs.swap_remove(runs.len() / 2)
        })
        .collect();
    let base = &medians[0];
    for (row, run) in rows.iter().zip(&medians) {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            row.name(),
            run.requests,
            run.throughput(),
            run.p(0.5),
            run.p(0.99),
            run.cpu_us(),
            run.p(0.5) / float(row.inputs()),
            run.p(0.5) / base.p(0.5),
            run.cpu_us() / base.cpu_us(),
        );
    }
}
