//! A fleet simulator: N OpAMP agents over WebSocket (the real protocol: full state, heartbeats,
//! APPLIED reports) against `odigos server` in its own process. Connections come from several
//! 127.0.0.x source addresses to pass the ephemeral port limit of one address.
//!
//! It reports the server's resident memory per agent, its CPU while the fleet heartbeats, and
//! the time from one config change to every agent having applied it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::opamp::*;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::runner::{
    Process, clock_ticks, default_odigos, free_port, proc_cpu_ticks, proc_status_kib,
};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The `odigos` binary [default: next to this one].
    #[arg(long)]
    odigos: Option<PathBuf>,
    /// Agents to simulate.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Seconds between each agent's heartbeats.
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
    /// Seconds over which steady-state CPU is measured.
    #[arg(long, default_value_t = 10)]
    steady: u64,
    /// Also open the UI's fleet page in headless Chromium (`bench/ui/fleet.cjs`, with
    /// playwright-core from $ODIGOS_UI_NODE_MODULES or ui/node_modules): time to first render,
    /// from one agent failing to the page showing it, the page's longest frame while every
    /// agent applies a new config, and the server's memory for the page.
    #[arg(long)]
    ui: bool,
}

/// Connections per source address, under the ~28k ephemeral ports of one address.
const PER_SOURCE: usize = 20_000;

struct Counters {
    connected: AtomicUsize,
    applied: AtomicUsize,
    failed: AtomicUsize,
    /// Set when measuring is over, so agents cut off by the server stopping say nothing.
    done: std::sync::atomic::AtomicBool,
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    // Each side needs a descriptor per agent; the hard limit is as far as we may go.
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raise the open file limit")?;
    anyhow::ensure!(
        args.agents as u64 + 200 <= limit,
        "{} agents need more open files than this machine allows a process ({limit}); \
         raise the hard limit (ulimit -Hn) or simulate fewer agents",
        args.agents
    );
    let odigos = args
        .odigos
        .or_else(default_odigos)
        .context("no odigos binary; pass --odigos")?;
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("odigos-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ui_port = free_port()?;
    let ui = if args.ui {
        format!("127.0.0.1:{ui_port}")
    } else {
        "off".into()
    };
    let script = format!(
        "ulimit -n {limit} && exec {} server --listen 127.0.0.1:{port} --agent-timeout 600s --ui {ui}",
        odigos.display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]).env("RUST_LOG", "warn");
    let mut server = Process::spawn(&mut command, &dir.join("server.log"))?;
    server.wait_for_port(port).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid();
    let baseline_kib = proc_status_kib(pid, "VmRSS")?;
    println!(
        "server: {} (pid {pid}), {baseline_kib} KiB resident before agents",
        odigos.display()
    );

