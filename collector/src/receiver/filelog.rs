//! The `filelog` receiver: the lines of log files as log records, configured with otelcol's
//! keys (`include`, `exclude`, `start_at`, `multiline`, `storage`, the `container` operator,
//! ...).
//!
//! Every `poll_interval` the globs are matched again; files are known by their first bytes,
//! so rotation by rename or copytruncate neither loses nor repeats a line ([`files`]). Each
//! file has at most one read in the pipeline at a time, and its offset moves past a read only
//! once the pipeline has acknowledged it; with `storage`, offsets are checkpointed then, in
//! the storage directory, so a restart resumes where delivery stopped. A new config takes
//! effect at the next poll, with every file's place kept.

mod container;
mod encode;
mod files;
mod framing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use odigos_proto::Signal;
use serde::Deserialize;

use self::encode::Shared;
use self::files::{Checkpoints, Files, Scan, Tracked};
use self::framing::{Framing, Oversize, Record, Rule};
use super::looping::{self, Looped};
use super::{Routes, unix_nanos};
use crate::Batch;
use crate::config::{ComponentConfig, ComponentId};
use crate::topology::Context;

/// The most read from one file at a time (at least `max_log_size` more).
const READ_LIMIT: usize = 1 << 20;
/// About the most read from all files before what was read is delivered: what bounds memory.
const ROUND_LIMIT: u64 = 16 << 20;
/// How long a refused read waits before it is offered again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilelogConfig {
    /// Globs of the files to read (`*`, `?`, `[...]` and `**`).
    pub include: Vec<String>,
    /// Globs of files not to read, though `include` matches them.
    pub exclude: Vec<String>,
    /// Where files found at start are read from: `end` (what is written from now on) or
    /// `beginning`. Files that appear later are read from their beginning, and files with a
    /// checkpoint from it.
    pub start_at: StartAt,
    /// Give each record the file's name (`log.file.name`).
    pub include_file_name: bool,
    /// Give each record the file's path (`log.file.path`).
    pub include_file_path: bool,
    #[serde(with = "crate::yaml::duration")]
    pub poll_interval: Duration,
    /// The longest record kept whole.
    #[serde(deserialize_with = "crate::yaml::byte_size::deserialize")]
    pub max_log_size: u64,
    /// What becomes of a longer record: `split` into records of `max_log_size` (otelcol's
    /// default) or `truncate`d to it, the rest skipped and the record flagged
    /// `log.record.truncated`.
    pub max_log_size_behavior: Oversize,
    /// Spaces, tabs and line ends are trimmed off the start and end of records, as otelcol
    /// does, unless these keep them.
    pub preserve_leading_whitespaces: bool,
    pub preserve_trailing_whitespaces: bool,
    /// `utf-8` (invalid bytes become U+FFFD) or `nop` (bodies are bytes as read).
    pub encoding: String,
    /// How many first bytes tell a file.
    #[serde(deserialize_with = "crate::yaml::byte_size::deserialize")]
    pub fingerprint_size: u64,
    pub multiline: Option<Multiline>,
    /// How long a record that may not be complete waits for the rest.
    #[serde(with = "crate::yaml::duration")]
    pub force_flush_period: Duration,
    /// Most files read at once.
    pub max_concurrent_files: usize,
    /// A `file_storage` extension whose directory keeps the files' offsets across restarts.
    pub storage: Option<ComponentId>,
    /// Only `container`.
    pub operators: Vec<Operator>,
    /// Attributes given to every record's resource.
    pub resource: BTreeMap<String, String>,
    /// Attributes given to every record.
    pub attributes: BTreeMap<String, String>,
    /// The storage extension's directory, resolved from `storage`.
    #[serde(skip)]
    pub storage_directory: Option<PathBuf>,
}

