//! Faults at the destinations under `odigos up`, with the Python and Node.js OpenTelemetry
//! SDKs sending the whole time: one destination is down (its port refuses connections), one is
//! hung (it accepts connections and never answers), one is healthy.
//! - Every export of both SDKs is acknowledged: the failing destinations hold up nobody.
//! - The healthy destination receives every acknowledged span exactly once.
//! - `odigos up` restarts in the middle; when the failing destinations come back they receive
//!   everything acknowledged while they were down, with nothing missing.
//! - `odigos up` killed with a destination down: its collectors are gone within their grace
//!   period.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use odigos_tests::sdk::Streamer;
use odigos_tests::traffic::{Backend, Mode};
use odigos_tests::up::Up;
use odigos_tests::{lines, wait_for};
use tokio::task::block_in_place;

fn destination(name: &str, port: u16) -> (String, String) {
    let text = format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: {name}}}\nspec:\n  type: otlp\n  signals: [TRACES]\n  data:\n    OTLP_GRPC_ENDPOINT: http://127.0.0.1:{port}\n    OTLP_GRPC_COMPRESSION: none\n"
    );
    (format!("{name}.yaml"), text)
}

/// Seconds an SDK export may take before the SDK counts it as failed.
const EXPORT_TIMEOUT: u32 = 10;

fn sdks(up: &Up, dir: &Path) -> [Streamer; 2] {
    let endpoint = format!("http://127.0.0.1:{}", up.grpc());
    [
        Streamer::python(&endpoint, "shop-python", EXPORT_TIMEOUT, dir),
        Streamer::node(&endpoint, "shop-node", EXPORT_TIMEOUT, dir),
    ]
}

