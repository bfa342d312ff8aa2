//! `odigos up`: everything on this machine. The control plane watches `./odigos.d/`, the
//! OpAMP server listens on 127.0.0.1:4320, and a gateway, a node collector and (as root)
//! odiglet run as child processes under their supervisors. Editing a file in `odigos.d/`
//! changes the running agents in place.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use odigos_server::compiler::Layout;
use odigos_server::http::{Options, Server};
use odigos_server::opamp::PATH;
use odigos_server::store::LocalStore;
use tokio::process::{Child, Command};

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

    /// Where the gateway takes OTLP from the node collector: `HOST:PORT`, or `unix:PATH`
    /// [default: a Unix socket in the state directory].
    #[arg(long, value_name = "ADDRESS")]
    gateway: Option<String>,

    /// The node collector's Prometheus self-metrics.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8888")]
    node_metrics: String,

    /// Disk each destination's queue may use, in MiB: what a destination that is down keeps
    /// for when it comes back (beyond it, the oldest data is dropped).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    queue_mib: u64,

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

    #[command(flatten)]
    ui: crate::server::Ui,
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

    // The versions in force are kept in the state directory, so a file broken while `up` was
    // down does not take its resources away.
    let kept = state_dir.join("accepted.json");
    let store = LocalStore::open(
        &args.dir,
        odigos_server::catalog::Catalog::builtin(),
        Some(&kept),
    )
    .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let _watch = store
        .watch()
        .with_context(|| format!("cannot watch {}", args.dir.display()))?;
    let gateway = args
        .gateway
        .clone()
        .unwrap_or_else(|| gateway_socket(&state_dir));
    let gateway_endpoint = match gateway.strip_prefix("unix:") {
        Some(path) => format!("unix://{path}"),
        None => format!("http://{gateway}"),
    };
    let layout = Layout {
        node_grpc: args.otlp_grpc.clone(),
        node_http: args.otlp_http.clone(),
        gateway_listen: gateway,
        gateway_endpoint,
        node_metrics: Some(args.node_metrics),
        gateway_metrics: Some(args.gateway_metrics),
        secrets_dir: state_dir.join("secrets"),
        secrets_in_config: false,
        queue_dir: Some(state_dir.join("queues")),
        queue_mib: args.queue_mib,
        gateway: odigos_server::compiler::sized(512, 300, 1, 1),
        node: odigos_server::compiler::sized(256, 300, 1, 1),
        pod_metadata: false,
        node_storage: Some(state_dir.join("node")),
    };
    let mut options = Options {
        token: Some(token.clone()),
        ..Options::default()
    };
    args.ui.configure(&mut options);
    let (server, plane) = Server::start_control_plane(&args.opamp, options, store.clone(), layout)
        .await
        .context("cannot start the control plane")?;
    let endpoint = format!("ws://{}{PATH}", server.address);
    // Each collector under its own keeper, which restarts it if it exits; stopped node first,
    // so that its last data reaches a gateway that is still running.
    let mut keepers = Vec::new();
    for role in ["gateway", "node"] {
        let spawn = {
            let (endpoint, token, dir) = (endpoint.clone(), token.clone(), state_dir.join(role));
            let grace = format!("{}s", COLLECTOR_GRACE.as_secs());
            let command =
                ["collector", "--role", role, "--shutdown-grace", &grace].map(String::from);
            move || spawn_agent(&command, &endpoint, &token, &dir)
        };
        let first = spawn().with_context(|| format!("cannot start the {role} collector"))?;
        keepers.push(Keeper::start(role, first, spawn));
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
    // Where the node collector listens, as it reports it (the port it got for `:0`).
    let listening = |protocol: &str, configured: &str| {
        node_listening(&plane, protocol).unwrap_or_else(|| configured.to_string())
    };
    println!(
        "  send OTLP to   grpc {}   http http://{}",
        listening("grpc", &args.otlp_grpc),
        listening("http", &args.otlp_http)
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
    // odiglet sends to the node collector, so it starts once that one listens.
    match odigos_ebpf::tracer::available() {
        Ok(()) => {
            let export = format!("http://{}", listening("grpc", &args.otlp_grpc));
            let links = odigos_server::compiler::process_log_links(&state_dir.join("node"));
            let links = links.display().to_string();
            let command = [
                "odiglet",
                "--export-endpoint",
                &export,
                "--log-links",
                &links,
            ]
            .map(String::from);
            let (endpoint, token, dir) =
                (endpoint.clone(), token.clone(), state_dir.join("odiglet"));
            let spawn = move || spawn_agent(&command, &endpoint, &token, &dir);
            let first = spawn().context("cannot start odiglet")?;
            keepers.push(Keeper::start("odiglet", first, spawn));
            println!("  ebpf tracing   on: Sources of kind Process are traced with no code change");
        }
        Err(e) => println!(
            "  ebpf tracing   off: {e} (applications with an OpenTelemetry SDK still send OTLP)"
        ),
    }
    match server.login_link() {
        Some(link) => {
            println!("  ui             {link}  (one-time sign-in link; GraphQL at /graphql)")
        }
        None => println!("  ui             off (--ui off)"),
    }
    println!("  see why data flows or not: odigos describe");
    println!("Ctrl-C stops everything.");

    crate::managed::stop_requested(false).await;
    tracing::info!("stopping the agents");
    for keeper in keepers.into_iter().rev() {
        keeper.stop().await;
    }
    server.stop().await;
    tracing::info!("odigos stopped");
    Ok(())
}

/// How long a collector gets to flush and stop; its queues on disk keep what is undelivered.
const COLLECTOR_GRACE: Duration = Duration::from_secs(10);

async fn stop_requested(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|&stop| stop).await;
}

