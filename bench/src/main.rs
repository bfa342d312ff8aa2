//! `odigos-bench`: load generator, counting sink and side-by-side runner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use odigos_bench::cluster::{self, ClusterArgs};
use odigos_bench::control::{self, ControlArgs};
use odigos_bench::ebpf::{self, EbpfArgs};
use odigos_bench::filelog::{self, FilelogArgs};
use odigos_bench::fleet::{self, FleetArgs};
use odigos_bench::load::{self, LoadOptions, LoadStats};
use odigos_bench::request::Payloads;
use odigos_bench::runner::{self, RunArgs};
use odigos_bench::sink::Sink;
use odigos_bench::swap::{self, SwapArgs};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send OTLP/gRPC trace load to an endpoint and report what it acknowledged.
    Load(LoadArgs),
    /// Receive OTLP/gRPC traces, count them and print the rate every second.
    Sink(SinkArgs),
    /// Measure our collector and rotel side by side and print a markdown table.
    Run(RunArgs),
    /// Measure config swaps under load: time to applied, and the throughput around each swap.
    Swap(SwapArgs),
    /// Simulate a fleet of OpAMP agents against `odigos server`: memory per agent, CPU at
    /// steady heartbeat, and the time for one config change to be applied everywhere.
    Fleet(FleetArgs),
    /// Measure the control plane: compile time of a large desired state, and the time from a
    /// file written in `odigos up`'s `odigos.d/` to every collector running the new config.
    Control(ControlArgs),
    /// Measure the control plane on a Kubernetes cluster: thousands of workloads, Sources and
    /// Destinations applied at once, and an Action's change to applied.
    Cluster(ClusterArgs),
    /// Measure eBPF tracing: an HTTP server's throughput and latency untraced, traced, and
    /// while another process is traced; odiglet's CPU per request and memory. Needs root.
    Ebpf(EbpfArgs),
    /// Measure reading log files: our collector and otelcol-contrib side by side, lines/s, CPU
    /// per line and peak RSS.
    Filelog(FilelogArgs),
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Separate gRPC (TCP) connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Spans per second over all connections [default: as fast as the target acknowledges]
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Distinct pre-encoded requests to cycle through.
    #[arg(long, default_value_t = 64)]
    payloads: usize,
}

#[derive(Debug, clap::Args)]
struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:14317")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Load(args) => load(args).await,
        Cmd::Sink(args) => sink(args).await,
        Cmd::Run(args) => runner::run(args).await,
        Cmd::Swap(args) => swap::run(args).await,
        Cmd::Fleet(args) => fleet::run(args).await,
        Cmd::Control(args) => control::run(args).await,
        Cmd::Cluster(args) => cluster::run(args).await,
        Cmd::Ebpf(args) => ebpf::run(args),
        Cmd::Filelog(args) => filelog::run(args).await,
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let payloads = Arc::new(Payloads::generate(args.payloads, 42));
    println!(
        "payload: {} requests of 100 spans, {:.0} bytes per span, {:.0} bytes per request",
        payloads.requests().len(),
        payloads.avg_span_bytes(),
        payloads.avg_request_bytes()
    );
    let options = LoadOptions {
        endpoint: args.endpoint,
        connections: args.connections,
        in_flight: args.in_flight,
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
    };
    let stats = Arc::new(LoadStats::default());
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let mut last = 0;
            loop {
                ticks.tick().await;
                let acked = stats.acked();
                println!(
                    "{} spans/s acknowledged, {} failed",
                    acked - last,
                    stats.failed()
                );
                last = acked;
            }
        })
    };
    let report = load::run(&options, payloads, stats).await;
    progress.abort();
    println!("{}", report?);
    Ok(())
}

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    let sink = Sink::start(args.listen).await?;
    println!("listening on {}", sink.addr());
    let counters = sink.counters().clone();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let (mut spans, mut requests) = (0, 0);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = ticks.tick() => {
                let (now_spans, now_requests) = (counters.spans(), counters.requests());
                println!(
                    "{} spans/s, {} requests/s, {now_spans} spans in total, \
                     {} compressed and {} invalid requests",
                    now_spans - spans,
                    now_requests - requests,
                    counters.compressed(),
                    counters.invalid()
                );
                (spans, requests) = (now_spans, now_requests);
            }
        }
    }
    Ok(())
}
