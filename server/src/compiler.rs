//! The config compiler: a pure function from the desired state to what every agent runs.
//!
//! - The node collector takes OTLP from applications and forwards the signals some
//!   destination wants to the gateway; the rest it drops where they enter. In a cluster it
//!   also runs the k8sAttributes Actions, with the pod metadata it reads.
//! - The gateway runs the shared work once per signal (`<signal>/in`: memory limit, the Actions
//!   in a fixed order: addClusterInfo, renameAttribute, deleteAttribute, urlTemplatization
//!   (all of them joined in one processor), piiMasking, spanRenamer, each kind by namespace
//!   and name; templatization sees the ids that masking would hide, masking then covers the
//!   path attributes, and the span renamer sees the templated names; k8sAttributes runs in the
//!   node collectors instead; the noisy-operation filter and tail sampling from Sampling; a
//!   batch), then fans out through a `routing` connector to one pipeline per destination and
//!   signal, each ending in the destination's exporter with a queue of its own: on disk,
//!   bounded, dropping its oldest data when full, so one destination that is down never holds
//!   up the others. The connector sends each resource only to the destinations whose
//!   `sourceSelector` takes its service.
//! - Each Source gets an InstrumentationConfig: the agent settings its InstrumentationRules
//!   and noisy operations give it.
//! - odiglet gets every Source with its agent settings: the processes, and in a cluster the
//!   pods, it traces.
//!
//! The same desired state gives byte-equal output. Secrets never appear in it: they are
//! written to files (named after their digest, so a new value is a new config) and referenced
//! as `${file:PATH}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use odigos_proto::odiglet::{OdigletConfig, ProcessSelector, TracedSource, Workload};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::resource::{
    ActionSpec, AgentConfig, CollectorsGroup, CollectorsGroupSpec, ContainerAgentConfig,
    InstrumentationConfig, InstrumentationConfigSpec, ResourcesSettings, SamplingSpec, Signal,
    Source, SourceScopes, SourcesScopes, WorkloadKind, secret_values,
};
use crate::store::{Desired, Problem};

/// Where the collectors listen and keep files: what differs between `odigos up` and a cluster.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The node collector's OTLP/gRPC and OTLP/HTTP addresses.
    pub node_grpc: String,
    pub node_http: String,
    /// Where the gateway takes OTLP/gRPC from node collectors: `host:port`, or `unix:PATH`
    /// for a Unix socket.
    pub gateway_listen: String,
    /// How node collectors reach the gateway: `http://host:port`, or `unix:///PATH`.
    pub gateway_endpoint: String,
    /// Prometheus self-metrics addresses, when wanted.
    pub node_metrics: Option<String>,
    pub gateway_metrics: Option<String>,
    /// Where secret values are written for the collectors to read.
    pub secrets_dir: PathBuf,
    /// Whether the gateway gets the secret values in its remote config (a file of their own,
    /// which it writes to `secrets_dir` itself) rather than from this machine's `secrets_dir`:
    /// for gateways that do not share the control plane's filesystem, as in a cluster.
    pub secrets_in_config: bool,
    /// Where the gateway keeps each destination's queue on disk; without it, queues are in
    /// memory.
    pub queue_dir: Option<PathBuf>,
    /// Disk each destination's queue may use, in MiB.
    pub queue_mib: u64,
    /// How big the gateway and the node collectors are: their CollectorsGroups say so, and
    /// the memory limiter and in-memory queues keep within it.
    pub gateway: ResourcesSettings,
    pub node: ResourcesSettings,
    /// Whether node collectors can read their node's pods (in a cluster whose control plane
    /// runs them): k8sAttributes Actions run there, they read the pods' log files under
    /// `/var/log/pods` and ask the kubelet for its stats.
    pub pod_metadata: bool,
    /// Where node collectors keep what outlives them (how far each log file was read); without
    /// it, a restarted node collector reads log files from their end.
    pub node_storage: Option<PathBuf>,
}

/// The sizing presets of Odigos, for the collectors of a cluster (`size_s`, `size_m`,
/// `size_l`): CPU and memory limits of each gateway and node collector, and the gateway's
/// replica bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sizing {
    #[default]
    Small,
    Medium,
    Large,
}

impl Sizing {
    pub fn gateway(self) -> ResourcesSettings {
        match self {
            Sizing::Small => sized(300, 300, 1, 5),
            Sizing::Medium => sized(600, 1000, 2, 8),
            Sizing::Large => sized(850, 1250, 3, 12),
        }
    }

    pub fn node(self) -> ResourcesSettings {
        match self {
            Sizing::Small => sized(300, 300, 1, 1),
            Sizing::Medium => sized(500, 500, 1, 1),
            Sizing::Large => sized(750, 750, 1, 1),
        }
    }
}

impl std::str::FromStr for Sizing {
    type Err = String;

    fn from_str(name: &str) -> Result<Sizing, String> {
        match name {
            "size_s" => Ok(Sizing::Small),
            "size_m" => Ok(Sizing::Medium),
            "size_l" => Ok(Sizing::Large),
            _ => Err(format!(
                "unknown sizing preset `{name}`: one of size_s, size_m, size_l"
            )),
        }
    }
}

/// A collector with `memory_mib` of memory and `cpu_millicores` of CPU: all its memory is
/// requested (its memory limiter counts on it) and half its CPU; the limiter refuses data
/// above 80% of the memory, and starts pushing back 20% below that.
pub fn sized(
    memory_mib: u32,
    cpu_millicores: u32,
    min_replicas: u32,
    max_replicas: u32,
) -> ResourcesSettings {
    ResourcesSettings {
        min_replicas,
        max_replicas,
        memory_request_mi_b: memory_mib,
        memory_limit_mi_b: memory_mib,
        cpu_request_millicores: cpu_millicores / 2,
        cpu_limit_millicores: cpu_millicores,
        memory_limiter_limit_mi_b: memory_mib * 4 / 5,
        memory_limiter_spike_limit_mi_b: memory_mib / 5,
    }
}

/// What an accepted Destination became, or why it is not in use.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum DestinationPlan {
    /// Sent to by these gateway pipelines through these exporters (one, or one per signal).
    Active {
        exporters: Vec<String>,
        pipelines: Vec<String>,
    },
    Disabled,
    /// No Source matches its `sourceSelector`.
    Unmatched,
    Refused {
        problem: String,
    },
}

/// Every agent's config, from one desired state.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Collector YAML for the gateway and the node collectors.
    pub gateway: String,
    pub node: String,
    /// One per instrumented Source (keyed by the Source), named `<kind>-<name>` in the
    /// workload's namespace.
    pub workloads: BTreeMap<(String, String), InstrumentationConfig>,
    pub collectors_groups: Vec<CollectorsGroup>,
    /// Secret files to write (path → value) before the configs are pushed.
    pub secret_files: BTreeMap<PathBuf, String>,
    pub destinations: BTreeMap<(String, String), DestinationPlan>,
    /// What odiglet traces on every node.
    pub odiglet: OdigletConfig,
    /// Problems that span resources (a missing Secret, ...); the resource is left out.
    pub problems: Vec<Problem>,
    /// The signals some destination takes: what the node collectors forward.
    pub signals: Vec<Signal>,
}

