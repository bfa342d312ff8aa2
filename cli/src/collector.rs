//! `odigos collector`: run or validate a collector config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use odigos_collector::{Config, Topology};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// The config file: OpenTelemetry Collector YAML (receivers, processors, exporters,
    /// service.pipelines). `${env:VAR}` and `${env:VAR:-default}` are replaced from the
    /// environment.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Longest wait, on shutdown, for batches to flush and queues to drain.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,

    #[command(subcommand)]
    action: Option<Action>,
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
                println!(
                    "{}: valid ({} receivers, {} processors, {} exporters, {} pipelines)",
                    file.display(),
                    config.receivers.len(),
                    config.processors.len(),
                    config.exporters.len(),
                    config.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
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
            crate::init_logs(&config.telemetry.logs.level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(run(config, file, args.shutdown_grace))
        }
    }
}

async fn run(config: Config, file: PathBuf, grace: Duration) -> ExitCode {
    let topology = match Topology::start(&config).await {
        Ok(topology) => topology,
        Err(errors) => {
            for error in errors {
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
        "collector started"
    );
    wait_for_signal().await;
    tracing::info!("shutting down: stopping receivers, flushing pipelines");
    topology.shutdown(grace).await;
    tracing::info!("collector stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
