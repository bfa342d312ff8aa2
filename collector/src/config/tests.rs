use super::*;
use crate::processor::batch::BatchConfig;

fn env(name: &str) -> Option<String> {
    (name == "SINK").then(|| "http://127.0.0.1:9999".to_string())
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_with_env(text, "test.yaml", &env)
}

#[test]
fn reads_a_full_config_with_defaults_and_env() {
    let config = load(
        "
receivers:
  otlp:
    protocols:
      grpc:
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
  batch/fast:
    send_batch_size: 10
    timeout: 1s
exporters:
  otlp/sink:
    endpoint: ${env:SINK}
    compression: none
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch/fast]
      exporters: [otlp/sink, debug]
    logs/x:
      receivers: [otlp]
      exporters: [debug]
",
    )
    .unwrap();
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::new("otlp")];
    assert_eq!(
        otlp.protocols.grpc.as_ref().unwrap().endpoint,
        "localhost:4317"
    );
    assert_eq!(
        otlp.protocols.http.as_ref().unwrap().endpoint,
        "127.0.0.1:0"
    );
    assert_eq!(
        config.processors[&ComponentId::new("batch")],
        ProcessorConfig::Batch(BatchConfig::default())
    );
    let ProcessorConfig::Batch(fast) = &config.processors[&ComponentId::new("batch/fast")] else {
        panic!()
    };
    assert_eq!(
        (fast.send_batch_size, fast.timeout),
        (10, std::time::Duration::from_secs(1))
    );
    let ExporterConfig::Otlp(sink) = &config.exporters[&ComponentId::new("otlp/sink")] else {
        panic!()
    };
    assert_eq!(sink.endpoint, "http://127.0.0.1:9999");
    let ids: Vec<String> = config.pipelines.keys().map(|p| p.to_string()).collect();
    assert_eq!(ids, ["traces", "logs/x"]);
    assert_eq!(config.telemetry.metrics.address, "127.0.0.1:8888");
}

#[test]
fn reports_every_error_with_its_line() {
    let text = "receivers:
  otlp:
    protocols: {}
  kafka: {}
processors:
  batch:
    send_batch_size: ten
  probabilistic_sampler:
    sampling_percentage: 250
exporters:
  otlphttp:
    endpoint: ${env:NOT_SET}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, resource]
      exporters: []
";
    let errors = load(text).unwrap_err().0;
    let lines: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}", e.line.unwrap_or(0), e.message))
        .collect();
    let expect = [
        "3:enable grpc, http or both",
        "4:unknown receiver type \"kafka\" (known: otlp)",
        "7:invalid type: string \"ten\", expected usize",
        "9:250 is not between 0 and 100",
        "12:environment variable NOT_SET is not set",
        "17:resource is not defined in the top-level processors section",
        "15:a pipeline needs at least one of its exporters",
    ];
    for want in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {lines:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{lines:#?}");
    assert!(errors.iter().all(|e| e.file == "test.yaml"));
}

#[test]
fn refuses_unknown_fields_and_syntax_errors() {
    let errors =
        load("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpont: x\nservice: {}\n")
            .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains(
            "test.yaml:5: receivers.otlp.protocols.grpc.endpont: unknown field `endpont`"
        ),
        "{text}"
    );

    let errors = load("receivers: [\n").unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0].line.is_some(), "{errors}");

    let errors = load("receivers: {}\nservice:\n  pipelines: {}\nextras: 1\n").unwrap_err();
    assert!(
        errors.to_string().contains("unknown field `extras`"),
        "{errors}"
    );
}

#[test]
fn checks_signal_support() {
    let errors = load(
        "receivers: {otlp: {protocols: {grpc: }}}
processors: {probabilistic_sampler: {sampling_percentage: 10}}
exporters: {nop: }
service:
  pipelines:
    metrics: {receivers: [otlp], processors: [probabilistic_sampler], exporters: [nop]}
",
    )
    .unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("probabilistic_sampler does not support metrics"),
        "{errors}"
    );
}

#[test]
fn connectors_join_pipelines_and_are_checked() {
    let config = load(
        "
receivers:
  otlp:
    protocols:
      grpc:
connectors:
  routing:
    match_once: false
    default_pipelines: [traces/rest]
    table:
      - {condition: 'attributes[\"service.name\"] == \"cart\"', pipelines: [traces/cart]}
exporters: {debug/cart: {}, debug/rest: {}}
service:
  pipelines:
    traces/in: {receivers: [otlp], exporters: [routing]}
    traces/cart: {receivers: [routing], exporters: [debug/cart]}
    traces/rest: {receivers: [routing], exporters: [debug/rest]}
",
    )
    .unwrap();
    assert!(config.connectors.contains_key(&ComponentId::new("routing")));

    let errors = load(
        "
receivers:
  otlp:
    protocols:
      grpc:
connectors:
  forward: {}
  forward/unused: {}
  routing:
    table:
      - {statement: 'route() attributes[\"a\"]', pipelines: [traces/nowhere]}
exporters: {debug: {}}
service:
  pipelines:
    traces/a: {receivers: [otlp, forward], exporters: [forward]}
    traces/b: {receivers: [routing], exporters: [debug]}
",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "test.yaml:8: connectors.forward/unused: forward/unused must be an exporter of one pipeline and a receiver of another",
        "connectors.routing.table.0.statement: \"route() attributes[\\\"a\\\"]\" is not of the form route() where CONDITION",
        "service.pipelines.traces/a: data from traces/a comes back to it through connectors",
    ] {
        assert!(errors.contains(expected), "{expected}\nnot in:\n{errors}");
    }
}
