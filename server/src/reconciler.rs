//! The reconciler: on every new desired state it compiles the configs, writes the secret files
//! they reference, and assigns each config to its agents through the OpAMP fleet. What the
//! agents report comes back through [`ControlPlane::state`] as status conditions.
//!
//! It plays the instrumentor (Sources → InstrumentationConfigs), the scheduler (the
//! CollectorsGroups) and the config side of the autoscaler (gateway and node configs).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::compiler::{Compiled, DestinationPlan, Layout, compile};
use crate::opamp::{AgentView, ComponentView, ConfigStatus, Fleet, Selector};
use crate::resource::{
    CollectorsGroup, InstrumentationConfig, Object, PodWorkload, RuntimeDetails, WorkloadKind,
    not_honoured,
};
use crate::store::{Condition, Problem, Snapshot, Status, Store, WorkloadPods};

/// The agent attribute that tells a collector's role.
pub const ROLE: &str = "odigos.role";
/// The agent attribute that names an instrumented workload: `namespace/<kind>-<name>`.
pub const WORKLOAD: &str = "odigos.workload";

/// How long agents' reports are gathered before statuses are written back.
const REPORT_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
const ONE_DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// What was last compiled and assigned.
pub struct Applied {
    pub snapshot: Arc<Snapshot>,
    pub compiled: Compiled,
    /// Config hash per role (`gateway`, `node`) and per workload.
    pub hashes: BTreeMap<String, String>,
}

pub struct ControlPlane {
    fleet: Arc<Fleet>,
    catalog: &'static Catalog,
    layout: Layout,
    /// Whether Kubernetes workloads can be instrumented: the store is a cluster's.
    kubernetes: bool,
    applied: ArcSwap<Option<Applied>>,
    /// The generation of the desired state last compiled and assigned.
    reconciled: tokio::sync::watch::Sender<u64>,
    /// The latest rollouts, oldest first.
    rollouts: std::sync::Mutex<std::collections::VecDeque<RolloutRecord>>,
    /// The workloads' pods, where the store follows them.
    pods: Option<tokio::sync::watch::Receiver<Arc<WorkloadPods>>>,
}

