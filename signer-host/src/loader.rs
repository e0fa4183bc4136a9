//! Keeps the enclave loaded: probes its status, and whenever it is awaiting keyrings (first
//! start, or a restart that wiped its RAM) sends every keyring and sealed record, then tells it to
//! start. The health service reports SERVING only while the enclave is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signer_proto::pb;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use signer_proto::pb::signer_service_server::SignerServiceServer;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;
use crate::attested::{Attested, Expectation};
use crate::audit;
use crate::follow::{Followed, follow};
use crate::metrics::{Metrics, Phase};
use crate::relay::Relay;
use crate::shutdown::stopped;
use crate::store::KeyStore;
use crate::store::blocking;

/// Longest wait between two failed loads.
const MAX_LOAD_BACKOFF: Duration = Duration::from_secs(30);
/// How the loader probes the enclave's status.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Between two probes (a restart is noticed this fast), and between loads.
    pub interval: Duration,
    /// A probe unanswered this long finds the enclave hung: not serving, and client calls
    /// refused at once until it answers again (an enclave answers its status in microseconds;
    /// the margin is for an enclave saturated with work, which is slow, not hung).
    pub timeout: Duration,
}

/// Records sent to the enclave per store page.
const LOAD_PAGE: usize = 2_000;

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keyrings opened.
    pub keyrings: usize,
    /// Their ids.
    pub keyring_ids: Vec<String>,
    /// Records loaded.
    pub loaded: u64,
    /// Records the enclave refused, with its generic reason.
    pub rejected: Vec<(String, String)>,
    /// Time spent opening (or creating) keyrings, through the key-wrapping provider.
    pub keyrings_time: Duration,
    /// Time from the keyrings being open to the enclave being ready: streaming and loading the
    /// sealed records, and finishing the load.
    pub records_time: Duration,
}

/// The health service name that reports the host's own attestation check of its enclave:
/// UNKNOWN until the first check, then SERVING while a verified document is fresh, NOT_SERVING
/// when refused or stale. Only with an `[attestation]` expectation.
pub const ATTESTATION_SERVICE: &str = "signer.v1.EnclaveAttestation";

/// Who hears what the loader finds, and what it checks the enclave against.
pub struct Observers {
    /// SERVING exactly while the enclave is ready (and, with an expectation, freshly attested).
    pub health: HealthReporter,
    /// Phase, counts, boots, loads and attestations.
    pub metrics: Arc<Metrics>,
    /// What the enclave must attest to; `None`: health follows readiness only.
    pub attestation: Option<Expectation>,
    /// Set while the enclave leaves its status probe unanswered (frozen, or its link stalled).
    pub hung: Arc<AtomicBool>,
}

