//! The desired state: every resource users wrote, from one of the store backends.
//!
//! A backend publishes [`Snapshot`]s: the resources that are accepted, and the problems with
//! the ones that are not. A resource that fails keeps its last good version, so one bad edit
//! never disturbs anything else.

mod kubernetes;
pub(crate) mod local;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use tokio::sync::watch;

use crate::resource::{
    Action, CollectorsGroup, Destination, FieldError, InstrumentationConfig, InstrumentationRule,
    Object, ObjectKey, Sampling, Source,
};

pub use kubernetes::{CollectorWorkloads, KubeStore, NODE_STORAGE, WebhookCert};
pub use local::LocalStore;

/// The accepted resources by kind, each keyed by (namespace, name).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub sources: BTreeMap<(String, String), Source>,
    pub destinations: BTreeMap<(String, String), Destination>,
    pub actions: BTreeMap<(String, String), Action>,
    pub rules: BTreeMap<(String, String), InstrumentationRule>,
    pub samplings: BTreeMap<(String, String), Sampling>,
    pub secrets: BTreeMap<(String, String), Secret>,
}

impl Desired {
    /// The resource in force of this kind and name.
    pub fn get(&self, key: &ObjectKey) -> Option<Object> {
        let at = (key.namespace.clone(), key.name.clone());
        Some(match key.kind {
            "Source" => Object::Source(self.sources.get(&at)?.clone()),
            "Destination" => Object::Destination(self.destinations.get(&at)?.clone()),
            "Action" => Object::Action(self.actions.get(&at)?.clone()),
            "InstrumentationRule" => Object::InstrumentationRule(self.rules.get(&at)?.clone()),
            "Sampling" => Object::Sampling(self.samplings.get(&at)?.clone()),
            _ => Object::Secret(self.secrets.get(&at)?.clone()),
        })
    }

    /// What differs from `before`, as `Kind namespace/name created` (`changed`, `deleted`).
    pub fn changes_since(&self, before: &Desired) -> Vec<String> {
        fn diff<T>(
            kind: &str,
            now: &BTreeMap<(String, String), T>,
            was: &BTreeMap<(String, String), T>,
            same: impl Fn(&T, &T) -> bool,
            out: &mut Vec<String>,
        ) {
            for ((namespace, name), object) in now {
                match was.get(&(namespace.clone(), name.clone())) {
                    None => out.push(format!("{kind} {namespace}/{name} created")),
                    Some(old) if !same(old, object) => {
                        out.push(format!("{kind} {namespace}/{name} changed"))
                    }
                    Some(_) => {}
                }
            }
            for (namespace, name) in was.keys().filter(|key| !now.contains_key(*key)) {
                out.push(format!("{kind} {namespace}/{name} deleted"));
            }
        }
        // What the compiler reads: the spec, and the labels (a Source's data streams); a
        // resource's status is the control plane's own writing.
        macro_rules! same {
            () => {
                |a, b| a.spec == b.spec && a.metadata.labels == b.metadata.labels
            };
        }
        let mut out = Vec::new();
        diff("Source", &self.sources, &before.sources, same!(), &mut out);
        let (now, was) = (&self.destinations, &before.destinations);
        diff("Destination", now, was, same!(), &mut out);
        diff("Action", &self.actions, &before.actions, same!(), &mut out);
        let (now, was) = (&self.rules, &before.rules);
        diff("InstrumentationRule", now, was, same!(), &mut out);
        let (now, was) = (&self.samplings, &before.samplings);
        diff("Sampling", now, was, same!(), &mut out);
        let same = |a: &Secret, b: &Secret| a.data == b.data && a.string_data == b.string_data;
        diff("Secret", &self.secrets, &before.secrets, same, &mut out);
        out
    }

    /// Adds `object`; false when one of that kind and name is already there.
    pub fn insert(&mut self, object: Object) -> bool {
        let ObjectKey {
            namespace, name, ..
        } = object.key();
        let key = (namespace, name);
        fn put<T>(map: &mut BTreeMap<(String, String), T>, key: (String, String), v: T) -> bool {
            match map.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(v);
                    true
                }
            }
        }
        match object {
            Object::Source(o) => put(&mut self.sources, key, o),
            Object::Destination(o) => put(&mut self.destinations, key, o),
            Object::Action(o) => put(&mut self.actions, key, o),
            Object::InstrumentationRule(o) => put(&mut self.rules, key, o),
            Object::Sampling(o) => put(&mut self.samplings, key, o),
            Object::Secret(o) => put(&mut self.secrets, key, o),
        }
    }
}

