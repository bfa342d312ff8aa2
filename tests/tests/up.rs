//! `odigos up` end to end, in a temporary directory. The Python OTel SDK streams spans to the
//! node collector the whole time, while the desired state changes under it:
//! - writing a Destination file starts delivery to a second OTLP sink;
//! - writing a `renameAttribute` Action renames the attribute at the sink;
//! - a broken YAML file is reported with its line and changes nothing;
//! - disabling the Destination stops delivery to it.
//!
//! A `file` destination is on throughout: every span the SDK saw acknowledged must be in it at
//! the end, and the collector processes must be the ones started first (same pids).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odigos_tests::traffic::{Backend, Mode};
use odigos_tests::up::Up;
use odigos_tests::*;

fn destination(name: &str, port: u16, disabled: bool) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: {name}}}\nspec:\n  type: otlp\n  disabled: {disabled}\n  signals: [TRACES]\n  data:\n    OTLP_GRPC_ENDPOINT: http://127.0.0.1:{port}\n    OTLP_GRPC_COMPRESSION: none\n"
    )
}

const RENAME: &str = "apiVersion: odigos.io/v1alpha1
kind: Action
metadata: {name: rename-user}
spec:
  signals: [TRACES]
  renameAttribute:
    renames: {user.id: enduser.id}
";

/// Hex span ids in the file destination's output.
fn archived(path: &Path) -> std::collections::HashSet<String> {
    let requests = json_lines(path);
    items(&requests, "resourceSpans", "scopeSpans", "spans")
        .into_iter()
        .map(|(_, _, span)| {
            span["spanId"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_edits_change_the_running_pipeline_without_loss_or_restart() {
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("all-spans.jsonl");
    let file_destination = format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive}}\nspec:\n  type: file\n  signals: [TRACES]\n  data: {{FILE_PATH: {}}}\n",
        archive.display()
    );
    let up = tokio::task::block_in_place(|| Up::start(&[("file.yaml", file_destination)]));
    let first = up.wait_applied(1);
    assert_eq!(
        first["destinations"]["default/archive"]["condition"]["status"], "True",
        "{first:#}"
    );
    let pids = up.collector_pids();
    assert_eq!(pids.len(), 2, "gateway and node collector: {pids:?}");

    let backend = Backend::new(Mode::Up);
    let (sink, sink_port) = (&backend.sink, backend.port);
    let acked_file = up.path("acked.txt");
    let mut sdk = Command::new(python())
        .arg(workspace().join("tests/python/stream_spans.py"))
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}", up.grpc()),
            "--service",
            "shop",
        ])
        .arg("--acked")
        .arg(&acked_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let flowing = wait_for(Duration::from_secs(30), || lines(&acked_file).len() > 100);
    assert!(
        flowing,
        "the SDK's spans are not acknowledged:\n{}",
        up.logs()
    );
    assert_eq!(
        sink.received(),
        0,
        "nothing goes to the sink before its Destination exists"
    );

    // A Destination file starts delivery to the sink.
    up.write("sink.yaml", &destination("sink", sink_port, false));
    let state = tokio::task::block_in_place(|| up.wait_applied(2));
    assert_eq!(
        state["destinations"]["default/sink"]["plan"]["status"], "active",
        "{state:#}"
    );
    let delivered = wait_for(Duration::from_secs(20), || sink.received() > 50);
    assert!(delivered, "no spans at the sink:\n{}", up.logs());
    let has_key = |key: &str| {
        sink.spans
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.keys.contains(key))
            .count()
    };
    assert!(has_key("user.id") > 0);
    assert_eq!(has_key("enduser.id"), 0);

    // A renameAttribute Action renames the attribute from then on.
    up.write("rename.yaml", RENAME);
    tokio::task::block_in_place(|| up.wait_applied(3));
    let renamed = wait_for(Duration::from_secs(20), || has_key("enduser.id") > 50);
    assert!(renamed, "the rename did not reach the sink:\n{}", up.logs());

    // A broken file is reported with its line and changes nothing.
    let before = up.state();
    up.write(
        "broken.yaml",
        "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {name: x\n",
    );
    let reported = wait_for(Duration::from_secs(10), || {
        up.state()["problems"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p["source"].as_str().unwrap_or("").ends_with("broken.yaml") && p["line"] == 4
            })
        })
    });
    assert!(
        reported,
        "the broken file is not reported: {:#}",
        up.state()
    );
    let after = up.state();
    assert_eq!(
        before["hashes"], after["hashes"],
        "a broken file changed the configs"
    );

    // Disabling the Destination stops delivery to it.
    up.write("sink.yaml", &destination("sink", sink_port, true));
    let state = tokio::task::block_in_place(|| up.wait_applied(5));
    assert_eq!(
        state["destinations"]["default/sink"]["plan"]["status"],
        "disabled"
    );
    // What the node acknowledges from now on reaches a gateway that no longer routes there.
    let acked_at = lines(&acked_file).len();
    let more = wait_for(Duration::from_secs(10), || {
        lines(&acked_file).len() > acked_at + 200
    });
    assert!(
        more,
        "spans stopped flowing after the Destination was disabled"
    );
    let after_disable = lines(&acked_file)[acked_at..].to_vec();
    assert_eq!(
        sink.missing(&after_disable),
        after_disable.len(),
        "the disabled Destination still receives spans"
    );

    // Stop the SDK (it flushes), then every acknowledged span must be in the archive.
    let _ = Command::new("kill")
        .args(["-TERM", &sdk.id().to_string()])
        .status();
    let status = sdk.wait().unwrap();
    let mut report = String::new();
    sdk.stderr
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    assert!(status.success(), "the SDK failed: {report}");
    let acked = lines(&acked_file);
    let started = Instant::now();
    let complete = wait_for(Duration::from_secs(20), || {
        let seen = archived(&archive);
        acked.iter().all(|id| seen.contains(id))
    });
    let seen = archived(&archive);
    let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        complete,
        "{} of {} acknowledged spans are missing from the archive after {:?} (e.g. {:?}); SDK: {report}\n{}",
        missing.len(),
        acked.len(),
        started.elapsed(),
        &missing[..missing.len().min(5)],
        up.logs()
    );
    // Everything has arrived where it goes: still nothing from after the disable at the sink.
    assert_eq!(
        sink.missing(&after_disable),
        after_disable.len(),
        "the disabled Destination received spans acknowledged after it was disabled"
    );
    let sink_ids: Vec<u64> = sink.spans.lock().unwrap().keys().copied().collect();
    for id in &sink_ids {
        assert!(
            acked.contains(&format!("{id:016x}")),
            "the sink got span {id:016x}, never acknowledged"
        );
    }
    assert_eq!(
        up.collector_pids(),
        pids,
        "a collector process was restarted"
    );
    let restarts = up
        .logs()
        .matches("collector started from the remote config")
        .count();
    assert_eq!(restarts, 2, "each collector starts once:\n{}", up.logs());
    eprintln!(
        "{} spans acknowledged, all archived; {} reached the sink while it was enabled",
        acked.len(),
        sink_ids.len()
    );

    // Ctrl-C stops everything cleanly.
    let mut up = up;
    let _ = Command::new("kill")
        .args(["-INT", &up.child.id().to_string()])
        .status();
    let status = tokio::task::block_in_place(|| up.child.wait()).unwrap();
    assert!(
        status.success(),
        "odigos up exited with {status}:\n{}",
        up.logs()
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "collector {pid} outlived odigos up"
        );
    }
}

