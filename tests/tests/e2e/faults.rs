//! Faults under load: while workers sign continuously (each signature checked again here,
//! independently of the SDK, against the key's public key), the enclave and then the host are
//! killed with SIGKILL (a writer creating keys all the while, so writes are in flight), KMS
//! becomes unreachable (and the enclave restarts meanwhile), and the enclave is frozen (SIGSTOP)
//! and thawed. Reported (stderr, `--nocapture`): signatures, errors by code, wrong signatures
//! (must be 0), acknowledged keys lost (must be 0) and the time until signing resumed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signer_client::{Client, KeyInfo};
use tests::Stack;
use tokio::sync::watch;

const WORKERS: usize = 4;

#[derive(Default)]
pub(super) struct Tally {
    pub(super) signed: u64,
    pub(super) wrong: u64,
    pub(super) errors: BTreeMap<String, u64>,
    /// When each success completed.
    pub(super) successes: Vec<Instant>,
}

impl Tally {
    /// No wrong signature, and every failure UNAVAILABLE (retry, or another host): not a
    /// deadline, not an internal error.
    pub(super) fn no_wrong_and_only_unavailable(&self) {
        assert_eq!(self.wrong, 0, "no wrong signature, ever");
        assert!(
            self.errors.keys().all(|code| code == "Unavailable"),
            "only UNAVAILABLE: {:?}",
            self.errors
        );
    }
}

/// An error's class for the tally: its gRPC code; a status other than UNAVAILABLE that tonic
/// made itself from a broken connection (it carries the transport's error as its source, which
/// a server's status never does) is marked "(transport)"; "client" for the SDK's own errors.
fn class(error: &signer_client::Error) -> String {
    match error {
        signer_client::Error::Status(status) => {
            let code = status.code();
            if code != tonic::Code::Unavailable && std::error::Error::source(status).is_some() {
                format!("{code:?} (transport)")
            } else {
                format!("{code:?}")
            }
        }
        _ => "client".into(),
    }
}

