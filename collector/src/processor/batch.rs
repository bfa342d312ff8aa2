//! `batch`: joins small requests into larger ones by concatenating their encodings, so batching
//! costs a copy, not a decode and re-encode.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::Signal;
use serde::Deserialize;

use tokio::sync::mpsc;
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
    /// Refused unless empty: batching per value of client metadata keys needs each request's
    /// metadata carried with its data, which this collector does not do.
    pub metadata_keys: Vec<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
            send_batch_max_size: 0,
            max_in_flight: 4,
            metadata_keys: Vec::new(),
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
        if !self.metadata_keys.is_empty() {
            problems.push((
                vec!["metadata_keys".into()],
                "metadata_keys is not supported: batching per client metadata needs each \
                 request's metadata (include_metadata) carried with its data through the \
                 pipeline and the sending queues, whose records on disk hold only the telemetry; \
                 remove it"
                    .into(),
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

/// Requests waiting to join a batch; beyond them senders are told to retry.
const WAITING: usize = 64;

struct BatchProcessor {
    queue: mpsc::Sender<Batch>,
}

#[async_trait]
impl Consumer for BatchProcessor {
    /// Takes the data into the next batch; its senders hear when that batch is accepted
    /// downstream, through the acks it carries.
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        // Full means batches are not leaving: say so at once.
        self.queue.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(batch) => batch.refuse(ConsumeError::Exhausted(
                "batch processor is full, retry later".into(),
            )),
            mpsc::error::TrySendError::Closed(batch) => {
                batch.refuse(ConsumeError::Exhausted("batch processor stopped".into()))
            }
        })
    }
}

pub(super) fn build(
    config: &BatchConfig,
    id: &ComponentId,
    signal: Signal,
    next: Next,
    context: &Context,
) -> Next {
    let (queue, incoming) = mpsc::channel(WAITING);
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
    items: usize,
}

impl Batcher {
    /// Gathers data and sends batches. A batch goes out when it reaches `send_batch_size`, when
    /// nothing is being sent and its oldest data has waited [`LINGER`] (so a quiet pipeline adds
    /// little delay), or when its oldest data has waited `timeout`; at most `max_in_flight`
    /// batches are handed on at once.
    async fn run(self: Arc<Self>, mut incoming: mpsc::Receiver<Batch>) {
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
                    Some(batch) => {
                        if pending.parts.is_empty() {
                            since = Instant::now();
                            deadline = since + self.config.timeout;
                        }
                        pending.items += batch.items();
                        pending.parts.push(batch);
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

    /// Hands the joined batch on, in pieces of at most `send_batch_max_size`. A piece refused
    /// downstream has refused its own senders; the others are unaffected.
    async fn send(self: Arc<Self>, pending: Pending) {
        let joined = Batch::concat(self.signal, pending.parts);
        for piece in joined.split(self.config.send_batch_max_size) {
            let items = piece.items();
            if let Err(e) = self.next.consume(piece).await {
                self.dropped.add(items);
                tracing::warn!(processor = %self.id, items, error = %e, "batch refused downstream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::{Semaphore, watch};

    use super::*;
    use crate::batch::testing::logs;

    /// Holds each batch until the test lets it through, and records the size of each.
    struct Gate {
        sizes: Mutex<Vec<usize>>,
        open: Semaphore,
        entered: watch::Sender<usize>,
    }

    #[async_trait]
    impl Consumer for Gate {
        async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
            self.entered.send_modify(|n| *n += 1);
            self.open.acquire().await.unwrap().forget();
            self.sizes.lock().unwrap().push(batch.items());
            batch.discard();
            Ok(())
        }
    }

    // Paused time: timers fire only once every task waits, so the test sees no races.
    #[tokio::test(start_paused = true)]
    async fn data_arriving_during_a_send_joins_the_next_batch() {
        let gate = Arc::new(Gate {
            sizes: Mutex::new(Vec::new()),
            open: Semaphore::new(0),
            entered: watch::Sender::new(0),
        });
        let config = BatchConfig {
            max_in_flight: 1,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let context = Context::new();
        let id = ComponentId::new("batch");
        let batch = build(&config, &id, Signal::Logs, gate.clone(), &context);

        let mut receipts = Vec::new();
        let (first, receipt) = logs(1);
        batch.consume(first).await.unwrap();
        receipts.push(receipt);
        let mut entered = gate.entered.subscribe();
        entered.wait_for(|&n| n == 1).await.unwrap();
        // While the first batch is held downstream, four more requests arrive; they go out
        // together once it is through.
        for _ in 0..4 {
            let (more, receipt) = logs(2);
            batch.consume(more).await.unwrap();
            receipts.push(receipt);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        gate.open.add_permits(2);
        for receipt in receipts {
            assert_eq!(receipt.await, Ok(()));
        }
        assert_eq!(*gate.sizes.lock().unwrap(), [1, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_downstream_reaches_only_the_senders_of_that_batch() {
        struct RefuseBig;
        #[async_trait]
        impl Consumer for RefuseBig {
            async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
                if batch.items() > 5 {
                    return Err(batch.refuse(ConsumeError::Rejected("too big".into())));
                }
                batch.discard();
                Ok(())
            }
        }
        let config = BatchConfig {
            send_batch_size: 5,
            send_batch_max_size: 5,
            ..Default::default()
        };
        let context = Context::new();
        let id = ComponentId::new("batch");
        let batch = build(&config, &id, Signal::Logs, Arc::new(RefuseBig), &context);
        let (small, small_receipt) = logs(2);
        let (big, big_receipt) = logs(9); // one resource: split cannot cut it
        let (other, other_receipt) = logs(3);
        for data in [small, big, other] {
            batch.consume(data).await.unwrap();
        }
        assert_eq!(small_receipt.await, Ok(()));
        assert_eq!(
            big_receipt.await,
            Err(ConsumeError::Rejected("too big".into()))
        );
        assert_eq!(other_receipt.await, Ok(()));
    }
}