impl ControlPlane {
    /// Reconciles every snapshot `store` publishes, until the store is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        catalog: &'static Catalog,
        layout: Layout,
    ) -> Arc<ControlPlane> {
        let plane = Arc::new(ControlPlane {
            fleet,
            catalog,
            layout,
            kubernetes: store.kubernetes(),
            applied: ArcSwap::from_pointee(None),
            reconciled: tokio::sync::watch::channel(0).0,
            rollouts: Default::default(),
            pods: store.workload_pods(),
        });
        let mut snapshots = store.subscribe();
        let mut reports = plane.fleet.changes();
        let mut pods = plane.pods.clone();
        let worker = Arc::downgrade(&plane);
        tokio::spawn(async move {
            let mut snapshot = snapshots.borrow_and_update().clone();
            let mut fresh = true;
            // Agents' reports change statuses, not the desired state: a burst of them is
            // written back once, when this passes, without holding up a new snapshot.
            let mut report_at: Option<tokio::time::Instant> = None;
            loop {
                let Some(plane) = worker.upgrade() else { break };
                if fresh {
                    plane.reconcile(snapshot.clone());
                }
                if fresh || report_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    store.clone().report(plane.state().status());
                    report_at = None;
                }
                drop(plane);
                fresh = false;
                let due = report_at.unwrap_or_else(|| tokio::time::Instant::now() + ONE_DAY);
                tokio::select! {
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        snapshot = snapshots.borrow_and_update().clone();
                        fresh = true;
                    }
                    changed = reports.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        reports.mark_unchanged();
                        report_at.get_or_insert(tokio::time::Instant::now() + REPORT_DELAY);
                    }
                    // Pods change statuses only, like reports.
                    Ok(()) = async { pods.as_mut().expect("guarded").changed().await }, if pods.is_some() => {
                        report_at.get_or_insert(tokio::time::Instant::now() + REPORT_DELAY);
                    }
                    _ = tokio::time::sleep_until(due), if report_at.is_some() => {}
                }
            }
        });
        plane
    }

    /// Compiles `snapshot` and assigns the configs. Idempotent: the same state assigns the
    /// same hashes, which agents that already run them ignore.
    fn reconcile(&self, snapshot: Arc<Snapshot>) {
        let started = std::time::Instant::now();
        let compiled = compile(&snapshot.desired, self.catalog, &self.layout);
        for problem in &compiled.problems {
            tracing::warn!("resource left out: {problem}");
        }
        if !self.layout.secrets_in_config
            && let Err(e) = write_secrets(&self.layout.secrets_dir, &compiled.secret_files)
        {
            // Without its secrets the new config could not load; keep the running one.
            tracing::error!(dir = %self.layout.secrets_dir.display(), error = %e, "cannot write secret files; configs not updated");
            return;
        }
        let yaml = |text: &str| {
            BTreeMap::from([(
                "collector.yaml".to_string(),
                (text.as_bytes().to_vec(), "text/yaml".to_string()),
            )])
        };
        let mut gateway = yaml(&compiled.gateway);
        if self.layout.secrets_in_config && !compiled.secret_files.is_empty() {
            let values: BTreeMap<String, &String> = compiled
                .secret_files
                .iter()
                .filter_map(|(path, value)| {
                    Some((path.file_name()?.to_string_lossy().into_owned(), value))
                })
                .collect();
            gateway.insert(
                odigos_proto::opamp::SECRETS_FILE.to_string(),
                (
                    serde_json::to_vec(&values).unwrap_or_default(),
                    "application/json".to_string(),
                ),
            );
        }
        let json = |file: &str, body: Vec<u8>| {
            BTreeMap::from([(file.to_string(), (body, "application/json".to_string()))])
        };
        let role = |value: &str| Selector::Attribute {
            key: ROLE.into(),
            value: value.into(),
        };
        let odiglet = serde_json::to_vec_pretty(&compiled.odiglet).unwrap_or_default();
        let mut targets = vec!["gateway".to_string(), "node".into(), "odiglet".into()];
        let mut configs = vec![
            (role("gateway"), gateway),
            (role("node"), yaml(&compiled.node)),
            (role("odiglet"), json(odigos_proto::odiglet::FILE, odiglet)),
        ];
        for config in compiled.workloads.values() {
            let workload = workload_name(config);
            let body = serde_json::to_vec_pretty(&config.spec.agent_config).unwrap_or_default();
            let selector = Selector::Attribute {
                key: WORKLOAD.into(),
                value: workload.clone(),
            };
            configs.push((selector, json("agent.json", body)));
            targets.push(workload);
        }
        // One pass over the fleet for all of them; workloads that are gone lose their config.
        let hashes: BTreeMap<String, String> = targets
            .into_iter()
            .zip(self.fleet.assign(configs))
            .collect();
        tracing::info!(
            generation = snapshot.generation,
            gateway = %short(&hashes["gateway"]),
            node = %short(&hashes["node"]),
            workloads = compiled.workloads.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "desired state compiled and assigned"
        );
        let generation = snapshot.generation;
        self.record_rollouts(&snapshot, &hashes);
        self.applied.store(Arc::new(Some(Applied {
            snapshot,
            compiled,
            hashes,
        })));
        self.reconciled.send_replace(generation);
    }

    /// Records a rollout for every target whose config `hashes` change, with the resources
    /// that changed since the last state assigned.
    fn record_rollouts(&self, snapshot: &Snapshot, hashes: &BTreeMap<String, String>) {
        let before = self.applied.load();
        let before = before.as_ref().as_ref();
        let empty = BTreeMap::new();
        let old_hashes = before.map_or(&empty, |b| &b.hashes);
        let changes = match before {
            Some(before) => snapshot.desired.changes_since(&before.snapshot.desired),
            None => snapshot.desired.changes_since(&Default::default()),
        };
        let at = crate::store::now();
        let mut rollouts = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        for (target, hash) in hashes {
            let previous = old_hashes.get(target);
            if previous == Some(hash) {
                continue;
            }
            if rollouts.len() == ROLLOUT_HISTORY {
                rollouts.pop_front();
            }
            rollouts.push_back(RolloutRecord {
                generation: snapshot.generation,
                at: at.clone(),
                target: target.clone(),
                hash: hash.clone(),
                previous: previous.cloned(),
                changes: changes.clone(),
            });
        }
    }

    /// Whether the running pods of the workload of a Source in `namespace` have the SDK
    /// environment the pod webhook gives pods as they are created: those that ran before the
    /// Source get it when the workload rolls out. None where pods are not followed or none runs.
    fn rollout(&self, namespace: &str, workload: &PodWorkload) -> Option<Condition> {
        if matches!(
            workload.kind,
            WorkloadKind::Process | WorkloadKind::Namespace
        ) {
            return None;
        }
        let namespace = Some(workload.namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .unwrap_or(namespace);
        let kind = format!("{:?}", workload.kind);
        let key = (namespace.to_string(), kind.clone(), workload.name.clone());
        let counts = self.pods.as_ref()?.borrow().get(&key).copied()?;
        let missing = counts.pods - counts.injected;
        Some(if missing == 0 {
            Condition::rollout(
                true,
                "RolledOut",
                &format!(
                    "its running pods ({}) have the SDK environment",
                    counts.pods
                ),
            )
        } else {
            Condition::rollout(
                false,
                "RolloutRequired",
                &format!(
                    "{missing} of its {} running pods started before this Source and lack the SDK environment (OTLP endpoint, service name, resource attributes); `kubectl rollout restart {} {} -n {namespace}` gives it to them, and odiglet traces them with eBPF meanwhile",
                    counts.pods,
                    kind.to_lowercase(),
                    workload.name
                ),
            )
        })
    }

    /// The latest rollouts (at most [`ROLLOUT_HISTORY`]), oldest first.
    pub fn rollouts(&self) -> Vec<RolloutRecord> {
        let rollouts = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        rollouts.iter().cloned().collect()
    }

    /// The config hash of each role and workload, as last assigned: what [`ControlPlane::state`]
    /// holds as `hashes`, without building every resource's status.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.applied
            .load()
            .as_ref()
            .as_ref()
            .map(|applied| applied.hashes.clone())
            .unwrap_or_default()
    }

    /// The generation last compiled and assigned, as it moves.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// Returns once the desired state's `generation` (or a later one) is compiled and its
    /// configs assigned, so that [`ControlPlane::state`] shows it.
    pub async fn reconciled(&self, generation: u64) {
        let mut reconciled = self.reconciled.subscribe();
        let _ = reconciled.wait_for(|g| *g >= generation).await;
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A workload's InstrumentationConfig (named `<kind>-<name>`) as last compiled, if it is
    /// instrumented.
    pub fn instrumentation_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<InstrumentationConfig> {
        let applied = self.applied.load();
        let applied = applied.as_ref().as_ref()?;
        applied
            .compiled
            .workloads
            .values()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    /// The desired state with each resource's status, as users see it: whether its config is
    /// in force (`Ready`) and, for a destination, whether data reaches it (`Healthy`).
    pub fn state(&self) -> State {
        let applied = self.applied.load();
        let Some(applied) = applied.as_ref() else {
            return State::default();
        };
        let agents = self.fleet.agents();
        let live: Vec<&AgentView> = agents.iter().filter(|a| a.connected.is_some()).collect();
        let with = |key: &str, value: &str| -> Vec<&AgentView> {
            live.iter()
                .copied()
                .filter(|a| a.non_identifying.get(key).map(String::as_str) == Some(value))
                .collect()
        };
        let gateways = with(ROLE, "gateway");
        let gateway = Rollout::of(&gateways, &applied.hashes["gateway"]);
        let nodes = with(ROLE, "node");
        let node = Rollout::of(&nodes, &applied.hashes["node"]);
        let odiglets = with(ROLE, "odiglet");
        let odiglet = Rollout::of(&odiglets, &applied.hashes["odiglet"]);
        let workload = |config: &InstrumentationConfig| {
            let name = workload_name(config);
            Rollout::of(&with(WORKLOAD, &name), &applied.hashes[&name])
        };
        let desired = &applied.snapshot.desired;
        let problems: Vec<Problem> = applied
            .snapshot
            .problems
            .iter()
            .chain(&applied.compiled.problems)
            .cloned()
            .collect();
        // A resource whose current version is refused says so, whatever its last good does.
        let refused = refusals(&problems, &applied.snapshot.accepted);
        // Otherwise it says which of its fields have no effect here, if any.
        let standing =
            |object: Object, condition: Condition| match refused.get(&object.key().to_string()) {
                Some(refused) => refused.clone(),
                None => condition.noting(&not_honoured(&object, self.catalog)),
            };
        let destinations = desired
            .destinations
            .iter()
            .map(|(key, destination)| {
                let plan = applied.compiled.destinations.get(key).cloned();
                let (condition, health) = match &plan {
                    Some(DestinationPlan::Active { exporters, .. }) => {
                        (gateway.condition(), Some(delivery(&gateways, exporters)))
                    }
                    Some(DestinationPlan::Disabled) => (
                        Condition::new(false, "Disabled", "spec.disabled is set"),
                        None,
                    ),
                    Some(DestinationPlan::Unmatched) => (
                        Condition::new(false, "NoSources", "no Source matches spec.sourceSelector"),
                        None,
                    ),
                    Some(DestinationPlan::Refused { problem }) => {
                        (Condition::new(false, "Refused", problem), None)
                    }
                    None => (Condition::new(false, "Unknown", "not compiled"), None),
                };
                let condition = standing(Object::Destination(destination.clone()), condition);
                let view = DestinationView {
                    name: format!("{}/{}", key.0, key.1),
                    destination_type: destination.spec.destination_type.clone(),
                    signals: destination
                        .spec
                        .signals
                        .iter()
                        .map(|s| s.pipeline().to_string())
                        .collect(),
                    plan,
                    condition,
                    health,
                };
                (view.name.clone(), view)
            })
            .collect();
        let mut resources = Vec::new();
        for (key, action) in &desired.actions {
            let spec = &action.spec;
            let condition = if spec.disabled {
                Condition::new(false, "Disabled", "spec.disabled is set")
            } else if spec.k8s_attributes.is_some() && self.layout.pod_metadata {
                // It runs in the node collectors, which read their node's pods.
                node.condition()
            } else if spec.k8s_attributes.is_some() {
                Condition::new(
                    false,
                    "NotActive",
                    "k8sAttributes needs pod metadata, which node collectors read only in a cluster whose control plane runs them",
                )
            } else {
                gateway.condition()
            };
            let condition = standing(Object::Action(action.clone()), condition);
            resources.push(ResourceView::new("Action", key, condition));
        }
        for (key, sampling) in &desired.samplings {
            let condition = if sampling.spec.disabled {
                Condition::new(false, "Disabled", "spec.disabled is set")
            } else {
                gateway.condition()
            };
            let condition = standing(Object::Sampling(sampling.clone()), condition);
            resources.push(ResourceView::new("Sampling", key, condition));
        }
        for (key, rule) in &desired.rules {
            let id = format!("{}/{}", key.0, key.1);
            let configs: Vec<&InstrumentationConfig> = applied
                .compiled
                .workloads
                .values()
                .filter(|c| {
                    c.spec
                        .agent_config
                        .as_ref()
                        .is_some_and(|a| a.rules.contains(&id))
                })
                .collect();
            let condition = if rule.spec.disabled {
                Condition::new(false, "Disabled", "spec.disabled is set")
            } else if configs.is_empty() {
                Condition::new(
                    false,
                    "Unused",
                    "it applies to no instrumented workload (no Source it selects has an InstrumentationConfig)",
                )
            } else {
                let rollouts: Vec<Rollout> = configs.iter().map(|c| workload(c)).collect();
                agents_condition(&rollouts, "instrumentation agents of its workloads")
            };
            let condition = standing(Object::InstrumentationRule(rule.clone()), condition);
            resources.push(ResourceView::new("InstrumentationRule", key, condition));
        }
        let sources = desired
            .sources
            .iter()
            .map(|(key, source)| {
                let spec = &source.spec;
                let processes = processes_of(&odiglets, &format!("{}/{}", key.0, key.1));
                let mut config = applied.compiled.workloads.get(key).cloned();
                if let Some(config) = config.as_mut().filter(|_| !processes.is_empty()) {
                    let status = config.status.get_or_insert_with(Default::default);
                    // One entry per container, however many processes (and pods) run it.
                    let mut details: Vec<RuntimeDetails> =
                        processes.iter().map(ProcessView::runtime).collect();
                    details.sort_by(|a, b| a.container_name.cmp(&b.container_name));
                    details.dedup_by(|a, b| a.container_name == b.container_name);
                    status.runtime_details_by_container = details;
                }
                let kind = spec.workload.kind;
                let rollout = config.as_ref().map(&workload);
                let connected = rollout.as_ref().is_some_and(|r| r.agents > 0);
                let condition = if spec.disable_instrumentation {
                    Condition::new(false, "Disabled", "spec.disableInstrumentation is set")
                } else if !self.kubernetes && kind != WorkloadKind::Process && !connected {
                    Condition::new(
                        false,
                        "NoKubernetes",
                        &format!(
                            "a {kind:?} is a Kubernetes workload and this control plane runs without Kubernetes: on this machine only workload.kind Process is instrumented (an SDK agent that names this workload over OpAMP still gets its settings)"
                        ),
                    )
                } else if kind == WorkloadKind::Process {
                    traced_condition(&odiglet, &processes)
                } else if let Some(rollout) = rollout {
                    agents_condition(&[rollout], "instrumentation agents")
                } else {
                    Condition::new(
                        false,
                        "Waiting",
                        "it selects workloads as they are found; no agent has reported one yet",
                    )
                };
                let condition = standing(Object::Source(source.clone()), condition);
                let rollout = (!spec.disable_instrumentation)
                    .then(|| self.rollout(&key.0, &spec.workload))
                    .flatten();
                SourceView {
                    name: format!("{}/{}", key.0, key.1),
                    workload: format!("{kind:?} {}", spec.workload.name),
                    disabled: spec.disable_instrumentation,
                    condition,
                    rollout,
                    instrumentation_config: config,
                    processes,
                }
            })
            .collect();
        let mut groups = applied.compiled.collectors_groups.clone();
        for group in &mut groups {
            let rollout = if group.spec.role == "CLUSTER_GATEWAY" {
                &gateway
            } else {
                &node
            };
            group.status = Some(crate::resource::CollectorsGroupStatus {
                ready: rollout.ready(),
                receiver_signals: applied.compiled.signals.clone(),
                conditions: Vec::new(),
            });
        }
        State {
            generation: applied.snapshot.generation,
            problems,
            accepted: applied.snapshot.accepted.clone(),
            hashes: applied.hashes.clone(),
            rollouts: BTreeMap::from([("gateway".into(), gateway), ("node".into(), node)]),
            destinations,
            sources,
            resources,
            collectors_groups: groups,
            metrics: BTreeMap::from([
                (
                    "gateway".to_string(),
                    metrics_of(&gateways, &self.layout.gateway_metrics),
                ),
                (
                    "node".to_string(),
                    metrics_of(&nodes, &self.layout.node_metrics),
                ),
            ]),
        }
    }
}

/// Where a role's self-metrics are served: as configured, or for a `:0` port where a
/// collector of the role says it got.
fn metrics_of(agents: &[&AgentView], configured: &Option<String>) -> Option<String> {
    let configured = configured.as_ref()?;
    if !configured.ends_with(":0") {
        return Some(configured.clone());
    }
    agents.iter().find_map(|a| {
        let status = &a.components.get("service.telemetry.metrics")?.status;
        let pod_ip = a.non_identifying.get(crate::opamp::POD_IP);
        crate::opamp::metrics_address(status, pod_ip.map(String::as_str))
    })
}

/// The kinds users write, whose status the control plane tells.
const KINDS: [&str; 5] = [
    "Source",
    "Destination",
    "Action",
    "InstrumentationRule",
    "Sampling",
];

/// The `Ready` condition of each resource (`Kind namespace/name`) whose current version is
/// refused: why, and what of it stays in force.
fn refusals(
    problems: &[Problem],
    accepted: &BTreeMap<String, String>,
) -> BTreeMap<String, Condition> {
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for problem in problems {
        let Some(resource) = problem.resource.as_deref() else {
            continue;
        };
        let field = problem
            .field
            .as_deref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        reasons
            .entry(resource)
            .or_default()
            .push(format!("{field}{}", problem.message));
    }
    reasons
        .into_iter()
        .map(|(resource, messages)| {
            let in_force = match accepted.get(resource) {
                Some(at) => format!("the version accepted at {at} stays in force"),
                None => "no version of it is in force".to_string(),
            };
            let message = format!("{}; {in_force}", messages.join("; "));
            let condition = Condition::new(false, "Invalid", &message);
            (resource.to_string(), condition)
        })
        .collect()
}

/// Whether data reaches a destination, from what the gateways report of its exporter.
fn delivery(gateways: &[&AgentView], exporters: &[String]) -> Condition {
    let reports: Vec<&ComponentView> = gateways
        .iter()
        .flat_map(|a| {
            exporters
                .iter()
                .filter_map(|e| a.components.get(&format!("exporters.{e}")))
        })
        .collect();
    let failing: Vec<&&ComponentView> = reports.iter().filter(|c| !c.healthy).collect();
    // The longest-standing failure is the one to tell.
    if let Some(first) = failing.iter().min_by_key(|c| c.since.clone()) {
        let message = format!(
            "{} of {} gateway exporters cannot deliver: {}",
            failing.len(),
            reports.len(),
            first.last_error
        );
        return Condition::health("False", "Degraded", &message, first.since.clone());
    }
    if reports.is_empty() {
        return Condition::health(
            "Unknown",
            "NoReports",
            "no gateway has reported on its exporter yet",
            None,
        );
    }
    // An exporter tells since when it works once it has sent something.
    match reports.iter().filter_map(|c| c.since.clone()).max() {
        None => Condition::health("True", "Idle", "nothing has been sent to it yet", None),
        Some(since) => Condition::health(
            "True",
            "Delivering",
            &format!("{} gateway exporters deliver to it", reports.len()),
            Some(since),
        ),
    }
}

/// Whether the agents meant to apply a config (one rollout per workload) have.
fn agents_condition(rollouts: &[Rollout], who: &str) -> Condition {
    let failed: Vec<&String> = rollouts.iter().flat_map(|r| &r.failed).collect();
    let agents: usize = rollouts.iter().map(|r| r.agents).sum();
    let applied: usize = rollouts.iter().map(|r| r.applied).sum();
    if !failed.is_empty() {
        let failed: Vec<&str> = failed.iter().map(|f| f.as_str()).collect();
        Condition::new(false, "ApplyFailed", &failed.join("; "))
    } else if agents == 0 {
        Condition::new(
            false,
            "NoAgents",
            &format!("no {who} are connected to apply it"),
        )
    } else {
        Condition::new(
            applied == agents,
            if applied == agents {
                "Applied"
            } else {
                "Applying"
            },
            &format!("applied by {applied} of {agents} {who}"),
        )
    }
}

/// A process odiglet matched for a Source, from its health component `processes.PID` whose
/// status reads `EXECUTABLE (LANGUAGE VERSION): service NAME, Source NS/NAME, traced`, with
/// `pod NS/NAME, container NAME, ` before `traced` in Kubernetes.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessView {
    pub pid: String,
    pub traced: bool,
    pub status: String,
}

