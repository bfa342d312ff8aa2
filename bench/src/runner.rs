//! The side-by-side runner: the same load through each collector, measured the same way.
//!
//! The counting sink runs in this process. Each collector runs as a child process, gets a warm-up
//! of load, then a measured window during which we read its CPU time and memory from `/proc`.
//! Throughput is what arrives at the sink (or, with a blackhole exporter, what the collector
//! acknowledges), so a collector that acknowledges but drops data does not score well.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::load::{self, LoadOptions, LoadReport, LoadStats};
use crate::request::Payloads;
use crate::sink::Sink;

/// How long a collector may take to open its gRPC port.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a collector may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Collector {
    /// The odigos collector built from this workspace.
    Ours,
    /// rotel, another collector written in Rust.
    Rotel,
}

impl Collector {
    fn name(self) -> &'static str {
        match self {
            Collector::Ours => "ours",
            Collector::Rotel => "rotel",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The odigos binary [default: `odigos` next to this binary]
    #[arg(long)]
    pub odigos: Option<PathBuf>,
    /// The rotel-agent binary [default: rotel/rotel-agent in the workspace's .venv]
    #[arg(long, env = "ROTEL_AGENT")]
    pub rotel: Option<PathBuf>,
    /// Measure only this collector.
    #[arg(long, value_enum)]
    pub only: Option<Collector>,
    /// Seconds of measured load per case and collector.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Separate gRPC (TCP) connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Adds a forward case at this fixed rate, in spans per second; the fan-out cases run at
    /// it too [default for those: 50000].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Distinct pre-encoded requests to cycle through.
    #[arg(long, default_value_t = 64)]
    pub payloads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    /// OTLP in, batch, OTLP out to the sink.
    Forward { rate: Option<f64> },
    /// OTLP in, dropped: the cost of receiving alone.
    Blackhole,
    /// Forward through a sending queue on disk: acknowledged once synced.
    Persistent,
    /// The gateway's shape: batch once, a `forward` connector to three destinations, each with
    /// its own queue on disk that drops its oldest data when full; `down` of them refuse
    /// connections. At a fixed rate, so the senders' latency means something.
    FanOut { down: usize, rate: f64 },
}

/// Destinations of the fan-out cases.
const FAN_OUT: usize = 3;

impl Case {
    fn name(self) -> String {
        match self {
            Case::Forward { rate: None } => "forward".to_owned(),
            Case::Forward { rate: Some(rate) } => format!("forward @ {rate:.0} spans/s"),
            Case::Blackhole => "blackhole".to_owned(),
            Case::Persistent => "forward, file queue".to_owned(),
            Case::FanOut { down, rate } => {
                format!("{FAN_OUT} destinations, {down} down, @ {rate:.0} spans/s")
            }
        }
    }

    fn slug(self) -> String {
        match self {
            Case::Forward { rate: None } => "forward".to_owned(),
            Case::Forward { rate: Some(_) } => "forward-rate".to_owned(),
            Case::Blackhole => "blackhole".to_owned(),
            Case::Persistent => "persistent".to_owned(),
            Case::FanOut { down, .. } => format!("fan-out-{down}-down"),
        }
    }

    fn rate(self) -> Option<f64> {
        match self {
            Case::Forward { rate } => rate,
            Case::FanOut { rate, .. } => Some(rate),
            Case::Blackhole | Case::Persistent => None,
        }
    }

    /// Whether rotel can run it: it has neither a queue on disk nor our fan-out.
    fn for_rotel(self) -> bool {
        matches!(self, Case::Forward { .. } | Case::Blackhole)
    }

    /// How many destinations the sink stands for: its count is divided among them.
    fn healthy_destinations(self) -> usize {
        match self {
            Case::FanOut { down, .. } => FAN_OUT - down,
            _ => 1,
        }
    }
}

/// One collector's numbers for one case.
#[derive(Debug)]
struct Measurement {
    case: Case,
    collector: Collector,
    /// Spans per second at the sink, or acknowledged for the blackhole case.
    spans_per_sec: f64,
    acked_per_sec: f64,
    cpu_us_per_span: Option<f64>,
    peak_rss_mib: f64,
    load: LoadReport,
}

/// Runs every case for every collector found and prints the table.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut collectors = Vec::new();
    for collector in [Collector::Ours, Collector::Rotel] {
        if args.only.is_some_and(|only| only != collector) {
            continue;
        }
        match find_binary(collector, &args) {
            Ok(path) => {
                println!("{}: {}", collector.name(), path.display());
                collectors.push((collector, path));
            }
            Err(err) => println!("{}: not measured: {err:#}", collector.name()),
        }
    }
    if collectors.is_empty() {
        bail!("no collector to measure");
    }

