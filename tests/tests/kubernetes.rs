//! The control plane on the Kubernetes store, against a real kube-apiserver: the CRDs from
//! `crdgen` install; resources created with the API become the desired state; one that does
//! not validate is refused with a status condition that says why, while the rest works; the
//! control plane writes InstrumentationConfigs and CollectorsGroups; and when a real collector
//! connects and applies its config, the Destination's condition turns Ready; changes made
//! through the store (the UI's mutations) are validated, written as custom resources and
//! followed, keeping the labels others set; a Destination's secret fields go into a Secret.
//! An install scoped to one namespace, with rights in that namespace only, starts and keeps to
//! it.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use odigos_server::catalog::Catalog;
use odigos_server::compiler::Layout;
use odigos_server::http::{Options, Server};
use odigos_server::resource::ObjectKey;
use odigos_server::resource::{
    Action, CollectorsGroup, Destination, InstrumentationConfig, Object, Source, crds,
};
use odigos_server::store::{Change, KubeStore, Refusal, Store};
use odigos_tests::kubernetes::KubeApi;
use odigos_tests::*;

const DEBUG: &str = "apiVersion: odigos.io/v1alpha1
kind: Destination
metadata: {name: debug, namespace: default}
spec: {type: debug, signals: [TRACES]}
";

const HONEYCOMB: &str = "apiVersion: odigos.io/v1alpha1
kind: Destination
metadata: {name: honeycomb, namespace: default}
spec:
  type: honeycomb
  signals: [TRACES]
  secretRef: {name: honeycomb}
";

const CHECKOUT: &str = "apiVersion: odigos.io/v1alpha1
kind: Source
metadata: {name: checkout, namespace: default}
spec:
  workload: {name: checkout, namespace: default, kind: Deployment}
  otelServiceName: checkout-api
";

/// Valid for the CRD schema, not for odigos: two actions in one resource.
const TWO_ACTIONS: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata: {name: both, namespace: default}
spec:
  signals: [TRACES]
  deleteAttribute: {attributeNamesToDelete: [user.email]}
  renameAttribute: {renames: {user.id: enduser.id}}
";

/// The Ready condition of a resource: (status, reason, message).
fn ready(value: &serde_json::Value) -> Option<(String, String, String)> {
    condition(value, "Ready")
}

