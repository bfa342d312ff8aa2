//! The default config that OpenTelemetry Collector distributions ship (OTLP in, batch, debug
//! out, health_check, pprof and zpages) runs unchanged but for its ports: every extension
//! answers, and OTLP over gRPC and HTTP goes through.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use odigos_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The example config with every port on 127.0.0.1:0, and its own metrics on a free port.
fn config() -> String {
    let text = std::fs::read_to_string(workspace().join("examples/otelcol-default.yaml")).unwrap();
    let mut text = text;
    for port in [4317, 4318, 13133, 1777, 55679] {
        let from = format!("0.0.0.0:{port}");
        assert!(text.contains(&from), "{from} not in the example");
        text = text.replace(&from, "127.0.0.1:0");
    }
    text.replace(
        "service:\n",
        "service:\n  telemetry: {metrics: {address: 127.0.0.1:0}}\n",
    )
}

/// POSTs an OTLP/JSON trace request with one span named `name`; returns the status line.
fn post_json(port: u16, name: &str) -> String {
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"{name}","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}}]}}]}}]}}"#
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/traces HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_otelcol_config_runs() {
    let config = config();
    let mut collector = tokio::task::block_in_place(|| Collector::start(&config));
    let (health, pprof, zpages, grpc, http) = tokio::task::block_in_place(|| {
        (
            collector.extension_port("health_check"),
            collector.extension_port("pprof"),
            collector.extension_port("zpages"),
            collector.port("grpc"),
            collector.port("http"),
        )
    });

    tokio::task::block_in_place(|| {
        let (status, body) = http_get_status(health, "/");
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "Server available", "{body}");

        let (status, page) = http_get_status(zpages, "/debug/pipelinez");
        let page = String::from_utf8_lossy(&page).to_string();
        assert_eq!(status, 200, "{page}");
        for pipeline in ["traces", "metrics", "logs"] {
            assert!(
                page.contains(&format!(
                    "<td>{pipeline}</td><td>otlp</td><td>batch</td><td>debug</td>"
                )),
                "{pipeline} not in {page}"
            );
        }
        let (status, page) = http_get_status(zpages, "/debug/extensionz");
        let page = String::from_utf8_lossy(&page).to_string();
        assert_eq!(status, 200, "{page}");
        assert!(page.contains(&format!("127.0.0.1:{health}")), "{page}");

        // A one-second CPU profile in pprof's protobuf: field 1 (sample_type) comes first.
        let (status, profile) = http_get_status(pprof, "/debug/pprof/profile?seconds=1");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&profile));
        assert_eq!(profile.first(), Some(&0x0a), "not a pprof profile");
        assert!(
            profile
                .windows(b"nanoseconds".len())
                .any(|w| w == b"nanoseconds"),
            "no cpu nanoseconds sample type"
        );

        assert_eq!(post_json(http, "over-http"), "HTTP/1.0 200 OK");
    });

    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "over-grpc".into(),
                    trace_id: vec![7; 16],
                    span_id: vec![8; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    client.export(request).await.unwrap();

    // The debug exporter (verbosity: detailed) prints both spans.
    let printed = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(10), || {
            let logs = collector.logs();
            logs.contains("over-http") && logs.contains("over-grpc")
        })
    });
    assert!(printed, "spans not printed:\n{}", collector.logs());

    let logs = tokio::task::block_in_place(|| collector.stop());
    assert!(logs.contains("collector stopped"), "{logs}");
}
