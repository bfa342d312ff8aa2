use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::*;
use crate::batch::testing::logs as batch;

/// A destination the test opens and closes: while closed, sends wait; `failing` makes them
/// fail. Records the item count of each batch it takes, which the tests use as its id.
struct Gate {
    open: watch::Sender<bool>,
    failing: AtomicBool,
    got: Mutex<Vec<usize>>,
}

impl Gate {
    fn new(open: bool) -> Arc<Gate> {
        Arc::new(Gate {
            open: watch::Sender::new(open),
            failing: AtomicBool::new(false),
            got: Mutex::new(Vec::new()),
        })
    }

    fn got(&self) -> Vec<usize> {
        self.got.lock().unwrap().clone()
    }
}

struct Through(Arc<Gate>);

#[async_trait]
impl Sender for Through {
    async fn send(&self, signal: Signal, body: bytes::Bytes) -> Result<(), SendError> {
        let mut open = self.0.open.subscribe();
        let _ = open.wait_for(|&open| open).await;
        if self.0.failing.load(Ordering::SeqCst) {
            return Err(SendError::Retryable {
                message: "refused".into(),
                after: Some(Duration::from_millis(10)),
            });
        }
        let items = crate::Decoded::decode(signal, &body).map_or(0, |d| d.items());
        self.0.got.lock().unwrap().push(items);
        Ok(())
    }
}

fn exporter(gate: &Arc<Gate>, queue: &QueueConfig, context: &Context) -> Next {
    let retry = RetryConfig {
        initial_interval: Duration::from_millis(10),
        max_elapsed_time: Duration::ZERO,
        ..RetryConfig::default()
    };
    let id = ComponentId::new("otlp");
    build(&id, Box::new(Through(gate.clone())), queue, &retry, context).unwrap()
}

async fn until(mut check: impl FnMut() -> bool) {
    while !check() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the worker has taken what was queued, leaving the queue empty.
async fn taken_by_the_worker(context: &Context) {
    let labels = [("exporter", "otlp")];
    until(|| {
        context
            .registry
            .value("otelcol_exporter_queue_size", &labels)
            == Some(0)
    })
    .await;
}

#[tokio::test]
async fn senders_are_answered_once_queued_not_once_delivered() {
    let gate = Gate::new(false);
    let context = Context::new();
    let exporter = exporter(&gate, &QueueConfig::default(), &context);
    let (data, receipt) = batch(3);
    exporter.consume(data).await.unwrap();
    assert_eq!(
        receipt.await,
        Ok(()),
        "answered while the destination holds back"
    );
    assert!(gate.got().is_empty());
    gate.open.send_replace(true);
    until(|| gate.got() == [3]).await;
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_or_refuses() {
    let context = Context::new();
    let gate = Gate::new(false);
    let small = QueueConfig {
        queue_size: 2,
        num_consumers: 1,
        when_full: Overflow::DropOldest,
        ..QueueConfig::default()
    };
    let dropping = exporter(&gate, &small, &context);
    for n in 1..=5 {
        let (data, receipt) = batch(n);
        dropping.consume(data).await.unwrap();
        assert_eq!(receipt.await, Ok(()));
        // The first goes to the worker at once; the rest wait in the queue.
        if n == 1 {
            taken_by_the_worker(&context).await;
        }
    }
    let dropped = context.registry.value(
        "otelcol_exporter_queue_dropped_log_records",
        &[("exporter", "otlp")],
    );
    assert_eq!(
        dropped,
        Some(2 + 3),
        "batches 2 and 3 made room for 4 and 5"
    );
    gate.open.send_replace(true);
    until(|| gate.got() == [1, 4, 5]).await;

    let context = Context::new();
    let gate = Gate::new(false);
    let refusing = QueueConfig {
        when_full: Overflow::Backpressure,
        ..small
    };
    let exporter = exporter(&gate, &refusing, &context);
    let mut outcomes = Vec::new();
    for n in 1..=4 {
        let (data, receipt) = batch(n);
        let taken = exporter.consume(data).await;
        outcomes.push((taken.is_ok(), receipt.await.is_ok()));
        if n == 1 {
            taken_by_the_worker(&context).await;
        }
    }
    assert_eq!(
        outcomes,
        [(true, true), (true, true), (true, true), (false, false)]
    );
}

#[tokio::test]
async fn a_rebuilt_exporter_takes_over_the_queue() {
    let context = Context::new();
    let old = Gate::new(true);
    old.failing.store(true, Ordering::SeqCst);
    let config = QueueConfig::default();
    let first = exporter(&old, &config, &context);
    for n in 1..=3 {
        let (data, receipt) = batch(n);
        first.consume(data).await.unwrap();
        assert_eq!(receipt.await, Ok(()));
    }
    // A new instance (new settings, a working destination) while the old one keeps failing.
    let new = Gate::new(true);
    let second = exporter(&new, &config, &context);
    drop(first);
    until(|| {
        let mut got = new.got();
        got.sort();
        got == [1, 2, 3]
    })
    .await;
    assert!(old.got().is_empty());
    drop(second);
}
