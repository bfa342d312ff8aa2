//! `odigos up` as a real process in a temporary directory, for the end-to-end tests.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{http_get_as, odigos_binary, wait_for};

/// A running `odigos up`, killed when dropped. It listens on ports picked for it below the
/// kernel's ephemeral range, and says which: the test reads them from what it prints.
pub struct Up {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// OpAMP and API, OTLP/gRPC and OTLP/HTTP, once it is up.
    ports: Ports,
    /// Flags added to `odigos up`.
    flags: Vec<String>,
}

#[derive(Clone, Copy, Default)]
struct Ports {
    opamp: u16,
    grpc: u16,
    http: u16,
    ui: u16,
}

impl Ports {
    /// Free ports below the kernel's range of ephemeral ports: while `odigos up` restarts, the
    /// client connections of tests running alongside cannot take one as their own.
    fn pick() -> Ports {
        let first_ephemeral: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|range| range.split_whitespace().next()?.parse().ok())
                .unwrap_or(32_768);
        let mut picked = Vec::new();
        while picked.len() < 4 {
            let port = rand::random_range(10_000..first_ephemeral.max(10_001));
            if !picked.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                picked.push(port);
            }
        }
        Ports {
            opamp: picked[0],
            grpc: picked[1],
            http: picked[2],
            ui: picked[3],
        }
    }
}

impl Up {
    /// Starts `odigos up` in a new directory whose `odigos.d/` holds `files` (name, text).
    pub fn start(files: &[(&str, String)]) -> Up {
        Up::start_with(files, &[])
    }

    /// [`Up::start`] with `flags` added to `odigos up`.
    pub fn start_with(files: &[(&str, String)], flags: &[&str]) -> Up {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        let desired = dir.path().join("odigos.d");
        std::fs::create_dir(&desired).unwrap();
        for (name, text) in files {
            std::fs::write(desired.join(name), text).unwrap();
        }
        let child = spawn(&dir, Ports::pick(), &flags);
        let mut up = Up {
            child,
            dir,
            ports: Ports::default(),
            flags,
        };
        up.wait_ready();
        up
    }

    /// Stops `odigos up` with Ctrl-C and starts it again in the same directory on the ports it
    /// had, as a user restarts it: applications keep their endpoint, and its desired state and
    /// its queues on disk are what it finds.
    pub fn restart(&mut self) {
        self.stop();
        self.resume();
    }

    /// Stops `odigos up` with Ctrl-C, which must succeed; its log is kept aside.
    pub fn stop(&mut self) {
        let status = self.interrupt();
        assert!(
            status.success(),
            "odigos up exited with {status}:\n{}",
            self.logs()
        );
        let log = self.path("up.log");
        std::fs::rename(&log, log.with_extension("log.before-restart")).unwrap();
    }

    /// Starts `odigos up` again after [`Up::stop`], on the ports it had.
    pub fn resume(&mut self) {
        self.child = spawn(&self.dir, self.ports, &self.flags);
        self.wait_ready();
    }

