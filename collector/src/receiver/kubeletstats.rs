//! The `kubeletstats` receiver: the node's, pods', containers' and volumes' usage from the
//! kubelet's `/stats/summary`, every `collection_interval`, with the OpenTelemetry Collector's
//! keys and metric names (`k8s.node.cpu.time`, `k8s.pod.memory.working_set`,
//! `container.cpu.usage`, `k8s.volume.available`, ...).
//!
//! `auth_type: serviceAccount` presents the pod's service account token (read again at each
//! collection, as it is rotated) and trusts the cluster's CA; `tls` presents `cert_file` and
//! `key_file`; `none` asks over plain HTTP (the kubelet's read-only port). A kubelet that is
//! down, slow or answers what is not a summary is said once, and asked again at the next
//! collection.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use odigos_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use odigos_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, Sum, metric, number_data_point,
};
use serde::Deserialize;

use super::looping::{self, Looped};
use super::{Routes, resource_metrics, rfc3339_nanos, text, unix_nanos};
use crate::config::{ComponentConfig, ComponentId};
use crate::exporter::TlsConfig;
use crate::exporter::tls::Connector;
use crate::topology::Context;
use crate::{Batch, Decoded};

/// Where a pod finds its service account's token and the cluster's CA.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The most a summary may weigh.
const MAX_SUMMARY: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletstatsConfig {
    #[serde(with = "crate::yaml::duration")]
    pub collection_interval: Duration,
    #[serde(with = "crate::yaml::duration")]
    pub initial_delay: Duration,
    /// The kubelet: `host:port` (HTTPS, or HTTP with `auth_type: none`) or a URL.
    pub endpoint: String,
    pub auth_type: AuthType,
    pub insecure_skip_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Of `node`, `pod`, `container` and `volume`.
    pub metric_groups: Vec<MetricGroup>,
    /// This node's name, for `k8s.node.name` when the summary lacks it.
    pub node: Option<String>,
    /// Metrics turned off or on by name.
    pub metrics: std::collections::BTreeMap<String, Toggle>,
}

impl Default for KubeletstatsConfig {
    fn default() -> Self {
        KubeletstatsConfig {
            collection_interval: Duration::from_secs(10),
            initial_delay: Duration::from_secs(1),
            endpoint: String::new(),
            auth_type: AuthType::Tls,
            insecure_skip_verify: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            metric_groups: vec![MetricGroup::Container, MetricGroup::Pod, MetricGroup::Node],
            node: None,
            metrics: Default::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    #[serde(rename = "tls")]
    Tls,
    #[serde(rename = "none")]
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricGroup {
    Node,
    Pod,
    Container,
    Volume,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

impl ComponentConfig for KubeletstatsConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let at = |key: &str| vec![key.to_string()];
        if self.collection_interval.is_zero() {
            problems.push((at("collection_interval"), "must be more than zero".into()));
        }
        if self.auth_type == AuthType::Tls && (self.cert_file.is_none() || self.key_file.is_none())
        {
            problems.push((
                at("auth_type"),
                "tls presents a client certificate: give cert_file and key_file (or use serviceAccount)".into(),
            ));
        }
        if self.auth_type != AuthType::None {
            for (key, problem) in self.tls().validate() {
                problems.push((vec![key.last().cloned().unwrap_or_default()], problem));
            }
        }
        if self.metric_groups.is_empty() {
            problems.push((
                at("metric_groups"),
                "list at least one of node, pod, container, volume".into(),
            ));
        }
        problems
    }
}

impl KubeletstatsConfig {
    fn tls(&self) -> TlsConfig {
        // The cluster's CA, unless any certificate will do.
        let service_account =
            self.auth_type == AuthType::ServiceAccount && !self.insecure_skip_verify;
        TlsConfig {
            insecure_skip_verify: self.insecure_skip_verify,
            ca_file: self
                .ca_file
                .clone()
                .or_else(|| service_account.then(|| PathBuf::from(SERVICE_ACCOUNT).join("ca.crt"))),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ..TlsConfig::default()
        }
    }

    /// The summary's URL.
    fn url(&self) -> String {
        let endpoint = if self.endpoint.is_empty() {
            let host = std::env::var("K8S_NODE_NAME")
                .ok()
                .or_else(|| self.node.clone())
                .unwrap_or_else(|| "localhost".into());
            let port = if self.auth_type == AuthType::None {
                10255
            } else {
                10250
            };
            format!("{host}:{port}")
        } else {
            self.endpoint.clone()
        };
        let endpoint = endpoint.trim_end_matches('/');
        if endpoint.contains("://") {
            format!("{endpoint}/stats/summary")
        } else if self.auth_type == AuthType::None {
            format!("http://{endpoint}/stats/summary")
        } else {
            format!("https://{endpoint}/stats/summary")
        }
    }
}

/// What the task needs of a config, made once.
pub struct Settings {
    config: KubeletstatsConfig,
    url: http::Uri,
    client: Client<Connector, Full<Bytes>>,
    /// The service account token's file, with `auth_type: serviceAccount`.
    token: Option<PathBuf>,
}

impl Settings {
    fn new(config: &KubeletstatsConfig, token: Option<PathBuf>) -> Result<Settings, String> {
        let url = config.url();
        let url = url.parse().map_err(|e| format!("endpoint: {url}: {e}"))?;
        let connector = Connector::for_https(&config.tls(), &[b"http/1.1"])?;
        Ok(Settings {
            config: config.clone(),
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            token,
        })
    }

    /// Asks the kubelet for its summary.
    async fn summary(&self) -> Result<Summary, String> {
        let mut request =
            http::Request::get(&self.url).header(http::header::ACCEPT, "application/json");
        if let Some(file) = &self.token {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("the service account token {}: {e}", file.display()))?;
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let timeout = self.config.collection_interval.min(Duration::from_secs(30));
        let asked = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{}: {e}", self.url))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_SUMMARY)
                .collect()
                .await
                .map_err(|e| format!("{}: {e}", self.url))?
                .to_bytes();
            if !status.is_success() {
                let said = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("{} answered {status}: {said}", self.url));
            }
            serde_json::from_slice::<Summary>(&body)
                .map_err(|e| format!("{} answered what is not a kubelet summary: {e}", self.url))
        };
        tokio::time::timeout(timeout, asked)
            .await
            .map_err(|_| format!("{} did not answer within {timeout:?}", self.url))?
    }
}

