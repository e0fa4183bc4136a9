//! Ethereum signing end to end: `SignEthereum` over an EIP-1559 transaction, with and without
//! Ethereum rules on the key, against `Sign` over a 32-byte digest in the same run (same stack,
//! same client, rounds interleaved). The difference in enclave CPU per request between the two
//! `SignEthereum` rows is what judging the rules costs; between plain `SignEthereum` and `Sign`,
//! what decoding and hashing the transaction costs.
//!
//! Run: `bench/run-ethereum` (builds release binaries, then runs this).

use alloy_consensus::{SignableTransaction as _, TxEip1559};
use alloy_primitives::{Address, TxKind, U256};
use bench::{closed_loop, interleaved};
use clap::Parser;
use hdrhistogram::Histogram;
use signer_client::{Client, pb};

/// Ethereum signing benchmark.
#[derive(Debug, Parser)]
struct Cli {
    /// Measured requests per row.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
    /// Unmeasured warm-up requests before each measurement.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Rounds per row, interleaved; the median-throughput round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Digest,
    Transaction,
    RuledTransaction,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Digest => "Sign (digest)",
            Call::Transaction => "SignEthereum 1559, no rules",
            Call::RuledTransaction => "SignEthereum 1559, rules",
        }
    }
}

const BOB: Address = Address::repeat_byte(0xb0);

fn transaction(nonce: u64) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: 1,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(BOB),
        value: U256::from(1_000_000_000_000_000u64),
        access_list: Default::default(),
        input: Default::default(),
    };
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    out
}

/// Rules a hot wallet might carry: one chain, 1,000 destinations, per-transaction and daily
/// value limits (the daily total is counted on every request), 100 tokens.
fn rules() -> pb::EthereumRules {
    let address = |i: u32| {
        let mut a = [0u8; 20];
        a[..4].copy_from_slice(&i.to_be_bytes());
        a.to_vec()
    };
    let mut destinations: Vec<Vec<u8>> = (1..1000).map(address).collect();
    destinations.push(BOB.to_vec());
    pb::EthereumRules {
        chain_ids: vec![1],
        destinations,
        max_value_wei: U256::from(10u64)
            .pow(U256::from(20))
            .to_be_bytes_trimmed_vec(),
        max_value_per_day_wei: U256::MAX.to_be_bytes_trimmed_vec(),
        tokens: (5000..5100)
            .map(|i| pb::TokenRule {
                contract: address(i),
                max_amount: vec![1; 8],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn one(client: &Client, call: Call, key: &str, i: u64) {
    match call {
        Call::Digest => {
            let mut digest = [0x5a; 32];
            digest[..8].copy_from_slice(&i.to_be_bytes());
            client.sign_digest(key, digest).await.map(|_| ())
        }
        Call::Transaction | Call::RuledTransaction => client
            .sign_transaction(key, &transaction(i))
            .await
            .map(|_| ()),
    }
    .expect("signs");
}

async fn load(
    client: &Client,
    call: Call,
    key: &str,
    concurrency: usize,
    requests: usize,
) -> (Histogram<u64>, std::time::Duration, usize) {
    let (client, key) = (client.clone(), key.to_owned());
    closed_loop(concurrency, requests, move |sequence| {
        let (client, key) = (client.clone(), key.clone());
        async move { one(&client, call, &key, u64::try_from(sequence).unwrap_or(0)).await }
    })
    .await
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let stack = bench::stack().await;
    let client = stack.client().await;
    let admin = stack.admin_key().public();
    let policy = |ethereum| pb::Policy {
        approvers: vec![admin.clone()],
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![admin.clone()],
        admin_threshold: 1,
        ethereum,
        ..Default::default()
    };
    let plain = client
        .create_key_with(&stack.keyring(), "plain", policy(None))
        .await
        .expect("create key");
    let ruled = client
        .create_key_with(&stack.keyring(), "ruled", policy(Some(rules())))
        .await
        .expect("create key");
    let enclave = stack.enclave_pid().expect("host runs an enclave");
    let calls = [
        (Call::Digest, plain.key_id.as_str()),
        (Call::Transaction, plain.key_id.as_str()),
        (Call::RuledTransaction, ruled.key_id.as_str()),
    ];
    println!(
        "k256, {} measured requests per row after {} warm-up, median of {} interleaved rounds",
        cli.requests, cli.warmup, cli.rounds
    );
    println!();
    println!(
        "| call | conc. | req/s | p50 µs | p99 µs | enclave CPU µs/req | throughput ratio | p50 ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for &c in &cli.concurrency {
        let medians = interleaved(
            &calls,
            cli.rounds,
            enclave,
            (cli.warmup, cli.requests),
            |&(call, key), requests| load(&client, call, key, c, requests),
        )
        .await;
        let base = &medians[0];
        for ((call, _), run) in calls.iter().zip(&medians) {
            println!(
                "| {} | {c} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
                call.name(),
                run.throughput(),
                run.p(0.5),
                run.p(0.99),
                run.cpu_us(),
                run.throughput() / base.throughput(),
                run.p(0.5) / base.p(0.5),
            );
        }
        println!(
            "\nc={c}: rules cost {:.1} µs of enclave CPU per request (ruled − plain SignEthereum); decoding and hashing the transaction {:.1} µs (plain SignEthereum − Sign)\n",
            medians[2].cpu_us() - medians[1].cpu_us(),
            medians[1].cpu_us() - medians[0].cpu_us(),
        );
    }
}
