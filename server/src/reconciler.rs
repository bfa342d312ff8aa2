//! The reconciler: on every new desired state it compiles the configs, writes the secret files
//! they reference, and assigns each config to its agents through the OpAMP fleet. What the
//! agents report comes back through [`ControlPlane::state`] as status conditions.
//!
//! It plays the instrumentor (Sources → InstrumentationConfigs), the scheduler (the
//! CollectorsGroups) and the config side of the autoscaler (gateway and node configs).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::compiler::{Compiled, DestinationPlan, Layout, compile};
use crate::opamp::{AgentView, ConfigStatus, Fleet, Selector};
use crate::resource::{CollectorsGroup, InstrumentationConfig};
use crate::store::{Problem, Snapshot, Store};

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
    applied: ArcSwap<Option<Applied>>,
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
            applied: ArcSwap::from_pointee(None),
        });
        let mut snapshots = store.subscribe();
        let mut reports = plane.fleet.reports();
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
                    store.clone().report(plane.state());
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
        if let Err(e) = write_secrets(&self.layout.secrets_dir, &compiled.secret_files) {
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
        let role = |value: &str| Selector::Attribute {
            key: ROLE.into(),
            value: value.into(),
        };
        let mut hashes = BTreeMap::new();
        hashes.insert(
            "gateway".into(),
            self.fleet
                .set_config(role("gateway"), yaml(&compiled.gateway)),
        );
        hashes.insert(
            "node".into(),
            self.fleet.set_config(role("node"), yaml(&compiled.node)),
        );
        let previous = self.applied.load();
        for config in compiled.workloads.values() {
            let workload = workload_name(config);
            let body = serde_json::to_vec_pretty(&config.spec.agent_config).unwrap_or_default();
            let files = BTreeMap::from([(
                "agent.json".to_string(),
                (body, "application/json".to_string()),
            )]);
            let selector = Selector::Attribute {
                key: WORKLOAD.into(),
                value: workload.clone(),
            };
            hashes.insert(workload, self.fleet.set_config(selector, files));
        }
        if let Some(previous) = previous.as_ref() {
            for workload in previous.hashes.keys().filter(|k| !hashes.contains_key(*k)) {
                self.fleet.unset_config(&Selector::Attribute {
                    key: WORKLOAD.into(),
                    value: workload.clone(),
                });
            }
        }
        tracing::info!(
            generation = snapshot.generation,
            gateway = %short(&hashes["gateway"]),
            node = %short(&hashes["node"]),
            workloads = compiled.workloads.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "desired state compiled and assigned"
        );
        self.applied.store(Arc::new(Some(Applied {
            snapshot,
            compiled,
            hashes,
        })));
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The desired state with each resource's status, as users see it.
    pub fn state(&self) -> State {
        let applied = self.applied.load();
        let Some(applied) = applied.as_ref() else {
            return State::default();
        };
        let agents = self.fleet.agents();
        let of_role = |role: &str| -> Vec<&AgentView> {
            agents
                .iter()
                .filter(|a| a.connected.is_some())
                .filter(|a| a.non_identifying.get(ROLE).map(String::as_str) == Some(role))
                .collect()
        };
        let rollout = |role: &str| Rollout::of(&of_role(role), &applied.hashes[role]);
        let gateway = rollout("gateway");
        let node = rollout("node");
        let desired = &applied.snapshot.desired;
        let destinations = desired
            .destinations
            .iter()
            .map(|(key, destination)| {
                let plan = applied.compiled.destinations.get(key).cloned();
                let condition = match &plan {
                    Some(DestinationPlan::Active { .. }) => gateway.condition(),
                    Some(DestinationPlan::Disabled) => {
                        Condition::new(false, "Disabled", "spec.disabled is set")
                    }
                    Some(DestinationPlan::Unmatched) => {
                        Condition::new(false, "NoSources", "no Source matches spec.sourceSelector")
                    }
                    Some(DestinationPlan::Refused { problem }) => {
                        Condition::new(false, "Refused", problem)
                    }
                    None => Condition::new(false, "Unknown", "not compiled"),
                };
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
                };
                (view.name.clone(), view)
            })
            .collect();
        let resources = |kind: &str, keys: Vec<&(String, String)>| -> Vec<ResourceView> {
            keys.into_iter()
                .map(|(ns, name)| ResourceView {
                    kind: kind.into(),
                    name: format!("{ns}/{name}"),
                    condition: gateway.condition(),
                })
                .collect()
        };
        let mut others = resources("Action", desired.actions.keys().collect());
        others.extend(resources("Sampling", desired.samplings.keys().collect()));
        others.extend(resources(
            "InstrumentationRule",
            desired.rules.keys().collect(),
        ));
        let sources = desired
            .sources
            .iter()
            .map(|(key, source)| SourceView {
                name: format!("{}/{}", key.0, key.1),
                workload: format!(
                    "{:?} {}",
                    source.spec.workload.kind, source.spec.workload.name
                ),
                disabled: source.spec.disable_instrumentation,
                instrumentation_config: applied.compiled.workloads.get(key).cloned(),
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
            problems: applied
                .snapshot
                .problems
                .iter()
                .chain(&applied.compiled.problems)
                .cloned()
                .collect(),
            hashes: applied.hashes.clone(),
            rollouts: BTreeMap::from([("gateway".into(), gateway), ("node".into(), node)]),
            destinations,
            sources,
            resources: others,
            collectors_groups: groups,
            metrics: BTreeMap::from([
                ("gateway".to_string(), self.layout.gateway_metrics.clone()),
                ("node".to_string(), self.layout.node_metrics.clone()),
            ]),
        }
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
    use std::os::unix::fs::OpenOptionsExt;
    if files.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for (path, value) in files {
        if std::fs::read_to_string(path).is_ok_and(|v| v == *value) {
            continue;
        }
        let partial = path.with_extension("partial");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(value.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
    }
    Ok(())
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

/// A status condition, as Kubernetes resources carry them.
#[derive(Clone, Debug, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Condition {
    fn new(ok: bool, reason: &str, message: &str) -> Condition {
        Condition {
            kind: "Ready",
            status: if ok { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
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
    pub condition: Condition,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceView {
    pub name: String,
    pub workload: String,
    pub disabled: bool,
    pub instrumentation_config: Option<InstrumentationConfig>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceView {
    pub kind: String,
    pub name: String,
    pub condition: Condition,
}

impl State {
    /// The `Ready` condition of every resource users wrote, by (kind, namespace, name):
    /// whether it is in force, a reason and a message.
    pub fn conditions(&self) -> BTreeMap<(&'static str, String, String), (bool, String, String)> {
        let split = |name: &str| -> (String, String) {
            let (ns, name) = name.split_once('/').unwrap_or(("", name));
            (ns.to_string(), name.to_string())
        };
        let mut conditions = BTreeMap::new();
        let mut put = |kind: &'static str, name: &str, c: &Condition| {
            let (ns, name) = split(name);
            conditions.insert(
                (kind, ns, name),
                (c.status == "True", c.reason.clone(), c.message.clone()),
            );
        };
        for d in self.destinations.values() {
            put("Destination", &d.name, &d.condition);
        }
        for r in &self.resources {
            let kind = match r.kind.as_str() {
                "Action" => "Action",
                "Sampling" => "Sampling",
                _ => "InstrumentationRule",
            };
            put(kind, &r.name, &r.condition);
        }
        for s in &self.sources {
            let condition = match (&s.instrumentation_config, s.disabled) {
                (_, true) => {
                    Condition::new(false, "Disabled", "spec.disableInstrumentation is set")
                }
                (Some(c), false) => Condition::new(
                    true,
                    "Instrumented",
                    &format!("InstrumentationConfig {}", workload_name(c)),
                ),
                (None, false) => Condition::new(
                    true,
                    "Selected",
                    "its workloads are instrumented as they are found",
                ),
            };
            put("Source", &s.name, &condition);
        }
        // A resource that does not validate says why, whatever its last good version does.
        let mut invalid: BTreeMap<(&'static str, String, String), Vec<String>> = BTreeMap::new();
        for problem in &self.problems {
            let Some((kind, name)) = problem.resource.as_deref().and_then(|r| r.split_once(' '))
            else {
                continue;
            };
            let Some(kind) = [
                "Source",
                "Destination",
                "Action",
                "InstrumentationRule",
                "Sampling",
            ]
            .into_iter()
            .find(|k| *k == kind) else {
                continue;
            };
            let (ns, name) = split(name);
            let field = problem
                .field
                .as_deref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            invalid
                .entry((kind, ns, name))
                .or_default()
                .push(format!("{field}{}", problem.message));
        }
        for (key, messages) in invalid {
            conditions.insert(key, (false, "Invalid".into(), messages.join("; ")));
        }
        conditions
    }

    /// The InstrumentationConfigs the control plane computed.
    pub fn instrumentation_configs(&self) -> impl Iterator<Item = &InstrumentationConfig> {
        self.sources
            .iter()
            .filter_map(|s| s.instrumentation_config.as_ref())
    }
}

/// The desired state and how it stands, for the API, `odigos describe` and the UI.
#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    pub generation: u64,
    pub problems: Vec<Problem>,
    pub hashes: BTreeMap<String, String>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub destinations: BTreeMap<String, DestinationView>,
    pub sources: Vec<SourceView>,
    pub resources: Vec<ResourceView>,
    pub collectors_groups: Vec<CollectorsGroup>,
    /// Where each role's Prometheus self-metrics are served.
    pub metrics: BTreeMap<String, Option<String>>,
}