pub(super) fn prepare(
    config: &KubeletstatsConfig,
    id: &ComponentId,
    routes: Routes,
    context: &Context,
) -> Result<looping::Prepared<Settings>, Vec<String>> {
    let token = (config.auth_type == AuthType::ServiceAccount)
        .then(|| PathBuf::from(SERVICE_ACCOUNT).join("token"));
    prepare_with(config, token, id, routes, context)
}

fn prepare_with(
    config: &KubeletstatsConfig,
    token: Option<PathBuf>,
    id: &ComponentId,
    routes: Routes,
    context: &Context,
) -> Result<looping::Prepared<Settings>, Vec<String>> {
    Ok(looping::Prepared {
        settings: Settings::new(config, token).map_err(|e| vec![e])?,
        routes,
        id: id.clone(),
        context: context.clone(),
        task: |looped| Box::pin(collect(looped)),
        describe: |settings| format!("kubelet {}", settings.url),
    })
}

async fn collect(mut looped: Looped<Settings>) {
    let mut wait = looped.settings.load().config.initial_delay;
    let mut failing: Option<String> = None;
    while looped.wait(wait).await {
        let settings = looped.settings.load_full();
        wait = settings.config.collection_interval;
        let summary = tokio::select! {
            summary = settings.summary() => summary,
            _ = looped.stopped.changed() => return,
        };
        let summary = match summary {
            Ok(summary) => {
                if failing.take().is_some() {
                    tracing::info!(
                        receiver = looped.name,
                        "kubeletstats: the kubelet answers again"
                    );
                }
                summary
            }
            Err(error) => {
                if failing.as_ref() != Some(&error) {
                    tracing::warn!(receiver = looped.name, %error, "kubeletstats: no summary; asking again at each collection");
                    failing = Some(error);
                }
                continue;
            }
        };
        let request = metrics(&summary, &settings.config, unix_nanos());
        let batch = Batch::from_decoded(Decoded::Metrics(request));
        if let Err(e) = looped.output.push(batch).await {
            tracing::warn!(receiver = looped.name, error = %e, "kubeletstats: the pipeline refused a collection");
        }
    }
}

