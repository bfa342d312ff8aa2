//! `odigos server`: the control plane. For now: the OpAMP server and its HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use odigos_server::opamp::{Options, PATH, Server};

#[derive(clap::Args)]
pub struct Args {
    /// Where agents connect (OpAMP over WebSocket or HTTP, at /v1/opamp) and the API is served.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4320")]
    listen: String,

    /// Bearer token agents and API clients must present.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ODIGOS_OPAMP_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Serve TLS with this PEM certificate chain (with --tls-key); agents then use wss://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// An agent not heard from for this long is considered gone.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = odigos_collector::config::parse_duration)]
    agent_timeout: Duration,
}

pub fn main(args: Args) -> ExitCode {
    crate::init_logs("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let tls = args.tls_cert.zip(args.tls_key);
        let scheme = if tls.is_some() { ("wss", "https") } else { ("ws", "http") };
        let options = Options { token: args.token, agent_timeout: args.agent_timeout, tls, ..Options::default() };
        let server = match Server::start(&args.listen, options).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: cannot serve on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let base = format!("{}://{}", scheme.1, server.address);
        println!("opamp: {}://{}{PATH} (or {base}{PATH} to poll)", scheme.0, server.address);
        println!("agents: curl {base}/api/v1/agents");
        println!("assign a config: curl -X PUT --data-binary @collector.yaml '{base}/api/v1/config?role=node'");
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        ExitCode::SUCCESS
    })
}