/// Compiles `desired` for `layout`.
pub fn compile(desired: &Desired, catalog: &Catalog, layout: &Layout) -> Compiled {
    let mut compiled = Compiled {
        gateway: String::new(),
        node: String::new(),
        workloads: BTreeMap::new(),
        collectors_groups: collectors_groups(layout),
        secret_files: BTreeMap::new(),
        destinations: BTreeMap::new(),
        problems: Vec::new(),
        signals: Vec::new(),
        odiglet: OdigletConfig::default(),
    };
    let sampling = joined_sampling(desired);
    let mut gateway = Gateway::new(layout);
    gateway.add_actions(desired);
    gateway.add_sampling(&sampling, desired);
    for ((namespace, name), destination) in &desired.destinations {
        let key = (namespace.clone(), name.clone());
        let plan = gateway.add_destination(
            desired,
            catalog,
            layout,
            namespace,
            name,
            destination,
            &mut compiled,
        );
        if let DestinationPlan::Refused { problem } = &plan {
            compiled.problems.push(Problem {
                source: format!("Destination {namespace}/{name}"),
                line: None,
                resource: None,
                field: None,
                message: problem.clone(),
            });
        }
        compiled.destinations.insert(key, plan);
    }
    let wanted = gateway.signals();
    compiled.signals = wanted.iter().copied().collect();
    compiled.gateway = gateway.finish(layout);
    let pod_metadata = if layout.pod_metadata {
        k8s_attributes(desired)
    } else {
        Vec::new()
    };
    let reading = NodeReading::of(desired, layout, &wanted);
    compiled.node = node_config(layout, &wanted, &pod_metadata, &reading);
    for (key, source) in &desired.sources {
        if let Some(config) = instrumentation_config(source, desired, &sampling) {
            compiled.workloads.insert(key.clone(), config);
        }
    }
    compiled.odiglet = odiglet_config(desired, &sampling);
    compiled
}

fn yaml(value: &Value) -> String {
    odigos_proto::yaml::to_string(value)
}

/// The id suffix of a resource: `namespace.name`.
fn id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

fn memory_limiter(size: &ResourcesSettings) -> Value {
    json!({
        "check_interval": "1s",
        "limit_mib": size.memory_limiter_limit_mi_b,
        "spike_limit_mib": size.memory_limiter_spike_limit_mi_b,
    })
}

/// An in-memory queue's bound: a quarter of the collector's memory.
fn queue_bytes(size: &ResourcesSettings) -> u64 {
    (u64::from(size.memory_limit_mi_b) << 20) / 4
}

fn telemetry(metrics: &Option<String>) -> Value {
    match metrics {
        Some(address) => json!({"metrics": {"address": address}}),
        None => json!({}),
    }
}

/// The node collector: OTLP in, memory limit, the k8sAttributes Actions (`pod_metadata`),
/// batch, OTLP to the gateway. Signals no destination wants are accepted and dropped, so
/// applications see no errors for them.
fn node_config(
    layout: &Layout,
    wanted: &BTreeSet<Signal>,
    pod_metadata: &[(String, Value, Vec<Signal>)],
    reading: &NodeReading,
) -> String {
    let mut pipelines = serde_json::Map::new();
    let mut receivers = serde_json::Map::new();
    receivers.insert(
        "otlp".into(),
        json!({"protocols": {
            "grpc": {"endpoint": layout.node_grpc},
            "http": {"endpoint": layout.node_http},
        }}),
    );
    receivers.extend(
        reading
            .receivers
            .iter()
            .map(|(id, config, _)| (id.clone(), config.clone())),
    );
    for signal in Signal::ALL {
        let (processors, exporter) = if wanted.contains(&signal) {
            let mut processors = vec!["memory_limiter".to_string()];
            processors.extend(
                pod_metadata
                    .iter()
                    .filter(|(_, _, signals)| signals.contains(&signal))
                    .map(|(id, _, _)| id.clone()),
            );
            processors.push("batch".into());
            (json!(processors), "otlp/gateway")
        } else {
            (json!([]), "nop")
        };
        let read = reading.receivers.iter().filter(|(_, _, s)| *s == signal);
        let signal_receivers: Vec<&str> = std::iter::once("otlp")
            .chain(read.map(|(id, _, _)| id.as_str()))
            .collect();
        pipelines.insert(
            signal.pipeline().into(),
            json!({"receivers": signal_receivers, "processors": processors, "exporters": [exporter]}),
        );
    }
    let mut service = json!({"telemetry": telemetry(&layout.node_metrics), "pipelines": pipelines});
    let mut extensions = serde_json::Map::new();
    if let Some((id, config)) = &reading.storage {
        extensions.insert(id.clone(), config.clone());
        service["extensions"] = json!([id]);
    }
    let mut config = json!({
        "receivers": receivers,
        "processors": pod_metadata
            .iter()
            .map(|(id, config, _)| (id.clone(), config.clone()))
            .chain([
                ("memory_limiter".to_string(), memory_limiter(&layout.node)),
                ("batch".to_string(), json!({})),
            ])
            .collect::<serde_json::Map<_, _>>(),
        "exporters": {
            "otlp/gateway": {
                "endpoint": layout.gateway_endpoint,
                "compression": "none",
                // Bounded by bytes: applications are told to retry when it is full.
                "sending_queue": {"sizer": "bytes", "queue_size": queue_bytes(&layout.node)},
            },
            "nop": {},
        },
        "service": service,
    });
    if !extensions.is_empty() {
        config["extensions"] = Value::Object(extensions);
    }
    yaml(&config)
}

/// Where, under a node collector's storage, odiglet keeps for each Source links to the files
/// its processes write their output to (`<namespace>.<name>/<pid>-<fd>.log`).
pub fn process_log_links(node_storage: &std::path::Path) -> PathBuf {
    node_storage.join("process-logs")
}

/// The annotation of a Source that names the files its workload logs to (globs, comma
/// separated), read by the node collector where there is no `/var/log/pods` to read.
pub const LOG_PATHS: &str = "odigos.io/log-paths";

/// What node collectors read of their node besides OTLP, for the signals destinations want:
/// for logs, a `filelog` receiver per Source over its pods' log files (in a cluster) or the
/// files its `odigos.io/log-paths` annotation names; for metrics, `hostmetrics`, and in a
/// cluster `kubeletstats`. A receiver goes (in place) with the last destination of its signal.
struct NodeReading {
    /// `(id, config, signal)` of each receiver.
    receivers: Vec<(String, Value, Signal)>,
    /// The `file_storage` extension where filelog keeps offsets.
    storage: Option<(String, Value)>,
}

