//! The sending queue and retry policy in front of every exporter.
//!
//! An exporter accepts data once its queue holds it (in memory, or synced to disk for a
//! queue kept by a `file_storage` extension): that is when its senders are answered, never when a destination answers.
//! Workers deliver from the queue with retries, so a destination that is down or slow fills
//! only its own queue. A full queue refuses new data (`when_full: backpressure`, the senders
//! retry) or drops its oldest data to make room (`drop_oldest`, counted).
//!
//! The queue outlives exporter instances: an exporter rebuilt with a new config takes over
//! its predecessor's queue, workers and backlog. When an exporter is removed from the config,
//! or the collector stops, a file queue stops at once, finishing only the attempts in
//! progress: what is undelivered stays on disk for the next start. A memory queue keeps
//! delivering what it holds for a while (up to the shutdown grace period), then drops the
//! rest, counted.

mod disk;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use odigos_proto::Signal;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Batch;
use crate::config::ComponentId;
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::telemetry::{Counter, Gauge, HealthBoard};
use crate::topology::Context;
use disk::{DiskMetrics, DiskQueue, RealFs, WhenFull};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Without a queue, each batch is sent before its senders are answered.
    pub enabled: bool,
    /// Batches sent concurrently.
    pub num_consumers: usize,
    /// How much a `memory` queue holds, counted by `sizer`.
    pub queue_size: usize,
    /// What `queue_size` counts: `requests` (batches), `items` (spans, points, records) or
    /// `bytes`.
    pub sizer: Sizer,
    /// The id of a `file_storage` extension (`file_storage` or `file_storage/name`, listed in
    /// `service.extensions`): the queue is written under that extension's directory, in a
    /// folder named after this exporter, and synced before it is acknowledged; it is delivered
    /// after a crash or restart. Without it the queue is in memory, lost if the process dies.
    pub storage: Option<ComponentId>,
    /// The storage extension's directory, once resolved.
    #[serde(skip)]
    pub directory: Option<PathBuf>,
    /// How long opening the queue waits for another process to let go of its folder.
    #[serde(skip)]
    pub lock_timeout: Duration,
    /// Disk space a file queue may use, in MiB.
    pub max_size_mib: u64,
    /// When the queue is full: `backpressure` refuses new data (senders retry later) or
    /// `drop_oldest` drops the oldest data to make room (counted in
    /// `otelcol_exporter_queue_dropped_*`).
    pub when_full: Overflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    #[default]
    Requests,
    Items,
    Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    #[default]
    Backpressure,
    DropOldest,
}

impl Overflow {
    fn when_full(self) -> WhenFull {
        match self {
            Overflow::Backpressure => WhenFull::Refuse,
            Overflow::DropOldest => WhenFull::DropOldest,
        }
    }
}

