//! odigos-rs on a real Kubernetes whose pods run (`tests/k8s/cluster.sh`), installed from the
//! chart with the image built from the tested binary:
//! - `helm install` brings the control plane up: its pod runs and is ready, its Service serves
//!   the UI and the token-guarded API, and it writes the CollectorsGroups, owned by its
//!   Deployment;
//! - the control plane runs the gateway (Deployment, Service, autoscaler) sized by its
//!   CollectorsGroup; the gateway pods run the config they get over OpAMP;
//! - the pod webhook gives pods of instrumented workloads the SDK environment, and leaves
//!   others alone;
//! - the CRDs' schema refuses an invalid resource with the field named, and a Destination
//!   applied with kubectl reaches the gateway, whose pods take it without a restart;
//! - the UI shows the collectors' throughput, read from their metrics at their pods' addresses;
//! - odiglet traces an application's pods with eBPF, found as its Source appears: its spans
//!   carry the pod's `k8s.*` attributes, and its InstrumentationConfig the detected language;
//!   the Source says that the pods that ran before it need a rollout for the SDK environment,
//!   and after one, that they have it (and odiglet traces the new pod);
//! - an SDK in a pod reaches the control plane's OpAMP through odiglet's relay, where the
//!   webhook points it, with no token, and gets its workload's settings;
//! - a k8sAttributes Action makes node collectors add the pod's label and container image;
//! - a Destination that takes logs and metrics gets the app's log lines, read from its pod's
//!   files, and the kubelet's and the node's metrics;
//! - an Action applied with kubectl reaches the same gateway pods, and the backend sees it;
//! - without the control plane the collectors keep their configs and data flows; back, it
//!   takes the fleet again, and no collector restarted;
//! - `helm upgrade` with new values rolls the control plane onto them, and a new sizing preset
//!   resizes the collectors;
//! - `helm uninstall` leaves nothing of ours but the CRDs and the users' own resources.

use std::time::Duration;

use odigos_tests::cluster::{self, APP_IMAGE, Cluster, HOST_IP, IMAGE, NODE_IP};
use odigos_tests::sdk::Streamer;
use odigos_tests::{Collector, attribute, http_request_at, items, json_lines, wait_for, workspace};

const NS: &str = "odigos-system";
const TOKEN: &str = "cluster-test-token";
const CONTROL_PLANE: &str = "app.kubernetes.io/component=control-plane";
/// A Destination's password, to be found nowhere but where it is used.
const PASSWORD: &str = "cluster-s3cret-value";

fn skip_unless_the_cluster_can_run() -> bool {
    let Some(why) = cluster::missing_prerequisite() else {
        return false;
    };
    assert!(std::env::var("CI").is_err(), "{why}");
    eprintln!("skipped: {why}");
    true
}

/// The control plane's Service address.
fn service_ip(cluster: &Cluster) -> String {
    cluster.get(
        &["service", "odigos-control-plane", "-n", NS],
        "{.spec.clusterIP}",
    )
}

/// `GET path` from the control plane's Service, with the token. While a rollout moves the
/// Service to a new pod, a request may find nobody: an error.
fn control_plane_get(
    cluster: &Cluster,
    port: u16,
    path: &str,
) -> std::io::Result<odigos_tests::Response> {
    let auth = format!("Bearer {TOKEN}");
    let ip = service_ip(cluster);
    http_request_at(&ip, port, "GET", path, &[("authorization", &auth)], "")
}

fn graphql(cluster: &Cluster, query: &str) -> std::io::Result<serde_json::Value> {
    let ip = service_ip(cluster);
    let auth = format!("Bearer {TOKEN}");
    let body = serde_json::json!({ "query": query }).to_string();
    let json = ("content-type", "application/json");
    let response = http_request_at(
        &ip,
        3000,
        "POST",
        "/graphql",
        &[("authorization", &auth), json],
        &body,
    )?;
    assert_eq!(response.status, 200, "{response:?}");
    Ok(serde_json::from_str(&response.body).unwrap())
}

