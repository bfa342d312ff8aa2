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

/// As root, odiglet runs and keeps links to the files a Source's processes write their output
/// to: what a program prints to its redirected stdout reaches the logs Destination with the
/// Source's service name, lines printed before the Source came included. Needs root: under
/// `CI=true` a machine without eBPF fails.
#[test]
fn what_a_sources_processes_print_reaches_a_logs_destination() {
    match odigos_ebpf::tracer::available() {
        Ok(()) => {}
        Err(e) if std::env::var_os("CI").is_none() => return eprintln!("skipped outside CI: {e}"),
        Err(e) => panic!("odiglet cannot run here: {e}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printer.out");
    let mut printer = std::process::Command::new(odigos_tests::python())
        .args([
            "-u",
            "-c",
            "import sys, time\nfor i in range(10**6):\n    print(f'line {i}')\n    time.sleep(0.05)",
            "printer-marker",
        ])
        .stdout(std::fs::File::create(&printed).unwrap())
        .spawn()
        .unwrap();
    let out = dir.path().join("logs.jsonl");
    let source = "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {name: printer}\nspec:\n  workload: {kind: Process, name: 'printer-marker'}\n  matchWorkloadNameAsRegex: true\n  otelServiceName: printer\n";
    let up = Up::start(&[
        ("archive.yaml", destination(&out, "LOGS")),
        ("printer.yaml", source.to_string()),
    ]);
    up.wait_applied(1);
    let arrived = || {
        let (bodies, services) = received(&out);
        bodies.iter().any(|b| b == "line 0")
            && bodies.len() > 20
            && services.iter().all(|s| s == "printer")
    };
    let done = wait_for(Duration::from_secs(30), arrived);
    let _ = printer.kill();
    let _ = printer.wait();
    assert!(
        done,
        "the printer's lines reach the destination: {:?}\n{}",
        received(&out),
        up.logs()
    );
    let (bodies, _) = received(&out);
    let expected: Vec<String> = lines(0, bodies.len());
    assert_eq!(bodies, expected, "every line once, in order");
}
