//! The running collector: components built from a [`Config`] and wired into pipelines.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use odigos_proto::Signal;
use tokio_util::task::TaskTracker;

use crate::config::{ComponentId, Config};
use crate::consumer::{Next, fanout};
use crate::receiver;
use crate::telemetry::Registry;

/// What components need from the running collector.
#[derive(Clone)]
pub struct Context {
    pub registry: Registry,
    /// Background tasks (batchers, queue workers) that must finish before shutdown completes.
    pub tasks: TaskTracker,
}

/// A started collector.
pub struct Topology {
    receivers: Vec<(ComponentId, receiver::Running)>,
    metrics: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    metrics_address: Option<std::net::SocketAddr>,
    context: Context,
}

impl Topology {
    /// Builds every component, then starts receivers last so no data arrives before its
    /// pipeline is ready. On error nothing is left running.
    pub async fn start(config: &Config) -> Result<Topology, Vec<String>> {
        let context = Context {
            registry: Registry::default(),
            tasks: TaskTracker::new(),
        };
        let mut errors = Vec::new();

        let mut exporters: BTreeMap<&ComponentId, Next> = BTreeMap::new();
        for (id, exporter) in &config.exporters {
            match exporter.build(id, &context) {
                Ok(next) => {
                    exporters.insert(id, next);
                }
                Err(e) => errors.push(format!("exporters.{id}: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        // Each pipeline gets its own processor instances, ending in the shared exporters.
        let mut entries: BTreeMap<(&ComponentId, Signal), Vec<Next>> = BTreeMap::new();
        for (pipeline_id, pipeline) in &config.pipelines {
            let mut next = fanout(
                pipeline
                    .exporters
                    .iter()
                    .map(|id| exporters[id].clone())
                    .collect(),
            );
            for id in pipeline.processors.iter().rev() {
                next = config.processors[id].build(id, pipeline_id.signal, next, &context);
            }
            for id in &pipeline.receivers {
                entries
                    .entry((id, pipeline_id.signal))
                    .or_default()
                    .push(next.clone());
            }
        }
        drop(exporters);

        let metrics_address;
        let metrics = if config.telemetry.metrics.level == "none" {
            metrics_address = None;
            None
        } else {
            let listener = match receiver::listen(&config.telemetry.metrics.address).await {
                Ok(listener) => listener,
                Err(e) => return Err(vec![format!("service.telemetry.metrics.address: {e}")]),
            };
            metrics_address = listener.local_addr().ok();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let registry = context.registry.clone();
            let server = tokio::spawn(async move {
                let _ = registry
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            Some((stop, server))
        };

        let mut topology = Topology {
            receivers: Vec::new(),
            metrics,
            metrics_address,
            context,
        };
        for (id, receiver) in &config.receivers {
            let consumers: HashMap<Signal, Next> = Signal::ALL
                .into_iter()
                .filter_map(|signal| {
                    entries
                        .remove(&(id, signal))
                        .map(|list| (signal, fanout(list)))
                })
                .collect();
            if consumers.is_empty() {
                tracing::warn!(receiver = %id, "receiver is not used by any pipeline; not started");
                continue;
            }
            match receiver.start(id, consumers, &topology.context).await {
                Ok(running) => topology.receivers.push((id.clone(), running)),
                Err(e) => errors.push(format!("receivers.{id}: {e}")),
            }
        }
        if !errors.is_empty() {
            topology.shutdown(Duration::from_secs(5)).await;
            return Err(errors);
        }
        Ok(topology)
    }

    /// The collector's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.context.registry
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address
    }

    /// Stops receivers, then lets batches flush and queues drain for up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        for (id, running) in self.receivers {
            running.stop().await;
            tracing::debug!(receiver = %id, "receiver stopped");
        }
        // Pipelines end when their receivers are gone: each stage's task sees its input close,
        // flushes, and drops its own next stage.
        self.context.tasks.close();
        if tokio::time::timeout(grace, self.context.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "shutdown grace period over: abandoning data still queued"
            );
        }
        if let Some((stop, server)) = self.metrics {
            let _ = stop.send(());
            let _ = server.await;
        }
    }
}
