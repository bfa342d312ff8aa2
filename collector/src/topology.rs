//! The running collector: components built from a [`Config`] and wired into pipelines, changed
//! in place by [`Topology::apply`].
//!
//! Applying a config is a diff against the running one, in two phases. Prepare builds what is
//! new or changed (exporters, processor chains, listeners on new endpoints) and can fail without
//! touching anything that runs. Commit cannot fail: receivers switch to the new routes, settings
//! that change in place are stored, and what is no longer used drains and stops on its own as
//! its last reference goes away.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use odigos_proto::Signal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ComponentId, Config, PipelineId};
use crate::connector::Connector;
use crate::consumer::{Next, fanout};
use crate::exporter::queue::Queues;
use crate::extension::{self, Status};
use crate::processor::{Built, Updater};
use crate::receiver::{self, Routes};
use crate::telemetry::{ComponentHealth, HealthBoard, Registry};

/// What components need from the running collector.
#[derive(Clone)]
pub struct Context {
    pub registry: Registry,
    pub health: HealthBoard,
    /// Background tasks (batchers, queue workers, retiring servers) that must finish before
    /// shutdown completes.
    pub tasks: TaskTracker,
    /// Cancelled when the shutdown grace period is over: deliveries stop where they are.
    pub shutdown: CancellationToken,
    /// The sending queues, so that a rebuilt exporter takes over its predecessor's.
    pub queues: Queues,
    /// Whether the pipelines run and with what config, for extensions.
    pub status: Arc<Status>,
}

impl Context {
    pub fn new() -> Context {
        Context {
            registry: Registry::default(),
            health: HealthBoard::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            queues: Queues::default(),
            status: Arc::default(),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

/// After the grace period, how long stopped deliveries get to put their data back.
const STOPPING: Duration = Duration::from_secs(2);

/// A running collector.
pub struct Topology {
    config: Option<Config>,
    context: Context,
    exporters: BTreeMap<ComponentId, Next>,
    connectors: BTreeMap<ComponentId, Arc<Connector>>,
    pipelines: BTreeMap<PipelineId, Chain>,
    receivers: BTreeMap<ComponentId, Box<dyn receiver::Running>>,
    extensions: BTreeMap<ComponentId, extension::Running>,
    metrics: Option<MetricsServer>,
}

/// One pipeline's processor instances, ending in the shared exporters and connectors.
struct Chain {
    entry: Next,
    /// In-place updaters, one per processor, in pipeline order.
    processors: Vec<Option<Updater>>,
}

struct MetricsServer {
    address: String,
    local: std::net::SocketAddr,
    server: receiver::Server,
}

/// What an apply changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Components and pipelines built anew (`exporters.otlp`, `pipelines.traces`, ...).
    pub built: Vec<String>,
    /// Components whose settings changed in place, without rewiring.
    pub updated: Vec<String>,
    /// Components and pipelines removed or replaced; they drain and stop.
    pub retired: Vec<String>,
    /// Time from the call to the new config being in effect.
    pub took: Duration,
}

impl Applied {
    pub fn is_noop(&self) -> bool {
        self.built.is_empty() && self.updated.is_empty() && self.retired.is_empty()
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return write!(f, "no changes");
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "built: {}; updated in place: {}; retired: {} (in {:?})",
            list(&self.built),
            list(&self.updated),
            list(&self.retired),
            self.took
        )
    }
}

/// Why a config could not be applied; the running one is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ApplyError(pub Vec<String>);

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl Topology {
    /// Starts a collector on `config`.
    pub async fn start(config: &Config) -> Result<Topology, ApplyError> {
        let mut topology = Topology {
            config: None,
            context: Context::new(),
            exporters: BTreeMap::new(),
            connectors: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            receivers: BTreeMap::new(),
            extensions: BTreeMap::new(),
            metrics: None,
        };
        topology.apply(config.clone()).await?;
        Ok(topology)
    }

    /// The config in effect.
    pub fn config(&self) -> &Config {
        self.config
            .as_ref()
            .expect("a started topology has a config")
    }

    /// The collector's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.context.registry
    }

