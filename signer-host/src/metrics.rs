//! Prometheus metrics of the host, served as text on their own listener (`[metrics] listen`):
//! calls by method and gRPC status, their latency (the whole call, and the enclave round trip
//! within it), calls in flight, the enclave's lifecycle as the loader sees it (phase, keys and
//! keyrings loaded, boots, loads and how long they took, KMS unwraps this boot, records followed
//! from a shared store). Labels are drawn
//! from fixed sets — method names, status codes, outcomes — never a key id, an API key or a
//! request's content.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use signer_proto::pb;
use tonic::Code;

use crate::Error;

/// The enclave's phase as a number: 0 unreachable, 1 awaiting keyrings, 2 ready,
/// 3 unrecoverable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No answer to `Status`.
    Unreachable,
    /// Started, waiting for its keyrings and keys.
    AwaitingKeyrings,
    /// Loaded and signing.
    Ready,
    /// Refuses to serve until restarted.
    Unrecoverable,
}

impl Phase {
    fn value(self) -> i64 {
        match self {
            Phase::Unreachable => 0,
            Phase::AwaitingKeyrings => 1,
            Phase::Ready => 2,
            Phase::Unrecoverable => 3,
        }
    }
}

/// Latency buckets, seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The host's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    enclave_latency: HistogramVec,
    in_flight: IntGauge,
    phase: IntGauge,
    keys: IntGauge,
    keys_checked: IntGauge,
    keyrings: IntGauge,
    provider_calls: IntGauge,
    stamp_batches: IntGauge,
    stamps_batched: IntGauge,
    stamp_batches_failed: IntGauge,
    boots: IntCounter,
    loads: IntCounterVec,
    load_seconds: HistogramVec,
    attestations: IntCounterVec,
    followed: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> Result<C, Error> {
    let collector = collector.map_err(|_| Error::ConfigInvalid("metric definition"))?;
    registry
        .register(Box::new(collector.clone()))
        .map_err(|_| Error::ConfigInvalid("metric registration"))?;
    Ok(collector)
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] if a definition is refused (a programming error).
    pub fn new() -> Result<Arc<Self>, Error> {
        let registry = Registry::new();
        let r = &registry;
        let histogram =
            |name: &str, help: &str| HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
        Ok(Arc::new(Self {
            requests: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "signer_requests_total",
                        "Public API calls answered, by method and gRPC status code.",
                    ),
                    &["method", "code"],
                ),
            )?,
            latency: registered(
                r,
                HistogramVec::new(
                    histogram(
                        "signer_request_seconds",
                        "Public API call latency in the host, whole call.",
                    ),
                    &["method"],
                ),
            )?,
            enclave_latency: registered(
                r,
                HistogramVec::new(
                    histogram(
                        "signer_enclave_call_seconds",
                        "Enclave round trip within a public API call.",
                    ),
                    &["method"],
                ),
            )?,
            in_flight: registered(
                r,
                IntGauge::new(
                    "signer_requests_in_flight",
                    "Public API calls being served.",
                ),
            )?,
            phase: registered(
                r,
                IntGauge::new(
                    "signer_enclave_phase",
                    "The enclave's phase: 0 unreachable, 1 awaiting keyrings, 2 ready, 3 unrecoverable.",
                ),
            )?,
            keys: registered(
                r,
                IntGauge::new(
                    "signer_enclave_keys",
                    "Wallet keys in the enclave, as of the last load or status poll.",
                ),
            )?,
            keys_checked: registered(
                r,
                IntGauge::new(
                    "signer_enclave_keys_checked",
                    "Loaded wallet keys whose public key the enclave has re-derived and compared \
                     with the sealed record's (each is checked before its first use; the rest \
                     in the background after a load), as of the last status poll.",
                ),
            )?,
            keyrings: registered(
                r,
                IntGauge::new(
                    "signer_enclave_keyrings",
                    "Keyrings in the enclave, as of the last load or status poll.",
                ),
            )?,
            provider_calls: registered(
                r,
                IntGauge::new(
                    "signer_enclave_provider_calls",
                    "Key-wrapping provider (KMS) calls the enclave made since it booted.",
                ),
            )?,
            stamp_batches: registered(
                r,
                IntGauge::new(
                    "signer_enclave_stamp_batches",
                    "Batch verifications of Ed25519 stamps (two or more requests' at once) the \
                     enclave made since it booted, as of the last status poll.",
                ),
            )?,
            stamps_batched: registered(
                r,
                IntGauge::new(
                    "signer_enclave_stamps_batched",
                    "Requests whose stamps the enclave verified in those batches, as of the \
                     last status poll.",
                ),
            )?,
            stamp_batches_failed: registered(
                r,
                IntGauge::new(
                    "signer_enclave_stamp_batches_failed",
                    "Batches of stamps that did not verify (a bad stamp in them) and were \
                     verified again one by one, as of the last status poll.",
                ),
            )?,
            boots: registered(
                r,
                IntCounter::new(
                    "signer_enclave_boots_total",
                    "Enclave boots seen (a new boot id): starts and restarts.",
                ),
            )?,
            loads: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "signer_enclave_loads_total",
                        "Loads of the enclave, by outcome.",
                    ),
                    &["outcome"],
                ),
            )?,
            load_seconds: registered(
                r,
                HistogramVec::new(
                    histogram(
                        "signer_enclave_load_seconds",
                        "Load phases: keyrings (one KMS unwrap each) and records.",
                    ),
                    &["phase"],
                ),
            )?,
            attestations: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "signer_enclave_attestations_total",
                        "The host's attestation checks of its enclave, by outcome (verified, refused).",
                    ),
                    &["outcome"],
                ),
            )?,
            followed: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "signer_store_followed_records_total",
                        "Records another host wrote that this host brought to its ready enclave, by outcome (added, updated).",
                    ),
                    &["outcome"],
                ),
            )?,
            registry,
        }))
    }

    /// Serves `call` (the public API method `method`) counted, timed and in flight.
    pub async fn observe<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        // A guard, so a call the client abandons (its future dropped mid-await) still leaves.
        struct InFlight<'a>(&'a IntGauge);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.in_flight.inc();
        let in_flight = InFlight(&self.in_flight);
        let start = Instant::now();
        let result = call.await;
        drop(in_flight);
        self.latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        let code = result.as_ref().err().map_or(Code::Ok, tonic::Status::code);
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        result
    }

    /// Times the enclave round trip of `method`.
    pub async fn enclave<T>(&self, method: &'static str, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let result = call.await;
        self.enclave_latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// What the loader saw of the enclave: its phase, and (when it answered) its counts.
    pub fn enclave_status(&self, phase: Phase, status: Option<&pb::StatusResponse>) {
        self.phase.set(phase.value());
        if let Some(status) = status {
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.keys.set(gauge(status.keys));
            self.keys_checked.set(gauge(status.keys_checked));
            self.keyrings.set(i64::from(status.keyrings));
            self.provider_calls.set(gauge(status.provider_calls));
            self.stamp_batches.set(gauge(status.stamp_batches));
            self.stamps_batched.set(gauge(status.stamps_batched));
            self.stamp_batches_failed
                .set(gauge(status.stamp_batches_failed));
        }
    }

    /// What a load put in the enclave (the status poll refreshes it as keys are created).
    pub fn enclave_counts(&self, keys: u64, keyrings: usize) {
        self.keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.keyrings
            .set(i64::try_from(keyrings).unwrap_or(i64::MAX));
    }

    /// An attestation check of the enclave: verified or refused.
    pub fn enclave_attested(&self, verified: bool) {
        let outcome = if verified { "verified" } else { "refused" };
        self.attestations.with_label_values(&[outcome]).inc();
    }

    /// Keys added to, and policies moved in, the ready enclave from the shared store.
    pub fn followed(&self, added: u64, updated: u64) {
        self.followed.with_label_values(&["added"]).inc_by(added);
        self.followed
            .with_label_values(&["updated"])
            .inc_by(updated);
    }

    /// A boot the loader had not seen before.
    pub fn enclave_booted(&self) {
        self.boots.inc();
    }

    /// A load finished: `Some((keyrings, records))` durations in seconds, or `None` if it failed.
    pub fn enclave_loaded(&self, phases: Option<(f64, f64)>) {
        match phases {
            Some((keyrings, records)) => {
                self.loads.with_label_values(&["ok"]).inc();
                self.load_seconds
                    .with_label_values(&["keyrings"])
                    .observe(keyrings);
                self.load_seconds
                    .with_label_values(&["records"])
                    .observe(records);
            }
            None => self.loads.with_label_values(&["failed"]).inc(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only for an invalid metric, which `new` cannot make.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A status code's name, as a bounded label.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes; any other path is 404.
///
/// # Errors
/// The server's.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_count_by_method_and_code_and_render_as_text() {
        let metrics = Metrics::new().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            metrics
                .observe("Sign", async { Ok::<_, tonic::Status>(()) })
                .await
                .unwrap();
            let _ = metrics
                .observe("Sign", async {
                    Err::<(), _>(tonic::Status::permission_denied("no"))
                })
                .await;
        });
        // A call the client abandons mid-flight (its future dropped) is no longer in flight.
        let mut abandoned =
            Box::pin(metrics.observe("Sign", std::future::pending::<Result<(), tonic::Status>>()));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(abandoned.as_mut().poll(&mut context).is_pending());
        assert_eq!(metrics.in_flight.get(), 1);
        drop(abandoned);
        assert_eq!(metrics.in_flight.get(), 0);
        metrics.enclave_status(
            Phase::Ready,
            Some(&pb::StatusResponse {
                keys: 7,
                keys_checked: 5,
                keyrings: 2,
                provider_calls: 3,
                stamp_batches: 4,
                stamps_batched: 40,
                stamp_batches_failed: 1,
                ..pb::StatusResponse::default()
            }),
        );
        let text = metrics.render();
        for line in [
            r#"signer_requests_total{code="OK",method="Sign"} 1"#,
            r#"signer_requests_total{code="PERMISSION_DENIED",method="Sign"} 1"#,
            "signer_requests_in_flight 0",
            "signer_enclave_phase 2",
            "signer_enclave_keys 7",
            "signer_enclave_keys_checked 5",
            "signer_enclave_keyrings 2",
            "signer_enclave_provider_calls 3",
            "signer_enclave_stamp_batches 4",
            "signer_enclave_stamps_batched 40",
            "signer_enclave_stamp_batches_failed 1",
            r#"signer_request_seconds_count{method="Sign"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
