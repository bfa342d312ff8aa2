//! Receivers whose work is a task of their own (reading files, scraping the host or the
//! kubelet) rather than a listener. The task takes its settings anew at each round, so a new
//! config reaches it in place; removing the receiver stops it.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Output, Routes, Server};
use crate::config::ComponentId;
use crate::receiver;
use crate::topology::Context;

/// What a receiver's task works with.
pub(crate) struct Looped<S> {
    /// The receiver's id, for its logs.
    pub name: String,
    pub output: Output,
    pub settings: Arc<ArcSwap<S>>,
    /// Turns true when the receiver is removed or the collector stops.
    pub stopped: watch::Receiver<bool>,
    /// Cancelled when the shutdown's grace period is over: what is in flight is left.
    pub shutdown: CancellationToken,
}

impl<S> Looped<S> {
    /// Waits `duration`; false when the receiver was stopped meanwhile.
    pub async fn wait(&mut self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => !*self.stopped.borrow(),
            _ = self.stopped.changed() => false,
        }
    }
}

/// The task of a receiver.
pub(crate) type Task<S> = fn(Looped<S>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a running receiver says it reads, from its settings.
pub(crate) type Describe<S> = fn(&S) -> String;

/// A receiver's settings made ready: nothing runs until [`receiver::Prepared::commit`].
pub(crate) struct Prepared<S> {
    pub settings: S,
    pub routes: Routes,
    pub id: ComponentId,
    pub context: Context,
    pub task: Task<S>,
    pub describe: Describe<S>,
}

pub(crate) struct Running<S> {
    output: Output,
    settings: Arc<ArcSwap<S>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    describe: Describe<S>,
}

#[async_trait]
impl<S: Send + Sync + 'static> receiver::Running for Running<S> {
    fn endpoints(&self) -> Vec<String> {
        vec![(self.describe)(&self.settings.load())]
    }

    /// Stops the task and waits for it: it finishes what is in flight (until the shutdown's
    /// grace period ends).
    async fn stop(self: Box<Self>) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> receiver::Prepared for Prepared<S> {
    fn commit(
        self: Box<Self>,
        previous: Option<Box<dyn receiver::Running>>,
    ) -> (Box<dyn receiver::Running>, Vec<Server>) {
        if let Some(previous) = previous.and_then(|p| p.into_any().downcast::<Running<S>>().ok()) {
            previous.output.reroute(self.routes);
            previous.settings.store(Arc::new(self.settings));
            return (previous, Vec::new());
        }
        let output = Output::new(self.routes);
        let settings = Arc::new(ArcSwap::from_pointee(self.settings));
        let (stop, stopped) = watch::channel(false);
        let looped = Looped {
            name: self.id.to_string(),
            output: output.clone(),
            settings: settings.clone(),
            stopped,
            shutdown: self.context.shutdown.clone(),
        };
        let task = self.context.tasks.spawn((self.task)(looped));
        let running = Running {
            output,
            settings,
            stop,
            task,
            describe: self.describe,
        };
        (Box::new(running), Vec::new())
    }

    async fn abort(self: Box<Self>) {}
}