impl ProcessView {
    pub fn executable(&self) -> &str {
        self.status
            .split_once(" (")
            .map_or(self.status.as_str(), |(executable, _)| executable)
    }

    /// The runtime the status names, as an InstrumentationConfig reports it; the executable
    /// stands for the container a process has not.
    pub fn runtime(&self) -> RuntimeDetails {
        let (executable, rest) = self.status.split_once(" (").unwrap_or((&self.status, ""));
        let (runtime, place) = rest.split_once("):").unwrap_or(("", ""));
        let container = place
            .split(", ")
            .find_map(|part| part.strip_prefix("container "))
            .unwrap_or(executable);
        let mut words = runtime.split_whitespace();
        RuntimeDetails {
            container_name: container.to_string(),
            language: words.next().filter(|l| *l != "unknown").map(str::to_string),
            runtime_version: words.next().filter(|v| *v != "runtime").map(str::to_string),
        }
    }
}

fn processes_of(odiglets: &[&AgentView], source: &str) -> Vec<ProcessView> {
    let marker = format!("Source {source}, ");
    odiglets
        .iter()
        .flat_map(|agent| &agent.components)
        .filter(|(_, c)| c.status.contains(&marker))
        .filter_map(|(name, c)| {
            Some(ProcessView {
                pid: name.strip_prefix("processes.")?.to_string(),
                traced: c.healthy,
                status: c.status.clone(),
            })
        })
        .collect()
}

