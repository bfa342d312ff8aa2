//! `Action`: a change the gateway makes to telemetry on its way to destinations.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, Signal, SourcesScopes};

/// One change to telemetry, applied by the gateway: exactly one of the action blocks is set.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "odigos.io",
    version = "v1alpha1",
    kind = "Action",
    namespaced,
    status = "Conditions",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
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
    // Boxed, the larger blocks keep an Action small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_masking: Option<Box<PiiMasking>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_attributes: Option<Box<K8sAttributes>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_templatization: Option<UrlTemplatization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_renamer: Option<Box<SpanRenamer>>,
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

/// Masks personal data in span attribute values (traces only, as Odigos).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PiiMasking {
    /// The sources whose spans are masked; every source when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<SourcesScopes>,
    /// Predefined patterns to mask; each match becomes `***CATEGORY***`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii_categories: Vec<PiiCategory>,
    /// Values found by a key inside structured text (JSON, SQL, URL paths), masked as `****`,
    /// in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_format_maskings: Vec<CustomFormatMasking>,
    /// Regular expressions whose first capture group is masked as `****`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_regex_maskings: Vec<CustomRegexMasking>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiCategory {
    /// Visa and MasterCard numbers.
    CreditCard,
    Email,
    /// JSON Web Tokens.
    Jwt,
    Uuid,
}

/// Masks the value of `lookupKey` in text of one format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomFormatMasking {
    /// The JSON key, SQL column or URL path segment whose value is masked.
    pub lookup_key: String,
    pub data_format: DataFormat,
}

/// The format of the text a [`CustomFormatMasking`] searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataFormat {
    /// `key/value` segments of URL paths.
    #[serde(rename = "resource_path")]
    ResourcePath,
    /// `"key": value` pairs.
    #[serde(rename = "json")]
    Json,
    /// `key = value` comparisons.
    #[serde(rename = "sql")]
    Sql,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRegexMasking {
    /// A regular expression with a capture group: the first group's text is masked.
    pub regex: String,
}

/// Adds Kubernetes metadata (labels, annotations, uids) as resource attributes. Runs in the
/// node collector of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sAttributes {
    /// `k8s.container.name`, `container.id`, `container.image.name`, `container.image.tag`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect_container_attributes: bool,
    /// `k8s.replicaset.name` (and its uid with `collectWorkloadUID`). Deprecated in Odigos:
    /// collected by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collect_replica_set_attributes: bool,
    /// `k8s.deployment.uid`, `k8s.daemonset.uid`, `k8s.statefulset.uid`. Deprecated in Odigos:
    /// collected by default.
    #[serde(
        default,
        rename = "collectWorkloadUID",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub collect_workload_uid: bool,
    /// `k8s.cluster.uid`: the uid of the `kube-system` namespace.
    #[serde(
        default,
        rename = "collectClusterUID",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub collect_cluster_uid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels_attributes: Vec<K8sLabelAttribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations_attributes: Vec<K8sAnnotationAttribute>,
}

/// A label that becomes a resource attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sLabelAttribute {
    /// The label, e.g. `app.kubernetes.io/name`.
    pub label_key: String,
    /// The resource attribute it becomes.
    pub attribute_key: String,
    /// Where the label is read: `pod` when not set. Deprecated: use `fromSources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<K8sAttributeSource>,
    /// Where the label is read, most specific first: the first that has it wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_sources: Vec<K8sAttributeSource>,
}

/// An annotation that becomes a resource attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sAnnotationAttribute {
    /// The annotation, e.g. `kubectl.kubernetes.io/restartedAt`.
    pub annotation_key: String,
    /// The resource attribute it becomes.
    pub attribute_key: String,
    /// Where the annotation is read: `pod` when not set. Deprecated: use `fromSources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Where the annotation is read, most specific first: the first that has it wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_sources: Vec<K8sAttributeSource>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum K8sAttributeSource {
    Pod,
    Namespace,
    Node,
}

/// Replaces high-cardinality URL paths of HTTP spans with templates (`/users/{id}`): sets
/// `http.route` (server spans) or `url.template` (client spans), and the span name when it is
/// only the method. Custom rules are tried first; then, unless a `default` group disables it,
/// the default heuristics (numbers, UUIDs, hex, dates, emails).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTemplatization {
    /// Groups of custom rules, each for the sources of its scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<UrlTemplatizationRule>,
    /// Settings of the default heuristics, each for the sources of its scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<UrlTemplatizationDefault>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTemplatizationRule {
    /// The sources the rules apply to; every source when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<SourcesScopes>,
    /// Path rules: static segments, `*` (any one segment, kept) and `{name}` (any one
    /// segment, templated), e.g. `/user/{user-id}/friends/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlTemplatizationDefault {
    /// The sources these settings apply to; every source when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<SourcesScopes>,
    /// Turn the default heuristics off for these sources (custom rules still apply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Skip the default heuristics for server spans with these response codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_policy: Option<SkipPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkipPolicy {
    /// Skip for every status code outside 2xx; `skipHttpStatusCodes` is then ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_for_non_success_codes: bool,
    /// Skip for these status codes, e.g. `[404, 401]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_http_status_codes: Vec<i64>,
}