impl NodeReading {
    fn of(desired: &Desired, layout: &Layout, wanted: &BTreeSet<Signal>) -> NodeReading {
        const STORAGE: &str = "file_storage/node";
        let mut reading = NodeReading {
            receivers: Vec::new(),
            storage: None,
        };
        if wanted.contains(&Signal::Logs) {
            let storage = layout.node_storage.as_ref().map(|directory| {
                let config =
                    json!({"directory": directory.join("filelog"), "create_directory": true});
                (STORAGE.to_string(), config)
            });
            for (key, source) in &desired.sources {
                let Some(mut config) = log_files(key, source, desired, layout) else {
                    continue;
                };
                let (namespace, name) = key;
                if storage.is_some() {
                    config["storage"] = json!(STORAGE);
                }
                let id = format!("filelog/{namespace}.{name}");
                reading.receivers.push((id, config, Signal::Logs));
            }
            if reading
                .receivers
                .iter()
                .any(|(_, c, _)| c.get("storage").is_some())
            {
                reading.storage = storage;
            }
        }
        if wanted.contains(&Signal::Metrics) {
            let mut scrapers = json!({"cpu": {}, "memory": {}, "load": {}, "disk": {}, "network": {}, "paging": {}});
            // A node collector's pod sees its own mounts and processes; on this machine they
            // are the host's.
            if !layout.pod_metadata {
                scrapers["filesystem"] = json!({});
                scrapers["processes"] = json!({});
            }
            let host = json!({"collection_interval": "30s", "scrapers": scrapers});
            reading
                .receivers
                .push(("hostmetrics".into(), host, Signal::Metrics));
            if layout.pod_metadata {
                // The kubelet's serving certificate is rarely signed by the cluster's CA.
                let kubelet = json!({
                    "endpoint": "${env:ODIGOS_NODE_IP}:10250",
                    "auth_type": "serviceAccount",
                    "insecure_skip_verify": true,
                    "collection_interval": "30s",
                    "metric_groups": ["node", "pod", "container"],
                });
                reading
                    .receivers
                    .push(("kubeletstats".into(), kubelet, Signal::Metrics));
            }
        }
        reading
    }
}

/// The `filelog` receiver of the Source `key`'s log files, if it has any. In a cluster, its
/// pods' files under `/var/log/pods` (for a namespace, every pod's but those of workloads with
/// Sources of their own, which have receivers of their own). On a machine, the globs of its
/// `odigos.io/log-paths` annotation and, for a Source of processes, odiglet's links to the
/// files they write their output to. Records carry the Source's service name.
fn log_files(
    key: &(String, String),
    source: &Source,
    desired: &Desired,
    layout: &Layout,
) -> Option<Value> {
    let spec = &source.spec;
    let workload = &spec.workload;
    if spec.disable_instrumentation {
        return None;
    }
    let namespace = if workload.namespace.is_empty() {
        crate::resource::DEFAULT_NAMESPACE
    } else {
        workload.namespace.as_str()
    };
    let pods = |ns: &str, name: &str| format!("/var/log/pods/{ns}_{name}-*_*/*/*.log");
    let mut resource = serde_json::Map::new();
    let (include, exclude) = match (layout.pod_metadata, workload.kind) {
        // The node collector's pod sees no process's files, and a regex is no glob.
        (true, WorkloadKind::Process) => return None,
        (true, _) if spec.match_workload_name_as_regex => return None,
        (false, _) => {
            let annotations = source.metadata.annotations.as_ref();
            let globs = annotations
                .and_then(|a| a.get(LOG_PATHS))
                .into_iter()
                .flat_map(|text| text.split([',', '\n']))
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from);
            let links = (workload.kind == WorkloadKind::Process)
                .then_some(layout.node_storage.as_ref())
                .flatten()
                .map(|storage| {
                    let (source_namespace, name) = key;
                    let dir = process_log_links(storage).join(format!("{source_namespace}.{name}"));
                    dir.join("*.log").display().to_string()
                });
            (globs.chain(links).collect::<Vec<_>>(), Vec::new())
        }
        (true, WorkloadKind::Namespace) => {
            let own: Vec<String> = desired
                .sources
                .values()
                .map(|s| &s.spec.workload)
                .filter(|w| w.kind != WorkloadKind::Namespace && w.namespace == namespace)
                .map(|w| pods(namespace, &w.name))
                .collect();
            (vec![format!("/var/log/pods/{namespace}_*_*/*/*.log")], own)
        }
        (true, kind) => {
            let kind = format!("{kind:?}").to_lowercase();
            resource.insert(format!("k8s.{kind}.name"), json!(workload.name));
            (vec![pods(namespace, &workload.name)], Vec::new())
        }
    };
    if include.is_empty() {
        return None;
    }
    // A namespace's pods, and processes a regex picks, have no one service name.
    let (service, regex) = service_of(source);
    if workload.kind != WorkloadKind::Namespace && !regex {
        resource.insert("service.name".into(), json!(service));
    }
    let mut config = json!({"include": include, "start_at": "end", "resource": resource});
    if !exclude.is_empty() {
        config["exclude"] = json!(exclude);
    }
    if layout.pod_metadata {
        config["include_file_name"] = json!(false);
        config["include_file_path"] = json!(true);
        config["operators"] = json!([{"type": "container"}]);
    }
    Some(config)
}

/// A `k8sattributes` processor per enabled k8sAttributes Action, with the signals it is for:
/// what it adds to resources from the pod they come from. Node labels and annotations are not
/// read (the Action's status says so).
fn k8s_attributes(desired: &Desired) -> Vec<(String, Value, Vec<Signal>)> {
    use crate::resource::K8sAttributeSource;
    // Where a label or annotation is read, most specific first (the first that has it wins):
    // `fromSources`, else the older single `from`, else the pod.
    let from = |sources: &[K8sAttributeSource], legacy: Option<K8sAttributeSource>| {
        let sources = match sources {
            [] => vec![legacy.unwrap_or(K8sAttributeSource::Pod)],
            sources => sources.to_vec(),
        };
        sources
            .into_iter()
            .filter_map(|s| match s {
                K8sAttributeSource::Pod => Some("pod"),
                K8sAttributeSource::Namespace => Some("namespace"),
                K8sAttributeSource::Node => None,
            })
            .collect::<Vec<_>>()
    };
    let mut processors = Vec::new();
    for ((namespace, name), action) in &desired.actions {
        let spec = &action.spec;
        let Some(k8s) = spec.k8s_attributes.as_deref().filter(|_| !spec.disabled) else {
            continue;
        };
        let mut metadata = Vec::new();
        if k8s.collect_container_attributes {
            metadata.extend([
                "container.id",
                "container.image.name",
                "container.image.tag",
            ]);
        }
        if k8s.collect_replica_set_attributes {
            metadata.push("k8s.replicaset.name");
        }
        if k8s.collect_workload_uid {
            metadata.push("k8s.replicaset.uid");
        }
        if k8s.collect_cluster_uid {
            metadata.push("k8s.cluster.uid");
        }
        let labels: Vec<Value> = k8s
            .labels_attributes
            .iter()
            .flat_map(|l| {
                from(&l.from_sources, l.from).into_iter().map(move |from| {
                    json!({"tag_name": l.attribute_key, "key": l.label_key, "from": from})
                })
            })
            .collect();
        let annotations: Vec<Value> = k8s
            .annotations_attributes
            .iter()
            .flat_map(|a| {
                // The annotations' older `from` is free text: pod, namespace or node.
                let legacy = a.from.as_deref().map(|f| match f {
                    "namespace" => K8sAttributeSource::Namespace,
                    "node" => K8sAttributeSource::Node,
                    _ => K8sAttributeSource::Pod,
                });
                from(&a.from_sources, legacy).into_iter().map(move |from| {
                    json!({"tag_name": a.attribute_key, "key": a.annotation_key, "from": from})
                })
            })
            .collect();
        let config = json!({
            "auth_type": "serviceAccount",
            "extract": {"metadata": metadata, "labels": labels, "annotations": annotations},
        });
        let id = format!("k8sattributes/{}", id(namespace, name));
        processors.push((id, config, spec.signals.clone()));
    }
    processors
}

