//! `k8sattributes`: adds what Kubernetes knows of the pod telemetry comes from to its resource:
//! pod and namespace labels and annotations under the names the config gives, the pod's
//! ReplicaSet, its container's id and image, the cluster's uid. The pod is found by the
//! resource's `k8s.pod.uid`, or by `k8s.namespace.name` and `k8s.pod.name` (what the pod
//! webhook and odiglet put there), in the directory of this node's pods that the process
//! registers ([`set_directory`]); attributes a resource already has are kept.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use odigos_proto::otlp::common::v1::KeyValue;
use serde::Deserialize;

use crate::batch::Batch;
use crate::config::ComponentConfig;
use crate::consumer::{ConsumeError, Consumer, Next};

use super::Live;
use super::attributes::string_value;
use super::span_edit::string_attribute;

/// A pod, as the processor reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    pub namespace_annotations: BTreeMap<String, String>,
    /// The ReplicaSet that runs it: name and uid.
    pub replica_set: Option<(String, String)>,
    pub containers: Vec<ContainerInfo>,
    /// The uid of the `kube-system` namespace, which stands for the cluster's.
    pub cluster_uid: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    /// Without the runtime's `containerd://` prefix.
    pub id: String,
    pub image: String,
}

/// The pods of this node.
pub trait PodDirectory: Send + Sync {
    fn by_uid(&self, uid: &str) -> Option<Arc<PodInfo>>;
    fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>>;
}

static DIRECTORY: OnceLock<Arc<dyn PodDirectory>> = OnceLock::new();

/// Makes `directory` the one this process's `k8sattributes` processors read; the first call
/// wins.
pub fn set_directory(directory: Arc<dyn PodDirectory>) {
    let _ = DIRECTORY.set(directory);
}

/// `k8sattributes`, with the OpenTelemetry Collector's keys this processor honours. Pods are
/// always associated by `k8s.pod.uid`, then by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sAttributesConfig {
    /// `serviceAccount` (the only way here: the process's own credentials).
    #[serde(default)]
    pub auth_type: Option<String>,
    #[serde(default)]
    pub extract: Extract,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// Of `k8s.pod.uid`, `k8s.replicaset.name`, `k8s.replicaset.uid`, `container.id`,
    /// `container.image.name`, `container.image.tag`, `k8s.cluster.uid`.
    #[serde(default)]
    pub metadata: Vec<String>,
    #[serde(default)]
    pub labels: Vec<FieldExtract>,
    #[serde(default)]
    pub annotations: Vec<FieldExtract>,
}

/// One label or annotation that becomes an attribute.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldExtract {
    pub tag_name: String,
    pub key: String,
    /// `pod` (the default) or `namespace`.
    #[serde(default = "pod")]
    pub from: String,
}

fn pod() -> String {
    "pod".into()
}

const METADATA: &[&str] = &[
    "k8s.pod.uid",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "container.id",
    "container.image.name",
    "container.image.tag",
    "k8s.cluster.uid",
];

impl ComponentConfig for K8sAttributesConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let at = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if let Some(auth) = self.auth_type.as_deref().filter(|a| *a != "serviceAccount") {
            problems.push((
                at(&["auth_type"]),
                format!("{auth:?}: only serviceAccount is supported"),
            ));
        }
        for (i, key) in self.extract.metadata.iter().enumerate() {
            if !METADATA.contains(&key.as_str()) {
                problems.push((
                    at(&["extract", "metadata", &i.to_string()]),
                    format!("{key:?} is not one of {}", METADATA.join(", ")),
                ));
            }
        }
        for (list, fields) in [
            ("labels", &self.extract.labels),
            ("annotations", &self.extract.annotations),
        ] {
            for (i, field) in fields.iter().enumerate() {
                if !["pod", "namespace"].contains(&field.from.as_str()) {
                    problems.push((
                        at(&["extract", list, &i.to_string(), "from"]),
                        format!("{:?}: pod or namespace", field.from),
                    ));
                }
            }
        }
        problems
    }
}

/// The attributes `config` gives a resource from `pod`; `container` is the resource's
/// `k8s.container.name`, if any.
fn attributes_of(
    config: &K8sAttributesConfig,
    pod: &PodInfo,
    container: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let container = container.and_then(|name| pod.containers.iter().find(|c| c.name == name));
    for key in &config.extract.metadata {
        let value = match key.as_str() {
            "k8s.pod.uid" => Some(pod.uid.clone()),
            "k8s.replicaset.name" => pod.replica_set.as_ref().map(|(name, _)| name.clone()),
            "k8s.replicaset.uid" => pod.replica_set.as_ref().map(|(_, uid)| uid.clone()),
            "container.id" => container.map(|c| c.id.clone()),
            "container.image.name" => container.map(|c| image(&c.image).0.to_string()),
            "container.image.tag" => container.and_then(|c| image(&c.image).1.map(str::to_string)),
            "k8s.cluster.uid" => pod.cluster_uid.clone(),
            _ => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push((key.clone(), value));
        }
    }
    let fields = [
        (&config.extract.labels, &pod.labels, &pod.namespace_labels),
        (
            &config.extract.annotations,
            &pod.annotations,
            &pod.namespace_annotations,
        ),
    ];
    for (wanted, of_pod, of_namespace) in fields {
        for field in wanted {
            let from = if field.from == "namespace" {
                of_namespace
            } else {
                of_pod
            };
            if let Some(value) = from.get(&field.key) {
                out.push((field.tag_name.clone(), value.clone()));
            }
        }
    }
    out
}