    let payloads = Arc::new(Payloads::generate(args.payloads, 42));
    println!(
        "payload: {} requests of 100 spans, {:.0} bytes per span, {:.0} bytes per request",
        payloads.requests().len(),
        payloads.avg_span_bytes(),
        payloads.avg_request_bytes()
    );
    let sink = Sink::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    println!("sink: {}", sink.addr());
    let work_dir = std::env::temp_dir().join(format!("odigos-bench-{}", std::process::id()));
    fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let bench = Bench {
        args: &args,
        payloads,
        sink,
        work_dir: work_dir.clone(),
    };

    let mut cases = vec![Case::Forward { rate: None }, Case::Blackhole];
    if let Some(rate) = args.rate {
        cases.push(Case::Forward { rate: Some(rate) });
    }
    let fan_out_rate = args.rate.unwrap_or(50_000.0);
    cases.extend([
        Case::Persistent,
        Case::FanOut {
            down: 0,
            rate: fan_out_rate,
        },
        Case::FanOut {
            down: 1,
            rate: fan_out_rate,
        },
    ]);
    let mut results = Vec::new();
    let mut failed = false;
    for &case in &cases {
        for (collector, binary) in &collectors {
            if *collector == Collector::Rotel && !case.for_rotel() {
                continue;
            }
            println!("\n## {} / {}", case.name(), collector.name());
            match bench.measure(*collector, binary, case).await {
                Ok(m) => {
                    let cpu = m
                        .cpu_us_per_span
                        .map_or("-".to_owned(), |v| format!("{v:.2}"));
                    let delivered = match case {
                        Case::Blackhole => String::new(),
                        _ => format!(
                            "{:.0} spans/s at each healthy destination, ",
                            m.spans_per_sec
                        ),
                    };
                    println!(
                        "{}\n  {delivered}{:.0} spans/s acknowledged, {cpu} CPU µs/span, \
                         peak RSS {:.1} MiB",
                        m.load, m.acked_per_sec, m.peak_rss_mib
                    );
                    results.push(m);
                }
                Err(err) => {
                    failed = true;
                    println!("failed: {err:#}");
                }
            }
        }
    }

    println!("\n{}", table(&cases, &results));
    if failed {
        println!("collector logs kept in {}", work_dir.display());
    } else {
        let _ = fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

struct Bench<'a> {
    args: &'a RunArgs,
    payloads: Arc<Payloads>,
    sink: Sink,
    work_dir: PathBuf,
}

/// Counters read at one instant.
struct Sample {
    at: Instant,
    sink_spans: u64,
    sink_requests: u64,
    sink_compressed: u64,
    acked: u64,
    cpu_ticks: u64,
}

impl Bench<'_> {
    async fn measure(
        &self,
        collector: Collector,
        binary: &Path,
        case: Case,
    ) -> anyhow::Result<Measurement> {
        let dir = self
            .work_dir
            .join(format!("{}-{}", collector.name(), case.slug()));
        fs::create_dir_all(&dir)?;
        let grpc_port = free_port()?;
        let sink_port = self.sink.addr().port();
        // A destination that is down: a port bound but never listening refuses connections.
        let refusing = tokio::net::TcpSocket::new_v4()?;
        refusing.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let down_port = refusing.local_addr()?.port();
        let mut command = match collector {
            Collector::Ours => {
                let config = dir.join("config.yaml");
                let metrics_port = free_port()?;
                let ports = Ports {
                    grpc: grpc_port,
                    sink: sink_port,
                    down: down_port,
                    metrics: metrics_port,
                };
                fs::write(&config, ours_config(case, &ports, &dir.join("queue")))?;
                let mut command = Command::new(binary);
                command.arg("collector").arg("--config").arg(&config);
                command
            }
            Collector::Rotel => {
                let mut command = Command::new(binary);
                command.args(rotel_args(case, grpc_port, free_port()?, sink_port));
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("ROTEL_") {
                        command.env_remove(key);
                    }
                }
                command
            }
        };
        println!("command: {}", command_line(&command));
        let log = dir.join("output.log");
        let mut child = Process::spawn(&mut command, &log)?;
        child.wait_for_port(grpc_port).await?;

