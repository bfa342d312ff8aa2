//! `file`: writes each batch as one line of OTLP JSON, rotating by size, from a sending queue
//! of its own (the default memory queue) so that a slow disk holds up nothing else.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use odigos_proto::Signal;
use serde::Deserialize;

use super::queue::{self, SendError, Sender};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file written; rotated files get `.1`, `.2`, ... appended (`.1` newest).
    pub path: PathBuf,
    /// Only `json` (one OTLP JSON request per line) is supported.
    #[serde(default = "json")]
    pub format: String,
    pub rotation: Option<RotationConfig>,
    /// How often what was written is flushed to the file. 0 (the default here; otelcol's is
    /// 1s) flushes every batch as it is written.
    #[serde(default, with = "crate::yaml::duration")]
    pub flush_interval: Duration,
}

fn json() -> String {
    "json".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    /// Size at which the file is rotated.
    pub max_megabytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub max_backups: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_megabytes: 100,
            max_backups: 100,
        }
    }
}

impl ComponentConfig for FileConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.format != "json" {
            problems.push((
                vec!["format".into()],
                format!("unsupported format {:?}: use json", self.format),
            ));
        }
        if self.path.as_os_str().is_empty() {
            problems.push((vec!["path".into()], "must not be empty".into()));
        }
        if self.rotation.as_ref().is_some_and(|r| r.max_megabytes == 0) {
            problems.push((
                vec!["rotation".into(), "max_megabytes".into()],
                "must be greater than 0".into(),
            ));
        }
        problems
    }
}

struct Output {
    path: PathBuf,
    writer: BufWriter<File>,
    size: u64,
}

impl Output {
    fn open(path: &Path) -> std::io::Result<Output> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Output {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
            size,
        })
    }

    fn rotate(&mut self, keep: usize) -> std::io::Result<()> {
        self.writer.flush()?;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if keep > 0 {
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        *self = Output::open(&self.path)?;
        Ok(())
    }
}

struct FileExporter {
    output: Arc<Mutex<Output>>,
    rotation: Option<RotationConfig>,
    /// Flush after each batch; otherwise a task flushes every `flush_interval`.
    flush_each: bool,
}

#[async_trait]
impl Sender for FileExporter {
    async fn send(&self, signal: Signal, body: Bytes) -> Result<(), SendError> {
        let decoded = queue::decode(signal, &body)?;
        let mut line = decoded.to_json();
        line.push('\n');
        let (output, rotation) = (self.output.clone(), self.rotation.clone());
        let flush_each = self.flush_each;
        // Off the async threads: a slow disk must not hold up the runtime.
        let written = tokio::task::spawn_blocking(move || {
            let mut output = output.lock().unwrap();
            let write = |output: &mut Output| -> std::io::Result<()> {
                if let Some(rotation) = &rotation
                    && output.size > 0
                    && output.size + line.len() as u64 > rotation.max_megabytes << 20
                {
                    output.rotate(rotation.max_backups)?;
                }
                output.writer.write_all(line.as_bytes())?;
                if flush_each {
                    output.writer.flush()?;
                }
                output.size += line.len() as u64;
                Ok(())
            };
            write(&mut output).map_err(|e| format!("cannot write {}: {e}", output.path.display()))
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(SendError::Retryable {
                message,
                after: None,
            }),
            Err(e) => Err(SendError::Permanent(format!("file writer failed: {e}"))),
        }
    }
}

pub(super) fn build(
    config: &FileConfig,
    id: &ComponentId,
    context: &Context,
) -> Result<Next, String> {
    let output = Output::open(&config.path)
        .map_err(|e| format!("cannot open {}: {e}", config.path.display()))?;
    let output = Arc::new(Mutex::new(output));
    let flush_each = config.flush_interval.is_zero();
    if !flush_each {
        // Not a tracked task: it ends by itself once the exporter is gone.
        tokio::spawn(flush_every(config.flush_interval, Arc::downgrade(&output)));
    }
    let exporter = FileExporter {
        output,
        rotation: config.rotation.clone(),
        flush_each,
    };
    queue::build_local(id, Box::new(exporter), context)
}

/// Flushes `output` every `interval` until it is gone (its last writer flushes on drop).
async fn flush_every(interval: Duration, output: Weak<Mutex<Output>>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(output) = output.upgrade() else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || {
            let mut output = output.lock().unwrap();
            output
                .writer
                .flush()
                .map_err(|e| format!("cannot write {}: {e}", output.path.display()))
        })
        .await;
        if let Ok(Err(message)) = flushed {
            tracing::warn!(error = %message, "file exporter could not flush");
        }
    }
}
