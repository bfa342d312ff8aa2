//! The `odigos.io/v1alpha1` custom resources: what users write (Source, Destination, Action,
//! InstrumentationRule, Sampling) and what the control plane writes (InstrumentationConfig,
//! CollectorsGroup). Kinds and field names follow Odigos, so existing manifests apply.
//!
//! The doc comments here become the descriptions in the generated CRDs (`odigos crdgen`).

mod action;
mod generated;
mod rule;
mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, Resource};
use odigos_proto::yaml::{self, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use action::*;
pub use generated::*;
pub use rule::*;
pub use validate::{FieldError, not_honoured, validate};

/// The API group and version of every kind here.
pub const API_VERSION: &str = "odigos.io/v1alpha1";

/// A telemetry signal. `PROFILES` is accepted where Odigos's destination types take it, but no
/// profiles pipeline runs yet: a destination receives no profiles.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
    Profiles,
}

impl Signal {
    /// The signals the pipelines carry.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The name pipelines use: `traces`, `metrics`, `logs` (`profiles`).
    pub fn pipeline(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Profiles => "profiles",
        }
    }
}

/// What kind of thing a workload is. `Process` names a local executable (or a regex over
/// executable names, with `matchWorkloadNameAsRegex`), for machines without Kubernetes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
    StatefulSet,
    Namespace,
    StaticPod,
    CronJob,
    Job,
    DeploymentConfig,
    Rollout,
    Process,
}

/// A workload: where instrumented telemetry comes from.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PodWorkload {
    pub name: String,
    /// Kubernetes namespace; for a `Process` it may be left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub kind: WorkloadKind,
}

/// Which sources a rule is for, as Odigos writes it today: each list that is given must match
/// (a source in one of `sources`, and in one of `namespaces`, and in one of `languages`); an
/// empty or absent list matches every source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcesScopes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<PodWorkload>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Programming languages (`java`, `python`, `go`, `dotnet`, `javascript`, `php`, `ruby`,
    /// ...). A source's language is known here only from its `containerOverrides[].runtimeInfo`;
    /// a source without one matches no language.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
}

/// One source scope in the list form of Odigos's sampling documentation: every field given
/// must match; empty fields match anything. A list of them matches a source when any one does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcesScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<WorkloadKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_namespace: Option<String>,
    /// Limits the scope to one container; a Source has one service name for all its
    /// containers, so this narrows nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// As in [`SourcesScopes::languages`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_language: Option<String>,
}

/// A sampling rule's `sourceScopes`, in either form Odigos has used: a list of
/// [`SourcesScope`] items (its documentation's examples) or one [`SourcesScopes`] object (its
/// current API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SourceScopes {
    List(Vec<SourcesScope>),
    Scopes(SourcesScopes),
}

impl Default for SourceScopes {
    fn default() -> Self {
        SourceScopes::List(Vec::new())
    }
}

impl SourceScopes {
    /// Whether it matches every source.
    pub fn is_empty(&self) -> bool {
        match self {
            SourceScopes::List(items) => items.is_empty(),
            SourceScopes::Scopes(s) => {
                s.sources.is_empty() && s.namespaces.is_empty() && s.languages.is_empty()
            }
        }
    }

    /// Whether the source of `workload`, whose languages are `languages`, is in scope.
    pub fn matches(&self, workload: &PodWorkload, languages: &[String]) -> bool {
        let language = |wanted: &str| languages.iter().any(|l| l.eq_ignore_ascii_case(wanted));
        match self {
            SourceScopes::List(items) => {
                items.is_empty()
                    || items.iter().any(|scope| {
                        scope
                            .workload_name
                            .as_ref()
                            .is_none_or(|n| *n == workload.name)
                            && scope.workload_kind.is_none_or(|k| k == workload.kind)
                            && scope
                                .workload_namespace
                                .as_ref()
                                .is_none_or(|n| *n == workload.namespace)
                            && scope.workload_language.as_deref().is_none_or(language)
                    })
            }
            SourceScopes::Scopes(s) => s.matches(workload, languages),
        }
    }
}

impl SourcesScopes {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.namespaces.is_empty() && self.languages.is_empty()
    }

    /// Whether the source of `workload`, whose languages are `languages`, is in scope.
    pub fn matches(&self, workload: &PodWorkload, languages: &[String]) -> bool {
        (self.sources.is_empty() || self.sources.contains(workload))
            && (self.namespaces.is_empty() || self.namespaces.contains(&workload.namespace))
            && (self.languages.is_empty()
                || self
                    .languages
                    .iter()
                    .any(|l| languages.iter().any(|m| m.eq_ignore_ascii_case(l))))
    }
}

