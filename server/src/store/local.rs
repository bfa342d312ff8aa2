//! The local store: a directory of YAML files (`odigos.d/`), each holding one or more resources
//! as `kubectl` would take them, watched for changes.
//!
//! A file that does not parse or validate is reported with its line and field, and the last
//! good version of that file stays in force; other files are not disturbed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use odigos_proto::yaml;
use tokio::sync::watch;

use super::{Desired, Problem, Snapshot, Store};
use crate::catalog::Catalog;
use crate::resource::{Object, validate};

/// What the store holds of one file.
#[derive(Default)]
struct FileState {
    /// The resources of the file's last good version.
    good: Vec<Object>,
    /// Problems with its current version; empty when it is good.
    problems: Vec<Problem>,
}

pub struct LocalStore {
    dir: PathBuf,
    catalog: &'static Catalog,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    published: watch::Sender<Arc<Snapshot>>,
}

impl LocalStore {
    /// Reads every `*.yaml` / `*.yml` file of `dir` (which must exist).
    pub fn open(dir: &Path, catalog: &'static Catalog) -> std::io::Result<Arc<LocalStore>> {
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let store = Arc::new(LocalStore {
            dir: dir.to_path_buf(),
            catalog,
            files: Mutex::default(),
            published: watch::channel(Arc::new(Snapshot::default())).0,
        });
        store.reload();
        Ok(store)
    }

    /// Watches the directory and reloads on every change until the returned watcher is
    /// dropped. Bursts of events (an editor's save) are folded into one reload.
    pub fn watch(self: &Arc<Self>) -> notify::Result<notify::RecommendedWatcher> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                while rx.try_recv().is_ok() {}
                let Some(store) = store.upgrade() else { break };
                store.reload();
            }
        });
        Ok(watcher)
    }

    /// Re-reads the directory and publishes a snapshot if anything changed.
    pub fn reload(&self) {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the desired-state directory");
                return;
            }
        };
        paths.sort();
        let mut files = self.files.lock().unwrap();
        let before: Vec<String> = problems_of(&files).iter().map(|p| p.to_string()).collect();
        files.retain(|path, _| paths.contains(path));
        for path in &paths {
            let shown = path.display().to_string();
            let read = std::fs::read_to_string(path).map_err(|e| Problem {
                source: shown.clone(),
                line: None,
                resource: None,
                field: None,
                message: format!("cannot read: {e}"),
            });
            let parsed = read.map(|text| parse_file(&text, &shown, self.catalog));
            let state = files.entry(path.clone()).or_default();
            match parsed {
                Ok(Ok(objects)) => {
                    state.good = objects;
                    state.problems.clear();
                }
                Ok(Err(problems)) => state.problems = problems,
                Err(problem) => state.problems = vec![problem],
            }
        }
        let mut desired = Desired::default();
        let mut problems = problems_of(&files);
        for (path, state) in files.iter() {
            for object in &state.good {
                if !desired.insert(object.clone()) {
                    problems.push(Problem {
                        source: path.display().to_string(),
                        line: None,
                        resource: Some(object.key().to_string()),
                        field: Some("metadata.name".into()),
                        message: "defined in an earlier file too; this one is ignored".into(),
                    });
                }
            }
        }
        let now: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        for problem in now.iter().filter(|p| !before.contains(p)) {
            tracing::warn!("resource refused, its last good version stays: {problem}");
        }
        drop(files);
        self.published.send_modify(|snapshot| {
            *snapshot = Arc::new(Snapshot {
                desired,
                problems,
                generation: snapshot.generation + 1,
            })
        });
    }
}

impl Store for LocalStore {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }
}

fn problems_of(files: &BTreeMap<PathBuf, FileState>) -> Vec<Problem> {
    files.values().flat_map(|f| f.problems.clone()).collect()
}

/// The resources of one file, or every problem with it.
pub(crate) fn parse_file(
    text: &str,
    file: &str,
    catalog: &Catalog,
) -> Result<Vec<Object>, Vec<Problem>> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (offset, document) in documents(text) {
        let problem = |line: Option<usize>,
                       resource: Option<String>,
                       field: Option<String>,
                       message: String| Problem {
            source: file.to_string(),
            line: line.map(|l| l + offset),
            resource,
            field,
            message,
        };
        let value = match yaml::parse(document) {
            Ok(value) if value.is_null() => continue,
            Ok(value) => value,
            Err((line, message)) => {
                problems.push(problem(line, None, None, message));
                continue;
            }
        };
        let resource = describe(&value);
        let locate = |field: &str| {
            let path: Vec<String> = field.split('.').map(str::to_string).collect();
            yaml::locate(document, &path)
        };
        match Object::from_value(value) {
            Ok(object) => {
                let errors = validate(&object, catalog);
                if errors.is_empty() {
                    objects.push(object);
                }
                for (field, message) in errors {
                    problems.push(problem(
                        locate(&field),
                        resource.clone(),
                        Some(field),
                        message,
                    ));
                }
            }
            Err((field, message)) => {
                let field = (!field.is_empty()).then_some(field);
                let line = field.as_deref().and_then(locate).or(Some(1));
                problems.push(problem(line, resource, field, message));
            }
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

/// `Kind namespace/name` as far as the document tells it.
fn describe(value: &yaml::Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let meta = value.get("metadata");
    let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(|v| v.as_str());
    Some(format!(
        "{kind} {}/{}",
        field("namespace").unwrap_or(crate::resource::DEFAULT_NAMESPACE),
        field("name").unwrap_or("?")
    ))
}

/// The documents of a multi-document YAML text, each with the number of lines before it.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut start_line, mut at) = (0, 0, 0);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            out.push((start_line, &text[start..at]));
            start = at + line.len();
            start_line = number + 1;
        }
        at += line.len();
    }
    out.push((start_line, &text[start..]));
    out
}

#[cfg(test)]
mod tests;
