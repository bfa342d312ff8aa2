//! Our OpAMP server against the real OpenTelemetry OpAMP client for Python (plain HTTP): it
//! connects, is listed with its description, receives a remote config and reports it APPLIED;
//! a second config replaces the first.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use odigos_server::http::{Options, Server};
use odigos_server::opamp::{ConfigStatus, Selector};
use odigos_tests::*;

fn json_config(text: &str) -> BTreeMap<String, (Vec<u8>, String)> {
    [(
        "sdk.json".to_string(),
        (text.as_bytes().to_vec(), "application/json".to_string()),
    )]
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_opamp_client_receives_and_applies_configs() {
    let options = Options {
        token: Some("t0ken".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options).await.unwrap();
    let endpoint = format!("http://{}/v1/opamp", server.address);
    let mut agent = Command::new(python())
        .arg(workspace().join("tests/python/opamp_agent.py"))
        .args([&endpoint, "t0ken"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel::<serde_json::Value>();
    let stdout = agent.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(serde_json::from_str(&line).unwrap());
        }
    });
    let next_line = || {
        received
            .recv_timeout(Duration::from_secs(15))
            .expect("a line from the python agent")
    };
    let uid = next_line()["uid"].as_str().unwrap().to_string();

    // Listed with its description and capabilities.
    let listed = wait_for(Duration::from_secs(15), || {
        server.fleet.agent(&uid).is_some()
    });
    assert!(listed, "the python agent never appeared");
    let view = server.fleet.agent(&uid).unwrap();
    assert_eq!(view.identifying["service.name"], "py-agent");
    assert_eq!(view.identifying["service.version"], "1.0");
    assert_eq!(view.non_identifying["odigos.role"], "sdk");
    assert_eq!(view.capabilities, 0x3007);
    assert_eq!(view.connected, Some("http"));

    // A config for SDK agents arrives, decoded by the client, and is reported APPLIED.
    let role = Selector::Attribute {
        key: "odigos.role".into(),
        value: "sdk".into(),
    };
    let first = server
        .fleet
        .set_config(role.clone(), json_config(r#"{"sampling": 0.5}"#));
    let line = next_line();
    assert_eq!(line["file"], "sdk.json");
    assert_eq!(line["config"]["sampling"], 0.5);
    assert_eq!(line["hash"], first.as_str());
    let applied = wait_for(Duration::from_secs(15), || {
        server.fleet.agent(&uid).unwrap().config
            == ConfigStatus::Applied {
                hash: first.clone(),
            }
    });
    assert!(applied, "{:?}", server.fleet.agent(&uid).unwrap().config);

    // A second config replaces the first.
    let second = server
        .fleet
        .set_config(role, json_config(r#"{"sampling": 0.1, "traces": false}"#));
    let line = next_line();
    assert_eq!(line["config"]["sampling"], 0.1);
    assert_eq!(line["config"]["traces"], false);
    assert_eq!(line["hash"], second.as_str());
    let applied = wait_for(Duration::from_secs(15), || {
        server.fleet.agent(&uid).unwrap().config
            == ConfigStatus::Applied {
                hash: second.clone(),
            }
    });
    assert!(applied, "{:?}", server.fleet.agent(&uid).unwrap().config);

    let _ = agent.kill();
    let _ = agent.wait();
    server.stop().await;
}
