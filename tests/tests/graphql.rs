//! The GraphQL API and the UI's sign-in, against a running `odigos up`:
//! - without the token or a session every call is refused (401);
//! - the fleet shows the gateway and node collector APPLIED, with their desired config; the
//!   collectors groups are ready; a kind's spec schema is served for the forms;
//! - a Destination created through the API is a new YAML file in `odigos.d/`, rolls out to
//!   every collector and shows Ready; disabling and deleting it edit and remove the file;
//! - a mutation with a bad value is refused with the field at fault and changes nothing;
//! - a resource in a file of several documents is updated in place, the others untouched;
//! - a refused file is listed by `problems` with its line and field;
//! - the one-time sign-in link gives a session cookie, once; with the cookie, a change needs
//!   the CSRF header;
//! - a query nested too deep is refused before it runs;
//! - the `fleetChanged` and `rolloutsChanged` subscriptions (graphql-transport-ws) push at
//!   once and again when a rollout fails, with its error and the change that made it; the
//!   rollout history keeps the config before it, applied and superseded;
//! - `--ui-read-only` refuses every mutation and changes nothing;
//! - `testDestination` sends an empty export through the destination's real exporter and
//!   returns the exporter's own error, writing nothing.

use std::time::Duration;

use odigos_tests::up::Up;
use odigos_tests::{http_request, wait_for};
use serde_json::{Value, json};

const AGENTS: &str = "query($role: String) { agents(role: $role) { uid role node status desiredHash configError desiredConfig { name body } effectiveConfig { name } } }";
const CREATE: &str = "mutation($kind: Kind!, $name: String!, $spec: JSON!) { createResource(kind: $kind, name: $name, spec: $spec) { ok resource errors { field message } } }";
const DESTINATIONS: &str = "{ destinations { name destinationType signals condition { status reason message } data { key value } } }";

const DEBUG: &str = "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: debug}\nspec: {type: debug, signals: [TRACES]}\n";

fn data(response: &Value) -> &Value {
    assert!(response["errors"].is_null(), "{response:#}");
    &response["data"]
}

/// The generation of the desired state.
fn generation(up: &Up) -> u64 {
    data(&up.graphql("{ generation }", json!({})))["generation"]
        .as_u64()
        .unwrap()
}

/// Waits until every role's rollout is applied by all of its agents, at `generation` or later.
fn rolled_out(up: &Up, generation_at_least: u64) -> Value {
    let mut last = Value::Null;
    let done = wait_for(Duration::from_secs(20), || {
        last = up.graphql(
            "{ generation rollouts { target hash agents applied pending failed errors { uid error } } }",
            json!({}),
        );
        let d = data(&last);
        d["generation"].as_u64() >= Some(generation_at_least)
            && d["rollouts"].as_array().unwrap().iter().all(|r| {
                r["target"] == "odiglet"
                    || (r["agents"].as_u64() > Some(0) && r["applied"] == r["agents"])
            })
    });
    assert!(done, "not rolled out: {last:#}\n{}", up.logs());
    last
}

