//! odiglet under `odigos up`: unmodified HTTP servers in Python, Node.js, Go and Rust, named by
//! Sources of kind Process, are traced with eBPF; their spans reach a Destination with the
//! method, path, status and kind of each request; a request through three services is one
//! trace; disabling a Source stops its spans without reloading a program.
//! Needs root: under `CI=true` a machine without eBPF (or without the Go server) fails.

use std::io::{BufRead, BufReader, Read, Write};
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
    process_source("shop", "http_app\\.py 0 shop", true, "shop", disabled)
}

/// A Source of kind Process named `name` that selects `workload` (a regex or an executable).
fn process_source(
    name: &str,
    workload: &str,
    regex: bool,
    service: &str,
    disabled: bool,
) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {{name: {name}}}\nspec:\n  workload: {{kind: Process, name: '{workload}'}}\n  matchWorkloadNameAsRegex: {regex}\n  otelServiceName: {service}\n  disableInstrumentation: {disabled}\n"
    )
}

/// Starts the Python app on a port of its choosing. Sources are matched against every process
/// on the machine, so `marker`, on its command line, keeps tests that run at once apart.
fn start_app(marker: &str) -> (App, u16) {
    start(python_app(marker))
}

fn python_app(marker: &str) -> Command {
    python_server("http_app.py", marker)
}

/// The Python test server `script` (in `tests/python`), told to listen on any port, with
/// `marker` on its command line for a Source to pick it by.
fn python_server(script: &str, marker: &str) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace().join("tests/python").join(script))
        .args(["0", marker]);
    command
}

/// A test server, killed when dropped, also when the test fails.
struct App(Child);