        let stats = Arc::new(LoadStats::default());
        let warmup = Duration::from_secs(self.args.warmup);
        let window = Duration::from_secs(self.args.duration);
        let options = LoadOptions {
            endpoint: format!("http://127.0.0.1:{grpc_port}"),
            connections: self.args.connections,
            in_flight: self.args.in_flight,
            rate: case.rate(),
            duration: warmup + window,
        };
        let load = {
            let (payloads, stats) = (self.payloads.clone(), stats.clone());
            tokio::spawn(async move { load::run(&options, payloads, stats).await })
        };

        let window = async {
            tokio::time::sleep(warmup).await;
            let before = self.sample(&mut child, &stats)?;
            let end = before.at + window;
            while Instant::now() < end && !load.is_finished() {
                tokio::time::sleep_until(end.min(Instant::now() + Duration::from_millis(250)))
                    .await;
                child.check_running()?;
            }
            let after = self.sample(&mut child, &stats)?;
            let peak_rss_kib = proc_status_kib(child.pid(), "VmHWM")?;
            anyhow::Ok((before, after, peak_rss_kib))
        };
        let (before, after, peak_rss_kib) = match window.await {
            Ok(sampled) => sampled,
            Err(err) => {
                load.abort();
                return Err(err);
            }
        };
        let report = load.await.context("load task")??;
        if case != Case::Blackhole {
            let requests = after.sink_requests - before.sink_requests;
            let compressed = after.sink_compressed - before.sink_compressed;
            println!("sink received {requests} requests, {compressed} of them compressed");
            if after.sink_spans - before.sink_spans < (after.acked - before.acked) / 2 {
                println!(
                    "warning: less than half of the acknowledged spans reached the sink; \
                     collector output:\n{}",
                    child.log_tail()
                );
            }
        }
        child.stop();

        let secs = (after.at - before.at).as_secs_f64();
        let acked = after.acked - before.acked;
        let sink_spans = after.sink_spans - before.sink_spans;
        let cpu_us = (after.cpu_ticks - before.cpu_ticks) as f64 * 1e6 / clock_ticks() as f64;
        Ok(Measurement {
            case,
            collector,
            spans_per_sec: match case {
                Case::Blackhole => acked as f64 / secs,
                _ => sink_spans as f64 / secs / case.healthy_destinations() as f64,
            },
            acked_per_sec: acked as f64 / secs,
            cpu_us_per_span: (acked > 0).then(|| cpu_us / acked as f64),
            peak_rss_mib: peak_rss_kib as f64 / 1024.0,
            load: report,
        })
    }

    fn sample(&self, child: &mut Process, stats: &LoadStats) -> anyhow::Result<Sample> {
        child.check_running()?;
        Ok(Sample {
            at: Instant::now(),
            sink_spans: self.sink.counters().spans(),
            sink_requests: self.sink.counters().requests(),
            sink_compressed: self.sink.counters().compressed(),
            acked: stats.acked(),
            cpu_ticks: proc_cpu_ticks(child.pid())?,
        })
    }
}

/// Where a case's collector listens and sends.
struct Ports {
    grpc: u16,
    sink: u16,
    /// A port that refuses connections.
    down: u16,
    metrics: u16,
}

/// The collector config for our binary: OpenTelemetry Collector YAML, as users write it.
fn ours_config(case: Case, ports: &Ports, queue: &Path) -> String {
    let otlp = |port: u16, extra: &str| {
        format!(
            "    endpoint: 127.0.0.1:{port}\n    compression: none\n    tls:\n      insecure: true\n{extra}"
        )
    };
    let file_queue = |when_full: &str| {
        format!(
            "    sending_queue:\n      storage: file_storage\n      max_size_mib: 256\n{when_full}"
        )
    };
    let (processors, connectors, exporters, pipelines) = match case {
        Case::Forward { .. } => (
            "processors:\n  batch: {}\n".to_owned(),
            String::new(),
            format!("  otlp:\n{}", otlp(ports.sink, "")),
            "    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n".to_owned(),
        ),
        Case::Blackhole => (
            String::new(),
            String::new(),
            "  nop: {}\n".to_owned(),
            "    traces:\n      receivers: [otlp]\n      exporters: [nop]\n".to_owned(),
        ),
        Case::Persistent => (
            "processors:\n  batch: {}\n".to_owned(),
            String::new(),
            format!("  otlp:\n{}", otlp(ports.sink, &file_queue(""))),
            "    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n".to_owned(),
        ),
        Case::FanOut { down, .. } => {
            let mut exporters = String::new();
            let mut pipelines = "    traces/in:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [forward]\n".to_owned();
            for i in 0..FAN_OUT {
                let port = if i < down { ports.down } else { ports.sink };
                let queue = file_queue("      when_full: drop_oldest\n");
                exporters.push_str(&format!("  otlp/{i}:\n{}", otlp(port, &queue)));
                pipelines.push_str(&format!(
                    "    traces/{i}:\n      receivers: [forward]\n      exporters: [otlp/{i}]\n"
                ));
            }
            (
                "processors:\n  batch: {}\n".to_owned(),
                "connectors:\n  forward: {}\n".to_owned(),
                exporters,
                pipelines,
            )
        }
    };
    // Queues on disk live in the file_storage extension's directory.
    let (storage, enabled) = if exporters.contains("storage: file_storage") {
        let declared = format!(
            "extensions:\n  file_storage:\n    directory: {}\n    create_directory: true\n",
            queue.display()
        );
        (declared, "  extensions: [file_storage]\n")
    } else {
        (String::new(), "")
    };
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
{processors}{connectors}exporters:
{exporters}{storage}service:
{enabled}  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
  pipelines:
{pipelines}",
        grpc = ports.grpc,
        metrics = ports.metrics,
    )
}

