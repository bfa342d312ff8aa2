//! `odigos`: the one binary of odigos-rs.

mod collector;
mod describe;
mod log_links;
mod managed;
mod odiglet;
mod pods;
mod sdk_relay;
mod server;
mod up;

use clap::{Parser, Subcommand};

// Built without transparent huge pages (`no_thp`): an agent's memory is counted, and a 2 MiB
// page faulted in for a few small allocations would inflate it and cost a page clear each.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives memory freed since the last call back to the OS now. The allocator does so on its
/// own only while it keeps allocating, which an idle agent may not do for a long time.
fn release_freed_memory() {
    // SAFETY: mi_collect only walks and trims the allocator's own state.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

/// Zero-code OpenTelemetry: instrumentation, a two-tier collector pipeline and its control plane.
#[derive(Parser)]
#[command(name = "odigos", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine: the control plane (desired state in ./odigos.d/), the
    /// OpAMP server, a gateway and a node collector that take OTLP on 127.0.0.1:4317/4318,
    /// and, as root, odiglet, which traces the programs Sources name with eBPF.
    Up(up::Args),
    /// Show why data does or does not flow: desired vs applied configs, status, errors,
    /// throughput.
    Describe(describe::Args),
    /// Print the CustomResourceDefinitions of the odigos.io resources as YAML.
    Crdgen,
    /// Run the collector on an OpenTelemetry Collector YAML config, or validate one.
    Collector(collector::Args),
    /// Run the node agent: trace the processes that Sources name with eBPF, with no code
    /// change, and send their spans to the node collector. Needs root.
    Odiglet(odiglet::Args),
    /// Run the control plane: the OpAMP server that manages collectors, and its API.
    Server(Box<server::Args>),
    /// Print the version.
    Version,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => up::main(args),
        Command::Describe(args) => describe::main(args),
        Command::Crdgen => {
            print!("{}", odigos_server::resource::crds_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Collector(args) => collector::main(args),
        Command::Odiglet(args) => odiglet::main(args),
        Command::Server(args) => server::main(*args),
        Command::Version => {
            println!("odigos {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides `level`.
fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
