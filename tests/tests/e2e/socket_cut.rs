//! The host's socket to the enclave cut mid-stream, under load: the enclave binary is a relay
//! (`enclave-cut-relay`) in front of the real enclave that severs every connection on SIGUSR1,
//! while workers sign with unary calls and one `SignStream` is in full flow. The enclave itself
//! keeps running (same process, same keys): the host reconnects, nothing is reloaded.
//! Reported (stderr, `--nocapture`): signatures, errors by code, wrong signatures (must be 0),
//! the stream's fate, and the longest gap between signatures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signer_client::{Client, Error};
use tests::{Stack, StackOptions};

use super::faults::{all_present, keys, recovery, start_load};
use super::kms::pcr0_of;

/// What happened to the stream: signatures answered, item errors and the stream's own end.
#[derive(Debug, Default)]
struct StreamFate {
    signed: u64,
    item_errors: BTreeMap<String, u64>,
    ended: Option<String>,
}

fn class(error: &Error) -> String {
    error
        .code()
        .map_or_else(|| format!("client: {error}"), |c| format!("{c:?}"))
}

/// Keeps 16 items in flight on one stream until `stop` or the stream fails.
async fn stream_load(client: Client, key_id: String, stop: Arc<AtomicBool>) -> StreamFate {
    let mut fate = StreamFate::default();
    let mut stream = match client.sign_stream().await {
        Ok(stream) => stream,
        Err(error) => {
            fate.ended = Some(class(&error));
            return fate;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        while stream.in_flight() < 16 {
            let mut digest = [0u8; 32];
            getrandom::fill(&mut digest).unwrap();
            if let Err(error) = stream.submit_digest(&key_id, digest).await {
                fate.ended = Some(class(&error));
                return fate;
            }
        }
        match stream.next().await {
            Some(Ok((_, Ok(_)))) => fate.signed += 1,
            Some(Ok((_, Err(error)))) => *fate.item_errors.entry(class(&error)).or_default() += 1,
            Some(Err(error)) => {
                fate.ended = Some(class(&error));
                return fate;
            }
            None => {
                fate.ended = Some("closed".into());
                return fate;
            }
        }
    }
    fate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_socket_cut_under_load_loses_nothing_and_resumes_without_a_restart() {
    // The host and the SDK expect the real enclave's measurement, not the relay's.
    let real = tests::bin_dir().join("signer-enclave");
    let options = StackOptions {
        enclave_binary: Some(tests::bin_dir().join("enclave-cut-relay")),
        expected_pcr0: Some(pcr0_of(&real)),
        ..StackOptions::default()
    };
    let mut stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    stack.enclave_binary = real;
    let keys = keys(&stack).await;
    let relay = stack.enclave_pid().expect("the host runs the relay");
    let enclave = tests::child_of(relay).expect("the relay runs the enclave");

    let stop_stream = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(stream_load(
        stack.client().await,
        keys[0].key_id.clone(),
        Arc::clone(&stop_stream),
    ));
    let run = start_load(&stack, &keys).await;
    run.until_signed(200).await;
    let fault = Instant::now();
    stack.signal_enclave("USR1");
    run.until_signed(200).await;
    stop_stream.store(true, Ordering::Relaxed);
    let tally = run.finish(false).await;
    let fate = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .expect("the stream ends: no hang")
        .unwrap();
    let gap = recovery(&tally, fault).expect("signing resumed");
    eprintln!(
        "enclave socket cut under load (4 workers + 1 stream): {} signatures, wrong {}, errors \
         {:?}; stream: {} signed, item errors {:?}, ended {:?}; longest gap between signatures \
         {} ms",
        tally.signed,
        tally.wrong,
        tally.errors,
        fate.signed,
        fate.item_errors,
        fate.ended,
        gap.as_millis()
    );
    tally.no_wrong_and_only_unavailable();
    // The stream was in full flow when its connection was cut: it ends, cleanly, UNAVAILABLE
    // (the SDK's cue to open another), rather than hanging or failing otherwise.
    assert_eq!(fate.ended.as_deref(), Some("Unavailable"), "{fate:?}");
    // The SDK verifies every stream answer: a wrong one would be a verification error.
    assert!(
        !fate.item_errors.keys().any(|c| c.starts_with("client")),
        "{fate:?}"
    );
    // The same enclave process, never restarted, still holds every key.
    assert_eq!(stack.enclave_pid(), Some(relay));
    assert_eq!(tests::child_of(relay), Some(enclave));
    all_present(&stack, &keys).await;
    // The cut was real: the relay logged it.
    assert!(stack.log().contains("cut every connection"));
}
