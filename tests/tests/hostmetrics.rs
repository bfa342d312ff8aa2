//! The `hostmetrics` receiver of a real `odigos collector` on this machine: what it sends,
//! checked against `/proc` as the test reads it before and after.

use std::collections::BTreeMap;
use std::time::Duration;

use odigos_tests::{Collector, attribute, json_lines, wait_for};

/// `/proc/stat`'s cpu lines' first field (user ticks) by cpu, and its `processes`.
fn proc_stat() -> (BTreeMap<String, f64>, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let mut user = BTreeMap::new();
    let mut created = 0.0;
    for line in stat.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [cpu, ticks, ..] if cpu.starts_with("cpu") && cpu.len() > 3 => {
                user.insert(cpu.to_string(), ticks.parse().unwrap());
            }
            ["processes", n] => created = n.parse().unwrap(),
            _ => {}
        }
    }
    (user, created)
}

fn loopback_received() -> f64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .unwrap();
    line.split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn value(point: &serde_json::Value) -> f64 {
    point["asDouble"]
        .as_f64()
        .or_else(|| point["asInt"].as_str().and_then(|v| v.parse().ok()))
        .or_else(|| point["asInt"].as_f64())
        .unwrap_or(f64::NAN)
}

#[test]
fn host_metrics_agree_with_proc() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("metrics.jsonl");
    let (cpu_before, created_before) = proc_stat();
    let loopback_before = loopback_received();
    let collector = Collector::start(&format!(
        "receivers:\n  hostmetrics:\n    collection_interval: 1s\n    initial_delay: 0s\n    scrapers:\n      cpu:\n      memory:\n      load:\n      disk:\n      filesystem:\n      network:\n      paging:\n      processes:\n      process: {{include: {{names: [odigos]}}}}\nexporters:\n  file: {{path: {}}}\nservice:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines:\n    metrics: {{receivers: [hostmetrics], exporters: [file]}}\n",
        out.display()
    ));
    assert!(
        wait_for(Duration::from_secs(15), || !json_lines(&out).is_empty()),
        "a collection arrives: {}",
        collector.logs()
    );
    let pid = collector.pid();
    let logs = collector.stop();
    let (cpu_after, created_after) = proc_stat();
    let loopback_after = loopback_received();
    assert!(!logs.contains("scraper failed"), "{logs}");

    let requests = json_lines(&out);
    let request = &requests[0];
    let metrics: Vec<(serde_json::Value, serde_json::Value)> = request["resourceMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["scopeMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["metrics"].as_array().cloned().unwrap_or_default())
                .map(|m| (r["resource"].clone(), m))
        })
        .collect();
    let points = |name: &str| -> Vec<serde_json::Value> {
        metrics
            .iter()
            .filter(|(_, m)| m["name"] == name)
            .flat_map(|(_, m)| {
                let data = if m["sum"].is_object() {
                    &m["sum"]
                } else {
                    &m["gauge"]
                };
                data["dataPoints"].as_array().cloned().unwrap_or_default()
            })
            .collect()
    };

    // Memory: the states make up MemTotal.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: f64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let memory: f64 = points("system.memory.usage")
        .iter()
        .filter(|p| attribute(p, "state").as_deref() != Some("slab_unreclaimable"))
        .map(value)
        .sum();
    assert_eq!(memory, total_kib * 1024.0);

    // CPU time: every CPU, user time between the two readings of /proc/stat (in USER_HZ, 100
    // ticks a second on Linux).
    let ticks = 100.0;
    let user: BTreeMap<String, f64> = points("system.cpu.time")
        .iter()
        .filter(|p| attribute(p, "state").as_deref() == Some("user"))
        .map(|p| (attribute(p, "cpu").unwrap(), value(p)))
        .collect();
    assert_eq!(
        user.keys().collect::<Vec<_>>(),
        cpu_before.keys().collect::<Vec<_>>()
    );
    for (cpu, seconds) in &user {
        let (low, high) = (cpu_before[cpu] / ticks, cpu_after[cpu] / ticks);
        assert!(
            (low..=high).contains(seconds),
            "{cpu}: {low} <= {seconds} <= {high}"
        );
    }

    let created = value(&points("system.processes.created")[0]);
    assert!(
        (created_before..=created_after).contains(&created),
        "{created_before} <= {created} <= {created_after}"
    );

    let loopback = points("system.network.io")
        .into_iter()
        .find(|p| {
            attribute(p, "device").as_deref() == Some("lo")
                && attribute(p, "direction").as_deref() == Some("receive")
        })
        .map(|p| value(&p))
        .unwrap();
    assert!((loopback_before..=loopback_after).contains(&loopback));

    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let sent = value(&points("system.cpu.load_average.15m")[0]);
    assert!((sent - load).abs() < 0.5, "load {sent} vs {load}");

    // The root filesystem's bytes make up its size.
    let stat = root_filesystem_bytes();
    let root: f64 = points("system.filesystem.usage")
        .iter()
        .filter(|p| attribute(p, "mountpoint").as_deref() == Some("/"))
        .map(value)
        .sum();
    assert_eq!(root, stat, "used + free + reserved of /");

    // The collector itself, as a process resource.
    let process = metrics
        .iter()
        .find(|(resource, m)| {
            m["name"] == "process.memory.usage"
                && attribute(resource, "process.pid") == Some(pid.to_string())
        })
        .expect("the collector's own process");
    let command_line = attribute(&process.0, "process.command_line").unwrap();
    assert!(
        command_line.contains("collector --config"),
        "{command_line}"
    );
    assert!(
        value(&process.1["sum"]["dataPoints"][0]) > 1e6,
        "its resident memory"
    );
}

/// Blocks times fragment size of `/`, from `stat -f`.
fn root_filesystem_bytes() -> f64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "--format=%b %S", "/"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
    fields.next().unwrap() * fields.next().unwrap()
}
