//! The pod webhook: a mutating admission webhook the API server calls as pods are created. A
//! pod whose workload is instrumented (it has an InstrumentationConfig) gets, in each of its
//! containers, what OpenTelemetry SDKs read: where the node collector on its own node takes
//! OTLP (`status.hostIP` through the downward API), its service name, and its Kubernetes
//! resource attributes. Variables a container sets itself are left as they are. Every other pod
//! is let through untouched, and so is any pod the webhook cannot read: the cluster's
//! `failurePolicy: Ignore` does the same when the webhook is down or slow.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

use crate::reconciler::ControlPlane;

/// Where the API server sends pod admissions.
pub const PATH: &str = "/mutate/pods";

pub fn router(plane: Arc<ControlPlane>) -> axum::Router {
    axum::Router::new()
        .route(PATH, post(admit))
        .with_state(plane)
}

async fn admit(
    State(plane): State<Arc<ControlPlane>>,
    axum::Json(review): axum::Json<Value>,
) -> axum::Json<Value> {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let pod = &request["object"];
    if let Some((kind, name)) = workload_of(pod) {
        let config_name = format!("{}-{}", kind.to_lowercase(), name);
        if let Some(config) = plane.instrumentation_config(namespace, &config_name) {
            let service = Some(config.spec.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&name);
            let patch = inject(pod, namespace, &kind, &name, service);
            if !patch.is_empty() {
                tracing::info!(namespace, workload = %config_name, "pod instrumented at admission");
                let patch = serde_json::to_vec(&patch).unwrap_or_default();
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
            }
        }
    }
    axum::Json(json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The workload that owns `pod`: its kind (`Deployment`, `StatefulSet`, `DaemonSet`) and name.
/// A Deployment's ReplicaSet is named after it and its pod template's hash.
fn workload_of(pod: &Value) -> Option<(String, String)> {
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?;
    let name = owner["name"].as_str()?;
    match owner["kind"].as_str()? {
        "ReplicaSet" => {
            let hash = pod["metadata"]["labels"]["pod-template-hash"].as_str()?;
            let deployment = name.strip_suffix(hash)?.strip_suffix('-')?;
            Some(("Deployment".into(), deployment.into()))
        }
        kind @ ("StatefulSet" | "DaemonSet") => Some((kind.into(), name.into())),
        _ => None,
    }
}

/// The JSON patch that gives each container of `pod` the SDK environment.
fn inject(pod: &Value, namespace: &str, kind: &str, name: &str, service: &str) -> Vec<Value> {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut patch = Vec::new();
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (index, container) in containers.iter().enumerate() {
        let container_name = container["name"].as_str().unwrap_or_default();
        let attributes = format!(
            "k8s.namespace.name={namespace},k8s.pod.name=$(ODIGOS_POD_NAME),k8s.{}.name={name},k8s.container.name={container_name}",
            kind.to_lowercase()
        );
        let wanted = [
            json!({"name": "ODIGOS_NODE_IP", "valueFrom": field("status.hostIP")}),
            json!({"name": "ODIGOS_POD_NAME", "valueFrom": field("metadata.name")}),
            json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://$(ODIGOS_NODE_IP):4317"}),
            json!({"name": "OTEL_SERVICE_NAME", "value": service}),
            json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": attributes}),
        ];
        let existing = container["env"].as_array();
        let set =
            |variable: &str| existing.is_some_and(|env| env.iter().any(|e| e["name"] == variable));
        let missing: Vec<Value> = wanted
            .into_iter()
            .filter(|v| !set(v["name"].as_str().unwrap_or_default()))
            .collect();
        let env = format!("/spec/containers/{index}/env");
        match existing {
            None => patch.push(json!({"op": "add", "path": env, "value": missing})),
            Some(_) => patch.extend(
                missing
                    .into_iter()
                    .map(|v| json!({"op": "add", "path": format!("{env}/-"), "value": v})),
            ),
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(env: Value) -> Value {
        json!({
            "metadata": {
                "labels": {"pod-template-hash": "5d9f7c"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "checkout-5d9f7c", "controller": true}],
            },
            "spec": {"containers": [{"name": "app", "env": env}, {"name": "sidecar"}]},
        })
    }

    #[test]
    fn a_deployments_pod_is_known_by_its_replica_sets_name() {
        assert_eq!(
            workload_of(&pod(json!([]))),
            Some(("Deployment".into(), "checkout".into()))
        );
        let mut orphan = pod(json!([]));
        orphan["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(workload_of(&orphan), None);
    }

    #[test]
    fn what_a_container_sets_itself_is_kept() {
        let own = json!([{"name": "OTEL_SERVICE_NAME", "value": "mine"}]);
        let patch = inject(&pod(own), "shop", "Deployment", "checkout", "checkout-api");
        let added: Vec<&str> = patch
            .iter()
            .filter(|op| op["path"] == "/spec/containers/0/env/-")
            .map(|op| op["value"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            added,
            [
                "ODIGOS_NODE_IP",
                "ODIGOS_POD_NAME",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_RESOURCE_ATTRIBUTES"
            ]
        );
        // The container with no env gets the whole list.
        let sidecar = patch
            .iter()
            .find(|op| op["path"] == "/spec/containers/1/env")
            .unwrap();
        let attributes = &sidecar["value"][4]["value"];
        assert_eq!(
            attributes,
            "k8s.namespace.name=shop,k8s.pod.name=$(ODIGOS_POD_NAME),k8s.deployment.name=checkout,k8s.container.name=sidecar"
        );
        assert_eq!(sidecar["value"][3]["value"], "checkout-api");
    }
}