fn acked(sdks: &[Streamer]) -> Vec<String> {
    let all: BTreeSet<String> = sdks.iter().flat_map(Streamer::acked).collect();
    all.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_and_one_hung_touch_nothing_else() {
    let healthy = Backend::new(Mode::Up);
    let down = Backend::new(Mode::Down);
    let hung = Backend::new(Mode::Hung);
    let files: Vec<(String, String)> = vec![
        destination("healthy", healthy.port),
        destination("down", down.port),
        destination("hung", hung.port),
    ];
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut up = block_in_place(|| Up::start(&files));
    block_in_place(|| up.wait_applied(1));
    let out = tempfile::tempdir().unwrap();
    let sdks = sdks(&up, out.path());

    // Both SDKs are answered while two of the three destinations fail.
    let flowing = block_in_place(|| {
        wait_for(Duration::from_secs(60), || {
            sdks.iter().all(|sdk| sdk.acked().len() > 500)
        })
    });
    let failures: Vec<String> = sdks.iter().flat_map(Streamer::failures).collect();
    assert!(
        flowing && failures.is_empty(),
        "the SDKs' exports were not all acknowledged: {} acknowledged, failures: {failures:?}\n{}",
        acked(&sdks).len(),
        up.logs()
    );
    let before_restart = acked(&sdks);
    let reached = block_in_place(|| {
        wait_for(Duration::from_secs(30), || {
            healthy.sink.missing(&before_restart) == 0
        })
    });
    assert!(
        reached,
        "{} acknowledged spans did not reach the healthy destination:\n{}",
        healthy.sink.missing(&before_restart),
        up.logs()
    );

    // odigos up restarts; what the failing destinations have queued stays on disk.
    let counts: Vec<usize> = sdks.iter().map(|sdk| sdk.acked().len()).collect();
    block_in_place(|| up.restart());
    // Each SDK is answered again (a gRPC client reconnects after a backoff of its own).
    let resumed = block_in_place(|| {
        wait_for(Duration::from_secs(60), || {
            sdks.iter()
                .zip(&counts)
                .all(|(sdk, count)| sdk.acked().len() > count + 250)
        })
    });
    assert!(
        resumed,
        "the SDKs are not acknowledged after the restart:\n{}",
        up.logs()
    );

    // The failing destinations come back, and the SDKs stop (flushing what they hold).
    down.set(Mode::Up);
    hung.set(Mode::Up);
    let mut reports = Vec::new();
    let final_acked = acked(&sdks);
    for sdk in sdks {
        reports.push(block_in_place(|| sdk.stop()));
    }
    let all = {
        let mut all = final_acked;
        // What the SDKs flushed while stopping was acknowledged too.
        all.extend(
            ["shop-python", "shop-node"]
                .iter()
                .flat_map(|s| lines(&out.path().join(format!("{s}.acked")))),
        );
        all.sort();
        all.dedup();
        all
    };
    let everywhere = block_in_place(|| {
        wait_for(Duration::from_secs(120), || {
            [&healthy, &down, &hung]
                .iter()
                .all(|b| b.sink.missing(&all) == 0)
        })
    });
    let missing: Vec<usize> = [&healthy, &down, &hung]
        .iter()
        .map(|b| b.sink.missing(&all))
        .collect();
    assert!(
        everywhere,
        "of {} acknowledged spans, missing at healthy, down, hung: {missing:?}; SDKs: {reports:?}\n{}",
        all.len(),
        up.logs()
    );
    let duplicated = healthy
        .sink
        .spans
        .lock()
        .unwrap()
        .values()
        .filter(|s| s.copies > 1)
        .count();
    assert_eq!(
        duplicated, 0,
        "the healthy destination received spans twice"
    );
    eprintln!(
        "{} spans acknowledged ({} before the restart), all delivered to each destination; SDKs: {reports:?}",
        all.len(),
        before_restart.len()
    );
    let status = block_in_place(|| up.interrupt());
    assert!(status.success(), "{}", up.logs());
}

/// How long a collector has to stop once `odigos up` is gone: its grace period (10 s) and
/// the time to put deliveries in progress back.
const STOP_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_odigos_up_with_a_destination_down_stops_its_collectors() {
    let hung = Backend::new(Mode::Hung);
    let down = Backend::new(Mode::Down);
    let files = [
        destination("hung", hung.port),
        destination("down", down.port),
    ];
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut up = block_in_place(|| Up::start(&files));
    block_in_place(|| up.wait_applied(1));
    let out = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", up.grpc());
    let sdk = Streamer::python(&endpoint, "shop", EXPORT_TIMEOUT, out.path());
    let sending = block_in_place(|| wait_for(Duration::from_secs(60), || sdk.acked().len() > 200));
    assert!(sending, "{}", up.logs());
    let pids = up.collector_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");

    up.child.kill().unwrap();
    up.child.wait().unwrap();
    let gone = block_in_place(|| wait_for(STOP_WITHIN, || pids.iter().all(|&pid| exited(pid))));
    assert!(
        gone,
        "collectors {pids:?} still run {STOP_WITHIN:?} after odigos up was killed:\n{}",
        up.logs()
    );
    drop(sdk);
}

/// Whether the process is gone (or a zombie: exited, not yet reaped).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[test]
fn a_collector_that_dies_is_restarted() {
    let up = Up::start(&[]);
    up.wait_applied(1);
    let before = up.collector_pids();
    assert_eq!(before.len(), 2, "{before:?}");
    let killed = before[0];
    std::process::Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap();
    let replaced = wait_for(Duration::from_secs(30), || {
        let now = up.collector_pids();
        now.len() == 2 && !now.contains(&killed)
    });
    assert!(
        replaced,
        "collector {killed} was not replaced:\n{}",
        up.logs()
    );
    assert!(
        up.logs().contains("agent exited; restarting it"),
        "{}",
        up.logs()
    );
    // The new one runs its config again.
    let state = up.wait_applied(1);
    assert_eq!(state["rollouts"]["gateway"]["applied"], 1, "{state:#}");
}