/// Either form, in a CRD: structural schemas cannot say "a list or an object", so the API
/// server keeps the value as given and the control plane checks it.
impl JsonSchema for SourceScopes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceScopes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The sources a rule is for: a list of {workloadName, workloadKind, workloadNamespace, containerName, workloadLanguage} items (any may match), or an object {sources, namespaces, languages} (each list given must match). Empty or absent: every source.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Conditions, the status of most kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Marks a workload (or a whole namespace) for instrumentation. Labels with the prefix
/// `odigos.io/data-stream-` put the source in data streams that Destinations can select.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "Source",
    namespaced,
    status = "Conditions",
    printcolumn = r#"{"name":"Workload","type":"string","jsonPath":".spec.workload.name"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.workload.kind"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    pub workload: PodWorkload,
    /// Set to stop instrumenting this workload (or to exclude it from a namespace Source).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_instrumentation: bool,
    /// The `service.name` its telemetry carries; the workload name when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_service_name: Option<String>,
    /// Treat `workload.name` as a regular expression over workload (or executable) names. As
    /// in Odigos it matches anywhere in a name: write `^name$` to match whole names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_workload_name_as_regex: bool,
    /// Per-container settings that override what runtime detection found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_overrides: Vec<ContainerOverride>,
}

/// Settings for one container of the workload, over what runtime detection finds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerOverride {
    pub container_name: String,
    /// The runtime to assume instead of detecting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_info: Option<RuntimeInfo>,
    /// The OpenTelemetry distribution to use for this container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_distro_name: Option<String>,
    /// Whether the agent may run beside another agent found in the container. Accepted, but
    /// without effect: nothing here detects other agents yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_concurrent_agents: Option<bool>,
}

/// A container's runtime, as Odigos's runtime detection reports it. `language` and
/// `runtimeVersion` are used; the other fields are accepted, as Odigos writes them, without
/// effect.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_name: String,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_vars: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_agents: Vec<OtherAgent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lib_c_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_execution_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_container_runtime: Vec<EnvVar>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtherAgent {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Where telemetry is sent: a destination type from the catalog and its fields.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "Destination",
    namespaced,
    status = "Conditions",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSpec {
    /// The catalog type, e.g. `otlp`, `honeycomb`, `file`.
    #[serde(rename = "type")]
    pub destination_type: String,
    /// A name for people; the resource name when not set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_name: String,
    /// Field values by field name (as the catalog names them). Secret fields go in the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// A Secret in the same namespace holding the secret fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    pub signals: Vec<Signal>,
    /// Set to stop sending to this destination without deleting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Send only data from these sources (either list matching is enough); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_selector: Option<SourceSelector>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_streams: Vec<String>,
}

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The CRDs of every kind, in a stable order.
pub fn crds() -> Vec<Crd> {
    [
        Source::crd(),
        Destination::crd(),
        Action::crd(),
        InstrumentationRule::crd(),
        Sampling::crd(),
        InstrumentationConfig::crd(),
        CollectorsGroup::crd(),
    ]
    .into_iter()
    .map(without_null_enum_values)
    .collect()
}

/// An optional enum's schema lists `null` among its values; `nullable` already says it, and
/// API servers before 1.22 refuse such a CRD, so the `null` goes.
fn without_null_enum_values(crd: Crd) -> Crd {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|v| !v.is_null());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD deserializes")
}

/// The CRDs as one multi-document YAML text, as the chart keeps them.
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated by `odigos crdgen` from the Rust types in server/src/resource; do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&odigos_proto::yaml::to_string(&crd));
    }
    out
}

/// Any resource the desired state holds: the odigos.io kinds users write, and `v1` Secrets.
#[derive(Clone, Debug)]
pub enum Object {
    Source(Source),
    Destination(Destination),
    Action(Action),
    InstrumentationRule(InstrumentationRule),
    Sampling(Sampling),
    Secret(Secret),
}

/// The kinds a user writes, as `(apiVersion, kind)`.
pub const KINDS: &[(&str, &str)] = &[
    (API_VERSION, "Source"),
    (API_VERSION, "Destination"),
    (API_VERSION, "Action"),
    (API_VERSION, "InstrumentationRule"),
    (API_VERSION, "Sampling"),
    ("v1", "Secret"),
];

