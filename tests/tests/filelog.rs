//! The `filelog` receiver of a real `odigos collector`, reading files a writer process keeps
//! writing and rotating (by rename, by copytruncate) while the collector is stopped cleanly,
//! killed with SIGKILL, and started again each time: every line arrives, in order per file;
//! none repeats across the clean restart, and across the kill only what was in flight.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odigos_tests::{Collector, items, json_lines, python, wait_for, workspace};

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