/// An image reference's name and tag: `registry:5000/app:1.2` → (`registry:5000/app`, `1.2`).
fn image(reference: &str) -> (&str, Option<&str>) {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    }
}

/// Adds to `attributes` what `config` takes from the pod they name, keeping what is there.
fn enrich(
    config: &K8sAttributesConfig,
    directory: &dyn PodDirectory,
    attributes: &mut Vec<KeyValue>,
) {
    let pod = match string_attribute(attributes, "k8s.pod.uid") {
        Some(uid) => directory.by_uid(uid),
        None => string_attribute(attributes, "k8s.namespace.name")
            .zip(string_attribute(attributes, "k8s.pod.name"))
            .and_then(|(namespace, name)| directory.by_name(namespace, name)),
    };
    let Some(pod) = pod else {
        return;
    };
    let added = attributes_of(
        config,
        &pod,
        string_attribute(attributes, "k8s.container.name"),
    );
    for (key, value) in added {
        if !attributes.iter().any(|kv| kv.key == key) {
            attributes.push(KeyValue {
                key,
                value: Some(string_value(value)),
                ..Default::default()
            });
        }
    }
}

struct K8sAttributesProcessor {
    config: Live<K8sAttributesConfig>,
    next: Next,
}

#[async_trait]
impl Consumer for K8sAttributesProcessor {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        // Without a directory (not in a cluster) there is nothing to add.
        if let Some(directory) = DIRECTORY.get() {
            let config = self.config.load();
            let decoded = batch.decoded_mut()?;
            decoded.for_each_resource_attributes(|attributes| {
                enrich(&config, directory.as_ref(), attributes)
            });
        }
        self.next.consume(batch).await
    }
}

pub(super) fn build(config: Live<K8sAttributesConfig>, next: Next) -> Next {
    Arc::new(K8sAttributesProcessor { config, next })
}

#[cfg(test)]
mod tests {
    use super::super::span_edit::test_support::kv;
    use super::*;

    struct OnePod(Arc<PodInfo>);

    impl PodDirectory for OnePod {
        fn by_uid(&self, uid: &str) -> Option<Arc<PodInfo>> {
            (self.0.uid == uid).then(|| self.0.clone())
        }
        fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
            (self.0.namespace == namespace && self.0.name == name).then(|| self.0.clone())
        }
    }

    fn shop() -> OnePod {
        OnePod(Arc::new(PodInfo {
            uid: "u1".into(),
            name: "checkout-7d4b-x2".into(),
            namespace: "shop".into(),
            labels: [("team".into(), "payments".into())].into(),
            annotations: [("owner".into(), "ana".into())].into(),
            namespace_labels: [("env".into(), "prod".into())].into(),
            replica_set: Some(("checkout-7d4b".into(), "r1".into())),
            containers: vec![ContainerInfo {
                name: "web".into(),
                id: "abc123".into(),
                image: "registry:5000/shop/checkout:1.4".into(),
            }],
            cluster_uid: Some("c1".into()),
            ..PodInfo::default()
        }))
    }

    fn config(yaml: &str) -> K8sAttributesConfig {
        let config: K8sAttributesConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(config.validate(), Vec::new());
        config
    }

    #[test]
    fn the_pod_named_by_namespace_and_name_gives_its_labels_and_metadata() {
        let config = config(
            "extract:\n  metadata: [k8s.replicaset.name, container.id, container.image.name, container.image.tag, k8s.cluster.uid]\n  labels: [{tag_name: team, key: team}, {tag_name: environment, key: env, from: namespace}]\n  annotations: [{tag_name: owner, key: owner}]\n",
        );
        let mut attributes = vec![
            kv("k8s.namespace.name", "shop"),
            kv("k8s.pod.name", "checkout-7d4b-x2"),
            kv("k8s.container.name", "web"),
            // Kept as the application set it.
            kv("team", "mine"),
        ];
        enrich(&config, &shop(), &mut attributes);
        let got: BTreeMap<&str, &str> = attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    string_attribute(&attributes, &kv.key).unwrap(),
                )
            })
            .collect();
        assert_eq!(got["team"], "mine");
        assert_eq!(got["environment"], "prod");
        assert_eq!(got["owner"], "ana");
        assert_eq!(got["k8s.replicaset.name"], "checkout-7d4b");
        assert_eq!(got["container.id"], "abc123");
        assert_eq!(got["container.image.name"], "registry:5000/shop/checkout");
        assert_eq!(got["container.image.tag"], "1.4");
        assert_eq!(got["k8s.cluster.uid"], "c1");
    }

    #[test]
    fn a_resource_of_no_known_pod_is_left_as_it_is() {
        let config = config("extract: {labels: [{tag_name: team, key: team}]}\n");
        let mut attributes = vec![kv("k8s.pod.uid", "elsewhere")];
        enrich(&config, &shop(), &mut attributes);
        assert_eq!(attributes.len(), 1);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_its_field() {
        let config: K8sAttributesConfig = serde_yaml::from_str(
            "auth_type: kubeConfig\nextract: {metadata: [k8s.node.uid], labels: [{tag_name: a, key: b, from: node}]}\n",
        )
        .unwrap();
        let fields: Vec<String> = config
            .validate()
            .into_iter()
            .map(|(path, _)| path.join("."))
            .collect();
        assert_eq!(
            fields,
            ["auth_type", "extract.metadata.0", "extract.labels.0.from"]
        );
    }
}
