//! odiglet under `odigos up`: an unmodified Python HTTP server, named by a Source of kind
//! Process, is traced with eBPF; its spans reach a Destination with the method, path, status
//! and kind of each request; disabling the Source stops them without reloading a program.
//! Needs root: under `CI=true` a machine without eBPF fails the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use odigos_tests::up::Up;
use odigos_tests::{attribute, http_get_as, items, json_lines, python, wait_for, workspace};
use serde_json::Value;

fn ebpf_available() -> bool {
    match odigos_ebpf::tracer::available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped outside CI: {e}");
            false
        }
        Err(e) => panic!("eBPF tracing cannot run here: {e}"),
    }
}

fn source(disabled: bool) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {{name: shop}}\nspec:\n  workload: {{kind: Process, name: 'http_app\\.py'}}\n  matchWorkloadNameAsRegex: true\n  otelServiceName: shop\n  disableInstrumentation: {disabled}\n"
    )
}

/// Starts the app on a port of its choosing.
fn start_app() -> (Child, u16) {
    let mut app = Command::new(python())
        .arg(workspace().join("tests/python/http_app.py"))
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(app.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    (app, port)
}

/// The status of odiglet's component `name`, as the fleet API shows it.
fn odiglet_component(up: &Up, name: &str) -> Option<(bool, String)> {
    let token = std::fs::read_to_string(up.path(".odigos/token")).unwrap();
    let body = http_get_as(up.opamp(), "/api/v1/agents", Some(token.trim()));
    let agents: Value = serde_json::from_str(&body).ok()?;
    let odiglet = agents
        .as_array()?
        .iter()
        .find(|a| a["non_identifying"]["odigos.role"] == "odiglet")?;
    let component = &odiglet["components"][name];
    Some((
        component["healthy"].as_bool()?,
        component["status"].as_str()?.to_string(),
    ))
}

/// `curl` GETs of `paths`, over one kept-alive connection; each one's total time in seconds.
fn curl(port: u16, paths: &[&str]) -> Vec<f64> {
    let mut command = Command::new("curl");
    command.args(["-s", "-w", "%{http_code} %{time_total}\\n"]);
    for path in paths {
        command.args(["-o", "/dev/null", &format!("http://127.0.0.1:{port}{path}")]);
    }
    let out = command.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect()
}

fn shop_spans(file: &std::path::Path) -> Vec<Value> {
    let requests = json_lines(file);
    items(&requests, "resourceSpans", "scopeSpans", "spans")
        .into_iter()
        .filter(|(resource, _, _)| attribute(resource, "service.name").as_deref() == Some("shop"))
        .map(|(resource, _, span)| {
            let mut span = span.clone();
            span["resource"] = resource.clone();
            span
        })
        .collect()
}

fn nanos(span: &Value, field: &str) -> u64 {
    span[field]
        .as_str()
        .map_or_else(|| span[field].as_u64().unwrap(), |s| s.parse().unwrap())
}

#[test]
fn an_unmodified_python_server_is_traced_and_a_disabled_source_stops_within_a_second() {
    if !ebpf_available() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("spans.jsonl");
    let destination = format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive}}\nspec:\n  type: file\n  signals: [TRACES]\n  data: {{FILE_PATH: {}}}\n",
        file.display()
    );
    let up = Up::start(&[("archive.yaml", destination), ("shop.yaml", source(false))]);
    assert!(up.output().contains("ebpf tracing   on"), "{}", up.output());
    up.wait_applied(1);
    let (mut app, port) = start_app();
    let component = format!("processes.{}", app.id());
    let traced = wait_for(Duration::from_secs(20), || {
        odiglet_component(&up, &component)
            .is_some_and(|(healthy, status)| healthy && status.contains("traced"))
    });
    assert!(
        traced,
        "odiglet does not trace the app: {:?}\n{}",
        odiglet_component(&up, &component),
        up.logs()
    );
    let (_, status) = odiglet_component(&up, &component).unwrap();
    assert!(
        status.contains("python") && status.contains("service shop"),
        "{status}"
    );
    let (_, programs) = odiglet_component(&up, "ebpf").unwrap();
    let instrumented = wait_for(Duration::from_secs(10), || {
        let condition = &up.state()["sources"][0]["condition"];
        condition["reason"] == "Instrumented"
            && condition["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&app.id().to_string())
    });
    assert!(instrumented, "{:#}", up.state()["sources"]);

    let times = curl(port, &["/hello?x=1", "/hello?x=2", "/hello?x=3", "/fail"]);
    assert_eq!(times.len(), 4);
    let arrived = wait_for(Duration::from_secs(20), || shop_spans(&file).len() >= 4);
    let spans = shop_spans(&file);
    assert!(
        arrived,
        "{} spans of shop arrived:\n{spans:#?}\n{}",
        spans.len(),
        up.logs()
    );
    assert_eq!(spans.len(), 4, "{spans:#?}");
    for (span, took) in spans.iter().zip(&times) {
        assert_eq!(span["kind"], 2, "SERVER: {span:#}");
        assert_eq!(
            attribute(span, "http.request.method").as_deref(),
            Some("GET")
        );
        let duration = nanos(span, "endTimeUnixNano") - nanos(span, "startTimeUnixNano");
        assert!(
            (duration as f64) < took * 1e9 && duration > 0,
            "the span lasts {duration} ns; curl measured {took} s: {span:#}"
        );
        assert_eq!(
            attribute(&span["resource"], "process.runtime.name").as_deref(),
            Some("python")
        );
        assert_eq!(
            attribute(&span["resource"], "process.pid"),
            Some(app.id().to_string())
        );
    }
    let paths: Vec<_> = spans
        .iter()
        .map(|s| attribute(s, "url.path").unwrap())
        .collect();
    assert_eq!(paths, ["/hello", "/hello", "/hello", "/fail"]);
    let codes: Vec<_> = spans
        .iter()
        .map(|s| attribute(s, "http.response.status_code").unwrap())
        .collect();
    assert_eq!(codes, ["200", "200", "200", "500"]);
    assert_eq!(
        spans[3]["status"]["code"], 2,
        "a 5xx is an error: {:#}",
        spans[3]
    );
    assert!(
        spans[..3]
            .iter()
            .all(|s| s["status"].get("code").is_none_or(|c| c == 0))
    );

    // Disabled: the process is no longer traced within a second of the edit.
    up.write("shop.yaml", &source(true));
    let edited = std::time::Instant::now();
    let stopped = wait_for(Duration::from_secs(5), || {
        odiglet_component(&up, &component).is_some_and(|(_, status)| status.contains("not traced"))
    });
    assert!(
        stopped,
        "{:?}\n{}",
        odiglet_component(&up, &component),
        up.logs()
    );
    let took = edited.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "tracing stopped {took:?} after the edit"
    );
    curl(port, &["/hello?after=disable"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        shop_spans(&file).len(),
        4,
        "spans after the Source was disabled"
    );
    assert_eq!(
        odiglet_component(&up, "ebpf").unwrap().1,
        programs,
        "programs were reloaded"
    );

    // Enabled again: spans resume.
    up.write("shop.yaml", &source(false));
    let resumed = wait_for(Duration::from_secs(5), || {
        odiglet_component(&up, &component).is_some_and(|(healthy, _)| healthy)
    });
    assert!(resumed, "{}", up.logs());
    curl(port, &["/hello?again=1"]);
    let again = wait_for(Duration::from_secs(20), || shop_spans(&file).len() == 5);
    assert!(again, "{:#?}", shop_spans(&file));
    app.kill().unwrap();
    app.wait().unwrap();
}
