use std::path::Path;

use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    http: u16,
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
      http: {{endpoint: 127.0.0.1:{http}}}
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
        http: free_port(),
        tag: "one",
        exporters: &["file/a"],
        dir: dir.path().into(),
    };
    let mut topology = Topology::start(&setup.config()).await.unwrap();
    let mut connection = TcpStream::connect(("127.0.0.1", setup.http)).await.unwrap();
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
        http: busy.local_addr().unwrap().port(),
        tag: "three",
        exporters: &["file/b"],
        dir: dir.path().into(),
    };
    let error = topology.apply(refused.config()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("receivers.otlp: cannot listen on"),
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

    // A new endpoint opens before the old one closes.
    let old_port = setup.http;
    setup.http = free_port();
    let applied = topology.apply(setup.config()).await.unwrap();
    assert_eq!(applied.updated, ["receivers.otlp"], "{applied}");
    let mut moved = TcpStream::connect(("127.0.0.1", setup.http)).await.unwrap();
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
    let (http, dead) = (free_port(), free_port());
    let text = format!(
        "
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:{http}}}}}}}}}
exporters:
  otlp: {{endpoint: http://127.0.0.1:{dead}, timeout: 1s, retry_on_failure: {{enabled: false}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}
"
    );
    let topology = Topology::start(&Config::from_yaml(&text, "test.yaml").unwrap())
        .await
        .unwrap();
    assert!(
        topology.health()["exporters.otlp"].healthy,
        "healthy until it fails"
    );
    let mut connection = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
    assert_eq!(
        post(&mut connection, &request("lost")).await,
        500,
        "refused, not acknowledged"
    );
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
