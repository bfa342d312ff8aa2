//! The local store: a directory of YAML files (`odigos.d/`), each holding one or more resources
//! as `kubectl` would take them, watched for changes.
//!
//! Each document stands alone: one that does not parse or validate is reported with its line
//! and field, and the last good version of that resource stays in force, while the other
//! documents of the file apply. The versions in force are kept in a file of the state
//! directory, so they stay in force across restarts too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use odigos_proto::yaml;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Change, Desired, Problem, Refusal, Snapshot, Store};
use crate::catalog::Catalog;
use crate::resource::{Object, ObjectKey, validate};

/// The version in force of one resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Accepted {
    /// `Kind namespace/name`.
    key: String,
    /// Its document, as written.
    text: String,
    /// When this version was accepted (RFC 3339).
    at: String,
    #[serde(skip)]
    object: Option<Object>,
}

/// What the store holds of one file.
#[derive(Default)]
struct FileState {
    /// What is in force of it: the last good version of each resource it defines.
    good: Vec<Accepted>,
    /// Problems with its current version; empty when it is good.
    problems: Vec<Problem>,
}

pub struct LocalStore {
    dir: PathBuf,
    catalog: &'static Catalog,
    /// Where the versions in force are kept across restarts.
    kept: Option<PathBuf>,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    published: watch::Sender<Arc<Snapshot>>,
    /// One change through the API at a time: each reads a file and writes it back.
    changing: Mutex<()>,
    /// A digest of what was last published (the documents in force and the problems), so a
    /// reload that finds nothing new publishes nothing: the watcher's after a change through
    /// the API, or an editor saving a file unchanged.
    last: Mutex<Option<u64>>,
}

