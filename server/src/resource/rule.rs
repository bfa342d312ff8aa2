//! `InstrumentationRule` (what agents collect) and `Sampling` (which traces are kept).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, PodWorkload, SourcesScope};

/// How instrumentation behaves in the workloads and languages it is scoped to (all when no
/// scope is given).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "InstrumentationRule",
    namespaced,
    status = "Conditions"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstrumentationRuleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The workloads the rule is for; all when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Vec<PodWorkload>>,
    /// The languages the rule is for (`python`, `java`, `go`, ...); all when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_collection: Option<PayloadCollection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_collection: Option<HeadersCollection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_config: Option<TraceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sampling_fallback_fraction: Option<HeadSamplingFallbackFraction>,
}

/// Which request and response bodies and database queries are recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadCollection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_response: Option<HttpPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_query: Option<DbQueryPayload>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_partial_payloads: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DbQueryPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_partial_payloads: Option<bool>,
}

/// HTTP headers recorded as span attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadersCollection {
    pub header_keys: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Turn tracing off for the workloads in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// The share of traces kept at the head when no sampling rule decides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadSamplingFallbackFraction {
    pub fraction_to_keep: f64,
}

/// Sampling rules. All Sampling resources join into one set: noisy operations are dropped at
/// the head, highly relevant operations keep their whole trace at the gateway, and cost
/// reduction rules keep a share of the traces of their sources.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "Sampling",
    namespaced,
    status = "Conditions"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamplingSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noisy_operations: Vec<NoisyOperation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub highly_relevant_operations: Vec<HighlyRelevantOperation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_reduction_rules: Vec<CostReductionRule>,
}

/// Operations of little value (health checks, scrapes): kept at most at this percentage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoisyOperation {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_scopes: Vec<SourcesScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// 0 when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage_at_most: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Operations whose traces are kept (at least at this percentage) when found in a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HighlyRelevantOperation {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_scopes: Vec<SourcesScope>,
    /// Only spans with an error status count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// Only traces lasting at least this long count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_at_least_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// 100 when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage_at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Keeps at most this percentage of the traces of the sources in scope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CostReductionRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_scopes: Vec<SourcesScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    pub percentage_at_most: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Which operation a sampling rule is about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_server: Option<HttpServerOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_client: Option<HttpClientOperation>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpServerOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpClientOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templated_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templated_path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}