    /// The health of every running component, by `section.id`. Receivers, processors and
    /// connectors are healthy while they run; exporters report their latest send, their queue
    /// and what they lost.
    pub fn health(&self) -> BTreeMap<String, ComponentHealth> {
        let config = self.config();
        let mut health = BTreeMap::new();
        for id in self.receivers.keys() {
            health.insert(format!("receivers.{id}"), ComponentHealth::running());
        }
        for id in config.processors.keys() {
            health.insert(format!("processors.{id}"), ComponentHealth::running());
        }
        for id in config.connectors.keys() {
            health.insert(format!("connectors.{id}"), ComponentHealth::running());
        }
        for id in self.extensions.keys() {
            health.insert(format!("extensions.{id}"), ComponentHealth::running());
        }
        let registry = &self.context.registry;
        for id in config.exporters.keys() {
            let name = format!("exporters.{id}");
            let mut reported = self
                .context
                .health
                .get(&name)
                .unwrap_or_else(ComponentHealth::running);
            let labels = [("exporter", id.as_str())];
            let total = |what: &str| -> i64 {
                Signal::ALL
                    .iter()
                    .filter_map(|s| {
                        registry.value(
                            &format!("otelcol_exporter_{what}_{}", s.item_name()),
                            &labels,
                        )
                    })
                    .sum()
            };
            let queued = registry.value("otelcol_exporter_queue_size", &labels);
            reported.detail = format!(
                "queue {} batches, {} items dropped from a full queue, {} given up",
                queued.unwrap_or(0),
                total("queue_dropped"),
                total("send_failed"),
            );
            health.insert(name, reported);
        }
        health
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.local)
    }

    /// Where each running extension serves, e.g. `health_check` → `127.0.0.1:13133`.
    pub fn extension_endpoints(&self) -> BTreeMap<String, String> {
        self.extensions
            .iter()
            .filter_map(|(id, running)| Some((id.to_string(), running.local()?.to_string())))
            .collect()
    }

    /// Whether the pipelines run, as `health_check` answers.
    pub fn status(&self) -> &Arc<Status> {
        &self.context.status
    }

    /// Where each receiver listens, e.g. `otlp` → `grpc 127.0.0.1:4317`.
    pub fn endpoints(&self) -> BTreeMap<String, Vec<String>> {
        self.receivers
            .iter()
            .map(|(id, running)| (id.to_string(), running.endpoints()))
            .collect()
    }

    /// Makes `config` the running config, changing only what differs. On error nothing that
    /// runs is disturbed.
    pub async fn apply(&mut self, config: Config) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        let mut applied = Applied::default();
        let old = self.config.as_ref();

        // Prepare: extensions, first, so that storage directories exist before queues open in
        // them. One whose endpoint is unchanged keeps its socket.
        let mut errors = Vec::new();
        let mut extensions = Vec::new();
        for (id, config) in &config.extensions {
            match extension::prepare(id, config, self.extensions.get(id), &self.context).await {
                Ok(prepared) => extensions.push((id.clone(), prepared)),
                Err(e) => errors.push(format!("extensions.{id}: {e}")),
            }
        }
        if !errors.is_empty() {
            for (_, prepared) in extensions {
                prepared.abort().await;
            }
            return Err(ApplyError(errors));
        }

        // Prepare: exporters. An unchanged exporter keeps its instance, queue and connections;
        // a changed one takes over its predecessor's queue.
        let mut exporters = BTreeMap::new();
        for (id, exporter) in &config.exporters {
            if old.and_then(|c| c.exporters.get(id)) == Some(exporter) {
                exporters.insert(id.clone(), self.exporters[id].clone());
                continue;
            }
            match exporter.build(id, &self.context) {
                Ok(next) => {
                    exporters.insert(id.clone(), next);
                    applied.built.push(format!("exporters.{id}"));
                }
                Err(e) => errors.push(format!("exporters.{id}: {e}")),
            }
        }
        if !errors.is_empty() {
            for (_, prepared) in extensions {
                prepared.abort().await;
            }
            return Err(ApplyError(errors));
        }

        // Prepare: connectors. An unchanged one keeps its instance; its targets are set on
        // commit, once the pipelines it feeds exist.
        let mut connectors = BTreeMap::new();
        for (id, connector) in &config.connectors {
            let kept = old.and_then(|c| c.connectors.get(id)) == Some(connector);
            let instance = match self.connectors.get(id) {
                Some(running) if kept => running.clone(),
                _ => {
                    applied.built.push(format!("connectors.{id}"));
                    connector.build()
                }
            };
            connectors.insert(id.clone(), instance);
        }
        // What a pipeline's `exporters` names: an exporter or a connector.
        let sink = |id: &ComponentId| -> Next {
            match exporters.get(id) {
                Some(exporter) => exporter.clone(),
                None => connectors[id].clone(),
            }
        };
        let running_sink = |id: &ComponentId| -> Option<Next> {
            self.exporters
                .get(id)
                .cloned()
                .or_else(|| self.connectors.get(id).map(|c| c.clone() as Next))
        };

        // Prepare: pipelines. One whose processors can all stay (same or updatable in place)
        // and whose exporters are the same instances keeps its chain.
        let mut kept: Vec<&PipelineId> = Vec::new();
        let mut built: BTreeMap<PipelineId, Chain> = BTreeMap::new();
        for (pid, pipeline) in &config.pipelines {
            let keep = old.is_some_and(|old| {
                old.pipelines.get(pid).is_some_and(|before| {
                    before.processors == pipeline.processors
                        && before.exporters == pipeline.exporters
                        && pipeline.exporters.iter().all(|e| {
                            running_sink(e).is_some_and(|running| Arc::ptr_eq(&running, &sink(e)))
                        })
                        && pipeline.processors.iter().all(|p| {
                            let (was, now) = (&old.processors[p], &config.processors[p]);
                            was == now || was.updatable_to(now)
                        })
                })
            });
            if keep {
                kept.push(pid);
                continue;
            }
            let mut entry = fanout(pipeline.exporters.iter().map(sink).collect());
            let mut processors = Vec::new();
            for id in pipeline.processors.iter().rev() {
                let Built { next, update } =
                    config.processors[id].build(id, pid.signal, entry, &self.context);
                entry = next;
                processors.push(update);
            }
            processors.reverse();
            built.insert(pid.clone(), Chain { entry, processors });
            applied.built.push(format!("pipelines.{pid}"));
        }
        let entry_of = |pid: &PipelineId| -> Next {
            built.get(pid).map_or_else(
                || self.pipelines[pid].entry.clone(),
                |chain| chain.entry.clone(),
            )
        };
        // The entries of the pipelines that receive from `id`.
        let fed_by = |id: &ComponentId| -> Vec<(&PipelineId, Next)> {
            config
                .pipelines
                .iter()
                .filter(|(_, p)| p.receivers.contains(id))
                .map(|(pid, _)| (pid, entry_of(pid)))
                .collect()
        };

        // Prepare: receivers. Routes are computed now and switched on commit; every receiver
        // that cannot start is reported.
        let mut prepared = Vec::new();
        for (id, receiver) in &config.receivers {
            let mut entries: [Vec<Next>; 3] = Default::default();
            for (pid, entry) in fed_by(id) {
                entries[pid.signal as usize].push(entry);
            }
            if entries.iter().all(Vec::is_empty) {
                tracing::warn!(receiver = %id, "receiver is not used by any pipeline; not started");
                continue;
            }
            let routes = Routes(entries.map(|list| (!list.is_empty()).then(|| fanout(list))));
            let previous = self.receivers.get(id).map(|r| &**r);
            match receiver.prepare(id, previous, routes, &self.context).await {
                Ok(ready) => prepared.push((id.clone(), ready)),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|e| format!("receivers.{id}: {e}")))
                }
            }
        }

        // Prepare: the metrics endpoint, when its address changes.
        let metrics_wanted = config.telemetry.metrics.level != "none";
        let address = &config.telemetry.metrics.endpoint();
        let mut new_metrics = None;
        if metrics_wanted && self.metrics.as_ref().is_none_or(|m| &m.address != address) {
            match start_metrics(address, &self.context.registry).await {
                Ok(server) => new_metrics = Some(server),
                Err(e) => errors.push(format!("service.telemetry.metrics: {e}")),
            }
        }

        if !errors.is_empty() {
            for (_, ready) in prepared {
                ready.abort().await;
            }
            if let Some(server) = new_metrics {
                server.server.stop().await;
            }
            for (_, prepared) in extensions {
                prepared.abort().await;
            }
            return Err(ApplyError(errors));
        }

        // Commit: nothing below can fail. Connectors first, so that data entering through a
        // switched receiver finds every pipeline behind it.
        for (id, connector) in &connectors {
            let downstream = fed_by(id)
                .into_iter()
                .map(|(pid, entry)| (pid.clone(), entry))
                .collect();
            connector.retarget(&downstream);
        }
        let mut retired_servers = Vec::new();
        let mut receivers = BTreeMap::new();
        for (id, ready) in prepared {
            let previous = self.receivers.remove(&id);
            let config_changed =
                old.is_none_or(|old| old.receivers.get(&id) != Some(&config.receivers[&id]));
            if previous.is_none() {
                applied.built.push(format!("receivers.{id}"));
            } else if config_changed {
                applied.updated.push(format!("receivers.{id}"));
            }
            let (running, retired) = ready.commit(previous);
            retired_servers.extend(retired);
            receivers.insert(id, running);
        }
        for (id, running) in std::mem::take(&mut self.receivers) {
            applied.retired.push(format!("receivers.{id}"));
            self.context.tasks.spawn(running.stop());
        }
        self.receivers = receivers;
        for server in retired_servers {
            self.context.tasks.spawn(server.stop());
        }

        // Kept pipelines take their processors' new settings in place.
        if let Some(old) = old {
            for pid in kept {
                let chain = &self.pipelines[pid];
                for (id, update) in config.pipelines[pid]
                    .processors
                    .iter()
                    .zip(&chain.processors)
                {
                    let (was, now) = (&old.processors[id], &config.processors[id]);
                    if was != now {
                        if let Some(update) = update {
                            update(now);
                        }
                        applied
                            .updated
                            .push(format!("pipelines.{pid}.processors.{id}"));
                    }
                }
            }
        }
        let mut pipelines = BTreeMap::new();
        for (pid, chain) in std::mem::take(&mut self.pipelines) {
            if config.pipelines.contains_key(&pid) && !built.contains_key(&pid) {
                pipelines.insert(pid, chain);
            } else {
                applied.retired.push(format!("pipelines.{pid}"));
            }
        }
        pipelines.extend(built);
        self.pipelines = pipelines;

        for (id, running) in &self.connectors {
            if !connectors
                .get(id)
                .is_some_and(|now| Arc::ptr_eq(now, running))
            {
                applied.retired.push(format!("connectors.{id}"));
            }
        }
        self.connectors = connectors;
        for id in self.exporters.keys() {
            if !exporters
                .get(id)
                .is_some_and(|now| Arc::ptr_eq(now, &self.exporters[id]))
            {
                applied.retired.push(format!("exporters.{id}"));
            }
        }
        self.exporters = exporters;

        if let Some(server) = new_metrics {
            if let Some(previous) = self.metrics.replace(server) {
                self.context.tasks.spawn(previous.server.stop());
            }
        } else if !metrics_wanted && let Some(previous) = self.metrics.take() {
            self.context.tasks.spawn(previous.server.stop());
        }

        // Extensions switch last: a new one sees the config it serves.
        let mut running_extensions = BTreeMap::new();
        for (id, prepared) in extensions {
            let previous = self.extensions.remove(&id);
            let changed = previous
                .as_ref()
                .map(|p| p.config != config.extensions[&id]);
            match changed {
                None => applied.built.push(format!("extensions.{id}")),
                Some(true) => applied.updated.push(format!("extensions.{id}")),
                Some(false) => {}
            }
            let (running, retired) = prepared.commit(previous);
            if let Some(server) = retired {
                self.context.tasks.spawn(server.stop());
            }
            running_extensions.insert(id, running);
        }
        for (id, running) in std::mem::take(&mut self.extensions) {
            applied.retired.push(format!("extensions.{id}"));
            self.context.tasks.spawn(running.stop());
        }
        self.extensions = running_extensions;
        extension::publish_endpoints(&self.context, &self.extensions);

        self.context
            .registry
            .set_resource(config.telemetry.resource_attributes());
        crate::telemetry::set_json_logs(
            config.telemetry.logs.encoding == crate::config::LogEncoding::Json,
        );
        self.context.status.set_config(&config);
        self.context.status.set_ready(true);
        self.config = Some(config);
        applied.took = started.elapsed();
        Ok(applied)
    }

    /// Stops within `grace`, whatever the destinations do: receivers stop taking data, batches
    /// flush into the sending queues, and queues deliver what they can. When the grace period
    /// is over, deliveries stop where they are: a file queue keeps what is undelivered for the
    /// next start; what is left in a memory queue is dropped and counted.
    pub async fn shutdown(self, grace: Duration) {
        // From now on `health_check` answers 503, until it stops last.
        self.context.status.set_ready(false);
        let deadline = tokio::time::Instant::now() + grace;
        let receivers = self.receivers.into_values().map(|running| running.stop());
        if tokio::time::timeout_at(deadline, futures_util::future::join_all(receivers))
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "receivers did not finish their requests in the grace period"
            );
        }
        // Pipelines end when their receivers are gone: each stage's task sees its input close,
        // flushes, and drops its own next stage; an exporter with no pipeline left retires.
        drop(self.pipelines);
        drop(self.connectors);
        drop(self.exporters);
        self.context.tasks.close();
        if tokio::time::timeout_at(deadline, self.context.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "shutdown grace period over: stopping deliveries (file queues keep what is undelivered)"
            );
        }
        self.context.shutdown.cancel();
        let _ = tokio::time::timeout(STOPPING, self.context.tasks.wait()).await;
        if let Some(metrics) = self.metrics {
            metrics.server.stop().await;
        }
        for running in self.extensions.into_values() {
            running.stop().await;
        }
    }
}

async fn start_metrics(address: &str, registry: &Registry) -> Result<MetricsServer, String> {
    let listener = receiver::listen(address).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, "metrics served");
    let registry = registry.clone();
    let server = receiver::Server::spawn("metrics", address, local.to_string(), |shutdown| {
        registry.serve(listener, shutdown)
    });
    Ok(MetricsServer {
        address: address.to_string(),
        local,
        server,
    })
}

#[cfg(test)]
mod tests;
