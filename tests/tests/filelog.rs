//! The `filelog` receiver of a real `odigos collector`, reading files a writer process keeps
//! writing and rotating (by rename, by copytruncate) while the collector is stopped cleanly,
//! killed with SIGKILL, and started again each time: every line arrives, in order per file;
//! none repeats across the clean restart, and across the kill only what was in flight. The
//! records are the ones the OpenTelemetry Collector makes of the same files, and a directory
//! the collector may not read is said once and read once it may.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odigos_tests::{
    Collector, attribute, is_root, items, json_lines, otelcol_contrib, python, wait_for, workspace,
};

const LINES: usize = 3000;

/// Each file's line numbers, in the order they arrived.
fn received(out: &Path) -> BTreeMap<String, Vec<usize>> {
    let requests = json_lines(out);
    let mut files: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, _, record) in items(&requests, "resourceLogs", "scopeLogs", "logRecords") {
        let body = record["body"]["stringValue"].as_str().unwrap_or_default();
        let (file, number) = body.split_once(' ').expect("`<file> <n>`");
        files
            .entry(file.to_string())
            .or_default()
            .push(number.parse().expect("a line number"));
    }
    files
}

fn repeats(numbers: &[usize]) -> usize {
    let mut seen = std::collections::HashSet::new();
    numbers.iter().filter(|n| !seen.insert(**n)).count()
}

#[test]
fn lines_of_rotated_files_survive_a_clean_restart_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&storage).unwrap();
    let out = dir.path().join("out.jsonl");
    let config = format!(
        "extensions:\n  file_storage: {{directory: {storage}}}\nreceivers:\n  filelog:\n    include: ['{logs}/*.log']\n    start_at: beginning\n    storage: file_storage\nexporters:\n  file: {{path: {out}}}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  extensions: [file_storage]\n  pipelines:\n    logs: {{receivers: [filelog], exporters: [file]}}\n",
        storage = storage.display(),
        logs = logs.display(),
        out = out.display(),
    );
    let collector = Collector::start(&config);
    let started = Instant::now();
    let mut writer = Command::new(python())
        .arg(workspace().join("tests/python/log_writer.py"))
        .arg(&logs)
        .arg(LINES.to_string())
        .arg("6")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    // A clean stop and start: nothing repeats.
    std::thread::sleep(Duration::from_millis(1500));
    collector.stop();
    let collector = Collector::start(&config);
    std::thread::sleep(Duration::from_millis(1000));
    let before_kill = received(&out);
    for (file, numbers) in &before_kill {
        assert_eq!(
            repeats(numbers),
            0,
            "{file}: repeated across a clean restart"
        );
    }

    // Killed: at most what was in flight is read again.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed()));
    collector.kill();
    let collector = Collector::start(&config);
    let status = writer.wait().unwrap();
    assert!(status.success());

    let complete = || {
        let files = received(&out);
        ["a", "b", "c"].iter().all(|f| {
            files
                .get(*f)
                .is_some_and(|n| n.iter().collect::<std::collections::HashSet<_>>().len() == LINES)
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), complete),
        "every line arrives: {:?}\n{}",
        received(&out)
            .iter()
            .map(|(f, n)| (f.clone(), n.len()))
            .collect::<Vec<_>>(),
        collector.logs()
    );
    let log = collector.stop();
    let files = received(&out);
    for (file, numbers) in &files {
        // In order, but for one step back where the kill made the last read come again.
        let steps_back = numbers.windows(2).filter(|w| w[1] <= w[0]).count();
        assert!(
            steps_back <= 1,
            "{file}: out of order {steps_back} times: {numbers:?}"
        );
        let repeated = repeats(numbers);
        let in_flight = numbers.len() - before_kill[file].len();
        assert!(
            repeated <= in_flight,
            "{file}: {repeated} lines repeated, more than could be in flight"
        );
        if repeated > 0 {
            // What repeats is one contiguous run: the read in flight at the kill.
            let back = numbers.windows(2).position(|w| w[1] <= w[0]).unwrap() + 1;
            let replayed = &numbers[back..back + repeated];
            assert!(
                replayed.windows(2).all(|w| w[1] == w[0] + 1),
                "{file}: the repeated lines are one run: {replayed:?}"
            );
        }
    }
    assert!(!log.contains("ERROR"), "{log}");
}