#[test]
fn graphql_shows_the_fleet_and_changes_the_desired_state_through_files() {
    let up = Up::start(&[("debug.yaml", DEBUG.to_string())]);
    let graphql = "/graphql";
    let query = json!({"query": "{ generation }"}).to_string();

    // No token, a wrong one: refused.
    let json_type = ("content-type", "application/json");
    let anonymous = http_request(up.ui(), "POST", graphql, &[json_type], &query);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let wrong = http_request(
        up.ui(),
        "POST",
        graphql,
        &[json_type, ("authorization", "Bearer nope")],
        &query,
    );
    assert_eq!(wrong.status, 401, "{wrong:?}");

    // The fleet: both collectors APPLIED, each with the config meant for it.
    let applied = wait_for(Duration::from_secs(20), || {
        let agents = up.graphql(AGENTS, json!({}));
        let agents = data(&agents)["agents"].as_array().unwrap().clone();
        ["gateway", "node"].iter().all(|role| {
            agents
                .iter()
                .any(|a| a["role"] == *role && a["status"] == "APPLIED")
        })
    });
    assert!(applied, "{:#}", up.graphql(AGENTS, json!({})));
    let gateways = up.graphql(AGENTS, json!({"role": "gateway"}));
    let gateways = data(&gateways)["agents"].as_array().unwrap().clone();
    assert_eq!(gateways.len(), 1, "{gateways:#?}");
    let gateway = &gateways[0];
    assert!(gateway["node"].as_str().is_some_and(|n| !n.is_empty()));
    let desired = &gateway["desiredConfig"][0];
    assert_eq!(desired["name"], "collector.yaml");
    assert!(
        desired["body"].as_str().unwrap().contains("debug"),
        "the debug destination is in the gateway's config: {desired:#}"
    );
    assert_eq!(gateway["effectiveConfig"][0]["name"], "collector.yaml");

    // The collectors groups, ready once their collectors run their configs.
    let groups = up.graphql(
        "{ collectorsGroups { name role ready signals resources } }",
        json!({}),
    );
    let groups = data(&groups)["collectorsGroups"]
        .as_array()
        .unwrap()
        .clone();
    let gateway_group = groups
        .iter()
        .find(|g| g["role"] == "CLUSTER_GATEWAY")
        .expect("a gateway group");
    assert_eq!(gateway_group["ready"], true, "{groups:#?}");
    assert_eq!(gateway_group["signals"], json!(["TRACES"]), "{groups:#?}");
    assert!(gateway_group["resources"]["maxReplicas"].as_u64() >= Some(1));

    // The schema forms are drawn from: an Action's spec, with its blocks and types.
    let schema = up.graphql("{ specSchema(kind: ACTION) }", json!({}));
    let schema = &data(&schema)["specSchema"];
    assert_eq!(
        schema["properties"]["renameAttribute"]["properties"]["renames"]["type"], "object",
        "{schema:#}"
    );
    assert_eq!(
        schema["properties"]["signals"]["items"]["enum"][0],
        "TRACES"
    );

    // The catalog: otlp's form has its endpoint field, required.
    let types = up.graphql(
        "{ destinationTypes { name signals fields { name kind required secret } } }",
        json!({}),
    );
    let otlp = data(&types)["destinationTypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "otlp")
        .cloned()
        .expect("otlp in the catalog");
    assert!(
        otlp["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "OTLP_GRPC_ENDPOINT" && f["required"] == true),
        "{otlp:#}"
    );

    // A bad value: refused at the field, nothing written.
    let before = generation(&up);
    let files_before = files(&up);
    let bad = up.graphql(
        CREATE,
        json!({"kind": "DESTINATION", "name": "backend", "spec": {
            "type": "otlp", "signals": ["TRACES"],
            "data": {"OTLP_GRPC_ENDPOINT": "not a url at all"}}}),
    );
    let result = &data(&bad)["createResource"];
    assert_eq!(result["ok"], false, "{bad:#}");
    assert_eq!(
        result["errors"][0]["field"], "spec.data.OTLP_GRPC_ENDPOINT",
        "{bad:#}"
    );
    let unknown = up.graphql(
        CREATE,
        json!({"kind": "SAMPLING", "name": "s", "spec": {"nonsense": 1}}),
    );
    let result = &data(&unknown)["createResource"];
    assert_eq!(result["ok"], false, "{unknown:#}");
    assert!(
        result["errors"][0]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("spec")),
        "{unknown:#}"
    );
    assert_eq!(files(&up), files_before, "a refused change writes nothing");
    assert_eq!(generation(&up), before);

    // A good one: a new file, rolled out to every collector, Ready.
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("spans.jsonl");
    let created = up.graphql(
        CREATE,
        json!({"kind": "DESTINATION", "name": "archive", "spec": {
            "type": "file", "signals": ["TRACES"],
            "data": {"FILE_PATH": archive.display().to_string()}}}),
    );
    assert_eq!(
        data(&created)["createResource"],
        json!({"ok": true, "resource": "Destination default/archive", "errors": []})
    );
    let file = up.path("odigos.d/destination-archive.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("kind: Destination") && text.contains("FILE_PATH"),
        "{text}"
    );
    let rollout = rolled_out(&up, before + 1);
    let gateway_rollout = data(&rollout)["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "gateway")
        .cloned()
        .unwrap();
    assert!(gateway_rollout["agents"].as_u64() >= Some(1), "{rollout:#}");
    let ready = wait_for(Duration::from_secs(10), || {
        destination(&up, "default/archive")["condition"]["status"] == "True"
    });
    assert!(ready, "{:#}", destination(&up, "default/archive"));

    // The same name again: refused.
    let again = up.graphql(
        CREATE,
        json!({"kind": "DESTINATION", "name": "archive", "spec": {
            "type": "file", "signals": ["TRACES"], "data": {"FILE_PATH": "/tmp/x"}}}),
    );
    let result = &data(&again)["createResource"];
    assert_eq!(result["ok"], false);
    assert!(
        result["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("exists already"),
        "{again:#}"
    );

    // Disable: the file says so and the destination is Disabled.
    let disabled = up.graphql(
        "mutation { setDisabled(kind: DESTINATION, name: \"archive\", disabled: true) { ok errors { message } } }",
        json!({}),
    );
    assert_eq!(data(&disabled)["setDisabled"]["ok"], true, "{disabled:#}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("disabled: true")
    );
    let condition = destination(&up, "default/archive")["condition"].clone();
    assert_eq!(condition["reason"], "Disabled", "{condition:#}");

    // Delete: the file is gone, and so is the destination.
    let deleted = up.graphql(
        "mutation { deleteResource(kind: DESTINATION, name: \"archive\") { ok } }",
        json!({}),
    );
    assert_eq!(data(&deleted)["deleteResource"]["ok"], true);
    assert!(!file.exists());
    assert!(destination(&up, "default/archive").is_null());

    // A file of two documents: updating one leaves the other as it was written.
    let two = "# two samplings\napiVersion: odigos.io/v1alpha1\nkind: Sampling\nmetadata: {name: first}\nspec: {disabled: false}\n---\n# the second, untouched\napiVersion: odigos.io/v1alpha1\nkind: Sampling\nmetadata: {name: second}\nspec: {disabled: false}\n";
    up.write("samplings.yaml", two);
    let listed = wait_for(Duration::from_secs(10), || {
        let r = up.graphql("{ resources(kind: SAMPLING) { name } }", json!({}));
        data(&r)["resources"].as_array().unwrap().len() == 2
    });
    assert!(listed);
    let update = up.graphql(
        "mutation { setDisabled(kind: SAMPLING, name: \"first\", disabled: true) { ok errors { message } } }",
        json!({}),
    );
    assert_eq!(data(&update)["setDisabled"]["ok"], true, "{update:#}");
    let text = std::fs::read_to_string(up.path("odigos.d/samplings.yaml")).unwrap();
    assert!(
        text.ends_with("---\n# the second, untouched\napiVersion: odigos.io/v1alpha1\nkind: Sampling\nmetadata: {name: second}\nspec: {disabled: false}\n"),
        "{text}"
    );
    assert!(text.contains("disabled: true"), "{text}");

    // A refused file: listed with its line and field.
    up.write(
        "broken.yaml",
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {name: broken}\nspec:\n  type: otlp\n  signals: [TRACES]\n  data: {OTLP_GRPC_ENDPOINT: not a url at all}\n",
    );
    let mut problems = Value::Null;
    let listed = wait_for(Duration::from_secs(10), || {
        problems = up.graphql("{ problems { source line field message } }", json!({}));
        !data(&problems)["problems"].as_array().unwrap().is_empty()
    });
    assert!(listed, "{problems:#}");
    let problem = &data(&problems)["problems"][0];
    assert!(problem["source"].as_str().unwrap().ends_with("broken.yaml"));
    assert_eq!(problem["line"], 7, "{problem:#}");
    assert_eq!(problem["field"], "spec.data.OTLP_GRPC_ENDPOINT");

    // Too deep: refused before it runs.
    let deep = up.graphql(
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } } } }",
        json!({}),
    );
    assert!(
        deep["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested too deep")),
        "{deep:#}"
    );
}

