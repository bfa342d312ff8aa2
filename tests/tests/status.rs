//! Status that tells the truth, under `odigos up`:
//! - a destination that is down shows degraded, with its error, in the API and in `odigos
//!   describe`, and healthy again once it recovers;
//! - each document of a file stands alone, and the last good version of a resource stays in
//!   force across a restart of `odigos up`, which `describe` says with the time it was accepted;
//! - what is not in force or cannot work here is never shown as ready.

use std::time::Duration;

use odigos_tests::sdk::Streamer;
use odigos_tests::traffic::{Backend, Mode};
use odigos_tests::up::Up;
use odigos_tests::*;

fn otlp(name: &str, port: u16) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: {name}}}\nspec:\n  type: otlp\n  signals: [TRACES]\n  data:\n    OTLP_GRPC_ENDPOINT: http://127.0.0.1:{port}\n"
    )
}

fn rename(name: &str, to: &str) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: {name}}}\nspec:\n  signals: [TRACES]\n  renameAttribute:\n    renames: {{user.id: {to}}}\n"
    )
}

/// Waits until `check` holds of the state the API serves; the last state seen otherwise.
fn state_until(
    up: &Up,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let held = wait_for(Duration::from_secs(30), || {
        last = up.state();
        check(&last)
    });
    assert!(held, "{what}:\n{last:#}\n{}", up.logs());
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_shows_degraded_with_its_error_until_it_recovers() {
    let backend = Backend::new(Mode::Down);
    let up = tokio::task::block_in_place(|| {
        Up::start(&[("backend.yaml", otlp("backend", backend.port))])
    });
    tokio::task::block_in_place(|| up.wait_applied(1));
    let sdk = Streamer::python(
        &format!("http://127.0.0.1:{}", up.grpc()),
        "shop",
        10,
        up.path("").as_path(),
    );

    let health = |s: &serde_json::Value| s["destinations"]["default/backend"]["health"].clone();
    let down = tokio::task::block_in_place(|| {
        state_until(
            &up,
            "the destination that is down is not shown degraded",
            |s| health(s)["status"] == "False",
        )
    });
    let degraded = health(&down);
    assert_eq!(degraded["type"], "Healthy");
    assert_eq!(degraded["reason"], "Degraded");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("cannot deliver") && message.contains("127.0.0.1"),
        "the error names what fails: {message}"
    );
    assert!(degraded["since"].is_string(), "{degraded:#}");
    // The config is in force all the same: the two axes say different things.
    assert_eq!(
        down["destinations"]["default/backend"]["condition"]["status"],
        "True"
    );
    // The applications are not held up by it.
    let acked = sdk.acked().len();
    assert!(
        wait_for(Duration::from_secs(10), || sdk.acked().len() > acked + 50),
        "spans stopped being acknowledged while the destination is down"
    );

    let described = tokio::task::block_in_place(|| up.describe(&["destination", "backend"]));
    let first = described.lines().next().unwrap();
    assert!(
        first.starts_with("destination default/backend: DEGRADED since ")
            && first.contains("cannot deliver"),
        "the first line says it is down, and why:\n{described}"
    );
    assert!(
        described.contains("queue "),
        "the gateway's queue is shown:\n{described}"
    );
    // Its self-metrics are found though the gateway serves them on a port of its choosing.
    assert!(
        described.contains("the gateway's counts for it:")
            && described.contains("otelcol_exporter_queue_size{exporter=\"otlp/default.backend\"}"),
        "{described}"
    );
    let overview = tokio::task::block_in_place(|| up.describe(&[]));
    assert!(
        overview
            .lines()
            .any(|l| l.contains("default/backend") && l.contains("DEGRADED")),
        "{overview}"
    );
    // The gateway, as a collector, is degraded too, and says which component fails.
    assert!(
        overview.lines().any(|l| l.contains(" gateway ")
            && l.contains("DEGRADED: exporters.otlp/default.backend failing")),
        "{overview}"
    );

    backend.set(Mode::Up);
    let recovered = tokio::task::block_in_place(|| {
        state_until(&up, "the destination does not recover", |s| {
            health(s)["status"] == "True"
        })
    });
    assert_eq!(health(&recovered)["reason"], "Delivering");
    assert!(wait_for(Duration::from_secs(20), || backend
        .sink
        .received()
        > 0));
    let described = tokio::task::block_in_place(|| up.describe(&["destination", "backend"]));
    assert!(
        described.starts_with("destination default/backend: delivering since "),
        "{described}"
    );
    sdk.stop();
}

