//! The Kubernetes pods of this node as odiglet knows them: which workload each belongs to and
//! what its containers are called, to match processes (by the pod uid and container id their
//! cgroup names) to Sources and to give their spans the `k8s.*` resource attributes.

use std::collections::HashMap;
use std::sync::Arc;

/// A pod on this node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// The workload that runs it, as a Source names it: `Deployment` (through its ReplicaSet),
    /// `StatefulSet`, `DaemonSet`, `Job`, ..., or `Pod` for a bare pod.
    pub workload_kind: String,
    pub workload_name: String,
    /// Container names by container id (without the runtime's `containerd://` prefix).
    pub containers: HashMap<String, String>,
    /// Its own addresses (none for a pod on the node's network, which has the node's).
    pub ips: Vec<String>,
}

/// The pods by uid.
pub type Pods = HashMap<String, Arc<Pod>>;

impl Pod {
    /// The resource attribute that names its workload, for the kinds the semantic conventions
    /// name (`k8s.deployment.name`, ...).
    pub fn workload_attribute(&self) -> Option<&'static str> {
        Some(match self.workload_kind.as_str() {
            "Deployment" => "k8s.deployment.name",
            "ReplicaSet" => "k8s.replicaset.name",
            "StatefulSet" => "k8s.statefulset.name",
            "DaemonSet" => "k8s.daemonset.name",
            "Job" => "k8s.job.name",
            "CronJob" => "k8s.cronjob.name",
            _ => return None,
        })
    }
}
