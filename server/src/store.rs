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
    Action, Destination, InstrumentationRule, Object, ObjectKey, Sampling, Source,
};

pub use kubernetes::KubeStore;
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

/// A source of desired state.
pub trait Store: Send + Sync {
    /// The latest snapshot, and every later one as it is published.
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>>;

    /// Takes what the control plane made of the state, to show where users look for it
    /// (resource status in a cluster). The local store has nowhere to write: `odigos describe`
    /// and the API show it.
    fn report(self: Arc<Self>, state: crate::reconciler::State) {
        let _ = state;
    }

    /// Whether the desired state is a Kubernetes cluster's, whose workloads can be
    /// instrumented.
    fn kubernetes(&self) -> bool {
        false
    }
}

/// The time now, as RFC 3339 (UTC, whole seconds).
fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
