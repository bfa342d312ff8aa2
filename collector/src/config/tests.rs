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
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::new("otlp")] else {
        panic!("an otlp receiver")
    };
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
        "4:unknown receiver type \"kafka\" (known: filelog, hostmetrics, kubeletstats, otlp)",
        "7:invalid type: string \"ten\", expected usize",
        "9:250 is not between 0 and 100",
        "12:endpoint is empty",
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

#[test]
fn lists_every_unknown_key_of_every_section() {
    let text = "receivers:
  otlp:
    protocols:
      grpc:
        endpont: 127.0.0.1:0
        max_streams: 10
      http:
        cors: {allowed_origins: ['*'], allow_credentials: true}
processors:
  batch:
    send_batch_size: ten
    timeout: soon
    flush: 1s
  attributes:
    actions:
      - {key: a, action: upsert, value: 1, colour: red}
      - {key: b, action: explode}
      - {key: c, action: delete}
exporters:
  debug:
    verbosity: detailed
    sampling: 3
service:
  extensions: []
  telemetry:
    logs: {level: info, colour: true}
    metrics: {level: loud}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch, attributes]
      exporters: [debug]
      extra: 1
  extra: 2
other: 3
";
    let errors = load(text).unwrap_err();
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| format!("{}:{}: {}", e.line.unwrap_or(0), e.path, e.message))
        .collect();
    let want = [
        "5:receivers.otlp.protocols.grpc.endpont: unknown field `endpont`",
        "6:receivers.otlp.protocols.grpc.max_streams: unknown field `max_streams`",
        "8:receivers.otlp.protocols.http.cors.allow_credentials: unknown field `allow_credentials`",
        "11:processors.batch.send_batch_size: invalid type: string \"ten\"",
        "12:processors.batch.timeout: invalid duration \"soon\"",
        "13:processors.batch.flush: unknown field `flush`",
        "16:processors.attributes.actions.0.colour: unknown field `colour`",
        "17:processors.attributes.actions.1.action: unknown variant `explode`",
        "22:exporters.debug.sampling: unknown field `sampling`",
        "26:service.telemetry.logs.colour: unknown field `colour`",
        "27:service.telemetry.metrics.level: unknown level \"loud\"",
        "33:service.pipelines.traces.extra: unknown field `extra`",
        "34:service.extra: unknown field `extra`",
        "35:other: unknown field `other`",
    ];
    for want in want {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
}

#[test]
fn unset_variables_are_empty_with_a_warning() {
    let config = load(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}
exporters: {debug: }
service:
  telemetry:
    resource: {host.name: '${HOSTNAME}', zone: '${env:ZONE}-a', twice: '${HOSTNAME}'}
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
",
    )
    .unwrap();
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("environment variable HOSTNAME is not set"),
        "{:?}",
        config.warnings
    );
    assert!(config.warnings[1].contains("ZONE"), "{:?}", config.warnings);
    let resource = config.telemetry.resource_attributes();
    assert!(resource.contains(&("host.name".into(), String::new())));
    assert!(resource.contains(&("zone".into(), "-a".into())));
}

#[test]
fn reads_service_telemetry_as_otelcol_writes_it() {
    let config = load(
        "receivers: {otlp: {protocols: {grpc: }}}
exporters: {debug: }
service:
  telemetry:
    logs: {level: debug, encoding: json}
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus: {host: 0.0.0.0, port: 9999}
    resource:
      service.name: gateway
      replicas: 3
      dropped: null
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
",
    )
    .unwrap();
    let telemetry = &config.telemetry;
    assert_eq!(telemetry.logs.encoding, LogEncoding::Json);
    assert_eq!(telemetry.metrics.endpoint(), "0.0.0.0:9999");
    assert_eq!(
        telemetry.resource_attributes(),
        [
            ("replicas".to_string(), "3".to_string()),
            ("service.name".into(), "gateway".into())
        ]
    );
    let defaults = "receivers: {otlp: {protocols: {grpc: }}}
exporters: {debug: }
service:
  telemetry: {metrics: {readers: [{pull: {exporter: {prometheus: {port: 8889}}}}]}}
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
";
    assert_eq!(
        load(defaults).unwrap().telemetry.metrics.endpoint(),
        "localhost:8889"
    );

    let errors = load(
        "receivers: {otlp: {protocols: {grpc: }}}
exporters: {debug: }
service:
  telemetry:
    logs: {encoding: xml}
    metrics:
      address: 127.0.0.1:1
      readers:
        - periodic: {exporter: {otlp: {endpoint: x}}}
        - pull: {exporter: {prometheus: {port: 1}}}
    resource: {nested: {a: 1}}
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
",
    )
    .unwrap_err()
    .to_string();
    for want in [
        "test.yaml:5: service.telemetry.logs.encoding: unknown variant `xml`",
        "test.yaml:9: service.telemetry.metrics.readers.0.periodic: periodic readers are not supported",
        "test.yaml:10: service.telemetry.metrics.readers.1: only one reader is supported",
        "test.yaml:7: service.telemetry.metrics.address: give either address or readers, not both",
        "test.yaml:11: service.telemetry.resource.nested: must be a string, number or boolean",
    ] {
        assert!(errors.contains(want), "missing {want:?} in\n{errors}");
    }
}