/// Renames the spans of one instrumentation scope in one language by regular expressions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRenamer {
    /// The language the spans come from (`java`, `python`, `go`, `javascript`, ...), as the
    /// resource's `telemetry.sdk.language` says.
    pub programming_language: String,
    /// The instrumentation scope that produces the spans.
    pub scope_name: String,
    /// Replacements applied to the span name, each in turn, whether or not the previous ones
    /// matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex_replacements: Vec<SpanRenamerRegexReplacement>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRenamerRegexReplacement {
    /// What replaces each match (`$1` names a capture group).
    pub template_text: String,
    /// What part of the span name is replaced.
    pub regex_pattern: String,
}

#[cfg(test)]
mod tests {
    use super::super::{Object, validate};
    use crate::catalog::Catalog;
    use odigos_proto::yaml;

    fn problems(spec: &str) -> Vec<(String, String)> {
        let text = format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: a, namespace: odigos-system}}\nspec:\n{spec}"
        );
        let object = Object::from_value(yaml::parse(&text).unwrap()).unwrap();
        validate(&object, Catalog::builtin())
    }

    /// The examples of Odigos's Action documentation, unchanged.
    #[test]
    fn odigos_action_examples_apply_unchanged() {
        let examples = [
            "  actionName: PII Masking\n  signals:\n    - TRACES\n  piiMasking:\n    piiCategories:\n      - CREDIT_CARD\n",
            "  actionName: Custom PII Masking\n  signals:\n    - TRACES\n  piiMasking:\n    piiCategories:\n      - EMAIL\n    customFormatMaskings:\n      - lookupKey: ssn\n        dataFormat: json\n      - lookupKey: password\n        dataFormat: sql\n      - lookupKey: orders\n        dataFormat: resource_path\n    customRegexMaskings:\n      - regex: 'api[_-]?key=([^\\s&]+)'\n",
            "  signals: [TRACES]\n  piiMasking:\n    scopes:\n      sources:\n        - name: my-app\n          namespace: default\n          kind: Deployment\n    piiCategories:\n      - CREDIT_CARD\n      - EMAIL\n",
            "  actionName: Collect k8s attributes\n  signals: [TRACES, METRICS, LOGS]\n  k8sAttributes:\n    collectContainerAttributes: true\n    collectReplicaSetAttributes: true\n    collectWorkloadUID: true\n    collectClusterUID: true\n    labelsAttributes:\n      - labelKey: app.kubernetes.io/name\n        attributeKey: app.kubernetes.name\n        from: pod\n    annotationsAttributes:\n      - annotationKey: kubectl.kubernetes.io/restartedAt\n        attributeKey: kubectl.kubernetes.restartedAt\n        fromSources: [pod, namespace]\n",
            "  signals: [TRACES]\n  urlTemplatization:\n    rules:\n      - scopes:\n          languages: [java]\n        templates:\n          - /user/{user-id}\n    default:\n      - scopes:\n          sources:\n            - {namespace: default, kind: Deployment, name: my-public-api}\n        skipPolicy:\n          skipHttpStatusCodes: [404]\n",
            "  signals: [TRACES]\n  spanRenamer:\n    programmingLanguage: java\n    scopeName: io.opentelemetry.quartz-2.0\n    regexReplacements:\n      - regexPattern: '\\d+'\n        templateText: '{id}'\n",
            "  actionName: insert cluster name\n  signals: [TRACES, METRICS, LOGS]\n  addClusterInfo:\n    clusterAttributes:\n      - attributeName: k8s.cluster.name\n        attributeStringValue: my-cluster\n    overwriteExistingValues: true\n",
        ];
        for spec in examples {
            assert_eq!(problems(spec), [], "{spec}");
        }
    }

    #[test]
    fn broken_span_actions_are_refused_with_their_field() {
        let cases = [
            ("  signals: [TRACES]\n  piiMasking: {}\n", "spec.piiMasking"),
            (
                "  signals: [TRACES]\n  piiMasking:\n    customRegexMaskings: [{regex: 'no-group'}]\n",
                "spec.piiMasking.customRegexMaskings.0.regex",
            ),
            (
                "  signals: [TRACES, LOGS]\n  piiMasking: {piiCategories: [EMAIL]}\n",
                "spec.signals",
            ),
            (
                "  signals: [TRACES]\n  spanRenamer:\n    programmingLanguage: java\n    scopeName: s\n    regexReplacements: [{regexPattern: '(', templateText: x}]\n",
                "spec.spanRenamer.regexReplacements.0.regexPattern",
            ),
            (
                "  signals: [TRACES]\n  urlTemplatization:\n    rules: [{templates: ['/']}]\n",
                "spec.urlTemplatization.rules.0.templates.0",
            ),
        ];
        for (spec, field) in cases {
            let found = problems(spec);
            assert!(found.iter().any(|(f, _)| f == field), "{spec}: {found:?}");
        }
        // Unknown categories and the old field spelling are refused when read.
        for spec in [
            "  signals: [TRACES]\n  piiMasking: {piiCategories: [PHONE]}\n",
            "  signals: [TRACES]\n  k8sAttributes: {collectWorkloadUid: true}\n",
        ] {
            let text = format!(
                "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: a}}\nspec:\n{spec}"
            );
            assert!(
                Object::from_value(yaml::parse(&text).unwrap()).is_err(),
                "{spec}"
            );
        }
    }
}
