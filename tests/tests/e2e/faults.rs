//! Faults under load: while workers sign continuously (each signature checked again here,
//! independently of the SDK, against the key's public key), the enclave and then the host are
//! killed with SIGKILL. Reported (stderr, `--nocapture`): signatures, errors by code, wrong
//! signatures (must be 0), acknowledged keys lost (must be 0) and the time until signing
//! resumed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
use signer_client::{Client, KeyInfo};
use tests::Stack;
use tokio::sync::watch;

const WORKERS: usize = 4;

#[derive(Default)]
struct Tally {
    signed: u64,
    wrong: u64,
    errors: BTreeMap<String, u64>,
    /// When each success completed.
    successes: Vec<Instant>,
}

fn verifies(key: &KeyInfo, digest: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
    let public = k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key_compressed).unwrap();
    let Ok(signature) = k256::ecdsa::Signature::from_scalars(*r, *s) else {
        return false;
    };
    public.verify_prehash(digest, &signature).is_ok()
}

/// Signs with random keys and digests until `stop`, counting verified signatures in
/// `progress`.
async fn load(
    client: Client,
    keys: Arc<Vec<KeyInfo>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    progress: Arc<watch::Sender<u64>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut digest = [0u8; 32];
        getrandom::fill(&mut digest).unwrap();
        let key = &keys[usize::try_from(n).unwrap() % keys.len()];
        let result = client.sign_digest(&key.key_id, digest).await;
        let mut tally = tally.lock().unwrap();
        match result {
            Ok(signature) if verifies(key, &digest, &signature.r, &signature.s) => {
                tally.signed += 1;
                tally.successes.push(Instant::now());
                progress.send_replace(tally.signed);
            }
            Ok(_) => tally.wrong += 1,
            Err(error) => {
                let class = error.code().map_or("client".into(), |c| format!("{c:?}"));
                *tally.errors.entry(class).or_default() += 1;
            }
        }
    }
}

/// The outage: the longest gap between consecutive completed signatures that ends after
/// `fault` (calls in flight at the fault may still complete just after it).
fn recovery(tally: &Tally, fault: Instant) -> Option<Duration> {
    let mut times = tally.successes.clone();
    times.sort();
    times
        .windows(2)
        .filter(|pair| pair[1] > fault)
        .map(|pair| pair[1].duration_since(pair[0]))
        .max()
}

struct Run {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    progress: Arc<watch::Sender<u64>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_load(stack: &Stack, keys: &Arc<Vec<KeyInfo>>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let progress = Arc::new(watch::Sender::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = stack.client().await;
        workers.push(tokio::spawn(load(
            client,
            Arc::clone(keys),
            Arc::clone(&stop),
            Arc::clone(&tally),
            Arc::clone(&progress),
        )));
    }
    Run {
        stop,
        tally,
        progress,
        workers,
    }
}

impl Run {
    /// Waits until `more` signatures beyond those completed so far (the load is flowing).
    async fn until_signed(&self, more: u64) {
        let mut seen = self.progress.subscribe();
        let target = *seen.borrow() + more;
        tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|n| *n >= target))
            .await
            .expect("signing resumes")
            .unwrap();
    }

    /// Stops the workers: lets their calls finish, or (`abort`) drops them, for clients of a
    /// host that is gone (their retries would run out slowly).
    async fn finish(self, abort: bool) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            if abort {
                worker.abort();
                let _ = worker.await;
            } else {
                worker.await.unwrap();
            }
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_killed_under_load_loses_nothing_and_resumes() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let mut keys = Vec::new();
    for i in 0..8 {
        keys.push(
            admin
                .create_key(&stack.keyring(), &format!("load {i}"))
                .await
                .unwrap(),
        );
    }
    let keys = Arc::new(keys);
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;
    let fault = Instant::now();
    stack.kill_enclave();
    run.until_signed(200).await;
    let tally = run.finish(false).await;
    let resumed = recovery(&tally, fault).expect("signing resumed");
    eprintln!(
        "enclave SIGKILL under load ({WORKERS} workers): {} signatures, wrong {}, errors {:?}, \
         longest gap between signatures {} ms",
        tally.signed,
        tally.wrong,
        tally.errors,
        resumed.as_millis()
    );
    assert_eq!(tally.wrong, 0, "no wrong signature, ever");
    // Every acknowledged key is back, with its public key.
    let fresh = stack.client().await;
    for key in keys.iter() {
        assert_eq!(&fresh.public_key(&key.key_id).await.unwrap(), key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_under_load_loses_nothing_and_resumes() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let mut keys = Vec::new();
    for i in 0..8 {
        keys.push(
            admin
                .create_key(&stack.keyring(), &format!("load {i}"))
                .await
                .unwrap(),
        );
    }
    let keys = Arc::new(keys);
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;
    // SIGKILL the host (its enclave follows it), then start it again over the same store, as
    // its service manager would: the clients of the old address fail, new ones sign.
    let fault = Instant::now();
    let dir = stack.stop();
    let before = run.finish(true).await;
    let stack = Stack::start_in(dir, "k256").await;
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;
    let after = run.finish(false).await;
    let last_before = before.successes.iter().max().copied().unwrap_or(fault);
    let first_after = after
        .successes
        .iter()
        .min()
        .copied()
        .expect("signing resumed");
    let resumed = first_after.duration_since(last_before);
    eprintln!(
        "host SIGKILL under load ({WORKERS} workers): {} + {} signatures, wrong {}, errors {:?}, \
         no signature for {} ms (the host's restart by the test included)",
        before.signed,
        after.signed,
        before.wrong + after.wrong,
        before.errors,
        resumed.as_millis()
    );
    assert_eq!(before.wrong + after.wrong, 0, "no wrong signature, ever");
    let fresh = stack.client().await;
    for key in keys.iter() {
        assert_eq!(&fresh.public_key(&key.key_id).await.unwrap(), key);
    }
}