fn rotel_args(case: Case, grpc_port: u16, http_port: u16, sink_port: u16) -> Vec<String> {
    let mut args = vec![
        "start".to_owned(),
        "--otlp-grpc-endpoint".to_owned(),
        format!("127.0.0.1:{grpc_port}"),
        "--otlp-http-endpoint".to_owned(),
        format!("127.0.0.1:{http_port}"),
        "--exporter".to_owned(),
    ];
    match case {
        Case::Forward { .. } => args.extend([
            "otlp".to_owned(),
            "--otlp-exporter-endpoint".to_owned(),
            format!("http://127.0.0.1:{sink_port}"),
            "--otlp-exporter-compression".to_owned(),
            "none".to_owned(),
        ]),
        Case::Blackhole => args.push("blackhole".to_owned()),
        Case::Persistent | Case::FanOut { .. } => unreachable!("not a rotel case"),
    }
    args
}

fn find_binary(collector: Collector, args: &RunArgs) -> anyhow::Result<PathBuf> {
    let (given, default) = match collector {
        Collector::Ours => (args.odigos.clone(), default_odigos()),
        Collector::Rotel => (args.rotel.clone(), default_rotel()),
    };
    let path = given.or(default).context("no default location found")?;
    if !path.is_file() {
        let hint = match collector {
            Collector::Ours => "build it with `cargo build --release -p odigos` or pass --odigos",
            Collector::Rotel => {
                "install it with `python3 -m venv .venv && .venv/bin/pip install \
                                 rotel` or pass --rotel"
            }
        };
        bail!("{} not found; {hint}", path.display());
    }
    Ok(path)
}

/// `odigos` in the same directory as this binary, i.e. the same `target/<profile>`.
pub(crate) fn default_odigos() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("odigos"))
}

/// `rotel/rotel-agent` inside the workspace's Python virtual environment.
fn default_rotel() -> Option<PathBuf> {
    let root = workspace_root()?;
    let lib = root.join(".venv").join("lib");
    let mut found = fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path().join("site-packages/rotel/rotel-agent"))
        .filter(|path| path.is_file())
        .collect::<Vec<_>>();
    found.sort();
    found
        .pop()
        .or_else(|| Some(lib.join("python3/site-packages/rotel/rotel-agent")))
}

/// The nearest directory above this binary (or else the working directory) with a Cargo.lock.
pub(crate) fn workspace_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    [exe, cwd].into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .find(|dir| dir.join("Cargo.lock").is_file())
            .map(Path::to_path_buf)
    })
}