impl Sizer {
    fn size(self, batch: &Batch) -> usize {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => batch.items(),
            Sizer::Bytes => batch.to_bytes().len(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            sizer: Sizer::Requests,
            storage: None,
            directory: None,
            lock_timeout: Duration::ZERO,
            max_size_mib: 1024,
            when_full: Overflow::Backpressure,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> Vec<(Vec<String>, String)> {
        let at = |field: &str| vec!["sending_queue".to_string(), field.to_string()];
        let mut problems = Vec::new();
        if self.num_consumers == 0 {
            problems.push((at("num_consumers"), "must be greater than 0".into()));
        }
        if self.storage.is_some() {
            if !self.enabled {
                problems.push((at("enabled"), "a file queue cannot be disabled".into()));
            }
            if self.max_size_mib == 0 {
                problems.push((at("max_size_mib"), "must be greater than 0".into()));
            }
        } else if self.queue_size == 0 {
            problems.push((at("queue_size"), "must be greater than 0".into()));
        }
        problems
    }

    /// Keeps the queue under `storage`'s directory.
    pub(crate) fn use_storage(
        &mut self,
        storage: &crate::extension::file_storage::FileStorageConfig,
    ) {
        self.directory = Some(storage.directory.clone());
        self.lock_timeout = storage.timeout;
    }

    /// The folder of a file queue for exporter `id`.
    fn folder(&self, id: &ComponentId) -> Option<PathBuf> {
        match (&self.storage, &self.directory) {
            (Some(_), Some(directory)) => Some(directory.join(id.as_str().replace('/', "_"))),
            _ => None,
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

/// The part of an exporter that talks to the destination: sends one batch, once.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, signal: Signal, body: bytes::Bytes) -> Result<(), SendError>;
}

/// The request a local sender (`debug`, `file`) reads: what the queue holds is encoded.
pub(crate) fn decode(signal: Signal, body: &[u8]) -> Result<crate::Decoded, SendError> {
    crate::Decoded::decode(signal, body)
        .map_err(|e| SendError::Permanent(format!("undecodable {signal}: {e}")))
}

/// Wraps a local sender (`debug`, `file`) in the default queue and retry policy: it has no
/// `sending_queue` settings of its own, and a slow one holds up nothing else.
pub(crate) fn build_local(
    id: &ComponentId,
    sender: Box<dyn Sender>,
    context: &Context,
) -> Result<Next, String> {
    // One consumer: what they write comes out in the order it arrived, as otelcol's do.
    let queue = QueueConfig {
        num_consumers: 1,
        ..QueueConfig::default()
    };
    build(id, sender, &queue, &RetryConfig::default(), context)
}

/// How long an exporter removed from the config keeps delivering what its queue holds.
const RETIRING: Duration = Duration::from_secs(30);

/// A sender with its retry policy and counters.
struct Delivery {
    id: String,
    sender: Box<dyn Sender>,
    retry: RetryConfig,
    sent: [Counter; 3],
    failed: [Counter; 3],
    health: HealthBoard,
    /// Retries are said once in a while, not once per batch and attempt.
    retries: Mutex<Throttle>,
}

/// How one delivery ended.
enum Delivered {
    Yes,
    /// Refused for good, or retried for longer than allowed: counted and logged.
    GaveUp(String),
}

impl Delivery {
    fn component(&self) -> String {
        format!("exporters.{}", self.id)
    }

    /// Sends once; on failure, the wait before the next try, or `None` to give up.
    async fn attempt(
        &self,
        signal: Signal,
        body: bytes::Bytes,
        items: usize,
        attempt: u32,
        started: Instant,
    ) -> Result<(), (String, Option<Duration>)> {
        let error = match self.sender.send(signal, body).await {
            Ok(()) => {
                self.sent[signal as usize].add(items);
                self.health.report(&self.component(), Ok(()));
                return Ok(());
            }
            Err(error) => error,
        };
        let text = match &error {
            SendError::Retryable { message, .. } | SendError::Permanent(message) => message,
        };
        self.health.report(&self.component(), Err(text));
        Err(match error {
            SendError::Retryable { message, after } if self.retry.enabled => {
                let wait = after.unwrap_or_else(|| self.retry.backoff(attempt));
                let budget = self.retry.max_elapsed_time;
                if budget.is_zero() || started.elapsed() + wait <= budget {
                    (message, Some(wait))
                } else {
                    let gave_up = format!("{message} (gave up after {:?})", started.elapsed());
                    (gave_up, None)
                }
            }
            SendError::Retryable { message, .. } | SendError::Permanent(message) => (message, None),
        })
    }

    fn give_up(&self, signal: Signal, items: usize, message: &str) {
        self.failed[signal as usize].add(items);
        tracing::error!(exporter = %self.id, %signal, items, error = %message, "dropping data: export failed");
    }
}

/// Sends `batch` with retries until delivered, given up on, or stopped (`None`: the batch
/// goes back to the queue): `stop` ends even the attempt in progress, `no_retry` lets it
/// finish but allows no other. Each try uses the delivery current at that moment, so a
/// rebuilt exporter's new settings apply to what is being retried.
async fn deliver(
    current: &ArcSwap<Delivery>,
    batch: &Batch,
    stop: &CancellationToken,
    no_retry: &CancellationToken,
) -> Option<Delivered> {
    let (signal, items, body) = (batch.signal(), batch.items(), batch.to_bytes());
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let delivery = current.load_full();
        let tried = tokio::select! {
            tried = delivery.attempt(signal, body.clone(), items, attempt, started) => tried,
            _ = stop.cancelled() => return None,
        };
        let (message, wait) = match tried {
            Ok(()) => return Some(Delivered::Yes),
            Err(failure) => failure,
        };
        let Some(wait) = wait else {
            delivery.give_up(signal, items, &message);
            return Some(Delivered::GaveUp(message));
        };
        if no_retry.is_cancelled() {
            return None;
        }
        if let Some(retries) = delivery.retries.lock().unwrap().due(1) {
            tracing::warn!(exporter = %delivery.id, %signal, items, error = %message, retry_in = ?wait, retries, "export failed, will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return None,
            _ = no_retry.cancelled() => return None,
        }
        attempt += 1;
    }
}

/// Where a queue keeps what it holds.
enum Backlog {
    Memory(Arc<MemoryBacklog>),
    Disk(Arc<DiskQueue>),
}

/// A batch handed to a worker; dropped without [`Lease::done`], it goes back to the queue.
enum Lease {
    Memory(MemoryTaken),
    Disk(disk::Taken),
}

impl Lease {
    fn batch(&self) -> &Batch {
        match self {
            Lease::Memory(taken) => taken.batch.as_ref().expect("held until settled"),
            Lease::Disk(taken) => taken.batch(),
        }
    }

    fn done(self) {
        match self {
            Lease::Memory(mut taken) => {
                taken.batch = None;
                taken.backlog.settled();
            }
            Lease::Disk(taken) => taken.done(),
        }
    }
}

impl Backlog {
    async fn push(&self, batch: Batch, when_full: Overflow) -> Result<(), ConsumeError> {
        match self {
            Backlog::Memory(memory) => memory.push(batch, when_full),
            Backlog::Disk(disk) => disk.push(batch, when_full.when_full()).await.map_err(|e| {
                // A full disk queue, and an I/O error too, are worth a retry by the sender.
                ConsumeError::Exhausted(e.to_string())
            }),
        }
    }

    async fn next(&self) -> Option<Lease> {
        match self {
            Backlog::Memory(memory) => memory.next().await.map(Lease::Memory),
            Backlog::Disk(disk) => disk.next().await.map(Lease::Disk),
        }
    }

    fn close(&self) {
        match self {
            Backlog::Memory(memory) => memory.close(),
            Backlog::Disk(disk) => disk.close(),
        }
    }

    fn reopen(&self) {
        match self {
            Backlog::Memory(memory) => memory.reopen(),
            Backlog::Disk(disk) => disk.reopen(),
        }
    }
}

/// An exporter's queue and the workers that deliver from it.
pub(crate) struct Queue {
    id: String,
    backlog: Backlog,
    delivery: ArcSwap<Delivery>,
    when_full: ArcSwap<Overflow>,
    consumers: Arc<Semaphore>,
    life: Mutex<Life>,
    /// Stops the workers, even mid-attempt: when a retired queue is drained or its time is
    /// up, or when the collector's shutdown grace period is over.
    stop: CancellationToken,
    /// Stops handing out batches and retrying, letting attempts in progress finish: a file
    /// queue whose exporter is gone.
    no_retry: CancellationToken,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
}

/// Exporter instances using a queue, and how many workers it has.
struct Life {
    instances: usize,
    consumers: usize,
    stopped: bool,
}

/// Every queue of a collector by exporter id, so that a rebuilt exporter finds its
/// predecessor's, and every open queue folder, so that one is never opened twice.
#[derive(Clone, Default)]
pub struct Queues(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    queues: HashMap<String, Weak<Queue>>,
    folders: HashMap<PathBuf, Weak<DiskQueue>>,
}

impl Queue {
    /// Takes the queue over for a new instance of its exporter, with `config`'s settings;
    /// `false` when it has stopped or keeps its data elsewhere.
    fn adopt(&self, config: &QueueConfig, folder: &Option<PathBuf>, delivery: Delivery) -> bool {
        let mut life = self.life.lock().unwrap();
        let same_storage = match &self.backlog {
            Backlog::Memory(_) => folder.is_none(),
            Backlog::Disk(disk) => folder.as_deref() == Some(disk.dir()),
        };
        if life.stopped || !same_storage {
            return false;
        }
        life.instances += 1;
        self.backlog.reopen();
        self.delivery.store(Arc::new(delivery));
        self.when_full.store(Arc::new(config.when_full));
        match &self.backlog {
            Backlog::Memory(memory) => memory.resize(config.sizer, config.queue_size),
            Backlog::Disk(disk) => disk.resize(config.max_size_mib << 20),
        }
        let wanted = config.num_consumers.max(1);
        if wanted > life.consumers {
            self.consumers.add_permits(wanted - life.consumers);
        } else {
            self.consumers.forget_permits(life.consumers - wanted);
        }
        life.consumers = wanted;
        true
    }

    /// One instance fewer. The last one gone retires the queue: a file queue stops at once,
    /// keeping what is undelivered on disk; a memory queue delivers what it holds for up to
    /// [`RETIRING`], then stops.
    fn release(self: &Arc<Self>) {
        let mut life = self.life.lock().unwrap();
        life.instances -= 1;
        if life.instances > 0 {
            return;
        }
        if let Backlog::Disk(_) = self.backlog {
            life.stopped = true;
            self.no_retry.cancel();
            return;
        }
        self.backlog.close();
        let queue = self.clone();
        self.tasks.spawn_on(
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(RETIRING) => {}
                    _ = queue.stop.cancelled() => return,
                }
                let mut life = queue.life.lock().unwrap();
                if life.instances == 0 && !life.stopped {
                    tracing::warn!(exporter = %queue.id, "removed exporter could not deliver everything in {RETIRING:?}; stopping it");
                    life.stopped = true;
                    queue.stop.cancel();
                }
            },
            &self.runtime,
        );
    }

    /// Hands batches to workers, at most `num_consumers` at once, until stopped or, once
    /// retired, drained.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let permit = tokio::select! {
                permit = self.consumers.clone().acquire_owned() => permit.expect("never closed"),
                _ = self.stop.cancelled() => break,
                _ = self.no_retry.cancelled() => break,
            };
            let next = tokio::select! {
                next = self.backlog.next() => next,
                _ = self.stop.cancelled() => break,
                _ = self.no_retry.cancelled() => break,
            };
            let Some(lease) = next else {
                // Retired and drained, unless an instance came back meanwhile.
                {
                    let mut life = self.life.lock().unwrap();
                    if life.instances == 0 {
                        life.stopped = true;
                        self.stop.cancel();
                        break;
                    }
                }
                // Never a busy loop, whatever the backlog answers.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let queue = self.clone();
            self.tasks.spawn(async move {
                let delivered =
                    deliver(&queue.delivery, lease.batch(), &queue.stop, &queue.no_retry).await;
                if delivered.is_some() {
                    lease.done();
                }
                drop(permit);
            });
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Backlog::Memory(memory) = &self.backlog {
            memory.abandon(&self.id);
        }
    }
}

/// An exporter instance: takes batches into its queue.
struct Queued {
    queue: Arc<Queue>,
    enqueue_failed: [Counter; 3],
}

#[async_trait]
impl Consumer for Queued {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let (signal, items) = (batch.signal(), batch.items());
        let acks = batch.take_acks();
        let when_full = **self.queue.when_full.load();
        match self.queue.backlog.push(batch, when_full).await {
            Ok(()) => {
                acks.accept();
                Ok(())
            }
            Err(e) => {
                self.enqueue_failed[signal as usize].add(items);
                tracing::debug!(exporter = %self.queue.id, error = %e, "data refused");
                acks.refuse(&e);
                Err(e)
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.queue.release();
    }
}

/// An exporter without a queue: each batch is delivered before its senders are answered.
struct Direct {
    delivery: ArcSwap<Delivery>,
    stop: CancellationToken,
}

#[async_trait]
impl Consumer for Direct {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let acks = batch.take_acks();
        let error = match deliver(&self.delivery, &batch, &self.stop, &self.stop).await {
            Some(Delivered::Yes) => {
                acks.accept();
                return Ok(());
            }
            Some(Delivered::GaveUp(message)) => ConsumeError::Rejected(message),
            None => ConsumeError::Exhausted("the collector is stopping".into()),
        };
        acks.refuse(&error);
        Err(error)
    }
}

/// Wraps `sender` in the configured queue and retry policy.
pub fn build(
    id: &ComponentId,
    sender: Box<dyn Sender>,
    config: &QueueConfig,
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
    let delivery = Delivery {
        id: id.to_string(),
        sender,
        retry: retry.clone(),
        sent: Signal::ALL.map(|s| counter("sent", s, "Items delivered to the destination.")),
        failed: Signal::ALL
            .map(|s| counter("send_failed", s, "Items dropped after sending failed.")),
        health: context.health.clone(),
        retries: Mutex::default(),
    };
    if !config.enabled {
        return Ok(Arc::new(Direct {
            delivery: ArcSwap::from_pointee(delivery),
            stop: context.shutdown.clone(),
        }));
    }
    let enqueue_failed = Signal::ALL.map(|s| {
        counter(
            "enqueue_failed",
            s,
            "Items refused because the sending queue was full or could not store them.",
        )
    });
    let folder = config.folder(id);
    let mut registry = context.queues.0.lock().unwrap();
    let running = registry.queues.get(id.as_str()).and_then(Weak::upgrade);
    let mut delivery = Some(delivery);
    if let Some(queue) = running {
        let adopted = queue.adopt(config, &folder, delivery.take().expect("once"));
        if adopted {
            return Ok(Arc::new(Queued {
                queue,
                enqueue_failed,
            }));
        }
        // Let go before a new queue opens: a retired file queue must not share its folder.
        drop(queue);
    }
    let delivery = delivery.unwrap_or_else(|| unreachable!("taken only when adopted"));
    let dropped = Signal::ALL.map(|s| {
        counter(
            "queue_dropped",
            s,
            "Items dropped from a full sending queue to make room (when_full: drop_oldest).",
        )
    });
    let size = context.registry.gauge(
        "otelcol_exporter_queue_size",
        "Batches waiting in the sending queue.",
        &labels,
    );
    let backlog = match &folder {
        Some(folder) => {
            let metrics = DiskMetrics {
                batches: size,
                dropped,
                corrupt: context.registry.counter(
                    "otelcol_exporter_queue_corrupt_records",
                    "Records of a file queue skipped because they failed their checksum.",
                    &labels,
                ),
            };
            // A stopped queue may still hold the folder open: take it over.
            let open = registry.folders.get(folder).and_then(Weak::upgrade);
            let disk = match open {
                Some(disk) => {
                    disk.resize(config.max_size_mib << 20);
                    disk.reopen();
                    disk
                }
                None => {
                    let deadline = std::time::Instant::now() + config.lock_timeout;
                    let disk = loop {
                        let fs = Arc::new(RealFs::default());
                        match DiskQueue::open(
                            fs,
                            folder,
                            config.max_size_mib << 20,
                            metrics.clone(),
                        ) {
                            Ok(disk) => break disk,
                            // Another process holds the folder: wait for it up to the
                            // storage's timeout.
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    && std::time::Instant::now() < deadline =>
                            {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Err(e) => {
                                return Err(format!(
                                    "cannot open the queue in {}: {e}",
                                    folder.display()
                                ));
                            }
                        }
                    };
                    Arc::new(disk)
                }
            };
            registry
                .folders
                .insert(folder.clone(), Arc::downgrade(&disk));
            Backlog::Disk(disk)
        }
        None => {
            context
                .registry
                .gauge(
                    "otelcol_exporter_queue_capacity",
                    "What the sending queue holds, counted by its sizer.",
                    &labels,
                )
                .set(config.queue_size as i64);
            Backlog::Memory(Arc::new(MemoryBacklog::new(config, size, dropped)))
        }
    };
    let consumers = config.num_consumers.max(1);
    let queue = Arc::new(Queue {
        id: id.to_string(),
        backlog,
        delivery: ArcSwap::from_pointee(delivery),
        when_full: ArcSwap::from_pointee(config.when_full),
        consumers: Arc::new(Semaphore::new(consumers)),
        life: Mutex::new(Life {
            instances: 1,
            consumers,
            stopped: false,
        }),
        stop: context.shutdown.child_token(),
        no_retry: CancellationToken::new(),
        tasks: context.tasks.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    registry
        .queues
        .insert(id.to_string(), Arc::downgrade(&queue));
    context.tasks.spawn(queue.clone().dispatch());
    Ok(Arc::new(Queued {
        queue,
        enqueue_failed,
    }))
}

/// How often an exporter that keeps failing, or keeps dropping its oldest data, says so.
const LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Lets a warning through once per [`LOGGED_EVERY`], counting what it held back meanwhile.
#[derive(Default)]
struct Throttle {
    logged_at: Option<Instant>,
    held_back: usize,
}

impl Throttle {
    /// Adds `count` to what is to be said; `Some(total since last said)` when it is time.
    fn due(&mut self, count: usize) -> Option<usize> {
        self.held_back += count;
        if self.logged_at.is_some_and(|at| at.elapsed() < LOGGED_EVERY) {
            return None;
        }
        self.logged_at = Some(Instant::now());
        Some(std::mem::take(&mut self.held_back))
    }
}

/// An in-memory queue, bounded by its sizer.
struct MemoryBacklog {
    state: Mutex<MemoryState>,
    wake: Notify,
    /// Batches held.
    size: Gauge,
    dropped: [Counter; 3],
}

struct MemoryState {
    batches: VecDeque<Batch>,
    /// What the batches count for, by `sizer`.
    used: usize,
    capacity: usize,
    sizer: Sizer,
    in_flight: usize,
    closed: bool,
    /// Items dropped to make room since that was last logged, and when it was.
    drops: Throttle,
}

/// A batch taken from a memory queue: dropped unsettled, it goes back to the front.
struct MemoryTaken {
    batch: Option<Batch>,
    backlog: Arc<MemoryBacklog>,
}

impl Drop for MemoryTaken {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.backlog.give_back(batch);
        }
    }
}

impl MemoryBacklog {
    fn new(config: &QueueConfig, size: Gauge, dropped: [Counter; 3]) -> MemoryBacklog {
        MemoryBacklog {
            state: Mutex::new(MemoryState {
                batches: VecDeque::new(),
                used: 0,
                capacity: config.queue_size,
                sizer: config.sizer,
                in_flight: 0,
                closed: false,
                drops: Throttle::default(),
            }),
            wake: Notify::new(),
            size,
            dropped,
        }
    }

    fn push(&self, mut batch: Batch, when_full: Overflow) -> Result<(), ConsumeError> {
        // Held encoded: every delivery attempt sends the same bytes.
        batch.encode();
        let mut state = self.state.lock().unwrap();
        let size = state.sizer.size(&batch);
        if size > state.capacity {
            return Err(ConsumeError::Rejected(format!(
                "a batch of {size} {:?} is larger than the whole sending queue ({})",
                state.sizer, state.capacity
            )));
        }
        while state.used + size > state.capacity {
            if when_full == Overflow::Backpressure {
                return Err(ConsumeError::Exhausted(
                    "the sending queue is full, retry later".into(),
                ));
            }
            let Some(oldest) = state.batches.pop_front() else {
                break;
            };
            state.used -= state.sizer.size(&oldest);
            self.dropped[oldest.signal() as usize].add(oldest.items());
            // Said once in a while, not once per batch.
            if let Some(items) = state.drops.due(oldest.items()) {
                tracing::warn!(
                    items,
                    "sending queue full: dropped the oldest data to make room"
                );
            }
        }
        state.used += size;
        state.batches.push_back(batch);
        self.size.set(state.batches.len() as i64);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    async fn next(self: &Arc<Self>) -> Option<MemoryTaken> {
        loop {
            let woken = self.wake.notified();
            {
                let mut state = self.state.lock().unwrap();
                if let Some(batch) = state.batches.pop_front() {
                    state.used -= state.sizer.size(&batch);
                    state.in_flight += 1;
                    self.size.set(state.batches.len() as i64);
                    return Some(MemoryTaken {
                        batch: Some(batch),
                        backlog: self.clone(),
                    });
                }
                if state.closed && state.in_flight == 0 {
                    return None;
                }
            }
            woken.await;
        }
    }

    fn give_back(&self, batch: Batch) {
        let mut state = self.state.lock().unwrap();
        state.in_flight -= 1;
        state.used += state.sizer.size(&batch);
        state.batches.push_front(batch);
        self.size.set(state.batches.len() as i64);
        drop(state);
        self.wake.notify_one();
    }

    fn settled(&self) {
        self.state.lock().unwrap().in_flight -= 1;
        // A retired queue's worker may be waiting to learn that nothing is left.
        self.wake.notify_waiters();
    }

    fn resize(&self, sizer: Sizer, capacity: usize) {
        let mut state = self.state.lock().unwrap();
        state.used = state.batches.iter().map(|b| sizer.size(b)).sum();
        (state.sizer, state.capacity) = (sizer, capacity);
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.wake.notify_waiters();
    }

    fn reopen(&self) {
        self.state.lock().unwrap().closed = false;
    }

    /// The queue stops for good: what it still holds is dropped, counted and logged.
    fn abandon(&self, exporter: &str) {
        let mut state = self.state.lock().unwrap();
        let items: usize = state.batches.iter().map(Batch::items).sum();
        for batch in state.batches.drain(..) {
            self.dropped[batch.signal() as usize].add(batch.items());
        }
        self.size.set(0);
        if items > 0 {
            tracing::warn!(
                exporter,
                items,
                "stopped with data still in the sending queue: dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests;