/// How a Source of kind Process stands: whether odiglet applied it and traces its processes.
fn traced_condition(rollout: &Rollout, processes: &[ProcessView]) -> Condition {
    if rollout.agents == 0 {
        return Condition::new(
            false,
            "NoAgents",
            "no odiglet is connected to trace it (odigos up starts one when it runs as root)",
        );
    }
    if rollout.applied < rollout.agents || !rollout.failed.is_empty() {
        return agents_condition(std::slice::from_ref(rollout), "odiglets");
    }
    let pids: Vec<&str> = processes
        .iter()
        .filter(|p| p.traced)
        .map(|p| p.pid.as_str())
        .collect();
    if pids.is_empty() {
        Condition::new(
            false,
            "Waiting",
            "no running process matches it yet; odiglet traces one as soon as it starts",
        )
    } else {
        Condition::new(
            true,
            "Instrumented",
            &format!("odiglet traces process {}", pids.join(", ")),
        )
    }
}

/// The [`WORKLOAD`] attribute value of the agents an InstrumentationConfig is for.
pub fn workload_name(config: &InstrumentationConfig) -> String {
    let namespace = config.metadata.namespace.as_deref().unwrap_or_default();
    let name = config.metadata.name.as_deref().unwrap_or_default();
    format!("{namespace}/{name}")
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Writes each secret file (owner-only) unless it already holds the value.
fn write_secrets(
    dir: &std::path::Path,
    files: &BTreeMap<std::path::PathBuf, String>,
) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for (path, value) in files {
        if std::fs::read_to_string(path).is_ok_and(|v| v == *value) {
            continue;
        }
        odigos_proto::private::write(path, value.as_bytes())?;
    }
    Ok(())
}

