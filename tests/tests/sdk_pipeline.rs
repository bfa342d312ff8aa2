//! The Python OpenTelemetry SDK sends traces, metrics and logs over gRPC and over HTTP to an
//! edge collector that hashes, renames, filters and batches; it forwards over OTLP/gRPC and
//! OTLP/HTTP to a sink collector that writes OTLP JSON files. Everything is checked at the sink.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use odigos_tests::*;

fn sink_config(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
      http: {{endpoint: 127.0.0.1:0}}
exporters:
  file/traces: {{path: {d}/traces.jsonl}}
  file/metrics: {{path: {d}/metrics.jsonl}}
  file/logs: {{path: {d}/logs.jsonl}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file/traces]}}
    metrics: {{receivers: [otlp], exporters: [file/metrics]}}
    logs: {{receivers: [otlp], exporters: [file/logs]}}
"
    )
}

/// The edge collector, forwarding to the sink's gRPC and HTTP ports.
fn edge_config(sink_grpc: u16, sink_http: u16) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
processors:
  memory_limiter:
    limit_mib: 1024
  attributes/privacy:
    actions:
      - {{key: user.email, action: hash}}
      - {{key: team, action: insert, value: payments}}
      - {{key: cart.items, action: rename, new_key: cart.size}}
  resource/tier:
    attributes:
      - {{key: collector.tier, action: upsert, value: edge}}
      - {{key: deployment.environment, action: delete}}
  filter/health:
    spans:
      exclude:
        match_type: strict
        span_names: [healthcheck]
  batch:
    timeout: 100ms
exporters:
  otlp/sink:
    endpoint: http://127.0.0.1:{sink_grpc}
    compression: gzip
  otlphttp/sink:
    endpoint: http://127.0.0.1:{sink_http}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:0
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, filter/health, attributes/privacy, resource/tier, batch]
      exporters: [otlp/sink]
    metrics:
      receivers: [otlp]
      processors: [resource/tier, batch]
      exporters: [otlphttp/sink]
    logs:
      receivers: [otlp]
      processors: [attributes/privacy, batch]
      exporters: [otlp/sink]
"
    )
}

