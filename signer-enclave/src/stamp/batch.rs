//! Ed25519 stamps of concurrent requests verified together.
//!
//! One Ed25519 verification costs ≈ 41 µs on the benchmark machine; `ed25519-dalek`'s batch
//! verification checks 8 or more signatures for ≈ 0.43× that each (bench/RESULTS.md). The
//! enclave counts the requests it is serving ([`StampBatcher::arrival`]) and calls itself busy
//! while two or more overlap, and for [`BUSY`] after. An idle enclave verifies a request's stamps
//! inline, as it always did: a lone caller pays nothing for batching. A busy one queues them and
//! yields once: the runtime defers the request until the worker has run the tasks that are ready
//! (or every 61 tasks), so the requests already received queue their stamps too. The first
//! request to resume takes the queue, verifies it at once and answers each request; the others
//! find their answer waiting. (Busy lasts beyond the overlap because a worker that runs ready
//! requests one after the other sees one at a time: without the memory, each would verify alone.)
//!
//! Outcomes: a batch that verifies accepts every stamp in it; one that does not is verified again
//! stamp by stamp, strictly, so a bad stamp refuses only its own request. The batch equation is
//! cofactorless and its coefficients are derived from every input (`ed25519-dalek`'s Merlin
//! transcript), so a stamp accepted inside a batch satisfies the verification equation up to a
//! small-order component with overwhelming probability; only the holder of the API key can make
//! one that a strict check would refuse (a small-order `R`, or torsion added on purpose), and the
//! key's holder could sign the body anyway. Nobody else can change what a batch accepts.
//! A client whose stamps fail makes its batch be checked twice (batch, then one by one): at most
//! ≈ 1.4× the cost of verifying each stamp alone. The status counts such batches. (Verifying a
//! key alone for a while after its stamp failed would not help: anyone can send a bad stamp
//! under a busy approver's public key, so one request every while would take that approver's
//! requests out of every batch, at 2.4× their batched cost.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::oneshot;

/// Requests verified in one batch at most; a longer queue is verified in several.
const MAX_REQUESTS: usize = 64;

/// How long the enclave stays busy after requests last overlapped: ≈ 30 requests' time at the
/// throughput of two cores, and 8 of a lone caller's (which never overlap).
pub(crate) const BUSY: Duration = Duration::from_millis(5);

/// One request's Ed25519 stamps: every one is over the same message.
struct Job {
    message: Vec<u8>,
    stamps: Vec<(VerifyingKey, Signature)>,
    answer: oneshot::Sender<bool>,
}

/// The enclave's Ed25519 stamp verifier, shared by every request.
pub(crate) struct StampBatcher {
    /// Requests waiting. A request whose client goes away leaves its job here; the next
    /// request verifies it with the rest, and the answer goes nowhere.
    queue: Mutex<Vec<Job>>,
    /// Requests the enclave is serving (see [`Arrival`]).
    in_flight: Arc<AtomicUsize>,
    /// Until when the enclave counts as busy, µs after `start`.
    busy_until: AtomicU64,
    start: Instant,
    batches: AtomicU64,
    batched: AtomicU64,
    failed: AtomicU64,
}

/// What the batcher has done since start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BatchStats {
    /// Batch verifications of two or more requests.
    pub batches: u64,
    /// Requests whose stamps were verified in those batches.
    pub requests: u64,
    /// Batches that did not verify, so were verified again stamp by stamp.
    pub failed: u64,
}

/// One request being served, counted from its arrival until it is answered (dropped).
#[derive(Debug)]
pub(crate) struct Arrival(Arc<AtomicUsize>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for StampBatcher {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            in_flight: Arc::default(),
            busy_until: AtomicU64::new(0),
            start: Instant::now(),
            batches: AtomicU64::new(0),
            batched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl StampBatcher {
    /// Counts a request as being served until the returned guard drops: taken when a stamped
    /// call starts, and for a streamed item when it is received, before its task first runs.
    pub(crate) fn arrival(&self) -> Arrival {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Arrival(Arc::clone(&self.in_flight))
    }

    /// Whether every stamp in `stamps` is a valid Ed25519 signature over `message` by its key:
    /// verified inline when the enclave is idle, else together with the stamps of the requests
    /// that are ready at the same time.
    pub(crate) async fn verify(
        &self,
        message: Vec<u8>,
        stamps: Vec<(VerifyingKey, Signature)>,
    ) -> bool {
        if !self.busy() {
            // Idle: any job still queued is a dropped request's (a live one would make the
            // enclave busy); answer it now rather than keep its message until the next burst.
            let stale = std::mem::take(&mut *self.jobs());
            self.flush(stale);
            return verify_each(&message, &stamps);
        }
        let (answer, answered) = oneshot::channel();
        self.jobs().push(Job {
            message,
            stamps,
            answer,
        });
        tokio::task::yield_now().await;
        // Nothing awaits between taking the queue and answering it: the flush cannot be
        // cancelled half-way, so every job taken is answered.
        let jobs = std::mem::take(&mut *self.jobs());
        self.flush(jobs);
        // A sender dropped unanswered would mean a panic in the flush: refused.
        answered.await.unwrap_or(false)
    }

    /// Whether requests overlap now or did within [`BUSY`].
    fn busy(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        if self.in_flight.load(Ordering::Acquire) > 1 {
            let until = u64::try_from(BUSY.as_micros()).unwrap_or(u64::MAX);
            self.busy_until
                .store(now.saturating_add(until), Ordering::Release);
            return true;
        }
        now < self.busy_until.load(Ordering::Acquire)
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts since start-up.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.batched.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Answers every job, in batches of at most [`MAX_REQUESTS`].
    fn flush(&self, jobs: Vec<Job>) {
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<Job> = jobs.by_ref().take(MAX_REQUESTS).collect();
            let verdicts = self.verify_together(&chunk);
            for (job, valid) in chunk.into_iter().zip(verdicts) {
                // The request may have been dropped (its client went away): nothing to answer.
                let _ = job.answer.send(valid);
            }
        }
    }

    /// One verdict per job: all true when the batch verifies, else each job checked alone.
    fn verify_together(&self, jobs: &[Job]) -> Vec<bool> {
        if jobs.len() > 1 {
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.batched.fetch_add(
                u64::try_from(jobs.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let mut messages = Vec::new();
            let mut signatures = Vec::new();
            let mut keys = Vec::new();
            for job in jobs {
                for (key, signature) in &job.stamps {
                    messages.push(job.message.as_slice());
                    signatures.push(*signature);
                    keys.push(*key);
                }
            }
            if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
                return vec![true; jobs.len()];
            }
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        jobs.iter()
            .map(|job| verify_each(&job.message, &job.stamps))
            .collect()
    }
}

/// Strict verification of every stamp (canonical `S`, no small-order `R` or key), each one even
/// after one fails, so the time taken does not say which failed.
pub(super) fn verify_each(message: &[u8], stamps: &[(VerifyingKey, Signature)]) -> bool {
    stamps.iter().fold(true, |valid, (key, signature)| {
        key.verify_strict(message, signature).is_ok() & valid
    })
}

#[cfg(test)]
mod tests;