impl LocalStore {
    /// Reads every `*.yaml` / `*.yml` file of `dir` (which must exist). With `kept`, the
    /// versions in force are written to that file, and read back from it first, so a file
    /// broken while the control plane was down still has its last good version in force.
    pub fn open(
        dir: &Path,
        catalog: &'static Catalog,
        kept: Option<&Path>,
    ) -> std::io::Result<Arc<LocalStore>> {
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let mut files = BTreeMap::new();
        if let Some(kept) = kept {
            for (name, good) in read_kept(kept, catalog) {
                files.insert(
                    dir.join(name),
                    FileState {
                        good,
                        problems: Vec::new(),
                    },
                );
            }
        }
        let store = Arc::new(LocalStore {
            dir: dir.to_path_buf(),
            catalog,
            kept: kept.map(Path::to_path_buf),
            files: Mutex::new(files),
            published: watch::channel(Arc::new(Snapshot::default())).0,
            changing: Mutex::default(),
            last: Mutex::default(),
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

    /// Re-reads the directory and publishes a snapshot.
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
            let state = files.entry(path.clone()).or_default();
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let documents = parse_documents(&text, &shown, self.catalog);
                    let (good, problems) = merge(&state.good, documents);
                    state.good = good;
                    state.problems = problems;
                }
                // Unreadable for now: what was in force of it stays.
                Err(e) => {
                    state.problems = vec![Problem {
                        source: shown,
                        line: None,
                        resource: None,
                        field: None,
                        message: format!("cannot read: {e}"),
                    }]
                }
            }
        }
        let mut desired = Desired::default();
        let mut accepted = BTreeMap::new();
        let mut problems = problems_of(&files);
        for (path, state) in files.iter() {
            for good in &state.good {
                let Some(object) = good.object.clone() else {
                    continue;
                };
                if desired.insert(object) {
                    accepted.insert(good.key.clone(), good.at.clone());
                } else {
                    problems.push(Problem {
                        source: path.display().to_string(),
                        line: None,
                        resource: Some(good.key.clone()),
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
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for state in files.values() {
                for good in &state.good {
                    (&good.key, &good.text).hash(&mut hasher);
                }
            }
            now.hash(&mut hasher);
            hasher.finish()
        };
        if self.last.lock().unwrap().replace(digest) == Some(digest) {
            return;
        }
        if let Some(kept) = &self.kept
            && let Err(e) = write_kept(kept, &self.dir, &files)
        {
            tracing::warn!(file = %kept.display(), error = %e, "cannot keep the versions in force for the next start");
        }
        drop(files);
        self.published.send_modify(|snapshot| {
            *snapshot = Arc::new(Snapshot {
                desired,
                problems,
                accepted,
                generation: snapshot.generation + 1,
            })
        });
    }
}

#[async_trait::async_trait]
impl Store for LocalStore {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    async fn change(&self, change: Change) -> Result<(), Refusal> {
        change.check(self.catalog)?;
        let key = change.key();
        let _one = self.changing.lock().unwrap();
        // The file that holds the version in force, and that version's text.
        let wanted = key.to_string();
        let holder = self.files.lock().unwrap().iter().find_map(|(path, state)| {
            let good = state.good.iter().find(|good| good.key == wanted)?;
            Some((path.clone(), good.text.clone()))
        });
        let failed = |path: &Path, e: std::io::Error| {
            Refusal::Failed(format!("cannot write {}: {e}", path.display()))
        };
        match (change, holder) {
            (Change::Create(_), Some(_)) => return Err(Refusal::Exists(key)),
            (Change::Update(_) | Change::Delete(_), None) => return Err(Refusal::Missing(key)),
            (Change::Create(object), None) => {
                let path = self.new_file(&key);
                write_atomically(&path, &object.to_yaml()).map_err(|e| failed(&path, e))?;
                tracing::info!(file = %path.display(), resource = %key, "resource created through the API");
            }
            (change, Some((path, in_force))) => {
                let text = std::fs::read_to_string(&path).map_err(|e| failed(&path, e))?;
                let replacement = match &change {
                    Change::Update(object) => Some(object.to_yaml()),
                    _ => None,
                };
                let Some(text) = replace_document(&text, &in_force, replacement.as_deref()) else {
                    return Err(Refusal::Failed(format!(
                        "{} holds a version of {key} that is not in force (it has a problem or was just edited): fix it there first",
                        path.display()
                    )));
                };
                if text.trim().is_empty() {
                    std::fs::remove_file(&path).map_err(|e| failed(&path, e))?;
                } else {
                    write_atomically(&path, &text).map_err(|e| failed(&path, e))?;
                }
                let done = if replacement.is_some() {
                    "updated"
                } else {
                    "deleted"
                };
                tracing::info!(file = %path.display(), resource = %key, "resource {done} through the API");
            }
        }
        self.reload();
        Ok(())
    }
}

impl LocalStore {
    /// A file name of its own for a resource created through the API: `kind-name.yaml`, with
    /// the namespace when it is not the default one.
    fn new_file(&self, key: &ObjectKey) -> PathBuf {
        let kind = key.kind.to_ascii_lowercase();
        let stem = if key.namespace == crate::resource::DEFAULT_NAMESPACE {
            format!("{kind}-{}", key.name)
        } else {
            format!("{kind}-{}-{}", key.namespace, key.name)
        };
        let mut path = self.dir.join(format!("{stem}.yaml"));
        let mut n = 2;
        while path.exists() {
            path = self.dir.join(format!("{stem}-{n}.yaml"));
            n += 1;
        }
        path
    }
}

/// Writes through a file the directory's watcher ignores, then renames it into place, so the
/// store never reads half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// `text` with its document `old` replaced by `new` (or removed, with its separator); `None`
/// when no document of it is `old`.
fn replace_document(text: &str, old: &str, new: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = documents(text).into_iter().map(|(_, d)| d).collect();
    let at = parts.iter().position(|d| *d == old)?;
    let mut kept: Vec<String> = parts.iter().map(|d| d.to_string()).collect();
    match new {
        Some(new) => kept[at] = new.to_string(),
        None => {
            kept.remove(at);
        }
    }
    for part in &mut kept {
        if !part.is_empty() && !part.ends_with('\n') {
            part.push('\n');
        }
    }
    Some(kept.join("---\n"))
}

fn problems_of(files: &BTreeMap<PathBuf, FileState>) -> Vec<Problem> {
    files.values().flat_map(|f| f.problems.clone()).collect()
}

/// What is in force of a file after it changed, and its problems: every good document
/// applies; a bad one keeps its resource's last good version. When a document is too broken
/// to tell which resource it is, every resource of the last good versions that the file no
/// longer defines stays too.
fn merge(previous: &[Accepted], documents: Vec<Document>) -> (Vec<Accepted>, Vec<Problem>) {
    let mut good: Vec<Accepted> = Vec::new();
    let mut problems = Vec::new();
    let mut anonymous = false;
    let last = |key: &str| previous.iter().find(|a| a.key == key);
    for document in documents {
        match document.outcome {
            Ok(object) => {
                let key = object.key().to_string();
                let at = match last(&key) {
                    Some(last) if last.text == document.text => last.at.clone(),
                    _ => super::now(),
                };
                good.push(Accepted {
                    key,
                    text: document.text,
                    at,
                    object: Some(object),
                });
            }
            Err(mut refused) => {
                problems.append(&mut refused);
                match document.key.as_deref().and_then(last) {
                    Some(last) => good.push(last.clone()),
                    None => anonymous |= document.key.is_none(),
                }
            }
        }
    }
    if anonymous {
        for kept in previous {
            if !good.iter().any(|g| g.key == kept.key) {
                good.push(kept.clone());
            }
        }
    }
    (good, problems)
}

/// The kept versions in force, by file name; versions that no longer validate are dropped.
fn read_kept(path: &Path, catalog: &Catalog) -> BTreeMap<String, Vec<Accepted>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the versions in force of the last run");
            return BTreeMap::new();
        }
    };
    let mut kept: BTreeMap<String, Vec<Accepted>> = match serde_json::from_str(&text) {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring the versions in force of the last run");
            return BTreeMap::new();
        }
    };
    for (name, good) in &mut kept {
        good.retain_mut(|accepted| {
            let parsed = parse_documents(&accepted.text, name, catalog).pop();
            accepted.object = parsed.and_then(|d| d.outcome.ok());
            accepted.object.is_some()
        });
    }
    kept
}

