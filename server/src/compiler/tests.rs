//! Golden tests: each `testdata/<case>.yaml` desired state compiles to `testdata/<case>.golden`.
//! Run with `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change, and read
//! the diff.

use super::*;
use crate::store::local::parse_file;

pub(crate) fn layout() -> Layout {
    Layout {
        node_grpc: "127.0.0.1:4317".into(),
        node_http: "127.0.0.1:4318".into(),
        gateway_listen: "127.0.0.1:4319".into(),
        gateway_endpoint: "http://127.0.0.1:4319".into(),
        node_metrics: Some("127.0.0.1:8888".into()),
        gateway_metrics: Some("127.0.0.1:8889".into()),
        secrets_dir: PathBuf::from("/state/secrets"),
        secrets_in_config: false,
        queue_dir: Some(PathBuf::from("/state/queues")),
        queue_mib: 256,
        gateway: super::sized(512, 300, 1, 1),
        node: super::sized(256, 300, 1, 1),
        pod_metadata: false,
        node_storage: None,
    }
}

fn desired(case: &str) -> Desired {
    let path = format!(
        "{}/src/compiler/testdata/{case}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut desired = Desired::default();
    for object in parse_file(&text, &path, Catalog::builtin()).unwrap() {
        assert!(desired.insert(object));
    }
    desired
}

/// Everything the compiler produced, as one readable text.
fn render(compiled: &Compiled) -> String {
    let mut out = String::new();
    out.push_str("## gateway\n");
    out.push_str(&compiled.gateway);
    out.push_str("## node\n");
    out.push_str(&compiled.node);
    out.push_str("## destinations\n");
    out.push_str(&odigos_proto::yaml::to_string(
        &compiled
            .destinations
            .iter()
            .map(|((ns, name), plan)| (format!("{ns}/{name}"), plan))
            .collect::<BTreeMap<_, _>>(),
    ));
    out.push_str("## workloads\n");
    out.push_str(&odigos_proto::yaml::to_string(
        &compiled.workloads.values().collect::<Vec<_>>(),
    ));
    out.push_str("## odiglet\n");
    out.push_str(&odigos_proto::yaml::to_string(&compiled.odiglet));
    out.push_str("## secret files\n");
    for path in compiled.secret_files.keys() {
        out.push_str(&format!("{}\n", path.display()));
    }
    out.push_str("## problems\n");
    for problem in &compiled.problems {
        out.push_str(&format!("{problem}\n"));
    }
    out
}

fn golden(case: &str) {
    let compiled = compile(&desired(case), Catalog::builtin(), &layout());
    let text = render(&compiled);
    let path = format!(
        "{}/src/compiler/testdata/{case}.golden",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        text == expected,
        "{case}: the compiled output differs from {path}; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff\n--- got:\n{text}"
    );
    assert!(
        !text.contains("hc-secret-value"),
        "a secret leaked into the output"
    );
}

#[test]
fn starter() {
    golden("starter");
}

#[test]
fn full() {
    golden("full");
    let compiled = compile(&desired("full"), Catalog::builtin(), &layout());
    let secrets: Vec<&String> = compiled.secret_files.values().collect();
    assert_eq!(secrets, ["hc-secret-value"]);
}

#[test]
fn span_actions() {
    golden("actions");
}

#[test]
fn one_exporter_per_signal_where_a_type_sets_something_per_signal() {
    golden("per_signal");
}

#[test]
fn problems() {
    golden("problems");
}

/// The node collectors' config, as JSON, once the collector has taken it.
fn node_config(compiled: &Compiled) -> serde_json::Value {
    if let Err(e) = odigos_collector::Config::from_yaml(&compiled.node, "node.yaml") {
        panic!("{e}\n{}", compiled.node);
    }
    odigos_proto::yaml::from_value(odigos_proto::yaml::parse(&compiled.node).unwrap()).unwrap()
}

/// In a cluster, a filelog receiver per Source over its pods' files and kubeletstats; on a
/// machine, the files a Source's annotation names. Each config is one the collector takes.
#[test]
fn node_collectors_read_the_sources_log_files_and_the_nodes_metrics() {
    golden("node_reading");
    let mut cluster = layout();
    cluster.pod_metadata = true;
    cluster.node_storage = Some(PathBuf::from("/var/lib/odigos-node"));
    let compiled = compile(&desired("node_reading"), Catalog::builtin(), &cluster);
    let node = node_config(&compiled);
    let checkout = &node["receivers"]["filelog/shop.checkout"];
    assert_eq!(
        checkout["include"],
        serde_json::json!(["/var/log/pods/shop_checkout-*_*/*/*.log"])
    );
    assert_eq!(
        checkout["operators"],
        serde_json::json!([{"type": "container"}])
    );
    assert_eq!(checkout["storage"], "file_storage/node");
    assert_eq!(
        checkout["resource"],
        serde_json::json!({"service.name": "checkout-api", "k8s.deployment.name": "checkout"})
    );
    // The namespace's receiver leaves out the pods that have a receiver of their own.
    let shop = &node["receivers"]["filelog/shop.shop"];
    assert_eq!(
        shop["include"],
        serde_json::json!(["/var/log/pods/shop_*_*/*/*.log"])
    );
    assert_eq!(
        shop["exclude"],
        serde_json::json!([
            "/var/log/pods/shop_checkout-*_*/*/*.log",
            "/var/log/pods/shop_paused-*_*/*/*.log"
        ])
    );
    assert!(
        node["receivers"]["filelog/shop.paused"].is_null(),
        "not instrumented"
    );
    assert!(
        node["receivers"]["filelog/default.worker"].is_null(),
        "processes are not pods"
    );
    assert_eq!(
        node["receivers"]["kubeletstats"]["auth_type"],
        "serviceAccount"
    );
    assert!(node["receivers"]["hostmetrics"]["scrapers"]["filesystem"].is_null());
    assert_eq!(
        node["extensions"]["file_storage/node"]["directory"],
        "/var/lib/odigos-node/filelog"
    );
    assert_eq!(
        node["service"]["extensions"],
        serde_json::json!(["file_storage/node"])
    );
    let logs = &node["service"]["pipelines"]["logs"]["receivers"];
    assert_eq!(
        logs,
        &serde_json::json!(["otlp", "filelog/shop.checkout", "filelog/shop.shop"])
    );
    let metrics = &node["service"]["pipelines"]["metrics"]["receivers"];
    assert_eq!(
        metrics,
        &serde_json::json!(["otlp", "hostmetrics", "kubeletstats"])
    );

    // On a machine: the annotation's files, and the host's metrics.
    let compiled = compile(&desired("node_reading"), Catalog::builtin(), &layout());
    let node = node_config(&compiled);
    let worker = &node["receivers"]["filelog/default.worker"];
    assert_eq!(
        worker["include"],
        serde_json::json!(["/var/log/worker/*.log", "/srv/worker/out.log"])
    );
    assert_eq!(
        worker["resource"],
        serde_json::json!({"service.name": "worker"})
    );
    assert!(node["receivers"]["kubeletstats"].is_null());
    assert_eq!(
        node["service"]["pipelines"]["logs"]["receivers"],
        serde_json::json!(["otlp", "filelog/default.worker"])
    );

    // With storage, also odiglet's links to what the Source's processes print, and offsets
    // kept there.
    let mut machine = layout();
    machine.node_storage = Some(PathBuf::from("/state/node"));
    let compiled = compile(&desired("node_reading"), Catalog::builtin(), &machine);
    let node = node_config(&compiled);
    let worker = &node["receivers"]["filelog/default.worker"];
    assert_eq!(
        worker["include"],
        serde_json::json!([
            "/var/log/worker/*.log",
            "/srv/worker/out.log",
            "/state/node/process-logs/default.worker/*.log"
        ])
    );
    assert_eq!(worker["storage"], "file_storage/node");
}

#[test]
fn compiling_twice_gives_equal_bytes() {
    for case in ["starter", "full", "problems"] {
        let state = desired(case);
        let a = compile(&state, Catalog::builtin(), &layout());
        let b = compile(&state.clone(), Catalog::builtin(), &layout());
        assert_eq!(render(&a), render(&b), "{case}");
    }
}

#[test]
fn k8s_attributes_run_in_node_collectors_that_read_their_pods() {
    let mut layout = layout();
    layout.pod_metadata = true;
    let compiled = compile(&desired("actions"), Catalog::builtin(), &layout);
    let node = node_config(&compiled);
    let id = "k8sattributes/odigos-system.k8s-attributes";
    assert_eq!(
        node["processors"][id],
        json!({
            "auth_type": "serviceAccount",
            "extract": {
                "metadata": ["container.id", "container.image.name", "container.image.tag",
                    "k8s.replicaset.name", "k8s.replicaset.uid", "k8s.cluster.uid"],
                // The pod's label first; the namespace's where the pod has none.
                "labels": [
                    {"tag_name": "app.kubernetes.name", "key": "app.kubernetes.io/name", "from": "pod"},
                    {"tag_name": "app.kubernetes.name", "key": "app.kubernetes.io/name", "from": "namespace"},
                ],
                "annotations": [
                    {"tag_name": "restarted.at", "key": "kubectl.kubernetes.io/restartedAt", "from": "pod"},
                ],
            },
        })
    );
    // Where a destination wants the signal; the others are dropped as they enter.
    let pipelines = &node["service"]["pipelines"];
    assert_eq!(
        pipelines["traces"]["processors"],
        json!(["memory_limiter", id, "batch"])
    );
    assert_eq!(pipelines["metrics"]["processors"], json!([]));
}