#[test]
fn helm_installs_upgrades_and_uninstalls_a_control_plane_that_runs() {
    if skip_unless_the_cluster_can_run() {
        return;
    }
    let cluster = Cluster::up();
    let chart = workspace().join("charts/odigos");
    let chart = chart.to_str().unwrap();
    let (repository, tag) = IMAGE.rsplit_once(':').unwrap();
    let image = [
        format!("--set=image.repository={repository}"),
        format!("--set=image.tag={tag}"),
        "--set=image.pullPolicy=Never".to_string(),
        format!("--set=token.value={TOKEN}"),
    ];
    let mut install = vec!["install", "odigos", chart, "-n", NS, "--create-namespace"];
    install.extend(image.iter().map(String::as_str));
    // A webhook certificate that is due for renewal at once.
    install.push("--set=webhook.certDays=1");
    install.extend(["--wait", "--timeout=180s"]);
    cluster.helm(&install);

    // The control plane runs and is ready, behind its Service.
    let pods = ["pods", "-n", NS, "-l", CONTROL_PLANE];
    assert_eq!(
        cluster.get(&pods, "{.items[*].status.containerStatuses[*].ready}"),
        "true",
        "{}",
        cluster.describe(NS)
    );
    let ui = control_plane_get(&cluster, 3000, "/").unwrap();
    assert!(ui.body.contains("<title>odigos</title>"), "{ui:?}");
    let agents = control_plane_get(&cluster, 4320, "/api/v1/agents").unwrap();
    assert_eq!(
        agents.status, 200,
        "the token from the chart's Secret: {agents:?}"
    );
    let anonymous = http_request_at(
        &service_ip(&cluster),
        4320,
        "GET",
        "/api/v1/agents",
        &[],
        "",
    )
    .unwrap();
    assert_eq!(anonymous.status, 401, "{anonymous:?}");

    // The CollectorsGroups it writes are owned by its Deployment.
    let owners = || {
        cluster.get(
            &["collectorsgroups", "-n", NS],
            "{.items[*].metadata.ownerReferences[*].name}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || owners()
            == "odigos-control-plane odigos-control-plane"),
        "CollectorsGroups owned by the control plane: {:?}",
        owners()
    );

    // The CRD schema refuses what is invalid, naming the field.
    let refused = cluster.apply(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: bad, namespace: default}\nspec: {type: debug, signals: [SOUNDS]}\n",
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("spec.signals"),
        "refused naming the field: {said}"
    );

    // It runs the gateway: a Deployment sized by the gateway's CollectorsGroup, its Service and
    // an autoscaler between the group's replica bounds, all owned by the control plane.
    let gateway = ["deployment", "odigos-gateway", "-n", NS];
    cluster.expect(
        60,
        NS,
        "the gateway runs, ready once its config from the control plane runs",
        || cluster.get(&gateway, "{.status.readyReplicas}") == "1",
    );
    let sizing = cluster.get(
        &["collectorsgroup", "odigos-gateway", "-n", NS],
        "{.spec.resourcesSettings.cpuLimitMillicores}m {.spec.resourcesSettings.memoryLimitMiB}Mi {.spec.resourcesSettings.minReplicas} {.spec.resourcesSettings.maxReplicas}",
    );
    let limits = cluster.get(
        &gateway,
        "{.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory}",
    );
    let autoscaler = cluster.get(
        &["hpa", "odigos-gateway", "-n", NS],
        "{.spec.minReplicas} {.spec.maxReplicas}",
    );
    assert_eq!(
        format!("{limits} {autoscaler}"),
        sizing,
        "the gateway's limits and replica bounds are its CollectorsGroup's"
    );
    for object in ["deployment", "service", "hpa"] {
        assert_eq!(
            cluster.get(
                &[object, "odigos-gateway", "-n", NS],
                "{.metadata.ownerReferences[0].name}"
            ),
            "odigos-control-plane",
            "the gateway's {object} is owned by the control plane"
        );
    }

    // A Destination applied with kubectl reaches the gateway over OpAMP, and its condition
    // says so; the gateway pod took the config in place.
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: debug, namespace: default}\nspec: {type: debug, signals: [TRACES]}\n",
    );
    let ready = || {
        cluster.get(
            &["destination", "debug", "-n", "default"],
            "{.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(60), || ready() == "True Applied"),
        "the Destination's Ready condition: {}\n{}",
        cluster.get(&["destination", "debug", "-n", "default"], "{.status}"),
        cluster.describe(NS)
    );
    let gateway_pods = [
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/component=gateway",
    ];
    assert_eq!(
        cluster.get(
            &gateway_pods,
            "{.items[*].status.containerStatuses[*].restartCount}"
        ),
        "0",
        "no gateway restarted"
    );

    // The control plane renewed the webhook's day-long certificate for a year, and the API
    // server trusts the new CA and the install's, while the kubelet updates the mounted files.
    let secret_file = |key: &str| {
        let escaped = key.replace('.', "\\.");
        let text = cluster.get(
            &["secret", "odigos-webhook-cert", "-n", NS],
            &format!("{{.data.{escaped}}}"),
        );
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).unwrap_or_default()
    };
    let days_valid = |pem: &[u8]| -> Vec<i64> {
        x509_parser::pem::Pem::iter_from_buffer(pem)
            .flatten()
            .filter_map(|pem| {
                let validity = pem.parse_x509().ok()?.validity().clone();
                Some((validity.not_after - validity.not_before)?.whole_days())
            })
            .collect()
    };
    cluster.expect(60, NS, "the webhook's certificate is renewed", || {
        days_valid(&secret_file("tls.crt")) == [365]
    });
    assert_eq!(
        days_valid(&secret_file("ca.crt")),
        [365, 1],
        "trusted: the new CA, then the install's"
    );
    let bundle = cluster.get(
        &["mutatingwebhookconfiguration", "odigos-pod-webhook"],
        "{.webhooks[0].clientConfig.caBundle}",
    );
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, bundle).unwrap(),
        secret_file("ca.crt"),
        "the webhook registration trusts the CAs of the Secret"
    );

    // The pod webhook: pods of an instrumented workload get the SDK environment as they are
    // created, with the node collector on their node as the endpoint; other pods are left as
    // they are.
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: checkout, namespace: default}\nspec:\n  workload: {name: checkout, namespace: default, kind: Deployment}\n  otelServiceName: checkout-api\n",
    );
    assert!(
        wait_for(Duration::from_secs(30), || !cluster
            .get(
                &[
                    "instrumentationconfig",
                    "deployment-checkout",
                    "-n",
                    "default"
                ],
                "{.metadata.name}"
            )
            .is_empty()),
        "the Source's InstrumentationConfig is written"
    );
    for app in ["checkout", "plain"] {
        cluster.apply_ok(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers: [{{name: app, image: 'localhost/pause:1', imagePullPolicy: Never}}]\n"
        ));
    }
    let env = |app: &str, jsonpath: &str| {
        cluster.get(
            &["pods", "-n", "default", "-l", &format!("app={app}")],
            jsonpath,
        )
    };
    cluster.expect(60, "default", "the apps' pods are created", || {
        !env("checkout", "{.items[*].metadata.name}").is_empty()
            && !env("plain", "{.items[*].metadata.name}").is_empty()
    });
    let variable = |name: &str| {
        env(
            "checkout",
            &format!("{{.items[0].spec.containers[0].env[?(@.name==\"{name}\")].value}}"),
        )
    };
    assert_eq!(variable("OTEL_SERVICE_NAME"), "checkout-api");
    assert_eq!(
        variable("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://$(ODIGOS_NODE_IP):4317"
    );
    assert_eq!(
        variable("OTEL_RESOURCE_ATTRIBUTES"),
        "k8s.namespace.name=default,k8s.pod.name=$(ODIGOS_POD_NAME),k8s.deployment.name=checkout,k8s.container.name=app"
    );
    assert_eq!(
        env(
            "checkout",
            "{.items[0].spec.containers[0].env[?(@.name==\"ODIGOS_NODE_IP\")].valueFrom.fieldRef.fieldPath}"
        ),
        "status.hostIP"
    );
    assert_eq!(
        env("plain", "{.items[0].spec.containers[0].env}"),
        "",
        "an uninstrumented pod is left alone"
    );

    // Once the gateway is ready, node collectors run on every node; spans an SDK sends to the
    // node's port 4317 reach a Destination's backend through node collector and gateway. The
    // Destination's password is in a Secret: it reaches the gateway pods over OpAMP, and is
    // shown nowhere.
    let nodes = ["daemonset", "odigos-data-collection", "-n", NS];
    cluster.expect(60, NS, "the node collectors run", || {
        cluster.get(&nodes, "{.status.numberReady}") == "1"
    });
    let dir = tempfile::tempdir().unwrap();
    let mut backend = Collector::start(&format!(
        "receivers: {{otlp: {{protocols: {{http: {{endpoint: '{HOST_IP}:0'}}}}}}}}\nexporters: {{file: {{path: {dir}/traces.jsonl}}, file/logs: {{path: {dir}/logs.jsonl}}, file/metrics: {{path: {dir}/metrics.jsonl}}}}\nservice: {{pipelines: {{traces: {{receivers: [otlp], exporters: [file]}}, logs: {{receivers: [otlp], exporters: [file/logs]}}, metrics: {{receivers: [otlp], exporters: [file/metrics]}}}}}}\n",
        dir = dir.path().display()
    ));
    let backend_port = backend.port("http");
    let backend_destination = |signals: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: backend-auth, namespace: default}}\nstringData: {{OTLP_HTTP_BASIC_AUTH_PASSWORD: {PASSWORD}}}\n---\napiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: backend, namespace: default}}\nspec:\n  type: otlphttp\n  signals: [{signals}]\n  data: {{OTLP_HTTP_ENDPOINT: 'http://{HOST_IP}:{backend_port}', OTLP_HTTP_BASIC_AUTH_USERNAME: me}}\n  secretRef: {{name: backend-auth}}\n"
        )
    };
    cluster.apply_ok(&backend_destination("TRACES"));
    let sdk = Streamer::python(
        &format!("http://{NODE_IP}:4317"),
        "cluster-checkout",
        5,
        dir.path(),
    );
    let traces = dir.path().join("traces.jsonl");
    let arrived = || {
        let requests = json_lines(&traces);
        items(&requests, "resourceSpans", "scopeSpans", "spans")
            .iter()
            .any(|(resource, _, _)| {
                attribute(resource, "service.name").as_deref() == Some("cluster-checkout")
            })
    };
    assert!(
        wait_for(Duration::from_secs(60), arrived),
        "spans from the node's port reach the backend; the SDK said: {}\n{}",
        sdk.failures().join("\n"),
        cluster.describe(NS)
    );

    // odiglet traces an application that already runs, with no restart, as soon as a Source
    // names it: its spans carry the pod's attributes, and its InstrumentationConfig the
    // language odiglet detected. (Python, the container's first process, ignores SIGTERM: a
    // short grace period lets a rollout replace it at once.)
    cluster.apply_ok(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: python-app, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: python-app}}}}\n  template:\n    metadata: {{labels: {{app: python-app}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: web, image: '{APP_IMAGE}', imagePullPolicy: Never}}]\n"
    ));
    let app = ["pods", "-n", "default", "-l", "app=python-app"];
    cluster.expect(60, "default", "the application runs", || {
        cluster.get(&app, "{.items[*].status.containerStatuses[*].ready}") == "true"
    });
    let (app_pod, app_ip) = (
        cluster.get(&app, "{.items[0].metadata.name}"),
        cluster.get(&app, "{.items[0].status.podIP}"),
    );
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: python-app, namespace: default}\nspec:\n  workload: {name: python-app, namespace: default, kind: Deployment}\n",
    );
    // A request to the pod at `ip`, and the first span of the pod `pod` at the backend.
    let traced = |ip: &str, pod: &str| {
        // Each request is a server span, once odiglet traces the process.
        let _ = http_request_at(ip, 8080, "GET", "/traced?x=1", &[], "");
        let requests = json_lines(&traces);
        items(&requests, "resourceSpans", "scopeSpans", "spans")
            .into_iter()
            .find(|(resource, _, _)| {
                attribute(resource, "service.name").as_deref() == Some("python-app")
                    && attribute(resource, "k8s.pod.name").as_deref() == Some(pod)
            })
            .map(|(resource, _, span)| (resource.clone(), span.clone()))
    };
    assert!(
        wait_for(Duration::from_secs(60), || traced(&app_ip, &app_pod)
            .is_some()),
        "odiglet's spans of the application reach the backend; odiglet says: {}\n{}",
        cluster.logs(NS, "app.kubernetes.io/component=odiglet", 30),
        cluster.describe(NS)
    );
    let (resource, span) = traced(&app_ip, &app_pod).unwrap();
    for (key, value) in [
        ("k8s.namespace.name", "default"),
        ("k8s.deployment.name", "python-app"),
        ("k8s.container.name", "web"),
        ("k8s.node.name", "odigos-node"),
        ("process.runtime.name", "python"),
    ] {
        assert_eq!(
            attribute(&resource, key).as_deref(),
            Some(value),
            "{key}: {resource}"
        );
    }
    assert_eq!(
        attribute(&span, "url.path").as_deref(),
        Some("/traced"),
        "{span}"
    );
    let language = || {
        cluster.get(
            &[
                "instrumentationconfig",
                "deployment-python-app",
                "-n",
                "default",
            ],
            "{.status.runtimeDetailsByContainer[*]['containerName','language']}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || language() == "web python"),
        "the InstrumentationConfig shows the detected language: {:?}",
        language()
    );

    // Its pod ran before the Source, so it lacks the SDK environment the webhook gives: the
    // Source says the workload needs a rollout (and the UI's API with it), while the checkout
    // pods, created after their Source, have it. After a rollout the new pod has it, and
    // odiglet traces it.
    let rollout = |source: &str| {
        cluster.get(
            &["source", source, "-n", "default"],
            "{range .status.conditions[?(@.type==\"WorkloadRollout\")]}{.status} {.reason}{end}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || rollout("python-app")
            == "False RolloutRequired"
            && rollout("checkout") == "True RolledOut"),
        "python-app needs a rollout ({:?}), checkout does not ({:?})",
        rollout("python-app"),
        rollout("checkout")
    );
    let shown = graphql(&cluster, "{ sources { name rollout { reason message } } }").unwrap();
    let python_app = shown["data"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "default/python-app")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        python_app["rollout"]["reason"], "RolloutRequired",
        "{shown}"
    );
    assert!(
        python_app["rollout"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kubectl rollout restart deployment python-app")),
        "the UI says how: {python_app}"
    );
    cluster.kubectl_ok(&[
        "rollout",
        "restart",
        "deployment",
        "python-app",
        "-n",
        "default",
    ]);
    assert!(
        wait_for(Duration::from_secs(90), || rollout("python-app")
            == "True RolledOut"),
        "after the rollout every pod has the environment: {:?}\n{}",
        rollout("python-app"),
        cluster.describe("default")
    );
    // The new pod, ready (the old one may still be on its way out).
    let rolled = || {
        let pods = cluster.get(
            &app,
            "{range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready} {.status.podIP}{\"\\n\"}{end}",
        );
        pods.lines()
            .find_map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
                [name, "true", ip] if name != app_pod => Some((name.to_string(), ip.to_string())),
                _ => None,
            })
    };
    cluster.expect(60, "default", "the new pod runs", || rolled().is_some());
    let (new_pod, new_ip) = rolled().unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || traced(&new_ip, &new_pod)
            .is_some()),
        "odiglet traces the new pod {new_pod}; odiglet says: {}",
        cluster.logs(NS, "app.kubernetes.io/component=odiglet", 30)
    );

    // An SDK that speaks OpAMP (the PyPI OpAMP client, from the tests' virtualenv mounted
    // into a pod of the app image) reaches odiglet's relay where the webhook says, with no
    // token: it is known to the control plane as the SDK agent of its pod's workload, and gets
    // that workload's settings.
    let python = odigos_tests::python();
    let site_packages = String::from_utf8(
        std::process::Command::new(&python)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let site_packages = site_packages.trim();
    let scripts = workspace().join("tests/python");
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: sdk-app, namespace: default}\nspec:\n  workload: {name: sdk-app, namespace: default, kind: Deployment}\n  otelServiceName: sdk-app-api\n",
    );
    cluster.expect(
        30,
        "default",
        "the sdk-app Source's InstrumentationConfig",
        || {
            !cluster
                .get(
                    &[
                        "instrumentationconfig",
                        "deployment-sdk-app",
                        "-n",
                        "default",
                    ],
                    "{.metadata.name}",
                )
                .is_empty()
        },
    );
    cluster.apply_ok(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: sdk-app, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: sdk-app}}}}\n  template:\n    metadata: {{labels: {{app: sdk-app}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: app\n          image: '{APP_IMAGE}'\n          imagePullPolicy: Never\n          command: [python3, /scripts/opamp_agent.py, 'http://$(ODIGOS_OPAMP_SERVER_HOST)/v1/opamp', '']\n          env: [{{name: PYTHONPATH, value: '{site_packages}'}}]\n          volumeMounts: [{{name: packages, mountPath: '{site_packages}', readOnly: true}}, {{name: scripts, mountPath: /scripts, readOnly: true}}]\n      volumes: [{{name: packages, hostPath: {{path: '{site_packages}'}}}}, {{name: scripts, hostPath: {{path: '{}'}}}}]\n",
        scripts.display()
    ));
    let sdk_pod = || {
        cluster.get(
            &["pods", "-n", "default", "-l", "app=sdk-app"],
            "{.items[0].metadata.name}",
        )
    };
    let sdk_agent = || -> Option<serde_json::Value> {
        let agents = control_plane_get(&cluster, 4320, "/api/v1/agents").ok()?;
        let agents: serde_json::Value = serde_json::from_str(&agents.body).ok()?;
        agents
            .as_array()?
            .iter()
            .find(|a| a["non_identifying"]["odigos.workload"] == "default/deployment-sdk-app")
            .cloned()
    };
    assert!(
        wait_for(Duration::from_secs(90), || sdk_agent()
            .is_some_and(|a| a["config"]["status"] == "applied")),
        "the SDK agent is known and applied its settings: {:?}\nthe agent says: {}\nodiglet says: {}\n{}",
        sdk_agent(),
        cluster.logs("default", "app=sdk-app", 20),
        cluster.logs(NS, "app.kubernetes.io/component=odiglet", 20),
        cluster.describe("default")
    );
    let agent = sdk_agent().unwrap();
    assert_eq!(agent["non_identifying"]["odigos.role"], "sdk", "{agent:#}");
    assert_eq!(
        agent["non_identifying"]["k8s.pod.name"],
        sdk_pod(),
        "{agent:#}"
    );
    assert_eq!(
        agent["non_identifying"]["k8s.node.name"], "odigos-node",
        "{agent:#}"
    );
    let received = cluster.logs("default", "app=sdk-app", 50);
    assert!(
        received.contains(r#""file": "agent.json", "config": {"tracesEnabled": true"#),
        "the agent received its workload's settings: {received}"
    );
    cluster.kubectl_ok(&["delete", "deployment,source", "sdk-app", "-n", "default"]);

    // A k8sAttributes Action: node collectors add what they read of the pod a span comes
    // from (its label, its container's image), and the Action says they run it.
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {name: pod-labels, namespace: default}\nspec:\n  signals: [TRACES]\n  k8sAttributes:\n    collectContainerAttributes: true\n    labelsAttributes: [{labelKey: app, attributeKey: k8s.label.app}]\n",
    );
    let labelled = || {
        let _ = http_request_at(&new_ip, 8080, "GET", "/labelled", &[], "");
        let requests = json_lines(&traces);
        items(&requests, "resourceSpans", "scopeSpans", "spans")
            .into_iter()
            .find(|(resource, _, _)| attribute(resource, "k8s.label.app").is_some())
            .map(|(resource, _, _)| resource.clone())
    };
    cluster.expect(60, NS, "the pod's label reaches the backend", || {
        labelled().is_some()
    });
    let resource = labelled().unwrap();
    for (key, value) in [
        ("k8s.label.app", "python-app"),
        ("container.image.name", "localhost/python-app"),
        ("container.image.tag", "test"),
        ("k8s.pod.name", new_pod.as_str()),
    ] {
        assert_eq!(
            attribute(&resource, key).as_deref(),
            Some(value),
            "{key}: {resource}"
        );
    }
    let action = || {
        cluster.get(
            &["action", "pod-labels", "-n", "default"],
            "{.status.conditions[0].status}",
        )
    };
    cluster.expect(30, NS, "the k8sAttributes Action is Ready", || {
        action() == "True"
    });

    // The backend takes logs and metrics too: node collectors read the log files of the
    // Sources' pods (the app's access log, with its pod and service) and ask the kubelet for
    // its stats with their ServiceAccount's token.
    cluster.apply_ok(&backend_destination("TRACES, LOGS, METRICS"));
    let access_logged = || {
        let _ = http_request_at(&new_ip, 8080, "GET", "/logged", &[], "");
        let requests = json_lines(&dir.path().join("logs.jsonl"));
        items(&requests, "resourceLogs", "scopeLogs", "logRecords")
            .into_iter()
            .find(|(_, _, record)| {
                record["body"]["stringValue"]
                    .as_str()
                    .is_some_and(|b| b.contains("GET /logged"))
            })
            .map(|(resource, _, _)| resource.clone())
    };
    assert!(
        wait_for(Duration::from_secs(60), || access_logged().is_some()),
        "the app's access log reaches the backend; the node collector says: {}",
        cluster.logs(NS, "app.kubernetes.io/component=node-collector", 30)
    );
    let resource = access_logged().unwrap();
    for (key, value) in [
        ("service.name", "python-app"),
        ("k8s.deployment.name", "python-app"),
        ("k8s.pod.name", new_pod.as_str()),
        ("k8s.container.name", "web"),
    ] {
        assert_eq!(
            attribute(&resource, key).as_deref(),
            Some(value),
            "{key}: {resource}"
        );
    }
    let measured = |name: &str, pod: Option<&str>| {
        let requests = json_lines(&dir.path().join("metrics.jsonl"));
        requests.iter().any(|request| {
            request["resourceMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| {
                    pod.is_none_or(|pod| {
                        attribute(&r["resource"], "k8s.pod.name").as_deref() == Some(pod)
                    }) && r["scopeMetrics"].as_array().into_iter().flatten().any(|s| {
                        s["metrics"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|m| m["name"] == name)
                    })
                })
        })
    };
    assert!(
        wait_for(Duration::from_secs(90), || measured(
            "container.memory.working_set",
            Some(&new_pod)
        ) && measured(
            "system.memory.usage",
            None
        )),
        "the kubelet's stats of the app's pod and the node's memory reach the backend; the node collector says: {}",
        cluster.logs(NS, "app.kubernetes.io/component=node-collector", 30)
    );

    // The UI's throughput comes from the collectors' own metrics, read at their pods' addresses.
    let received = |role: &str| {
        let Ok(answer) = graphql(&cluster, "{ agents { role throughput { received } } }") else {
            return 0.0;
        };
        answer["data"]["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["role"] == role)
            .filter_map(|a| a["throughput"]["received"].as_f64())
            .sum::<f64>()
    };
    assert!(
        wait_for(Duration::from_secs(60), || received("gateway") > 0.0
            && received("node") > 0.0),
        "the UI shows what the gateway ({}) and the node collector ({}) take in",
        received("gateway"),
        received("node")
    );

    // An Action applied with kubectl reaches the gateway pods in place: the backend sees its
    // effect, and the collectors' pods are the same ones.
    let collectors = [
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/managed-by=odigos-rs",
    ];
    let pods_before = cluster.get(&collectors, "{.items[*].metadata.uid}");
    cluster.apply_ok(
        "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {name: cluster-name, namespace: default}\nspec:\n  signals: [TRACES]\n  addClusterInfo:\n    clusterAttributes:\n      - {attributeName: k8s.cluster.name, attributeStringValue: odigos-test}\n",
    );
    let tagged = || {
        let requests = json_lines(&traces);
        items(&requests, "resourceSpans", "scopeSpans", "spans")
            .iter()
            .any(|(resource, _, _)| {
                attribute(resource, "k8s.cluster.name").as_deref() == Some("odigos-test")
            })
    };
    cluster.expect(60, NS, "the Action's attribute reaches the backend", tagged);
    assert_eq!(
        cluster.get(&collectors, "{.items[*].metadata.uid}"),
        pods_before,
        "the same collector pods run the new config"
    );

    // Without the control plane, the collectors keep their configs and data keeps flowing;
    // when it is back, the whole fleet reconnects to it, and no collector restarted.
    let spans = || items(&json_lines(&traces), "resourceSpans", "scopeSpans", "spans").len();
    cluster.kubectl_ok(&[
        "scale",
        "deployment",
        "odigos-control-plane",
        "-n",
        NS,
        "--replicas=0",
    ]);
    cluster.expect(60, NS, "the control plane is gone", || {
        cluster.get(&pods, "{.items[*].metadata.name}").is_empty()
    });
    let before = spans();
    assert!(
        wait_for(Duration::from_secs(30), || spans() > before + 20),
        "spans flow without the control plane: {before} then {}",
        spans()
    );
    cluster.kubectl_ok(&[
        "scale",
        "deployment",
        "odigos-control-plane",
        "-n",
        NS,
        "--replicas=1",
    ]);
    let fleet = || {
        if cluster.get(&pods, "{.items[*].status.containerStatuses[*].ready}") != "true" {
            return Vec::new();
        }
        let Ok(agents) = control_plane_get(&cluster, 4320, "/api/v1/agents") else {
            return Vec::new();
        };
        let agents: serde_json::Value = serde_json::from_str(&agents.body).unwrap_or_default();
        let mut applied: Vec<String> = agents
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["config"]["status"] == "applied" && !a["connected"].is_null())
            .map(|a| {
                a["identifying"]["service.name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        applied.sort();
        applied
    };
    assert!(
        wait_for(Duration::from_secs(90), || fleet().len() == 3),
        "the gateway, the node collector and odiglet reconnect to the new control plane and run its \
         configs: {:?}\nthe agents as it sees them: {}\nit says: {}\n{}",
        fleet(),
        control_plane_get(&cluster, 4320, "/api/v1/agents")
            .map(|r| r.body)
            .unwrap_or_default(),
        cluster.logs(NS, CONTROL_PLANE, 60),
        cluster.describe(NS)
    );
    assert_eq!(
        cluster.get(
            &collectors,
            "{.items[*].status.containerStatuses[*].restartCount}"
        ),
        "0 0",
        "no collector restarted\n{}",
        cluster.describe(NS)
    );
    sdk.stop();
    let shown = [
        control_plane_get(&cluster, 4320, "/api/v1/agents")
            .unwrap()
            .body,
        cluster.logs(NS, "app.kubernetes.io/managed-by=odigos-rs", -1),
        cluster.kubectl_ok(&["get", "configmaps", "-A", "-o", "yaml"]),
    ];
    for text in shown {
        assert!(!text.contains(PASSWORD), "the password is shown: {text}");
    }

    // An upgrade with new values rolls the control plane onto them, and a new sizing preset
    // resizes the collectors it runs.
    let mut upgrade = vec!["upgrade", "odigos", chart, "-n", NS];
    upgrade.extend(image.iter().map(String::as_str));
    upgrade.extend([
        "--set=ui.readOnly=true",
        "--set=collectors.sizing=size_m",
        "--wait",
        "--timeout=180s",
    ]);
    cluster.helm(&upgrade);
    let read_only = || {
        let Ok(refused) = graphql(
            &cluster,
            "mutation { deleteResource(kind: DESTINATION, name: \"debug\") { ok } }",
        ) else {
            return false;
        };
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("read-only"))
    };
    cluster.expect(60, NS, "the upgraded control plane is read-only", read_only);
    let resized = || {
        let gateway = cluster.get(
            &gateway,
            "{.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory}",
        );
        let bounds = cluster.get(
            &["hpa", "odigos-gateway", "-n", NS],
            "{.spec.minReplicas} {.spec.maxReplicas}",
        );
        let node = cluster.get(
            &nodes,
            "{.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory}",
        );
        format!("{gateway} {bounds}; {node}")
    };
    assert!(
        wait_for(Duration::from_secs(60), || resized()
            == "1 600Mi 2 8; 500m 500Mi"),
        "size_m: the gateway at 1 CPU, 600Mi, 2-8 replicas; node collectors at 500m, 500Mi: {}",
        resized()
    );

    // Uninstalling leaves nothing of ours but the CRDs and the users' resources.
    cluster.helm(&["uninstall", "odigos", "-n", NS, "--wait", "--timeout=120s"]);
    let left = || {
        let namespaced = cluster.kubectl(&[
            "get",
            "deployments,daemonsets,replicasets,pods,services,horizontalpodautoscalers,serviceaccounts,secrets,roles,rolebindings,collectorsgroups",
            "-n",
            NS,
            "-o",
            "name",
        ]);
        let mut left = String::from_utf8_lossy(&namespaced.stdout).into_owned();
        let cluster_wide = cluster.kubectl(&[
            "get",
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
            "-o",
            "name",
        ]);
        let cluster_wide = String::from_utf8_lossy(&cluster_wide.stdout);
        for ours in cluster_wide.lines().filter(|l| l.contains("odigos")) {
            left += ours;
            left += "\n";
        }
        // Every namespace has its default ServiceAccount and that account's token.
        left.lines()
            .filter(|l| !l.contains("/default"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(90), || left().is_empty()),
        "left after uninstall: {:?}",
        left()
    );
    assert!(
        !cluster
            .get(&["crd", "destinations.odigos.io"], "{.metadata.name}")
            .is_empty(),
        "the CRDs stay, as Helm keeps them"
    );
    assert!(
        !cluster
            .get(
                &["destination", "debug", "-n", "default"],
                "{.metadata.name}"
            )
            .is_empty(),
        "the users' own resources stay"
    );
}
