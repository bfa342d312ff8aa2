//! The pod webhook: a mutating admission webhook the API server calls as pods are created. A
//! pod whose workload is instrumented (it has an InstrumentationConfig) gets, in each of its
//! containers, what OpenTelemetry SDKs read: where the node collector on its own node takes
//! OTLP (`status.hostIP` through the downward API), its service name, its Kubernetes resource
//! attributes, and where odiglet on that node relays OpAMP for SDKs that speak it. Variables a container sets itself are left as they are. Every other pod
//! is let through untouched, and so is any pod the webhook cannot read: the cluster's
//! `failurePolicy: Ignore` does the same when the webhook is down or slow.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::reconciler::ControlPlane;

/// Where the API server sends pod admissions.
pub const PATH: &str = "/mutate/pods";
/// The annotation on pods created with the SDK environment: pods of an instrumented workload
/// without it started before its Source, and get the environment when it next rolls out.
pub const INJECTED: &str = "odigos.io/sdk-environment";

/// The variable that tells SDKs where their OpAMP server is (`host:port`), as Odigos names it.
pub const OPAMP_SERVER_HOST: &str = "ODIGOS_OPAMP_SERVER_HOST";

struct Webhook {
    plane: Arc<ControlPlane>,
    /// The port of each node where odiglet relays the SDKs' OpAMP, when it does.
    sdk_opamp_port: Option<u16>,
}

pub fn router(plane: Arc<ControlPlane>, sdk_opamp_port: Option<u16>) -> axum::Router {
    axum::Router::new()
        .route(PATH, post(admit))
        .with_state(Arc::new(Webhook {
            plane,
            sdk_opamp_port,
        }))
}

async fn admit(
    State(webhook): State<Arc<Webhook>>,
    axum::Json(review): axum::Json<Value>,
) -> axum::Json<Value> {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let pod = &request["object"];
    let owner = serde_json::from_value::<ObjectMeta>(pod["metadata"].clone())
        .ok()
        .and_then(|metadata| workload_of(&metadata));
    if let Some((kind, name)) = owner {
        let config_name = crate::compiler::instrumentation_config_name(&kind, &name);
        if let Some(config) = webhook
            .plane
            .instrumentation_config(namespace, &config_name)
        {
            let service = Some(config.spec.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&name);
            let opamp_port = webhook.sdk_opamp_port;
            let mut patch = inject(pod, namespace, &kind, &name, service, opamp_port);
            patch.push(mark(pod));
            tracing::info!(namespace, workload = %config_name, "pod instrumented at admission");
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
        }
    }
    axum::Json(json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The workload that runs a pod (by its metadata), as a Source names it: its controller's kind and name, and for
/// a ReplicaSet that a Deployment made (named `DEPLOYMENT-HASH`, the hash in the pod's
/// `pod-template-hash` label), the Deployment. None for a pod no controller owns.
pub fn workload_of(pod: &ObjectMeta) -> Option<(String, String)> {
    let owner = pod
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet"
        && let Some(hash) = pod.labels.as_ref().and_then(|l| l.get("pod-template-hash"))
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return Some(("Deployment".into(), deployment.into()));
    }
    Some((owner.kind.clone(), owner.name.clone()))
}

/// The JSON patch operation that marks `pod` as given the SDK environment.
fn mark(pod: &Value) -> Value {
    if pod["metadata"]["annotations"].is_object() {
        // A JSON pointer escapes `/` in a key as `~1`.
        let key = INJECTED.replace('/', "~1");
        json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": "injected"})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {INJECTED: "injected"}})
    }
}

/// The JSON patch that gives each container of `pod` the SDK environment.
fn inject(
    pod: &Value,
    namespace: &str,
    kind: &str,
    name: &str,
    service: &str,
    opamp_port: Option<u16>,
) -> Vec<Value> {
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
        let opamp = opamp_port.map(
            |port| json!({"name": OPAMP_SERVER_HOST, "value": format!("$(ODIGOS_NODE_IP):{port}")}),
        );
        let wanted = [
            json!({"name": "ODIGOS_NODE_IP", "valueFrom": field("status.hostIP")}),
            json!({"name": "ODIGOS_POD_NAME", "valueFrom": field("metadata.name")}),
            json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://$(ODIGOS_NODE_IP):4317"}),
            json!({"name": "OTEL_SERVICE_NAME", "value": service}),
            json!({"name": "OTEL_RESOURCE_ATTRIBUTES", "value": attributes}),
        ]
        .into_iter()
        .chain(opamp);
        let existing = container["env"].as_array();
        let set =
            |variable: &str| existing.is_some_and(|env| env.iter().any(|e| e["name"] == variable));
        let missing: Vec<Value> = wanted
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
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5d9f7c", "uid": "u1", "controller": true}],
            },
            "spec": {"containers": [{"name": "app", "env": env}, {"name": "sidecar"}]},
        })
    }

    fn typed(pod: Value) -> ObjectMeta {
        serde_json::from_value(pod["metadata"].clone()).unwrap()
    }

    #[test]
    fn a_deployments_pod_is_known_by_its_replica_sets_name() {
        assert_eq!(
            workload_of(&typed(pod(json!([])))),
            Some(("Deployment".into(), "checkout".into()))
        );
        let mut orphan = pod(json!([]));
        orphan["metadata"]["ownerReferences"] = json!([]);
        assert_eq!(workload_of(&typed(orphan)), None);
    }

    #[test]
    fn other_controllers_name_themselves() {
        let owned = |kind: &str, name: &str| {
            let mut pod = pod(json!([]));
            pod["metadata"]["ownerReferences"][0]["kind"] = json!(kind);
            pod["metadata"]["ownerReferences"][0]["name"] = json!(name);
            workload_of(&typed(pod))
        };
        assert_eq!(
            owned("StatefulSet", "db"),
            Some(("StatefulSet".into(), "db".into()))
        );
        // A ReplicaSet of its own (its name does not end in the template hash) stays one.
        assert_eq!(
            owned("ReplicaSet", "rs"),
            Some(("ReplicaSet".into(), "rs".into()))
        );
    }

    #[test]
    fn the_pod_is_marked_with_or_without_annotations_of_its_own() {
        let mut pod = pod(json!([]));
        assert_eq!(
            mark(&pod),
            json!({"op": "add", "path": "/metadata/annotations", "value": {"odigos.io/sdk-environment": "injected"}})
        );
        pod["metadata"]["annotations"] = json!({"team": "shop"});
        assert_eq!(
            mark(&pod),
            json!({"op": "add", "path": "/metadata/annotations/odigos.io~1sdk-environment", "value": "injected"})
        );
    }

    #[test]
    fn what_a_container_sets_itself_is_kept() {
        let own = json!([{"name": "OTEL_SERVICE_NAME", "value": "mine"}]);
        let patch = inject(
            &pod(own),
            "shop",
            "Deployment",
            "checkout",
            "checkout-api",
            None,
        );
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
        assert_eq!(
            sidecar["value"].as_array().unwrap().len(),
            5,
            "no OpAMP relay"
        );
    }

    #[test]
    fn where_odiglet_relays_opamp_the_sdks_are_told() {
        let patch = inject(
            &pod(json!([])),
            "shop",
            "Deployment",
            "checkout",
            "api",
            Some(4320),
        );
        let opamp: Vec<&Value> = patch
            .iter()
            .filter(|op| op["value"]["name"] == OPAMP_SERVER_HOST)
            .map(|op| &op["value"]["value"])
            .collect();
        assert_eq!(opamp, [&json!("$(ODIGOS_NODE_IP):4320")], "{patch:#?}");
    }
}
