//! What eBPF tracing costs: `wrk` against an HTTP server that odiglet does not trace, that it
//! traces, and while it traces another process only; at full speed and at a fixed rate. For
//! each case: throughput, p50 and p99 latency and their ratios to the untraced server, the
//! time the eBPF programs ran per request (the syscall path), the CPU per request of the
//! server, odiglet and the collectors, and odiglet's resident set, printed as a markdown table. The cases alternate
//! over several rounds, so a machine whose speed drifts moves every case alike.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::control::Up;
use crate::runner::{clock_ticks, default_odigos, http_get, proc_cpu_ticks, proc_status_kib};

#[derive(Debug, clap::Args)]
pub struct EbpfArgs {
    /// The HTTP server to measure: started with the argument `0`, it prints `listening PORT`
    /// (the test servers do: `tests/go/app`, the `http_app` binary of `odigos-tests`).
    #[arg(long)]
    server: PathBuf,
    /// The path requested.
    #[arg(long, default_value = "/hello")]
    path: String,
    /// The `odigos` binary [default: next to this one]. Runs as root, for eBPF.
    #[arg(long)]
    odigos: Option<PathBuf>,
    /// Seconds `wrk` runs per case and round.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds over the cases.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// `wrk` connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// The fixed rate of the rate-limited cases, requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
}

/// How odiglet stands towards the measured server.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tracing {
    Off,
    /// Tracing another process only.
    Elsewhere,
    On,
    /// Tracing the server with odiglet stopped (SIGSTOP) while measured: what the syscall
    /// path alone costs, without odiglet and the collectors sharing the cores. The ring
    /// buffer fills within a fraction of a second and the programs count the events it cannot
    /// take, so few of the window's requests make spans.
    Paused,
}

/// How long odiglet takes at most to send the spans it finished, and a little more.
const SETTLE: Duration = Duration::from_millis(500);

/// One measured window.
struct Sample {
    wrk: Wrk,
    /// Spans the node collector accepted for the window's requests.
    spans: u64,
    /// Time the eBPF programs ran.
    ebpf_ns: u64,
    /// CPU time used by the server, odiglet and the collectors, in clock ticks.
    cpu_ticks: [u64; 3],
    rss_mib: f64,
}

/// A case over its rounds: the median of the throughput, latency and resident set; CPU and
/// eBPF time per request over all of its requests, so that clock ticks add up to a fine
/// figure even at a low rate.
struct Row {
    tracing: Tracing,
    rate: Option<u32>,
    wrk: Wrk,
    /// Time the eBPF programs ran per request, µs: what the syscall path pays.
    ebpf_us: f64,
    /// The server's CPU per request, µs.
    server_us: f64,
    /// odiglet's CPU per request, µs.
    odiglet_us: f64,
    /// Spans delivered per request: 1 when every request made its span.
    spans_per_request: f64,
    /// The node collector's and the gateway's CPU per request, µs.
    collectors_us: f64,
    rss_mib: f64,
}

