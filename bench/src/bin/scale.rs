//! Scale benchmark: how long the enclave takes to load N sealed keys after its keyring is open
//! (and how many key-wrapping-provider calls that took), how long its background pass then
//! takes to check every key's public key, and its resident memory per loaded key.
//!
//! Setup writes N sealed records straight into a key store with the library code the enclave
//! uses (creating a million keys through the API would measure SQLite fsyncs, not loading). The
//! measurement itself is the real path: `signer-host dev` starts, opens the store, and streams the
//! records to a real `signer-enclave` process over a Unix socket.
//!
//! `--store postgres` does the same over a throw-away PostgreSQL cluster (Debian's packages), and
//! reports the bytes the store holds per key.
//!
//! Run: `bench/run-scale` (release build, then 100,000 and 1,000,000 keys).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{rss_bytes, wait_serving};
use clap::Parser;
use prost::Message as _;
use signer_enclave::backend::{Backend, K256};
use signer_enclave::ids::{KeyId, KeyringId};
use signer_enclave::policy::{self, KeyPolicy, KeyringAdmins};
use signer_enclave::provider::KeyWrapper as _;
use signer_enclave::provider::local::LocalProvider;
use signer_enclave::seal::{self, Binding};
use signer_enclave::secret::{KeyringKey, WalletSecret};
use signer_host::store::postgres::{PgStore, PoolSettings};
use signer_host::store::sqlite::SqliteStore;
use signer_host::store::{KeyStore, StoredKey, StoredKeyring};
use signer_proto::pb;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;

/// Enclave load time and memory at large key counts.
#[derive(Debug, Parser)]
struct Cli {
    /// Key counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    keys: Vec<usize>,
    /// Signing backend of the enclave.
    #[arg(long, default_value = "k256")]
    backend: String,
    /// Key stores to load from: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    store: Vec<String>,
}

/// Where the records are written and loaded from.
enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    fn keys(&self) -> &dyn KeyStore {
        match self {
            Store::Sqlite(store) => store,
            Store::Postgres(store) => store,
        }
    }

    async fn insert_keys(&self, records: &[StoredKey]) {
        match self {
            Store::Sqlite(store) => store.insert_keys(records).expect("insert batch"),
            Store::Postgres(store) => store.insert_keys(records).await.expect("insert batch"),
        }
    }
}

