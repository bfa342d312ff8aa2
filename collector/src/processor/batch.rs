//! `batch`: joins small requests into larger ones by concatenating their encodings, so batching
//! costs a copy, not a decode and re-encode.

use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::Signal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Batch;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::telemetry::Counter;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items (spans, metric points, log records) that trigger sending a batch.
    pub send_batch_size: usize,
    /// Longest time an item waits before its batch is sent, e.g. `200ms`.
    #[serde(with = "crate::yaml::duration")]
    pub timeout: Duration,
    /// Upper bound on items per batch (0: no bound). Larger batches are split at resource
    /// boundaries.
    pub send_batch_max_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
            send_batch_max_size: 0,
        }
    }
}

impl ComponentConfig for BatchConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            problems.push((
                vec!["send_batch_max_size".into()],
                format!(
                    "must be 0 or at least send_batch_size ({}), got {}",
                    self.send_batch_size, self.send_batch_max_size
                ),
            ));
        }
        if self.send_batch_size == 0 && self.timeout.is_zero() {
            problems.push((
                vec!["timeout".into()],
                "timeout and send_batch_size cannot both be 0".into(),
            ));
        }
        problems
    }
}

struct BatchProcessor {
    queue: mpsc::Sender<Batch>,
}

#[async_trait]
impl Consumer for BatchProcessor {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.queue
            .send(batch)
            .await
            .map_err(|_| ConsumeError::Rejected("batch processor stopped".into()))
    }
}

pub(super) fn build(
    config: &BatchConfig,
    id: &ComponentId,
    signal: Signal,
    next: Next,
    context: &Context,
) -> Next {
    let (queue, incoming) = mpsc::channel(64);
    let dropped = context.registry.counter(
        &format!("otelcol_processor_batch_dropped_{}", signal.item_name()),
        "Items dropped because the next stage refused a batch.",
        &[("processor", id.as_str())],
    );
    let batcher = Batcher {
        config: config.clone(),
        signal,
        next,
        dropped,
        id: id.to_string(),
    };
    context.tasks.spawn(batcher.run(incoming));
    std::sync::Arc::new(BatchProcessor { queue })
}

struct Batcher {
    config: BatchConfig,
    signal: Signal,
    next: Next,
    dropped: Counter,
    id: String,
}

impl Batcher {
    async fn run(self, mut incoming: mpsc::Receiver<Batch>) {
        let mut pending: Vec<Batch> = Vec::new();
        let mut items = 0;
        let mut deadline = Instant::now();
        loop {
            tokio::select! {
                received = incoming.recv() => match received {
                    Some(batch) => {
                        if pending.is_empty() {
                            deadline = Instant::now() + self.config.timeout;
                        }
                        items += batch.items();
                        pending.push(batch);
                        if items >= self.config.send_batch_size {
                            self.flush(std::mem::take(&mut pending)).await;
                            items = 0;
                        }
                    }
                    // Every sender is gone: the pipeline is shutting down.
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                    self.flush(std::mem::take(&mut pending)).await;
                    items = 0;
                }
            }
        }
        if !pending.is_empty() {
            self.flush(pending).await;
        }
    }

    async fn flush(&self, pending: Vec<Batch>) {
        let joined = Batch::concat(self.signal, pending);
        for piece in joined.split(self.config.send_batch_max_size) {
            let items = piece.items();
            if let Err(e) = self.next.consume(piece).await {
                self.dropped.add(items);
                tracing::warn!(processor = %self.id, items, error = %e, "batch dropped: next stage refused it");
            }
        }
    }
}
