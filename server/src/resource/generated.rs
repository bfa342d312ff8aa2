//! Kinds the control plane writes: `InstrumentationConfig` (one per instrumented workload) and
//! `CollectorsGroup` (one per collector role).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// How one workload is instrumented, computed from its Source and the InstrumentationRules.
/// Named `<kind>-<name>` in lowercase.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "InstrumentationConfig",
    namespaced,
    status = "InstrumentationConfigStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentationConfigSpec {
    pub service_name: String,
    pub agent_injection_enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerAgentConfig>,
    /// What the agent in the workload is told: the rules that apply to it, joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerAgentConfig {
    pub container_name: String,
    pub agent_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_enabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_distro_name: Option<String>,
}

/// The settings an instrumentation agent (odiglet's eBPF or an SDK under OpAMP) applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub traces_enabled: bool,
    /// The share of traces kept when no sampling rule decides, 0 to 1.
    pub head_sampling_fraction: f64,
    /// Spans of these HTTP server routes are dropped at the head.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_collection: Option<super::PayloadCollection>,
    /// The InstrumentationRules that apply, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentationConfigStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_details_by_container: Vec<RuntimeDetails>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDetails {
    pub container_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
}

/// A group of collectors in one role, and how they are sized.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "CollectorsGroup",
    namespaced,
    status = "CollectorsGroupStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct CollectorsGroupSpec {
    /// `CLUSTER_GATEWAY` or `NODE_COLLECTOR`.
    pub role: String,
    #[serde(default)]
    pub resources_settings: ResourcesSettings,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSettings {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub memory_request_mi_b: u32,
    pub memory_limit_mi_b: u32,
    pub cpu_request_millicores: u32,
    pub cpu_limit_millicores: u32,
    pub memory_limiter_limit_mi_b: u32,
    pub memory_limiter_spike_limit_mi_b: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorsGroupStatus {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receiver_signals: Vec<super::Signal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