#[test]
fn the_last_good_version_of_each_document_stays_in_force_across_a_restart() {
    let actions = [
        rename("one", "first.id"),
        rename("two", "second.id").replace("renames:", "renamez:"),
        rename("three", "third.id"),
    ]
    .join("---\n");
    let mut up = Up::start(&[
        ("actions.yaml", actions),
        ("backend.yaml", otlp("backend", 4999)),
    ]);
    let state = up.wait_applied(1);
    let ready = |s: &serde_json::Value, kind: &str, name: &str| -> String {
        let list = s["resources"].as_array().unwrap();
        let r = list
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {s:#}"));
        format!("{} {}", r["condition"]["status"], r["condition"]["reason"])
    };
    // The good documents of a file apply; the bad one is refused on its own.
    assert_eq!(
        ready(&state, "Action", "default/one"),
        r#""True" "Applied""#
    );
    assert_eq!(
        ready(&state, "Action", "default/three"),
        r#""True" "Applied""#
    );
    let problems = state["problems"].to_string();
    assert!(problems.contains("Action default/two"), "{problems}");
    assert!(!problems.contains("default/one"), "{problems}");
    let accepted = state["accepted"]["Destination default/backend"].clone();
    assert!(accepted.is_string(), "{state:#}");

    // Broken while `odigos up` is down: the last good version is in force when it is back.
    up.stop();
    std::fs::write(
        up.path("odigos.d/backend.yaml"),
        otlp("backend", 4999).replace("OTLP_GRPC_ENDPOINT", "OTLP_ENDPOINT"),
    )
    .unwrap();
    up.resume();
    let state = up.wait_applied(1);
    assert_eq!(
        state["destinations"]["default/backend"]["plan"]["status"], "active",
        "{state:#}"
    );
    assert_eq!(state["accepted"]["Destination default/backend"], accepted);
    assert_eq!(
        ready(&state, "Action", "default/three"),
        r#""True" "Applied""#
    );
    let first = up.describe(&["destination", "backend"]);
    let first = first.lines().next().unwrap();
    assert!(
        first.contains("its last edit is refused") && !first.contains("NOT IN USE"),
        "the version in force is in use: {first}"
    );
    let described = up.describe(&[]);
    let at = accepted.as_str().unwrap();
    assert!(
        described.contains("OTLP_ENDPOINT")
            && described.contains(&format!("the version accepted at {at} stays in force")),
        "{described}"
    );
    // A resource with no good version says so.
    assert!(
        described.contains("Action default/two")
            && described.contains("no version of it is in force"),
        "{described}"
    );
}

const CHECKOUT: &str = "apiVersion: odigos.io/v1alpha1
kind: Source
metadata: {name: checkout, namespace: shop}
spec:
  workload: {name: checkout, namespace: shop, kind: Deployment}
";

const UNUSED_RULE: &str = "apiVersion: odigos.io/v1alpha1
kind: InstrumentationRule
metadata: {name: headers}
spec:
  workloads: [{name: nowhere, namespace: shop, kind: Deployment}]
  headersCollection: {headerKeys: [x-request-id]}
";

const K8S_ATTRIBUTES: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata: {name: pod-metadata}
spec:
  signals: [TRACES]
  k8sAttributes: {}
";

#[test]
fn what_is_not_in_force_or_cannot_work_here_is_not_shown_ready() {
    let profiles = otlp("profiles", 4999).replace("[TRACES]", "[TRACES, PROFILES]");
    let up = Up::start(&[
        ("checkout.yaml", CHECKOUT.to_string()),
        ("rule.yaml", UNUSED_RULE.to_string()),
        ("k8s.yaml", K8S_ATTRIBUTES.to_string()),
        ("profiles.yaml", profiles),
    ]);
    let state = up.wait_applied(1);
    // Accepted as Odigos writes it, and applied, but a field it sets has no effect here.
    let ready = &state["destinations"]["default/profiles"]["condition"];
    assert_eq!(ready["status"], "True", "{state:#}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("not in effect here: spec.signals: PROFILES"),
        "{message}"
    );
    let source = &state["sources"][0]["condition"];
    assert_eq!(source["status"], "False", "{state:#}");
    assert_eq!(source["reason"], "NoKubernetes");
    let described = up.describe(&["source", "checkout"]);
    assert!(
        described.contains("not ready (NoKubernetes")
            && described.contains("workload.kind Process"),
        "{described}"
    );
    let resources = state["resources"].as_array().unwrap();
    let reason = |name: &str| {
        let r = resources.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(r["condition"]["status"], "False", "{r:#}");
        r["condition"]["reason"].as_str().unwrap().to_string()
    };
    assert_eq!(reason("default/headers"), "Unused");
    assert_eq!(reason("default/pod-metadata"), "NotActive");
}