/// A condition of a resource by type: (status, reason, message).
fn condition(value: &serde_json::Value, kind: &str) -> Option<(String, String, String)> {
    let c = value["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

async fn eventually<F, Fut>(what: &str, api: &KubeApi, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let result = check().await;
        match result {
            Ok(()) => return,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!(
                    "{what}: {last}\n{}",
                    api.log()
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Where the collectors listen here: only a gateway runs, on ports of its choosing (its
/// metrics too: a collector's default, 8888, is not for tests that run side by side).
fn gateway_only(secrets: &std::path::Path) -> Layout {
    Layout {
        node_grpc: "127.0.0.1:0".into(),
        node_http: "127.0.0.1:0".into(),
        gateway_listen: "127.0.0.1:0".into(),
        gateway_endpoint: "http://127.0.0.1:4317".into(),
        node_metrics: Some("127.0.0.1:0".into()),
        gateway_metrics: Some("127.0.0.1:0".into()),
        secrets_dir: secrets.to_path_buf(),
        secrets_in_config: false,
        queue_dir: None,
        queue_mib: 0,
        gateway: odigos_server::compiler::sized(256, 300, 1, 5),
        node: odigos_server::compiler::sized(128, 300, 1, 1),
        pod_metadata: false,
        node_storage: None,
    }
}

/// Installs the CRDs and waits until the API server serves them.
async fn install_crds(api: &KubeApi, client: &kube::Client) {
    let definitions: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        definitions
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    eventually("the CRDs are established", api, || {
        let definitions = definitions.clone();
        async move {
            for crd in crds() {
                let name = crd.metadata.name.unwrap();
                let got = definitions.get(&name).await.map_err(|e| e.to_string())?;
                let established = got.status.and_then(|s| s.conditions).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                if !established {
                    return Err(format!("{name} not established"));
                }
            }
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_follows_and_reports_on_cluster_resources() {
    let api = tokio::task::block_in_place(KubeApi::start);
    let client = api.client().await;

    install_crds(&api, &client).await;

    let create = |yaml: &'static str| {
        let client = client.clone();
        async move {
            let value = odigos_proto::yaml::parse(yaml).unwrap();
            match Object::from_value(value).unwrap() {
                Object::Destination(d) => Api::<Destination>::default_namespaced(client)
                    .create(&PostParams::default(), &d)
                    .await
                    .map(drop),
                Object::Source(s) => Api::<Source>::default_namespaced(client)
                    .create(&PostParams::default(), &s)
                    .await
                    .map(drop),
                Object::Action(a) => Api::<Action>::default_namespaced(client)
                    .create(&PostParams::default(), &a)
                    .await
                    .map(drop),
                other => panic!("unexpected {other:?}"),
            }
            .unwrap_or_else(|e| panic!("cannot create {yaml}: {e}"))
        }
    };
    create(DEBUG).await;
    create(HONEYCOMB).await;
    create(CHECKOUT).await;
    create(TWO_ACTIONS).await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "honeycomb", "namespace": "default"},
        "stringData": {"HONEYCOMB_API_KEY": "hc-key"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let store = KubeStore::start(client.clone(), None, "default", Catalog::builtin())
        .await
        .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let layout = gateway_only(secrets.path());
    let (server, plane) =
        Server::start_control_plane("127.0.0.1:0", Options::default(), store.clone(), layout)
            .await
            .unwrap();

    // The desired state: both destinations (one through its Secret), the Source; the
    // invalid Action refused.
    eventually("the desired state is read from the cluster", &api, || {
        let state = plane.state();
        async move {
            let active = |name: &str| {
                serde_json::to_value(state.destinations.get(name).and_then(|d| d.plan.clone()))
                    .unwrap()["status"]
                    == "active"
            };
            if !(active("default/debug") && active("default/honeycomb")) {
                return Err(format!("destinations: {:#?}", state.destinations));
            }
            if !state.problems.iter().any(|p| {
                p.to_string()
                    .contains("Action default/both: spec.renameAttribute: an Action does one thing")
            }) {
                return Err(format!("problems: {:?}", state.problems));
            }
            Ok(())
        }
    })
    .await;
    let secret_written = std::fs::read_dir(secrets.path()).unwrap().count();
    assert_eq!(
        secret_written, 1,
        "the Secret's value is in one file for the collector"
    );

    // Status conditions in the cluster say how each stands.
    let destinations = Api::<Destination>::default_namespaced(client.clone());
    let actions = Api::<Action>::default_namespaced(client.clone());
    eventually("conditions are written", &api, || {
        let (destinations, actions) = (destinations.clone(), actions.clone());
        async move {
            let debug =
                serde_json::to_value(destinations.get("debug").await.map_err(|e| e.to_string())?)
                    .unwrap();
            let both = serde_json::to_value(actions.get("both").await.map_err(|e| e.to_string())?)
                .unwrap();
            match (ready(&debug), ready(&both)) {
                (Some((s, r, _)), Some((s2, r2, m2)))
                    if s == "False"
                        && r == "NoAgents"
                        && s2 == "False"
                        && r2 == "Invalid"
                        && m2.contains("an Action does one thing") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let configs = Api::<InstrumentationConfig>::default_namespaced(client.clone());
    let groups = Api::<CollectorsGroup>::default_namespaced(client.clone());
    eventually(
        "the InstrumentationConfig and CollectorsGroups are written",
        &api,
        || {
            let (configs, groups) = (configs.clone(), groups.clone());
            async move {
                let config = configs
                    .get("deployment-checkout")
                    .await
                    .map_err(|e| e.to_string())?;
                let gateway = groups
                    .get("odigos-gateway")
                    .await
                    .map_err(|e| e.to_string())?;
                match (
                    config.spec.service_name.as_str(),
                    gateway.spec.role.as_str(),
                ) {
                    ("checkout-api", "CLUSTER_GATEWAY") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;

    // A collector connects and applies the gateway config: the Destination is Ready.
    let endpoint = format!("ws://{}/v1/opamp", server.address);
    let state_dir = tempfile::tempdir().unwrap();
    let state_path = state_dir.path().display().to_string();
    let _gateway = tokio::task::block_in_place(|| {
        Collector::with_args(&[
            "--opamp-endpoint",
            &endpoint,
            "--role",
            "gateway",
            "--state-dir",
            &state_path,
        ])
    });
    eventually(
        "the Destination is Ready once the gateway runs it",
        &api,
        || {
            let destinations = destinations.clone();
            async move {
                let debug = serde_json::to_value(
                    destinations.get("debug").await.map_err(|e| e.to_string())?,
                )
                .unwrap();
                match ready(&debug) {
                    Some((s, r, _)) if s == "True" && r == "Applied" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;

    // The condition names the generation it speaks of, and keeps its transition time while
    // its status stays, across a change of the spec that leaves the config as it is.
    let ready_of_debug = || {
        let destinations = destinations.clone();
        async move {
            let debug = serde_json::to_value(destinations.get("debug").await.unwrap()).unwrap();
            let ready = debug["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap_or_default();
            (debug["metadata"]["generation"].clone(), ready)
        }
    };
    let (generation, before) = ready_of_debug().await;
    assert_eq!(before["observedGeneration"], generation, "{before}");
    // Any new transition time would be a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renamed = serde_json::json!({"spec": {"destinationName": "Debug output"}});
    destinations
        .patch("debug", &PatchParams::default(), &Patch::Merge(&renamed))
        .await
        .unwrap();
    eventually("the condition observes the new generation", &api, || {
        let before = before.clone();
        async move {
            let (generation, now) = ready_of_debug().await;
            if now["observedGeneration"] != generation || generation.as_i64() < Some(2) {
                return Err(format!("generation {generation}: {now}"));
            }
            assert_eq!(now["status"], "True", "{now}");
            assert_eq!(
                now["lastTransitionTime"], before["lastTransitionTime"],
                "no transition: {before} then {now}"
            );
            Ok(())
        }
    })
    .await;

    // A destination that is down gets a Healthy condition that says so, with the exporter's
    // error, and a healthy one once it recovers. Nothing is sent to the managed vendor.
    let off = serde_json::json!({"spec": {"disabled": true}});
    destinations
        .patch("honeycomb", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    let backend = odigos_tests::traffic::Backend::new(odigos_tests::traffic::Mode::Down);
    let down: Destination = serde_json::from_value(serde_json::json!({
        "apiVersion": "odigos.io/v1alpha1", "kind": "Destination",
        "metadata": {"name": "backend"},
        "spec": {"type": "otlp", "signals": ["TRACES"],
                 "data": {"OTLP_GRPC_ENDPOINT": format!("http://127.0.0.1:{}", backend.port)}},
    }))
    .unwrap();
    destinations
        .create(&PostParams::default(), &down)
        .await
        .unwrap();
    let plane_for_port = plane.clone();
    let gateway_grpc = move || -> Option<std::net::SocketAddr> {
        let agents = plane_for_port.fleet().agents();
        let status = &agents.first()?.components.get("receivers.otlp")?.status;
        let listening = status.strip_prefix("listening grpc ")?;
        listening.split(',').next()?.parse().ok()
    };
    let mut grpc = None;
    eventually("the gateway says where it listens", &api, || {
        grpc = gateway_grpc();
        async move { grpc.map(drop).ok_or_else(|| "not yet".to_string()) }
    })
    .await;
    let load = odigos_tests::traffic::Load::new();
    let sending = load.start(grpc.unwrap(), 1, 200);
    let health = |wanted: &'static str, reason: &'static str, needle: String| {
        let destinations = destinations.clone();
        move || {
            let (destinations, needle) = (destinations.clone(), needle.clone());
            async move {
                let backend = serde_json::to_value(
                    destinations
                        .get("backend")
                        .await
                        .map_err(|e| e.to_string())?,
                )
                .unwrap();
                match condition(&backend, "Healthy") {
                    Some((s, r, m)) if s == wanted && r == reason && m.contains(&needle) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        }
    };
    let address = format!("127.0.0.1:{}", backend.port);
    eventually(
        "the Destination that is down is Degraded, with its error",
        &api,
        health("False", "Degraded", address),
    )
    .await;
    backend.set(odigos_tests::traffic::Mode::Up);
    eventually(
        "the Destination is Healthy once it recovers",
        &api,
        health("True", "Delivering", String::new()),
    )
    .await;
    load.stop();
    let _ = sending.await;
    assert!(backend.sink.received() > 0);

    // Fixing the Action clears its problem; deleting the Source removes its config.
    let fixed = serde_json::json!({"spec": {"deleteAttribute": null}});
    actions
        .patch("both", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .unwrap();
    Api::<Source>::default_namespaced(client.clone())
        .delete("checkout", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the fix and the deletion are followed", &api, || {
        let (actions, configs) = (actions.clone(), configs.clone());
        async move {
            let both = serde_json::to_value(actions.get("both").await.map_err(|e| e.to_string())?)
                .unwrap();
            let gone = configs
                .get_opt("deployment-checkout")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            match ready(&both) {
                Some((s, r, _)) if s == "True" && r == "Applied" && gone => Ok(()),
                other => Err(format!("{other:?}, config gone: {gone}")),
            }
        }
    })
    .await;
    assert!(
        plane.state().problems.is_empty(),
        "{:?}",
        plane.state().problems
    );

    // Changes through the store, as the UI's mutations make them: validated first, written as
    // custom resources, and back in the desired state when the call returns.
    let object = |yaml: &str| Object::from_value(odigos_proto::yaml::parse(yaml).unwrap()).unwrap();
    let archive = |signals: &str, labels: &str| {
        object(&format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive, namespace: default{labels}}}\nspec: {{type: debug, signals: [{signals}]}}\n"
        ))
    };
    store
        .change(Change::Create(archive(
            "TRACES",
            ", labels: {team: observability}",
        )))
        .await
        .unwrap();
    assert!(destinations.get_opt("archive").await.unwrap().is_some());
    let key = ObjectKey {
        kind: "Destination",
        namespace: "default".into(),
        name: "archive".into(),
    };
    assert!(store.subscribe().borrow().desired.get(&key).is_some());
    let again = store.change(Change::Create(archive("TRACES", ""))).await;
    assert!(matches!(again, Err(Refusal::Exists(_))), "{again:?}");
    let bad = object(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: archive, namespace: default}\nspec: {type: otlp, signals: [TRACES], data: {OTLP_GRPC_ENDPOINT: not a url at all}}\n",
    );
    match store.change(Change::Update(bad)).await {
        Err(Refusal::Invalid(_, errors)) => {
            assert_eq!(errors[0].0, "spec.data.OTLP_GRPC_ENDPOINT", "{errors:?}")
        }
        other => panic!("a bad value is refused: {other:?}"),
    }
    let kept = destinations.get("archive").await.unwrap();
    assert_eq!(kept.spec.destination_type, "debug", "nothing written");
    store
        .change(Change::Update(archive("TRACES, LOGS", "")))
        .await
        .unwrap();
    let updated = destinations.get("archive").await.unwrap();
    assert_eq!(updated.spec.signals.len(), 2, "{updated:?}");
    assert_eq!(
        updated
            .metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("observability"),
        "labels set with kubectl are kept"
    );
    store.change(Change::Delete(key.clone())).await.unwrap();
    assert!(destinations.get_opt("archive").await.unwrap().is_none());
    assert!(store.subscribe().borrow().desired.get(&key).is_none());
    let missing = store.change(Change::Delete(key)).await;
    assert!(matches!(missing, Err(Refusal::Missing(_))), "{missing:?}");

    // A Destination's secret fields go into a Secret it references, never into the resource;
    // the Secret goes with it.
    let vault = object(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: vault, namespace: default}\nspec:\n  type: otlphttp\n  signals: [TRACES]\n  data: {OTLP_HTTP_ENDPOINT: 'http://127.0.0.1:5318', OTLP_HTTP_BASIC_AUTH_USERNAME: me, OTLP_HTTP_BASIC_AUTH_PASSWORD: s3cret-value}\n",
    );
    store.change(Change::Create(vault)).await.unwrap();
    let written = destinations.get("vault").await.unwrap();
    assert!(
        !serde_json::to_string(&written).unwrap().contains("s3cret"),
        "{written:?}"
    );
    assert_eq!(
        written.spec.secret_ref.map(|r| r.name).as_deref(),
        Some("destination-vault")
    );
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(client.clone());
    let secret = secrets.get("destination-vault").await.unwrap();
    assert_eq!(
        secret.data.unwrap_or_default()["OTLP_HTTP_BASIC_AUTH_PASSWORD"].0,
        b"s3cret-value"
    );
    eventually(
        "the Destination finds its password in the Secret",
        &api,
        || {
            let state = plane.state();
            async move {
                let plan = state
                    .destinations
                    .get("default/vault")
                    .and_then(|d| d.plan.clone());
                match serde_json::to_value(&plan).unwrap()["status"].as_str() {
                    Some("active") => Ok(()),
                    _ => Err(format!("{plan:?}")),
                }
            }
        },
    )
    .await;
    let vault = ObjectKey {
        kind: "Destination",
        namespace: "default".into(),
        name: "vault".into(),
    };
    store.change(Change::Delete(vault)).await.unwrap();
    assert!(
        secrets
            .get_opt("destination-vault")
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_install_starts_and_keeps_to_its_namespace() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let api = tokio::task::block_in_place(KubeApi::start);
    let admin = api.client().await;
    install_crds(&api, &admin).await;
    fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }
    let namespace: Namespace = object(serde_json::json!({"metadata": {"name": "shop"}}));
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    // The user `scoped` may do what the control plane does, in `shop` only; all but writing
    // CollectorsGroups, at first.
    let rules = |odigos: &[&str]| {
        serde_json::json!([
            {"apiGroups": ["odigos.io"], "resources": odigos, "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        ])
    };
    let mut kinds = vec![
        "sources",
        "destinations",
        "actions",
        "instrumentationrules",
        "samplings",
        "instrumentationconfigs",
    ];
    kinds.extend(["sources/status", "destinations/status", "actions/status"]);
    kinds.extend(["instrumentationrules/status", "samplings/status"]);
    let role: Role = object(serde_json::json!({
        "metadata": {"name": "odigos", "namespace": "shop"},
        "rules": rules(&kinds),
    }));
    Api::<Role>::namespaced(admin.clone(), "shop")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = object(serde_json::json!({
        "metadata": {"name": "odigos", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "odigos"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "scoped"}],
    }));
    Api::<RoleBinding>::namespaced(admin.clone(), "shop")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    for namespace in ["shop", "default"] {
        let destination: Destination = object(serde_json::json!({
            "apiVersion": "odigos.io/v1alpha1", "kind": "Destination",
            "metadata": {"name": format!("{namespace}-debug"), "namespace": namespace},
            "spec": {"type": "debug", "signals": ["TRACES"]},
        }));
        Api::<Destination>::namespaced(admin.clone(), namespace)
            .create(&PostParams::default(), &destination)
            .await
            .unwrap();
    }

    let scoped = api.scoped_client().await;
    let store = KubeStore::start(scoped, Some("shop"), "shop", Catalog::builtin())
        .await
        .unwrap_or_else(|e| panic!("a namespace-scoped install starts: {e}"));
    let secrets = tempfile::tempdir().unwrap();
    let layout = gateway_only(secrets.path());
    let (server, plane) =
        Server::start_control_plane("127.0.0.1:0", Options::default(), store, layout)
            .await
            .unwrap();
    let destinations = Api::<Destination>::namespaced(admin.clone(), "shop");
    let groups = Api::<CollectorsGroup>::namespaced(admin.clone(), "shop");
    let written = "its Destination's status is written in its namespace";
    eventually(written, &api, || {
        let (destinations, state) = (destinations.clone(), plane.state());
        async move {
            let names: Vec<&String> = state.destinations.keys().collect();
            if names != ["shop/shop-debug"] {
                return Err(format!("followed: {names:?}"));
            }
            let debug = serde_json::to_value(
                destinations
                    .get("shop-debug")
                    .await
                    .map_err(|e| e.to_string())?,
            )
            .unwrap();
            match ready(&debug) {
                Some((s, r, _)) if s == "False" && r == "NoAgents" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    // Refused, the CollectorsGroups' write is tried again until it may: once allowed, they
    // are written with no change to anything else.
    assert!(groups.get_opt("odigos-gateway").await.unwrap().is_none());
    kinds.push("collectorsgroups");
    kinds.push("collectorsgroups/status");
    Api::<Role>::namespaced(admin.clone(), "shop")
        .patch(
            "odigos",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"rules": rules(&kinds)})),
        )
        .await
        .unwrap();
    eventually(
        "the CollectorsGroups are written once allowed",
        &api,
        || {
            let groups = groups.clone();
            async move {
                match groups.get_opt("odigos-gateway").await {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    server.stop().await;
}

/// A control plane replica that competes for the leader Lease as `identity`.
async fn replica(client: &kube::Client, identity: &str, secrets: &std::path::Path) -> Server {
    let store = KubeStore::start(client.clone(), None, "default", Catalog::builtin())
        .await
        .unwrap();
    store.elect_leader(identity.to_string());
    let layout = gateway_only(secrets);
    let (server, _plane) =
        Server::start_control_plane("127.0.0.1:0", Options::default(), store, layout)
            .await
            .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_writer_and_the_second_takes_over_when_the_first_stops() {
    use k8s_openapi::api::coordination::v1::Lease;

    let api = tokio::task::block_in_place(KubeApi::start);
    let client = api.client().await;
    install_crds(&api, &client).await;
    let leases = Api::<Lease>::default_namespaced(client.clone());
    let destinations = Api::<Destination>::default_namespaced(client.clone());
    let holder = || {
        let leases = leases.clone();
        async move {
            let lease = leases.get_opt("odigos-control-plane").await;
            lease
                .map_err(|e| e.to_string())?
                .and_then(|l| l.spec?.holder_identity)
                .ok_or_else(|| "no holder".to_string())
        }
    };
    // Whether `name` holds the Lease; who does, if not.
    let holds = |name: &'static str| {
        let holder = &holder;
        move || async move {
            match holder().await? {
                h if h == name => Ok(()),
                other => Err(other),
            }
        }
    };
    let condition_written = |name: &'static str| {
        let destinations = destinations.clone();
        async move {
            let written = destinations.get(name).await.map_err(|e| e.to_string())?;
            match ready(&serde_json::to_value(written).unwrap()) {
                Some(_) => Ok(()),
                None => Err(format!("no Ready condition on {name} yet")),
            }
        }
    };
    let create = |name: &str| {
        let destination: Destination = serde_json::from_value(serde_json::json!({
            "apiVersion": "odigos.io/v1alpha1", "kind": "Destination",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "debug", "signals": ["TRACES"]},
        }))
        .unwrap();
        let destinations = destinations.clone();
        async move {
            destinations
                .create(&PostParams::default(), &destination)
                .await
                .unwrap();
        }
    };
    let secrets = tempfile::tempdir().unwrap();

    let first = replica(&client, "first", secrets.path()).await;
    eventually("the first replica leads", &api, holds("first")).await;
    create("one").await;
    eventually("the leader writes", &api, || condition_written("one")).await;
    let second = replica(&client, "second", secrets.path()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        holder().await.as_deref(),
        Ok("first"),
        "one leader at a time"
    );

    // The leader stops: the other takes the Lease and writes what changes from then on.
    first.stop().await;
    eventually("the second replica takes over", &api, holds("second")).await;
    create("two").await;
    eventually("the new leader writes", &api, || condition_written("two")).await;
    second.stop().await;
}