/// Where a resource lives: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The namespace of resources written without one.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Object {
    /// Reads one YAML document; the error is the path of the offending field and why.
    pub fn from_value(value: Value) -> Result<Object, FieldError> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let typed = |(path, e): (Vec<String>, String)| (path.join("."), e);
        Ok(match (api_version.as_str(), kind.as_str()) {
            (API_VERSION, "Source") => Object::Source(yaml::from_value(value).map_err(typed)?),
            (API_VERSION, "Destination") => {
                Object::Destination(yaml::from_value(value).map_err(typed)?)
            }
            (API_VERSION, "Action") => Object::Action(yaml::from_value(value).map_err(typed)?),
            (API_VERSION, "InstrumentationRule") => {
                Object::InstrumentationRule(yaml::from_value(value).map_err(typed)?)
            }
            (API_VERSION, "Sampling") => Object::Sampling(yaml::from_value(value).map_err(typed)?),
            ("v1", "Secret") => Object::Secret(yaml::from_value(value).map_err(typed)?),
            _ => {
                let known: Vec<String> = KINDS.iter().map(|(v, k)| format!("{v} {k}")).collect();
                return Err((
                    "kind".into(),
                    format!(
                        "unknown apiVersion {api_version:?} kind {kind:?}; known: {}",
                        known.join(", ")
                    ),
                ));
            }
        })
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Object::Source(_) => "Source",
            Object::Destination(_) => "Destination",
            Object::Action(_) => "Action",
            Object::InstrumentationRule(_) => "InstrumentationRule",
            Object::Sampling(_) => "Sampling",
            Object::Secret(_) => "Secret",
        }
    }

    /// Its spec, as JSON (a Secret has none).
    pub fn spec(&self) -> serde_json::Value {
        let spec = match self {
            Object::Source(o) => serde_json::to_value(&o.spec),
            Object::Destination(o) => serde_json::to_value(&o.spec),
            Object::Action(o) => serde_json::to_value(&o.spec),
            Object::InstrumentationRule(o) => serde_json::to_value(&o.spec),
            Object::Sampling(o) => serde_json::to_value(&o.spec),
            Object::Secret(_) => Ok(serde_json::Value::Null),
        };
        spec.unwrap_or_default()
    }

    /// The resource as a YAML document, as a user writes it: no status or server fields, and
    /// no namespace when it is the default one.
    pub fn to_yaml(&self) -> String {
        let mut value = match self {
            Object::Source(o) => yaml::to_value(o),
            Object::Destination(o) => yaml::to_value(o),
            Object::Action(o) => yaml::to_value(o),
            Object::InstrumentationRule(o) => yaml::to_value(o),
            Object::Sampling(o) => yaml::to_value(o),
            Object::Secret(o) => yaml::to_value(o),
        };
        if let Some(fields) = value.as_mapping_mut() {
            fields.remove("status");
            if let Some(meta) = fields.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
                meta.retain(|key, value| match key.as_str() {
                    Some("namespace") => value.as_str() != Some(DEFAULT_NAMESPACE),
                    Some("name" | "labels" | "annotations") => true,
                    _ => false,
                });
            }
        }
        yaml::to_string(&value)
    }

    /// The status conditions it carries (a Secret has none).
    pub fn conditions(&self) -> &[Condition] {
        let status = match self {
            Object::Source(o) => o.status.as_ref(),
            Object::Destination(o) => o.status.as_ref(),
            Object::Action(o) => o.status.as_ref(),
            Object::InstrumentationRule(o) => o.status.as_ref(),
            Object::Sampling(o) => o.status.as_ref(),
            Object::Secret(_) => None,
        };
        status.map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Source(o) => o.meta(),
            Object::Destination(o) => o.meta(),
            Object::Action(o) => o.meta(),
            Object::InstrumentationRule(o) => o.meta(),
            Object::Sampling(o) => o.meta(),
            Object::Secret(o) => o.meta(),
        }
    }
}

/// The values of a Secret: `stringData` over decoded `data`.
pub fn secret_values(secret: &Secret) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    if let Some(plain) = &secret.string_data {
        values.extend(plain.clone());
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart ships the CRDs generated from these types; regenerate them with
    /// `cargo run -- crdgen > charts/odigos/crds/odigos.io.yaml`.
    #[test]
    fn chart_crds_match_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/odigos/crds/odigos.io.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crds_yaml(),
            "{path} is out of date; run `cargo run -- crdgen > charts/odigos/crds/odigos.io.yaml`"
        );
    }

    #[test]
    fn what_k8s_attributes_cannot_do_yet_is_named() {
        let text = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata: {name: labels, namespace: odigos-system}
spec:
  signals: [TRACES]
  k8sAttributes:
    collectWorkloadUID: true
    labelsAttributes:
      - {labelKey: team, attributeKey: team}
      - {labelKey: zone, attributeKey: zone, fromSources: [pod, node]}
    annotationsAttributes:
      - {annotationKey: owner, attributeKey: owner, from: node}
";
        let object = Object::from_value(yaml::parse(text).unwrap()).unwrap();
        let fields: Vec<String> = not_honoured(&object, crate::catalog::Catalog::builtin())
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.k8sAttributes.collectWorkloadUID",
                "spec.k8sAttributes.labelsAttributes.1",
                "spec.k8sAttributes.annotationsAttributes.0",
            ]
        );
    }

    #[test]
    fn odigos_manifests_read_as_they_are() {
        // The Destination example from the Odigos documentation, unchanged.
        let text = "apiVersion: odigos.io/v1alpha1
kind: Destination
metadata: {name: my-otlp, namespace: odigos-system}
spec:
  type: otlp
  destinationName: my-otlp
  signals: [TRACES]
  data: {OTLP_GRPC_ENDPOINT: \"collector.example:4317\"}
";
        let object = Object::from_value(yaml::parse(text).unwrap()).unwrap();
        assert_eq!(
            object.key().to_string(),
            "Destination odigos-system/my-otlp"
        );
        let Object::Destination(destination) = object else {
            panic!()
        };
        assert_eq!(destination.spec.signals, [Signal::Traces]);
        assert_eq!(
            destination.spec.data["OTLP_GRPC_ENDPOINT"],
            "collector.example:4317"
        );
    }
}