#[derive(Clone, Copy)]
struct Wrk {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

pub fn run(args: EbpfArgs) -> anyhow::Result<()> {
    let odigos = args
        .odigos
        .clone()
        .or_else(default_odigos)
        .context("no odigos binary next to this one; give --odigos")?;
    Command::new("wrk")
        .arg("--version")
        .output()
        .context("wrk is needed (apt-get install wrk)")?;
    let up = Up::start(&odigos)?;
    let desired = up.dir.path().join("odigos.d");
    // No destination: the node collector drops the spans where they enter, so what is
    // measured is odiglet and the traced server.
    let _ = std::fs::remove_file(desired.join("debug.yaml"));
    let (mut server, port) = start(&args.server)?;
    let mut other = Command::new("sleep").arg("3600").spawn()?;
    let executable = args
        .server
        .file_name()
        .and_then(|n| n.to_str())
        .context("--server names no file")?
        .to_string();
    let pids = Pids {
        odiglet: children(up.child.id(), "odiglet")
            .pop()
            .context("odigos up runs no odiglet (not root?)")?,
        collectors: children(up.child.id(), "collector"),
        server: server.id(),
    };
    let url = format!("http://127.0.0.1:{port}{}", args.path);
    let rates = [None, Some(args.rate)];
    // By load, then case: the order of the table.
    let mut samples: BTreeMap<(Option<u32>, Tracing), Vec<Sample>> = BTreeMap::new();
    let mut measure_case = |tracing: Tracing, rate: Option<u32>| -> anyhow::Result<()> {
        let name = match tracing {
            Tracing::Elsewhere => "sleep",
            Tracing::Off | Tracing::On | Tracing::Paused => executable.as_str(),
        };
        let source = format!(
            "apiVersion: odigos.io/v1alpha1\nkind: Source\nmetadata: {{name: measured}}\nspec:\n  workload: {{kind: Process, name: {name}}}\n  disableInstrumentation: {}\n",
            tracing == Tracing::Off
        );
        std::fs::write(desired.join("source.yaml"), source)?;
        std::thread::sleep(Duration::from_secs(2));
        wrk(&url, 1, args.connections, rate)?; // Warm-up.
        // odiglet sends what it finished every 200 ms: the warm-up's spans are in before the
        // window, and the window's after it.
        std::thread::sleep(SETTLE);
        let spans = accepted_spans(&up.node_metrics)?;
        let paused = (tracing == Tracing::Paused).then(|| Paused::stop(pids.odiglet));
        let mut sample = measure(&args, &url, rate, &pids)?;
        drop(paused);
        std::thread::sleep(SETTLE);
        sample.spans = accepted_spans(&up.node_metrics)?.saturating_sub(spans);
        samples.entry((rate, tracing)).or_default().push(sample);
        Ok(())
    };
    let cases = [
        Tracing::Off,
        Tracing::Elsewhere,
        Tracing::On,
        Tracing::Paused,
    ];
    for rate in rates {
        for round in 0..args.rounds {
            // Each round starts at the next case: no case always runs first, or always after
            // the same other one.
            for i in 0..cases.len() {
                measure_case(cases[(round + i) % cases.len()], rate)?;
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = other.kill();
    let _ = other.wait();
    let rows: Vec<Row> = samples
        .iter()
        .map(|(&(rate, tracing), samples)| Row::of(tracing, rate, samples))
        .collect();
    println!("{}", table(&executable, &rows));
    Ok(())
}

/// odiglet stopped until dropped.
struct Paused(u32);

impl Paused {
    fn stop(pid: u32) -> Paused {
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Spans the node collector accepted so far: those odiglet sent, as no one else sends any.
fn accepted_spans(metrics: &str) -> anyhow::Result<u64> {
    Ok(http_get(metrics, "/metrics", "")?
        .lines()
        .filter(|line| line.starts_with("otelcol_receiver_accepted_spans"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The processes whose CPU is counted.
struct Pids {
    odiglet: u32,
    collectors: Vec<u32>,
    server: u32,
}

impl Pids {
    /// CPU time so far, in clock ticks: the server's, odiglet's and the collectors'. A
    /// process's ticks count its threads that ended too (the server may run one per
    /// connection).
    fn cpu_ticks(&self) -> anyhow::Result<[u64; 3]> {
        let mut collectors = 0;
        for pid in &self.collectors {
            collectors += proc_cpu_ticks(*pid)?;
        }
        Ok([
            proc_cpu_ticks(self.server)?,
            proc_cpu_ticks(self.odiglet)?,
            collectors,
        ])
    }
}

/// One measured window at `rate`.
fn measure(args: &EbpfArgs, url: &str, rate: Option<u32>, pids: &Pids) -> anyhow::Result<Sample> {
    let stats = BpfStats::enable()?;
    let before = pids.cpu_ticks()?;
    let ebpf_ns = programs_run_ns(pids.odiglet)?;
    let wrk = wrk(url, args.duration, args.connections, rate)?;
    let ebpf_ns = programs_run_ns(pids.odiglet)? - ebpf_ns;
    drop(stats);
    let after = pids.cpu_ticks()?;
    Ok(Sample {
        wrk,
        spans: 0,
        ebpf_ns,
        cpu_ticks: [0, 1, 2].map(|i| after[i] - before[i]),
        rss_mib: proc_status_kib(pids.odiglet, "VmRSS")? as f64 / 1024.0,
    })
}

impl Row {
    fn of(tracing: Tracing, rate: Option<u32>, samples: &[Sample]) -> Row {
        let median = |key: &dyn Fn(&Sample) -> f64| {
            let mut values: Vec<f64> = samples.iter().map(key).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let requests = samples.iter().map(|s| s.wrk.requests).sum::<u64>().max(1) as f64;
        let cpu_us = |i: usize| {
            let ticks: u64 = samples.iter().map(|s| s.cpu_ticks[i]).sum();
            ticks as f64 * 1e6 / clock_ticks() as f64 / requests
        };
        Row {
            tracing,
            rate,
            wrk: Wrk {
                requests_per_sec: median(&|s| s.wrk.requests_per_sec),
                p50_ms: median(&|s| s.wrk.p50_ms),
                p99_ms: median(&|s| s.wrk.p99_ms),
                requests: requests as u64,
            },
            ebpf_us: samples.iter().map(|s| s.ebpf_ns).sum::<u64>() as f64 / 1e3 / requests,
            server_us: cpu_us(0),
            odiglet_us: cpu_us(1),
            spans_per_request: samples.iter().map(|s| s.spans).sum::<u64>() as f64 / requests,
            collectors_us: cpu_us(2),
            rss_mib: median(&|s| s.rss_mib),
        }
    }
}

/// The kernel's run-time accounting of eBPF programs, on while this lives (it costs a clock
/// read per program run, so it is off otherwise).
struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<BpfStats> {
        let was =
            std::fs::read_to_string(BPF_STATS).with_context(|| format!("read {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
        Ok(BpfStats { was })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.was.trim());
    }
}

/// The time all programs loaded by `pid` have run, in ns (`run_time_ns` of their fdinfo).
fn programs_run_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        total += info
            .lines()
            .find_map(|line| line.strip_prefix("run_time_ns:"))
            .and_then(|ns| ns.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn start(server: &PathBuf) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new(server)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", server.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .with_context(|| {
            format!(
                "{} printed {line:?}, not `listening PORT`",
                server.display()
            )
        })?;
    Ok((child, port))
}

/// The children of `odigos up` that run `odigos SUBCOMMAND`, once there are any (or none
/// after 10 s).
fn children(up: u32, subcommand: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let tasks = std::fs::read_dir(format!("/proc/{up}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children.split_whitespace() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.split(|b| *b == 0).nth(1) == Some(subcommand.as_bytes()) {
                    found.extend(pid.parse::<u32>().ok());
                }
            }
        }
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    found
}

/// Runs `wrk` with 2 threads; at a fixed rate, each connection waits its share of a second
/// between requests (wrk's `delay()`).
fn wrk(url: &str, seconds: u64, connections: u32, rate: Option<u32>) -> anyhow::Result<Wrk> {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    let script;
    if let Some(rate) = rate {
        let delay_ms = connections as f64 * 1000.0 / rate as f64;
        script = tempfile::NamedTempFile::new()?;
        std::fs::write(
            script.path(),
            format!("function delay() return {delay_ms} end\n"),
        )?;
        command.arg("-s").arg(script.path());
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let value = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let ms = |v: &str| -> Option<f64> {
        let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    Some(Wrk {
        requests_per_sec: value("Requests/sec:")?.parse().ok()?,
        p50_ms: ms(value("50%")?)?,
        p99_ms: ms(value("99%")?)?,
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?,
    })
}

fn table(server: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "server: {server}\n\n| load | odiglet traces | req/s | p50 ms | p99 ms | req/s vs untraced | p99 vs untraced | eBPF µs/req | server CPU µs/req | odiglet CPU µs/req | collectors CPU µs/req | odiglet RSS MiB | spans per request |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.rate == row.rate && r.tracing == Tracing::Off)
            .map(|r| r.wrk)
            .unwrap_or(row.wrk);
        let load = row
            .rate
            .map_or("full speed".to_string(), |r| format!("{r} req/s"));
        let tracing = match row.tracing {
            Tracing::Off => "nothing",
            Tracing::Elsewhere => "another process",
            Tracing::On => "this server",
            Tracing::Paused => "this server, odiglet paused",
        };
        out.push_str(&format!(
            "| {load} | {tracing} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.3} |\n",
            row.wrk.requests_per_sec,
            row.wrk.p50_ms,
            row.wrk.p99_ms,
            row.wrk.requests_per_sec / base.requests_per_sec,
            row.wrk.p99_ms / base.p99_ms,
            row.ebpf_us,
            row.server_us,
            row.odiglet_us,
            row.collectors_us,
            row.rss_mib,
            row.spans_per_request
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n  Latency Distribution\n     50%  412.00us\n     75%    1.10ms\n     90%    2.00ms\n     99%    5.21ms\n  40000 requests in 2.00s, 5.00MB read\nRequests/sec:  19999.50\nTransfer/sec:      2.50MB\n";
        let wrk = super::parse_wrk(text).unwrap();
        assert_eq!(wrk.requests, 40000);
        assert!((wrk.p50_ms - 0.412).abs() < 1e-9 && (wrk.p99_ms - 5.21).abs() < 1e-9);
        assert!((wrk.requests_per_sec - 19999.5).abs() < 1e-9);
    }
}
