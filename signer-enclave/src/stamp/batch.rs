//! Ed25519 stamps of concurrent requests verified together.
//!
//! One Ed25519 verification costs ≈ 41 µs on the benchmark machine; `ed25519-dalek`'s batch
//! verification checks 8 or more signatures for ≈ 0.43× that each (bench/RESULTS.md). A request
//! queues its stamps and yields once: the runtime defers it until the worker has run the tasks
//! that are ready (or every 61 tasks), so every request already received queues its stamps too.
//! The first request to resume takes the queue, verifies it at once and answers each request;
//! the others find their answer waiting. A lone request takes only its own stamps, verified
//! alone as before, after the yield (a few µs).
//!
//! Outcomes: a batch that verifies accepts every stamp in it; one that does not is verified again
//! stamp by stamp, strictly, so a bad stamp refuses only its own request. The batch equation is
//! cofactorless and its coefficients are derived from every input (`ed25519-dalek`'s Merlin
//! transcript), so a stamp accepted inside a batch satisfies the verification equation up to a
//! small-order component with overwhelming probability; only the holder of the API key can make
//! one that a strict check would refuse (a small-order `R`, or torsion added on purpose), and the
//! key's holder could sign the body anyway. Nobody else can change what a batch accepts.
//! A client whose stamps fail makes its batch be checked twice (batch, then one by one): at most
//! ≈ 1.4× the cost of verifying each stamp alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::oneshot;

/// Requests verified in one batch at most; a longer queue is verified in several.
const MAX_REQUESTS: usize = 64;

/// One request's Ed25519 stamps: every one is over the same message.
struct Job {
    message: Vec<u8>,
    stamps: Vec<(VerifyingKey, Signature)>,
    answer: oneshot::Sender<bool>,
}

/// The enclave's Ed25519 stamp verifier, shared by every request.
#[derive(Default)]
pub(crate) struct StampBatcher {
    /// Requests waiting. A request whose client goes away leaves its job here; the next
    /// request to resume verifies it with the rest, and the answer goes nowhere.
    queue: Mutex<Vec<Job>>,
    batches: AtomicU64,
    batched: AtomicU64,
}

/// What the batcher has done since start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BatchStats {
    /// Batch verifications of two or more requests.
    pub batches: u64,
    /// Requests whose stamps were verified in those batches.
    pub requests: u64,
}

impl StampBatcher {
    /// Whether every stamp in `stamps` is a valid Ed25519 signature over `message` by its key,
    /// verified together with the stamps of the requests that are ready at the same time.
    pub(crate) async fn verify(
        &self,
        message: Vec<u8>,
        stamps: Vec<(VerifyingKey, Signature)>,
    ) -> bool {
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

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts since start-up.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.batched.load(Ordering::Relaxed),
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
        }
        jobs.iter()
            .map(|job| verify_each(&job.message, &job.stamps))
            .collect()
    }
}

/// Strict verification of every stamp (canonical `S`, no small-order `R` or key), each one even
/// after one fails, so the time taken does not say which failed.
fn verify_each(message: &[u8], stamps: &[(VerifyingKey, Signature)]) -> bool {
    stamps.iter().fold(true, |valid, (key, signature)| {
        key.verify_strict(message, signature).is_ok() & valid
    })
}

#[cfg(test)]
mod tests;
