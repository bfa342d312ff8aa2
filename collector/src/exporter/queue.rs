//! The sending queue and retry policy shared by network exporters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::Signal;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::Batch;
use crate::config::ComponentId;
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::telemetry::{Counter, Gauge};
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Without a queue, each batch is sent before the previous stage gets an answer.
    pub enabled: bool,
    /// Batches sent concurrently.
    pub num_consumers: usize,
    /// Batches held; when full, new data is refused so senders back off.
    pub queue_size: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
        }
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
                    return Ok(());
                }
                Err(error) => error,
            };
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

/// An exporter: the sending queue in front of a [`Sender`].
struct Queued {
    delivery: Arc<Delivery>,
    queue: Option<mpsc::Sender<Batch>>,
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
        match queue.try_send(batch) {
            Ok(()) => {
                self.size.add(1);
                Ok(())
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
) -> Next {
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
    if !queue.enabled {
        return Arc::new(Queued {
            delivery,
            queue: None,
            size,
            enqueue_failed,
        });
    }
    context
        .registry
        .gauge(
            "otelcol_exporter_queue_capacity",
            "Batches the sending queue holds.",
            &labels,
        )
        .set(queue.queue_size as i64);
    let (tx, rx) = mpsc::channel(queue.queue_size.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..queue.num_consumers.max(1) {
        let (rx, delivery, size) = (rx.clone(), delivery.clone(), size.clone());
        // Workers drain what is queued and stop once every producer is gone.
        context.tasks.spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(batch) = next else { break };
                size.add(-1);
                let _ = delivery.deliver(batch).await;
            }
        });
    }
    Arc::new(Queued {
        delivery,
        queue: Some(tx),
        size,
        enqueue_failed,
    })
}
