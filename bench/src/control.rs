//! The control plane: how long the config compiler takes on a large desired state, and how
//! long `odigos up` takes from a file written in `odigos.d/` to every collector running the
//! new config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use odigos_server::catalog::Catalog;
use odigos_server::compiler::{Layout, compile};
use odigos_server::resource::Object;
use odigos_server::store::Desired;

use crate::runner::{default_odigos, free_port, http_get};

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The `odigos` binary [default: next to this one].
    #[arg(long)]
    odigos: Option<PathBuf>,
    /// Sources in the compiled state.
    #[arg(long, default_value_t = 10_000)]
    sources: usize,
    /// Destinations in the compiled state.
    #[arg(long, default_value_t = 50)]
    destinations: usize,
    /// Actions in the compiled state.
    #[arg(long, default_value_t = 50)]
    actions: usize,
    /// File edits measured in `odigos up`.
    #[arg(long, default_value_t = 50)]
    edits: usize,
}

/// A desired state of the given size: Sources over 20 namespaces and 4 data streams,
/// Destinations of the OTLP types (a fifth selecting a data stream), and Actions of each
/// supported kind.
fn large_state(sources: usize, destinations: usize, actions: usize) -> anyhow::Result<Desired> {
    let mut docs = Vec::new();
    for i in 0..sources {
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata:\n  name: app-{i}\n  namespace: ns-{}\n  labels: {{odigos.io/data-stream-stream-{}: \"true\"}}\nspec:\n  workload: {{name: app-{i}, namespace: ns-{}, kind: Deployment}}\n",
            i % 20,
            i % 4,
            i % 20
        ));
    }
    for i in 0..destinations {
        let selector = if i % 5 == 0 {
            format!("  sourceSelector: {{dataStreams: [stream-{}]}}\n", i % 4)
        } else {
            String::new()
        };
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Destination\nmetadata: {{name: dest-{i}}}\nspec:\n  type: otlp\n  signals: [TRACES, METRICS, LOGS]\n  data: {{OTLP_GRPC_ENDPOINT: \"http://backend-{i}:4317\"}}\n{selector}"
        ));
    }
    for i in 0..actions {
        let body = match i % 3 {
            0 => format!("  renameAttribute: {{renames: {{attr.{i}: renamed.{i}}}}}\n"),
            1 => format!("  deleteAttribute: {{attributeNamesToDelete: [secret.{i}]}}\n"),
            _ => format!(
                "  addClusterInfo: {{clusterAttributes: [{{attributeName: k.{i}, attributeStringValue: v}}]}}\n"
            ),
        };
        docs.push(format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: action-{i}}}\nspec:\n  signals: [TRACES, LOGS]\n{body}"
        ));
    }
    let mut desired = Desired::default();
    for doc in docs {
        let value = odigos_proto::yaml::parse(&doc).map_err(|(_, e)| anyhow::anyhow!(e))?;
        let object = Object::from_value(value).map_err(|(f, e)| anyhow::anyhow!("{f}: {e}"))?;
        desired.insert(object);
    }
    Ok(desired)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let desired = large_state(args.sources, args.destinations, args.actions)?;
    let layout = Layout {
        node_grpc: "127.0.0.1:4317".into(),
        node_http: "127.0.0.1:4318".into(),
        gateway_listen: "127.0.0.1:4319".into(),
        gateway_endpoint: "http://127.0.0.1:4319".into(),
        node_metrics: None,
        gateway_metrics: None,
        secrets_dir: std::env::temp_dir(),
        secrets_in_config: false,
        queue_dir: None,
        queue_mib: 0,
        gateway: odigos_server::compiler::sized(512, 300, 1, 1),
        node: odigos_server::compiler::sized(256, 300, 1, 1),
        pod_metadata: false,
        node_storage: None,
    };
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let compiled = compile(&desired, Catalog::builtin(), &layout);
        times.push(started.elapsed());
        size = compiled.gateway.len() + compiled.workloads.len();
    }
    times.sort();
    println!(
        "compile: {} sources, {} destinations, {} actions (gateway config {} KiB): p50 {}, max {} over {} runs",
        args.sources,
        args.destinations,
        args.actions,
        size / 1024,
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        times.len()
    );

    let odigos = args
        .odigos
        .or_else(default_odigos)
        .context("no odigos binary found")?;
    if !odigos.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release -p odigos`",
            odigos.display()
        );
    }
    let up = Up::start(&odigos)?;
    let mut latencies = Vec::new();
    for i in 0..args.edits {
        let before = up.state()?;
        let generation = before["generation"].as_u64().unwrap_or(0);
        let action = format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Action\nmetadata: {{name: rename}}\nspec:\n  signals: [TRACES]\n  renameAttribute: {{renames: {{user.id: user.id.{i}}}}}\n"
        );
        let staged = up.dir.path().join("action.partial");
        std::fs::write(&staged, action)?;
        let started = Instant::now();
        std::fs::rename(&staged, up.dir.path().join("odigos.d/action.yaml"))?;
        loop {
            let state = up.state()?;
            let applied = state["generation"].as_u64() > Some(generation)
                && state["hashes"]["gateway"] != before["hashes"]["gateway"]
                && ["gateway", "node"].iter().all(|role| {
                    let r = &state["rollouts"][role];
                    r["agents"].as_u64() > Some(0) && r["applied"] == r["agents"]
                });
            if applied {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("edit {i} not applied in 10s: {state:#}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort();
    println!(
        "odigos up, file write to applied by every collector: p50 {}, p99 {}, max {} over {} edits",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        latencies.len()
    );
    Ok(())
}

/// `odigos up` in a temporary directory, on free ports; stopped when dropped.
pub(crate) struct Up {
    pub(crate) child: Child,
    pub(crate) dir: tempfile::TempDir,
    api: String,
    /// Where the node collector serves its Prometheus metrics.
    pub(crate) node_metrics: String,
}

impl Up {
    pub(crate) fn start(odigos: &Path) -> anyhow::Result<Up> {
        let dir = tempfile::tempdir()?;
        let address = || -> anyhow::Result<String> { Ok(format!("127.0.0.1:{}", free_port()?)) };
        let api = address()?;
        let node_metrics = address()?;
        let child = Command::new(odigos)
            .current_dir(dir.path())
            .args([
                "up",
                "--opamp",
                &api,
                "--otlp-grpc",
                &address()?,
                "--otlp-http",
                &address()?,
            ])
            .args(["--gateway", &address()?, "--node-metrics", &node_metrics])
            .args(["--gateway-metrics", &address()?])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("up.log"))?)
            .spawn()?;
        let up = Up {
            child,
            dir,
            api,
            node_metrics,
        };
        let started = Instant::now();
        loop {
            if let Ok(state) = up.state()
                && ["gateway", "node"]
                    .iter()
                    .all(|r| state["rollouts"][r]["applied"].as_u64() > Some(0))
            {
                return Ok(up);
            }
            if started.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(up.dir.path().join("up.log")).unwrap_or_default();
                bail!("odigos up did not start in 30s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn state(&self) -> anyhow::Result<serde_json::Value> {
        let token = std::fs::read_to_string(self.dir.path().join(".odigos/token"))?;
        let authorization = format!("Authorization: Bearer {}\r\n", token.trim());
        let body = http_get(&self.api, "/api/v1/state", &authorization)?;
        Ok(serde_json::from_str(&body)?)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