fn send(protocol: &str, endpoint: &str, service: &str) {
    let script = workspace().join("tests/python/send_telemetry.py");
    let output = Command::new(python())
        .arg(script)
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--service",
            service,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python SDK over {protocol} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256_hex(text: &str) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        });
    String::from_utf8(output.unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn sdk_telemetry_flows_through_two_collectors() {
    let out = tempfile::tempdir().unwrap();
    let mut sink = Collector::start(&sink_config(out.path()));
    let mut edge = Collector::start(&edge_config(sink.port("grpc"), sink.port("http")));
    let edge_metrics = edge.metrics_port();

    send(
        "grpc",
        &format!("http://127.0.0.1:{}", edge.port("grpc")),
        "py-grpc",
    );
    send(
        "http",
        &format!("http://127.0.0.1:{}", edge.port("http")),
        "py-http",
    );

    let traces = out.path().join("traces.jsonl");
    let metrics = out.path().join("metrics.jsonl");
    let logs = out.path().join("logs.jsonl");
    let arrived = wait_for(Duration::from_secs(15), || {
        let t = json_lines(&traces);
        let m = json_lines(&metrics);
        let l = json_lines(&logs);
        items(&t, "resourceSpans", "scopeSpans", "spans").len() >= 6
            && items(&m, "resourceMetrics", "scopeMetrics", "metrics").len() >= 2
            && items(&l, "resourceLogs", "scopeLogs", "logRecords").len() >= 4
    });
    assert!(
        arrived,
        "data missing at the sink\nedge:\n{}\nsink:\n{}",
        edge.logs(),
        sink.logs()
    );
    // Nothing more can arrive once the edge reports every item it kept as sent.
    let all_sent = wait_for(Duration::from_secs(15), || {
        let text = http_get(edge_metrics, "/metrics");
        let sent = |series: &str| prometheus_value(&text, series).unwrap_or(0.0);
        sent("otelcol_exporter_sent_spans{exporter=\"otlp/sink\"}") >= 6.0
            && sent("otelcol_exporter_sent_metric_points{exporter=\"otlphttp/sink\"}") >= 2.0
    });
    assert!(
        all_sent,
        "the edge did not send everything:\n{}",
        edge.logs()
    );

    // Traces: healthchecks filtered, attributes hashed, inserted and renamed, resource changed.
    let requests = json_lines(&traces);
    let spans = items(&requests, "resourceSpans", "scopeSpans", "spans");
    assert_eq!(
        spans.len(),
        6,
        "3 checkout spans from each sender, healthchecks dropped"
    );
    let mut services = BTreeSet::new();
    let mut emails = BTreeSet::new();
    for (resource, scope, span) in &spans {
        assert_eq!(span["name"], "checkout");
        assert_eq!(
            span["traceId"].as_str().unwrap().len(),
            32,
            "hex trace id: {span}"
        );
        assert_eq!(attribute(span, "team").as_deref(), Some("payments"));
        assert_eq!(
            attribute(span, "http.route").as_deref(),
            Some("/cart/checkout")
        );
        assert!(
            attribute(span, "cart.items").is_none(),
            "renamed away: {span}"
        );
        assert!(
            attribute(span, "cart.size").is_some(),
            "renamed to cart.size: {span}"
        );
        emails.insert(attribute(span, "user.email").unwrap());
        services.insert(attribute(resource, "service.name").unwrap());
        assert_eq!(
            attribute(resource, "collector.tier").as_deref(),
            Some("edge")
        );
        assert!(
            attribute(resource, "deployment.environment").is_none(),
            "deleted: {resource}"
        );
        assert_eq!(scope["name"], "e2e.tracer");
        assert_eq!(scope["version"], "1.2.3");
    }
    assert_eq!(
        services,
        BTreeSet::from(["py-grpc".to_string(), "py-http".to_string()])
    );
    let expected: BTreeSet<String> = (0..3)
        .map(|i| sha256_hex(&format!("user{i}@example.com")))
        .collect();
    assert_eq!(emails, expected, "user.email hashed with SHA-256");

    // Metrics: went out over OTLP/HTTP; the counter's sum survives intact.
    let requests = json_lines(&metrics);
    let metric_list = items(&requests, "resourceMetrics", "scopeMetrics", "metrics");
    assert_eq!(metric_list.len(), 2);
    for (resource, _, metric) in metric_list {
        assert_eq!(metric["name"], "orders");
        let point = &metric["sum"]["dataPoints"][0];
        let value = point["asInt"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| point["asInt"].to_string());
        assert_eq!(value, "6", "{metric}");
        assert_eq!(attribute(point, "payment").as_deref(), Some("card"));
        assert_eq!(
            attribute(resource, "collector.tier").as_deref(),
            Some("edge")
        );
    }

    // Logs: bodies, severities and attributes as sent.
    let requests = json_lines(&logs);
    let records = items(&requests, "resourceLogs", "scopeLogs", "logRecords");
    assert_eq!(records.len(), 4);
    let mut order_ids = Vec::new();
    for (resource, _, record) in records {
        assert_eq!(
            any_value_text(&record["body"]).as_deref(),
            Some("order placed")
        );
        assert_eq!(record["severityText"], "WARN");
        assert_eq!(attribute(record, "team").as_deref(), Some("payments"));
        order_ids.push(attribute(record, "order.id").unwrap());
        assert!(
            attribute(resource, "service.name")
                .unwrap()
                .starts_with("py-")
        );
    }
    order_ids.sort();
    assert_eq!(order_ids, ["100", "100", "101", "101"]);

    // The edge collector's own metrics account for everything.
    let text = http_get(edge_metrics, "/metrics");
    let accepted = |transport: &str| {
        prometheus_value(
            &text,
            &format!(
                "otelcol_receiver_accepted_spans{{receiver=\"otlp\",transport=\"{transport}\"}}"
            ),
        )
    };
    assert_eq!(accepted("grpc"), Some(5.0), "{text}");
    assert_eq!(accepted("http"), Some(5.0), "{text}");
    assert_eq!(
        prometheus_value(
            &text,
            "otelcol_processor_filter_dropped_items{processor=\"filter/health\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        prometheus_value(&text, "otelcol_exporter_sent_spans{exporter=\"otlp/sink\"}"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        prometheus_value(
            &text,
            "otelcol_exporter_sent_metric_points{exporter=\"otlphttp/sink\"}"
        ),
        Some(2.0)
    );

    let edge_log = edge.stop();
    assert!(edge_log.contains("collector stopped"), "{edge_log}");
    sink.stop();
}

#[test]
fn validate_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        keepalives: {}
processors:
  batch:
    timeout: soon
exporters:
  zipkin: {}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [zipkin, otlp]
",
    )
    .unwrap();
    let output = Command::new(odigos_binary())
        .args(["collector", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let file = path.display().to_string();
    for want in [
        format!("{file}:6: receivers.otlp.protocols.grpc.keepalives: unknown field `keepalives`"),
        format!("{file}:9: processors.batch.timeout: invalid duration \"soon\""),
        format!("{file}:11: exporters.zipkin: unknown exporter type \"zipkin\""),
        format!("{file}:17: service.pipelines.traces.exporters.1: otlp is not defined"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    assert!(stderr.starts_with("4 configuration errors:"), "{stderr}");

    let output = Command::new(odigos_binary())
        .args(["collector", "validate"])
        .arg(workspace().join("examples/collector.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_port_in_use_is_reported_and_nothing_starts() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{port}}}}}}}}}
exporters: {{nop: {{}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [nop]}}}}
"
        ),
    )
    .unwrap();
    let output = Command::new(odigos_binary())
        .args(["collector", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "receivers.otlp: grpc: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