#[test]
fn the_sign_in_link_gives_a_session_once_and_changes_need_the_csrf_header() {
    let up = Up::start(&[("debug.yaml", DEBUG.to_string())]);
    let link = up.login_link();
    let code = link.split_once("#login=").expect("a code in the link").1;
    let sign_in = |body: String| {
        http_request(
            up.ui(),
            "POST",
            "/api/v1/session",
            &[("content-type", "application/json")],
            &body,
        )
    };
    let signed = sign_in(json!({"code": code}).to_string());
    assert_eq!(signed.status, 204, "{signed:?}");
    let cookie = signed.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    // The code is good once; the token itself also signs in.
    assert_eq!(sign_in(json!({"code": code}).to_string()).status, 401);
    assert_eq!(
        sign_in(json!({"token": up.token()}).to_string()).status,
        204
    );
    assert_eq!(sign_in(json!({"token": "wrong"}).to_string()).status, 401);

    let graphql = |headers: &[(&str, &str)], query: &str| {
        let body = json!({"query": query}).to_string();
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        http_request(up.ui(), "POST", "/graphql", &all, &body)
    };
    let with_cookie = ("cookie", session.as_str());
    let read = graphql(&[with_cookie], "{ fleetSummary { total applied } }");
    // A POST without the CSRF header is refused even for a query: the header is what tells a
    // page of this site from another's.
    assert_eq!(read.status, 403, "{read:?}");
    let csrf = (odigos_server::http::CSRF_HEADER, "1");
    let read = graphql(&[with_cookie, csrf], "{ fleetSummary { total applied } }");
    assert_eq!(read.status, 200, "{read:?}");
    let summary: Value = serde_json::from_str(&read.body).unwrap();
    assert!(
        summary["data"]["fleetSummary"]["total"].as_u64() >= Some(2),
        "{summary:#}"
    );
    let change = graphql(
        &[with_cookie, csrf],
        "mutation { deleteResource(kind: DESTINATION, name: \"debug\") { ok } }",
    );
    assert_eq!(change.status, 200, "{change:?}");
    assert!(change.body.contains("\"ok\":true"), "{change:?}");
    assert!(!up.path("odigos.d/debug.yaml").exists());

    // Signed out, the cookie is worth nothing.
    let out = http_request(up.ui(), "DELETE", "/api/v1/session", &[with_cookie], "");
    assert_eq!(out.status, 204);
    let after = graphql(&[with_cookie, csrf], "{ generation }");
    assert_eq!(after.status, 401, "{after:?}");
}

