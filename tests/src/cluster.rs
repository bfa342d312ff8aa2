//! A real single-node Kubernetes whose pods run (`tests/k8s/cluster.sh`: containerd, etcd, the
//! control plane components, kube-proxy and the kubelet, inside a network namespace of its
//! own), with the odigos image built from the tested binary and imported, and the cluster's own
//! kubectl and helm to drive it. Needs root; one cluster per machine at a time.
//!
//! The Kubernetes binaries are looked for where [`crate::kubernetes::node_binaries`] says, and
//! helm in `$ODIGOS_HELM_DIR` (`./test.sh` puts them there). `ODIGOS_KEEP_CLUSTER=1` leaves the cluster up after the test,
//! for a look with `KUBECONFIG=/var/tmp/odigos-k8s/admin.kubeconfig`.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The image the chart is installed with.
pub const IMAGE: &str = "localhost/odigos:test";
/// An application to trace: Python's `http.server` on port 8080 (`tests/k8s/build-app-image.sh`).
pub const APP_IMAGE: &str = "localhost/python-app:test";
/// The node's address, and this host's on the link to it (as `tests/k8s/cluster.sh` sets them):
/// pods reach servers a test runs on [`HOST_IP`].
pub const NODE_IP: &str = "10.213.0.2";
pub const HOST_IP: &str = "10.213.0.1";

pub struct Cluster {
    pub kubeconfig: PathBuf,
    bin: PathBuf,
    helm: PathBuf,
}

/// Why the cluster cannot run here, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !crate::is_root() {
        return Some("the cluster tests need root (CI runs as root)".into());
    }
    let bin = crate::kubernetes::node_binaries();
    if !bin.join("kubelet").is_file() {
        return Some(format!(
            "no Kubernetes node binaries in {} (tests/k8s/build-kubernetes.sh {0})",
            bin.display()
        ));
    }
    let Some(helm) = std::env::var_os("ODIGOS_HELM_DIR").map(PathBuf::from) else {
        return Some("$ODIGOS_HELM_DIR names no directory (./test.sh sets it)".into());
    };
    if !helm.join("helm").is_file() {
        return Some(format!(
            "no helm in {} (tests/k8s/fetch-helm.sh)",
            helm.display()
        ));
    }
    None
}

impl Cluster {
    /// Starts the cluster and imports the odigos image (as [`IMAGE`]) and the application's
    /// (as [`APP_IMAGE`]).
    pub fn up() -> Cluster {
        let script = crate::workspace().join("tests/k8s/cluster.sh");
        let bin = crate::kubernetes::node_binaries();
        let helm = PathBuf::from(
            std::env::var_os("ODIGOS_HELM_DIR").expect("$ODIGOS_HELM_DIR (./test.sh sets it)"),
        )
        .join("helm");
        let up = run(Command::new(&script).arg("up").arg(&bin));
        let cluster = Cluster {
            kubeconfig: PathBuf::from(up.trim().lines().last().unwrap_or_default()),
            bin,
            helm,
        };
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("odigos.tar");
        run(
            Command::new(crate::workspace().join("tests/k8s/build-image.sh"))
                .arg(&image)
                .arg(crate::odigos_binary())
                .env("IMAGE", IMAGE),
        );
        let app = dir.path().join("app.tar");
        run(
            Command::new(crate::workspace().join("tests/k8s/build-app-image.sh"))
                .arg(&app)
                .env("IMAGE", APP_IMAGE),
        );
        for image in [image, app] {
            run(Command::new(&script).arg("import").arg(&image));
        }
        cluster
    }

    /// `kubectl ARGS`, whatever its outcome.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap()
    }

    /// `kubectl ARGS`, which must succeed; its output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        run(Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    /// `kubectl apply -f -` of `yaml`, whatever its outcome.
    pub fn apply(&self, yaml: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply_ok(&self, yaml: &str) {
        let applied = self.apply(yaml);
        assert!(
            applied.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&applied.stderr)
        );
    }

    /// `helm ARGS`, which must succeed; its output.
    pub fn helm(&self, args: &[&str]) -> String {
        run(Command::new(&self.helm)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    /// A jsonpath of one object, or "" while it does not exist.
    pub fn get(&self, object: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(object);
        let path = format!("jsonpath={jsonpath}");
        args.extend(["-o", &path]);
        let out = self.kubectl(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The logs of the pods `selector` picks in `namespace`, their last `tail` lines each
    /// (`-1`: all).
    pub fn logs(&self, namespace: &str, selector: &str, tail: i32) -> String {
        let tail = format!("--tail={tail}");
        let out = self.kubectl(&["logs", "-n", namespace, "-l", selector, &tail]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits up to `seconds` for `done`; when it never is, fails saying `what` did not happen,
    /// with what `namespace` holds.
    pub fn expect(&self, seconds: u64, namespace: &str, what: &str, done: impl FnMut() -> bool) {
        let happened = crate::wait_for(std::time::Duration::from_secs(seconds), done);
        assert!(happened, "{what}\n{}", self.describe(namespace));
    }

    /// What the cluster holds, for a failing assertion's message.
    pub fn describe(&self, namespace: &str) -> String {
        let pods = self.kubectl(&["describe", "pods", "-n", namespace]);
        let events = self.kubectl(&["get", "events", "-n", namespace]);
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&events.stdout)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("ODIGOS_KEEP_CLUSTER").is_some() {
            eprintln!(
                "the cluster stays up: KUBECONFIG={}",
                self.kubeconfig.display()
            );
            return;
        }
        let _ = Command::new(crate::workspace().join("tests/k8s/cluster.sh"))
            .arg("down")
            .status();
    }
}

/// Runs `command`, which must succeed; its standard output.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
