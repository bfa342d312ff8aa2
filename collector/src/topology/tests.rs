use std::path::Path;

use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// A collector running `text`.
async fn start(text: &str) -> Topology {
    let config = Config::from_yaml(text, "test.yaml").unwrap();
    Topology::start(&config).await.unwrap()
}

/// A connection to the `otlp` receiver's HTTP server.
async fn connect(topology: &Topology) -> TcpStream {
    TcpStream::connect(("127.0.0.1", http_port(topology)))
        .await
        .unwrap()
}

/// The port the `otlp` receiver's HTTP server listens on.
fn http_port(topology: &Topology) -> u16 {
    let endpoints = &topology.endpoints()["otlp"];
    let http = endpoints
        .iter()
        .find_map(|e| e.strip_prefix("http "))
        .unwrap();
    http.parse::<std::net::SocketAddr>().unwrap().port()
}

fn request(name: &str) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: name.into(),
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One POST over a kept-alive HTTP/1.1 connection; returns the status code.
async fn post(stream: &mut TcpStream, body: &[u8]) -> u16 {
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: collector\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed by the collector"
        );
        response.push(byte[0]);
    }
    let head = String::from_utf8(response).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

/// Span names and `tag` attributes written by a file exporter so far.
fn written(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in json["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    let tag = span["attributes"]
                        .as_array()
                        .and_then(|a| a.iter().find(|kv| kv["key"] == "tag"))
                        .map(|kv| kv["value"]["stringValue"].as_str().unwrap().to_string())
                        .unwrap_or_default();
                    out.push((span["name"].as_str().unwrap().to_string(), tag));
                }
            }
        }
    }
    out
}

async fn eventually(path: &Path, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for _ in 0..200 {
        if written(path) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(written(path), expected, "{}", path.display());
}

struct Setup {
    /// The OTLP/HTTP receiver's endpoint.
    http: String,
    tag: &'static str,
    exporters: &'static [&'static str],
    dir: std::path::PathBuf,
}

impl Setup {
    fn config(&self) -> Config {
        let dir = self.dir.display();
        let text = format!(
            "
receivers:
  otlp:
    protocols:
      http: {{endpoint: {http}}}
processors:
  attributes/tag:
    actions: [{{key: tag, action: upsert, value: {tag}}}]
  batch: {{timeout: 5ms}}
exporters:
  file/a: {{path: {dir}/a.jsonl}}
  file/b: {{path: {dir}/b.jsonl}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [attributes/tag, batch]
      exporters: [{exporters}]
",
            http = self.http,
            tag = self.tag,
            exporters = self.exporters.join(", "),
        );
        Config::from_yaml(&text, "test.yaml").unwrap()
    }
}

#[tokio::test]
async fn apply_changes_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let mut setup = Setup {
        http: "127.0.0.1:0".into(),
        tag: "one",
        exporters: &["file/a"],
        dir: dir.path().into(),
    };
    let mut topology = Topology::start(&setup.config()).await.unwrap();
    let port = http_port(&topology);
    let mut connection = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(post(&mut connection, &request("first")).await, 200);
    eventually(&a, &[("first", "one")]).await;

    let applied = topology.apply(setup.config()).await.unwrap();
    assert!(applied.is_noop(), "{applied}");

    // An attribute rule changes in place: nothing is rebuilt, the connection stays open.
    setup.tag = "two";
    let applied = topology.apply(setup.config()).await.unwrap();
    assert_eq!(
        applied.updated,
        ["pipelines.traces.processors.attributes/tag"],
        "{applied}"
    );
    assert!(
        applied.built.is_empty() && applied.retired.is_empty(),
        "{applied}"
    );
    assert_eq!(post(&mut connection, &request("second")).await, 200);
    eventually(&a, &[("first", "one"), ("second", "two")]).await;

    // Adding an exporter rebuilds the pipeline; the receiver keeps its socket and connections.
    setup.exporters = &["file/a", "file/b"];
    let applied = topology.apply(setup.config()).await.unwrap();
    assert_eq!(applied.built, ["pipelines.traces"], "{applied}");
    assert_eq!(applied.retired, ["pipelines.traces"], "{applied}");
    assert_eq!(post(&mut connection, &request("third")).await, 200);
    eventually(&a, &[("first", "one"), ("second", "two"), ("third", "two")]).await;
    eventually(&b, &[("third", "two")]).await;

