//! The pods of this node, followed through the Kubernetes API. odiglet's view: which
//! workload runs each pod and what its containers are called, to match processes to Sources
//! of Kubernetes workloads. The node collector's: their labels and annotations, those of their
//! namespaces, their ReplicaSets and containers, for `k8sattributes`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use odigos_collector::processor::k8s_attributes::{ContainerInfo, PodDirectory, PodInfo};
use odigos_ebpf::pods::{self, Pods};
use odigos_server::webhook::workload_of;

/// A cache of the pods of `node`, and the events that fill it.
fn node_pods(
    client: Client,
    node: &str,
) -> (
    reflector::Store<Pod>,
    impl futures_util::Stream<Item = Result<(), watcher::Error>>,
) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (reader, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(Api::<Pod>::all(client), config));
    (reader, events.default_backoff().map(|e| e.map(drop)))
}

/// A container id as the runtime names it, without its `containerd://` (or other) prefix.
fn container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, id)| id)
}

/// Follows the pods of `node` until the process ends, handing each change of what odiglet
/// needs to know to `update`.
pub async fn follow(node: String, update: impl Fn(Pods)) -> Result<(), kube::Error> {
    let (reader, stream) = node_pods(Client::try_default().await?, &node);
    futures_util::pin_mut!(stream);
    let mut known = Pods::new();
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching this node's pods failed; retrying");
            continue;
        }
        let now: Pods = reader
            .state()
            .iter()
            .filter_map(|pod| Some((pod.uid()?, Arc::new(describe(pod, &node)))))
            .collect();
        // Pods' statuses change often; odiglet rematches processes only when what it uses does.
        if now != known {
            tracing::info!(pods = now.len(), "pods on this node");
            known = now;
            update(known.clone());
        }
    }
    Ok(())
}

/// What odiglet knows of `pod`.
fn describe(pod: &Pod, node: &str) -> pods::Pod {
    let (workload_kind, workload_name) =
        workload_of(&pod.metadata).unwrap_or_else(|| ("Pod".into(), pod.name_any()));
    let containers = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| {
            Some((
                container_id(c.container_id.as_deref()?).to_string(),
                c.name.clone(),
            ))
        })
        .collect();
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    let ips = pod
        .status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .map(|ip| ip.ip.clone())
        .filter(|_| !host_network)
        .collect();
    pods::Pod {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node: node.to_string(),
        workload_kind,
        workload_name,
        containers,
        ips,
    }
}

/// The node collector's directory of its node's pods, kept current by [`follow_directory`].
#[derive(Default)]
pub struct Directory {
    index: RwLock<Arc<Index>>,
}

#[derive(Default)]
struct Index {
    by_uid: HashMap<String, Arc<PodInfo>>,
    by_name: HashMap<(String, String), Arc<PodInfo>>,
}

impl PodDirectory for Directory {
    fn by_uid(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.index.read().unwrap().by_uid.get(uid).cloned()
    }

    fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        let key = (namespace.to_string(), name.to_string());
        self.index.read().unwrap().by_name.get(&key).cloned()
    }
}

/// Keeps `directory` current with the pods of `node` and the namespaces (their labels and
/// annotations, and `kube-system`'s uid, the cluster's), until the process ends.
pub async fn follow_directory(node: String, directory: Arc<Directory>) -> Result<(), kube::Error> {
    let client = Client::try_default().await?;
    let (pods, pod_events) = node_pods(client.clone(), &node);
    let (namespaces, writer) = reflector::store();
    let namespace_api = Api::<PartialObjectMeta<Namespace>>::all(client);
    let namespace_events =
        reflector::reflector(writer, watcher(namespace_api, watcher::Config::default()));
    let events = futures_util::stream::select(
        pod_events,
        namespace_events.default_backoff().map(|e| e.map(drop)),
    );
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching this node's pods failed; retrying");
            continue;
        }
        let namespaces: HashMap<String, Arc<PartialObjectMeta<Namespace>>> = namespaces
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        let cluster_uid = namespaces.get("kube-system").and_then(|n| n.uid());
        let mut index = Index::default();
        for pod in pods.state() {
            let namespace = namespaces.get(&pod.namespace().unwrap_or_default());
            let info = Arc::new(pod_info(
                &pod,
                namespace.map(|n| &n.metadata),
                cluster_uid.clone(),
            ));
            index.by_uid.insert(info.uid.clone(), info.clone());
            index
                .by_name
                .insert((info.namespace.clone(), info.name.clone()), info);
        }
        *directory.index.write().unwrap() = Arc::new(index);
    }
    Ok(())
}

