//! Our collector under our OpAMP server, over WebSocket: a pushed config is APPLIED and shows in
//! the effective config (secrets redacted); an invalid one is reported FAILED while spans keep
//! flowing; when the server goes away and comes back, the agent reconnects and reports its full
//! state; through all of it no acknowledged span is lost and the process never restarts. A
//! collector restarted while the server is down comes back to its last good config.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use odigos_server::http::{Options, Server};
use odigos_server::opamp::{ConfigStatus, Selector};
use odigos_tests::traffic::{Backend, Load, Mode};
use odigos_tests::*;

fn yaml(text: String) -> BTreeMap<String, (Vec<u8>, String)> {
    [(
        "collector.yaml".to_string(),
        (text.into_bytes(), "text/yaml".to_string()),
    )]
    .into()
}

fn collector_config(sink: u16, processor: &str) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
processors:
  {processor}: {{}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink}
    compression: none
    headers: {{x-api-key: supersecret}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [{processor}], exporters: [otlp]}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_takes_remote_configs_and_survives_a_server_restart() {
    let options = Options {
        token: Some("t0k".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options.clone()).await.unwrap();
    let opamp_address = server.address.to_string();
    let sink = Backend::new(Mode::Up);
    let sink_port = sink.port;
    let state = tempfile::tempdir().unwrap();
    let endpoint = format!("ws://{opamp_address}/v1/opamp");
    let state_dir = state.path().display().to_string();
    let args = [
        "--opamp-endpoint",
        &endpoint,
        "--token",
        "t0k",
        "--state-dir",
        &state_dir,
        "--role",
        "gateway",
    ];
    let mut collector = tokio::task::block_in_place(|| Collector::with_args(&args));
    let pid = collector.pid();

    let find = |server: &Server| {
        server.fleet.agents().into_iter().find(|a| {
            a.identifying.get("service.name").map(String::as_str) == Some("io.odigos.collector")
        })
    };
    let connected = wait_for(Duration::from_secs(15), || {
        find(&server).is_some_and(|a| a.connected == Some("websocket"))
    });
    assert!(
        connected,
        "the collector never connected:\n{}",
        collector.logs()
    );
    let agent = find(&server).unwrap();
    assert_eq!(agent.non_identifying["odigos.role"], "gateway");
    assert_eq!(agent.identifying["service.instance.id"], agent.uid);

    // A config pushed to gateways is applied; the collector starts serving it.
    let gateways = Selector::Attribute {
        key: "odigos.role".into(),
        value: "gateway".into(),
    };
    let good = server
        .fleet
        .set_config(gateways.clone(), yaml(collector_config(sink_port, "batch")));
    let applied = wait_for(Duration::from_secs(15), || {
        find(&server).unwrap().config == ConfigStatus::Applied { hash: good.clone() }
    });
    assert!(
        applied,
        "{:?}\n{}",
        find(&server).unwrap().config,
        collector.logs()
    );
    let effective = &find(&server).unwrap().effective_config["collector.yaml"];
    assert!(effective.contains("127.0.0.1:0"), "{effective}");
    assert!(
        !effective.contains("supersecret") && effective.contains("[REDACTED]"),
        "secrets redacted: {effective}"
    );
    let grpc = tokio::task::block_in_place(|| collector.port("grpc"));

    let load = Load::new();
    let running = load.start(SocketAddr::from(([127, 0, 0, 1], grpc)), 2, 5_000);
    let flowing = |more: usize| {
        let from = load.acked().len();
        tokio::task::block_in_place(|| {
            wait_for(Duration::from_secs(15), || load.acked().len() > from + more)
        })
    };
    assert!(
        flowing(1_000),
        "spans are not acknowledged:\n{}",
        collector.logs()
    );

    // An invalid config is refused with its errors; the running one keeps serving.
    let bad = server
        .fleet
        .set_config(gateways, yaml(collector_config(sink_port, "bogus")));
    let failed = wait_for(Duration::from_secs(15), || {
        matches!(find(&server).unwrap().config, ConfigStatus::Failed { .. })
    });
    assert!(failed, "{:?}", find(&server).unwrap().config);
    let ConfigStatus::Failed { hash, error } = find(&server).unwrap().config else {
        unreachable!()
    };
    assert_eq!(hash, bad);
    assert!(
        error.contains("unknown processor type \"bogus\""),
        "{error}"
    );
    assert!(
        flowing(1_000),
        "spans stopped flowing after the refused config"
    );

    // The server goes away; spans keep flowing; it comes back knowing nothing, and the agent
    // reconnects and reports its full state.
    server.stop().await;
    assert!(flowing(1_000), "spans stopped flowing without the server");
    let server = Server::start(&opamp_address, options).await.unwrap();
    let back = wait_for(Duration::from_secs(20), || {
        find(&server)
            .is_some_and(|a| a.connected == Some("websocket") && !a.effective_config.is_empty())
    });
    assert!(
        back,
        "the collector did not come back with its full state:\n{}",
        collector.logs()
    );
    assert_eq!(
        find(&server).unwrap().non_identifying["odigos.role"],
        "gateway"
    );

    load.stop();
    running.await.unwrap();
    let acked = load.acked();
    let all_arrived = wait_for(Duration::from_secs(15), || {
        let spans = sink.sink.spans.lock().unwrap();
        acked.iter().all(|id| spans.contains_key(id))
    });
    assert!(all_arrived, "acknowledged spans were lost");
    assert!(collector.is_running());
    assert_eq!(collector.pid(), pid, "the collector never restarted");
    server.stop().await;
    collector.stop();

    // Restarted while the server is down, the collector comes back to its last good config.
    let mut restarted = tokio::task::block_in_place(|| Collector::with_args(&args));
    tokio::task::block_in_place(|| restarted.port("grpc"));
    assert!(
        restarted
            .logs()
            .contains("restored the last applied config"),
        "{}",
        restarted.logs()
    );
    restarted.stop();
}
