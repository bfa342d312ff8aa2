//! The sending queue and retry policy shared by network exporters.

mod disk;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::Signal;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::Batch;
use crate::config::ComponentId;
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::telemetry::{Counter, Gauge, HealthBoard};
use crate::topology::Context;
use disk::{DiskError, DiskQueue};
use tokio_util::sync::{CancellationToken, DropGuard};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Without a queue, each batch is sent before the previous stage gets an answer.
    pub enabled: bool,
    /// Batches sent concurrently.
    pub num_consumers: usize,
    /// Batches held in memory; when full, new data is refused so senders back off.
    pub queue_size: usize,
    /// `memory`: data is acknowledged upstream once delivered. `file`: once written to disk
    /// under `directory`, from where it is delivered, also after a crash or restart.
    pub storage: Storage,
    /// Where a `file` queue keeps its data; each exporter uses a folder named after its id.
    pub directory: Option<std::path::PathBuf>,
    /// Disk space a `file` queue may use, in MiB; when full, new data is refused.
    pub max_size_mib: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    Memory,
    File,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            storage: Storage::Memory,
            directory: None,
            max_size_mib: 1024,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> Vec<(Vec<String>, String)> {
        let at = |field: &str| vec!["sending_queue".to_string(), field.to_string()];
        let mut problems = Vec::new();
        if self.storage == Storage::File {
            if self.directory.is_none() {
                problems.push((at("directory"), "a file queue needs a directory".into()));
            }
            if !self.enabled {
                problems.push((at("enabled"), "a file queue cannot be disabled".into()));
            }
            if self.max_size_mib == 0 {
                problems.push((at("max_size_mib"), "must be greater than 0".into()));
            }
        }
        problems
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "crate::yaml::duration")]
    pub initial_interval: Duration,
    #[serde(with = "crate::yaml::duration")]
    pub max_interval: Duration,
    /// Give up on a batch after retrying this long (0: never give up).
    #[serde(with = "crate::yaml::duration")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.multiplier < 1.0 {
            problems.push((
                vec!["retry_on_failure".into(), "multiplier".into()],
                "must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            problems.push((
                vec!["retry_on_failure".into(), "randomization_factor".into()],
                "must be between 0 and 1".into(),
            ));
        }
        problems
    }

    /// The wait before retry number `attempt` (0-based), with jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_interval.as_secs_f64() * self.multiplier.powi(attempt as i32);
        let base = base.min(self.max_interval.as_secs_f64());
        let jitter = self.randomization_factor * base;
        let wait = rand::rng().random_range((base - jitter).max(0.0)..=(base + jitter));
        Duration::from_secs_f64(wait)
    }
}

/// What sending one batch can end in.
#[derive(Debug)]
pub enum SendError {
    /// Worth trying again, after `after` if the destination said so.
    Retryable {
        message: String,
        after: Option<Duration>,
    },
    Permanent(String),
}

/// The network part of an exporter: sends one batch, once.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, signal: Signal, body: bytes::Bytes) -> Result<(), SendError>;
}

struct Delivery {
    id: String,
    sender: Box<dyn Sender>,
    retry: RetryConfig,
    sent: [Counter; 3],
    failed: [Counter; 3],
    health: HealthBoard,
}

