//! `odigos collector --opamp-endpoint`: the collector under its supervisor. Remote configs are
//! validated and hot-swapped by the running topology; one that fails is reported FAILED and
//! the previous one keeps running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use odigos_collector::{Config, Topology};
use odigos_proto::opamp::ComponentHealth;
use odigos_proto::opamp::SECRETS_FILE;
use odigos_supervisor::{Apply, Files, Options};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;

/// How a managed process proves itself to its OpAMP server, and which server it trusts: the
/// flags `odigos collector` and `odigos odiglet` share.
#[derive(clap::Args)]
pub struct Credentials {
    /// Bearer token for the OpAMP server.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ODIGOS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// For a `wss://` OpAMP endpoint: the CA certificates (PEM) to trust instead of the
    /// public roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

pub struct Settings {
    pub endpoint: String,
    pub token: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
    pub role: &'static str,
    pub initial: Option<PathBuf>,
    pub grace: Duration,
    pub ca_file: Option<PathBuf>,
    pub stop_on_stdin_close: bool,
}

/// The collector as the supervisor sees it.
struct Managed {
    topology: Mutex<Option<Topology>>,
    /// The applied config file: its name and its text with secrets redacted.
    effective: Mutex<Option<(String, String)>>,
    /// Where the secret values that come with a remote config are written.
    secrets_dir: PathBuf,
    started: SystemTime,
}

#[async_trait]
impl Apply for Managed {
    async fn apply(&self, files: &Files) -> Result<(), String> {
        let yaml = |name: &str, content_type: &str| {
            content_type.contains("yaml") || name.ends_with(".yaml") || name.ends_with(".yml")
        };
        let (name, (body, _)) = files
            .iter()
            .find(|(name, (_, content_type))| yaml(name, content_type))
            .or_else(|| files.iter().find(|(name, _)| *name != SECRETS_FILE))
            .ok_or("the remote config has no file; expected one collector YAML file")?;
        // The secret values first: the config reads them as it loads.
        let secrets = match files.get(SECRETS_FILE) {
            Some((body, _)) => write_secrets(&self.secrets_dir, body)?,
            None => Vec::new(),
        };
        let name = if name.is_empty() {
            "remote config"
        } else {
            name.as_str()
        };
        let text = std::str::from_utf8(body).map_err(|e| format!("{name}: not UTF-8: {e}"))?;
        let config =
            Config::from_yaml(text, name).map_err(|e| e.to_string().trim_end().to_string())?;
        let mut topology = self.topology.lock().await;
        match topology.as_mut() {
            Some(running) => {
                let applied = running.apply(config).await.map_err(|e| e.to_string())?;
                tracing::info!("remote config applied: {applied}");
            }
            None => {
                *topology = Some(Topology::start(&config).await.map_err(|e| e.to_string())?);
                tracing::info!("collector started from the remote config");
            }
        }
        *self.effective.lock().await =
            Some((name.to_string(), odigos_collector::config::redact(text)));
        forget_other_secrets(&self.secrets_dir, &secrets);
        Ok(())
    }

    async fn effective_config(&self) -> Files {
        match &*self.effective.lock().await {
            Some((name, text)) => [(
                name.clone(),
                (text.clone().into_bytes(), "text/yaml".to_string()),
            )]
            .into(),
            None => Files::new(),
        }
    }

