//! Config swaps under load. Our collector runs at a fixed rate while its config file is
//! rewritten; for each swap the runner measures the time from the write to the collector's
//! "config applied" log line, reads the apply time the collector reports, and samples the
//! rate at the sink in 100 ms intervals to find the dip around the swap.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::load::{self, LoadOptions, LoadStats};
use crate::request::Payloads;
use crate::runner::{Process, default_odigos, free_port};
use crate::sink::Sink;

#[derive(Debug, clap::Args)]
pub struct SwapArgs {
    /// The `odigos` binary [default: next to this one].
    #[arg(long)]
    odigos: Option<PathBuf>,
    /// Spans per second sent during the run.
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    /// Swaps of each kind.
    #[arg(long, default_value_t = 20)]
    swaps: usize,
    /// Time between swaps, in milliseconds.
    #[arg(long, default_value_t = 700)]
    interval_ms: u64,
}

/// What a swap changes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// An attribute rule: swapped in place.
    Processor,
    /// The batch size: the pipeline is rebuilt and the old one drains.
    Pipeline,
}

fn config(grpc: u16, sink: u16, tag: usize, batch: usize) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc}}}
processors:
  attributes:
    actions: [{{key: swap.generation, action: upsert, value: {tag}}}]
  batch: {{send_batch_size: {batch}, timeout: 100ms}}
exporters:
  otlp: {{endpoint: http://127.0.0.1:{sink}, compression: none}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [attributes, batch], exporters: [otlp]}}
"
    )
}

struct Swap {
    kind: Kind,
    written: Instant,
    /// Write to "config applied" in the log.
    observed: Duration,
    /// The apply time the collector reported.
    apply: Duration,
}

pub async fn run(args: SwapArgs) -> anyhow::Result<()> {
    let odigos = args
        .odigos
        .or_else(default_odigos)
        .context("no odigos binary; pass --odigos")?;
    let dir = std::env::temp_dir().join(format!("odigos-bench-swap-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let sink = Sink::start("127.0.0.1:0".parse()?).await?;
    let grpc = free_port()?;
    let path = dir.join("config.yaml");
    let log = dir.join("collector.log");
    let (mut tag, mut batch) = (0, 1024);
    fs::write(&path, config(grpc, sink.addr().port(), tag, batch))?;
    let mut command = Command::new(&odigos);
    command
        .arg("collector")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info");
    let mut collector = Process::spawn(&mut command, &log)?;
    collector.wait_for_port(grpc).await?;

    let total = Duration::from_millis(args.interval_ms) * (2 * args.swaps as u32 + 4);
    let options = LoadOptions {
        endpoint: format!("http://127.0.0.1:{grpc}"),
        connections: 4,
        in_flight: 16,
        rate: Some(args.rate),
        duration: total,
    };
    let stats = Arc::new(LoadStats::default());
    let payloads = Arc::new(Payloads::generate(64, 7));
    let load = tokio::spawn(async move { load::run(&options, payloads, stats).await });

    // Sample the sink every 100 ms.
    let counters = sink.counters().clone();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticks.tick().await;
            samples.push((Instant::now(), counters.spans()));
            if samples.len() as u32 * 100 > total.as_millis() as u32 {
                return samples;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut swaps = Vec::new();
    for i in 0..2 * args.swaps {
        let kind = if i % 2 == 0 {
            Kind::Processor
        } else {
            Kind::Pipeline
        };
        match kind {
            Kind::Processor => tag += 1,
            Kind::Pipeline => batch = if batch == 1024 { 2048 } else { 1024 },
        }
        let before = fs::read_to_string(&log)?.matches("config applied").count();
        let staged = path.with_extension("tmp");
        fs::write(&staged, config(grpc, sink.addr().port(), tag, batch))?;
        let written = Instant::now();
        fs::rename(&staged, &path)?;
        let line = loop {
            let text = fs::read_to_string(&log)?;
            if let Some(line) = text
                .lines()
                .filter(|l| l.contains("config applied"))
                .nth(before)
            {
                break line.to_string();
            }
            collector.check_running()?;
            anyhow::ensure!(
                written.elapsed() < Duration::from_secs(5),
                "swap {i} not applied in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let observed = written.elapsed();
        let apply =
            reported_apply_time(&line).with_context(|| format!("no apply time in {line:?}"))?;
        swaps.push(Swap {
            kind,
            written,
            observed,
            apply,
        });
        tokio::time::sleep(Duration::from_millis(args.interval_ms).saturating_sub(observed)).await;
    }
    let samples = sampler.await?;
    let report = load.await??;
    drop(collector);

    println!("load: {report}");
    println!("sink received {} spans", sink.counters().spans());
    let rates: Vec<(Instant, f64)> = samples
        .windows(2)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) as f64 * 10.0))
        .collect();
    // The steady rate: the median 100 ms interval away from the start and the end.
    let mut steady: Vec<f64> = rates[10..rates.len().saturating_sub(5)]
        .iter()
        .map(|r| r.1)
        .collect();
    steady.sort_by(f64::total_cmp);
    let steady = steady.get(steady.len() / 2).copied().unwrap_or(0.0);

    println!(
        "\n| swap | count | write to applied p50 / p99 | apply p50 / p99 | lowest 100 ms rate within 500 ms of a swap |"
    );
    println!("|---|---:|---:|---:|---:|");
    for kind in [Kind::Processor, Kind::Pipeline] {
        let of_kind: Vec<&Swap> = swaps.iter().filter(|s| s.kind == kind).collect();
        let observed = percentiles(of_kind.iter().map(|s| s.observed).collect());
        let apply = percentiles(of_kind.iter().map(|s| s.apply).collect());
        let lowest = of_kind
            .iter()
            .flat_map(|s| {
                rates.iter().filter(move |(t, _)| {
                    *t + Duration::from_millis(500) >= s.written
                        && *t <= s.written + Duration::from_millis(500)
                })
            })
            .map(|r| r.1)
            .fold(f64::INFINITY, f64::min);
        println!(
            "| {} | {} | {:.1} / {:.1} ms | {:.2} / {:.2} ms | {:.0}% of {:.0} spans/s |",
            match kind {
                Kind::Processor => "attribute rule (in place)",
                Kind::Pipeline => "batch size (pipeline rebuilt)",
            },
            of_kind.len(),
            ms(observed.0),
            ms(observed.1),
            ms(apply.0),
            ms(apply.1),
            100.0 * lowest / steady,
            steady
        );
    }
    println!(
        "\nwrite to applied includes the file watch and a 20 ms settle delay; apply is the collector's own time."
    );
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 (nearest rank).
fn percentiles(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    let at =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    (at(0.5), at(0.99))
}

/// The apply time in a line ending `(in 1.234ms)`.
fn reported_apply_time(line: &str) -> Option<Duration> {
    let text = line.rsplit_once("(in ")?.1.split(')').next()?.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reported_apply_time() {
        let line = "INFO config applied: built: -; updated in place: x; retired: - (in 1.5ms)";
        assert_eq!(reported_apply_time(line), Some(Duration::from_micros(1500)));
        let logged = "config applied: ... (in 250µs) trigger=\"file change\"";
        assert_eq!(
            reported_apply_time(logged),
            Some(Duration::from_micros(250))
        );
        assert_eq!(reported_apply_time("no time"), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(values),
            (Duration::from_millis(50), Duration::from_millis(99))
        );
    }
}