impl Default for FilelogConfig {
    fn default() -> Self {
        FilelogConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            start_at: StartAt::End,
            include_file_name: true,
            include_file_path: false,
            poll_interval: Duration::from_millis(200),
            max_log_size: 1 << 20,
            max_log_size_behavior: Oversize::Split,
            preserve_leading_whitespaces: false,
            preserve_trailing_whitespaces: false,
            encoding: "utf-8".into(),
            fingerprint_size: 1000,
            multiline: None,
            force_flush_period: Duration::from_millis(500),
            max_concurrent_files: 1024,
            storage: None,
            operators: Vec::new(),
            resource: BTreeMap::new(),
            attributes: BTreeMap::new(),
            storage_directory: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    End,
    Beginning,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Multiline {
    /// A record starts at each line that matches this regex.
    pub line_start_pattern: Option<String>,
    /// A record ends at each line that matches this regex.
    pub line_end_pattern: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    /// `auto` (the only one: each line says which it is), `docker`, `crio` or `containerd`.
    pub format: Option<String>,
    /// Take the pod's attributes from the kubelet's path of the file.
    #[serde(default = "yes")]
    pub add_metadata_from_filepath: bool,
}

fn yes() -> bool {
    true
}

impl ComponentConfig for FilelogConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        let at = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if self.include.is_empty() {
            problems.push((
                at(&["include"]),
                "list at least one glob of files to read".into(),
            ));
        }
        for (key, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, text) in globs.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(text) {
                    problems.push((
                        vec![key.into(), i.to_string()],
                        format!("invalid glob {text:?}: {e}"),
                    ));
                }
            }
        }
        if !matches!(
            self.encoding.to_ascii_lowercase().as_str(),
            "utf-8" | "utf8" | "nop"
        ) {
            problems.push((
                at(&["encoding"]),
                format!(
                    "encoding {:?} is not supported: use utf-8 or nop",
                    self.encoding
                ),
            ));
        }
        if self.fingerprint_size < 16 {
            problems.push((
                at(&["fingerprint_size"]),
                "must be at least 16 bytes".into(),
            ));
        }
        if self.max_log_size == 0 || self.max_log_size > ROUND_LIMIT {
            let most = ROUND_LIMIT >> 20;
            problems.push((
                at(&["max_log_size"]),
                format!("must be between 1 byte and {most}MiB"),
            ));
        }
        if self.poll_interval.is_zero() {
            problems.push((at(&["poll_interval"]), "must be more than zero".into()));
        }
        if self.max_concurrent_files == 0 {
            problems.push((at(&["max_concurrent_files"]), "must be at least 1".into()));
        }
        if let Some(multiline) = &self.multiline {
            match (&multiline.line_start_pattern, &multiline.line_end_pattern) {
                (Some(_), Some(_)) | (None, None) => problems.push((
                    at(&["multiline"]),
                    "set one of line_start_pattern and line_end_pattern".into(),
                )),
                (Some(pattern), None) | (None, Some(pattern)) => {
                    if let Err(e) = regex::bytes::Regex::new(pattern) {
                        let key = if multiline.line_start_pattern.is_some() {
                            "line_start_pattern"
                        } else {
                            "line_end_pattern"
                        };
                        problems.push((at(&["multiline", key]), format!("invalid regex: {e}")));
                    }
                }
            }
        }
        for (i, operator) in self.operators.iter().enumerate() {
            let here = |key: &str| vec!["operators".to_string(), i.to_string(), key.to_string()];
            if operator.kind != "container" {
                problems.push((
                    here("type"),
                    format!(
                        "operator {:?} is not supported: the one operator is container",
                        operator.kind
                    ),
                ));
            }
            if operator
                .format
                .as_deref()
                .is_some_and(|f| !matches!(f, "auto" | "docker" | "crio" | "containerd"))
            {
                problems.push((
                    here("format"),
                    "use auto, docker, crio or containerd".into(),
                ));
            }
        }
        if self.operators.len() > 1 {
            problems.push((
                at(&["operators"]),
                "list the container operator once".into(),
            ));
        }
        if !self.operators.is_empty() && self.multiline.is_some() {
            problems.push((
                at(&["multiline"]),
                "with the container operator, lines are joined by the runtime's partial-line flags; remove multiline".into(),
            ));
        }
        problems
    }
}

/// What the reading task needs of a config, made once.
pub struct Settings {
    config: FilelogConfig,
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
    framing: Framing,
    /// Where offsets are checkpointed.
    checkpoints: Option<PathBuf>,
    /// Bodies as bytes rather than text.
    bytes: bool,
    pod_metadata: bool,
}

