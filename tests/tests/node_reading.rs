//! `odigos up` with a logs Destination: the node collector reads the files a Source's
//! `odigos.io/log-paths` annotation names; when the last logs Destination goes, the reading
//! stops in place, and when one is back it resumes where it stopped, no collector restarted.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use odigos_tests::up::Up;
use odigos_tests::{attribute, items, json_lines, wait_for};

fn destination(out: &Path, signal: &str) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive}}\nspec:\n  type: file\n  signals: [{signal}]\n  data: {{FILE_PATH: {}}}\n",
        out.display()
    )
}

fn append(path: &Path, from: usize, to: usize) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for i in from..to {
        writeln!(file, "line {i}").unwrap();
    }
}

/// The bodies of the log records in `out`, and the service names they came with.
fn received(out: &Path) -> (Vec<String>, Vec<String>) {
    let requests = json_lines(out);
    let records = items(&requests, "resourceLogs", "scopeLogs", "logRecords");
    let bodies = records
        .iter()
        .map(|(_, _, r)| {
            r["body"]["stringValue"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let services = records
        .iter()
        .map(|(resource, _, _)| attribute(resource, "service.name").unwrap_or_default())
        .collect();
    (bodies, services)
}

fn lines(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

#[test]
fn a_sources_log_files_reach_a_logs_destination_and_stop_and_resume_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    std::fs::write(&log, "written before\n").unwrap();
    let out = dir.path().join("logs.jsonl");
    let source = format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata:\n  name: worker\n  annotations: {{odigos.io/log-paths: '{}'}}\nspec:\n  workload: {{kind: Process, name: worker}}\n  otelServiceName: worker-api\n",
        log.display()
    );
    let up = Up::start(&[
        ("archive.yaml", destination(&out, "LOGS")),
        ("worker.yaml", source),
    ]);
    up.wait_applied(1);
    let pids = up.collector_pids();
    // The receiver has looked at the file once: what was there stays unread.
    std::thread::sleep(Duration::from_millis(500));
    append(&log, 0, 50);
    assert!(
        wait_for(Duration::from_secs(20), || received(&out).0.len() >= 50),
        "the lines reach the destination: {:?}\n{}",
        received(&out).0,
        up.logs()
    );
    let (bodies, services) = received(&out);
    assert_eq!(bodies, lines(0, 50));
    assert!(services.iter().all(|s| s == "worker-api"), "{services:?}");

    // No logs Destination: nothing is read, and nothing restarts.
    up.write("archive.yaml", &destination(&out, "TRACES"));
    up.wait_applied(2);
    append(&log, 50, 60);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        received(&out).0.len(),
        50,
        "not read while no Destination takes logs"
    );

    // Back: reading resumes where it stopped.
    up.write("archive.yaml", &destination(&out, "LOGS"));
    up.wait_applied(3);
    append(&log, 60, 70);
    assert!(
        wait_for(Duration::from_secs(20), || received(&out).0.len() >= 70),
        "{:?}\n{}",
        received(&out).0,
        up.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        received(&out).0,
        lines(0, 70),
        "nothing lost, nothing repeated"
    );
    assert_eq!(up.collector_pids(), pids, "no collector restarted");
}