impl Delivery {
    /// Sends with retries; returns whether the batch was delivered.
    async fn deliver(&self, batch: Batch) -> Result<(), ConsumeError> {
        let (signal, items) = (batch.signal(), batch.items());
        let body = batch.into_bytes();
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let error = match self.sender.send(signal, body.clone()).await {
                Ok(()) => {
                    self.sent[signal as usize].add(items);
                    self.health
                        .report(&format!("exporters.{}", self.id), Ok(()));
                    return Ok(());
                }
                Err(error) => error,
            };
            let text = match &error {
                SendError::Retryable { message, .. } | SendError::Permanent(message) => message,
            };
            self.health
                .report(&format!("exporters.{}", self.id), Err(text));
            let (message, wait) = match error {
                SendError::Retryable { message, after } if self.retry.enabled => {
                    let wait = after.unwrap_or_else(|| self.retry.backoff(attempt));
                    let budget = self.retry.max_elapsed_time;
                    if budget.is_zero() || started.elapsed() + wait <= budget {
                        (message, Some(wait))
                    } else {
                        (
                            format!("{message} (gave up after {:?})", started.elapsed()),
                            None,
                        )
                    }
                }
                SendError::Retryable { message, .. } | SendError::Permanent(message) => {
                    (message, None)
                }
            };
            let Some(wait) = wait else {
                self.failed[signal as usize].add(items);
                tracing::error!(exporter = %self.id, %signal, items, error = %message, "dropping data: export failed");
                return Err(ConsumeError::Rejected(message));
            };
            tracing::warn!(exporter = %self.id, %signal, items, error = %message, retry_in = ?wait, "export failed, will retry");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// A queued batch and the caller waiting for its delivery.
type Waiting = (Batch, oneshot::Sender<Result<(), ConsumeError>>);

/// An exporter: the sending queue in front of a [`Sender`]. A batch is acknowledged upstream
/// when it has been delivered; the queue lets `num_consumers` deliveries run at once and
/// refuses data, rather than growing, when full.
struct Queued {
    delivery: Arc<Delivery>,
    queue: Option<mpsc::Sender<Waiting>>,
    size: Gauge,
    enqueue_failed: [Counter; 3],
}

#[async_trait]
impl Consumer for Queued {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let Some(queue) = &self.queue else {
            return self.delivery.deliver(batch).await;
        };
        let (signal, items) = (batch.signal(), batch.items());
        let (reply, delivered) = oneshot::channel();
        match queue.try_send((batch, reply)) {
            Ok(()) => {
                self.size.add(1);
                let stopped = || ConsumeError::Rejected(format!("{} stopped", self.delivery.id));
                delivered.await.unwrap_or_else(|_| Err(stopped()))
            }
            Err(_) => {
                self.enqueue_failed[signal as usize].add(items);
                Err(ConsumeError::Exhausted(format!(
                    "sending queue of {} is full",
                    self.delivery.id
                )))
            }
        }
    }
}

/// Wraps `sender` in the configured queue and retry policy.
pub fn build(
    id: &ComponentId,
    sender: Box<dyn Sender>,
    queue: &QueueConfig,
    retry: &RetryConfig,
    context: &Context,
) -> Result<Next, String> {
    let labels = [("exporter", id.as_str())];
    let counter = |what: &str, signal: Signal, help: &'static str| {
        context.registry.counter(
            &format!("otelcol_exporter_{what}_{}", signal.item_name()),
            help,
            &labels,
        )
    };
    let delivery = Arc::new(Delivery {
        id: id.to_string(),
        sender,
        retry: retry.clone(),
        sent: Signal::ALL.map(|s| counter("sent", s, "Items delivered to the destination.")),
        failed: Signal::ALL
            .map(|s| counter("send_failed", s, "Items dropped after sending failed.")),
        health: context.health.clone(),
    });
    let size = context.registry.gauge(
        "otelcol_exporter_queue_size",
        "Batches waiting in the sending queue.",
        &labels,
    );
    let enqueue_failed = Signal::ALL.map(|s| {
        counter(
            "enqueue_failed",
            s,
            "Items refused because the sending queue was full.",
        )
    });
    if let (Storage::File, Some(directory)) = (queue.storage, &queue.directory) {
        let dir = directory.join(id.as_str().replace('/', "_"));
        let disk = DiskQueue::open(&dir, queue.max_size_mib << 20)
            .map_err(|e| format!("cannot open the queue in {}: {e}", dir.display()))?;
        return Ok(persistent(
            disk,
            delivery,
            queue.num_consumers,
            size,
            enqueue_failed,
            context,
        ));
    }
    if !queue.enabled {
        return Ok(Arc::new(Queued {
            delivery,
            queue: None,
            size,
            enqueue_failed,
        }));
    }
    context
        .registry
        .gauge(
            "otelcol_exporter_queue_capacity",
            "Batches the sending queue holds.",
            &labels,
        )
        .set(queue.queue_size as i64);
    let (tx, rx) = mpsc::channel::<Waiting>(queue.queue_size.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..queue.num_consumers.max(1) {
        let (rx, delivery, size) = (rx.clone(), delivery.clone(), size.clone());
        // Workers drain what is queued and stop once every producer is gone.
        context.tasks.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((batch, reply)) = next else { break };
                size.add(-1);
                let _ = reply.send(delivery.deliver(batch).await);
            }
        });
    }
    Ok(Arc::new(Queued {
        delivery,
        queue: Some(tx),
        size,
        enqueue_failed,
    }))
}

/// An exporter with a persistent queue: data is acknowledged once on disk.
struct Persistent {
    id: String,
    disk: Arc<DiskQueue>,
    enqueue_failed: [Counter; 3],
    /// Stops this instance's workers when the exporter is retired.
    _workers: DropGuard,
}

#[async_trait]
impl Consumer for Persistent {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let (signal, items) = (batch.signal(), batch.items());
        self.disk.push(batch).await.map_err(|e| {
            self.enqueue_failed[signal as usize].add(items);
            tracing::warn!(exporter = %self.id, error = %e, "data refused");
            match e {
                DiskError::Full { .. } => ConsumeError::Exhausted(e.to_string()),
                DiskError::Io { .. } => ConsumeError::Rejected(e.to_string()),
            }
        })
    }
}

fn persistent(
    disk: Arc<DiskQueue>,
    delivery: Arc<Delivery>,
    workers: usize,
    size: Gauge,
    enqueue_failed: [Counter; 3],
    context: &Context,
) -> Next {
    context.tasks.spawn(disk.clone().sync_forever());
    let stop = CancellationToken::new();
    for _ in 0..workers.max(1) {
        let (disk, delivery, size, stop) =
            (disk.clone(), delivery.clone(), size.clone(), stop.clone());
        context.tasks.spawn(async move {
            loop {
                let (seq, batch) = tokio::select! {
                    next = disk.next() => next,
                    _ = stop.cancelled() => break,
                };
                tokio::select! {
                    // Delivered, or given up on by the retry policy (counted and logged there).
                    _ = delivery.deliver(batch.clone()) => disk.done(seq),
                    // Retired mid-delivery: the batch goes back for the successor instance.
                    _ = stop.cancelled() => {
                        disk.give_back(seq, batch);
                        break;
                    }
                }
                size.set(disk.len() as i64);
            }
        });
    }
    Arc::new(Persistent {
        id: delivery.id.clone(),
        disk,
        enqueue_failed,
        _workers: stop.drop_guard(),
    })
}