/// Probes and loads until `shutdown` turns true.
pub async fn watch_enclave(
    enclave: EnclaveServiceClient<Channel>,
    store: Arc<dyn KeyStore>,
    observers: Observers,
    probe: Probe,
    wake: Arc<Notify>,
    credentials: Credentials,
    mut shutdown: watch::Receiver<bool>,
) {
    let Observers {
        health,
        metrics,
        attestation,
        hung,
    } = observers;
    let Probe { interval, timeout } = probe;
    if attestation.is_none() {
        tracing::warn!(
            "no [attestation] expectation: health does not check what the enclave attests to"
        );
    }
    let mut attested = Attested::default();
    let mut last_refusal: Option<String> = None;
    let mut serving = None;
    let mut boot_seen: Option<Vec<u8>> = None;
    let mut followed: Option<Followed> = None;
    let mut collected = audit::Collected::default();
    // After a failed load (KMS unreachable or refusing), wait longer each time, up to
    // MAX_LOAD_BACKOFF; a success or an enclave restart resets it.
    let mut backoff = interval;
    loop {
        let mut load_failed = false;
        let answer =
            match tokio::time::timeout(timeout, enclave.clone().status(pb::StatusRequest {})).await
            {
                Ok(answer) => {
                    hung.store(false, Ordering::Relaxed);
                    answer.map(tonic::Response::into_inner)
                }
                Err(_) => {
                    hung.store(true, Ordering::Relaxed);
                    Err(tonic::Status::deadline_exceeded(
                        "no answer to the status probe: the enclave is hung",
                    ))
                }
            };
        let boot_id = answer.as_ref().map_or(Vec::new(), |s| s.boot_id.clone());
        match &answer {
            Ok(status) => {
                if boot_seen.as_ref() != Some(&status.boot_id) {
                    boot_seen = Some(status.boot_id.clone());
                    metrics.enclave_booted();
                }
                let phase = match status.phase() {
                    pb::Phase::AwaitingKeyrings => Phase::AwaitingKeyrings,
                    pb::Phase::Ready => Phase::Ready,
                    _ => Phase::Unrecoverable,
                };
                metrics.enclave_status(phase, Some(status));
            }
            Err(_) => metrics.enclave_status(Phase::Unreachable, None),
        }
        let ready = match answer {
            Ok(status) if status.phase() == pb::Phase::AwaitingKeyrings => {
                set_health(&health, &mut serving, false).await;
                let started = Instant::now();
                // Changes after this revision reach the enclave by following, once it is ready.
                let revision = blocking({
                    let store = Arc::clone(&store);
                    move || store.revision()
                })
                .await;
                let loaded = match revision {
                    Ok(revision) => load(&enclave, Arc::clone(&store), &credentials)
                        .await
                        .map(|report| (revision, report)),
                    Err(error) => Err(error),
                };
                match loaded {
                    Ok((revision, report)) => {
                        followed = Some(Followed::loaded(
                            status.boot_id.clone(),
                            revision,
                            report.keyring_ids.iter().cloned().collect(),
                        ));
                        metrics.enclave_loaded(Some((
                            report.keyrings_time.as_secs_f64(),
                            report.records_time.as_secs_f64(),
                        )));
                        // Ready now, with what it loaded, not only at the next poll.
                        metrics.enclave_status(Phase::Ready, None);
                        metrics.enclave_counts(report.loaded, report.keyrings);
                        tracing::info!(
                            keyrings = report.keyrings,
                            loaded = report.loaded,
                            rejected = report.rejected.len(),
                            keyrings_ms = report.keyrings_time.as_millis(),
                            records_ms = report.records_time.as_millis(),
                            elapsed_ms = started.elapsed().as_millis(),
                            backend = status.backend,
                            provider = status.provider,
                            "enclave loaded and ready"
                        );
                        true
                    }
                    Err(error) => {
                        metrics.enclave_loaded(None);
                        tracing::error!(%error, retry_in_ms = backoff.as_millis(), "loading the enclave failed; will retry");
                        load_failed = true;
                        false
                    }
                }
            }
            Ok(status) if status.phase() == pb::Phase::Ready => {
                let state = match followed.take() {
                    Some(state) if state.is_for(&status.boot_id) => state,
                    _ => Followed::unknown(status.boot_id.clone()),
                };
                let state = followed.insert(state);
                if let Err(error) =
                    audit::collect(&enclave, &store, &mut collected, &status.boot_id).await
                {
                    tracing::warn!(%error, "collecting the audit trail failed; will retry");
                }
                match follow(&enclave, &store, state).await {
                    Ok(brought)
                        if brought.keyrings + brought.rejected > 0
                            || brought.added + brought.updated > 0 =>
                    {
                        metrics.followed(brought.added, brought.updated);
                        tracing::info!(
                            keyrings = brought.keyrings,
                            added = brought.added,
                            updated = brought.updated,
                            rejected = brought.rejected,
                            "brought the enclave up to date with the store"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "following the store failed; will retry"),
                }
                true
            }
            Ok(status) => {
                tracing::error!(phase = ?status.phase(), "enclave is not usable; restart it");
                false
            }
            Err(error) => {
                if serving != Some(false) {
                    tracing::warn!(code = ?error.code(), detail = error.message(), "enclave unreachable");
                }
                false
            }
        };
        let ready = match (&attestation, ready) {
            (Some(expectation), true) => {
                if attested.due(&boot_id, expectation.max_age) {
                    let outcome = attested.check(&enclave, expectation, &boot_id).await;
                    metrics.enclave_attested(outcome.is_ok());
                    match outcome {
                        Ok(document) => {
                            // Vouches for the boot's audit signing key in `audit verify`.
                            let (store, boot) = (Arc::clone(&store), boot_id.clone());
                            if let Err(error) =
                                blocking(move || store.put_audit_boot(&boot, &document)).await
                            {
                                tracing::warn!(%error, "could not store the boot's attestation document");
                            }
                            if last_refusal.take().is_some() || serving != Some(true) {
                                tracing::info!("enclave attestation verified");
                            }
                            health
                                .set_service_status(ATTESTATION_SERVICE, ServingStatus::Serving)
                                .await;
                        }
                        Err(why) => {
                            if last_refusal.as_ref() != Some(&why) {
                                tracing::error!(%why, "enclave attestation refused: not serving");
                            }
                            last_refusal = Some(why);
                        }
                    }
                }
                let fresh = attested.fresh(&boot_id, expectation.max_age);
                if !fresh {
                    health
                        .set_service_status(ATTESTATION_SERVICE, ServingStatus::NotServing)
                        .await;
                }
                fresh
            }
            (_, ready) => ready,
        };
        set_health(&health, &mut serving, ready).await;
        let wait = if load_failed { backoff } else { interval };
        backoff = if load_failed {
            (backoff * 2).min(MAX_LOAD_BACKOFF)
        } else {
            interval
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            () = stopped(&mut shutdown) => return,
        }
    }
}

async fn set_health(health: &HealthReporter, current: &mut Option<bool>, serving: bool) {
    if *current == Some(serving) {
        return;
    }
    *current = Some(serving);
    if serving {
        health.set_serving::<SignerServiceServer<Relay>>().await;
        health.set_service_status("", ServingStatus::Serving).await;
    } else {
        health.set_not_serving::<SignerServiceServer<Relay>>().await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

/// Whether the enclave needs AWS credentials, and the current ones.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The enclave uses the local provider.
    NotNeeded,
    /// The enclave uses KMS; the refresher publishes credentials here.
    Required(watch::Receiver<Option<pb::AwsCredentials>>),
}

/// One full load: keyrings, records, finish.
///
/// # Errors
/// Store or enclave failures; the caller retries on the next probe.
pub async fn load(
    enclave: &EnclaveServiceClient<Channel>,
    store: Arc<dyn KeyStore>,
    credentials: &Credentials,
) -> Result<LoadReport, Error> {
    let mut enclave = enclave.clone();
    // The KMS provider signs its requests with the instance's credentials; a newly started
    // enclave has none, so it gets the current ones before it needs them.
    if let Credentials::Required(current) = credentials {
        let current = current
            .borrow()
            .clone()
            .ok_or(Error::Credentials("waiting for AWS credentials"))?;
        enclave.set_credentials(current).await.map_err(Box::new)?;
    }
    let started = Instant::now();
    let keyrings = blocking({
        let store = Arc::clone(&store);
        move || store.keyrings()
    })
    .await?;
    // A new deployment has none: its admins create the first with a stamped `CreateKeyring`
    // (the host cannot choose a keyring's admins, so it does not create keyrings itself).
    for keyring in &keyrings {
        enclave
            .load_keyring(pb::LoadKeyringRequest::from(keyring))
            .await
            .map_err(Box::new)?;
    }
    let keyrings_time = started.elapsed();
    let started = Instant::now();

    let audit_store = Arc::clone(&store);
    // Stream the records page by page from a blocking reader; memory stays bounded.
    let (tx, rx) = mpsc::channel::<pb::SealedKey>(LOAD_PAGE);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let mut after = 0;
        loop {
            let page = store.keys_after(after, LOAD_PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = *last;
            for (_, key) in page {
                if tx.blocking_send(pb::SealedKey::from(key)).is_err() {
                    return Ok(()); // the enclave call ended; its error is reported below
                }
            }
        }
    });
    let result = enclave
        .load_keys(ReceiverStream::new(rx))
        .await
        .map_err(Box::new);
    reader
        .await
        .map_err(|_| Error::Io(std::io::Error::other("store reader failed")))??;
    let result = result?.into_inner();
    for rejected in &result.rejected {
        tracing::error!(key_id = %rejected.key_id, reason = %rejected.reason, "the enclave refused a stored key; it cannot sign until restored from backup");
    }
    // The new boot's first audit entry links to the last one stored from an earlier boot.
    let previous = blocking(move || audit_store.last_audit()).await?;
    let previous_audit_hash = previous
        .map(|entry| signer_proto::canonical::audit_entry_hash(&entry.entry).to_vec())
        .unwrap_or_default();
    enclave
        .finish_loading(pb::FinishLoadingRequest {
            previous_audit_hash,
        })
        .await
        .map_err(Box::new)?;
    let records_time = started.elapsed();
    Ok(LoadReport {
        keyrings_time,
        records_time,
        keyrings: keyrings.len(),
        keyring_ids: keyrings.into_iter().map(|k| k.keyring_id).collect(),
        loaded: result.loaded,
        rejected: result
            .rejected
            .into_iter()
            .map(|r| (r.key_id, r.reason))
            .collect(),
    })
}
