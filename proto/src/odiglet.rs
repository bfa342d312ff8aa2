//! What the control plane tells odiglet to trace, sent as `odiglet.json`: written by the
//! compiler, read by odiglet.

use serde::{Deserialize, Serialize};

/// The config file's name in the OpAMP remote config.
pub const FILE: &str = "odiglet.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OdigletConfig {
    /// In matching order: a process is traced for the first Source that takes it.
    #[serde(default)]
    pub sources: Vec<TracedSource>,
}

/// A Source whose processes odiglet traces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracedSource {
    /// `namespace/name` of the Source, as status names it.
    pub source: String,
    /// `service.name` of its spans; when empty, the process's executable name.
    #[serde(default)]
    pub service_name: String,
    /// Which processes it takes.
    pub select: ProcessSelector,
    pub traces_enabled: bool,
    /// The share of traces kept, 0 to 1, decided on the trace id so both ends agree.
    pub head_sampling_fraction: f64,
    /// Request headers recorded as `http.request.header.<key>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_keys: Vec<String>,
    /// Whether spans record the query of a request's target as `url.query` (an
    /// InstrumentationRule's `payloadCollection.httpRequest`): queries may carry what should
    /// not leave the process, so they are left out unless asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub url_query: bool,
    /// Server spans of these routes (paths) are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_routes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ProcessSelector {
    /// Processes whose executable's file name is this.
    Executable(String),
    /// Processes whose executable's name or command line this regex matches.
    Regex(String),
    /// Processes in the pods of a Kubernetes workload, found through their cgroups.
    Workload(Workload),
}

/// A Kubernetes workload: `kind` as the API names it (`Deployment`, `StatefulSet`, ...), or
/// `Namespace` for every pod of the namespace `name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}