/// The gateway's config as it is assembled.
struct Gateway {
    processors: serde_json::Map<String, Value>,
    exporters: serde_json::Map<String, Value>,
    pipelines: serde_json::Map<String, Value>,
    /// Processor ids per signal, in order, from Actions and Sampling.
    shared: BTreeMap<Signal, Vec<String>>,
    /// Each destination's pipelines, with the condition on a resource for it to go there
    /// (`None`: every resource).
    routes: Vec<(Option<String>, Vec<String>)>,
}

/// The connector between the shared pipelines and the destinations' ones.
const FAN_OUT: &str = "routing";

impl Gateway {
    fn new(layout: &Layout) -> Gateway {
        let mut processors = serde_json::Map::new();
        processors.insert("memory_limiter".into(), memory_limiter(&layout.gateway));
        processors.insert("batch".into(), json!({}));
        Gateway {
            processors,
            exporters: serde_json::Map::new(),
            pipelines: serde_json::Map::new(),
            shared: Signal::ALL.into_iter().map(|s| (s, Vec::new())).collect(),
            routes: Vec::new(),
        }
    }

    fn add_processor(&mut self, id: String, config: Value, signals: &[Signal]) {
        for signal in signals {
            self.shared.entry(*signal).or_default().push(id.clone());
        }
        self.processors.insert(id, config);
    }

    fn add_actions(&mut self, desired: &Desired) {
        let enabled: Vec<(&(String, String), &ActionSpec)> = desired
            .actions
            .iter()
            .filter(|(_, a)| !a.spec.disabled)
            .map(|(k, a)| (k, &a.spec))
            .collect();
        for ((namespace, name), spec) in &enabled {
            let Some(info) = &spec.add_cluster_info else {
                continue;
            };
            let action = if info.overwrite_existing_values {
                "upsert"
            } else {
                "insert"
            };
            let attributes: Vec<Value> = info
                .cluster_attributes
                .iter()
                .map(|a| json!({"key": a.attribute_name, "value": a.attribute_string_value, "action": action}))
                .collect();
            let config = json!({"attributes": attributes});
            self.add_processor(
                format!("resource/{}", id(namespace, name)),
                config,
                &spec.signals,
            );
        }
        for ((namespace, name), spec) in &enabled {
            let Some(rename) = &spec.rename_attribute else {
                continue;
            };
            let actions: Vec<Value> = rename
                .renames
                .iter()
                .map(|(from, to)| json!({"key": from, "action": "rename", "new_key": to}))
                .collect();
            self.add_attribute_and_resource(namespace, name, actions, &spec.signals);
        }
        for ((namespace, name), spec) in &enabled {
            let Some(delete) = &spec.delete_attribute else {
                continue;
            };
            let actions: Vec<Value> = delete
                .attribute_names_to_delete
                .iter()
                .map(|key| json!({"key": key, "action": "delete"}))
                .collect();
            self.add_attribute_and_resource(namespace, name, actions, &spec.signals);
        }
        self.add_url_templatization(&enabled, desired);
        for ((namespace, name), spec) in &enabled {
            let Some(pii) = &spec.pii_masking else {
                continue;
            };
            let Some((services, languages)) = scope_filter(pii.scopes.as_ref(), desired) else {
                continue;
            };
            let config = json!({
                "services": services,
                "languages": languages,
                "pii_categories": pii.pii_categories,
                "custom_format_maskings": pii.custom_format_maskings.iter().map(|m| json!({
                    "lookup_key": m.lookup_key, "data_format": m.data_format,
                })).collect::<Vec<_>>(),
                "custom_regex_maskings": pii.custom_regex_maskings.iter().map(|m| json!({
                    "regex": m.regex,
                })).collect::<Vec<_>>(),
            });
            let id = format!("odigospiimasking/{}", id(namespace, name));
            self.add_processor(id, config, &[Signal::Traces]);
        }
        for ((namespace, name), spec) in &enabled {
            let Some(renamer) = &spec.span_renamer else {
                continue;
            };
            let config = json!({
                "languages": [sdk_language(&renamer.programming_language)],
                "scope_rules": [{
                    "scope_name": renamer.scope_name,
                    "regex_replacements": renamer.regex_replacements.iter().map(|r| json!({
                        "regex_pattern": r.regex_pattern, "template_text": r.template_text,
                    })).collect::<Vec<_>>(),
                }],
            });
            let id = format!("odigosspanrenamer/{}", id(namespace, name));
            self.add_processor(id, config, &[Signal::Traces]);
        }
        // k8sAttributes needs pod metadata, which comes with Kubernetes: nothing to run here.
    }