/// Rollouts kept.
const ROLLOUT_HISTORY: usize = 64;

/// A new config for one target (a role, or a workload): a rollout.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutRecord {
    /// The generation of the desired state that made it.
    pub generation: u64,
    /// When it was assigned (RFC 3339).
    pub at: String,
    pub target: String,
    pub hash: String,
    /// The config it replaces, if any.
    pub previous: Option<String>,
    /// What changed in the desired state since the config before: `Destination default/x
    /// created` (`changed`, `deleted`).
    pub changes: Vec<String>,
}

/// How far a role's agents are with the config meant for them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rollout {
    pub desired: String,
    pub agents: usize,
    pub applied: usize,
    pub failed: Vec<String>,
}

impl Rollout {
    fn of(agents: &[&AgentView], desired: &str) -> Rollout {
        let mut rollout = Rollout {
            desired: desired.to_string(),
            agents: agents.len(),
            ..Rollout::default()
        };
        for agent in agents {
            match &agent.config {
                ConfigStatus::Applied { hash } if hash == desired => rollout.applied += 1,
                ConfigStatus::Failed { hash, error } if hash == desired => {
                    rollout.failed.push(format!("agent {}: {error}", agent.uid))
                }
                _ => {}
            }
        }
        rollout
    }

    fn ready(&self) -> bool {
        self.agents > 0 && self.applied == self.agents
    }

