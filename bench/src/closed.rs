//! Closed-loop load: `concurrency` tasks each send their share of requests one after another,
//! every request's latency recorded; rows measured in interleaved rounds, the median kept.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// One measured row.
#[derive(Debug)]
pub struct Run {
    /// Per-request latency, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Wall time of the measured requests.
    pub elapsed: Duration,
    /// Requests measured.
    pub requests: usize,
    /// Enclave CPU seconds spent over them.
    pub enclave_cpu: f64,
}

impl Run {
    /// Requests a second.
    pub fn throughput(&self) -> f64 {
        f64::from(u32::try_from(self.requests).unwrap_or(u32::MAX)) / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q`, in microseconds.
    pub fn p(&self, q: f64) -> f64 {
        let nanos = self.latency.value_at_quantile(q);
        f64::from(u32::try_from(nanos / 100).unwrap_or(u32::MAX)) / 10.0
    }

    /// Enclave CPU microseconds per request.
    pub fn cpu_us(&self) -> f64 {
        self.enclave_cpu * 1e6 / f64::from(u32::try_from(self.requests).unwrap_or(u32::MAX))
    }
}

/// Sends `requests` (rounded up to a multiple of `concurrency`) calls of `one(sequence)`, where
/// `sequence` is unique across tasks, from `concurrency` tasks; returns the latencies, the wall
/// time and the number of requests sent.
///
/// # Panics
/// If a task panics (a failed call).
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    requests: usize,
    one: F,
) -> (Histogram<u64>, Duration, usize)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let concurrency = concurrency.max(1);
    let per_task = requests.div_ceil(concurrency).max(1);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..concurrency {
        let one = one.clone();
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("3 significant figures qed");
            for i in 0..per_task {
                let t = Instant::now();
                one(task * per_task + i).await;
                hist.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
                    .expect("in range");
            }
            hist
        });
    }
    let mut all = Histogram::<u64>::new(3).expect("3 significant figures qed");
    while let Some(hist) = tasks.join_next().await {
        all.add(hist.expect("task")).expect("same bounds");
    }
    (all, start.elapsed(), per_task * concurrency)
}

/// Measures every row in `rounds` interleaved rounds, each starting with the next row
/// ([`crate::rotation`]; each: `load(row, warmup)` unmeasured, then `load(row, measured)` with
/// the enclave's CPU read around it) and returns each row's median-throughput round, in the
/// rows' order.
pub async fn interleaved<R, F, Fut>(
    rows: &[R],
    rounds: usize,
    enclave: u32,
    (warmup, measured): (usize, usize),
    mut load: F,
) -> Vec<Run>
where
    F: FnMut(&R, usize) -> Fut,
    Fut: Future<Output = (Histogram<u64>, Duration, usize)>,
{
    let mut all: Vec<Vec<Run>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds.max(1) {
        for slot in crate::rotation(rows.len(), round) {
            let row = &rows[slot];
            load(row, warmup).await;
            let cpu = crate::cpu_seconds(enclave);
            let (latency, elapsed, requests) = load(row, measured).await;
            all[slot].push(Run {
                latency,
                elapsed,
                requests,
                enclave_cpu: crate::cpu_seconds(enclave) - cpu,
            });
        }
    }
    all.into_iter().map(median).collect()
}

/// The round with the median throughput.
///
/// # Panics
/// On no rounds.
pub fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
    runs.swap_remove(runs.len() / 2)
}