fn make_record(keyring_id: &KeyringId, keyring_key: &KeyringKey) -> StoredKey {
    let (secret, key) = loop {
        let secret = WalletSecret::random().expect("OS RNG");
        if let Ok(key) = K256::load(&secret) {
            break (secret, key);
        }
    };
    let public = K256::public_key(&key);
    let key_id = KeyId::random().expect("OS RNG");
    let policy = bench_policy().encode();
    let policy_hash = seal::policy_hash(&policy);
    let compressed = public.compressed();
    let binding = Binding {
        key_id: &key_id,
        keyring_id,
        public_key: &compressed,
        policy_hash: &policy_hash,
    };
    let sealed = seal::seal(keyring_key, &binding, &secret).expect("seal");
    StoredKey {
        key_id: key_id.to_string(),
        keyring_id: keyring_id.to_string(),
        public_key: compressed.to_vec(),
        policy,
        label: String::new(),
        sealed,
        // What ListKeys serves; the scale run never lists.
        info: pb::KeyInfo {
            key_id: key_id.to_string(),
            keyring_id: keyring_id.to_string(),
            public_key_compressed: compressed.to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

/// A fixed Ed25519 API key (public half only: the scale run loads, it never signs).
fn bench_api_key() -> pb::ApiKey {
    pb::ApiKey {
        scheme: pb::StampScheme::Ed25519.into(),
        // RFC 8032 test 1's public key.
        public_key: hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .expect("constant hex qed"),
    }
}

/// One policy shared by every record, as in a real deployment with one approver service.
fn bench_policy() -> KeyPolicy {
    KeyPolicy::parse(&pb::Policy {
        version: 1,
        approvers: vec![bench_api_key()],
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        ..pb::Policy::default()
    })
    .expect("valid policy qed")
}

/// Writes `count` sealed records under one new keyring into `dir`'s SQLite file or the
/// PostgreSQL database at `url`, as a host would have stored them.
async fn prepare(dir: &Path, url: Option<&str>, count: usize) {
    let provider = LocalProvider::open(&dir.join("master.key"), true).expect("master key");
    let keyring_id = KeyringId::random().expect("OS RNG");
    let (keyring_key, wrapped) = provider.generate(&keyring_id).await.expect("keyring");
    let store = match url {
        Some(url) => Store::Postgres(
            PgStore::connect(url, PoolSettings::default())
                .await
                .expect("store"),
        ),
        None => Store::Sqlite(SqliteStore::open(&dir.join("keys.sqlite3")).expect("store")),
    };
    let admins = KeyringAdmins::parse(&pb::KeyringAdmins {
        admins: vec![bench_api_key()],
        threshold: 1,
    })
    .expect("valid admins qed")
    .encode();
    let keyring = StoredKeyring {
        keyring_id: keyring_id.to_string(),
        provider: "local".into(),
        wrapped_key: wrapped,
        admins: admins.clone(),
        admins_seal: seal::seal_admins(&keyring_key, &keyring_id, &policy::admins_hash(&admins))
            .expect("admin seal"),
    };
    // The trait's calls block (PostgreSQL's on this runtime): off the async workers.
    tokio::task::block_in_place(|| store.keys().insert_keyring(&keyring)).expect("insert keyring");
    let keyring_key = Arc::new(keyring_key);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let batch = 10_000;
    let mut written = 0;
    while written < count {
        let n = batch.min(count - written);
        let per = n.div_ceil(threads);
        let mut records = Vec::with_capacity(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let keyring_key = Arc::clone(&keyring_key);
                    let take = per.min(n.saturating_sub(t * per));
                    s.spawn(move || {
                        (0..take)
                            .map(|_| make_record(&keyring_id, &keyring_key))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                records.extend(h.join().expect("generator thread"));
            }
        });
        store.insert_keys(&records).await;
        written += n;
    }
}

fn log_field(log: &str, field: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("enclave loaded and ready"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    let bins = bench::bin_dir();
    let cluster = cli
        .store
        .iter()
        .any(|s| s == "postgres")
        .then(tests::postgres::Postgres::start);
    println!(
        "| store | keys | ready after keyring open (ms) | keyring unwrap (ms) | provider calls | checked at ready | all checked, after ready (ms) | enclave RSS (MiB) | RSS per key (B) | marginal RSS per key (B) | store bytes per key |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // An empty enclave's RSS, for the marginal figure.
    let empty_rss = run(&bins, &cli.backend, None, 0).await.rss;
    for (n, (store, &count)) in cli
        .store
        .iter()
        .flat_map(|store| cli.keys.iter().map(move |count| (store, count)))
        .enumerate()
    {
        let database = match (store.as_str(), &cluster) {
            ("postgres", Some(cluster)) => Some((cluster, format!("scale{n}"))),
            ("sqlite", _) => None,
            (other, _) => panic!("unknown store {other}"),
        };
        let url = database
            .as_ref()
            .map(|(cluster, name)| cluster.database(name));
        let Run {
            log,
            calls,
            checked_at_ready,
            checked_after,
            rss,
            sqlite_bytes,
        } = run(&bins, &cli.backend, url.as_deref(), count).await;
        let per_key = |bytes: u64| bytes / u64::try_from(count.max(1)).unwrap_or(1);
        let store_bytes = match &database {
            Some((cluster, name)) => cluster
                .psql(name, "SELECT pg_total_relation_size('keys')")
                .trim()
                .parse()
                .expect("a size"),
            None => sqlite_bytes,
        };
        println!(
            "| {store} | {count} | {} | {} | {calls} | {checked_at_ready} | {} | {:.1} | {} | {} | {} |",
            log_field(&log, "records_ms").map_or("?".into(), |v| v.to_string()),
            log_field(&log, "keyrings_ms").map_or("?".into(), |v| v.to_string()),
            checked_after.as_millis(),
            f64::from(u32::try_from(rss / 1024).unwrap_or(u32::MAX)) / 1024.0,
            per_key(rss),
            per_key(rss.saturating_sub(empty_rss)),
            per_key(store_bytes),
        );
        assert_eq!(
            log_field(&log, "loaded"),
            Some(u64::try_from(count).unwrap_or(0)),
            "every key loaded:\n{log}"
        );
    }
}

/// What one run measured.
struct Run {
    /// The host's log.
    log: String,
    /// The enclave's key-wrapping-provider calls.
    calls: u64,
    /// Keys the enclave had checked when the host first reported SERVING.
    checked_at_ready: u64,
    /// From SERVING until every key was checked (status polled every 5 ms).
    checked_after: Duration,
    /// The enclave's RSS once every key was checked.
    rss: u64,
    /// The SQLite files' size (0 for PostgreSQL).
    sqlite_bytes: u64,
}

/// Prepares `count` keys, starts the stack over them, and measures it.
async fn run(bins: &Path, backend: &str, url: Option<&str>, count: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    prepare(dir.path(), url, count).await;
    let sqlite_bytes = ["keys.sqlite3", "keys.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "prepared {count} sealed records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let options = tests::StackOptions {
        bin_dir: Some(bins.to_owned()),
        store_url: url.map(str::to_owned),
        ..tests::StackOptions::default()
    };
    let host = tests::Stack::spawn(dir, backend, &options);
    wait_serving(&host.address).await;
    let enclave = host.enclave_pid().expect("host runs an enclave");
    let channel = signer_proto::transport::dial(
        &format!("unix://{}", host.dir.path().join("enclave.sock").display())
            .parse()
            .expect("address"),
        Default::default(),
    )
    .expect("dial enclave");
    let serving = Instant::now();
    let client = EnclaveServiceClient::new(channel);
    let status = || {
        let mut client = client.clone();
        async move {
            client
                .status(pb::StatusRequest {})
                .await
                .expect("status")
                .into_inner()
        }
    };
    let first = status().await;
    let mut last = first.clone();
    while last.keys_checked < last.keys {
        tokio::time::sleep(Duration::from_millis(5)).await;
        last = status().await;
    }
    let checked_after = serving.elapsed();
    Run {
        log: host.log(),
        calls: last.provider_calls,
        checked_at_ready: first.keys_checked,
        checked_after,
        rss: rss_bytes(enclave),
        sqlite_bytes,
    }
}
