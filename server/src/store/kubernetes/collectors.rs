//! The collectors' workloads in the cluster, from their CollectorsGroups: for `odigos-gateway`
//! the Deployment that runs gateway collectors with the group's requests and limits, the
//! Service node collectors send to, and the HorizontalPodAutoscaler that keeps the Deployment
//! between the group's replica bounds; for `odigos-data-collection` the DaemonSet of node
//! collectors, which take the applications' OTLP on each node's ports 4317 and 4318. The
//! collectors take their configs over OpAMP, so a config change never touches these objects;
//! only a change of image or resources rolls them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::MANAGER;
use crate::resource::CollectorsGroup;

/// The name of the gateway's Deployment, Service and HorizontalPodAutoscaler.
const GATEWAY: &str = "odigos-gateway";
/// The name of the node collectors' DaemonSet.
const NODE: &str = "odigos-data-collection";
/// Where gateway collectors listen for OTLP over gRPC and HTTP.
const OTLP_GRPC: u16 = 4317;
const OTLP_HTTP: u16 = 4318;

/// How the control plane runs collectors.
#[derive(Clone, Debug)]
pub struct CollectorWorkloads {
    /// The image of the one binary, and its pull policy.
    pub image: String,
    pub pull_policy: String,
    /// The Secret whose key `token` the collectors present to the OpAMP server.
    pub token_secret: String,
    /// The control plane's Service. Kubernetes gives the pods of its namespace its address in
    /// the environment (`NAME_SERVICE_HOST`, `NAME_SERVICE_PORT_OPAMP`), so collectors reach
    /// the OpAMP server through it even where the cluster has no DNS.
    pub control_plane_service: String,
    /// Where collectors keep the secret values that come with their configs (in memory).
    pub secrets_dir: std::path::PathBuf,
}

fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "odigos",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "odigos-rs",
    })
}

fn selector(component: &str) -> Value {
    json!({"app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "odigos-rs"})
}

fn metadata(name: &str, component: &str, namespace: &str, owner: Option<&OwnerReference>) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": labels(component),
        "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
    })
}

/// The Service in front of the gateway pods.
pub fn service(namespace: &str, owner: Option<&OwnerReference>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(GATEWAY, "gateway", namespace, owner),
        "spec": {
            "selector": selector("gateway"),
            "ports": [
                {"name": "otlp-grpc", "port": OTLP_GRPC, "targetPort": OTLP_GRPC, "protocol": "TCP"},
                {"name": "otlp-http", "port": OTLP_HTTP, "targetPort": OTLP_HTTP, "protocol": "TCP"},
            ],
        },
    })
}

/// The Deployment of gateway collectors, sized by `group`. Its replica count is left to the
/// HorizontalPodAutoscaler.
pub fn gateway(
    workloads: &CollectorWorkloads,
    group: &CollectorsGroup,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> Value {
    let pods = pod(workloads, "gateway", group);
    workload("Deployment", GATEWAY, "gateway", pods, namespace, owner)
}

/// The DaemonSet of node collectors, sized by `group`; applications on a node send to its
/// ports 4317 and 4318.
pub fn node(
    workloads: &CollectorWorkloads,
    group: &CollectorsGroup,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> Value {
    let pods = pod(workloads, "node-collector", group);
    workload("DaemonSet", NODE, "node-collector", pods, namespace, owner)
}

/// A workload of `kind` that runs `pods`, the collectors of `component`.
fn workload(
    kind: &str,
    name: &str,
    component: &str,
    pods: Value,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata(name, component, namespace, owner),
        "spec": {"selector": {"matchLabels": selector(component)}, "template": pods},
    })
}

/// Where on each node the node collector keeps what outlives its pod (how far it read each
/// log file), a directory of the node's.
pub const NODE_STORAGE: &str = "/var/lib/odigos-node";