    // A config that cannot start is refused whole; the running one keeps serving.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = Setup {
        http: busy.local_addr().unwrap().to_string(),
        tag: "three",
        exporters: &["file/b"],
        dir: dir.path().into(),
    };
    let error = topology.apply(refused.config()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("receivers.otlp: http: cannot listen on"),
        "{error}"
    );
    assert_eq!(post(&mut connection, &request("fourth")).await, 200);
    eventually(
        &a,
        &[
            ("first", "one"),
            ("second", "two"),
            ("third", "two"),
            ("fourth", "two"),
        ],
    )
    .await;
    assert_eq!(topology.config(), &setup.config());

    // A new endpoint opens before the old one closes: `:00` is another spelling of port 0, so
    // the receiver moves to a new port of its choosing.
    let old_port = port;
    setup.http = "127.0.0.1:00".into();
    let applied = topology.apply(setup.config()).await.unwrap();
    assert_eq!(applied.updated, ["receivers.otlp"], "{applied}");
    let mut moved = connect(&topology).await;
    assert_eq!(post(&mut moved, &request("fifth")).await, 200);
    eventually(&b, &[("third", "two"), ("fourth", "two"), ("fifth", "two")]).await;
    drop(connection);
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", old_port)).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        TcpStream::connect(("127.0.0.1", old_port)).await.is_err(),
        "old endpoint still open"
    );

    topology.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn health_reports_a_failing_exporter() {
    // Bound, never listening: connections to it are refused.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let dead = refusing.local_addr().unwrap().port();
    let text = format!(
        "
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}}}
exporters:
  otlp: {{endpoint: http://127.0.0.1:{dead}, timeout: 1s, retry_on_failure: {{enabled: false}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}
"
    );
    let topology = start(&text).await;
    assert!(
        topology.health()["exporters.otlp"].healthy,
        "healthy until it fails"
    );
    // Accepted into the exporter's queue at once; the delivery fails afterwards.
    let mut connection = connect(&topology).await;
    assert_eq!(post(&mut connection, &request("lost")).await, 200);
    let failed = || {
        let labels = [("exporter", "otlp")];
        topology
            .registry()
            .value("otelcol_exporter_send_failed_spans", &labels)
    };
    while failed() != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = topology.health();
    assert!(health["receivers.otlp"].healthy);
    let exporter = &health["exporters.otlp"];
    assert!(!exporter.healthy);
    assert!(
        exporter
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connect"),
        "{exporter:?}"
    );
    topology.shutdown(Duration::from_secs(1)).await;
}

/// Requests crafted to slip past validation into a processor that decodes: each is refused
/// with 400 and the collector keeps serving.
#[tokio::test]
async fn crafted_requests_are_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        http: "127.0.0.1:0".into(),
        tag: "t",
        exporters: &["file/a"],
        dir: dir.path().into(),
    };
    let topology = Topology::start(&setup.config()).await.unwrap();
    let mut connection = connect(&topology).await;
    // An unknown field whose key is past 32 bits; cut to 32 bits it would be field 100.
    let oversized_key = [0xa0, 0x86, 0x80, 0x80, 0x80, 0x01, 0x00].to_vec();
    let mut after_a_request = request("x");
    after_a_request.extend_from_slice(&oversized_key);
    for body in [oversized_key, after_a_request] {
        assert_eq!(post(&mut connection, &body).await, 400);
    }
    assert_eq!(post(&mut connection, &request("after")).await, 200);
    eventually(&dir.path().join("a.jsonl"), &[("after", "t")]).await;
    topology.shutdown(Duration::from_secs(1)).await;
}

/// A request with one span per service, each under its own resource.
fn request_from(services: &[&str]) -> Vec<u8> {
    use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    use odigos_proto::otlp::resource::v1::Resource;
    let resource = |service: &str| Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: services
            .iter()
            .map(|service| ResourceSpans {
                resource: Some(resource(service)),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: format!("{service}-span"),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_routing_connector_sends_each_resource_where_its_routes_say() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        r#"
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
processors:
  attributes/tag: {{actions: [{{key: tag, action: upsert, value: shared}}]}}
connectors:
  routing:
    match_once: false
    default_pipelines: [traces/rest]
    table:
      - condition: attributes["service.name"] == "cart"
        pipelines: [traces/cart]
      - condition: IsMatch(attributes["service.name"], "^ca")
        pipelines: [traces/all]
exporters:
  file/cart: {{path: {d}/cart.jsonl}}
  file/rest: {{path: {d}/rest.jsonl}}
  file/all: {{path: {d}/c.jsonl}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/in: {{receivers: [otlp], processors: [attributes/tag], exporters: [routing]}}
    traces/cart: {{receivers: [routing], exporters: [file/cart]}}
    traces/rest: {{receivers: [routing], exporters: [file/rest]}}
    traces/all: {{receivers: [routing], exporters: [file/all]}}
"#
    );
    let topology = start(&text).await;
    let mut connection = connect(&topology).await;
    let body = request_from(&["cart", "shop", "cart"]);
    assert_eq!(post(&mut connection, &body).await, 200);
    // A resource takes every route it matches; one that matches none takes the default.
    let cart = [("cart-span", "shared"), ("cart-span", "shared")];
    eventually(&dir.path().join("cart.jsonl"), &cart).await;
    eventually(&dir.path().join("c.jsonl"), &cart).await;
    eventually(&dir.path().join("rest.jsonl"), &[("shop-span", "shared")]).await;
    topology.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn otlp_grpc_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        r#"
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}
  otlp/back:
    protocols: {{grpc: {{endpoint: {d}/back.sock, transport: unix}}}}
exporters:
  otlp/hop: {{endpoint: "unix://{d}/back.sock", compression: none}}
  file/a: {{path: {d}/a.jsonl}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces/front: {{receivers: [otlp], exporters: [otlp/hop]}}
    traces/back: {{receivers: [otlp/back], exporters: [file/a]}}
"#
    );
    let topology = start(&text).await;
    assert_eq!(
        topology.endpoints()["otlp/back"],
        [format!("grpc unix:{d}/back.sock")]
    );
    let mut connection = connect(&topology).await;
    assert_eq!(post(&mut connection, &request("hop")).await, 200);
    eventually(&dir.path().join("a.jsonl"), &[("hop", "")]).await;
    topology.shutdown(Duration::from_secs(1)).await;
    assert!(
        !dir.path().join("back.sock").exists(),
        "the socket is removed on stop"
    );
}
