use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::opamp::*;
use prost::Message;
use tokio_tungstenite::tungstenite::Message as Frame;

use super::*;
use std::time::Duration;

use crate::http::{Options, Server};

const CAPABILITIES: u64 = 0x2007;

fn hello(uid: [u8; 16], seq: u64, role: &str) -> AgentToServer {
    let kv = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    };
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: CAPABILITIES,
        agent_description: Some(AgentDescription {
            identifying_attributes: vec![kv("service.name", "test-agent")],
            non_identifying_attributes: vec![kv("odigos.role", role)],
        }),
        ..Default::default()
    }
}

fn heartbeat(uid: [u8; 16], seq: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: seq,
        capabilities: CAPABILITIES,
        ..Default::default()
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Reply {
    fn message(&self) -> ServerToAgent {
        ServerToAgent::decode(self.body.clone()).expect("a ServerToAgent")
    }
}

async fn post(server: &Server, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::post(format!("http://{}{PATH}", server.address));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: response.into_body().collect().await.unwrap().to_bytes(),
    }
}

async fn send(server: &Server, message: &AgentToServer) -> ServerToAgent {
    let reply = post(
        server,
        &[("content-type", "application/x-protobuf")],
        message.encode_to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/x-protobuf", "exactly");
    reply.message()
}

fn yaml(text: &str) -> BTreeMap<String, (Vec<u8>, String)> {
    [(
        "collector.yaml".to_string(),
        (text.as_bytes().to_vec(), "text/yaml".to_string()),
    )]
    .into()
}

#[tokio::test]
async fn http_agents_get_their_config_on_the_next_poll() {
    let server = Server::start("127.0.0.1:0", Options::default())
        .await
        .unwrap();
    let uid = [1u8; 16];
    let first = send(&server, &hello(uid, 0, "gateway")).await;
    assert_eq!(first.instance_uid, uid);
    assert_eq!(first.capabilities & 0x7, 0x7);
    assert_eq!(first.flags, 0);
    assert!(first.remote_config.is_none());
    let agents = server.fleet.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].identifying["service.name"], "test-agent");
    assert_eq!(agents[0].config, ConfigStatus::Unassigned);
    assert_eq!(agents[0].connected, Some("http"));

    // A config for gateways reaches this agent, and only once it reports on it does it stop.
    server.fleet.set_config(Selector::All, yaml("all: true"));
    let hash = server.fleet.set_config(
        Selector::Attribute {
            key: "odigos.role".into(),
            value: "gateway".into(),
        },
        yaml("role: gateway"),
    );
    let offered = send(&server, &heartbeat(uid, 1))
        .await
        .remote_config
        .expect("an offer");
    assert_eq!(fleet::hex(&offered.config_hash), hash);
    assert_eq!(
        offered.config.unwrap().config_map["collector.yaml"].body,
        b"role: gateway"
    );
    let view = server.fleet.agent(&fleet::hex(&uid)).unwrap();
    assert_eq!(view.config, ConfigStatus::Pending { hash: hash.clone() });

    let mut status = heartbeat(uid, 2);
    status.remote_config_status = Some(RemoteConfigStatus {
        last_remote_config_hash: offered.config_hash.clone(),
        status: RemoteConfigStatuses::Applied as i32,
        error_message: String::new(),
    });
    assert!(send(&server, &status).await.remote_config.is_none());
    assert_eq!(
        server.fleet.agent(&fleet::hex(&uid)).unwrap().config,
        ConfigStatus::Applied { hash }
    );
    assert!(
        send(&server, &heartbeat(uid, 3))
            .await
            .remote_config
            .is_none(),
        "nothing new to send"
    );

    // A failed apply is shown with its message.
    let second = server
        .fleet
        .set_config(Selector::Agent(uid), yaml("broken: ["));
    let offered = send(&server, &heartbeat(uid, 4))
        .await
        .remote_config
        .unwrap();
    let mut failed = heartbeat(uid, 5);
    failed.remote_config_status = Some(RemoteConfigStatus {
        last_remote_config_hash: offered.config_hash,
        status: RemoteConfigStatuses::Failed as i32,
        error_message: "collector.yaml:1: bad".into(),
    });
    send(&server, &failed).await;
    let history = server.fleet.agent(&fleet::hex(&uid)).unwrap().history;
    let statuses: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|e| (e.status, e.error.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [("applied", None), ("failed", Some("collector.yaml:1: bad"))]
    );
    assert_eq!(history[1].hash, second);
    assert_eq!(
        server.fleet.agent(&fleet::hex(&uid)).unwrap().config,
        ConfigStatus::Failed {
            hash: second,
            error: "collector.yaml:1: bad".into()
        }
    );
    server.stop().await;
}

