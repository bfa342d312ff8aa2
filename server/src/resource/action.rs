//! `Action`: a change the gateway makes to telemetry on its way to destinations.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, Signal, SourcesScope};

/// One change to telemetry, applied by the gateway: exactly one of the action blocks is set.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "Action",
    namespaced,
    status = "Conditions"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionSpec {
    /// A name for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// Set to stop applying the action without deleting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// The signals the action changes.
    pub signals: Vec<Signal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_cluster_info: Option<AddClusterInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_attribute: Option<DeleteAttribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_attribute: Option<RenameAttribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_masking: Option<PiiMasking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_attributes: Option<K8sAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_templatization: Option<UrlTemplatization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_renamer: Option<SpanRenamer>,
}

impl ActionSpec {
    /// The names of the action blocks that are set; a valid action has exactly one.
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("addClusterInfo", self.add_cluster_info.is_some()),
            ("deleteAttribute", self.delete_attribute.is_some()),
            ("renameAttribute", self.rename_attribute.is_some()),
            ("piiMasking", self.pii_masking.is_some()),
            ("k8sAttributes", self.k8s_attributes.is_some()),
            ("urlTemplatization", self.url_templatization.is_some()),
            ("spanRenamer", self.span_renamer.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect()
    }
}

/// Adds resource attributes with fixed values (the cluster's name, region, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddClusterInfo {
    pub cluster_attributes: Vec<ClusterAttribute>,
    /// Replace values the telemetry already has; by default they are kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite_existing_values: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterAttribute {
    pub attribute_name: String,
    pub attribute_string_value: String,
}

/// Removes attributes from spans, data points, log records and resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteAttribute {
    pub attribute_names_to_delete: Vec<String>,
}

/// Renames attributes: each key of `renames` becomes its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameAttribute {
    pub renames: BTreeMap<String, String>,
}

/// Masks personal data in attribute values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PiiMasking {
    pub pii_categories: Vec<PiiCategory>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiCategory {
    CreditCard,
    Email,
    Jwt,
    Uuid,
}

/// Adds Kubernetes metadata (labels, annotations, uids) as resource attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sAttributes {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect_container_attributes: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect_workload_uid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels_attributes: Vec<K8sTagAttribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations_attributes: Vec<K8sTagAttribute>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sTagAttribute {
    pub attribute_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_key: Option<String>,
    /// `pod`, `namespace` or `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Replaces high-cardinality URL paths with templates (`/users/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTemplatization {
    pub templatization_rules_groups: Vec<UrlTemplatizationRulesGroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTemplatizationRulesGroup {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources_scope: Vec<SourcesScope>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templatization_rules: Vec<UrlTemplatizationRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlTemplatizationRule {
    pub template: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Renames spans whose names carry high-cardinality values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRenamer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<SpanRenamerGeneric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_quartz: Option<SpanRenamerJavaQuartz>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRenamerGeneric {
    pub programming_language: String,
    pub scope_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_span_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRenamerJavaQuartz {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_group_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name_template: Option<String>,
}