    fn condition(&self) -> Condition {
        if !self.failed.is_empty() {
            Condition::new(false, "ApplyFailed", &self.failed.join("; "))
        } else if self.agents == 0 {
            Condition::new(false, "NoAgents", "no collector of this role is connected")
        } else if self.ready() {
            Condition::new(
                true,
                "Applied",
                &format!("applied by {} of {} collectors", self.applied, self.agents),
            )
        } else {
            Condition::new(
                false,
                "Applying",
                &format!("applied by {} of {} collectors", self.applied, self.agents),
            )
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DestinationView {
    pub name: String,
    #[serde(rename = "type")]
    pub destination_type: String,
    pub signals: Vec<String>,
    pub plan: Option<DestinationPlan>,
    /// Whether its config is in force.
    pub condition: Condition,
    /// Whether data reaches it, while it is in use.
    pub health: Option<Condition>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceView {
    pub name: String,
    pub workload: String,
    pub disabled: bool,
    pub condition: Condition,
    /// Whether the workload's running pods have the SDK environment, where pods are followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Condition>,
    pub instrumentation_config: Option<InstrumentationConfig>,
    /// For a Source of kind Process: the processes odiglet matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceView {
    pub kind: String,
    pub name: String,
    pub condition: Condition,
}

impl ResourceView {
    fn new(kind: &str, (namespace, name): &(String, String), condition: Condition) -> ResourceView {
        ResourceView {
            kind: kind.into(),
            name: format!("{namespace}/{name}"),
            condition,
        }
    }
}

impl State {
    /// What to show where users look: the conditions of every resource users wrote, by
    /// (kind, namespace, name) (`Ready`, and `Healthy` for a destination in use), and the
    /// InstrumentationConfigs and CollectorsGroups computed.
    pub fn status(&self) -> Status {
        let split = |name: &str| -> (String, String) {
            let (ns, name) = name.split_once('/').unwrap_or(("", name));
            (ns.to_string(), name.to_string())
        };
        let mut conditions = BTreeMap::new();
        let mut put = |kind: &'static str, name: &str, c: Vec<Condition>| {
            let (ns, name) = split(name);
            conditions.insert((kind, ns, name), c);
        };
        for d in self.destinations.values() {
            let mut list = vec![d.condition.clone()];
            list.extend(d.health.clone());
            put("Destination", &d.name, list);
        }
        for r in &self.resources {
            let kind = KINDS
                .into_iter()
                .find(|k| *k == r.kind)
                .unwrap_or("InstrumentationRule");
            put(kind, &r.name, vec![r.condition.clone()]);
        }
        for s in &self.sources {
            let mut list = vec![s.condition.clone()];
            list.extend(s.rollout.clone());
            put("Source", &s.name, list);
        }
        // A refused resource that has no version in force has no view either.
        for (resource, refused) in refusals(&self.problems, &self.accepted) {
            let Some((kind, name)) = resource.split_once(' ') else {
                continue;
            };
            let Some(kind) = KINDS.into_iter().find(|k| *k == kind) else {
                continue;
            };
            let (ns, name) = split(name);
            conditions.entry((kind, ns, name)).or_insert(vec![refused]);
        }
        Status {
            generation: self.generation,
            conditions,
            instrumentation_configs: self
                .sources
                .iter()
                .filter_map(|s| s.instrumentation_config.clone())
                .collect(),
            collectors_groups: self.collectors_groups.clone(),
        }
    }
}

/// The desired state and how it stands, for the API, `odigos describe` and the UI.
#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    pub generation: u64,
    pub problems: Vec<Problem>,
    /// When the version in force of each resource (`Kind namespace/name`) was accepted.
    pub accepted: BTreeMap<String, String>,
    pub hashes: BTreeMap<String, String>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub destinations: BTreeMap<String, DestinationView>,
    pub sources: Vec<SourceView>,
    pub resources: Vec<ResourceView>,
    pub collectors_groups: Vec<CollectorsGroup>,
    /// Where each role's Prometheus self-metrics are served.
    pub metrics: BTreeMap<String, Option<String>>,
}
