//! `InstrumentationRule` (what agents collect) and `Sampling` (which traces are kept).
//!
//! Field names and meanings are Odigos's. Fields that no agent here acts on yet are accepted
//! and say so in their doc comment; [`super::not_honoured`] lists the ones a resource sets.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, PodWorkload, SourceScopes, SourcesScopes};

/// How instrumentation behaves in the workloads it is scoped to (all when no scope is given).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "InstrumentationRule",
    namespaced,
    status = "Conditions",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstrumentationRuleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The sources the rule is for; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<SourcesScopes>,
    /// The workloads the rule is for (Odigos's older field; prefer `scopes`). Absent: every
    /// workload; an empty list: none, so the rule is inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Vec<PodWorkload>>,
    /// The instrumentation libraries the rule is for: all when absent, none when empty.
    /// Accepted, but without effect: the agent settings here are per workload, not per
    /// library, so the rule applies to every library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrumentation_libraries: Option<Box<Vec<InstrumentationLibraryGlobalId>>>,
    /// With `httpRequest`, odiglet records each request's query as `url.query`. Bodies,
    /// database queries and messages are accepted, but not recorded yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_collection: Option<PayloadCollection>,
    /// The OpenTelemetry distributions to use instead of the defaults. Accepted, but without
    /// effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_distros: Option<OtelDistros>,
    /// Which `code.*` attributes spans carry. Accepted, but without effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_attributes: Option<CodeAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_collection: Option<HeadersCollection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_config: Option<TraceConfig>,
    /// Custom probes. Accepted, but without effect yet: no agent here loads custom probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_instrumentations: Option<Box<CustomInstrumentations>>,
    /// Deprecated in Odigos, still honoured: the share of traces kept when no rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sampling_fallback_fraction: Option<HeadSamplingFallbackFraction>,
    /// eBPF log capture. Accepted, but without effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf_log_capture: Option<EbpfLogCapture>,
    /// Network flow and TCP metrics (on when present). Accepted, but without effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_metrics: Option<NetworkMetrics>,
    /// Instrumentation libraries turned off or on. Accepted, but without effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_verbosity: Option<Box<TraceVerbosity>>,
    /// The agent's own log levels. Accepted, but without effect yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_diagnostics: Option<Box<AgentDiagnostics>>,
}

impl InstrumentationRuleSpec {
    /// Whether the rule applies to the source of `workload`, whose languages are `languages`.
    pub fn applies_to(&self, workload: &PodWorkload, languages: &[String]) -> bool {
        !self.disabled
            && self.workloads.as_ref().is_none_or(|w| w.contains(workload))
            && self
                .scopes
                .as_ref()
                .is_none_or(|s| s.matches(workload, languages))
    }
}

/// An instrumentation library: its name, its language and, for Go, its span kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstrumentationLibraryGlobalId {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_kind: Option<String>,
    pub language: String,
}

/// Which request and response bodies, database queries and messages are recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayloadCollection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_response: Option<HttpPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_query: Option<DbQueryPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging: Option<MessagingPayload>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPayload {
    /// Only bodies of these content types; all when absent, none when empty.
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
    /// `sanitized`, `full` or `sanitized-or-full` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitization_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessagingPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_partial_payloads: Option<bool>,
}

/// HTTP headers recorded as span attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadersCollection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_keys: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Turn tracing off for the workloads in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtelDistros {
    pub otel_distro_names: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_number: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomInstrumentations {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub golang: Vec<GolangCustomProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub java: Vec<JavaCustomProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpp: Vec<CppCustomProbe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub php: Vec<PhpCustomProbe>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GolangCustomProbe {
    pub package_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub function_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver_method_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JavaCustomProbe {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CppCustomProbe {
    pub signature: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhpCustomProbe {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class_name: String,
    pub function_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfLogCapture {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Present means on; Odigos has no settings here yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkMetrics {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceVerbosity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_libraries: Vec<InstrumentationLibrary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_libraries: Vec<InstrumentationLibrary>,
}

/// A library by language and name; the language key is written `Language`, as in Odigos.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstrumentationLibrary {
    #[serde(rename = "Language")]
    pub language: String,
    #[serde(rename = "libraryName")]
    pub library_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentDiagnostics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odigos_log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_telemetry_components_log_level: Option<String>,
}

/// The share of traces kept at the head when no sampling rule decides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadSamplingFallbackFraction {
    /// Between 0 and 1; 1 when not set.
    #[serde(default = "one")]
    pub fraction_to_keep: f64,
}

fn one() -> f64 {
    1.0
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
    status = "Conditions",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
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
    /// The sources the rule is for; every source when absent or empty.
    #[serde(default, skip_serializing_if = "SourceScopes::is_empty")]
    pub source_scopes: SourceScopes,
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
    /// The sources the rule is for; every source when absent or empty.
    #[serde(default, skip_serializing_if = "SourceScopes::is_empty")]
    pub source_scopes: SourceScopes,
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
    /// The sources the rule is for; every source when absent or empty.
    #[serde(default, skip_serializing_if = "SourceScopes::is_empty")]
    pub source_scopes: SourceScopes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    pub percentage_at_most: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Which operation a sampling rule is about. Noisy operations take `httpServer`, `httpClient`,
/// `grpcServer` and `grpcClient`; highly relevant operations and cost reduction rules take
/// `httpServer`, `kafkaConsumer` and `kafkaProducer`. Only `httpServer.route` (with `method`
/// for noisy operations) narrows a rule here yet: a rule with any other matcher is accepted and
/// does nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_server: Option<HttpServerOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_client: Option<HttpClientOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_server: Option<GrpcOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_client: Option<GrpcOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_consumer: Option<KafkaOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_producer: Option<KafkaOperation>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParam>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParam {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_exact: Option<String>,
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

/// A gRPC call: the bare method name, the fully qualified service, and for clients the
/// server address; empty fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
}

/// A Kafka topic; empty matches every topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_topic: Option<String>,
}
