//! The supervisor over `wss://` to a TLS OpAMP server that trusts a private CA: it connects,
//! is listed, applies what it is sent, and reports it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::opamp::ComponentHealth;
use odigos_server::http::{Options, Server};
use odigos_server::opamp::{ConfigStatus, Selector};
use odigos_supervisor::{Apply, Files};

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<Files>>,
}

#[async_trait]
impl Apply for Recorder {
    async fn apply(&self, files: &Files) -> Result<(), String> {
        if files.values().any(|(body, _)| body.starts_with(b"bad")) {
            return Err("refused: bad config".into());
        }
        self.applied.lock().unwrap().push(files.clone());
        Ok(())
    }

    async fn effective_config(&self) -> Files {
        self.applied
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    async fn health(&self) -> ComponentHealth {
        ComponentHealth {
            healthy: true,
            status: "ok".into(),
            ..Default::default()
        }
    }
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn supervisor_over_tls_applies_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let options = Options {
        tls: Some((cert.clone(), key)),
        token: Some("t".into()),
        ..Options::default()
    };
    let server = Server::start("127.0.0.1:0", options).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let supervisor_options = odigos_supervisor::Options {
        endpoint: format!("wss://localhost:{}/v1/opamp", server.address.port()),
        token: Some("t".into()),
        state_dir: dir.path().join("state"),
        identifying: vec![("service.name".into(), "tls-agent".into())],
        non_identifying: vec![],
        heartbeat: Duration::from_secs(30),
        ca_file: Some(cert),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let supervisor = tokio::spawn(odigos_supervisor::run(
        supervisor_options,
        recorder.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let listed = eventually(|| {
        server
            .fleet
            .agents()
            .iter()
            .any(|a| a.connected == Some("websocket"))
    })
    .await;
    assert!(listed, "the supervisor never connected over TLS");
    let uid = server.fleet.agents()[0].uid.clone();

    let good: BTreeMap<String, (Vec<u8>, String)> =
        [("c.yaml".into(), (b"good: 1".to_vec(), "text/yaml".into()))].into();
    let hash = server.fleet.set_config(Selector::All, good);
    assert!(
        eventually(|| server.fleet.agent(&uid).unwrap().config
            == ConfigStatus::Applied { hash: hash.clone() })
        .await
    );
    assert_eq!(
        server.fleet.agent(&uid).unwrap().effective_config["c.yaml"],
        "good: 1"
    );

    let bad: BTreeMap<String, (Vec<u8>, String)> =
        [("c.yaml".into(), (b"bad".to_vec(), "text/yaml".into()))].into();
    server.fleet.set_config(Selector::All, bad);
    let failed = eventually(|| matches!(&server.fleet.agent(&uid).unwrap().config, ConfigStatus::Failed { error, .. } if error == "refused: bad config")).await;
    assert!(failed, "{:?}", server.fleet.agent(&uid).unwrap().config);
    assert_eq!(
        recorder.applied.lock().unwrap().len(),
        1,
        "the refused config never replaced the good one"
    );

    let _ = stop.send(());
    supervisor.await.unwrap().unwrap();
    server.stop().await;
}