/// Signs with random keys and digests until `stop`, counting verified signatures in
/// `progress`.
async fn load(
    client: Client,
    keys: Arc<Vec<KeyInfo>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    progress: Arc<watch::Sender<u64>>,
    failed: Arc<watch::Sender<u64>>,
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
            Ok(signature) if tests::ecdsa_verifies(key, &digest, &signature.r, &signature.s) => {
                tally.signed += 1;
                tally.successes.push(Instant::now());
                progress.send_replace(tally.signed);
            }
            Ok(_) => tally.wrong += 1,
            Err(error) => {
                let class = class(&error);
                *tally.errors.entry(class).or_default() += 1;
                failed.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Waits until the count in `progress` has grown by `more`, for at most `seconds`.
pub(super) async fn until_more(progress: &watch::Sender<u64>, more: u64, seconds: u64, what: &str) {
    let mut seen = progress.subscribe();
    let target = *seen.borrow() + more;
    tokio::time::timeout(
        Duration::from_secs(seconds),
        seen.wait_for(|n| *n >= target),
    )
    .await
    .expect(what)
    .unwrap();
}

/// Ends a task: lets it finish, or (`abort`) drops it, for a client of a host that is gone.
async fn end(task: tokio::task::JoinHandle<()>, abort: bool) {
    if abort {
        task.abort();
        let _ = task.await;
    } else {
        task.await.unwrap();
    }
}

/// The outage: the longest gap between consecutive completed signatures that ends after
/// `fault` (calls in flight at the fault may still complete just after it).
pub(super) fn recovery(tally: &Tally, fault: Instant) -> Option<Duration> {
    let mut times = tally.successes.clone();
    times.sort();
    times
        .windows(2)
        .filter(|pair| pair[1] > fault)
        .map(|pair| pair[1].duration_since(pair[0]))
        .max()
}

pub(super) struct Run {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    progress: Arc<watch::Sender<u64>>,
    failed: Arc<watch::Sender<u64>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

pub(super) async fn start_load(stack: &Stack, keys: &Arc<Vec<KeyInfo>>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let progress = Arc::new(watch::Sender::new(0));
    let failed = Arc::new(watch::Sender::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let client = stack.client().await;
        workers.push(tokio::spawn(load(
            client,
            Arc::clone(keys),
            Arc::clone(&stop),
            Arc::clone(&tally),
            Arc::clone(&progress),
            Arc::clone(&failed),
        )));
    }
    Run {
        stop,
        tally,
        progress,
        failed,
        workers,
    }
}

impl Run {
    /// Waits until `more` signatures beyond those completed so far (the load is flowing).
    pub(super) async fn until_signed(&self, more: u64) {
        until_more(&self.progress, more, 60, "signing resumes").await;
    }

    /// Waits until `more` calls beyond those failed so far have failed.
    async fn until_failed(&self, more: u64) {
        until_more(&self.failed, more, 120, "calls fail").await;
    }

    /// A snapshot of the tally so far.
    fn tally(&self) -> (u64, u64, BTreeMap<String, u64>) {
        let tally = self.tally.lock().unwrap();
        (tally.signed, tally.wrong, tally.errors.clone())
    }

    /// Stops the workers: lets their calls finish, or (`abort`) drops them, for clients of a
    /// host that is gone (their retries would run out slowly).
    pub(super) async fn finish(self, abort: bool) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            end(worker, abort).await;
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

/// The time from `from` to the first signature completed after it.
fn first_after(tally: &Tally, from: Instant) -> Option<Duration> {
    tally
        .successes
        .iter()
        .filter(|t| **t > from)
        .min()
        .map(|t| t.duration_since(from))
}

/// Creates keys one after another until stopped, keeping every key acknowledged and counting
/// refusals by code: the writes in flight when a process dies.
struct Writer {
    stop: Arc<AtomicBool>,
    created: Arc<Mutex<Vec<KeyInfo>>>,
    refused: Arc<Mutex<BTreeMap<String, u64>>>,
    progress: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(stack: &Stack) -> Self {
        let client = stack.client().await;
        let keyring = stack.keyring();
        let stop = Arc::new(AtomicBool::new(false));
        let created = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(BTreeMap::new()));
        let progress = Arc::new(watch::Sender::new(0u64));
        let task = tokio::spawn({
            let (stop, created, refused, progress) = (
                Arc::clone(&stop),
                Arc::clone(&created),
                Arc::clone(&refused),
                Arc::clone(&progress),
            );
            async move {
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match client.create_key(&keyring, &format!("written {n}")).await {
                        Ok(key) => {
                            created.lock().unwrap().push(key);
                            progress.send_modify(|n| *n += 1);
                        }
                        Err(error) => {
                            let class = class(&error);
                            *refused.lock().unwrap().entry(class).or_default() += 1;
                        }
                    }
                }
            }
        });
        Self {
            stop,
            created,
            refused,
            progress,
            task,
        }
    }

    /// Waits until `more` keys beyond those acknowledged so far.
    async fn until_created(&self, more: u64) {
        until_more(&self.progress, more, 60, "writes resume").await;
    }

    /// Stops it (`abort`: drops the call in flight, for a host that is gone) and returns the
    /// keys acknowledged and the refusals by code.
    async fn finish(self, abort: bool) -> (Vec<KeyInfo>, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        end(self.task, abort).await;
        let created = std::mem::take(&mut *self.created.lock().unwrap());
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        (created, refused)
    }
}

/// Eight keys in the stack's keyring.
pub(super) async fn keys(stack: &Stack) -> Arc<Vec<KeyInfo>> {
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
    Arc::new(keys)
}

/// Every acknowledged key is there, with its public key.
pub(super) async fn all_present(stack: &Stack, keys: &[KeyInfo]) {
    let fresh = stack.client().await;
    for key in keys {
        assert_eq!(&fresh.public_key(&key.key_id).await.unwrap(), key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_killed_under_load_loses_nothing_and_resumes() {
    let stack = Stack::start("k256").await;
    let keys = keys(&stack).await;
    let run = start_load(&stack, &keys).await;
    let writer = Writer::start(&stack).await;
    run.until_signed(200).await;
    writer.until_created(3).await;
    let fault = Instant::now();
    stack.kill_enclave();
    run.until_signed(200).await;
    writer.until_created(3).await;
    let tally = run.finish(false).await;
    let (created, refused) = writer.finish(false).await;
    let resumed = recovery(&tally, fault).expect("signing resumed");
    eprintln!(
        "enclave SIGKILL under load ({WORKERS} workers and a writer): {} signatures, wrong {}, \
         errors {:?}, longest gap between signatures {} ms; {} keys acknowledged (all present), \
         refused {refused:?}",
        tally.signed,
        tally.wrong,
        tally.errors,
        resumed.as_millis(),
        created.len(),
    );
    tally.no_wrong_and_only_unavailable();
    assert!(
        refused.keys().all(|code| code == "Unavailable"),
        "a write the enclave's death cut is refused as UNAVAILABLE: {refused:?}"
    );
    all_present(&stack, &keys).await;
    all_present(&stack, &created).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_under_load_loses_nothing_and_resumes() {
    let stack = Stack::start("k256").await;
    let keys = keys(&stack).await;
    let run = start_load(&stack, &keys).await;
    let writer = Writer::start(&stack).await;
    run.until_signed(200).await;
    writer.until_created(3).await;
    // SIGKILL the host (its enclave follows it), then start it again over the same store, as
    // its service manager would: the clients of the old address fail, new ones sign.
    let fault = Instant::now();
    let dir = stack.stop();
    let before = run.finish(true).await;
    let (mut created, cut) = writer.finish(true).await;
    let stack = Stack::start_in(dir, "k256").await;
    let run = start_load(&stack, &keys).await;
    let writer = Writer::start(&stack).await;
    run.until_signed(200).await;
    writer.until_created(3).await;
    let after = run.finish(false).await;
    let (created_after, refused) = writer.finish(false).await;
    assert!(refused.is_empty(), "{refused:?}");
    created.extend(created_after);
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
         no signature for {} ms (the host's restart by the test included); {} keys \
         acknowledged (all present), writes cut {cut:?}",
        before.signed,
        after.signed,
        before.wrong + after.wrong,
        before.errors,
        resumed.as_millis(),
        created.len(),
    );
    assert_eq!(before.wrong + after.wrong, 0, "no wrong signature, ever");
    // A call the host's death cut ends as tonic reports a broken connection (UNKNOWN or
    // CANCELLED by where it broke: it may have run) or as UNAVAILABLE; nothing a server said.
    for errors in [&before.errors, &cut] {
        assert!(
            errors
                .keys()
                .all(|class| class == "Unavailable" || class.ends_with("(transport)")),
            "{errors:?}"
        );
    }
    all_present(&stack, &keys).await;
    all_present(&stack, &created).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_under_load_keeps_a_running_enclave_signing_and_recovers() {
    use super::kms::{key_for, kms_client, pcr0_of, start, switch_to};
    let dir = tempfile::tempdir().unwrap();
    let server = tests::KmsServer::start(&dir.path().join("dev-root.der"));
    let kms = kms_client(&server.endpoint);
    let key_arn = key_for(&kms, &pcr0_of(&tests::bin_dir().join("signer-enclave"))).await;
    let switch = switch_to(&server.endpoint).await;
    let options = tests::StackOptions {
        kms: Some((switch.endpoint.clone(), key_arn)),
        ..tests::StackOptions::default()
    };
    let stack = start(dir, &options).await;
    let keys = keys(&stack).await;
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;

    // KMS goes away: the running enclave holds its keys and goes on signing.
    switch.up.store(false, Ordering::SeqCst);
    run.until_signed(200).await;
    let (_, _, errors) = run.tally();
    assert!(
        errors.is_empty(),
        "KMS is not on the signing path: {errors:?}"
    );
    let creator = stack.client().await;
    // A new keyring needs a data key from KMS: refused as unavailable, nothing stored.
    match creator
        .create_keyring(vec![stack.admin_key().public()], 1)
        .await
    {
        Err(signer_client::Error::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
        other => panic!("a keyring needs KMS: {other:?}"),
    }

    // The enclave restarts during the outage: it cannot unwrap its keyring, so calls fail
    // with UNAVAILABLE until KMS is back.
    stack.kill_enclave();
    run.until_failed(u64::try_from(WORKERS).unwrap()).await;
    let restored = Instant::now();
    switch.up.store(true, Ordering::SeqCst);
    run.until_signed(200).await;
    let tally = run.finish(false).await;
    let resumed = first_after(&tally, restored).expect("signing resumed");
    eprintln!(
        "KMS outage under load ({WORKERS} workers): {} signatures, wrong {}, errors {:?}, \
         first signature {} ms after KMS returned",
        tally.signed,
        tally.wrong,
        tally.errors,
        resumed.as_millis()
    );
    tally.no_wrong_and_only_unavailable();
    all_present(&stack, &keys).await;
    assert!(
        creator
            .create_keyring(vec![stack.admin_key().public()], 1)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_frozen_under_load_fails_calls_cleanly_and_resumes_when_thawed() {
    let stack = Stack::start("k256").await;
    let keys = keys(&stack).await;
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;
    let frozen = Instant::now();
    stack.signal_enclave("STOP");
    // The host's status probe goes unanswered: it stops serving (a fleet passes over it) and
    // refuses calls at once; calls in flight get UNAVAILABLE before their deadline.
    not_serving(&stack).await;
    let noticed = frozen.elapsed();
    run.until_failed(u64::try_from(WORKERS).unwrap()).await;
    let failing = frozen.elapsed();
    let thawed = Instant::now();
    stack.signal_enclave("CONT");
    run.until_signed(200).await;
    let tally = run.finish(false).await;
    let resumed = first_after(&tally, thawed).expect("signing resumed");
    eprintln!(
        "enclave frozen (SIGSTOP) under load ({WORKERS} workers) for {} ms: NOT_SERVING after \
         {} ms, {WORKERS} calls failed (SDK retries spent) after {} ms; {} signatures, wrong {}, \
         errors {:?}, first signature {} ms after SIGCONT",
        thawed.duration_since(frozen).as_millis(),
        noticed.as_millis(),
        failing.as_millis(),
        tally.signed,
        tally.wrong,
        tally.errors,
        resumed.as_millis()
    );
    tally.no_wrong_and_only_unavailable();
    all_present(&stack, &keys).await;
}

/// Waits until the host's health says NOT_SERVING.
async fn not_serving(stack: &Stack) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = signer_proto::transport::dial(&stack.address, Default::default()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        tests::wait_status_on(channel, ServingStatus::NotServing),
    )
    .await
    .expect("NOT_SERVING while the enclave is hung");
}