    async fn health(&self) -> ComponentHealth {
        let topology = self.topology.lock().await;
        let Some(topology) = topology.as_ref() else {
            return ComponentHealth {
                healthy: true,
                status: "waiting for a config".into(),
                start_time_unix_nano: unix_nanos(self.started),
                status_time_unix_nano: unix_nanos(self.started),
                ..Default::default()
            };
        };
        let endpoints = topology.endpoints();
        let mut components: std::collections::HashMap<String, ComponentHealth> = topology
            .health()
            .into_iter()
            .map(|(name, health)| {
                // A receiver says where it listens: the port it got for `:0`, a socket's path.
                let listening = name
                    .strip_prefix("receivers.")
                    .and_then(|id| endpoints.get(id))
                    .map(|e| format!("listening {}", e.join(", ")));
                let status = match (listening, health.healthy) {
                    (Some(listening), _) => listening,
                    (None, true) if health.detail.is_empty() => "ok".into(),
                    (None, true) => health.detail,
                    (None, false) => format!(
                        "failing: {} failed attempts; {}",
                        health.failures, health.detail
                    ),
                };
                // The time of the last change (none for an exporter that has not sent yet).
                let since = health.since.map_or(0, unix_nanos);
                let component = ComponentHealth {
                    healthy: health.healthy,
                    status,
                    last_error: health.last_error.unwrap_or_default(),
                    start_time_unix_nano: unix_nanos(self.started),
                    status_time_unix_nano: since,
                    ..Default::default()
                };
                (name, component)
            })
            .collect();
        // Where its own metrics are served: the port it got for `:0` too.
        if let Some(address) = topology.metrics_address() {
            let metrics = ComponentHealth {
                healthy: true,
                status: format!("listening {address}"),
                start_time_unix_nano: unix_nanos(self.started),
                ..Default::default()
            };
            components.insert(METRICS.to_string(), metrics);
        }
        let changed = components
            .values()
            .map(|c| c.status_time_unix_nano)
            .filter(|t| *t > 0)
            .max();
        let failing: Vec<&String> = components
            .iter()
            .filter(|(_, c)| !c.healthy)
            .map(|(n, _)| n)
            .collect();
        ComponentHealth {
            healthy: failing.is_empty(),
            status: if failing.is_empty() {
                "running".into()
            } else {
                "degraded".into()
            },
            last_error: failing
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            start_time_unix_nano: unix_nanos(self.started),
            status_time_unix_nano: changed.unwrap_or_else(|| unix_nanos(self.started)),
            component_health_map: components,
        }
    }
}

/// The component whose status says where the collector's own metrics are served.
const METRICS: &str = "service.telemetry.metrics";

pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Where a managed agent keeps its OpAMP identity and last config when not told:
/// `~/.local/state/odigos/NAME`.
pub(crate) fn default_state_dir(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/odigos").join(name)
}

/// This machine's name, as agents describe where they run.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Writes the secret values of a remote config's secrets file (a JSON object of file names
/// and values) into `dir`, readable by this user alone; returns the names written. The values
/// are never logged, not even in errors.
fn write_secrets(dir: &std::path::Path, body: &[u8]) -> Result<Vec<String>, String> {
    use std::os::unix::fs::DirBuilderExt;
    let values: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(body).map_err(|e| {
            // The error's own text may quote a value; only say where it is wrong.
            format!(
                "{SECRETS_FILE}: not a JSON object of file names and values ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{SECRETS_FILE}: cannot create {}: {e}", dir.display()))?;
    for (name, value) in &values {
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains('/');
        if !plain {
            return Err(format!("{SECRETS_FILE}: `{name}` is not a plain file name"));
        }
        let path = dir.join(name);
        odigos_proto::private::write(&path, value.as_bytes())
            .map_err(|e| format!("{SECRETS_FILE}: cannot write {}: {e}", path.display()))?;
    }
    Ok(values.into_keys().collect())
}

/// Removes the secret files in `dir` the applied config no longer names.
fn forget_other_secrets(dir: &std::path::Path, kept: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kept.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// In a pod, where it runs, as the pod spec gives it through the downward API
/// (`ODIGOS_POD_NAME`, `ODIGOS_POD_IP`, `ODIGOS_NODE_NAME`): the control plane reads a
/// collector's metrics at its pod's address.
pub(crate) fn pod_attributes() -> Vec<(String, String)> {
    [
        ("k8s.pod.name", "ODIGOS_POD_NAME"),
        ("k8s.pod.ip", "ODIGOS_POD_IP"),
        ("k8s.node.name", "ODIGOS_NODE_NAME"),
    ]
    .into_iter()
    .filter_map(|(key, variable)| {
        let value = std::env::var(variable).ok().filter(|v| !v.is_empty())?;
        Some((key.to_string(), value))
    })
    .collect()
}

/// Resolves when a managed agent is asked to stop: Ctrl-C, SIGTERM, or, with
/// `on_stdin_close`, its standard input closing (how `odigos up` stops what it started).
pub(crate) async fn stop_requested(on_stdin_close: bool) {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let stdin_closed = async {
        if on_stdin_close {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
        } else {
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
}

pub async fn run(settings: Settings) -> ExitCode {
    // A node collector in a cluster reads its node's pods, for k8sattributes.
    if settings.role == "node"
        && let Ok(node) = std::env::var("ODIGOS_NODE_NAME")
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        let directory = Arc::new(crate::pods::Directory::default());
        odigos_collector::processor::k8s_attributes::set_directory(directory.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::pods::follow_directory(node, directory).await {
                tracing::error!("cannot follow this node's pods; k8sattributes adds nothing: {e}");
            }
        });
    }
    let state_dir = settings
        .state_dir
        .unwrap_or_else(|| default_state_dir(&format!("collector-{}", settings.role)));
    let managed = Arc::new(Managed {
        topology: Mutex::new(None),
        effective: Mutex::new(None),
        secrets_dir: settings
            .secrets_dir
            .unwrap_or_else(|| state_dir.join("secrets")),
        started: SystemTime::now(),
    });
    if let Some(file) = &settings.initial {
        let files: Files = match std::fs::read(file) {
            Ok(body) => [(file.display().to_string(), (body, "text/yaml".to_string()))].into(),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        if let Err(e) = managed.apply(&files).await {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let host = host_name();
    let options = Options {
        endpoint: settings.endpoint,
        token: settings.token,
        state_dir,
        identifying: vec![
            ("service.name".into(), "io.odigos.collector".into()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ],
        non_identifying: [
            ("odigos.role".to_string(), settings.role.to_string()),
            ("host.name".into(), host),
        ]
        .into_iter()
        .chain(pod_attributes())
        .collect(),
        heartbeat: Duration::from_secs(30),
        ca_file: settings.ca_file,
    };
    tracing::info!(endpoint = %options.endpoint, role = settings.role, "collector managed over opamp");
    let stop = stop_requested(settings.stop_on_stdin_close);
    if let Err(e) = odigos_supervisor::run(options, managed.clone(), stop).await {
        eprintln!("error: the opamp supervisor could not start: {e}");
        return ExitCode::from(1);
    }
    tracing::info!("shutting down: stopping receivers, flushing pipelines");
    if let Some(topology) = managed.topology.lock().await.take() {
        topology.shutdown(settings.grace).await;
    }
    tracing::info!("collector stopped");
    ExitCode::SUCCESS
}