    /// Every urlTemplatization Action joins into one processor, as Odigos joins them per
    /// workload: rules without scopes apply to every service (sorted, without duplicates), the
    /// others in groups; the default heuristics run unless a matching group disables them.
    fn add_url_templatization(
        &mut self,
        enabled: &[(&(String, String), &ActionSpec)],
        desired: &Desired,
    ) {
        let actions: Vec<_> = enabled
            .iter()
            .filter_map(|(_, spec)| spec.url_templatization.as_ref())
            .collect();
        if actions.is_empty() {
            return;
        }
        let mut common = BTreeSet::new();
        let mut groups = Vec::new();
        for url in actions {
            for rule in &url.rules {
                match rule.scopes.as_ref().filter(|s| !s.is_empty()) {
                    None => common.extend(rule.templates.iter().cloned()),
                    Some(scopes) => {
                        if let Some((services, languages)) = scope_filter(Some(scopes), desired) {
                            let mut templates = rule.templates.clone();
                            templates.sort();
                            templates.dedup();
                            groups.push(json!({
                                "services": services, "languages": languages,
                                "templatization_rules": templates,
                            }));
                        }
                    }
                }
            }
            for default in &url.default {
                let Some((services, languages)) = scope_filter(default.scopes.as_ref(), desired)
                else {
                    continue;
                };
                let mut settings = json!({"disabled": default.disabled});
                if let Some(policy) = &default.skip_policy {
                    settings["skip_policy"] = json!({
                        "skip_for_non_success_codes": policy.skip_for_non_success_codes,
                        "skip_http_status_codes": policy.skip_http_status_codes,
                    });
                }
                groups.push(json!({
                    "services": services, "languages": languages, "default": settings,
                }));
            }
        }
        let config = json!({"templatization_rules": common, "groups": groups});
        self.add_processor("odigosurltemplate".into(), config, &[Signal::Traces]);
    }

    /// An attribute change applies to item attributes and resource attributes alike.
    fn add_attribute_and_resource(
        &mut self,
        namespace: &str,
        name: &str,
        actions: Vec<Value>,
        signals: &[Signal],
    ) {
        let suffix = id(namespace, name);
        self.add_processor(
            format!("attributes/{suffix}"),
            json!({"actions": actions.clone()}),
            signals,
        );
        self.add_processor(
            format!("resource/{suffix}"),
            json!({"attributes": actions}),
            signals,
        );
    }

