use std::time::{Duration, SystemTime};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Config, ConfigErrors};
use crate::topology::Topology;

fn config(extensions: &str, enabled: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:0}}
exporters:
  nop:
extensions:
{extensions}
service:
  extensions: [{enabled}]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [nop]}}
"
    )
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml(text, "test.yaml")
}

/// `GET path` on `address` (`host:port`): the status code and the body.
async fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: collector\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn endpoint(topology: &Topology, id: &str) -> String {
    topology.extension_endpoints()[id].clone()
}

#[tokio::test]
async fn health_check_answers_while_the_pipelines_run() {
    let text = config(
        "  health_check:\n    endpoint: 127.0.0.1:0\n    path: /health",
        "health_check",
    );
    let topology = Topology::start(&load(&text).unwrap()).await.unwrap();
    let address = endpoint(&topology, "health_check");
    let (status, body) = get(&address, "/health").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "Server available");
    assert!(json["upSince"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(get(&address, "/").await.0, 404);

    // While shutting down, 503.
    topology.status().set_ready(false);
    let (status, body) = get(&address, "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Server not available"), "{body}");
    topology.shutdown(Duration::from_secs(1)).await;
    assert!(TcpStream::connect(&address).await.is_err());
}

#[tokio::test]
async fn extensions_change_in_place() {
    let first = config(
        "  health_check:\n    endpoint: 127.0.0.1:0\n  zpages:\n    endpoint: 127.0.0.1:0",
        "health_check, zpages",
    );
    let mut topology = Topology::start(&load(&first).unwrap()).await.unwrap();
    let health = endpoint(&topology, "health_check");
    let zpages = endpoint(&topology, "zpages");

    // A new path: the same socket answers on it.
    let second = config(
        "  health_check:\n    endpoint: 127.0.0.1:0\n    path: /ready\n    response_body: {healthy: ok, unhealthy: down}",
        "health_check",
    );
    let applied = topology.apply(load(&second).unwrap()).await.unwrap();
    assert_eq!(applied.updated, ["extensions.health_check"], "{applied}");
    assert_eq!(applied.retired, ["extensions.zpages"], "{applied}");
    assert_eq!(endpoint(&topology, "health_check"), health);
    assert_eq!(get(&health, "/ready").await, (200, "ok".to_string()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(&zpages).await.is_err(), "zpages stopped");

    // A refused config leaves the running extensions as they are.
    let refused = config(
        "  health_check:\n    endpoint: 127.0.0.1:0\n  pprof:\n    endpoint: 256.0.0.1:1",
        "health_check, pprof",
    );
    assert!(topology.apply(load(&refused).unwrap()).await.is_err());
    assert_eq!(get(&health, "/ready").await, (200, "ok".to_string()));
    topology.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn zpages_shows_pipelines_and_extensions() {
    let text = config(
        "  zpages:\n    endpoint: 127.0.0.1:0\n  health_check:\n    endpoint: 127.0.0.1:0",
        "zpages, health_check",
    );
    let topology = Topology::start(&load(&text).unwrap()).await.unwrap();
    let address = endpoint(&topology, "zpages");
    let (status, pipelines) = get(&address, "/debug/pipelinez").await;
    assert_eq!(status, 200);
    assert!(
        pipelines.contains("<td>traces</td><td>otlp</td><td></td><td>nop</td>"),
        "{pipelines}"
    );
    let (status, extensions) = get(&address, "/debug/extensionz").await;
    assert_eq!(status, 200);
    let health = endpoint(&topology, "health_check");
    assert!(
        extensions.contains(&format!("<td>health_check</td><td>{health}</td>")),
        "{extensions}"
    );
    assert_eq!(get(&address, "/debug/servicez").await.0, 200);
    topology.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn pprof_serves_a_cpu_profile() {
    let text = config("  pprof:\n    endpoint: 127.0.0.1:0", "pprof");
    let topology = Topology::start(&load(&text).unwrap()).await.unwrap();
    let address = endpoint(&topology, "pprof");
    // CPU work to be sampled, until the profile is back (on a loaded machine the profile may
    // start late).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut x = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            x
        }
    });
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /debug/pprof/profile?seconds=1 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..at]).to_string();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let profile = super::pprof::Profile::decode(&response[at + 4..]).unwrap();
    let name = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(profile.string_table[0], "");
    assert_eq!(name(profile.sample_type[1].r#type), "cpu");
    assert_eq!(name(profile.sample_type[1].unit), "nanoseconds");
    assert_eq!(profile.period, 10_000_000);
    assert!(profile.duration_nanos >= 1_000_000_000);
    assert!(!profile.sample.is_empty(), "no samples in {profile:?}");
    assert!(
        profile
            .location
            .iter()
            .all(|l| l.line.len() == 1 && profile.function.iter().any(|f| f.id == l.id))
    );
    let (status, _) = get(&address, "/debug/pprof/profile?seconds=soon").await;
    assert_eq!(status, 400);
    topology.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn extension_errors_name_the_problem() {
    let text = "receivers: {otlp: {protocols: {grpc: }}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:1
    sending_queue: {storage: file_storage/missing}
  otlp/2:
    endpoint: http://127.0.0.1:1
    sending_queue: {storage: file_storage/off}
  otlp/3:
    endpoint: http://127.0.0.1:1
    sending_queue: {storage: health_check}
extensions:
  oauth2client: {}
  health_check: {endpoint: 'no port'}
  file_storage/off: {directory: /tmp}
  pprof: {block_profile_fraction: 3}
  zpages: {}
  file_storage/compact: {directory: /tmp, compaction: {on_start: true}}
service:
  extensions: [oauth2client, health_check, zpages, missing, zpages, pprof, file_storage/compact]
  pipelines:
    traces: {receivers: [otlp], exporters: [otlp, otlp/2, otlp/3]}
";
    let errors = load(text).unwrap_err();
    let text = errors.to_string();
    for want in [
        "test.yaml:13: extensions.oauth2client: unsupported extension type \"oauth2client\" (supported: file_storage, health_check, pprof, zpages)",
        "test.yaml:14: extensions.health_check.endpoint: invalid endpoint \"no port\"",
        "test.yaml:16: extensions.pprof.block_profile_fraction: block_profile_fraction profiles Go's runtime",
        "test.yaml:18: extensions.file_storage/compact.compaction: compaction is not supported",
        "service.extensions.3: extension missing is not defined in the top-level extensions section",
        "service.extensions.4: zpages is listed twice",
        "exporters.otlp.sending_queue.storage: storage extension file_storage/missing is not defined",
        "exporters.otlp/2.sending_queue.storage: storage extension file_storage/off is not enabled: list it in service.extensions",
        "exporters.otlp/3.sending_queue.storage: storage extension health_check is not enabled",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("oauth2client is not defined"), "{text}");
    assert_eq!(errors.0.len(), 9, "{text}");

    // Listed and enabled, but not storage.
    let text = "receivers: {otlp: {protocols: {grpc: }}}
exporters:
  otlp: {endpoint: http://127.0.0.1:1, sending_queue: {storage: zpages}}
extensions: {zpages: }
service:
  extensions: [zpages]
  pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}
";
    let errors = load(text).unwrap_err().to_string();
    assert!(
        errors.contains("extension zpages is not a storage extension (use file_storage)"),
        "{errors}"
    );
}

#[tokio::test]
async fn file_storage_keeps_each_exporters_queue() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let text = format!(
        "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:0}}}}}}}}
exporters:
  otlp/down:
    endpoint: http://127.0.0.1:1
    sending_queue: {{storage: file_storage/queues}}
extensions:
  file_storage/queues:
    directory: {}
    create_directory: true
    timeout: 2s
service:
  extensions: [file_storage/queues]
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp/down]}}}}
",
        storage.display()
    );
    let config = load(&text).unwrap();
    let crate::exporter::ExporterConfig::Otlp(otlp) =
        &config.exporters[&crate::config::ComponentId::new("otlp/down")]
    else {
        panic!()
    };
    assert_eq!(otlp.sending_queue.directory.as_deref(), Some(&*storage));
    assert_eq!(otlp.sending_queue.lock_timeout, Duration::from_secs(2));
    let topology = Topology::start(&config).await.unwrap();
    assert!(storage.join("otlp_down").is_dir());
    topology.shutdown(Duration::from_millis(100)).await;

    // Without create_directory, a missing directory is an error that says so.
    let missing = text.replace("    create_directory: true\n", "").replace(
        &storage.display().to_string(),
        &dir.path().join("nope").display().to_string(),
    );
    let errors = load(&missing).unwrap_err().to_string();
    assert!(
        errors.contains("(create it, or set create_directory: true)"),
        "{errors}"
    );
}

#[test]
fn formats_rfc3339() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(super::rfc3339(time), "2023-11-14T22:13:20.123Z");
    assert_eq!(
        super::rfc3339(SystemTime::UNIX_EPOCH),
        "1970-01-01T00:00:00.000Z"
    );
}