/// The kubelet's summary, as much of it as is read (`/stats/summary`, stats/v1alpha1).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    node: NodeStats,
    pods: Vec<PodStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NodeStats {
    node_name: String,
    start_time: Option<String>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    network: Option<Network>,
    fs: Option<Fs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PodStats {
    pod_ref: PodRef,
    start_time: Option<String>,
    containers: Vec<ContainerStats>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    network: Option<Network>,
    volume: Vec<VolumeStats>,
    #[serde(rename = "ephemeral-storage")]
    ephemeral_storage: Option<Fs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodRef {
    name: String,
    namespace: String,
    uid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ContainerStats {
    name: String,
    start_time: Option<String>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    rootfs: Option<Fs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct VolumeStats {
    name: String,
    #[serde(flatten)]
    fs: Fs,
    pvc_ref: Option<PodRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Cpu {
    usage_nano_cores: Option<u64>,
    usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Memory {
    available_bytes: Option<u64>,
    usage_bytes: Option<u64>,
    working_set_bytes: Option<u64>,
    rss_bytes: Option<u64>,
    page_faults: Option<u64>,
    major_page_faults: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Network {
    interfaces: Vec<Interface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Interface {
    name: String,
    rx_bytes: Option<u64>,
    rx_errors: Option<u64>,
    tx_bytes: Option<u64>,
    tx_errors: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Fs {
    available_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
    used_bytes: Option<u64>,
    inodes: Option<u64>,
    inodes_free: Option<u64>,
    inodes_used: Option<u64>,
}

/// Metrics of one resource (the node, a pod, a container, a volume), named under `prefix`.
struct Resourced<'a> {
    config: &'a KubeletstatsConfig,
    now: u64,
    start: u64,
    metrics: Vec<Metric>,
}

impl Resourced<'_> {
    fn add(
        &mut self,
        name: String,
        unit: &str,
        kind: Shape,
        value: Option<f64>,
        attributes: Vec<KeyValue>,
    ) {
        let Some(value) = value else { return };
        if self.config.metrics.get(&name).is_some_and(|t| !t.enabled) {
            return;
        }
        let integer = unit == "By" || unit == "{fault}" || unit == "{error}" || unit == "{inode}";
        let point = NumberDataPoint {
            attributes,
            start_time_unix_nano: if matches!(kind, Shape::Counter) {
                self.start
            } else {
                0
            },
            time_unix_nano: self.now,
            value: Some(if integer {
                number_data_point::Value::AsInt(value as i64)
            } else {
                number_data_point::Value::AsDouble(value)
            }),
            ..Default::default()
        };
        // Points of one metric (network by interface and direction) share it.
        if let Some(existing) = self.metrics.iter_mut().find(|m| m.name == name) {
            match &mut existing.data {
                Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
                Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
                _ => {}
            }
            return;
        }
        let data = match kind {
            Shape::Gauge => metric::Data::Gauge(Gauge {
                data_points: vec![point],
            }),
            Shape::Counter => metric::Data::Sum(Sum {
                data_points: vec![point],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        };
        self.metrics.push(Metric {
            name,
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        });
    }

    fn cpu(&mut self, prefix: &str, cpu: &Option<Cpu>) {
        let Some(cpu) = cpu else { return };
        let nanos = |v: Option<u64>| v.map(|v| v as f64 / 1e9);
        self.add(
            format!("{prefix}.cpu.usage"),
            "{cpu}",
            Shape::Gauge,
            nanos(cpu.usage_nano_cores),
            Vec::new(),
        );
        self.add(
            format!("{prefix}.cpu.time"),
            "s",
            Shape::Counter,
            nanos(cpu.usage_core_nano_seconds),
            Vec::new(),
        );
    }

    fn memory(&mut self, prefix: &str, memory: &Option<Memory>) {
        let Some(m) = memory else { return };
        let bytes = |v: Option<u64>| v.map(|v| v as f64);
        for (name, value, unit) in [
            ("available", m.available_bytes, "By"),
            ("usage", m.usage_bytes, "By"),
            ("rss", m.rss_bytes, "By"),
            ("working_set", m.working_set_bytes, "By"),
            ("page_faults", m.page_faults, "1"),
            ("major_page_faults", m.major_page_faults, "1"),
        ] {
            self.add(
                format!("{prefix}.memory.{name}"),
                unit,
                Shape::Gauge,
                bytes(value),
                Vec::new(),
            );
        }
    }

    fn filesystem(&mut self, prefix: &str, fs: &Option<Fs>) {
        let Some(fs) = fs else { return };
        let bytes = |v: Option<u64>| v.map(|v| v as f64);
        self.add(
            format!("{prefix}.filesystem.available"),
            "By",
            Shape::Gauge,
            bytes(fs.available_bytes),
            Vec::new(),
        );
        self.add(
            format!("{prefix}.filesystem.capacity"),
            "By",
            Shape::Gauge,
            bytes(fs.capacity_bytes),
            Vec::new(),
        );
        self.add(
            format!("{prefix}.filesystem.usage"),
            "By",
            Shape::Gauge,
            bytes(fs.used_bytes),
            Vec::new(),
        );
    }

    fn network(&mut self, prefix: &str, network: &Option<Network>) {
        let Some(network) = network else { return };
        for interface in &network.interfaces {
            let on = |direction: &str| {
                vec![
                    text("interface", &interface.name),
                    text("direction", direction),
                ]
            };
            let count = |v: Option<u64>| v.map(|v| v as f64);
            self.add(
                format!("{prefix}.network.io"),
                "By",
                Shape::Counter,
                count(interface.rx_bytes),
                on("receive"),
            );
            self.add(
                format!("{prefix}.network.io"),
                "By",
                Shape::Counter,
                count(interface.tx_bytes),
                on("transmit"),
            );
            self.add(
                format!("{prefix}.network.errors"),
                "{error}",
                Shape::Counter,
                count(interface.rx_errors),
                on("receive"),
            );
            self.add(
                format!("{prefix}.network.errors"),
                "{error}",
                Shape::Counter,
                count(interface.tx_errors),
                on("transmit"),
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Gauge,
    Counter,
}

/// The summary as metrics, a resource each for the node, pods, containers and volumes of the
/// groups `config` asks for.
fn metrics(
    summary: &Summary,
    config: &KubeletstatsConfig,
    now: u64,
) -> ExportMetricsServiceRequest {
    let wants = |group: MetricGroup| config.metric_groups.contains(&group);
    let mut resources: Vec<(Vec<KeyValue>, Vec<Metric>)> = Vec::new();
    let resourced = |start: &Option<String>| Resourced {
        config,
        now,
        start: start.as_deref().and_then(rfc3339_nanos).unwrap_or(0),
        metrics: Vec::new(),
    };
    let node_name = Some(summary.node.node_name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| config.node.clone())
        .unwrap_or_default();
    if wants(MetricGroup::Node) {
        let node = &summary.node;
        let mut r = resourced(&node.start_time);
        r.cpu("k8s.node", &node.cpu);
        r.memory("k8s.node", &node.memory);
        r.filesystem("k8s.node", &node.fs);
        r.network("k8s.node", &node.network);
        resources.push((vec![text("k8s.node.name", &node_name)], r.metrics));
    }
    for pod in &summary.pods {
        let pod_attributes = vec![
            text("k8s.pod.uid", &pod.pod_ref.uid),
            text("k8s.pod.name", &pod.pod_ref.name),
            text("k8s.namespace.name", &pod.pod_ref.namespace),
        ];
        if wants(MetricGroup::Pod) {
            let mut r = resourced(&pod.start_time);
            r.cpu("k8s.pod", &pod.cpu);
            r.memory("k8s.pod", &pod.memory);
            r.filesystem("k8s.pod", &pod.ephemeral_storage);
            r.network("k8s.pod", &pod.network);
            resources.push((pod_attributes.clone(), r.metrics));
        }
        if wants(MetricGroup::Container) {
            for container in &pod.containers {
                let mut r = resourced(&container.start_time);
                r.cpu("container", &container.cpu);
                r.memory("container", &container.memory);
                r.filesystem("container", &container.rootfs);
                let mut attributes = pod_attributes.clone();
                attributes.push(text("k8s.container.name", &container.name));
                resources.push((attributes, r.metrics));
            }
        }
        if wants(MetricGroup::Volume) {
            for volume in &pod.volume {
                let mut r = resourced(&pod.start_time);
                let count = |v: Option<u64>| v.map(|v| v as f64);
                let fs = &volume.fs;
                r.add(
                    "k8s.volume.available".into(),
                    "By",
                    Shape::Gauge,
                    count(fs.available_bytes),
                    Vec::new(),
                );
                r.add(
                    "k8s.volume.capacity".into(),
                    "By",
                    Shape::Gauge,
                    count(fs.capacity_bytes),
                    Vec::new(),
                );
                r.add(
                    "k8s.volume.inodes".into(),
                    "{inode}",
                    Shape::Gauge,
                    count(fs.inodes),
                    Vec::new(),
                );
                r.add(
                    "k8s.volume.inodes.free".into(),
                    "{inode}",
                    Shape::Gauge,
                    count(fs.inodes_free),
                    Vec::new(),
                );
                r.add(
                    "k8s.volume.inodes.used".into(),
                    "{inode}",
                    Shape::Gauge,
                    count(fs.inodes_used),
                    Vec::new(),
                );
                let mut attributes = pod_attributes.clone();
                attributes.push(text("k8s.volume.name", &volume.name));
                if let Some(claim) = &volume.pvc_ref {
                    attributes.push(text("k8s.persistentvolumeclaim.name", &claim.name));
                }
                resources.push((attributes, r.metrics));
            }
        }
    }
    let scope = InstrumentationScope {
        name: "odigos-rs/kubeletstats".into(),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|(attributes, metrics)| resource_metrics(attributes, &scope, metrics))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