    /// What `odigos describe ARGS...` prints, run where `odigos up` runs (so it finds the
    /// token); panics when it fails.
    pub fn describe(&self, args: &[&str]) -> String {
        let output = Command::new(crate::odigos_binary())
            .arg("describe")
            .args(["--server", &format!("127.0.0.1:{}", self.opamp())])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "odigos describe {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Ctrl-C, and its exit status once it has stopped.
    pub fn interrupt(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// Waits for the banner, and reads the ports from it.
    fn wait_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(60), || {
            let out = self.output();
            assert!(
                !out.contains("not every collector runs its config"),
                "{out}\n{}",
                self.logs()
            );
            out.contains("Ctrl-C stops everything.")
        });
        assert!(ready, "odigos up did not get ready:\n{}", self.logs());
        // `send OTLP to   grpc 127.0.0.1:P   http http://127.0.0.1:Q`, `ws://127.0.0.1:P/...`
        let out = self.output();
        let port_after = |marker: &str| -> u16 {
            let at = out
                .find(marker)
                .unwrap_or_else(|| panic!("no {marker:?} in:\n{out}"));
            let digits: String = out[at + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        };
        self.ports = Ports {
            opamp: port_after("ws://127.0.0.1:"),
            grpc: port_after("grpc 127.0.0.1:"),
            http: port_after("http http://127.0.0.1:"),
            ui: port_after("ui             http://127.0.0.1:"),
        };
    }

    pub fn opamp(&self) -> u16 {
        self.ports.opamp
    }

    /// Where the UI and GraphQL are served.
    pub fn ui(&self) -> u16 {
        self.ports.ui
    }

    /// The one-time sign-in link the banner shows.
    pub fn login_link(&self) -> String {
        let out = self.output();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("ui "))
            .unwrap_or_else(|| panic!("no ui line in:\n{out}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path(".odigos/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs a GraphQL `query` with `variables` as an API client does (bearer token), and
    /// returns the whole response: `data` and `errors`.
    pub fn graphql(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        let body = serde_json::json!({"query": query, "variables": variables}).to_string();
        let auth = format!("Bearer {}", self.token());
        let response = crate::http_request(
            self.ui(),
            "POST",
            "/graphql",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        );
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
    }

    /// Where applications send OTLP/gRPC.
    pub fn grpc(&self) -> u16 {
        self.ports.grpc
    }

    /// The Python SDK streaming spans as `service` to where applications send, until stopped;
    /// it notes what was acknowledged in this installation's directory.
    pub fn stream_spans(&self, service: &str) -> crate::sdk::Streamer {
        let endpoint = format!("http://127.0.0.1:{}", self.grpc());
        crate::sdk::Streamer::python(&endpoint, service, 10, self.dir.path())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.path("up.out")).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.path("up.log")).unwrap_or_default()
    }

    /// Writes a file in `odigos.d/` as editors do: a temporary file renamed over it.
    pub fn write(&self, name: &str, text: &str) {
        let staged = self.path(&format!("{name}.partial"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, self.path("odigos.d").join(name)).unwrap();
    }

    pub fn state(&self) -> serde_json::Value {
        let body = http_get_as(self.opamp(), "/api/v1/state", Some(&self.token()));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Waits until the gateway and node collectors all run the configs of the current
    /// desired state, `generation` or later.
    pub fn wait_applied(&self, generation: u64) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let done = wait_for(Duration::from_secs(20), || {
            last = self.state();
            last["generation"].as_u64() >= Some(generation)
                && ["gateway", "node"].iter().all(|role| {
                    let r = &last["rollouts"][role];
                    r["agents"].as_u64() > Some(0) && r["applied"] == r["agents"]
                })
        });
        assert!(done, "not applied:\n{last:#}\n{}", self.logs());
        last
    }

    /// The pids of the collector processes `odigos up` started.
    pub fn collector_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap() {
            let children = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap();
            pids.extend(
                children
                    .split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap())
                    .filter(|pid| {
                        let cmdline =
                            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        cmdline.split(|b| *b == 0).nth(1) == Some(b"collector")
                    }),
            );
        }
        pids.sort();
        pids
    }
}

/// Starts `odigos up` on `ports`; the gateway listens on its socket in the state directory.
fn spawn(dir: &tempfile::TempDir, ports: Ports, flags: &[String]) -> Child {
    let address = |p: u16| format!("127.0.0.1:{p}");
    Command::new(odigos_binary())
        .current_dir(dir.path())
        .arg("up")
        .args(["--opamp", &address(ports.opamp)])
        .args(["--otlp-grpc", &address(ports.grpc)])
        .args(["--otlp-http", &address(ports.http)])
        .args(["--ui", &address(ports.ui)])
        .args(["--node-metrics", &address(0)])
        .args(["--gateway-metrics", &address(0)])
        .args(flags)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("up.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