fn files(up: &Up) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(up.path("odigos.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One destination as the API shows it, or null.
fn destination(up: &Up, name: &str) -> Value {
    let all = up.graphql(DESTINATIONS, json!({}));
    data(&all)["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_and_rollout_subscriptions_push_changes_as_they_happen() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let up = tokio::task::block_in_place(|| Up::start(&[("debug.yaml", DEBUG.to_string())]));
    let mut request = format!("ws://127.0.0.1:{}/graphql", up.ui())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    headers.insert(
        "authorization",
        format!("Bearer {}", up.token()).parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut socket, mut pushes) = socket.split();
    let mut next = async || -> Value {
        let frame = tokio::time::timeout(Duration::from_secs(10), pushes.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        serde_json::from_str(frame.to_text().unwrap()).unwrap()
    };
    let send = |value: Value| Message::Text(value.to_string().into());
    socket
        .send(send(json!({"type": "connection_init"})))
        .await
        .unwrap();
    assert_eq!(next().await["type"], "connection_ack");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription { fleetChanged { total applied applying failed } }"}});
    socket.send(send(subscribe)).await.unwrap();
    let first = next().await;
    assert_eq!(first["type"], "next", "{first:#}");
    assert!(
        first["payload"]["data"]["fleetChanged"]["total"].as_u64() >= Some(2),
        "{first:#}"
    );
    let subscribe = json!({"id": "2", "type": "subscribe", "payload": {
        "query": "subscription { rolloutsChanged { target hash failed errors { error } changes } }"}});
    socket.send(send(subscribe)).await.unwrap();
    let first = next().await;
    assert_eq!(first["id"], "2", "{first:#}");
    let targets = first["payload"]["data"]["rolloutsChanged"].to_string();
    assert!(
        targets.contains("\"gateway\"") && targets.contains("\"node\""),
        "{first:#}"
    );

    // A destination the gateway cannot build: the push says one agent failed.
    let created = tokio::task::block_in_place(|| {
        up.graphql(
            CREATE,
            json!({"kind": "DESTINATION", "name": "unwritable", "spec": {
                "type": "file", "signals": ["TRACES"],
                "data": {"FILE_PATH": "/proc/odigos-cannot-write-here/spans.jsonl"}}}),
        )
    });
    assert_eq!(data(&created)["createResource"]["ok"], true, "{created:#}");
    let started = std::time::Instant::now();
    let (mut fleet_failed, mut rollout_failed) = (false, false);
    while !(fleet_failed && rollout_failed) {
        let pushed = next().await;
        assert_eq!(pushed["type"], "next", "{pushed:#}");
        let data = &pushed["payload"]["data"];
        fleet_failed |= data["fleetChanged"]["failed"] == 1;
        if let Some(rollouts) = data["rolloutsChanged"].as_array() {
            let gateway = rollouts.iter().find(|r| r["target"] == "gateway").unwrap();
            let changes = gateway["changes"].as_array().unwrap();
            rollout_failed |= gateway["failed"] == 1
                && gateway["errors"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("odigos-cannot-write-here"))
                && changes.contains(&json!("Destination default/unwritable created"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no push of the failure: {pushed:#}"
        );
    }

    // The history keeps the gateway's config before it, applied, and now superseded.
    let history = tokio::task::block_in_place(|| {
        up.graphql(
            "{ rolloutHistory { target generation superseded applied failed changes } }",
            json!({}),
        )
    });
    let gateway: Vec<&Value> = data(&history)["rolloutHistory"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "gateway")
        .collect();
    assert!(gateway.len() >= 2, "{history:#}");
    assert_eq!(
        (&gateway[0]["superseded"], &gateway[0]["failed"]),
        (&json!(false), &json!(1)),
        "newest first: {history:#}"
    );
    let first = gateway.last().unwrap();
    assert_eq!(
        (&first["superseded"], &first["applied"]),
        (&json!(true), &json!(1)),
        "{history:#}"
    );
    assert!(
        first["changes"]
            .as_array()
            .unwrap()
            .contains(&json!("Destination default/debug created")),
        "{history:#}"
    );

    // A window of the fleet, as the fleet page asks for it: failing agents first.
    let page = tokio::task::block_in_place(|| {
        up.graphql(
            "{ agentPage(offset: 0, limit: 1) { total roles agents { role status configError } } }",
            json!({}),
        )
    });
    let page = &data(&page)["agentPage"];
    assert!(page["total"].as_u64() >= Some(2), "{page:#}");
    assert_eq!(page["agents"].as_array().unwrap().len(), 1, "{page:#}");
    assert_eq!(page["agents"][0]["role"], "gateway", "{page:#}");
    assert_eq!(page["agents"][0]["status"], "FAILED", "{page:#}");
    assert!(
        page["roles"].as_array().unwrap().contains(&json!("node")),
        "{page:#}"
    );
    let nodes = tokio::task::block_in_place(|| {
        up.graphql(
            "{ agentPage(filter: {role: \"node\", status: APPLIED}) { total agents { role } } }",
            json!({}),
        )
    });
    assert_eq!(data(&nodes)["agentPage"]["total"], 1, "{nodes:#}");
}

#[test]
fn read_only_refuses_every_change() {
    let up = Up::start_with(&[("debug.yaml", DEBUG.to_string())], &["--ui-read-only"]);
    let refused = up.graphql(
        "mutation { deleteResource(kind: DESTINATION, name: \"debug\") { ok } }",
        json!({}),
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("read-only")),
        "{refused:#}"
    );
    assert!(up.path("odigos.d/debug.yaml").exists());
    // Reading still works.
    assert!(data(&up.graphql("{ generation }", json!({})))["generation"].as_u64() >= Some(1));
}

#[test]
fn secret_fields_are_written_never_shown_and_kept_when_an_update_leaves_them_out() {
    let up = Up::start(&[("debug.yaml", DEBUG.to_string())]);
    let spec = |with_secret: bool| {
        let mut data = json!({"OTLP_HTTP_ENDPOINT": "http://127.0.0.1:5318",
            "OTLP_HTTP_BASIC_AUTH_USERNAME": "me"});
        if with_secret {
            data["OTLP_HTTP_BASIC_AUTH_PASSWORD"] = json!("s3cret-value");
        }
        json!({"type": "otlphttp", "signals": ["TRACES"], "data": data})
    };
    let created = up.graphql(
        CREATE,
        json!({"kind": "DESTINATION", "name": "backend", "spec": spec(true)}),
    );
    assert_eq!(data(&created)["createResource"]["ok"], true, "{created:#}");
    let shown = destination(&up, "default/backend");
    let keys: Vec<&str> = shown["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"OTLP_HTTP_BASIC_AUTH_USERNAME"), "{shown:#}");
    assert!(
        !keys.contains(&"OTLP_HTTP_BASIC_AUTH_PASSWORD") && !shown.to_string().contains("s3cret"),
        "a secret is never shown: {shown:#}"
    );
    let updated = up.graphql(
        "mutation($spec: JSON!) { updateResource(kind: DESTINATION, name: \"backend\", spec: $spec) { ok errors { field message } } }",
        json!({"spec": spec(false)}),
    );
    assert_eq!(data(&updated)["updateResource"]["ok"], true, "{updated:#}");
    let file = std::fs::read_to_string(up.path("odigos.d/destination-backend.yaml")).unwrap();
    assert!(
        file.contains("OTLP_HTTP_BASIC_AUTH_PASSWORD: s3cret-value"),
        "{file}"
    );
}

#[test]
fn test_destination_sends_an_empty_export_and_returns_the_exporters_own_error() {
    let up = Up::start(&[("debug.yaml", DEBUG.to_string())]);
    const TEST: &str = "mutation($name: String!, $spec: JSON!) { testDestination(name: $name, spec: $spec) { ok errors { field message } exporters { id signals error } } }";
    let otlp = |endpoint: String| {
        json!({"type": "otlp", "signals": ["TRACES", "LOGS"],
            "data": {"OTLP_GRPC_ENDPOINT": endpoint, "OTLP_GRPC_TLS_ENABLED": "false"}})
    };
    let before = files(&up);

    // A real OTLP receiver: this installation's own node collector.
    let reachable = up.graphql(
        TEST,
        json!({"name": "backend", "spec": otlp(format!("127.0.0.1:{}", up.grpc()))}),
    );
    let tested = &data(&reachable)["testDestination"];
    assert_eq!(tested["ok"], true, "{reachable:#}");
    assert_eq!(tested["exporters"][0]["id"], "otlp/default.backend");
    assert_eq!(tested["exporters"][0]["signals"], json!(["traces", "logs"]));
    assert!(tested["exporters"][0]["error"].is_null(), "{reachable:#}");

    // Nothing listens on a port this test bound and let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = up.graphql(
        TEST,
        json!({"name": "backend", "spec": otlp(format!("127.0.0.1:{closed}"))}),
    );
    let tested = &data(&refused)["testDestination"];
    assert_eq!(tested["ok"], false, "{refused:#}");
    let error = tested["exporters"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("127.0.0.1:{closed}")) && error.contains("onnection refused"),
        "the exporter's own error: {refused:#}"
    );

    // A bad value is refused at its field before anything is sent.
    let invalid = up.graphql(
        TEST,
        json!({"name": "backend", "spec": otlp("not an endpoint".into())}),
    );
    let tested = &data(&invalid)["testDestination"];
    assert_eq!(tested["ok"], false, "{invalid:#}");
    assert_eq!(tested["exporters"], json!([]));
    assert_eq!(
        tested["errors"][0]["field"], "spec.data.OTLP_GRPC_ENDPOINT",
        "{invalid:#}"
    );
    assert_eq!(files(&up), before, "a test writes nothing");
}

#[test]
fn throughput_per_source_destination_and_collector_comes_from_the_collectors_own_metrics() {
    let source = "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: checkout}\nspec:\n  workload: {kind: Process, name: checkout}\n";
    let up = Up::start(&[
        ("debug.yaml", DEBUG.to_string()),
        ("source.yaml", source.to_string()),
    ]);
    let streamer = up.stream_spans("checkout");
    let query = "{ sources { name throughput } services { service items }
        destinations { name throughput { sent failed } }
        agents { role throughput { received sent failed } }
        roles { role summary { total applied } throughput { received sent } } }";
    let mut last = Value::Null;
    // Rates need two readings of the collectors, five seconds apart.
    let flowing = wait_for(Duration::from_secs(30), || {
        last = up.graphql(query, json!({}));
        let d = data(&last);
        let rate = |v: &Value| v.as_f64().unwrap_or(0.0);
        let agent = |role: &str| {
            d["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["role"] == role)
                .map(|a| a["throughput"].clone())
                .unwrap_or(Value::Null)
        };
        rate(&d["sources"][0]["throughput"]) > 0.0
            && d["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["service"] == "checkout" && rate(&s["items"]) > 0.0)
            && rate(&d["destinations"][0]["throughput"]["sent"]) > 0.0
            && rate(&agent("node")["received"]) > 0.0
            && rate(&agent("node")["sent"]) > 0.0
            && rate(&agent("gateway")["received"]) > 0.0
            && d["roles"].as_array().unwrap().iter().any(|r| {
                r["role"] == "node"
                    && r["summary"]["applied"] == 1
                    && rate(&r["throughput"]["received"]) > 0.0
            })
    });
    let acked = streamer.acked().len();
    streamer.stop();
    assert!(flowing, "{acked} spans acknowledged; throughput: {last:#}");
    let d = data(&last);
    assert_eq!(d["sources"][0]["name"], "default/checkout");
    assert_eq!(
        d["destinations"][0]["throughput"]["failed"], 0.0,
        "{last:#}"
    );
}