/// Why a resource (or a whole file) was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file (local store) or `kind namespace/name` (Kubernetes) it came from.
    pub source: String,
    pub line: Option<usize>,
    /// The resource, when it could be told.
    pub resource: Option<String>,
    /// The field's path, e.g. `spec.data.OTLP_GRPC_ENDPOINT`.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, ": {resource}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One published version of the desired state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub desired: Desired,
    pub problems: Vec<Problem>,
    /// When the version in force of each resource (`Kind namespace/name`) was accepted, as
    /// RFC 3339, where the store knows it.
    pub accepted: BTreeMap<String, String>,
    /// Counts publications, starting at 1.
    pub generation: u64,
}

/// A change to the desired state made through the API (the UI), applied where the store
/// keeps its resources: a YAML file of `odigos.d/` locally, the custom resource in a cluster.
#[derive(Clone, Debug)]
pub enum Change {
    /// A new resource; refused when one of its kind and name exists.
    Create(Object),
    /// A new version of a resource that exists.
    Update(Object),
    Delete(ObjectKey),
}

impl Change {
    pub fn key(&self) -> ObjectKey {
        match self {
            Change::Create(object) | Change::Update(object) => object.key(),
            Change::Delete(key) => key.clone(),
        }
    }

    /// Refuses a new version that does not validate, as a file or `kubectl apply` would be.
    pub(crate) fn check(&self, catalog: &crate::catalog::Catalog) -> Result<(), Refusal> {
        if let Change::Create(object) | Change::Update(object) = self {
            let errors = crate::resource::validate(object, catalog);
            if !errors.is_empty() {
                return Err(Refusal::Invalid(object.key(), errors));
            }
        }
        Ok(())
    }
}

/// Why a change was refused; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0} exists already")]
    Exists(ObjectKey),
    #[error("there is no {0}")]
    Missing(ObjectKey),
    /// The fields that are wrong, each with why.
    #[error("{} is not valid: {}", .0, .1.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(ObjectKey, Vec<FieldError>),
    #[error("{0}")]
    Failed(String),
}

/// A source of desired state.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Applies `change` once it validates like a file or `kubectl apply` would, and returns
    /// when the new desired state is published.
    async fn change(&self, change: Change) -> Result<(), Refusal>;

    /// The latest snapshot, and every later one as it is published.
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>>;

    /// Takes what the control plane made of the state, to show where users look for it
    /// (resource status in a cluster). The local store has nowhere to write: `odigos describe`
    /// and the API show it.
    fn report(self: Arc<Self>, status: Status) {
        let _ = status;
    }

    /// Whether the desired state is a Kubernetes cluster's, whose workloads can be
    /// instrumented.
    fn kubernetes(&self) -> bool {
        false
    }

    /// The running pods of each workload and how many of them the pod webhook gave the SDK
    /// environment, as they change; `None` where the store does not follow pods.
    fn workload_pods(&self) -> Option<watch::Receiver<Arc<WorkloadPods>>> {
        None
    }
}

/// The running pods of each workload, by (namespace, kind, name) as a Source names it.
pub type WorkloadPods = BTreeMap<(String, String, String), PodCounts>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCounts {
    pub pods: usize,
    /// Those created with the SDK environment the pod webhook gives.
    pub injected: usize,
}

/// What the control plane made of the desired state, as a cluster shows it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub generation: u64,
    /// Each resource's conditions, by (kind, namespace, name).
    pub conditions: BTreeMap<(&'static str, String, String), Vec<Condition>>,
    pub instrumentation_configs: Vec<InstrumentationConfig>,
    pub collectors_groups: Vec<CollectorsGroup>,
}

/// A status condition, as Kubernetes resources carry them: `Ready` says whether the config
/// is in force, `Healthy` whether data flows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    /// Since when it has been so (RFC 3339), where that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl Condition {
    pub(crate) fn new(ok: bool, reason: &str, message: &str) -> Condition {
        Condition {
            kind: "Ready",
            status: if ok { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
            since: None,
        }
    }

    /// The condition with the fields that have no effect here added to its message.
    pub(crate) fn noting(mut self, unheeded: &[crate::resource::FieldError]) -> Condition {
        if !unheeded.is_empty() {
            let list: Vec<String> = unheeded
                .iter()
                .map(|(field, why)| format!("{field}: {why}"))
                .collect();
            self.message = format!("{}; not in effect here: {}", self.message, list.join("; "));
        }
        self
    }

    /// Whether a workload's running pods have what its Source gives pods as they are created.
    pub(crate) fn rollout(ok: bool, reason: &str, message: &str) -> Condition {
        Condition {
            kind: "WorkloadRollout",
            ..Condition::new(ok, reason, message)
        }
    }

    pub(crate) fn health(
        status: &'static str,
        reason: &str,
        message: &str,
        since: Option<String>,
    ) -> Condition {
        Condition {
            kind: "Healthy",
            status,
            reason: reason.into(),
            message: message.into(),
            since,
        }
    }
}

/// The time now, as RFC 3339 (UTC, whole seconds).
pub(crate) fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