/// What odiglet relays for its node's SDKs may speak for SDK agents and no other: not by a
/// description of another role, nor by the uid of a gateway that is there.
#[tokio::test]
async fn relayed_messages_speak_for_sdk_agents_only() {
    let server = Server::start("127.0.0.1:0", Options::default())
        .await
        .unwrap();
    let relayed = |message: &AgentToServer| {
        post(
            &server,
            &[
                ("content-type", "application/x-protobuf"),
                (SDK_RELAY_HEADER, "node-1"),
            ],
            message.encode_to_vec(),
        )
    };
    let gateway = [7u8; 16];
    send(&server, &hello(gateway, 0, "gateway")).await;
    server.fleet.set_config(
        Selector::Attribute {
            key: "odigos.role".into(),
            value: "gateway".into(),
        },
        yaml("the gateway's: secret"),
    );

    for message in [hello([8u8; 16], 0, "gateway"), heartbeat(gateway, 1)] {
        let refused = relayed(&message).await;
        assert_eq!(refused.status, 403);
        let error = refused.message().error_response.expect("an error response");
        assert!(
            error.error_message.contains("SDK agents only")
                && error.error_message.contains("gateway"),
            "{}",
            error.error_message
        );
        assert!(refused.message().remote_config.is_none());
    }
    assert_eq!(server.fleet.agents().len(), 1, "no agent was added");

    let sdk = relayed(&hello([9u8; 16], 0, "sdk")).await;
    assert_eq!(sdk.status, 200);
    assert!(sdk.message().error_response.is_none());
    let heartbeat = relayed(&heartbeat([9u8; 16], 1)).await;
    assert_eq!(heartbeat.status, 200, "the SDK agent it relayed before");
}

#[tokio::test]
async fn lost_state_asks_for_a_full_report() {
    let server = Server::start("127.0.0.1:0", Options::default())
        .await
        .unwrap();
    // Unknown to the server and not describing itself (say, after a server restart).
    let reply = send(&server, &heartbeat([2u8; 16], 7)).await;
    assert_eq!(reply.flags & ServerToAgentFlags::ReportFullState as u64, 1);
    let reply = send(&server, &hello([2u8; 16], 8, "node")).await;
    assert_eq!(reply.flags, 0);
    // A gap in sequence numbers: a message went missing.
    let reply = send(&server, &heartbeat([2u8; 16], 10)).await;
    assert_eq!(reply.flags & ServerToAgentFlags::ReportFullState as u64, 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let options = Options {
        token: Some("s3cret".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options).await.unwrap();
    let auth = ("authorization", "Bearer s3cret");
    let protobuf = ("content-type", "application/x-protobuf");
    let body = hello([3u8; 16], 0, "node").encode_to_vec();

    assert_eq!(post(&server, &[protobuf], body.clone()).await.status, 401);
    assert_eq!(
        post(
            &server,
            &[protobuf, ("authorization", "Bearer nope")],
            body.clone()
        )
        .await
        .status,
        401
    );
    assert_eq!(
        post(
            &server,
            &[auth, ("content-type", "application/json")],
            body.clone()
        )
        .await
        .status,
        415
    );

    let reply = post(&server, &[auth, protobuf], vec![0x0a, 0x05, 1]).await;
    assert_eq!(reply.status, 400);
    let error = reply.message().error_response.unwrap();
    assert_eq!(error.r#type, ServerErrorResponseType::BadRequest as i32);
    assert!(
        error.error_message.contains("invalid AgentToServer"),
        "{}",
        error.error_message
    );

    let short = AgentToServer {
        instance_uid: vec![1, 2, 3],
        ..Default::default()
    };
    let reply = post(&server, &[auth, protobuf], short.encode_to_vec()).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .message()
            .error_response
            .unwrap()
            .error_message
            .contains("16 bytes, got 3")
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let reply = post(
        &server,
        &[auth, protobuf, ("content-encoding", "gzip")],
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.message().instance_uid, [3u8; 16]);

    let huge = vec![0u8; MAX_MESSAGE_BYTES + 10];
    assert_eq!(post(&server, &[auth, protobuf], huge).await.status, 413);
    assert_eq!(server.fleet.agents().len(), 1, "only the one valid agent");
    server.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}{PATH}", server.address))
        .await
        .unwrap();
    socket
}

async fn exchange(socket: &mut Socket, message: &AgentToServer) -> ServerToAgent {
    socket
        .send(Frame::Binary(ws_frame(message).into()))
        .await
        .unwrap();
    receive(socket).await
}

async fn receive(socket: &mut Socket) -> ServerToAgent {
    let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Frame::Binary(frame) = frame else {
        panic!("unexpected {frame:?}")
    };
    ServerToAgent::decode(ws_payload(&frame).unwrap()).unwrap()
}

#[tokio::test]
async fn websocket_agents_get_config_pushed() {
    let server = Server::start("127.0.0.1:0", Options::default())
        .await
        .unwrap();
    let uid = [4u8; 16];
    let mut socket = connect(&server).await;
    let reply = exchange(&mut socket, &hello(uid, 0, "node")).await;
    assert_eq!(reply.instance_uid, uid);
    assert_eq!(server.fleet.agents()[0].connected, Some("websocket"));

    // Pushed without the agent asking.
    let hash = server.fleet.set_config(Selector::All, yaml("pushed: true"));
    let pushed = receive(&mut socket).await;
    assert_eq!(pushed.instance_uid, uid);
    assert_eq!(fleet::hex(&pushed.remote_config.unwrap().config_hash), hash);

    // A second live connection claiming the same uid is offered a new one.
    let mut twin = connect(&server).await;
    let reply = exchange(&mut twin, &hello(uid, 0, "node")).await;
    let fresh = reply
        .agent_identification
        .expect("a new uid")
        .new_instance_uid;
    assert_eq!(fresh.len(), 16);
    assert_ne!(fresh, uid);
    assert_eq!(fresh[6] >> 4, 7, "a UUIDv7");

    // A frame whose header byte is not 0 closes that connection only.
    twin.send(Frame::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), twin.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Frame::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1002),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let reply = exchange(&mut socket, &heartbeat(uid, 1)).await;
    assert!(
        reply.remote_config.is_some(),
        "not yet reported on, so offered again"
    );

    drop(socket);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.fleet.agents()[0].connected,
        None,
        "closing the socket disconnects"
    );
    server.stop().await;
}

async fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    call(server.address, method, path, token, body).await
}

async fn call(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::builder()
        .method(method)
        .header("content-type", "application/json")
        .uri(format!("http://{address}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_api_lists_agents_and_assigns_configs() {
    let options = Options {
        token: Some("k".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options).await.unwrap();
    let token = ("authorization", "Bearer k");
    let uid = [5u8; 16];
    let hello_body = hello(uid, 0, "node").encode_to_vec();
    assert_eq!(
        post(
            &server,
            &[token, ("content-type", "application/x-protobuf")],
            hello_body
        )
        .await
        .status,
        200
    );

    assert_eq!(api(&server, "GET", "/api/v1/agents", None, "").await.0, 401);
    let (status, agents) = api(&server, "GET", "/api/v1/agents", Some("k"), "").await;
    assert_eq!(status, 200);
    assert_eq!(agents[0]["uid"], fleet::hex(&uid));
    assert_eq!(agents[0]["non_identifying"]["odigos.role"], "node");
    assert_eq!(agents[0]["config"]["status"], "unassigned");

    let (status, reply) = api(
        &server,
        "PUT",
        "/api/v1/config?role=node",
        Some("k"),
        "receivers: {}",
    )
    .await;
    assert_eq!(status, 200);
    let hash = reply["hash"].as_str().unwrap().to_string();
    let (_, agents) = api(&server, "GET", "/api/v1/agents", Some("k"), "").await;
    assert_eq!(
        agents[0]["config"],
        serde_json::json!({"status": "pending", "hash": hash})
    );
    assert_eq!(
        api(&server, "PUT", "/api/v1/config?uid=xyz", Some("k"), "")
            .await
            .0,
        400
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_agents_connect_freely_but_the_ui_still_asks() {
    let options = Options {
        ui: Some("127.0.0.1:0".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options).await.unwrap();
    assert_eq!(api(&server, "GET", "/api/v1/agents", None, "").await.0, 200);
    let ui = server.ui_address.unwrap();
    let query = r#"{"query": "{ fleetSummary { total } }"}"#;
    assert_eq!(call(ui, "POST", "/graphql", None, query).await.0, 401);
    assert_eq!(call(ui, "GET", "/api/v1/agents", None, "").await.0, 401);
    // The printed link signs in, once.
    let link = server.login_link().unwrap();
    let code = link.split_once("#login=").unwrap().1;
    let credentials = format!(r#"{{"code": "{code}"}}"#);
    assert_eq!(
        call(ui, "POST", "/api/v1/session", None, &credentials)
            .await
            .0,
        204
    );
    assert_eq!(
        call(ui, "POST", "/api/v1/session", None, &credentials)
            .await
            .0,
        401
    );
    server.stop().await;
}

/// The desired config of agent `uid`, as its view tells it.
fn desired(fleet: &Fleet, uid: [u8; 16]) -> ConfigStatus {
    fleet.agent(&fleet::hex(&uid)).unwrap().config
}

#[tokio::test]
async fn the_control_planes_configs_and_those_assigned_by_hand_keep_their_own_places() {
    let fleet = Fleet::new(std::time::Duration::from_secs(90));
    let (gateway, node) = ([1u8; 16], [2u8; 16]);
    for (uid, role) in [(gateway, "gateway"), (node, "node")] {
        fleet.handle(hello(uid, 0, role), fleet::Transport::Http);
    }
    let role = |value: &str| Selector::Attribute {
        key: "odigos.role".into(),
        value: value.into(),
    };
    let hashes = fleet.assign(vec![
        (role("gateway"), yaml("plane: gateway")),
        (role("node"), yaml("plane: node")),
    ]);
    let pending = |hash: &String| ConfigStatus::Pending { hash: hash.clone() };
    assert_eq!(desired(&fleet, gateway), pending(&hashes[0]));
    assert_eq!(desired(&fleet, node), pending(&hashes[1]));

    // By hand: over the plane's, for the agents it names only.
    let manual = fleet.set_config(role("node"), yaml("manual: node"));
    assert_eq!(desired(&fleet, node), pending(&manual));
    assert_eq!(desired(&fleet, gateway), pending(&hashes[0]));

    // The plane assigning again does not wipe it; withdrawing it brings the plane's back.
    let again = fleet.assign(vec![(role("node"), yaml("plane: node v2"))]);
    assert_eq!(desired(&fleet, node), pending(&manual));
    assert_eq!(
        desired(&fleet, gateway),
        ConfigStatus::Unassigned,
        "what the plane no longer assigns is gone"
    );
    fleet.unset_config(&role("node"));
    assert_eq!(desired(&fleet, node), pending(&again[0]));

    // Of two attributes an agent has, the latest assignment wins; its uid wins over both.
    let by_name = Selector::Attribute {
        key: "service.name".into(),
        value: "test-agent".into(),
    };
    let by_name_hash = fleet.set_config(by_name, yaml("by name"));
    assert_eq!(desired(&fleet, gateway), pending(&by_name_hash));
    let later = fleet.set_config(role("gateway"), yaml("later"));
    assert_eq!(desired(&fleet, gateway), pending(&later));
    let own = fleet.set_config(Selector::Agent(gateway), yaml("own"));
    assert_eq!(desired(&fleet, gateway), pending(&own));
}

#[tokio::test]
async fn changes_move_on_arrivals_and_reports_not_on_heartbeats() {
    let fleet = Fleet::new(std::time::Duration::from_secs(90));
    let mut changes = fleet.changes();
    let uid = [3u8; 16];
    fleet.handle(hello(uid, 0, "node"), fleet::Transport::Http);
    assert!(changes.has_changed().unwrap(), "an arrival is a change");
    changes.mark_unchanged();
    fleet.handle(heartbeat(uid, 1), fleet::Transport::Http);
    assert!(!changes.has_changed().unwrap(), "a heartbeat is not");
    let mut report = heartbeat(uid, 2);
    report.remote_config_status = Some(RemoteConfigStatus {
        last_remote_config_hash: vec![1],
        status: RemoteConfigStatuses::Failed as i32,
        error_message: "bad".into(),
    });
    fleet.handle(report, fleet::Transport::Http);
    assert!(changes.has_changed().unwrap(), "a report is");
}

#[test]
fn metrics_are_read_at_the_pods_address_when_a_collector_listens_everywhere() {
    use super::metrics_address;
    let at = |status: &str, pod_ip: Option<&str>| metrics_address(status, pod_ip);
    assert_eq!(
        at("listening 0.0.0.0:8888", Some("10.1.2.3")).as_deref(),
        Some("10.1.2.3:8888")
    );
    assert_eq!(
        at("listening [::]:8888", Some("fd00::7")).as_deref(),
        Some("[fd00::7]:8888")
    );
    assert_eq!(
        at("listening 0.0.0.0:8888", None).as_deref(),
        Some("127.0.0.1:8888")
    );
    assert_eq!(
        at("listening 127.0.0.1:9", Some("10.1.2.3")).as_deref(),
        Some("127.0.0.1:9")
    );
    assert_eq!(at("failing: 3 failed attempts", None), None);
}
