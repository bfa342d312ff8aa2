//! `odigos collector`: run or validate a collector config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use odigos_collector::config::LogEncoding;
use odigos_collector::{Config, Topology};
use tokio::signal::unix::{SignalKind, signal};

use crate::managed::Credentials;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// The config file: OpenTelemetry Collector YAML (receivers, processors, exporters,
    /// extensions, service.pipelines). `${env:VAR}` and `${env:VAR:-default}` are replaced from
    /// the environment; an unset variable without a default stands for the empty string, with
    /// a warning.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Be managed by an OpAMP server (`ws://host:4320/v1/opamp`, or `http://...` to poll):
    /// the collector reports to it and runs the configs it sends, swapping them in place.
    /// `--config`, when given, is the config to start with.
    #[arg(long, value_name = "URL")]
    opamp_endpoint: Option<String>,

    #[command(flatten)]
    credentials: Credentials,

    /// Where the OpAMP identity and the last applied config are kept
    /// [default: ~/.local/state/odigos/collector-ROLE].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Where the secret values that come with remote configs are written (as files only this
    /// user reads), for the configs' `${file:...}` references; other files there are removed
    /// once a config applies [default: STATE_DIR/secrets].
    #[arg(long, value_name = "DIR", requires = "opamp_endpoint")]
    secrets_dir: Option<PathBuf>,

    /// The collector's role in the pipeline, reported to the OpAMP server.
    #[arg(long, value_enum, default_value_t = Role::Node)]
    role: Role,

    /// Longest wait, on shutdown, for batches to flush and queues to deliver; then deliveries
    /// stop where they are: file queues keep what is undelivered for the next start, what is
    /// left in memory is dropped and counted.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,

    /// Shut down cleanly when standard input closes: how `odigos up` stops the collectors it
    /// started, even when it is killed itself.
    #[arg(long, hide = true)]
    stop_on_stdin_close: bool,

    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    /// The per-node collector apps send to.
    Node,
    /// The cluster gateway that applies Actions and ships to destinations.
    Gateway,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
        }
    }
}

#[derive(Subcommand)]
enum Action {
    /// Check a config file and report every error in it, without starting anything.
    Validate {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    odigos_collector::config::parse_duration(text)
}

pub fn main(args: Args) -> ExitCode {
    match args.action {
        Some(Action::Validate { file }) => match Config::from_file(&file) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("warning: {}: {warning}", file.display());
                }
                println!(
                    "{}: valid ({} receivers, {} processors, {} exporters, {} extensions, {} pipelines)",
                    file.display(),
                    config.receivers.len(),
                    config.processors.len(),
                    config.exporters.len(),
                    config.extensions.len(),
                    config.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
        None if args.opamp_endpoint.is_some() => {
            init_logs("info", LogEncoding::Console);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let code = runtime.block_on(crate::managed::run(crate::managed::Settings {
                endpoint: args.opamp_endpoint.unwrap_or_default(),
                token: args.credentials.token,
                state_dir: args.state_dir,
                secrets_dir: args.secrets_dir,
                role: args.role.as_str(),
                initial: args.config,
                grace: args.shutdown_grace,
                ca_file: args.credentials.ca_file,
                stop_on_stdin_close: args.stop_on_stdin_close,
            }));
            // What is still running (a delivery stuck in a system call) does not hold the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            code
        }
        None => {
            let Some(file) = args.config else {
                eprintln!(
                    "error: give a config file with --config FILE (see odigos collector --help)"
                );
                return ExitCode::from(2);
            };
            let config = match Config::from_file(&file) {
                Ok(config) => config,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(2);
                }
            };
            init_logs(&config.telemetry.logs.level, config.telemetry.logs.encoding);
            // Read before logging started: said now.
            for warning in &config.warnings {
                tracing::warn!(config = %file.display(), "{warning}");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let code = runtime.block_on(run(config, file, args.shutdown_grace));
            runtime.shutdown_timeout(Duration::from_secs(1));
            code
        }
    }
}

/// Logs go to stderr, as text or, with `service.telemetry.logs.encoding: json`, as one JSON
/// object per line; the encoding follows each applied config. `RUST_LOG` overrides `level`.
fn init_logs(level: &str, encoding: LogEncoding) {
    use odigos_collector::telemetry::{json_logs, set_json_logs};
    use tracing_subscriber::filter::dynamic_filter_fn;
    use tracing_subscriber::prelude::*;
    set_json_logs(encoding == LogEncoding::Json);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(dynamic_filter_fn(|_, _| !json_logs()));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .with_filter(dynamic_filter_fn(|_, _| json_logs()));
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(json)
        .init();
}

async fn run(config: Config, file: PathBuf, grace: Duration) -> ExitCode {
    let mut topology = match Topology::start(&config).await {
        Ok(topology) => topology,
        Err(errors) => {
            for error in errors.0 {
                tracing::error!("{error}");
            }
            eprintln!("error: the collector could not start (see above)");
            return ExitCode::from(1);
        }
    };
    let pipelines: Vec<String> = config.pipelines.keys().map(|p| p.to_string()).collect();
    tracing::info!(
        config = %file.display(),
        pipelines = %pipelines.join(","),
        metrics = ?topology.metrics_address().map(|a| format!("http://{a}/metrics")),
        extensions = ?topology.extension_endpoints(),
        "collector started; edit the config file or send SIGHUP to reload it"
    );
    let mut reloads = reload_triggers(&file);
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            Some(trigger) = reloads.recv() => {
                // Let a writer finish, and fold the burst of events one save makes into one.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while reloads.try_recv().is_ok() {}
                reload(&mut topology, &file, trigger).await;
            }
        }
    }
    tracing::info!("shutting down: stopping receivers, flushing pipelines");
    topology.shutdown(grace).await;
    tracing::info!("collector stopped");
    ExitCode::SUCCESS
}

/// Re-reads the config file and applies it; a config that fails is refused whole and the
/// running one stays.
async fn reload(topology: &mut Topology, file: &Path, trigger: &str) {
    let config = match Config::from_file(file) {
        // Its warnings are logged as it is read.
        Ok(config) => config,
        Err(errors) => {
            tracing::error!(
                trigger,
                "config refused, the running config stays:\n{errors}"
            );
            return;
        }
    };
    if &config == topology.config() {
        tracing::info!(trigger, "config unchanged");
        return;
    }
    match topology.apply(config).await {
        Ok(applied) => tracing::info!(trigger, "config applied: {applied}"),
        Err(errors) => tracing::error!(
            trigger,
            "config refused, the running config stays: {errors}"
        ),
    }
}

/// SIGHUP and changes to `file` (including editors that replace it), as one stream.
fn reload_triggers(file: &Path) -> tokio::sync::mpsc::Receiver<&'static str> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let on_hangup = tx.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = on_hangup.send("SIGHUP").await;
        }
    });
    // Watch the directory: editors often write a new file and rename it over the old one.
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let directory = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = target.file_name().map(|n| n.to_os_string());
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        if ours && (event.kind.is_modify() || event.kind.is_create()) {
            // A full channel already holds a pending reload, which will read the latest file.
            let _ = tx.try_send("file change");
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut watcher) => match notify::Watcher::watch(
            &mut watcher,
            &directory,
            notify::RecursiveMode::NonRecursive,
        ) {
            Ok(()) => {
                // The watcher lives as long as the process.
                std::mem::forget(watcher);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP")
            }
        },
        Err(e) => tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP"),
    }
    rx
}