/// What `k8sattributes` reads of `pod`, in `namespace`.
fn pod_info(
    pod: &Pod,
    namespace: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    cluster_uid: Option<String>,
) -> PodInfo {
    let map = |m: Option<&BTreeMap<String, String>>| m.cloned().unwrap_or_default();
    let images: HashMap<&str, &str> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| Some((c.name.as_str(), c.image.as_deref()?)))
        .collect();
    let containers = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| ContainerInfo {
            name: c.name.clone(),
            id: c
                .container_id
                .as_deref()
                .map(container_id)
                .unwrap_or_default()
                .to_string(),
            image: images
                .get(c.name.as_str())
                .map_or_else(|| c.image.clone(), |i| i.to_string()),
        })
        .collect();
    PodInfo {
        uid: pod.uid().unwrap_or_default(),
        name: pod.name_any(),
        namespace: pod.namespace().unwrap_or_default(),
        labels: map(pod.metadata.labels.as_ref()),
        annotations: map(pod.metadata.annotations.as_ref()),
        namespace_labels: map(namespace.and_then(|n| n.labels.as_ref())),
        namespace_annotations: map(namespace.and_then(|n| n.annotations.as_ref())),
        replica_set: pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
            .map(|o| (o.name.clone(), o.uid.clone())),
        containers,
        cluster_uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn pod(object: serde_json::Value) -> Pod {
        serde_json::from_value(object).unwrap()
    }

    fn owned_by(name: &str, kind: &str, owner: &str) -> Pod {
        pod(
            json!({"metadata": {"name": name, "namespace": "prod", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o1", "controller": true}
            ]}}),
        )
    }

    #[test]
    fn a_deployments_pod_is_the_deployments_and_names_its_containers() {
        let mut pod = owned_by("shop-7d4b9c6f5-x2x9z", "ReplicaSet", "shop-7d4b9c6f5");
        pod.metadata.labels = Some([("pod-template-hash".into(), "7d4b9c6f5".into())].into());
        pod.status = Some(
            serde_json::from_value(json!({"containerStatuses": [
                {"name": "web", "containerID": "containerd://abc123", "image": "i", "imageID": "i",
                 "ready": true, "restartCount": 0},
                {"name": "sidecar", "image": "i", "imageID": "i", "ready": false, "restartCount": 0}
            ]}))
            .unwrap(),
        );
        let described = describe(&pod, "node-1");
        assert_eq!(
            (
                described.workload_kind.as_str(),
                described.workload_name.as_str()
            ),
            ("Deployment", "shop")
        );
        assert_eq!(described.namespace, "prod");
        assert_eq!(described.node, "node-1");
        // A container not started yet has no id to be found by.
        assert_eq!(
            described.containers,
            HashMap::from([("abc123".to_string(), "web".to_string())])
        );
    }

    #[test]
    fn a_bare_pod_is_its_own_workload() {
        let bare = pod(json!({"metadata": {"name": "debug", "namespace": "prod"}}));
        let described = describe(&bare, "node-1");
        assert_eq!(
            (
                described.workload_kind.as_str(),
                described.workload_name.as_str()
            ),
            ("Pod", "debug")
        );
    }
}