impl Settings {
    fn new(config: &FilelogConfig, id: &ComponentId) -> Settings {
        let globs = |texts: &[String]| {
            texts
                .iter()
                .filter_map(|t| glob::Pattern::new(t).ok())
                .collect()
        };
        let rule = match &config.multiline {
            _ if !config.operators.is_empty() => Rule::Container,
            Some(Multiline {
                line_start_pattern: Some(p),
                ..
            }) => Rule::StartsAt(regex(p)),
            Some(Multiline {
                line_end_pattern: Some(p),
                ..
            }) => Rule::EndsAt(regex(p)),
            _ => Rule::Lines,
        };
        let name: String = id
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Settings {
            include: globs(&config.include),
            exclude: globs(&config.exclude),
            framing: Framing {
                rule,
                max_log_size: config.max_log_size as usize,
                oversize: config.max_log_size_behavior,
                preserve_leading_whitespace: config.preserve_leading_whitespaces,
                preserve_trailing_whitespace: config.preserve_trailing_whitespaces,
                flush_after: config.force_flush_period,
            },
            checkpoints: config
                .storage_directory
                .as_ref()
                .map(|d| d.join(format!("receiver_filelog_{name}.json"))),
            bytes: config.encoding.eq_ignore_ascii_case("nop"),
            pod_metadata: config
                .operators
                .iter()
                .any(|o| o.add_metadata_from_filepath),
            config: config.clone(),
        }
    }
}

fn regex(pattern: &str) -> regex::bytes::Regex {
    regex::bytes::Regex::new(pattern).expect("checked by validate")
}

pub(super) async fn prepare(
    config: &FilelogConfig,
    id: &ComponentId,
    routes: Routes,
    context: &Context,
) -> Result<looping::Prepared<Settings>, Vec<String>> {
    Ok(looping::Prepared {
        settings: Settings::new(config, id),
        routes,
        id: id.clone(),
        context: context.clone(),
        task: |looped| Box::pin(Reader::new(looped).run()),
        describe: |settings| format!("files {}", settings.config.include.join(" ")),
    })
}

/// The task that reads the files.
struct Reader {
    looped: Looped<Settings>,
    /// Where the next round starts, when there are more files than max_concurrent_files.
    cursor: usize,
    /// What each read reads into, kept: its records are encoded before the next read.
    buffer: Vec<u8>,
}

impl Reader {
    fn new(looped: Looped<Settings>) -> Reader {
        Reader {
            looped,
            cursor: 0,
            buffer: Vec::new(),
        }
    }

    async fn run(mut self) {
        let mut files = Files::default();
        let mut checkpoints = Checkpoints::default();
        let mut checkpoint_file = None;
        let mut first = true;
        loop {
            let settings = self.looped.settings.load_full();
            if settings.checkpoints != checkpoint_file {
                checkpoint_file.clone_from(&settings.checkpoints);
                if let Some(file) = &checkpoint_file {
                    checkpoints = load(file);
                }
            }
            let scan = Scan {
                include: &settings.include,
                exclude: &settings.exclude,
                fingerprint_size: settings.config.fingerprint_size as usize,
                start_at_end: settings.config.start_at == StartAt::End,
            };
            files.poll(&scan, first, &checkpoints);
            first = false;
            // Deliver until every file is read to its end, or the pipeline refuses.
            while self.deliver(&mut files, &settings).await {
                checkpoints = files.checkpoints();
                if let Some(file) = &checkpoint_file {
                    save(file, &checkpoints);
                }
                if *self.looped.stopped.borrow() {
                    break;
                }
            }
            files.forget_finished();
            checkpoints = files.checkpoints();
            if let Some(file) = &checkpoint_file {
                save(file, &checkpoints);
            }
            if self.looped.shutdown.is_cancelled()
                || !self.looped.wait(settings.config.poll_interval).await
            {
                return;
            }
        }
    }