const CHECKOUT: &str = "apiVersion: odigos.io/v1alpha1
kind: Source
metadata: {name: checkout, namespace: shop}
spec:
  workload: {name: checkout, namespace: shop, kind: Deployment}
  otelServiceName: checkout-api
";

fn rule(fraction: f64) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: InstrumentationRule\nmetadata: {{name: sampling}}\nspec:\n  workloads: [{{name: checkout, namespace: shop, kind: Deployment}}]\n  headersCollection: {{headerKeys: [x-request-id]}}\n  headSamplingFallbackFraction: {{fractionToKeep: {fraction}}}\n"
    )
}

/// The SDK agent of a workload, here the PyPI OpAMP client, gets that workload's settings
/// from its Source and InstrumentationRules, and new ones when a rule changes.
#[test]
fn sdk_agents_get_their_workload_settings_over_opamp() {
    use std::io::BufRead;
    let up = Up::start(&[
        ("checkout.yaml", CHECKOUT.to_string()),
        ("rule.yaml", rule(0.25)),
    ]);
    let state = up.wait_applied(1);
    let config = &state["sources"][0]["instrumentation_config"];
    assert_eq!(
        config["metadata"]["name"], "deployment-checkout",
        "{state:#}"
    );
    assert_eq!(config["spec"]["serviceName"], "checkout-api");

    let token = std::fs::read_to_string(up.path(".odigos/token")).unwrap();
    let mut agent = Command::new(python())
        .arg(workspace().join("tests/python/opamp_agent.py"))
        .arg(format!("http://127.0.0.1:{}/v1/opamp", up.opamp()))
        .arg(token.trim())
        .arg("shop/deployment-checkout")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = agent.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(serde_json::from_str(&line).unwrap());
        }
    });
    // The agent's settings as it received them, from the next agent.json it prints.
    let next_settings = || -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = received
                .recv_timeout(left)
                .expect("no agent.json reached the agent");
            if line["file"] == "agent.json" {
                return match &line["config"] {
                    serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
                    other => other.clone(),
                };
            }
        }
    };
    let first = next_settings();
    assert_eq!(first["headSamplingFraction"], 0.25, "{first:#}");
    assert_eq!(first["headerKeys"], serde_json::json!(["x-request-id"]));
    assert_eq!(first["rules"], serde_json::json!(["default.sampling"]));

    up.write("rule.yaml", &rule(0.5));
    let second = next_settings();
    assert_eq!(second["headSamplingFraction"], 0.5, "{second:#}");
    let _ = agent.kill();
    let _ = agent.wait();
}