/// Writes the versions in force, by file name, when they changed.
fn write_kept(
    path: &Path,
    dir: &Path,
    files: &BTreeMap<PathBuf, FileState>,
) -> std::io::Result<()> {
    let kept: BTreeMap<String, &Vec<Accepted>> = files
        .iter()
        .filter(|(_, state)| !state.good.is_empty())
        .filter_map(|(file, state)| {
            let name = file.strip_prefix(dir).ok()?.to_str()?;
            Some((name.to_string(), &state.good))
        })
        .collect();
    let text = serde_json::to_string_pretty(&kept).map_err(std::io::Error::other)?;
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, &text)?;
    std::fs::rename(&partial, path)
}

/// One document of a file: which resource it is, as far as it tells, and the resource or
/// every problem with it.
struct Document {
    key: Option<String>,
    text: String,
    outcome: Result<Object, Vec<Problem>>,
}

/// The resources of one file, or every problem with it.
#[cfg(test)]
pub(crate) fn parse_file(
    text: &str,
    file: &str,
    catalog: &Catalog,
) -> Result<Vec<Object>, Vec<Problem>> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for document in parse_documents(text, file, catalog) {
        match document.outcome {
            Ok(object) => objects.push(object),
            Err(mut refused) => problems.append(&mut refused),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

/// Every document of a file, each validated on its own.
fn parse_documents(text: &str, file: &str, catalog: &Catalog) -> Vec<Document> {
    let mut out = Vec::new();
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
                out.push(Document {
                    key: None,
                    text: document.to_string(),
                    outcome: Err(vec![problem(line, None, None, message)]),
                });
                continue;
            }
        };
        let resource = describe(&value);
        let locate = |field: &str| {
            let path: Vec<String> = field.split('.').map(str::to_string).collect();
            yaml::locate(document, &path)
        };
        let outcome = match Object::from_value(value) {
            Ok(object) => {
                let errors = validate(&object, catalog);
                if errors.is_empty() {
                    Ok(object)
                } else {
                    Err(errors
                        .into_iter()
                        .map(|(field, message)| {
                            problem(locate(&field), resource.clone(), Some(field), message)
                        })
                        .collect())
                }
            }
            Err((field, message)) => {
                let field = (!field.is_empty()).then_some(field);
                let line = field.as_deref().and_then(locate).or(Some(1));
                Err(vec![problem(line, resource.clone(), field, message)])
            }
        };
        out.push(Document {
            key: resource,
            text: document.to_string(),
            outcome,
        });
    }
    out
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