/// The same files read with the same `filelog` config by our collector and by the OpenTelemetry
/// Collector (otelcol-contrib, which sends what it reads over OTLP/HTTP to ours): both export
/// the same records (body, timestamp, attributes, resource), but where otelcol loses what a
/// container wrote, which is said below.
#[test]
fn records_are_the_ones_otelcol_contrib_makes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut plain =
        b"first line\n\ncaf\xc3\xa9 \xc3\xbcn\xc3\xafcode\nbad \xff\xfe bytes\n  indented\ttabs  \r\n"
            .to_vec();
    plain.extend_from_slice(&[b'y'; 3000]);
    plain.extend_from_slice(b"\nafter the long line\n");
    std::fs::write(logs.join("app.log"), &plain).unwrap();
    // The kubelet's layout: <namespace>_<pod>_<uid>/<container>/<restarts>.log.
    let pod = dir
        .path()
        .join("pods/shop_web-5d9c7b-x2x7q_0a1b2c3d-1111-2222-3333-444455556666");
    let write = |container: &str, file: &str, text: &str| {
        std::fs::create_dir_all(pod.join(container)).unwrap();
        std::fs::write(pod.join(container).join(file), text).unwrap();
    };
    write(
        "nginx",
        "0.log",
        "2026-11-30T10:00:00.123456789Z stdout F GET /cart 200\n\
         2026-11-30T10:00:02.5Z stderr F warning: slow upstream  \n\
         2026-11-30T10:00:03Z stdout F\n",
    );
    // A line the runtime wrote in pieces (it does so past 16 KiB).
    write(
        "pieces",
        "0.log",
        "2026-11-30T10:00:01.000000001Z stdout P a long line in \n\
         2026-11-30T10:00:01.000000002Z stdout P three \n\
         2026-11-30T10:00:01.000000003Z stdout F pieces\n",
    );
    // Docker's JSON lines: `log` ends with a newline where the line does.
    write(
        "docker",
        "2.log",
        "{\"log\":\"[INFO] plugin/reload: Running\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:00:03.25Z\"}\n\
         {\"log\":\"split \",\"stream\":\"stderr\",\"time\":\"2026-11-30T10:00:04Z\"}\n\
         {\"log\":\"json line\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-30T10:00:04.5Z\"}\n",
    );
    let receivers = format!(
        "receivers:\n  filelog/plain:\n    include: ['{logs}/*.log']\n    start_at: beginning\n    include_file_path: true\n    max_log_size: 1024\n    resource: {{deployment.environment: test}}\n    attributes: {{team: logs}}\n  filelog/containers:\n    include: ['{pods}/*/*/*.log']\n    start_at: beginning\n    include_file_path: true\n    operators: [{{type: container}}]\n",
        logs = logs.display(),
        pods = dir.path().join("pods").display(),
    );

    let ours = dir.path().join("ours.jsonl");
    let peer = dir.path().join("peer.jsonl");
    let mut collector = Collector::start(&format!(
        "{receivers}  otlp:\n    protocols: {{http: {{endpoint: 127.0.0.1:0}}}}\nexporters:\n  file/ours: {{path: {ours}}}\n  file/peer: {{path: {peer}}}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines:\n    logs/ours: {{receivers: [filelog/plain, filelog/containers], exporters: [file/ours]}}\n    logs/peer: {{receivers: [otlp], exporters: [file/peer]}}\n",
        ours = ours.display(),
        peer = peer.display(),
    ));
    let port = collector.port("http");
    let otelcol_config = dir.path().join("otelcol.yaml");
    std::fs::write(
        &otelcol_config,
        format!(
            "{receivers}exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:{port}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines:\n    logs: {{receivers: [filelog/plain, filelog/containers], exporters: [otlphttp]}}\n"
        ),
    )
    .unwrap();
    let otelcol_log = dir.path().join("otelcol.log");
    let otelcol = Command::new(otelcol_contrib())
        .arg("--config")
        .arg(&otelcol_config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&otelcol_log).unwrap())
        .spawn()
        .unwrap();
    let _otelcol = KillOnDrop(otelcol);

    // Each file's records, less the time each was read, with their resource, in order.
    let records = |out: &Path| {
        let requests = json_lines(out);
        let mut files: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for (resource, _, record) in items(&requests, "resourceLogs", "scopeLogs", "logRecords") {
            let path = attribute(record, "log.file.path").expect("log.file.path");
            let mut record = record.clone();
            record
                .as_object_mut()
                .unwrap()
                .remove("observedTimeUnixNano");
            sort_attributes(&mut record);
            let mut resource = resource.clone();
            sort_attributes(&mut resource);
            record["resource"] = resource;
            let file = path.rsplit('/').take(2).collect::<Vec<_>>().join(" ");
            files.entry(file).or_default().push(record);
        }
        for records in files.values_mut() {
            records.sort_by_key(|r| r.to_string());
        }
        files
    };
    let count = |files: &BTreeMap<String, Vec<_>>| files.values().map(Vec::len).sum::<usize>();
    // 8 plain records (the long line in 3), 3 + 1 from the runtime, and from Docker 2 (ours)
    // or 3 (otelcol's).
    let arrived = wait_for(Duration::from_secs(20), || {
        count(&records(&ours)) >= 14 && count(&records(&peer)) >= 15
    });
    std::thread::sleep(Duration::from_millis(300));
    let (mut ours, mut peer) = (records(&ours), records(&peer));
    assert!(
        arrived,
        "ours: {ours:#?}\notelcol: {peer:#?}\n{}",
        std::fs::read_to_string(&otelcol_log).unwrap_or_default()
    );
    let bodies = |records: Option<Vec<serde_json::Value>>| -> Vec<String> {
        let mut bodies: Vec<String> = (records.unwrap_or_default().iter())
            .map(|r| {
                r["body"]["stringValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        bodies.sort();
        bodies
    };

    // Where otelcol loses what was written, ours keeps it. otelcol trims each piece of a
    // line the runtime split before joining them...
    let pieces = "0.log pieces";
    assert_eq!(bodies(ours.remove(pieces)), ["a long line in three pieces"]);
    assert_eq!(bodies(peer.remove(pieces)), ["a long line inthreepieces"]);
    // ...and neither joins Docker's pieces nor takes off the newline that ends a line.
    let docker = "2.log docker";
    assert_eq!(
        bodies(ours.remove(docker)),
        ["[INFO] plugin/reload: Running", "split json line"]
    );
    assert_eq!(
        bodies(peer.remove(docker)),
        ["[INFO] plugin/reload: Running\n", "json line\n", "split "]
    );
    // Everything else is the same: bodies, timestamps, attributes and resources.
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        peer.keys().collect::<Vec<_>>()
    );
    for (file, records) in &ours {
        assert_eq!(records, &peer[file], "{file}: ours, then otelcol's");
    }
    assert_eq!(count(&ours), 8 + 3, "{ours:#?}");
    assert!(!collector.stop().contains("ERROR"));
}

/// A directory the collector may not look into is said once, with its reason, while the files
/// it may read are read; once it may, its files are read too. The collector runs as `nobody`,
/// since root reads every directory.
#[test]
fn a_directory_it_may_not_read_is_said_once_and_read_once_it_may() {
    if !is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "running the collector as another user needs root (CI runs as root)"
        );
        eprintln!("skipped: running the collector as another user needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    mode(dir.path(), 0o755);
    let (open, closed, out) = (
        dir.path().join("open"),
        dir.path().join("closed"),
        dir.path().join("out"),
    );
    for d in [&open, &closed, &out] {
        std::fs::create_dir(d).unwrap();
    }
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    std::fs::write(open.join("a.log"), "from open\n").unwrap();
    std::fs::write(closed.join("b.log"), "from closed\n").unwrap();
    mode(&closed, 0o700);
    let records = out.join("records.jsonl");
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  filelog:\n    include: ['{}/*/*.log']\n    start_at: beginning\n    poll_interval: 100ms\nexporters:\n  file: {{path: {}}}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines:\n    logs: {{receivers: [filelog], exporters: [file]}}\n",
            dir.path().display(),
            records.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("collector.log");
    let collector = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(odigos_tests::odigos_binary())
        .args(["collector", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _collector = KillOnDrop(collector);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let bodies = || {
        let requests = json_lines(&records);
        let found = items(&requests, "resourceLogs", "scopeLogs", "logRecords");
        (found.iter())
            .map(|(_, _, r)| {
                r["body"]["stringValue"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(20), || bodies() == ["from open"]),
        "{:?}\n{}",
        bodies(),
        logs()
    );
    // Ten polls later, said once.
    std::thread::sleep(Duration::from_secs(1));
    let said: Vec<String> = (logs().lines())
        .filter(|l| l.contains("cannot read"))
        .map(String::from)
        .collect();
    assert_eq!(said.len(), 1, "{}", logs());
    assert!(
        said[0].contains(&closed.display().to_string()) && said[0].contains("Permission denied"),
        "{said:?}"
    );
    mode(&closed, 0o755);
    assert!(
        wait_for(Duration::from_secs(10), || bodies()
            == ["from open", "from closed"]),
        "{:?}\n{}",
        bodies(),
        logs()
    );
}

fn sort_attributes(object: &mut serde_json::Value) {
    if let Some(list) = object
        .get_mut("attributes")
        .and_then(serde_json::Value::as_array_mut)
    {
        list.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
