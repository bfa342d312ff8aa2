//! `odigos up`: everything on this machine. The control plane watches `./odigos.d/`, the
//! OpAMP server listens on 127.0.0.1:4320, and a gateway and a node collector run as child
//! processes under their supervisors. Editing a file in `odigos.d/` changes the running
//! collectors in place.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use odigos_server::compiler::Layout;
use odigos_server::opamp::{Options, PATH, Server};
use odigos_server::store::LocalStore;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub struct Args {
    /// The desired state: a directory of YAML resources (Destination, Action, Source, ...),
    /// created with a starter Destination when missing.
    #[arg(long, value_name = "DIR", default_value = "odigos.d")]
    dir: PathBuf,

    /// Where agent identities, last applied configs, secrets and the API token are kept.
    #[arg(long, value_name = "DIR", default_value = ".odigos")]
    state_dir: PathBuf,

    /// Where applications send OTLP over gRPC.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4317")]
    otlp_grpc: String,

    /// Where applications send OTLP over HTTP.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4318")]
    otlp_http: String,

    /// Where the OpAMP server and the API listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4320")]
    opamp: String,

    /// Where the gateway takes OTLP from the node collector.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4319")]
    gateway: String,

    /// The node collector's Prometheus self-metrics.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8888")]
    node_metrics: String,

    /// The gateway's Prometheus self-metrics.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8889")]
    gateway_metrics: String,

    /// The bearer token of the OpAMP server and the API [default: generated once and kept
    /// in the state directory].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ODIGOS_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

const STARTER: &str =
    "# The starter destination of `odigos up`: the gateway prints every span, metric and log
# it receives (in the terminal running `odigos up`). Edit or delete this file, or add others:
# each YAML file here may hold Destinations, Actions, Sources, Sampling and
# InstrumentationRules; changes apply to the running collectors within a second.
apiVersion: odigos.io/v1alpha1
kind: Destination
metadata:
  name: debug
spec:
  type: debug
  signals: [TRACES, METRICS, LOGS]
  data:
    VERBOSITY: basic
";

pub fn main(args: Args) -> ExitCode {
    crate::init_logs("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context;
    if !args.dir.exists() {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create {}", args.dir.display()))?;
        std::fs::write(args.dir.join("debug.yaml"), STARTER)
            .with_context(|| format!("cannot write {}", args.dir.display()))?;
        tracing::info!(dir = %args.dir.display(), "created the desired-state directory with a starter debug destination");
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;
    let token = match args.token {
        Some(token) => token,
        None => stored_token(&state_dir)?,
    };

    let store = LocalStore::open(&args.dir, odigos_server::catalog::Catalog::builtin())
        .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let _watch = store
        .watch()
        .with_context(|| format!("cannot watch {}", args.dir.display()))?;
    let layout = Layout {
        node_grpc: args.otlp_grpc.clone(),
        node_http: args.otlp_http.clone(),
        gateway_listen: args.gateway.clone(),
        gateway_endpoint: format!("http://{}", args.gateway),
        node_metrics: Some(args.node_metrics),
        gateway_metrics: Some(args.gateway_metrics),
        secrets_dir: state_dir.join("secrets"),
        gateway_memory_mib: 512,
        node_memory_mib: 256,
    };
    let options = Options {
        token: Some(token.clone()),
        ..Options::default()
    };
    let (server, plane) = Server::start_control_plane(&args.opamp, options, store.clone(), layout)
        .await
        .with_context(|| format!("cannot serve OpAMP on {}", args.opamp))?;
    let endpoint = format!("ws://{}{PATH}", server.address);
    let mut collectors = Vec::new();
    // Held apart from the children: waiting on a child closes the stdin it still holds.
    let mut stdins = Vec::new();
    for role in ["gateway", "node"] {
        let mut child = spawn_collector(role, &endpoint, &token, &state_dir.join(role))
            .with_context(|| format!("cannot start the {role} collector"))?;
        stdins.push(child.stdin.take());
        collectors.push((role, child));
    }

    let ready = wait_until_applied(&plane, Duration::from_secs(30)).await;
    let api = format!("http://{}/api/v1", server.address);
    println!();
    match &ready {
        Ok(()) => println!("odigos is up"),
        Err(problems) => {
            println!("odigos is up, but not every collector runs its config:");
            for problem in problems {
                println!("  {problem}");
            }
        }
    }
    println!(
        "  send OTLP to   grpc {}   http http://{}",
        args.otlp_grpc, args.otlp_http
    );
    println!(
        "  desired state  {}/  (edit the YAML files; changes apply live)",
        args.dir.display()
    );
    println!("  state          {}/", state_dir.display());
    println!("  opamp          {endpoint}");
    println!("  api            {api}/state  {api}/agents  (Authorization: Bearer <token>)");
    println!(
        "  token          {token}  (kept in {})",
        state_dir.join("token").display()
    );
    println!("  ui             not part of this build yet");
    println!("  see why data flows or not: odigos describe");
    println!("Ctrl-C stops everything.");

    let mut term = signal(SignalKind::terminate())?;
    let mut exited = None;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        (role, status) = first_exit(&mut collectors) => exited = Some((role, status)),
    }
    if let Some((role, status)) = &exited {
        tracing::error!(role, %status, "a collector exited; stopping everything");
    }
    tracing::info!("stopping the collectors");
    // Closing stdin asks for a clean stop: flush pipelines, drain queues.
    drop(stdins);
    for (role, mut child) in collectors {
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(_) => tracing::info!(role, "collector stopped"),
            Err(_) => {
                tracing::warn!(role, "collector did not stop in 20s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    server.stop().await;
    tracing::info!("odigos stopped");
    match exited {
        Some((role, status)) => anyhow::bail!("the {role} collector exited ({status})"),
        None => Ok(()),
    }
}

/// The API token kept in `state_dir`, created (owner-only) on first use.
fn stored_token(state_dir: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let token: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(file, "{token}")?;
    Ok(token)
}

fn spawn_collector(
    role: &str,
    endpoint: &str,
    token: &str,
    state_dir: &Path,
) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "collector",
            "--role",
            role,
            "--opamp-endpoint",
            endpoint,
            "--stop-on-stdin-close",
        ])
        .arg("--state-dir")
        .arg(state_dir)
        .env("ODIGOS_OPAMP_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

async fn first_exit(
    collectors: &mut [(&'static str, Child)],
) -> (&'static str, std::process::ExitStatus) {
    let waits = collectors.iter_mut().map(|(role, child)| {
        let role = *role;
        Box::pin(async move { (role, child.wait().await) })
    });
    let ((role, status), _, _) = futures_util::future::select_all(waits).await;
    (
        role,
        status.unwrap_or_else(|_| std::process::ExitStatus::default()),
    )
}

/// Waits until both collectors run the configs meant for them; the errors of those that
/// could not, if any.
async fn wait_until_applied(
    plane: &Arc<odigos_server::reconciler::ControlPlane>,
    limit: Duration,
) -> Result<(), Vec<String>> {
    let mut reports = plane.fleet().reports();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = plane.state();
        let rollouts: Vec<_> = ["gateway", "node"]
            .iter()
            .map(|role| {
                (
                    *role,
                    state.rollouts.get(*role).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let failed: Vec<String> = rollouts
            .iter()
            .flat_map(|(role, r)| r.failed.iter().map(move |e| format!("{role} {e}")))
            .collect();
        if !failed.is_empty() {
            return Err(failed);
        }
        if rollouts
            .iter()
            .all(|(_, r)| r.agents > 0 && r.applied == r.agents)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(vec![format!(
                "the collectors did not report within {limit:?}; see the log"
            )]);
        }
        tokio::select! {
            _ = reports.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
