//! The pods of the followed namespaces, by their metadata alone: which workload runs each and
//! whether the pod webhook gave it the SDK environment (its annotation), so that a Source whose
//! workload ran before it can say that the workload needs a rollout.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::watch;

use crate::store::{PodCounts, WorkloadPods};
use crate::webhook::{INJECTED, workload_of};

/// A rollout changes many pods at once: they are counted again at most this often.
const RECOUNT: Duration = Duration::from_millis(200);

/// Follows the pods of `namespace` (of all when `None`), counted by workload as they change.
pub(super) fn follow(
    client: &Client,
    namespace: Option<&str>,
) -> watch::Receiver<Arc<WorkloadPods>> {
    // Metadata-only requests: the pods' specs and statuses are never read.
    let api = super::scoped::<PartialObjectMeta<Pod>>(client, namespace);
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let (counts, receiver) = watch::channel(Arc::new(WorkloadPods::new()));
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        let mut recount = tokio::time::interval(RECOUNT);
        let mut changed = false;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    None => break,
                    Some(Ok(_)) => changed = true,
                    Some(Err(e)) => tracing::warn!(error = %e, "watching pods failed; retrying"),
                },
                _ = recount.tick(), if changed => {
                    changed = false;
                    let now = count(reader.state().iter().map(|pod| &pod.metadata));
                    counts.send_if_modified(|current| {
                        let differs = **current != now;
                        if differs {
                            *current = Arc::new(now);
                        }
                        differs
                    });
                    if counts.is_closed() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

/// The pods of each workload that are not being deleted, and how many have the environment.
fn count<'a>(pods: impl Iterator<Item = &'a ObjectMeta>) -> WorkloadPods {
    let mut counts = WorkloadPods::new();
    for pod in pods.filter(|pod| pod.deletion_timestamp.is_none()) {
        let Some((kind, name)) = workload_of(pod) else {
            continue;
        };
        let namespace = pod.namespace.clone().unwrap_or_default();
        let entry: &mut PodCounts = counts.entry((namespace, kind, name)).or_default();
        entry.pods += 1;
        if pod
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INJECTED))
        {
            entry.injected += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_count_by_workload_with_those_given_the_environment() {
        let pod = |name: &str, injected: bool, deleted: bool| -> ObjectMeta {
            let mut meta = json!({
                "name": name, "namespace": "shop",
                "labels": {"pod-template-hash": "5d9f7c"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "checkout-5d9f7c", "uid": "u1", "controller": true}],
            });
            if injected {
                meta["annotations"] = json!({INJECTED: "injected"});
            }
            if deleted {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(meta).unwrap()
        };
        let bare: ObjectMeta = serde_json::from_value(json!({"name": "debug"})).unwrap();
        let pods = [
            pod("a", true, false),
            pod("b", false, false),
            // A pod going away with the old template does not count.
            pod("c", false, true),
            bare,
        ];
        let counts = count(pods.iter());
        assert_eq!(
            counts,
            WorkloadPods::from([(
                ("shop".into(), "Deployment".into(), "checkout".into()),
                PodCounts {
                    pods: 2,
                    injected: 1
                }
            )])
        );
    }
}
