//! `file_storage`: a directory where components keep what must survive a restart. An exporter
//! names it in `sending_queue.storage`, and its queue is kept in a folder of that directory
//! named after the exporter.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ComponentConfig;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStorageConfig {
    /// Where the data is kept. It must exist, unless `create_directory` is set.
    pub directory: PathBuf,
    /// How long opening a queue waits for another process to let go of it.
    #[serde(with = "crate::yaml::duration")]
    pub timeout: Duration,
    /// Create `directory` (and its parents) when it is missing.
    pub create_directory: bool,
    /// The permissions of a directory created by `create_directory`, in octal.
    pub directory_permissions: String,
    /// Refused: queues reclaim their space as they are delivered, segment by segment, so
    /// there is nothing to compact.
    pub compaction: Option<serde_yaml::Value>,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        FileStorageConfig {
            directory: PathBuf::from("/var/lib/otelcol/file_storage"),
            timeout: Duration::from_secs(1),
            create_directory: false,
            directory_permissions: "0750".into(),
            compaction: None,
        }
    }
}

impl FileStorageConfig {
    fn permissions(&self) -> Option<u32> {
        u32::from_str_radix(&self.directory_permissions, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
    }

    /// Creates the directory if asked to, and checks that it is one.
    pub(crate) fn prepare(&self) -> Result<(), String> {
        let directory = &self.directory;
        if self.create_directory && !directory.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(self.permissions().unwrap_or(0o750))
                .create(directory)
                .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
        }
        match std::fs::metadata(directory) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(format!("{} is not a directory", directory.display())),
            Err(e) => Err(format!(
                "directory {} cannot be used: {e} (create it, or set create_directory: true)",
                directory.display()
            )),
        }
    }
}

impl ComponentConfig for FileStorageConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.directory.as_os_str().is_empty() {
            problems.push((vec!["directory".into()], "must not be empty".into()));
        } else if !self.create_directory
            && let Err(message) = self.prepare()
        {
            problems.push((vec!["directory".into()], message));
        }
        if self.permissions().is_none() {
            problems.push((
                vec!["directory_permissions".into()],
                format!(
                    "invalid permissions {:?} (write them in octal, e.g. 0750)",
                    self.directory_permissions
                ),
            ));
        }
        if self.compaction.is_some() {
            problems.push((
                vec!["compaction".into()],
                "compaction is not supported: a queue gives its disk space back as it is \
                 delivered, segment by segment, so there is nothing to compact; remove it"
                    .into(),
            ));
        }
        problems
    }
}
