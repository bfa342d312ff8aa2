//! odiglet's view of the pods on its node, followed through the Kubernetes API: which
//! workload runs each pod and what its containers are called. odiglet matches processes to
//! Sources of Kubernetes workloads through it.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use odigos_ebpf::pods::{self, Pods};
use odigos_server::webhook::workload_of;

/// Follows the pods of `node` until the process ends, handing each change of what odiglet
/// needs to know to `update`.
pub async fn follow(node: String, update: impl Fn(Pods)) -> Result<(), kube::Error> {
    let client = Client::try_default().await?;
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
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
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((id.to_string(), c.name.clone()))
        })
        .collect();
    pods::Pod {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node: node.to_string(),
        workload_kind,
        workload_name,
        containers,
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
