//! The OpenTelemetry SDKs of Python and Node.js as real clients: a process that streams spans
//! and records which exports were acknowledged and which failed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{lines, python, workspace};

/// Where the Node.js OpenTelemetry SDK is installed: `$ODIGOS_TEST_NODE_MODULES`, or the
/// workspace's `tests/node/node_modules`.
pub fn node_modules() -> PathBuf {
    let modules = std::env::var_os("ODIGOS_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/node/node_modules"));
    let ok = Command::new("node")
        .args(["-e", "require('@opentelemetry/exporter-trace-otlp-grpc')"])
        .env("NODE_PATH", &modules)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "node with the packages of tests/node/package.json in {} is required: run ./test.sh, \
         or npm ci --prefix tests/node",
        modules.display()
    );
    modules
}

/// An SDK streaming spans (`tests/{python,node}/stream_spans.*`) until stopped.
pub struct Streamer {
    /// Taken when stopped.
    child: Option<Child>,
    acked: PathBuf,
    failed: PathBuf,
}

impl Streamer {
    /// The Python SDK, exporting over OTLP/gRPC to `endpoint` as `service`; exports that take
    /// longer than `timeout` seconds fail.
    pub fn python(endpoint: &str, service: &str, timeout: u32, dir: &Path) -> Streamer {
        let mut command = Command::new(python());
        command.arg(workspace().join("tests/python/stream_spans.py"));
        Streamer::start(command, endpoint, service, timeout, dir)
    }

    /// The Node.js SDK, likewise.
    pub fn node(endpoint: &str, service: &str, timeout: u32, dir: &Path) -> Streamer {
        let mut command = Command::new("node");
        command
            .arg(workspace().join("tests/node/stream_spans.js"))
            .env("NODE_PATH", node_modules());
        Streamer::start(command, endpoint, service, timeout, dir)
    }

    fn start(
        mut command: Command,
        endpoint: &str,
        service: &str,
        timeout: u32,
        dir: &Path,
    ) -> Streamer {
        let acked = dir.join(format!("{service}.acked"));
        let failed = dir.join(format!("{service}.failed"));
        let child = command
            .args(["--endpoint", endpoint, "--service", service])
            .arg("--acked")
            .arg(&acked)
            .arg("--failed")
            .arg(&failed)
            .args(["--timeout", &timeout.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Streamer {
            child: Some(child),
            acked,
            failed,
        }
    }

    /// Hex ids of the spans the collector acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        lines(&self.acked)
    }

    /// Exports that failed so far, each with the time and the SDK's error.
    pub fn failures(&self) -> Vec<String> {
        lines(&self.failed)
    }

    /// Stops the SDK (it flushes what it holds first) and returns what it printed.
    pub fn stop(mut self) -> String {
        let child = self.child.take().expect("running until stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "the SDK failed: {report}");
        report
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
