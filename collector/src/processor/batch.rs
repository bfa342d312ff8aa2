//! `batch`: joins small requests into larger ones by concatenating their encodings, so batching
//! costs a copy, not a decode and re-encode.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::Signal;
use serde::Deserialize;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
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
    /// Batches being sent at once; more data waits, and then its senders wait.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
            send_batch_max_size: 0,
            max_in_flight: 4,
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

/// How long data waits for company when nothing is being sent: long enough to join the requests
/// that arrive together, short next to a sender's round trip.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// A batch and the caller waiting to hear whether it was delivered.
type Waiting = (Batch, oneshot::Sender<Result<(), ConsumeError>>);

struct BatchProcessor {
    queue: mpsc::Sender<Waiting>,
}

#[async_trait]
impl Consumer for BatchProcessor {
    /// Returns once the batch this data joined has been accepted downstream.
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let stopped = || ConsumeError::Rejected("batch processor stopped".into());
        let (reply, result) = oneshot::channel();
        // Full means batches are not leaving (a slow or absent destination): say so at once.
        self.queue.try_send((batch, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ConsumeError::Exhausted("batch processor is full, retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        result.await.unwrap_or_else(|_| Err(stopped()))
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
    context.tasks.spawn(Arc::new(batcher).run(incoming));
    Arc::new(BatchProcessor { queue })
}

struct Batcher {
    config: BatchConfig,
    signal: Signal,
    next: Next,
    dropped: Counter,
    id: String,
}

/// Data gathered for the next batch.
#[derive(Default)]
struct Pending {
    parts: Vec<Batch>,
    waiting: Vec<oneshot::Sender<Result<(), ConsumeError>>>,
    items: usize,
}

impl Batcher {
    /// Gathers data and sends batches. A batch goes out when it reaches `send_batch_size`, when
    /// nothing is being sent and its oldest data has waited [`LINGER`] (so a quiet pipeline adds
    /// little delay), or when its oldest data has waited `timeout`; at most `max_in_flight`
    /// batches are sent at once. Senders are answered when their batch is accepted downstream.
    async fn run(self: Arc<Self>, mut incoming: mpsc::Receiver<Waiting>) {
        let mut pending = Pending::default();
        let mut in_flight = JoinSet::new();
        let mut since = Instant::now();
        let mut deadline = since;
        let mut open = true;
        while open || !pending.parts.is_empty() {
            let room = in_flight.len() < self.config.max_in_flight.max(1);
            let now = Instant::now();
            let due = pending.items >= self.config.send_batch_size
                || (in_flight.is_empty() && now >= since + LINGER)
                || now >= deadline
                || !open;
            if room && due && !pending.parts.is_empty() {
                let batch = std::mem::take(&mut pending);
                in_flight.spawn(self.clone().send(batch));
                continue;
            }
            let wake = if in_flight.is_empty() {
                deadline.min(since + LINGER)
            } else {
                deadline
            };
            // Stop taking data while a full batch waits for room: senders wait instead.
            let full = pending.items >= self.config.send_batch_size && !room;
            tokio::select! {
                received = incoming.recv(), if open && !full => match received {
                    Some((batch, reply)) => {
                        if pending.parts.is_empty() {
                            since = Instant::now();
                            deadline = since + self.config.timeout;
                        }
                        pending.items += batch.items();
                        pending.parts.push(batch);
                        pending.waiting.push(reply);
                    }
                    // Every sender is gone: the pipeline is shutting down.
                    None => open = false,
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                // Time matters only when a batch could go out; otherwise wait for room.
                _ = tokio::time::sleep_until(wake), if !pending.parts.is_empty() && room => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn send(self: Arc<Self>, pending: Pending) {
        let joined = Batch::concat(self.signal, pending.parts);
        let mut result = Ok(());
        for piece in joined.split(self.config.send_batch_max_size) {
            let items = piece.items();
            if let Err(e) = self.next.consume(piece).await {
                self.dropped.add(items);
                tracing::warn!(processor = %self.id, items, error = %e, "batch refused downstream");
                result = Err(e);
            }
        }
        for reply in pending.waiting {
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use odigos_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use odigos_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    use super::*;

    /// Takes a while per batch and records the size of each.
    #[derive(Default)]
    struct Slow {
        sizes: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Consumer for Slow {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.sizes.lock().unwrap().push(batch.items());
            Ok(())
        }
    }

    fn logs(n: usize) -> Batch {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::from_bytes(Signal::Logs, request.encode_to_vec().into()).unwrap()
    }

    #[tokio::test]
    async fn data_arriving_during_a_send_joins_the_next_batch() {
        let slow = Arc::new(Slow::default());
        let config = BatchConfig {
            max_in_flight: 1,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let context = Context::new();
        let batch = build(
            &config,
            &ComponentId::new("batch"),
            Signal::Logs,
            slow.clone(),
            &context,
        );

        let first = tokio::spawn({
            let batch = batch.clone();
            async move { batch.consume(logs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // While the first batch is being sent, four more requests arrive; they go out together,
        // and every sender hears back only once its data is delivered.
        let rest: Vec<_> = (0..4)
            .map(|_| {
                let batch = batch.clone();
                tokio::spawn(async move { batch.consume(logs(2)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(()));
        for sender in rest {
            assert_eq!(sender.await.unwrap(), Ok(()));
        }
        assert_eq!(*slow.sizes.lock().unwrap(), [1, 8]);
    }
}