    let counters = Arc::new(Counters {
        connected: AtomicUsize::new(0),
        applied: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        done: std::sync::atomic::AtomicBool::new(false),
    });
    let server_address = SocketAddr::from(([127, 0, 0, 1], port));
    let connecting = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    for i in 0..args.agents {
        let permit = connecting.clone().acquire_owned().await?;
        let counters = counters.clone();
        let source = Ipv4Addr::new(127, 0, 1 + (i / PER_SOURCE) as u8, 1);
        let heartbeat = Duration::from_secs(args.heartbeat);
        let role = if args.ui && i == 0 { "canary" } else { "node" };
        tokio::spawn(async move {
            let result = agent(
                i,
                role,
                source,
                server_address,
                heartbeat,
                counters.clone(),
                permit,
            )
            .await;
            if let Err(e) = result
                && !counters.done.load(Ordering::Relaxed)
                && counters.failed.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("agent {i}: {e:#}");
            }
        });
    }
    while counters.connected.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
        < args.agents
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = started.elapsed();
    let connected = counters.connected.load(Ordering::Relaxed);
    println!(
        "{connected} agents connected in {connect_time:.1?} ({} failed)",
        counters.failed.load(Ordering::Relaxed)
    );
    anyhow::ensure!(connected > 0, "no agent connected");

    // Settle, then measure memory and the CPU of a steady heartbeat.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_kib = proc_status_kib(pid, "VmRSS")?;
    let ticks_before = proc_cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(args.steady)).await;
    let ticks = proc_cpu_ticks(pid)? - ticks_before;
    let cpu_percent = ticks as f64 / clock_ticks() as f64 / args.steady as f64 * 100.0;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let put = async |query: &str, body: &'static [u8]| -> anyhow::Result<()> {
        let request = http::Request::put(format!("http://127.0.0.1:{port}/api/v1/config{query}"))
            .body(Full::new(Bytes::from_static(body)))?;
        let response = client.request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "config PUT failed: {}",
            response.status()
        );
        Ok(())
    };

    // The page opens, then one agent fails.
    let mut page = None;
    if args.ui {
        // The server prints a one-time sign-in link for the UI.
        let log = std::fs::read_to_string(dir.join("server.log"))?;
        let link = log
            .lines()
            .find_map(|l| l.strip_prefix("ui: "))
            .and_then(|l| l.split_whitespace().next())
            .context("the server printed no sign-in link")?;
        let mut browser = ui::Page::open(link, connected).await?;
        let before_kib = proc_status_kib(pid, "VmRSS")?;
        let render = browser.measure().await?;
        let with_page_kib = proc_status_kib(pid, "VmRSS")?;
        browser.go().await?;
        put("?role=canary", b"bogus: [").await?;
        let update = browser.measure().await?;
        browser.go().await?;
        page = Some((
            browser,
            render,
            update,
            with_page_kib.saturating_sub(before_kib),
        ));
    }

    // One config change for everyone (but the canary, which keeps its own).
    let body = b"receivers: {otlp: {protocols: {grpc: }}}\nexporters: {nop: }\nservice:\n  pipelines: {traces: {receivers: [otlp], exporters: [nop]}}\n";
    let pushed = Instant::now();
    put("", body).await?;
    let canaries = usize::from(args.ui);
    let everywhere = async {
        while counters.applied.load(Ordering::Relaxed) < connected - canaries {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(60), everywhere).await;
    let rollout = pushed.elapsed();
    let applied = counters.applied.load(Ordering::Relaxed);
    let peak_kib = proc_status_kib(pid, "VmHWM")?;
    let ui_figures = match page {
        Some((mut browser, render, update, page_kib)) => {
            let rollout = browser.measure().await?;
            Some((render, update, rollout, page_kib))
        }
        None => None,
    };
    counters.done.store(true, Ordering::Relaxed);
    drop(server);

    println!(
        "\n| agents | server RSS per agent | server CPU, heartbeat every {}s | config change applied by all | server peak RSS |",
        args.heartbeat
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {connected} | {:.1} KiB | {cpu_percent:.1}% of one core | {} | {:.0} MiB |",
        (rss_kib.saturating_sub(baseline_kib)) as f64 / connected as f64,
        if waited.is_ok() {
            format!("{:.2} s", rollout.as_secs_f64())
        } else {
            format!("{applied} of {connected} in 60 s")
        },
        peak_kib as f64 / 1024.0
    );
    if let Some((render, update, rollout, page_kib)) = ui_figures {
        println!(
            "\n| agents | fleet page first render | one agent failing, shown after | every agent applying: all shown after | longest frame meanwhile | server memory for the page |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {connected} | {} ms | {} ms | {} ms | {} ms | {:.1} MiB |",
            render["render_ms"],
            update["update_ms"],
            rollout["rollout_ms"],
            rollout["longest_frame_ms"],
            page_kib as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The fleet page in headless Chromium, driven by `bench/ui/fleet.cjs`.
mod ui {
    use std::process::Stdio;

    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdout};

    pub struct Page {
        child: Child,
        lines: Lines<BufReader<ChildStdout>>,
    }

    impl Page {
        pub async fn open(link: &str, agents: usize) -> anyhow::Result<Page> {
            let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let modules = std::env::var_os("ODIGOS_UI_NODE_MODULES")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| workspace.join("ui/node_modules"));
            anyhow::ensure!(
                modules.join("playwright-core").is_dir()
                    && std::path::Path::new("/usr/bin/chromium").exists(),
                "--ui needs Chromium (/usr/bin/chromium) and playwright-core in {} (./test.sh installs both)",
                modules.display()
            );
            let mut child = tokio::process::Command::new("node")
                .arg(workspace.join("bench/ui/fleet.cjs"))
                .env("ODIGOS_UI_LINK", link)
                .env("ODIGOS_UI_NODE_MODULES", &modules)
                .env("ODIGOS_AGENTS", agents.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("run node")?;
            let stdout = child.stdout.take().context("node's output")?;
            Ok(Page {
                child,
                lines: BufReader::new(stdout).lines(),
            })
        }

        /// The next figure the page reports.
        pub async fn measure(&mut self) -> anyhow::Result<serde_json::Value> {
            let line = self
                .lines
                .next_line()
                .await?
                .context("the browser run ended early (its error is above)")?;
            Ok(serde_json::from_str(&line)?)
        }

        /// Tells the page that the next change starts now.
        pub async fn go(&mut self) -> anyhow::Result<()> {
            let stdin = self.child.stdin.as_mut().context("node's input")?;
            stdin.write_all(b"go\n").await?;
            Ok(stdin.flush().await?)
        }
    }
}

/// One simulated agent: connect, describe itself, heartbeat, and apply what it is sent.
async fn agent(
    index: usize,
    role: &'static str,
    source: Ipv4Addr,
    server: SocketAddr,
    heartbeat: Duration,
    counters: Arc<Counters>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .context("bind the source address")?;
    let stream = socket.connect(server).await.context("connect")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = format!("ws://{server}/v1/opamp");
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let uid = new_instance_uid();
    let kv = |key: &str, value: String| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
    };
    let capabilities = bits(&[
        AgentCapabilities::ReportsStatus,
        AgentCapabilities::AcceptsRemoteConfig,
        AgentCapabilities::ReportsRemoteConfig,
        AgentCapabilities::ReportsHeartbeat,
    ]);
    let mut sequence = 0;
    let mut message = |extra: fn(&mut AgentToServer)| {
        let mut m = AgentToServer {
            instance_uid: uid.to_vec(),
            sequence_num: sequence,
            capabilities,
            ..Default::default()
        };
        sequence += 1;
        extra(&mut m);
        m
    };
    let mut hello = message(|_| {});
    hello.agent_description = Some(AgentDescription {
        identifying_attributes: vec![
            kv("service.name", "fleet-sim".into()),
            kv("service.instance.id", format!("agent-{index}")),
        ],
        non_identifying_attributes: vec![
            kv("odigos.role", role.into()),
            kv("host.name", format!("node-{}", index % 64)),
        ],
    });
    ws.send(Frame::Binary(ws_frame(&hello).into())).await?;
    ws.next().await.context("no answer to hello")??;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    drop(permit);

    // Spread heartbeats over the interval.
    let offset = heartbeat.mul_f64((index % 1000) as f64 / 1000.0);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(Frame::Binary(frame))) = frame else { return Ok(()) };
                let reply = ServerToAgent::decode(ws_payload(&frame).map_err(anyhow::Error::msg)?)?;
                if let Some(offer) = reply.remote_config {
                    // A config that does not parse (the canary's) is refused, as a collector would.
                    let broken = offer.config.iter().flat_map(|c| c.config_map.values()).any(|f| f.body.ends_with(b"["));
                    let mut status = message(|_| {});
                    status.remote_config_status = Some(RemoteConfigStatus {
                        last_remote_config_hash: offer.config_hash,
                        status: if broken { RemoteConfigStatuses::Failed } else { RemoteConfigStatuses::Applied } as i32,
                        error_message: if broken { "collector.yaml:1: unexpected end of input".into() } else { String::new() },
                    });
                    ws.send(Frame::Binary(ws_frame(&status).into())).await?;
                    if !broken {
                        counters.applied.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = ticks.tick() => {
                let beat = message(|_| {});
                ws.send(Frame::Binary(ws_frame(&beat).into())).await?;
            }
        }
    }
}
