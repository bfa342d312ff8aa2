//! A real Kubernetes API server (kube-apiserver and etcd) on 127.0.0.1, for the tests of the
//! Kubernetes store. The binaries come from `tests/k8s/build-kubernetes.sh`, which `./test.sh`
//! runs; they are looked for in [`node_binaries`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token of the user `scoped`.
const SCOPED_TOKEN: &str = "odigos-scoped-token";

/// A running API server with its etcd, stopped (server first) when dropped.
pub struct KubeApi {
    apiserver: Child,
    etcd: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub token: String,
}

/// Where the Kubernetes binaries are: `$ODIGOS_K8S_NODE`, by default
/// `~/.cache/odigos-rs/k8s-node`.
pub fn node_binaries() -> PathBuf {
    std::env::var_os("ODIGOS_K8S_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/odigos-rs/k8s-node")
        })
}

fn binaries() -> PathBuf {
    let dir = node_binaries();
    assert!(
        dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file(),
        "kube-apiserver and etcd are required in {}: run ./test.sh, or tests/k8s/build-kubernetes.sh {}",
        dir.display(),
        dir.display()
    );
    dir
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let bin = binaries();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for args in [
            vec!["genrsa", "-out", "sa.key", "2048"],
            vec!["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        ] {
            let ok = Command::new("openssl")
                .args(&args)
                .current_dir(dir.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "openssl {args:?} failed (openssl is required)");
        }
        let token = "odigos-test-token".to_string();
        std::fs::write(
            path("tokens.csv"),
            format!("{token},admin,admin,system:masters\n{SCOPED_TOKEN},scoped,scoped\n"),
        )
        .unwrap();
        let (client, peer, port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(bin.join("etcd"))
            .arg("--data-dir")
            .arg(path("etcd"))
            .arg("--unsafe-no-fsync")
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("etcd.log")).unwrap())
            .spawn()
            .unwrap();
        let apiserver = Command::new(bin.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", path("serving").display()))
            .arg(format!(
                "--token-auth-file={}",
                path("tokens.csv").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                path("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("apiserver.log")).unwrap())
            .spawn()
            .unwrap();
        let mut api = KubeApi {
            apiserver,
            etcd,
            dir,
            port,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api.ready() {
            if let Ok(Some(status)) = api.apiserver.try_wait() {
                panic!("kube-apiserver exited with {status}:\n{}", api.log());
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in 60s:\n{}",
                api.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        api
    }

    fn ready(&self) -> bool {
        Command::new("curl")
            .args(["-skf", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(format!("https://127.0.0.1:{}/readyz", self.port))
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// A client for the server, as a user with every right.
    pub async fn client(&self) -> kube::Client {
        self.client_as(&self.token)
    }

    /// A client as the user `scoped`, who has no rights until a test grants some (RBAC).
    pub async fn scoped_client(&self) -> kube::Client {
        self.client_as(SCOPED_TOKEN)
    }

    fn client_as(&self, token: &str) -> kube::Client {
        let mut config =
            kube::Config::new(format!("https://127.0.0.1:{}", self.port).parse().unwrap());
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        // The API server before etcd: stopped the other way round it hangs on shutdown.
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free a moment ago, for etcd and kube-apiserver: they take a port number, not a
/// listening socket, and cannot report one they chose.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