    /// Reads what each file has next and sends it, one read per file at a time; returns
    /// whether anything was delivered (so there may be more).
    async fn deliver(&mut self, files: &mut Files, settings: &Settings) -> bool {
        let now = Instant::now();
        // Files are read in their order (a rotated file's last lines before the new file's
        // first); past max_concurrent_files, rounds take them in turns.
        let count = files.tracked.len();
        let window = settings.config.max_concurrent_files.min(count);
        if self.cursor >= count {
            self.cursor = 0;
        }
        let order: Vec<usize> = (0..window).map(|k| (self.cursor + k) % count).collect();
        self.cursor = if window < count {
            self.cursor + window
        } else {
            0
        };
        // What a round reads is bounded: ROUND_LIMIT shared by the files, each at least
        // 64 KiB and a whole record.
        let share = (ROUND_LIMIT as usize / window.max(1)).clamp(64 << 10, READ_LIMIT);
        let limit = share.max(settings.framing.max_log_size + 1);
        let mut reads = Vec::new();
        for i in order {
            let tracked = &mut files.tracked[i];
            match tracked.read(&settings.framing, limit, now, &mut self.buffer) {
                Ok(mut split) if !split.records.is_empty() => {
                    let batch = batch(tracked, &mut split.records, settings);
                    reads.push((i, split.progress, batch));
                }
                // Nothing to send (blank lines, the rest of a cut line): passed at once.
                Ok(split) => tracked.acknowledged(split.progress),
                Err(e) => {
                    tracing::warn!(receiver = self.looped.name, path = %tracked.path.display(), error = %e, "filelog: cannot read")
                }
            }
        }
        if reads.is_empty() {
            return false;
        }
        // Handed to the pipeline in order (a file's reads, and a rotated file's last lines
        // before the new file's first), then acknowledged together.
        let progress: Vec<_> = reads.iter().map(|(i, read, _)| (*i, *read)).collect();
        let sent = async {
            let mut receipts = Vec::new();
            for (_, _, batch) in reads {
                receipts.push(self.looped.output.push(batch).await);
            }
            let pending = receipts.into_iter().map(|receipt| async { receipt?.await });
            futures_util::future::join_all(pending).await
        };
        let outcomes = tokio::select! {
            outcomes = sent => outcomes,
            // Past the grace period, what is in flight is read again after a restart.
            _ = self.looped.shutdown.cancelled() => return false,
        };
        let mut refused = None;
        for ((i, read), outcome) in progress.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => files.tracked[i].acknowledged(read),
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            tracing::warn!(receiver = self.looped.name, error = %e, "filelog: the pipeline refused lines; offering them again");
            tokio::select! {
                _ = tokio::time::sleep(RETRY_AFTER) => {}
                _ = self.looped.shutdown.cancelled() => {}
            }
            return false;
        }
        true
    }
}

/// The records of one read as a batch of logs, encoded.
fn batch(tracked: &Tracked, records: &mut [Record<'_>], settings: &Settings) -> Batch {
    let path = tracked.path.to_string_lossy();
    let name = tracked
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let config = &settings.config;
    let mut attributes: Vec<(&str, &str)> = (config.attributes.iter())
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    if config.include_file_name {
        attributes.push(("log.file.name", &name));
    }
    if config.include_file_path {
        attributes.push(("log.file.path", &path));
    }
    let pod = if settings.pod_metadata {
        container::pod_attributes(&path)
    } else {
        Vec::new()
    };
    let resource = (pod.iter().map(|(key, value)| (*key, value.as_str()))).chain(
        config
            .resource
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let shared = Shared::new(attributes, resource, settings.bytes, unix_nanos());
    let bytes = encode::request(records, &shared);
    Batch::trusted(Signal::Logs, bytes, records.len())
}

/// The checkpoints kept in `file`; none when it is missing or unreadable (said).
fn load(file: &Path) -> Checkpoints {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %file.display(), error = %e, "filelog: checkpoints unreadable; reading files as new");
            Checkpoints::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoints::default(),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "filelog: checkpoints unreadable; reading files as new");
            Checkpoints::default()
        }
    }
}

/// Writes the checkpoints to `file` whole (a new file renamed over the old).
fn save(file: &Path, checkpoints: &Checkpoints) {
    let written = serde_json::to_vec(checkpoints)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let temporary = file.with_extension("json.new");
            std::fs::write(&temporary, bytes)?;
            std::fs::rename(&temporary, file)
        });
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "filelog: cannot checkpoint offsets");
    }
}

#[cfg(test)]
mod tests;