impl App {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command`, told to listen on port 0, and reads the port it got from its first line.
fn start(mut command: Command) -> (App, u16) {
    let mut app = command.stdout(Stdio::piped()).spawn().unwrap();
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
    (App(app), port)
}

/// `odigos up` with a file Destination and a Source `name` (service `name`) that selects a
/// Python test server started with marker `name`, once odiglet traces that server.
struct TracedApp {
    up: Up,
    file: std::path::PathBuf,
    app: App,
    port: u16,
    _out: tempfile::TempDir,
}

fn traced_python_app(name: &str) -> TracedApp {
    traced_python_server("http_app.py", name)
}

fn traced_python_server(script: &str, name: &str) -> TracedApp {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("spans.jsonl");
    let pattern = format!("{} 0 {name}", script.replace('.', "\\."));
    let up = Up::start(&[
        ("archive.yaml", file_destination(&file)),
        (
            &format!("{name}.yaml"),
            process_source(name, &pattern, true, name, false),
        ),
    ]);
    up.wait_applied(1);
    let (app, port) = start(python_server(script, name));
    wait_traced(&up, app.id());
    TracedApp {
        up,
        file,
        app,
        port,
        _out: out,
    }
}

/// Waits until odiglet reports process `pid` traced.
fn wait_traced(up: &Up, pid: u32) {
    let component = format!("processes.{pid}");
    let traced = wait_for(Duration::from_secs(20), || {
        odiglet_component(up, &component)
            .is_some_and(|(healthy, status)| healthy && status.ends_with(", traced"))
    });
    assert!(
        traced,
        "odiglet does not trace {pid}: {:?}\n{}",
        odiglet_component(up, &component),
        up.logs()
    );
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

/// The ids of odiglet's eBPF programs, from its `ebpf` status `N programs attached, ids A,B,...; maps: ...`.
fn program_ids(up: &Up) -> String {
    let (_, status) = odiglet_component(up, "ebpf").unwrap();
    let ids = status.split("ids ").nth(1).unwrap_or_default();
    ids.split(';').next().unwrap_or_default().to_string()
}

/// A number in odiglet's `ebpf` status: what precedes `what` (`connections`,
/// `connections assembled`).
fn ebpf_count(up: &Up, what: &str) -> usize {
    let (_, status) = odiglet_component(up, "ebpf").unwrap();
    let before = status.split(&format!(" {what}")).next().unwrap_or_default();
    before
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(usize::MAX)
}

/// The pid that served `GET /` on a new connection, as the prefork and forking servers answer.
fn served_by(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
    spans_of(file, "shop")
}

/// The spans of `service` in the file destination's output, each with its resource.
fn spans_of(file: &std::path::Path, service: &str) -> Vec<Value> {
    all_spans(file)
        .into_iter()
        .filter(|span| attribute(&span["resource"], "service.name").as_deref() == Some(service))
        .collect()
}

fn all_spans(file: &std::path::Path) -> Vec<Value> {
    let requests = json_lines(file);
    items(&requests, "resourceSpans", "scopeSpans", "spans")
        .into_iter()
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
    let TracedApp {
        up,
        file,
        app,
        port,
        _out,
    } = traced_python_app("shop");
    assert!(up.output().contains("ebpf tracing   on"), "{}", up.output());
    let component = format!("processes.{}", app.id());
    let (_, status) = odiglet_component(&up, &component).unwrap();
    assert!(
        status.contains("python") && status.contains("service shop"),
        "{status}"
    );
    let programs = program_ids(&up);
    let instrumented = wait_for(Duration::from_secs(10), || {
        let condition = &up.state()["sources"][0]["condition"];
        condition["reason"] == "Instrumented"
            && condition["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&app.id().to_string())
    });
    assert!(instrumented, "{:#}", up.state()["sources"]);
    let described = up.describe(&["source", "shop"]);
    assert!(
        described.contains(&format!("{}  python3", app.id())) && described.contains("(python 3"),
        "{described}"
    );

    let times = curl(port, &["/hello?x=1", "/hello?x=2", "/hello?x=3", "/fail"]);
    assert_eq!(times.len(), 4);
    let arrived = wait_for(Duration::from_secs(20), || shop_spans(&file).len() >= 4);
    let mut spans = shop_spans(&file);
    spans.sort_by_key(|s| nanos(s, "startTimeUnixNano"));
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
    assert_eq!(program_ids(&up), programs, "programs were reloaded");

    // Enabled again: spans resume.
    up.write("shop.yaml", &source(false));
    let resumed = wait_for(Duration::from_secs(5), || {
        odiglet_component(&up, &component).is_some_and(|(healthy, _)| healthy)
    });
    assert!(resumed, "{}", up.logs());
    curl(port, &["/hello?again=1"]);
    let again = wait_for(Duration::from_secs(20), || shop_spans(&file).len() == 5);
    assert!(again, "{:#?}", shop_spans(&file));
}

/// Every character but letters and digits as `%XX`: a URL inside a query.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn file_destination(file: &std::path::Path) -> String {
    format!(
        "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: archive}}\nspec:\n  type: file\n  signals: [TRACES]\n  data: {{FILE_PATH: {}}}\n",
        file.display()
    )
}

#[test]
fn servers_in_four_languages_are_traced_and_a_request_through_three_services_is_one_trace() {
    if !ebpf_available() {
        return;
    }
    let go_app = match std::env::var_os("ODIGOS_TEST_GO_APP") {
        Some(path) => std::path::PathBuf::from(path),
        None if std::env::var_os("CI").is_none() => {
            eprintln!("skipped outside CI: ODIGOS_TEST_GO_APP is not set (test.sh builds it)");
            return;
        }
        None => panic!("ODIGOS_TEST_GO_APP is not set: test.sh builds the Go server"),
    };
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("spans.jsonl");
    let up = Up::start(&[
        ("archive.yaml", file_destination(&file)),
        (
            "python.yaml",
            process_source(
                "python",
                "http_app\\.py 0 languages",
                true,
                "in-python",
                false,
            ),
        ),
        (
            "node.yaml",
            process_source("node", "http_app\\.js", true, "in-node", false),
        ),
        (
            "go.yaml",
            process_source("go", "go-app", false, "in-go", false),
        ),
        (
            "rust.yaml",
            process_source("rust", "http_app", false, "in-rust", false),
        ),
    ]);
    up.wait_applied(1);
    let mut node = Command::new("node");
    node.args([
        workspace().join("tests/node/http_app.js").to_str().unwrap(),
        "0",
    ]);
    let mut go = Command::new(&go_app);
    go.arg("0");
    let mut rust = Command::new(env!("CARGO_BIN_EXE_http_app"));
    rust.arg("0");
    let mut apps: Vec<(&str, App, u16)> = Vec::new();
    for (service, command) in [
        ("in-python", python_app("languages")),
        ("in-node", node),
        ("in-go", go),
        ("in-rust", rust),
        // The end of the chain below.
        ("in-python", python_app("languages")),
    ] {
        let (child, port) = start(command);
        apps.push((service, child, port));
    }
    for (_, child, _) in &apps {
        wait_traced(&up, child.id());
    }

    // The runtime of each, in its Source's InstrumentationConfig (a Source that names an
    // executable has one).
    let sources = up.state()["sources"].clone();
    for (source, language) in [("default/go", "go"), ("default/rust", "native")] {
        let entry = sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == source)
            .unwrap();
        let details = &entry["instrumentation_config"]["status"]["runtimeDetailsByContainer"][0];
        assert_eq!(details["language"], language, "{entry:#}");
    }
    let go = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "default/go")
        .unwrap();
    let version =
        &go["instrumentation_config"]["status"]["runtimeDetailsByContainer"][0]["runtimeVersion"];
    assert!(
        version
            .as_str()
            .is_some_and(|v| v.starts_with("go1.23") || v.starts_with("1.23")),
        "{go:#}"
    );

    // Each server: a request that succeeds and one that fails, as SERVER spans.
    for (service, _, port) in &apps[..4] {
        let times = curl(*port, &["/hello?n=1", "/fail"]);
        let arrived = wait_for(Duration::from_secs(20), || {
            spans_of(&file, service).len() >= 2
        });
        let mut spans = spans_of(&file, service);
        // Batches may be delivered out of order: the spans in the order of the requests.
        spans.sort_by_key(|s| nanos(s, "startTimeUnixNano"));
        assert!(
            arrived && spans.len() == 2,
            "{service}: {spans:#?}\n{:?}\n{}",
            odiglet_component(&up, "spans"),
            up.logs()
        );
        for ((span, took), (path, code)) in spans
            .iter()
            .zip(&times)
            .zip([("/hello", "200"), ("/fail", "500")])
        {
            assert_eq!(span["kind"], 2, "{service}: {span:#}");
            assert_eq!(
                attribute(span, "url.path").as_deref(),
                Some(path),
                "{service}: {span:#}"
            );
            assert_eq!(
                attribute(span, "http.response.status_code").as_deref(),
                Some(code),
                "{service}: {span:#}"
            );
            let duration = nanos(span, "endTimeUnixNano") - nanos(span, "startTimeUnixNano");
            assert!(
                (duration as f64) < took * 1e9,
                "{service}: {duration} ns, curl took {took} s"
            );
        }
    }

    // Python calls Go, which calls another Python: one trace, each hop the child of the last.
    let (first, go, last) = (apps[0].2, apps[2].2, apps[4].2);
    let inner = format!("http://127.0.0.1:{last}/hello");
    let via_go = format!("http://127.0.0.1:{go}/chain?next={}", encoded(&inner));
    curl(first, &[&format!("/chain?next={}", encoded(&via_go))]);
    let trace = || -> Vec<Value> {
        let all = all_spans(&file);
        let Some(root) = all.iter().find(|s| {
            attribute(s, "url.path").as_deref() == Some("/chain")
                && s["kind"] == 2
                && attribute(&s["resource"], "service.name").as_deref() == Some("in-python")
        }) else {
            return Vec::new();
        };
        all.iter()
            .filter(|s| s["traceId"] == root["traceId"])
            .cloned()
            .collect()
    };
    let whole = wait_for(Duration::from_secs(20), || trace().len() >= 5);
    let spans = trace();
    assert!(whole && spans.len() == 5, "{spans:#?}\n{}", up.logs());
    let find = |service: &str, kind: u64, pid: u32| -> &Value {
        spans
            .iter()
            .find(|s| {
                attribute(&s["resource"], "service.name").as_deref() == Some(service)
                    && s["kind"] == kind
                    && attribute(&s["resource"], "process.pid") == Some(pid.to_string())
            })
            .unwrap_or_else(|| panic!("no {service} span of kind {kind} from {pid}: {spans:#?}"))
    };
    let (first_pid, go_pid, last_pid) = (apps[0].1.id(), apps[2].1.id(), apps[4].1.id());
    let hops = [
        find("in-python", 2, first_pid),
        find("in-python", 3, first_pid),
        find("in-go", 2, go_pid),
        find("in-go", 3, go_pid),
        find("in-python", 2, last_pid),
    ];
    assert_eq!(
        hops[0]["parentSpanId"], "",
        "the first hop is the root: {:#}",
        hops[0]
    );
    for pair in hops.windows(2) {
        assert_eq!(
            pair[1]["parentSpanId"], pair[0]["spanId"],
            "{:#} should be the child of {:#}",
            pair[1], pair[0]
        );
    }
}

#[test]
fn a_process_that_dies_mid_request_leaves_partial_spans_and_nothing_behind() {
    if !ebpf_available() {
        return;
    }
    let TracedApp {
        up,
        file,
        mut app,
        port,
        _out,
    } = traced_python_app("dying");
    let base = ebpf_count(&up, "connections");
    // The app calls a server that never answers, so it is still in the middle of both the
    // request it serves and the one it sends when it is killed.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next = format!(
        "http://127.0.0.1:{}/never",
        silent.local_addr().unwrap().port()
    );
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        client,
        "GET /chain?next={next} HTTP/1.1\r\nHost: dying\r\n\r\n"
    )
    .unwrap();
    // Once its request has arrived, the app has sent it.
    let (mut called, _) = silent.accept().unwrap();
    let mut request = Vec::new();
    let mut byte = [0];
    while !request.ends_with(b"\r\n\r\n") && called.read(&mut byte).unwrap() == 1 {
        request.push(byte[0]);
    }
    app.0.kill().unwrap();
    app.0.wait().unwrap();

    let cut = |kind: i64| {
        spans_of(&file, "dying").into_iter().find(|s| {
            s["kind"].as_i64() == Some(kind)
                && attribute(s, "odigos.partial").as_deref() == Some("true")
        })
    };
    let arrived = wait_for(Duration::from_secs(10), || {
        cut(2).is_some() && cut(3).is_some()
    });
    assert!(arrived, "{:#?}\n{}", spans_of(&file, "dying"), up.logs());
    let server = cut(2).unwrap();
    assert_eq!(attribute(&server, "url.path").as_deref(), Some("/chain"));
    assert_eq!(attribute(&server, "http.response.status_code"), None);
    assert_eq!(
        attribute(&cut(3).unwrap(), "url.path").as_deref(),
        Some("/never")
    );
    let settled = wait_for(Duration::from_secs(10), || {
        ebpf_count(&up, "connections") <= base && ebpf_count(&up, "connections assembled") == 0
    });
    assert!(settled, "base {base}: {:?}", odiglet_component(&up, "ebpf"));
}

/// odiglet alone under an OpAMP server, as a node agent runs in a cluster: a config naming a
/// field it does not know, or a regex that does not compile, is refused whole with what is
/// wrong and where, and the one before keeps tracing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odiglet_refuses_a_bad_remote_config_and_keeps_tracing_with_the_last_good_one() {
    use odigos_server::http::{Options, Server};
    use odigos_server::opamp::{ConfigStatus, Selector};
    use odigos_tests::traffic::{Backend, Mode};

    if !ebpf_available() {
        return;
    }
    let server = Server::start("127.0.0.1:0", Options::default())
        .await
        .unwrap();
    let sink = Backend::new(Mode::Up);
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("odiglet.log");
    let odiglet = App(Command::new(odigos_tests::odigos_binary())
        .arg("odiglet")
        .args([
            "--opamp-endpoint",
            &format!("ws://{}/v1/opamp", server.address),
        ])
        .args([
            "--export-endpoint",
            &format!("http://127.0.0.1:{}", sink.port),
        ])
        .arg("--state-dir")
        .arg(state.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap());
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let (_app, port) = start_app("remote");
    let agent =
        || {
            server.fleet.agents().into_iter().find(|a| {
                a.non_identifying.get("odigos.role").map(String::as_str) == Some("odiglet")
            })
        };
    let push = |config: &str| {
        server.fleet.set_config(
            Selector::Attribute {
                key: "odigos.role".into(),
                value: "odiglet".into(),
            },
            [(
                odigos_proto::odiglet::FILE.to_string(),
                (config.as_bytes().to_vec(), "application/json".to_string()),
            )]
            .into(),
        )
    };
    let status_of = |hash: &str| {
        tokio::task::block_in_place(|| {
            wait_for(Duration::from_secs(20), || {
                agent().is_some_and(|a| match &a.config {
                    ConfigStatus::Applied { hash: h } | ConfigStatus::Failed { hash: h, .. } => {
                        h == hash
                    }
                    _ => false,
                })
            })
        });
        agent().map(|a| a.config)
    };
    let spans_grow = || {
        let before = sink.sink.spans.lock().unwrap().len();
        tokio::task::block_in_place(|| {
            wait_for(Duration::from_secs(10), || {
                curl(port, &["/hello"]);
                sink.sink.spans.lock().unwrap().len() > before
            })
        })
    };

    let source = r#"{"source": "default/remote", "serviceName": "remote", "select": {"regex": "http_app\\.py 0 remote"}, "tracesEnabled": true, "headSamplingFraction": 1.0}"#;
    let good = push(&format!(r#"{{"sources": [{source}]}}"#));
    let applied = status_of(&good);
    assert_eq!(
        applied,
        Some(ConfigStatus::Applied { hash: good }),
        "{}",
        logs()
    );
    assert!(spans_grow(), "no spans from the traced app\n{}", logs());

    let unknown = push(&format!(r#"{{"sources": [{source}], "samplng": 0.5}}"#));
    match status_of(&unknown) {
        Some(ConfigStatus::Failed { error, .. }) => {
            assert!(
                error.contains("odiglet.json") && error.contains("samplng"),
                "{error}"
            )
        }
        other => panic!("{other:?}\n{}", logs()),
    }
    assert!(spans_grow(), "tracing stopped after the refused config");

    let unclosed = source.replace("http_app", "(http_app");
    let bad_regex = push(&format!(r#"{{"sources": [{unclosed}]}}"#));
    match status_of(&bad_regex) {
        Some(ConfigStatus::Failed { error, .. }) => assert!(
            error.contains("sources[0].select.regex (default/remote)"),
            "{error}"
        ),
        other => panic!("{other:?}\n{}", logs()),
    }
    assert!(spans_grow(), "tracing stopped after the refused regex");
    drop(odiglet);
    server.stop().await;
}

#[test]
fn ten_thousand_short_connections_and_bad_input_leave_nothing_behind() {
    if !ebpf_available() {
        return;
    }
    let TracedApp {
        up,
        file,
        app,
        port,
        _out,
    } = traced_python_app("churn");
    let base = ebpf_count(&up, "connections");
    let odiglet = odiglet_pid(&up);
    let rss_before = rss_kib(odiglet);

    const REQUESTS: usize = 10_000;
    let request = |stream: &mut std::net::TcpStream, bytes: &[u8]| {
        stream.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    };
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            std::thread::spawn(move || {
                let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                for i in (worker..REQUESTS).step_by(4) {
                    let mut stream = connect();
                    let text = format!(
                        "GET /hello?i={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    );
                    let answer = request(&mut stream, text.as_bytes());
                    assert!(
                        answer.starts_with(b"HTTP/1.1 200"),
                        "{}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            })
        })
        .collect();
    // Bad input beside them: binary bytes, a request line longer than any capture, a request
    // cut off by its client.
    for _ in 0..50 {
        let mut binary = connect();
        let _ = binary.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]);
        drop(binary);
        let mut long = connect();
        let path = "x".repeat(20_000);
        let answer = request(
            &mut long,
            format!("GET /{path} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(!answer.is_empty());
        let mut cut = connect();
        cut.write_all(b"GET /hel").unwrap();
        drop(cut);
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let hello = |file: &std::path::Path| {
        spans_of(file, "churn")
            .iter()
            .filter(|s| attribute(s, "url.path").as_deref() == Some("/hello"))
            .count()
    };
    let arrived = wait_for(Duration::from_secs(60), || hello(&file) >= REQUESTS);
    assert!(
        arrived,
        "{} of {REQUESTS} spans arrived; {:?}",
        hello(&file),
        odiglet_component(&up, "spans")
    );
    assert_eq!(hello(&file), REQUESTS, "each request is one span");
    let long = spans_of(&file, "churn")
        .into_iter()
        .filter(|s| attribute(s, "url.path").is_some_and(|p| p.starts_with("/xxx")))
        .collect::<Vec<_>>();
    assert!(
        long.iter()
            .all(|s| attribute(s, "odigos.partial").as_deref() == Some("true")),
        "{long:#?}"
    );

    // Every connection closed: the maps and the assembly are back to where they started.
    let settled = wait_for(Duration::from_secs(10), || {
        ebpf_count(&up, "connections") == base && ebpf_count(&up, "connections assembled") == 0
    });
    assert!(settled, "base {base}: {:?}", odiglet_component(&up, "ebpf"));
    // The growth, not the size: a debug build's code alone is tens of MiB (the size of a
    // release build is the benchmark's business).
    let grown = rss_kib(odiglet) - rss_before;
    eprintln!(
        "odiglet: {rss_before} kB resident before, {grown} kB more after {REQUESTS} connections"
    );
    assert!(
        grown < 16 * 1024,
        "odiglet grew by {grown} kB over {REQUESTS} connections"
    );
    drop(app);
}

/// A process's resident memory.
fn rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The pid of the odiglet `odigos up` started.
fn odiglet_pid(up: &Up) -> u32 {
    for task in std::fs::read_dir(format!("/proc/{}/task", up.child.id())).unwrap() {
        let children = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap();
        for pid in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).nth(1) == Some(b"odiglet") {
                return pid.parse().unwrap();
            }
        }
    }
    panic!("no odiglet runs under odigos up");
}

#[test]
fn a_client_with_an_sdk_joins_its_trace_and_head_sampling_follows_a_live_change() {
    if !ebpf_available() {
        return;
    }
    let TracedApp {
        up,
        file,
        app,
        port,
        _out,
    } = traced_python_app("sampled");

    // The SDK's traceparent makes the server span the child of the client's span.
    let output = Command::new(python())
        .arg(workspace().join("tests/python/traced_client.py"))
        .arg(format!("http://127.0.0.1:{}", up.grpc()))
        .arg(format!("http://127.0.0.1:{port}/hello?from=sdk"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert!(
        words.len() == 6 && words[5] == "200",
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (trace_id, span_id) = (words[1].to_string(), words[3].to_string());
    let joined = wait_for(Duration::from_secs(20), || {
        spans_of(&file, "sampled")
            .iter()
            .any(|s| s["traceId"] == trace_id.as_str())
    });
    assert!(
        joined,
        "no server span in trace {trace_id}: {:#?}",
        spans_of(&file, "sampled")
    );
    let server = spans_of(&file, "sampled")
        .into_iter()
        .find(|s| s["traceId"] == trace_id.as_str())
        .unwrap();
    assert_eq!(server["parentSpanId"], span_id.as_str(), "{server:#}");
    assert_eq!(server["kind"], 2);
    assert_eq!(attribute(&server, "url.path").as_deref(), Some("/hello"));
    assert_eq!(
        attribute(&server, "url.query"),
        None,
        "no rule asks for queries yet"
    );
    let client_arrived = wait_for(Duration::from_secs(20), || {
        spans_of(&file, "sdk-client")
            .iter()
            .any(|s| s["spanId"] == span_id.as_str())
    });
    assert!(client_arrived, "the SDK's own span did not arrive");

    // Under load, an InstrumentationRule turns head sampling down to 10%, and has queries and
    // a header recorded.
    let load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let running = load.clone();
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let current = phase.clone();
    let sent = std::sync::Arc::new(std::sync::Mutex::new([0usize; 2]));
    let counted = sent.clone();
    let client = std::thread::spawn(move || {
        while running.load(std::sync::atomic::Ordering::Relaxed) {
            let phase = current.load(std::sync::atomic::Ordering::Relaxed);
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let request = format!(
                "GET /p{phase}?phase={phase} HTTP/1.1\r\nX-Phase: {phase}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            if phase < 2 {
                counted.lock().unwrap()[phase] += 1;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    up.write(
        "rule.yaml",
        "apiVersion: odigos.io/v1alpha1\nkind: InstrumentationRule\nmetadata: {name: tenth}\nspec:\n  headSamplingFallbackFraction: {fractionToKeep: 0.1}\n  payloadCollection: {httpRequest: {}}\n  headersCollection: {headerKeys: [X-Phase]}\n",
    );
    let applied = wait_for(Duration::from_secs(10), || {
        odiglet_effective(&up).contains("0.1")
    });
    assert!(applied, "{}", odiglet_effective(&up));
    // What was sent from now on is sampled; 2,000 requests give the share within a few %.
    phase.store(1, std::sync::atomic::Ordering::Relaxed);
    let enough = wait_for(Duration::from_secs(120), || sent.lock().unwrap()[1] >= 2000);
    phase.store(2, std::sync::atomic::Ordering::Relaxed);
    load.store(false, std::sync::atomic::Ordering::Relaxed);
    client.join().unwrap();
    assert!(enough, "the load stalled: {:?}", sent.lock().unwrap());
    let requests = sent.lock().unwrap()[1];
    let delivered = || {
        spans_of(&file, "sampled")
            .iter()
            .filter(|s| attribute(s, "url.path").as_deref() == Some("/p1"))
            .count()
    };
    // Spans stop arriving once the last of them is through.
    let mut last = usize::MAX;
    wait_for(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = delivered();
        std::mem::replace(&mut last, now) == now
    });
    let share = delivered() as f64 / requests as f64;
    eprintln!(
        "{} of {requests} requests delivered at a fraction of 0.1",
        delivered()
    );
    assert!(
        (0.075..=0.125).contains(&share),
        "{share:.3} of {requests} requests were delivered after the fraction became 0.1"
    );
    for span in spans_of(&file, "sampled")
        .iter()
        .filter(|s| attribute(s, "url.path").as_deref() == Some("/p1"))
    {
        assert_eq!(attribute(span, "url.query").as_deref(), Some("phase=1"));
        let phase = attribute(span, "http.request.header.x-phase").unwrap_or_default();
        assert!(phase.contains(r#""1""#), "{span:#}");
    }
    drop(app);
}

/// odiglet's effective config, as it reports it.
fn odiglet_effective(up: &Up) -> String {
    let token = std::fs::read_to_string(up.path(".odigos/token")).unwrap();
    let body = http_get_as(up.opamp(), "/api/v1/agents", Some(token.trim()));
    let agents: Value = serde_json::from_str(&body).unwrap_or_default();
    agents
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["non_identifying"]["odigos.role"] == "odiglet")
        .map(|a| a["effective_config"].to_string())
        .unwrap_or_default()
}

#[test]
fn the_workers_of_a_prefork_server_are_traced() {
    if !ebpf_available() {
        return;
    }
    let TracedApp {
        up,
        file,
        app,
        port,
        _out,
    } = traced_python_server("prefork_app.py", "prefork");
    let workers_of = |up: &Up| -> usize {
        let token = std::fs::read_to_string(up.path(".odigos/token")).unwrap();
        let body = http_get_as(up.opamp(), "/api/v1/agents", Some(token.trim()));
        body.matches("Source default/prefork, traced").count()
    };
    let traced = wait_for(Duration::from_secs(20), || workers_of(&up) == 3);
    assert!(
        traced,
        "{} of the parent and its 2 workers traced\n{}",
        workers_of(&up),
        up.logs()
    );
    // Each worker answers with its pid; ask until both have served.
    let mut workers = std::collections::BTreeSet::new();
    let mut asked = 0;
    while workers.len() < 2 && asked < 200 {
        workers.insert(served_by(port));
        asked += 1;
    }
    assert_eq!(workers.len(), 2, "{workers:?}");
    let pids = |file: &std::path::Path| -> std::collections::BTreeSet<String> {
        spans_of(file, "prefork")
            .iter()
            .filter_map(|s| attribute(&s["resource"], "process.pid"))
            .collect()
    };
    let both = wait_for(Duration::from_secs(20), || pids(&file) == workers);
    assert!(
        both,
        "spans came from {:?}; the workers are {workers:?}\n{}",
        pids(&file),
        up.logs()
    );
    assert!(
        !pids(&file).contains(&app.id().to_string()),
        "the parent serves nothing"
    );
    drop(app);
}

#[test]
fn each_child_of_a_forking_server_is_traced_with_the_connection_it_was_handed() {
    if !ebpf_available() {
        return;
    }
    let TracedApp {
        up,
        file,
        app,
        port,
        _out,
    } = traced_python_server("forking_app.py", "forking");
    // Each connection is accepted by the parent and served by a child forked for it.
    let children: std::collections::BTreeSet<String> = (0..3).map(|_| served_by(port)).collect();
    assert_eq!(children.len(), 3, "{children:?}");
    assert!(!children.contains(&app.id().to_string()));
    let served = |file: &std::path::Path| -> std::collections::BTreeSet<String> {
        spans_of(file, "forking")
            .iter()
            .filter(|s| {
                s["kind"].as_i64() == Some(2)
                    && attribute(s, "http.response.status_code").as_deref() == Some("200")
            })
            .filter_map(|s| attribute(&s["resource"], "process.pid"))
            .collect()
    };
    let all = wait_for(Duration::from_secs(20), || served(&file) == children);
    assert!(
        all,
        "server spans came from {:?}; the children are {children:?}\n{}",
        served(&file),
        up.logs()
    );
    drop(app);
}