/// A port that was free a moment ago; good enough on a quiet loopback interface.
/// The body a plain HTTP/1.0 GET of `path` on `address` answers, with `headers` (each line
/// ending in CRLF) sent along.
pub(crate) fn http_get(address: &str, path: &str, headers: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address)?;
    write!(stream, "GET {path} HTTP/1.0\r\n{headers}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    Ok(body.to_string())
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

/// A collector under test; stopped when dropped.
pub(crate) struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Process> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", command.get_program().to_string_lossy()))?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "collector exited with {status}; its output:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    pub(crate) async fn wait_for_port(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "port {port} not open after {START_TIMEOUT:?}; output:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM first so the collector can shut down as in production, then SIGKILL.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system CPU time of a process, in clock ticks.
pub(crate) fn proc_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses; fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/PID/status`, such as `VmHWM` (peak resident set) or `VmRSS`.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, field).with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second, as `getconf CLK_TCK` reports; 100 on every common Linux.
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

fn table(cases: &[Case], results: &[Measurement]) -> String {
    let mut out = String::from(
        "| case | collector | spans/s at each healthy destination (blackhole: spans/s acked) | \
         CPU µs/span | peak RSS MiB | ack p99 ms |\n|---|---|---:|---:|---:|---:|\n",
    );
    for &case in cases {
        let find = |collector| {
            results
                .iter()
                .find(|m| m.case == case && m.collector == collector)
        };
        for m in results.iter().filter(|m| m.case == case) {
            let cpu = m
                .cpu_us_per_span
                .map_or("-".to_owned(), |v| format!("{v:.2}"));
            let p99 = m
                .load
                .p99
                .map_or("-".to_owned(), |p| format!("{:.1}", p.as_secs_f64() * 1e3));
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {cpu} | {:.1} | {p99} |",
                case.name(),
                m.collector.name(),
                m.spans_per_sec,
                m.peak_rss_mib
            );
        }
        if let (Some(ours), Some(rotel)) = (find(Collector::Ours), find(Collector::Rotel)) {
            let ratio = |a: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.2}×", a / b)
                } else {
                    "-".to_owned()
                }
            };
            let cpu = match (ours.cpu_us_per_span, rotel.cpu_us_per_span) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | ours/rotel | {} | {cpu} | {} | |",
                case.name(),
                ratio(ours.spans_per_sec, rotel.spans_per_sec),
                ratio(ours.peak_rss_mib, rotel.peak_rss_mib)
            );
        }
    }
    // The cost of a destination that is down, against all of them up, in the same run.
    let fan_out = |down| {
        results
            .iter()
            .find(|m| matches!(m.case, Case::FanOut { down: d, .. } if d == down))
    };
    if let (Some(up), Some(down)) = (fan_out(0), fan_out(1)) {
        let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
        let cpu = match (down.cpu_us_per_span, up.cpu_us_per_span) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "-".to_owned(),
        };
        let p99 = match (down.load.p99, up.load.p99) {
            (Some(a), Some(b)) => ratio(a.as_secs_f64(), b.as_secs_f64()),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| 1 down / 0 down | ours | {} | {cpu} | {} | {p99} |",
            ratio(down.spans_per_sec, up.spans_per_sec),
            ratio(down.peak_rss_mib, up.peak_rss_mib)
        );
    }
    out.push_str(
        "\nspans/s: higher is better; CPU µs/span (collector CPU time over spans it acknowledged) \
         and peak RSS: lower is better.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_after_the_command_name() {
        let stat = "4242 (rotel (agent)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 \
                    9 0 100 200000000 5000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\trotel\nVmHWM:\t  104212 kB\nVmRSS:\t   98000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(104212));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(98000));
        assert_eq!(parse_status_kib(status, "VmPeak"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmHWM").unwrap() > 0);
        proc_cpu_ticks(pid).unwrap();
    }

    #[test]
    fn forward_config_wires_batch_and_otlp_exporter() {
        let ports = Ports {
            grpc: 4317,
            sink: 5000,
            down: 5001,
            metrics: 8888,
        };
        let config = ours_config(Case::Forward { rate: None }, &ports, Path::new("/q"));
        assert_eq!(
            config,
            "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
processors:
  batch: {}
exporters:
  otlp:
    endpoint: 127.0.0.1:5000
    compression: none
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      address: 127.0.0.1:8888
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"
        );
    }

    #[test]
    fn blackhole_config_has_nop_exporter_and_no_processors() {
        let ports = Ports {
            grpc: 4317,
            sink: 5000,
            down: 5001,
            metrics: 8888,
        };
        let config = ours_config(Case::Blackhole, &ports, Path::new("/q"));
        assert!(config.contains("exporters:\n  nop: {}\n"));
        assert!(config.contains("      exporters: [nop]\n"));
        assert!(!config.contains("processors"));
    }

    #[test]
    fn rotel_blackhole_has_no_exporter_endpoint() {
        let args = rotel_args(Case::Blackhole, 1, 2, 3).join(" ");
        assert_eq!(
            args,
            "start --otlp-grpc-endpoint 127.0.0.1:1 --otlp-http-endpoint 127.0.0.1:2 \
             --exporter blackhole"
        );
    }
}
