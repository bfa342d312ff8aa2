//! `odigos odiglet`: the node agent. It traces the processes its Sources name with eBPF and
//! sends their spans as OTLP to the node collector, managed over OpAMP like every agent: a
//! config that fails is reported FAILED with its field and the previous one keeps running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use odigos_collector::Batch;
use odigos_collector::topology::Context;
use odigos_ebpf::agent::Odiglet;
use odigos_ebpf::otlp::EncodedTraces;
use odigos_ebpf::pods::Pods;
use odigos_proto::Signal;
use odigos_proto::odiglet::{FILE, OdigletConfig};
use odigos_proto::opamp::ComponentHealth;
use odigos_supervisor::{Apply, Files, Options};

use crate::managed::{
    Credentials, default_state_dir, host_name, pod_attributes, stop_requested, unix_nanos,
};
use crate::sdk_relay::Relay;
use tokio::sync::{Mutex, mpsc};

#[derive(clap::Args)]
pub struct Args {
    /// The OpAMP server to report to and take configs from (`ws://host:4320/v1/opamp`, or
    /// `http://...` to poll).
    #[arg(long, value_name = "URL")]
    opamp_endpoint: String,

    #[command(flatten)]
    credentials: Credentials,

    /// Where the OpAMP identity and the last applied config are kept
    /// [default: ~/.local/state/odigos/odiglet].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// The node collector's OTLP/gRPC endpoint, where spans go.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4317")]
    export_endpoint: String,

    /// The proc filesystem to find processes in (the host's, in a container).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    proc: PathBuf,

    /// In Kubernetes, this node's name: odiglet follows the node's pods through the API
    /// server (in-cluster credentials) to trace the Sources' workloads and to give their spans
    /// `k8s.*` attributes.
    #[arg(long, value_name = "NAME", env = "ODIGOS_NODE_NAME")]
    node_name: Option<String>,

    /// With --node-name: relay the OpAMP of the node's pods' SDKs here (HOST:PORT, plain
    /// HTTP, where the pod webhook points them): they need no token, each is described as
    /// what its pod runs, and the control plane answers them as SDK agents only.
    #[arg(long, value_name = "HOST:PORT", requires = "node_name")]
    sdk_opamp: Option<String>,

    /// Keep, for each Source, links to the files its processes write their standard output
    /// and error to, in DIR/<namespace>.<name>/ (where the node collector reads them when a
    /// Destination takes logs).
    #[arg(long, value_name = "DIR")]
    log_links: Option<PathBuf>,

    /// Shut down when standard input closes: how `odigos up` stops what it started.
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,
}

/// Export requests waiting for the exporter; beyond this, spans are dropped and counted.
const BACKLOG: usize = 64;
/// How often the links to the processes' output files are brought up to date.
const LINK_EVERY: Duration = Duration::from_secs(2);
/// How often freed memory is given back to the OS.
const TRIM: Duration = Duration::from_secs(5);

struct Managed {
    odiglet: Odiglet,
    context: Context,
    /// Spans the exporter refused (its queue full).
    refused: Arc<AtomicU64>,
    effective: Mutex<Option<String>>,
    started: SystemTime,
}