/// Keeps one agent process (a collector, odiglet) running: restarts it, with backoff, when it exits on its own.
struct Keeper {
    role: &'static str,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    fn start(
        role: &'static str,
        first: Child,
        spawn: impl Fn() -> std::io::Result<Child> + Send + 'static,
    ) -> Keeper {
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut child = first;
            let mut backoff = Duration::from_secs(1);
            loop {
                let started = tokio::time::Instant::now();
                // Closing stdin asks for a clean stop: flush, then leave the rest on disk.
                let stdin = child.stdin.take();
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = stop_requested(&mut stopping) => {
                        drop(stdin);
                        let margin = Duration::from_secs(5);
                        match tokio::time::timeout(COLLECTOR_GRACE + margin, child.wait()).await {
                            Ok(_) => tracing::info!(role, "agent stopped"),
                            Err(_) => {
                                tracing::warn!(role, "agent did not stop in time; killing it");
                                let _ = child.kill().await;
                            }
                        }
                        return;
                    }
                };
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::error!(role, %status, retry_in = ?backoff, "agent exited; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_requested(&mut stopping) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match spawn() {
                    Ok(next) => child = next,
                    Err(e) => {
                        tracing::error!(role, error = %e, "cannot restart the agent; stopping");
                        return;
                    }
                }
            }
        });
        Keeper { role, stop, task }
    }

    /// Stops the agent (cleanly, within its grace period) and waits until it is gone.
    async fn stop(self) {
        let _ = self.stop.send(true);
        if self.task.await.is_err() {
            tracing::warn!(role = self.role, "the agent's keeper failed");
        }
    }
}

/// The gateway's socket in the state directory: the node collector's hop to it needs no port.
/// A socket's path is limited to about 100 bytes; beyond that, a local port.
fn gateway_socket(state_dir: &Path) -> String {
    let path = state_dir.join("gateway.sock");
    if path.as_os_str().len() <= 100 {
        format!("unix:{}", path.display())
    } else {
        tracing::info!(path = %path.display(), "the state directory's path is too long for a socket; the gateway listens on 127.0.0.1:4319");
        "127.0.0.1:4319".into()
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

/// Runs `odigos COMMAND...` managed by the OpAMP server at `endpoint`.
fn spawn_agent(
    command: &[String],
    endpoint: &str,
    token: &str,
    state_dir: &Path,
) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(command)
        .args(["--opamp-endpoint", endpoint, "--stop-on-stdin-close"])
        .arg("--state-dir")
        .arg(state_dir)
        .env("ODIGOS_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// The address a node collector reports its OTLP receiver listens on for `protocol`, from its
/// status `listening grpc 127.0.0.1:4317, http 127.0.0.1:4318`.
fn node_listening(
    plane: &Arc<odigos_server::reconciler::ControlPlane>,
    protocol: &str,
) -> Option<String> {
    let agents = plane.fleet().agents();
    let node = agents
        .iter()
        .find(|a| a.non_identifying.get("odigos.role").map(String::as_str) == Some("node"))?;
    let status = node
        .components
        .get("receivers.otlp")?
        .status
        .strip_prefix("listening ")?;
    status
        .split(", ")
        .find_map(|e| e.strip_prefix(protocol)?.strip_prefix(' '))
        .map(str::to_string)
}

/// Waits until both collectors run the configs meant for them; the errors of those that
/// could not, if any.
async fn wait_until_applied(
    plane: &Arc<odigos_server::reconciler::ControlPlane>,
    limit: Duration,
) -> Result<(), Vec<String>> {
    let mut reports = plane.fleet().changes();
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
