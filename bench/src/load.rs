//! The OTLP/gRPC load generator.
//!
//! It opens one HTTP/2 connection per `connections` (each a separate tonic channel, so the
//! collector sees separate TCP connections, as from separate applications) and keeps
//! `in_flight` export requests outstanding on each. Closed-loop, a worker sends its next request
//! as soon as the previous one is acknowledged, so the rate is what the target sustains;
//! fixed-rate, workers take evenly spaced send slots from one shared schedule.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use http::uri::PathAndQuery;
use odigos_proto::Signal;
use odigos_proto::codec::RawCodec;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::request::{Payloads, SPANS_PER_REQUEST};

/// A request not answered within this long counts as failed, so a stuck target cannot hang a run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed request.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Distinct error messages kept for the report.
const MAX_ERRORS: usize = 5;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// For example `http://127.0.0.1:4317`.
    pub endpoint: String,
    pub connections: usize,
    /// Requests outstanding per connection.
    pub in_flight: usize,
    /// Spans per second over all connections; `None` sends as fast as the target acknowledges.
    pub rate: Option<f64>,
    pub duration: Duration,
}

/// Live counters, readable while a run is going on.
#[derive(Debug, Default)]
pub struct LoadStats {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeSet<String>>,
    /// How long each acknowledged request took, in µs.
    latencies: Mutex<Vec<u32>>,
}

impl LoadStats {
    /// Spans in requests handed to the connection.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Spans in requests the target answered with OK.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Spans in requests that failed or timed out.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first few distinct error messages.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The `q` quantile (0 to 1) of the latencies of acknowledged requests so far.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let mut latencies = self.latencies.lock().ok()?.clone();
        latencies.sort_unstable();
        let at = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies
            .get(at)
            .map(|&us| Duration::from_micros(u64::from(us)))
    }

    fn record_error(&self, spans: u64, message: String) {
        self.failed.fetch_add(spans, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < MAX_ERRORS
        {
            errors.insert(message);
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// Median and 99th percentile time from sending a request to its acknowledgement.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl LoadReport {
    pub fn acked_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spans sent {}, acknowledged {}, failed {} in {:.1} s: {:.0} spans/s acknowledged",
            self.sent,
            self.acked,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.acked_per_sec()
        )?;
        if let (Some(p50), Some(p99)) = (self.p50, self.p99) {
            write!(f, "; acknowledged in {p50:.1?} (p50), {p99:.1?} (p99)")?;
        }
        for error in &self.errors {
            write!(f, "\n  error: {error}")?;
        }
        Ok(())
    }
}

/// Evenly spaced send times shared by all workers.
struct Pacer {
    start: Instant,
    interval: Duration,
    next: AtomicU64,
}

impl Pacer {
    fn slot(&self) -> Instant {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.start + self.interval.mul_f64(n as f64)
    }
}

/// Opens the connections, sends load for `options.duration` and waits for the last answers.
pub async fn run(
    options: &LoadOptions,
    payloads: Arc<Payloads>,
    stats: Arc<LoadStats>,
) -> anyhow::Result<LoadReport> {
    let endpoint = Endpoint::from_shared(options.endpoint.clone())
        .with_context(|| format!("invalid endpoint {}", options.endpoint))?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(options.connections);
    for _ in 0..options.connections.max(1) {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connect to {}", options.endpoint))?;
        channels.push(channel);
    }

    let start = Instant::now();
    let deadline = start + options.duration;
    let pacer = options.rate.filter(|rate| *rate > 0.0).map(|rate| {
        Arc::new(Pacer {
            start,
            interval: Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / rate),
            next: AtomicU64::new(0),
        })
    });
    let before = (stats.sent(), stats.acked(), stats.failed());

    let mut workers = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..options.in_flight.max(1) {
            let worker = Worker {
                channel: channel.clone(),
                payloads: payloads.clone(),
                stats: stats.clone(),
                pacer: pacer.clone(),
                deadline,
            };
            workers.spawn(worker.run());
        }
    }
    while workers.join_next().await.is_some() {}

    Ok(LoadReport {
        sent: stats.sent() - before.0,
        acked: stats.acked() - before.1,
        failed: stats.failed() - before.2,
        errors: stats.errors(),
        elapsed: start.elapsed(),
        p50: stats.latency(0.5),
        p99: stats.latency(0.99),
    })
}

struct Worker {
    channel: Channel,
    payloads: Arc<Payloads>,
    stats: Arc<LoadStats>,
    pacer: Option<Arc<Pacer>>,
    deadline: Instant,
}

impl Worker {
    async fn run(self) {
        let mut grpc = tonic::client::Grpc::new(self.channel);
        let path = PathAndQuery::from_static(Signal::Traces.grpc_path());
        loop {
            if let Some(pacer) = &self.pacer {
                let slot = pacer.slot();
                if slot >= self.deadline {
                    break;
                }
                tokio::time::sleep_until(slot).await;
            } else if Instant::now() >= self.deadline {
                break;
            }
            let spans = SPANS_PER_REQUEST as u64;
            self.stats.sent.fetch_add(spans, Ordering::Relaxed);
            let sent_at = Instant::now();
            let export = async {
                grpc.ready()
                    .await
                    .map_err(|err| format!("connection: {err}"))?;
                let request = tonic::Request::new(self.payloads.next());
                grpc.unary(request, path.clone(), RawCodec)
                    .await
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            };
            let failure = match tokio::time::timeout(REQUEST_TIMEOUT, export).await {
                Ok(Ok(_)) => {
                    self.stats.acked.fetch_add(spans, Ordering::Relaxed);
                    let took = sent_at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    if let Ok(mut latencies) = self.stats.latencies.lock() {
                        latencies.push(took);
                    }
                    continue;
                }
                Ok(Err(message)) => message,
                Err(_) => "request timed out".to_owned(),
            };
            self.stats.record_error(spans, failure);
            // A target that fails fast would otherwise turn the loop into a busy spin.
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}