/// The pod of a collector (`gateway` or `node-collector`), managed over OpAMP. Node collectors
/// take OTLP on their node's ports.
fn pod(workloads: &CollectorWorkloads, component: &str, group: &CollectorsGroup) -> Value {
    let sizing = &group.spec.resources_settings;
    let service = workloads
        .control_plane_service
        .to_uppercase()
        .replace('-', "_");
    let role = if component == "gateway" {
        "gateway"
    } else {
        "node"
    };
    let port = |name: &str, port: u16| {
        let mut p = json!({"name": name, "containerPort": port, "protocol": "TCP"});
        if role == "node" {
            p["hostPort"] = json!(port);
        }
        p
    };
    let mut pod = json!({
        "metadata": {"labels": labels(component)},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
            "containers": [{
                "name": component,
                "image": workloads.image,
                "imagePullPolicy": workloads.pull_policy,
                "args": [
                    "collector",
                    format!("--role={role}"),
                    format!("--opamp-endpoint=ws://$({service}_SERVICE_HOST):$({service}_SERVICE_PORT_OPAMP)/v1/opamp"),
                    format!("--state-dir=/var/lib/odigos/{role}"),
                    format!("--secrets-dir={}", workloads.secrets_dir.display()),
                ],
                "env": [
                    {
                        "name": "ODIGOS_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": workloads.token_secret, "key": "token"}},
                    },
                    // Where it runs, which it reports over OpAMP.
                    {"name": "ODIGOS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "ODIGOS_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "ODIGOS_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "ports": [port("otlp-grpc", OTLP_GRPC), port("otlp-http", OTLP_HTTP)],
                // The receiver listens once the config from the control plane runs.
                "readinessProbe": {"tcpSocket": {"port": OTLP_GRPC}, "periodSeconds": 2},
                "resources": {
                    "requests": {"cpu": format!("{}m", sizing.cpu_request_millicores), "memory": format!("{}Mi", sizing.memory_request_mi_b)},
                    "limits": {"cpu": format!("{}m", sizing.cpu_limit_millicores), "memory": format!("{}Mi", sizing.memory_limit_mi_b)},
                },
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true},
                "volumeMounts": [
                    {"name": "state", "mountPath": "/var/lib/odigos"},
                    {"name": "secrets", "mountPath": workloads.secrets_dir},
                ],
            }],
            // The state holds the last config, secrets included: in memory like them.
            "volumes": [
                {"name": "state", "emptyDir": {"medium": "Memory"}},
                {"name": "secrets", "emptyDir": {"medium": "Memory"}},
            ],
        },
    });
    // Node collectors read their node's pods (k8sattributes) and the kubelet's stats with a
    // ServiceAccount of their own, and the pods' log files, which only root may read; gateways
    // talk to no API server and read no file of the node.
    if role == "node" {
        let spec = &mut pod["spec"];
        spec["serviceAccountName"] = json!(NODE);
        spec["automountServiceAccountToken"] = json!(true);
        spec["securityContext"] = json!({"runAsUser": 0, "runAsGroup": 0});
        let container = &mut spec["containers"][0];
        container["securityContext"]["capabilities"] =
            json!({"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]});
        container["env"].as_array_mut().unwrap().push(
            json!({"name": "ODIGOS_NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}),
        );
        container["volumeMounts"].as_array_mut().unwrap().extend([
            json!({"name": "pod-logs", "mountPath": "/var/log/pods", "readOnly": true}),
            json!({"name": "node-storage", "mountPath": NODE_STORAGE}),
        ]);
        spec["volumes"].as_array_mut().unwrap().extend([
            json!({"name": "pod-logs", "hostPath": {"path": "/var/log/pods", "type": "DirectoryOrCreate"}}),
            json!({"name": "node-storage", "hostPath": {"path": NODE_STORAGE, "type": "DirectoryOrCreate"}}),
        ]);
    }
    pod
}

/// The HorizontalPodAutoscaler of the gateway Deployment, in API `autoscaling/{version}` (`v2`,
/// or `v2beta2` before Kubernetes 1.23; both read these fields alike).
pub fn autoscaler(
    version: &str,
    group: &CollectorsGroup,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> Value {
    let sizing = &group.spec.resources_settings;
    json!({
        "apiVersion": format!("autoscaling/{version}"),
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(GATEWAY, "gateway", namespace, owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY},
            "minReplicas": sizing.min_replicas.max(1),
            "maxReplicas": sizing.max_replicas.max(sizing.min_replicas).max(1),
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}}}],
        },
    })
}

/// Server-side applies `object`, a resource called `plural`, as the control plane's field
/// manager; returns what the API server made of it.
pub async fn apply(client: &Client, plural: &str, object: &Value) -> Result<Value, kube::Error> {
    let text = |key: &str| object[key].as_str().unwrap_or_default();
    let (group, version) = text("apiVersion")
        .rsplit_once('/')
        .unwrap_or(("", text("apiVersion")));
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, text("kind")),
        plural,
    );
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let applied = api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(serde_json::to_value(applied).unwrap_or_default())
}