    fn add_sampling(&mut self, sampling: &SamplingSpec, desired: &Desired) {
        let noisy: Vec<Value> = sampling
            .noisy_operations
            .iter()
            .filter(|op| !op.disabled && op.percentage_at_most.unwrap_or(0.0) == 0.0)
            .filter_map(|op| {
                let server = op.operation.as_ref()?.http_server.as_ref()?;
                let route = server.route.as_ref()?;
                let mut attributes = vec![json!({"key": "http.route", "value": route})];
                if let Some(method) = &server.method {
                    attributes.push(json!({"key": "http.request.method", "value": method}));
                }
                let mut rule = json!({"match_type": "strict", "attributes": attributes});
                match scope_services(&op.source_scopes, desired) {
                    None => {}
                    Some(services) if services.is_empty() => return None,
                    Some(services) => rule["services"] = json!(services),
                }
                Some(rule)
            })
            .collect();
        // One filter per noisy operation: a filter's fields must all match, and each
        // operation is its own condition.
        for (i, rule) in noisy.into_iter().enumerate() {
            let config = json!({"spans": {"exclude": rule}});
            self.add_processor(format!("filter/noisy-{i}"), config, &[Signal::Traces]);
        }
        let policies = tail_policies(sampling, desired);
        if !policies.is_empty() {
            let config = json!({"decision_wait": "5s", "num_traces": 50000, "policies": policies});
            self.add_processor("tail_sampling".into(), config, &[Signal::Traces]);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_destination(
        &mut self,
        desired: &Desired,
        catalog: &Catalog,
        layout: &Layout,
        namespace: &str,
        name: &str,
        destination: &crate::resource::Destination,
        compiled: &mut Compiled,
    ) -> DestinationPlan {
        let spec = &destination.spec;
        if spec.disabled {
            return DestinationPlan::Disabled;
        }
        let suffix = id(namespace, name);
        let mut sealed = Vec::new();
        let mut seal = |text: String| {
            let digest = hex(&Sha256::digest(text.as_bytes())[..4]);
            let path = layout.secrets_dir.join(format!("{suffix}.{digest}"));
            let reference = format!("${{file:{}}}", path.display());
            sealed.push((path, text));
            reference
        };
        let built = match destination_exporters(
            desired,
            catalog,
            namespace,
            name,
            destination,
            &mut seal,
        ) {
            Ok(built) => built,
            Err(problem) => return DestinationPlan::Refused { problem },
        };
        let selector = match &spec.source_selector {
            Some(selector) => match selected_services(selector, desired) {
                Some(filter) => Some(filter),
                None => return DestinationPlan::Unmatched,
            },
            None => None,
        };
        compiled.secret_files.extend(sealed);
        let condition =
            selector.map(|(match_type, services)| service_condition(match_type, &services));
        let (mut exporters, mut pipelines) = (Vec::new(), Vec::new());
        for DestinationExporter {
            id: exporter,
            kind,
            signals,
            mut config,
        } in built
        {
            if ["otlp", "otlphttp"].contains(&kind.as_str()) {
                config["sending_queue"] = destination_queue(layout);
                // Kept until delivered: a full queue makes room by dropping its oldest data.
                config["retry_on_failure"] = json!({"initial_interval": "1s", "max_interval": "10s", "max_elapsed_time": "0s"});
            }
            self.exporters.insert(exporter.clone(), config);
            for signal in signals {
                let pipeline = format!("{}/{suffix}", signal.pipeline());
                self.pipelines.insert(
                    pipeline.clone(),
                    json!({"receivers": [FAN_OUT], "processors": [], "exporters": [exporter]}),
                );
                pipelines.push(pipeline);
            }
            exporters.push(exporter);
        }
        self.routes.push((condition, pipelines.clone()));
        DestinationPlan::Active {
            exporters,
            pipelines,
        }
    }

    /// The signals some pipeline carries.
    fn signals(&self) -> BTreeSet<Signal> {
        Signal::ALL
            .into_iter()
            .filter(|s| {
                let prefix = format!("{}/", s.pipeline());
                self.pipelines.keys().any(|p| p.starts_with(&prefix))
            })
            .collect()
    }

    fn finish(mut self, layout: &Layout) -> String {
        let mut connectors = serde_json::Map::new();
        if self.pipelines.is_empty() {
            // No destination yet: a placeholder pipeline, which node collectors never feed.
            self.exporters.insert("nop".into(), json!({}));
            self.pipelines.insert(
                "traces".into(),
                json!({"receivers": ["otlp"], "processors": [], "exporters": ["nop"]}),
            );
        } else {
            for signal in self.signals() {
                let mut processors = vec!["memory_limiter".to_string()];
                processors.extend(self.shared[&signal].iter().cloned());
                processors.push("batch".into());
                self.pipelines.insert(
                    format!("{}/in", signal.pipeline()),
                    json!({"receivers": ["otlp"], "processors": processors, "exporters": [FAN_OUT]}),
                );
            }
            connectors.insert(FAN_OUT.into(), self.fan_out());
        }
        // Only the processors some pipeline uses: unused ones would only cost a build.
        let used: BTreeSet<String> = self
            .pipelines
            .values()
            .flat_map(|p| p["processors"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        self.processors.retain(|id, _| used.contains(id));
        let mut config = json!({
            "receivers": {"otlp": {"protocols": {"grpc": grpc_listen(&layout.gateway_listen)}}},
            "processors": self.processors,
            "exporters": self.exporters,
            "service": {"telemetry": telemetry(&layout.gateway_metrics), "pipelines": self.pipelines},
        });
        if !connectors.is_empty() {
            config["connectors"] = Value::Object(connectors);
        }
        // Destination queues on disk live in a `file_storage` extension's directory.
        if let Some(dir) = &layout.queue_dir
            && self
                .exporters
                .values()
                .any(|e| e.get("sending_queue").is_some())
        {
            config["extensions"] =
                json!({QUEUE_STORAGE: {"directory": dir, "create_directory": true}});
            config["service"]["extensions"] = json!([QUEUE_STORAGE]);
        }
        yaml(&config)
    }

    /// The routing table: each destination's pipelines under its selector's condition; a
    /// resource takes every route it matches.
    fn fan_out(&self) -> Value {
        let table: Vec<Value> = self
            .routes
            .iter()
            .map(|(condition, pipelines)| {
                json!({"condition": condition.as_deref().unwrap_or("true"), "pipelines": pipelines})
            })
            .collect();
        json!({"match_once": false, "table": table})
    }
}

/// An OTLP/gRPC receiver's settings for `host:port` or `unix:PATH`.
/// One exporter a Destination becomes, before the gateway gives it a queue.
pub struct DestinationExporter {
    /// `KIND/NAMESPACE.NAME`, with `.SIGNAL` where the type sets something per signal.
    pub id: String,
    pub kind: String,
    pub signals: Vec<Signal>,
    pub config: Value,
}

/// The exporters a Destination becomes: one, or one per signal where its type sets something
/// per signal. `seal` turns each secret value into what the config holds in its place.
pub fn destination_exporters(
    desired: &Desired,
    catalog: &Catalog,
    namespace: &str,
    name: &str,
    destination: &crate::resource::Destination,
    seal: &mut dyn FnMut(String) -> String,
) -> Result<Vec<DestinationExporter>, String> {
    let spec = &destination.spec;
    let Some(kind) = catalog.get(&spec.destination_type) else {
        return Err(format!(
            "unknown destination type {:?}",
            spec.destination_type
        ));
    };
    let secret = match &spec.secret_ref {
        Some(reference) => match desired
            .secrets
            .get(&(namespace.to_string(), reference.name.clone()))
        {
            Some(secret) => secret_values(secret),
            None => {
                return Err(format!(
                    "spec.secretRef: Secret {namespace}/{} does not exist",
                    reference.name
                ));
            }
        },
        None => BTreeMap::new(),
    };
    let mut values = BTreeMap::new();
    for field in &kind.fields {
        let given = spec.data.get(&field.name).or(if field.secret {
            secret.get(&field.name)
        } else {
            None
        });
        let value = match (given, &field.default) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) if field.required => {
                let from = match &spec.secret_ref {
                    Some(r) => format!(" or in Secret {namespace}/{}", r.name),
                    None => String::new(),
                };
                return Err(format!(
                    "field {} is required; it is not in spec.data{from}",
                    field.name
                ));
            }
            (None, None) => continue,
        };
        values.insert(field.name.clone(), value);
    }
    let suffix = id(namespace, name);
    let per_signal = !kind.exporter.signals.is_empty();
    let mut exporters: Vec<DestinationExporter> = Vec::new();
    for signal in Signal::ALL.into_iter().filter(|s| spec.signals.contains(s)) {
        let id = match per_signal {
            true => format!("{}/{suffix}.{}", kind.exporter.kind, signal.pipeline()),
            false => format!("{}/{suffix}", kind.exporter.kind),
        };
        match exporters.iter_mut().find(|e| e.id == id) {
            Some(exporter) => exporter.signals.push(signal),
            None => {
                let rendered = kind.render_for(Some(signal), &values, seal);
                exporters.push(DestinationExporter {
                    id,
                    kind: kind.exporter.kind.clone(),
                    signals: vec![signal],
                    config: serde_json::to_value(rendered).unwrap_or(Value::Null),
                });
            }
        }
    }
    Ok(exporters)
}

fn grpc_listen(address: &str) -> Value {
    match address.strip_prefix("unix:") {
        Some(path) => json!({"endpoint": path, "transport": "unix"}),
        None => json!({"endpoint": address}),
    }
}

/// The `file_storage` extension that keeps the destinations' queues.
const QUEUE_STORAGE: &str = "file_storage/queues";

/// Each destination's queue: on disk under the state directory when there is one, bounded,
/// and making room by dropping its oldest data.
fn destination_queue(layout: &Layout) -> Value {
    match &layout.queue_dir {
        Some(_) => json!({
            "storage": QUEUE_STORAGE,
            "max_size_mib": layout.queue_mib,
            "when_full": "drop_oldest",
        }),
        None => json!({
            "sizer": "bytes",
            "queue_size": queue_bytes(&layout.gateway),
            "when_full": "drop_oldest",
        }),
    }
}

/// A routing condition that holds for the resources of the given services.
fn service_condition(match_type: &str, services: &[String]) -> String {
    // The routing connector reads a backslash as "take the next character as it is".
    let quoted = |text: &str| format!("\"{}\"", text.replace('\\', r"\\").replace('"', r#"\""#));
    services
        .iter()
        .map(|service| match match_type {
            "regexp" => format!(
                r#"IsMatch(attributes["service.name"], {})"#,
                quoted(service)
            ),
            _ => format!(r#"attributes["service.name"] == {}"#, quoted(service)),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `service.name` of a Source's telemetry, or a regex over it.
pub fn service_of(source: &Source) -> (String, bool) {
    match &source.spec.otel_service_name {
        Some(name) => (name.clone(), false),
        None => (
            source.spec.workload.name.clone(),
            source.spec.match_workload_name_as_regex,
        ),
    }
}

/// The filter (`match_type`, services) for a selector, or `None` when no Source matches it.
fn selected_services(
    selector: &crate::resource::SourceSelector,
    desired: &Desired,
) -> Option<(&'static str, Vec<String>)> {
    let mut services = BTreeSet::new();
    for source in desired
        .sources
        .values()
        .filter(|s| !s.spec.disable_instrumentation)
    {
        let namespace = &source.spec.workload.namespace;
        let labels = source.metadata.labels.clone().unwrap_or_default();
        let in_stream = selector.data_streams.iter().any(|stream| {
            labels
                .get(&format!("odigos.io/data-stream-{stream}"))
                .is_some_and(|v| v == "true")
        });
        if selector.namespaces.contains(namespace) || in_stream {
            services.insert(service_of(source));
        }
    }
    if services.is_empty() {
        return None;
    }
    if services.iter().any(|(_, regex)| *regex) {
        let patterns = services
            .into_iter()
            .map(|(name, regex)| {
                if regex {
                    // As in Odigos, a Source's regex matches anywhere in a name.
                    format!("(?:{name})")
                } else {
                    format!("^{}$", regex::escape(&name))
                }
            })
            .collect();
        Some(("regexp", patterns))
    } else {
        Some((
            "strict",
            services.into_iter().map(|(name, _)| name).collect(),
        ))
    }
}

/// The service names a rule's scopes cover: `None` for every service, else those of the
/// Sources in scope, and of workloads named outright that no Source describes (their telemetry
/// carries their name). An empty list: the rule is for no service.
fn scope_services(scopes: &SourceScopes, desired: &Desired) -> Option<Vec<String>> {
    if scopes.is_empty() {
        return None;
    }
    let sources: Vec<&Source> = desired
        .sources
        .values()
        .filter(|s| !s.spec.disable_instrumentation)
        .collect();
    let mut services: BTreeSet<String> = sources
        .iter()
        .filter(|s| scopes.matches(&s.spec.workload, &languages_of(s)))
        .map(|s| service_of(s).0)
        .collect();
    let named: Vec<(&str, Option<&str>)> = match scopes {
        SourceScopes::List(items) => items
            .iter()
            .filter(|i| i.workload_language.is_none())
            .filter_map(|i| Some((i.workload_name.as_deref()?, i.workload_namespace.as_deref())))
            .collect(),
        SourceScopes::Scopes(s) if s.languages.is_empty() => s
            .sources
            .iter()
            .filter(|w| s.namespaces.is_empty() || s.namespaces.contains(&w.namespace))
            .map(|w| (w.name.as_str(), Some(w.namespace.as_str())))
            .collect(),
        SourceScopes::Scopes(_) => Vec::new(),
    };
    for (name, namespace) in named {
        let described = sources.iter().any(|s| {
            s.spec.workload.name == name
                && namespace.is_none_or(|ns| ns.is_empty() || ns == s.spec.workload.namespace)
        });
        if !described {
            services.insert(name.to_string());
        }
    }
    Some(services.into_iter().collect())
}

/// The languages a Source's containers are known to run (from its container overrides).
fn languages_of(source: &Source) -> Vec<String> {
    source
        .spec
        .container_overrides
        .iter()
        .filter_map(|c| Some(c.runtime_info.as_ref()?.language.clone()))
        .collect()
}

/// The services and languages (as `telemetry.sdk.language`) an Action's scopes select: empty
/// lists for every source; `None` when they select no Source at all. Each list that is set
/// must match, as in Odigos.
fn scope_filter(
    scopes: Option<&SourcesScopes>,
    desired: &Desired,
) -> Option<(Vec<String>, Vec<String>)> {
    let Some(scopes) = scopes else {
        return Some((Vec::new(), Vec::new()));
    };
    let sources: Vec<&Source> = desired
        .sources
        .values()
        .filter(|s| !s.spec.disable_instrumentation)
        .collect();
    let mut services: Option<BTreeSet<String>> = None;
    if !scopes.sources.is_empty() {
        let named = scopes
            .sources
            .iter()
            .map(|workload| {
                let source = sources.iter().find(|s| {
                    let w = &s.spec.workload;
                    w.name == workload.name
                        && w.kind == workload.kind
                        && w.namespace == workload.namespace
                });
                source.map_or_else(|| workload.name.clone(), |s| service_of(s).0)
            })
            .collect();
        services = Some(named);
    }
    if !scopes.namespaces.is_empty() {
        let in_namespaces: BTreeSet<String> = sources
            .iter()
            .filter(|s| scopes.namespaces.contains(&s.spec.workload.namespace))
            .map(|s| service_of(s).0)
            .collect();
        services = Some(match services {
            Some(named) => named.intersection(&in_namespaces).cloned().collect(),
            None => in_namespaces,
        });
    }
    if services.as_ref().is_some_and(|s| s.is_empty()) {
        return None;
    }
    let languages = scopes.languages.iter().map(|l| sdk_language(l)).collect();
    Some((
        services.unwrap_or_default().into_iter().collect(),
        languages,
    ))
}

/// The `telemetry.sdk.language` of an Odigos programming language.
fn sdk_language(language: &str) -> String {
    match language {
        "javascript" => "nodejs",
        "cplusplus" => "cpp",
        other => other,
    }
    .to_string()
}

/// Every enabled Sampling resource, joined into one rule set (by namespace and name).
fn joined_sampling(desired: &Desired) -> SamplingSpec {
    let mut joined = SamplingSpec::default();
    for sampling in desired.samplings.values().filter(|s| !s.spec.disabled) {
        let spec = &sampling.spec;
        joined
            .noisy_operations
            .extend(spec.noisy_operations.iter().cloned());
        joined.highly_relevant_operations.extend(
            spec.highly_relevant_operations
                .iter()
                .filter(|o| !o.disabled)
                .cloned(),
        );
        joined.cost_reduction_rules.extend(
            spec.cost_reduction_rules
                .iter()
                .filter(|o| !o.disabled)
                .cloned(),
        );
    }
    joined
}

/// Tail-sampling policies: a trace is kept when any policy keeps it. Highly relevant
/// operations keep their traces; cost reduction rules keep a share of their services'
/// traces; everything else is kept whole.
fn tail_policies(sampling: &SamplingSpec, desired: &Desired) -> Vec<Value> {
    if sampling.highly_relevant_operations.is_empty() && sampling.cost_reduction_rules.is_empty() {
        return Vec::new();
    }
    let services_policy = |name: &str, services: &[String], invert: bool| {
        json!({"name": name, "type": "string_attribute",
               "string_attribute": {"key": "service.name", "values": services, "invert_match": invert}})
    };
    let share = |name: &str, percentage: f64| json!({"name": name, "type": "probabilistic", "probabilistic": {"sampling_percentage": percentage}});
    let all_of = |name: String, parts: Vec<Value>| -> Value {
        if parts.len() == 1 {
            let mut only = parts.into_iter().next().unwrap_or_default();
            only["name"] = json!(name);
            only
        } else {
            json!({"name": name, "type": "and", "and": {"and_sub_policy": parts}})
        }
    };
    let mut policies = Vec::new();
    for (i, op) in sampling.highly_relevant_operations.iter().enumerate() {
        let mut parts = Vec::new();
        if op.error {
            parts.push(json!({"name": "error", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}));
        }
        if let Some(ms) = op.duration_at_least_ms {
            parts.push(
                json!({"name": "duration", "type": "latency", "latency": {"threshold_ms": ms}}),
            );
        }
        if let Some(route) = op
            .operation
            .as_ref()
            .and_then(|o| o.http_server.as_ref())
            .and_then(|s| s.route.clone())
        {
            parts.push(json!({"name": "route", "type": "string_attribute",
                              "string_attribute": {"key": "http.route", "values": [route]}}));
        }
        match scope_services(&op.source_scopes, desired) {
            None => {}
            Some(services) if services.is_empty() => continue,
            Some(services) => parts.push(services_policy("scope", &services, false)),
        }
        let percentage = op.percentage_at_least.unwrap_or(100.0);
        if percentage < 100.0 {
            parts.push(share("share", percentage));
        }
        if parts.is_empty() {
            parts.push(json!({"name": "all", "type": "always_sample"}));
        }
        policies.push(all_of(format!("relevant-{i}"), parts));
    }
    let mut reduced = Vec::new();
    let mut global = false;
    for (i, rule) in sampling.cost_reduction_rules.iter().enumerate() {
        let mut parts = Vec::new();
        match scope_services(&rule.source_scopes, desired) {
            None => global = true,
            Some(services) if services.is_empty() => continue,
            Some(services) => {
                parts.push(services_policy("scope", &services, false));
                reduced.extend(services);
            }
        }
        parts.push(share("share", rule.percentage_at_most));
        policies.push(all_of(format!("cost-{i}"), parts));
    }
    if !global {
        if reduced.is_empty() {
            policies.push(json!({"name": "rest", "type": "always_sample"}));
        } else {
            reduced.sort();
            reduced.dedup();
            policies.push(services_policy("rest", &reduced, true));
        }
    }
    policies
}

/// The name of the InstrumentationConfig of the workload `kind` `name`: `deployment-checkout`.
pub fn instrumentation_config_name(kind: &str, name: &str) -> String {
    format!("{kind}-{name}").to_lowercase()
}

/// The InstrumentationConfig of a Source: named `<kind>-<name>` in its workload's namespace.
fn instrumentation_config(
    source: &Source,
    desired: &Desired,
    sampling: &SamplingSpec,
) -> Option<InstrumentationConfig> {
    let spec = &source.spec;
    let workload = &spec.workload;
    if spec.disable_instrumentation
        || spec.match_workload_name_as_regex
        || workload.kind == WorkloadKind::Namespace
    {
        return None;
    }
    let namespace = if workload.namespace.is_empty() {
        crate::resource::DEFAULT_NAMESPACE.to_string()
    } else {
        workload.namespace.clone()
    };
    let name = instrumentation_config_name(&format!("{:?}", workload.kind), &workload.name);
    let (service, _) = service_of(source);
    let containers = spec
        .container_overrides
        .iter()
        .map(|c| ContainerAgentConfig {
            container_name: c.container_name.clone(),
            agent_enabled: true,
            agent_enabled_reason: None,
            otel_distro_name: c.otel_distro_name.clone(),
        })
        .collect();
    let mut config = InstrumentationConfig::new(
        &name,
        InstrumentationConfigSpec {
            service_name: service,
            agent_injection_enabled: true,
            containers,
            agent_config: Some(agent_config(source, desired, sampling)),
        },
    );
    config.metadata.namespace = Some(namespace);
    Some(config)
}

/// The agent settings a Source's InstrumentationRules and noisy operations give it.
fn agent_config(source: &Source, desired: &Desired, sampling: &SamplingSpec) -> AgentConfig {
    let workload = &source.spec.workload;
    let mut agent = AgentConfig {
        traces_enabled: true,
        head_sampling_fraction: 1.0,
        ..AgentConfig::default()
    };
    let mut headers = BTreeSet::new();
    let languages = languages_of(source);
    for ((rule_namespace, rule_name), rule) in &desired.rules {
        let spec = &rule.spec;
        if !spec.applies_to(workload, &languages) {
            continue;
        }
        agent.rules.push(id(rule_namespace, rule_name));
        if spec.trace_config.as_ref().and_then(|t| t.disabled) == Some(true) {
            agent.traces_enabled = false;
        }
        if let Some(fallback) = &spec.head_sampling_fallback_fraction {
            agent.head_sampling_fraction =
                agent.head_sampling_fraction.min(fallback.fraction_to_keep);
        }
        if let Some(collect) = &spec.headers_collection {
            headers.extend(collect.header_keys.iter().cloned());
        }
        if agent.payload_collection.is_none() {
            agent.payload_collection = spec.payload_collection.clone();
        }
    }
    agent.header_keys = headers.into_iter().collect();
    for op in sampling.noisy_operations.iter().filter(|op| !op.disabled) {
        let in_scope = op.source_scopes.matches(workload, &languages);
        let route = op
            .operation
            .as_ref()
            .and_then(|o| o.http_server.as_ref())
            .and_then(|s| s.route.clone());
        if let (true, Some(route)) = (in_scope, route) {
            agent.dropped_routes.push(route);
        }
    }
    agent
}

/// What odiglet traces, in matching order: Sources naming an executable, then a workload, then
/// a namespace, then a regex, so that a disabled Source keeps its processes out of reach of
/// the broader ones.
fn odiglet_config(desired: &Desired, sampling: &SamplingSpec) -> OdigletConfig {
    let mut sources: Vec<(u8, TracedSource)> = desired
        .sources
        .iter()
        .map(|((namespace, name), source)| {
            let spec = &source.spec;
            let workload = &spec.workload;
            let (rank, select) = match workload.kind {
                WorkloadKind::Process if spec.match_workload_name_as_regex => {
                    (3, ProcessSelector::Regex(workload.name.clone()))
                }
                WorkloadKind::Process => (0, ProcessSelector::Executable(workload.name.clone())),
                kind => (
                    if kind == WorkloadKind::Namespace {
                        2
                    } else {
                        1
                    },
                    ProcessSelector::Workload(Workload {
                        namespace: workload.namespace.clone(),
                        kind: format!("{kind:?}"),
                        name: workload.name.clone(),
                    }),
                ),
            };
            let agent = agent_config(source, desired, sampling);
            let traced = TracedSource {
                source: format!("{namespace}/{name}"),
                service_name: spec.otel_service_name.clone().unwrap_or_default(),
                select,
                traces_enabled: agent.traces_enabled && !spec.disable_instrumentation,
                head_sampling_fraction: agent.head_sampling_fraction,
                header_keys: agent.header_keys,
                url_query: agent
                    .payload_collection
                    .as_ref()
                    .is_some_and(|p| p.http_request.is_some()),
                dropped_routes: agent.dropped_routes,
            };
            (rank, traced)
        })
        .collect();
    // Stable: within a rank, the Sources' order.
    sources.sort_by_key(|(rank, _)| *rank);
    OdigletConfig {
        sources: sources.into_iter().map(|(_, s)| s).collect(),
    }
}

/// The two collector groups, sized as the layout says.
fn collectors_groups(layout: &Layout) -> Vec<CollectorsGroup> {
    let group = |name: &str, role: &str, size: &ResourcesSettings| {
        CollectorsGroup::new(
            name,
            CollectorsGroupSpec {
                role: role.into(),
                resources_settings: size.clone(),
            },
        )
    };
    vec![
        group("odigos-gateway", "CLUSTER_GATEWAY", &layout.gateway),
        group("odigos-data-collection", "NODE_COLLECTOR", &layout.node),
    ]
}

#[cfg(test)]
mod tests;