#[test]
fn receiver_keys_work_or_say_why_not() {
    let config = load(
        "receivers:
  otlp:
    protocols:
      grpc:
        max_concurrent_streams: 16
        max_recv_msg_size_mib: 8
        keepalive:
          server_parameters: {max_connection_age: 60s, max_connection_age_grace: 5s, time: 30s, timeout: 5s}
      http:
        cors: {allowed_origins: ['https://*.example.com'], allowed_headers: [X-Tenant], max_age: 600}
exporters: {debug: }
service:
  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
",
    )
    .unwrap();
    let ReceiverConfig::Otlp(otlp) = &config.receivers[&ComponentId::new("otlp")] else {
        panic!("an otlp receiver")
    };
    let grpc = otlp.protocols.grpc.as_ref().unwrap();
    assert_eq!(
        (grpc.max_concurrent_streams, grpc.max_recv_msg_size_mib),
        (16, 8)
    );
    let parameters = grpc
        .keepalive
        .as_ref()
        .unwrap()
        .server_parameters
        .as_ref()
        .unwrap();
    assert_eq!(
        parameters.max_connection_age,
        Some(std::time::Duration::from_secs(60))
    );
    let cors = otlp.protocols.http.as_ref().unwrap().cors.as_ref().unwrap();
    assert_eq!(cors.max_age, 600);

    let errors = load(
        "receivers:
  otlp:
    protocols:
      grpc:
        include_metadata: true
        keepalive:
          server_parameters: {max_connection_idle: 10s}
          enforcement_policy: {min_time: 5s, permit_without_stream: true}
      http:
        include_metadata: true
processors:
  batch: {metadata_keys: [tenant]}
exporters: {debug: }
service:
  pipelines: {traces: {receivers: [otlp], processors: [batch], exporters: [debug]}}
",
    )
    .unwrap_err()
    .to_string();
    for want in [
        "test.yaml:5: receivers.otlp.protocols.grpc.include_metadata: include_metadata: true is not supported",
        "test.yaml:7: receivers.otlp.protocols.grpc.keepalive.server_parameters.max_connection_idle: max_connection_idle is not supported",
        "test.yaml:8: receivers.otlp.protocols.grpc.keepalive.enforcement_policy: enforcement_policy is not supported",
        "test.yaml:10: receivers.otlp.protocols.http.include_metadata: include_metadata: true is not supported",
        "test.yaml:12: processors.batch.metadata_keys: metadata_keys is not supported",
    ] {
        assert!(errors.contains(want), "missing {want:?} in\n{errors}");
    }
}

#[test]
fn file_exporter_takes_flush_interval() {
    let config = load(
        "receivers: {otlp: {protocols: {grpc: }}}
exporters: {file: {path: /tmp/x.json, flush_interval: 2s}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [file]}}
",
    )
    .unwrap();
    let ExporterConfig::File(file) = &config.exporters[&ComponentId::new("file")] else {
        panic!()
    };
    assert_eq!(file.flush_interval, std::time::Duration::from_secs(2));
}

#[test]
fn the_default_config_of_otelcol_distributions_validates() {
    let text = include_str!("../../../examples/otelcol-default.yaml");
    let config = load(text).unwrap();
    let kinds: Vec<&str> = config.extensions.values().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["health_check", "pprof", "zpages"]);
    assert_eq!(
        config.extensions[&ComponentId::new("health_check")].endpoint(),
        Some("0.0.0.0:13133".to_string())
    );
    assert_eq!(config.pipelines.len(), 3);
    assert!(config.warnings.is_empty());
}