#[async_trait]
impl Apply for Managed {
    async fn apply(&self, files: &Files) -> Result<(), String> {
        let (name, (body, _)) = files
            .get_key_value(FILE)
            .or_else(|| files.iter().next())
            .ok_or(format!("the remote config has no file; expected {FILE}"))?;
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        let config: OdigletConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let path = e.path().to_string();
                format!("{name}: {path}: {}", e.into_inner())
            })?;
        let sources = config.sources.len();
        self.odiglet
            .apply(config)
            .map_err(|e| format!("{name}: {e}"))?;
        tracing::info!(sources, "config applied");
        *self.effective.lock().await = Some(String::from_utf8_lossy(body).into_owned());
        Ok(())
    }

    async fn effective_config(&self) -> Files {
        match &*self.effective.lock().await {
            Some(text) => [(
                FILE.to_string(),
                (text.clone().into_bytes(), "application/json".to_string()),
            )]
            .into(),
            None => Files::new(),
        }
    }

    async fn health(&self) -> ComponentHealth {
        let started = unix_nanos(self.started);
        let component = |healthy: bool, status: String, last_error: String| ComponentHealth {
            healthy,
            status,
            last_error,
            start_time_unix_nano: started,
            ..Default::default()
        };
        let report = self.odiglet.report();
        let mut components = std::collections::HashMap::new();
        components.insert(
            "ebpf".to_string(),
            match &report.ebpf {
                Ok(programs) => {
                    let ids: Vec<String> = programs.iter().map(|(_, id)| id.to_string()).collect();
                    let status = format!(
                        "{} programs attached, ids {}; maps: {} connections; {} connections assembled",
                        ids.len(),
                        ids.join(","),
                        report.kernel_connections,
                        report.connections
                    );
                    component(true, status, String::new())
                }
                Err(e) => component(false, "eBPF tracing is off".into(), e.clone()),
            },
        );
        let exporter = self.context.health.get("exporters.otlp");
        let exporter_healthy = exporter.as_ref().is_none_or(|h| h.healthy);
        components.insert(
            "exporters.otlp".to_string(),
            component(
                exporter_healthy,
                if exporter_healthy { "ok" } else { "failing" }.into(),
                exporter.and_then(|h| h.last_error).unwrap_or_default(),
            ),
        );
        let dropped = report.spans_dropped + self.refused.load(Ordering::Relaxed);
        components.insert(
            "spans".to_string(),
            component(
                true,
                format!(
                    "{} sent, {dropped} dropped (export backlog full), {} left out (sampling, dropped routes, processes no longer traced), {} kernel events lost (ring buffer full)",
                    report.spans_sent.saturating_sub(self.refused.load(Ordering::Relaxed)),
                    report.spans_sampled_out,
                    report.events_lost
                ),
                String::new(),
            ),
        );
        for (pid, process) in &report.processes {
            let runtime = process
                .runtime
                .as_ref()
                .map_or("unknown runtime".into(), |r| {
                    format!(
                        "{} {}",
                        r.language.name(),
                        r.version.as_deref().unwrap_or("")
                    )
                    .trim_end()
                    .to_string()
                });
            let state = if process.traced {
                "traced"
            } else {
                "not traced: traces are off"
            };
            let place = match (&process.pod, &process.container) {
                (Some(pod), container) => format!(
                    "pod {}/{}, container {}, ",
                    pod.namespace,
                    pod.name,
                    container.as_deref().unwrap_or("unknown")
                ),
                (None, _) => String::new(),
            };
            components.insert(
                format!("processes.{pid}"),
                component(
                    process.traced,
                    format!(
                        "{} ({runtime}): service {}, Source {}, {place}{state}",
                        process.executable, process.service_name, process.source
                    ),
                    String::new(),
                ),
            );
        }
        let healthy = report.ebpf.is_ok() && exporter_healthy;
        ComponentHealth {
            healthy,
            status: if healthy { "running" } else { "degraded" }.into(),
            last_error: match &report.ebpf {
                Err(e) => format!("eBPF tracing is off: {e}"),
                Ok(_) if !exporter_healthy => "exporters.otlp failing".into(),
                Ok(_) => String::new(),
            },
            start_time_unix_nano: started,
            status_time_unix_nano: started,
            component_health_map: components,
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::init_logs("info");
    // One thread: span assembly, export and OpAMP hand work to each other without waking
    // another thread, and odiglet takes at most one core from the applications it traces.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(args: Args) -> ExitCode {
    let context = Context::new();
    // The node collector runs on this node: compressing would cost more CPU than it saves.
    let settings = format!(
        "endpoint: {}\ntls: {{insecure: true}}\ncompression: none\nsending_queue: {{queue_size: 256}}\n",
        args.export_endpoint
    );
    let exporter = match odigos_collector::exporter::standalone("otlp", "otlp", &settings, &context)
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("error: --export-endpoint {}: {e}", args.export_endpoint);
            return ExitCode::from(2);
        }
    };
    let host = host_name();
    let (spans, mut requests) = mpsc::channel::<EncodedTraces>(BACKLOG);
    let refused = Arc::new(AtomicU64::new(0));
    let counted = refused.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let batch = Batch::trusted(Signal::Traces, request.bytes.into(), request.spans);
            let items = request.spans as u64;
            if let Err(e) = exporter.consume(batch).await {
                counted.fetch_add(items, Ordering::Relaxed);
                tracing::warn!("{items} spans dropped: {e}");
            }
        }
    });
    // Loading the eBPF programs parses the kernel's BTF, tens of MiB freed at once after.
    tokio::spawn(async {
        let mut trim = tokio::time::interval(TRIM);
        loop {
            trim.tick().await;
            crate::release_freed_memory();
        }
    });
    let proc = args.proc.clone();
    let managed = Arc::new(Managed {
        odiglet: Odiglet::start(args.proc, host.clone(), spans),
        context,
        refused,
        effective: Mutex::new(None),
        started: SystemTime::now(),
    });
    if let Some(dir) = args.log_links {
        let linked = managed.clone();
        tokio::spawn(async move {
            let mut failing = false;
            let mut every = tokio::time::interval(LINK_EVERY);
            loop {
                every.tick().await;
                let processes = linked.odiglet.report().processes;
                match crate::log_links::update(&dir, &proc, &processes) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the links to the processes' output; trying again");
                    }
                    Err(_) => {}
                }
            }
        });
    }
    if let Some(node) = args.node_name {
        let (pods, followed) = tokio::sync::watch::channel(Pods::new());
        if let Some(address) = &args.sdk_opamp {
            let relay = match Relay::new(
                &args.opamp_endpoint,
                args.credentials.token.clone(),
                node.clone(),
                followed,
            ) {
                Ok(relay) => relay,
                Err(e) => {
                    eprintln!("error: --sdk-opamp: {e}");
                    return ExitCode::from(2);
                }
            };
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!("error: --sdk-opamp: cannot listen on {address}: {e}");
                    return ExitCode::from(1);
                }
            };
            tracing::info!(%address, "relaying the OpAMP of this node's SDKs");
            tokio::spawn(crate::sdk_relay::serve(listener, relay));
        }
        let follower = managed.clone();
        tokio::spawn(async move {
            let update = |now: Pods| {
                follower.odiglet.set_pods(now.clone());
                pods.send_replace(now);
            };
            if let Err(e) = crate::pods::follow(node, update).await {
                tracing::error!(
                    "cannot follow this node's pods, so no Kubernetes workload is traced: {e}"
                );
            }
        });
    }
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| default_state_dir("odiglet"));
    let options = Options {
        endpoint: args.opamp_endpoint,
        token: args.credentials.token,
        state_dir,
        identifying: vec![
            ("service.name".into(), "io.odigos.odiglet".into()),
            ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ],
        non_identifying: [
            ("odigos.role".to_string(), "odiglet".to_string()),
            ("host.name".into(), host),
        ]
        .into_iter()
        .chain(pod_attributes())
        .collect(),
        heartbeat: Duration::from_secs(30),
        ca_file: args.credentials.ca_file,
    };
    tracing::info!(endpoint = %options.endpoint, export = %args.export_endpoint, "odiglet managed over opamp");
    let stop = stop_requested(args.stop_on_stdin_close);
    if let Err(e) = odigos_supervisor::run(options, managed, stop).await {
        eprintln!("error: the opamp supervisor could not start: {e}");
        return ExitCode::from(1);
    }
    tracing::info!("odiglet stopped");
    ExitCode::SUCCESS
}
