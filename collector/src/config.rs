//! OpenTelemetry Collector YAML: parsing, environment substitution, and validation that reports
//! every error at once with the file and line it comes from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use odigos_proto::Signal;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::connector::ConnectorConfig;
use crate::exporter::ExporterConfig;
use crate::extension::ExtensionConfig;
use crate::processor::ProcessorConfig;
use crate::receiver::ReceiverConfig;
use crate::yaml::{self, Value};

/// The config text with secret values replaced, for reporting effective configs.
pub fn redact(text: &str) -> String {
    yaml::redact(text)
}

/// Parses durations as configs write them: `200ms`, `5s`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    yaml::duration::parse(text)
}

/// A validated collector configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    pub connectors: BTreeMap<ComponentId, ConnectorConfig>,
    /// The extensions listed in `service.extensions`: the ones that run. Declared ones that
    /// are not listed are checked, and do not run.
    pub extensions: BTreeMap<ComponentId, ExtensionConfig>,
    pub pipelines: BTreeMap<PipelineId, Pipeline>,
    pub telemetry: TelemetryConfig,
    /// What was accepted but deserves a word, e.g. an unset environment variable.
    pub warnings: Vec<String>,
}

/// `type` or `type/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId(String);

impl ComponentId {
    pub fn new(id: impl Into<String>) -> ComponentId {
        ComponentId(id.into())
    }

    /// The component type: the part before `/`.
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `traces`, `metrics/name`, ...
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineId {
    pub signal: Signal,
    pub id: String,
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub receivers: Vec<ComponentId>,
    #[serde(default)]
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// `service.telemetry`: the collector's own metrics and logs.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub metrics: MetricsTelemetry,
    pub logs: LogsTelemetry,
    /// Attributes that describe this collector, served with its metrics as the labels of
    /// `target_info`. A null value leaves the attribute out.
    pub resource: BTreeMap<String, Option<Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// Where Prometheus scrapes `/metrics` (the form before otelcol 0.111; `readers` is the
    /// current one).
    pub address: String,
    /// `none` turns the endpoint off; `basic`, `normal` and `detailed` keep it on.
    pub level: String,
    /// Metric readers: one `pull` reader with a Prometheus exporter, whose `host` and `port`
    /// say where `/metrics` is served.
    pub readers: Vec<MetricReader>,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: "127.0.0.1:8888".into(),
            level: "normal".into(),
            readers: Vec::new(),
        }
    }
}

impl MetricsTelemetry {
    /// Where `/metrics` is served: the pull reader's address when there is one.
    pub fn endpoint(&self) -> String {
        match self.readers.first().and_then(|r| r.pull.as_ref()) {
            Some(pull) => {
                let prometheus = &pull.exporter.prometheus;
                let host = prometheus.host.as_deref().unwrap_or("localhost");
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                format!("{host}:{}", prometheus.port.unwrap_or(8888))
            }
            None => self.address.clone(),
        }
    }

    fn validate(&self, explicit_address: bool) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if !["none", "basic", "normal", "detailed"].contains(&self.level.as_str()) {
            problems.push((
                vec!["level".into()],
                format!(
                    "unknown level {:?} (use none, basic, normal or detailed)",
                    self.level
                ),
            ));
        }
        for (i, reader) in self.readers.iter().enumerate() {
            let at = vec!["readers".to_string(), i.to_string()];
            if reader.periodic.is_some() {
                problems.push((
                    [at.clone(), vec!["periodic".into()]].concat(),
                    "periodic readers are not supported: the collector's metrics are served \
                     for scraping only (use a pull reader with a prometheus exporter)"
                        .into(),
                ));
            } else if reader.pull.is_none() {
                problems.push((at.clone(), "a reader needs pull".into()));
            }
            if i > 0 {
                problems.push((
                    at,
                    "only one reader is supported: the metrics are served at one address".into(),
                ));
            }
        }
        if explicit_address && !self.readers.is_empty() {
            problems.push((
                vec!["address".into()],
                "give either address or readers, not both".into(),
            ));
        }
        problems
    }
}

/// One entry of `service.telemetry.metrics.readers`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricReader {
    pub pull: Option<PullReader>,
    /// Refused: pushing the collector's own metrics is not supported.
    pub periodic: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullReader {
    pub exporter: PullExporter,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullExporter {
    pub prometheus: PrometheusEndpoint,
}

/// Where the Prometheus text is served.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusEndpoint {
    /// Default `localhost`.
    pub host: Option<String>,
    /// Default 8888.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// `error`, `warn`, `info` or `debug`.
    pub level: String,
    /// `console` (text) or `json` (one JSON object per line).
    pub encoding: LogEncoding,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
            encoding: LogEncoding::Console,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

impl TelemetryConfig {
    /// The `resource` attributes with a value, as text.
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        self.resource
            .iter()
            .filter_map(|(key, value)| {
                let text = match value.as_ref()? {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((key.clone(), text))
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for ComponentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ComponentId(String::deserialize(d)?))
    }
}

/// One problem in a configuration, located as precisely as it can be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the field or component, e.g. `processors.batch/fast.timeout`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    receivers: BTreeMap<String, Value>,
    #[serde(default)]
    processors: BTreeMap<String, Value>,
    #[serde(default)]
    exporters: BTreeMap<String, Value>,
    #[serde(default)]
    extensions: BTreeMap<String, Value>,
    #[serde(default)]
    connectors: BTreeMap<String, Value>,
    service: RawService,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    pipelines: BTreeMap<String, Value>,
    #[serde(default)]
    telemetry: Value,
}

/// Parses the typed configuration of one component, then lets it check itself.
pub(crate) trait ComponentConfig: DeserializeOwned {
    /// Problems serde cannot see (bad regex, conflicting fields), as `(field path, message)`.
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        Vec::new()
    }
}

/// The result of parsing one component's typed config.
pub(crate) enum ParseError {
    UnknownType { known: &'static [&'static str] },
    Fields(Vec<(Vec<String>, String)>),
}

pub(crate) fn parse_component<T: ComponentConfig>(value: Value) -> Result<T, ParseError> {
    let (config, mut problems) = from_value_all::<T>(value);
    // What could be read is checked too, so that one run says everything.
    if let Some(config) = &config {
        problems.extend(config.validate());
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ParseError::Fields(problems)),
    }
}

/// [`from_value_all`] as a `Result`: the value when it has no problem.
fn from_value_strict<T: DeserializeOwned>(value: Value) -> Result<T, Vec<(Vec<String>, String)>> {
    match from_value_all(value) {
        (Some(parsed), problems) if problems.is_empty() => Ok(parsed),
        (_, problems) => Err(problems),
    }
}

/// Deserializes `value`, reporting every problem rather than the first: a field that is
/// unknown or does not parse is noted, taken out, and the rest parsed again. Returns what
/// could be read without the problem fields, if anything, and the problems.
pub(crate) fn from_value_all<T: DeserializeOwned>(
    mut value: Value,
) -> (Option<T>, Vec<(Vec<String>, String)>) {
    let mut problems: Vec<(Vec<String>, String)> = Vec::new();
    // What was taken out, as written (before earlier removals shifted list indices).
    let mut removed: Vec<Vec<String>> = Vec::new();
    // Each list item taken out: (the list's path now, the item's index now).
    let mut shifts: Vec<(Vec<String>, usize)> = Vec::new();
    let original = |path: &[String], shifts: &[(Vec<String>, usize)]| {
        let mut path = path.to_vec();
        for (list, index) in shifts.iter().rev() {
            if path.len() > list.len()
                && path.starts_with(list)
                && let Ok(i) = path[list.len()].parse::<usize>()
                && i >= *index
            {
                path[list.len()] = (i + 1).to_string();
            }
        }
        path
    };
    for _ in 0..100 {
        let (path, message) = match yaml::from_value::<T>(value.clone()) {
            Ok(parsed) => return (Some(parsed), problems),
            Err(problem) => problem,
        };
        // A field missing only because an earlier problem took it out: take out its parent.
        let taken_out = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|field| {
                let mut full = original(&path, &shifts);
                full.push(field.to_string());
                removed.contains(&full)
            });
        if !taken_out {
            problems.push((original(&path, &shifts), message));
        }
        if path.is_empty() {
            break;
        }
        removed.push(original(&path, &shifts));
        match remove(&mut value, &path) {
            Some(Removed::Item) => {
                let (index, list) = path.split_last().expect("not empty");
                shifts.push((list.to_vec(), index.parse().unwrap_or(0)));
            }
            Some(Removed::Key) => {}
            None => break,
        }
    }
    if problems.is_empty() {
        problems.push((Vec::new(), "cannot be parsed".into()));
    }
    (None, problems)
}

enum Removed {
    Key,
    Item,
}

/// Takes the key or list item at `path` out of `value`.
fn remove(value: &mut Value, path: &[String]) -> Option<Removed> {
    let (last, parents) = path.split_last()?;
    let mut at = value;
    for segment in parents {
        at = match at {
            Value::Mapping(map) => map
                .iter_mut()
                .find(|(k, _)| key_text(k).as_deref() == Some(segment))
                .map(|(_, v)| v)?,
            Value::Sequence(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match at {
        Value::Mapping(map) => {
            let key = map
                .keys()
                .find(|k| key_text(k).as_deref() == Some(last))?
                .clone();
            map.remove(&key).map(|_| Removed::Key)
        }
        Value::Sequence(items) => {
            let index = last.parse::<usize>().ok().filter(|i| *i < items.len())?;
            items.remove(index);
            Some(Removed::Item)
        }
        _ => None,
    }
}

fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Config {
    /// Reads and validates a configuration file, reporting every error at once.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Parses and validates YAML text; `file` names it in errors. `${env:VAR}` references are
    /// resolved from the process environment, `${file:PATH}` ones from the file's contents.
    /// As in otelcol, a variable that is not set and has no default stands for the empty
    /// string, with a warning.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::from_yaml_with_env(text, file, &|name| std::env::var(name).ok())
    }

    pub fn from_yaml_with_env(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Errors {
            text,
            file,
            list: Vec::new(),
            unresolved: Vec::new(),
        };
        let mut document = match yaml::parse(text) {
            Ok(document) => document,
            Err((line, message)) => {
                errors.list.push(ConfigError {
                    file: file.into(),
                    line,
                    path: String::new(),
                    message,
                });
                return Err(ConfigErrors(errors.list));
            }
        };
        let unset = std::cell::RefCell::new(Vec::<String>::new());
        let lookup = |name: &str| {
            env(name).or_else(|| {
                let mut unset = unset.borrow_mut();
                if !unset.iter().any(|n| n == name) {
                    unset.push(name.to_string());
                }
                Some(String::new())
            })
        };
        for (path, message) in yaml::substitute_env(&mut document, &lookup) {
            errors.at(path.clone(), message);
            errors.unresolved.push(path);
        }
        let warnings: Vec<String> = unset
            .into_inner()
            .into_iter()
            .map(|name| {
                let warning = format!(
                    "environment variable {name} is not set: it stands for the empty string \
                     (write ${{env:{name}:-default}} to give a default)"
                );
                tracing::warn!(file, "{warning}");
                warning
            })
            .collect();
        let explicit_address = document
            .get("service")
            .and_then(|s| s.get("telemetry"))
            .and_then(|t| t.get("metrics"))
            .and_then(|m| m.get("address"))
            .is_some();
        // Unknown top-level or `service` keys are reported, and the rest is read on.
        let (raw, problems) = from_value_all::<RawConfig>(document);
        for (path, message) in problems {
            errors.at(path, message);
        }
        let Some(raw) = raw else {
            return Err(ConfigErrors(errors.list));
        };

        let mut receivers = parse_section(
            &mut errors,
            "receivers",
            raw.receivers,
            ReceiverConfig::parse,
        );
        let processors = parse_section(
            &mut errors,
            "processors",
            raw.processors,
            ProcessorConfig::parse,
        );
        let mut exporters = parse_section(
            &mut errors,
            "exporters",
            raw.exporters,
            ExporterConfig::parse,
        );
        let declared_extensions = parse_section(
            &mut errors,
            "extensions",
            raw.extensions,
            ExtensionConfig::parse,
        );
        let connectors = parse_section(
            &mut errors,
            "connectors",
            raw.connectors,
            ConnectorConfig::parse,
        );
        for id in &connectors.declared {
            if receivers.declared.contains(id) || exporters.declared.contains(id) {
                errors.at(
                    vec!["connectors".into(), id.clone()],
                    format!(
                        "{id} is also declared as a receiver or exporter; give it another name"
                    ),
                );
            }
        }
        let mut extensions = BTreeMap::new();
        for (i, id) in raw.service.extensions.iter().enumerate() {
            let at = vec!["service".into(), "extensions".into(), i.to_string()];
            let cid = ComponentId::new(id.as_str());
            if raw.service.extensions[..i].contains(id) {
                errors.at(at, format!("{id} is listed twice"));
            } else if let Some(config) = declared_extensions.parsed.get(&cid) {
                extensions.insert(cid, config.clone());
            } else if !declared_extensions.declared.contains(id) {
                errors.at(
                    at,
                    format!("extension {id} is not defined in the top-level extensions section"),
                );
            }
            // Declared but refused (an unsupported type, a bad field): said at its declaration.
        }
        resolve_storage(
            &mut errors,
            &mut exporters.parsed,
            &mut receivers.parsed,
            &declared_extensions,
            &extensions,
        );
        let (telemetry, mut problems) = from_value_all::<TelemetryConfig>(raw.service.telemetry);
        for (path, message) in problems.drain(..) {
            errors.at(prefixed(&["service", "telemetry"], path), message);
        }
        let telemetry = match telemetry {
            Some(telemetry) => {
                let mut problems = telemetry.metrics.validate(explicit_address);
                for (key, value) in &telemetry.resource {
                    if matches!(value, Some(Value::Mapping(_) | Value::Sequence(_))) {
                        problems.push((
                            vec!["resource".into(), key.clone()],
                            "must be a string, number or boolean".into(),
                        ));
                    }
                }
                for (path, message) in problems {
                    let path = match path.first().map(String::as_str) {
                        Some("resource") => path,
                        _ => prefixed(&["metrics"], path),
                    };
                    errors.at(prefixed(&["service", "telemetry"], path), message);
                }
                telemetry
            }
            None => TelemetryConfig::default(),
        };

        let mut pipelines = BTreeMap::new();
        for (id, value) in raw.service.pipelines {
            let at = vec!["service".to_string(), "pipelines".to_string(), id.clone()];
            let kind = id.split('/').next().unwrap_or_default();
            let Some(signal) = Signal::parse(kind) else {
                errors.at(
                    at,
                    format!("unknown pipeline type {kind:?} (use traces, metrics or logs)"),
                );
                continue;
            };
            let pipeline: Pipeline = match from_value_strict(value) {
                Ok(pipeline) => pipeline,
                Err(problems) => {
                    for (path, message) in problems {
                        errors.at(prefixed(&["service", "pipelines", &id], path), message);
                    }
                    continue;
                }
            };
            let mut refs = References {
                errors: &mut errors,
                at: &at,
                signal,
            };
            let sources = [&receivers.declared[..], &connectors.declared[..]].concat();
            refs.check("receivers", &pipeline.receivers, &sources, |c| {
                receivers.parsed.get(c).map(ReceiverConfig::signals)
            });
            refs.check(
                "processors",
                &pipeline.processors,
                &processors.declared,
                |c| processors.parsed.get(c).map(ProcessorConfig::signals),
            );
            let sinks = [&exporters.declared[..], &connectors.declared[..]].concat();
            refs.check("exporters", &pipeline.exporters, &sinks, |c| {
                exporters.parsed.get(c).map(ExporterConfig::signals)
            });
            pipelines.insert(PipelineId { signal, id }, pipeline);
        }
        check_connectors(&mut errors, &connectors.parsed, &pipelines);
        if pipelines.is_empty() && errors.list.is_empty() {
            errors.at(
                vec!["service".into(), "pipelines".into()],
                "at least one pipeline is required".into(),
            );
        }

        if !errors.list.is_empty() {
            return Err(ConfigErrors(errors.list));
        }
        Ok(Config {
            receivers: receivers.parsed,
            processors: processors.parsed,
            exporters: exporters.parsed,
            connectors: connectors.parsed,
            extensions,
            pipelines,
            telemetry,
            warnings,
        })
    }
}

/// Points each exporter's `sending_queue.storage`, and each `filelog` receiver's `storage`, at
/// its `file_storage` extension, which must be declared and listed in `service.extensions`.
fn resolve_storage(
    errors: &mut Errors<'_>,
    exporters: &mut BTreeMap<ComponentId, ExporterConfig>,
    receivers: &mut BTreeMap<ComponentId, ReceiverConfig>,
    declared: &Section<ExtensionConfig>,
    enabled: &BTreeMap<ComponentId, ExtensionConfig>,
) {
    let mut resolve = |at: Vec<String>, storage: &ComponentId| match enabled.get(storage) {
        Some(ExtensionConfig::FileStorage(file_storage)) => Some(file_storage),
        Some(_) => {
            errors.at(
                at,
                format!("extension {storage} is not a storage extension (use file_storage)"),
            );
            None
        }
        None if declared.declared.iter().any(|d| d == storage.as_str()) => {
            errors.at(
                at,
                format!(
                    "storage extension {storage} is not enabled: list it in service.extensions"
                ),
            );
            None
        }
        None => {
            errors.at(
                at,
                format!(
                    "storage extension {storage} is not defined in the top-level extensions section"
                ),
            );
            None
        }
    };
    for (id, exporter) in exporters.iter_mut() {
        let Some(queue) = exporter.queue_mut() else {
            continue;
        };
        let Some(storage) = queue.storage.clone() else {
            continue;
        };
        let at = ["exporters", id.as_str(), "sending_queue", "storage"];
        if let Some(file_storage) = resolve(at.map(String::from).to_vec(), &storage) {
            queue.use_storage(file_storage);
        }
    }
    for (id, receiver) in receivers.iter_mut() {
        let ReceiverConfig::Filelog(filelog) = receiver else {
            continue;
        };
        let Some(storage) = filelog.storage.clone() else {
            continue;
        };
        let at = ["receivers", id.as_str(), "storage"];
        if let Some(file_storage) = resolve(at.map(String::from).to_vec(), &storage) {
            filelog.storage_directory = Some(file_storage.directory.clone());
        }
    }
}

struct Errors<'a> {
    text: &'a str,
    file: &'a str,
    list: Vec<ConfigError>,
    /// Fields whose `${env:...}` could not be resolved; their other errors would only confuse.
    unresolved: Vec<Vec<String>>,
}

impl Errors<'_> {
    fn at(&mut self, path: Vec<String>, message: String) {
        if self.unresolved.iter().any(|u| path.starts_with(u)) {
            return;
        }
        self.list.push(ConfigError {
            file: self.file.to_string(),
            line: yaml::locate(self.text, &path),
            path: path.join("."),
            message,
        });
    }
}

fn prefixed(prefix: &[&str], path: Vec<String>) -> Vec<String> {
    prefix.iter().map(|s| s.to_string()).chain(path).collect()
}

/// One section's components: every id written, and those whose config is valid.
struct Section<C> {
    declared: Vec<String>,
    parsed: BTreeMap<ComponentId, C>,
}

fn parse_section<C>(
    errors: &mut Errors<'_>,
    section: &str,
    raw: BTreeMap<String, Value>,
    parse: fn(&str, Value) -> Result<C, ParseError>,
) -> Section<C> {
    let declared = raw.keys().cloned().collect();
    let mut parsed = BTreeMap::new();
    for (id, value) in raw {
        let cid = ComponentId::new(id.as_str());
        match parse(cid.kind(), value) {
            Ok(config) => {
                parsed.insert(cid, config);
            }
            Err(ParseError::UnknownType { known }) => {
                let kind = section.trim_end_matches('s');
                let message = if section == "extensions" {
                    format!(
                        "unsupported extension type {:?} (supported: {})",
                        cid.kind(),
                        known.join(", ")
                    )
                } else {
                    format!(
                        "unknown {kind} type {:?} (known: {})",
                        cid.kind(),
                        known.join(", ")
                    )
                };
                errors.at(vec![section.into(), id.clone()], message)
            }
            Err(ParseError::Fields(problems)) => {
                for (path, message) in problems {
                    errors.at(prefixed(&[section, &id], path), message);
                }
            }
        }
    }
    Section { declared, parsed }
}

/// Every connector is the exporter of some pipeline and the receiver of another, its routing
/// table names pipelines that receive from it, and no data can go round in a circle.
fn check_connectors(
    errors: &mut Errors<'_>,
    connectors: &BTreeMap<ComponentId, ConnectorConfig>,
    pipelines: &BTreeMap<PipelineId, Pipeline>,
) {
    for (id, connector) in connectors {
        let at = vec!["connectors".to_string(), id.to_string()];
        let feeding = pipelines.values().any(|p| p.exporters.contains(id));
        let fed: Vec<&str> = pipelines
            .iter()
            .filter(|(_, p)| p.receivers.contains(id))
            .map(|(pid, _)| pid.id.as_str())
            .collect();
        if !feeding || fed.is_empty() {
            errors.at(
                at.clone(),
                format!("{id} must be an exporter of one pipeline and a receiver of another"),
            );
        }
        for (path, pipeline) in connector.named_pipelines() {
            if !fed.contains(&pipeline) {
                errors.at(
                    [at.clone(), path].concat(),
                    format!("pipeline {pipeline} does not list {id} among its receivers"),
                );
            }
        }
    }
    // Pipeline a feeds pipeline b when a exports to a connector b receives from.
    let feeds = |a: &Pipeline, b: &Pipeline| {
        a.exporters
            .iter()
            .any(|e| connectors.contains_key(e) && b.receivers.contains(e))
    };
    let ids: Vec<&PipelineId> = pipelines.keys().collect();
    for start in &ids {
        let mut seen = vec![*start];
        let mut frontier = vec![*start];
        while let Some(current) = frontier.pop() {
            for next in &ids {
                if feeds(&pipelines[current], &pipelines[next]) {
                    if next == start {
                        errors.at(
                            vec!["service".into(), "pipelines".into(), start.id.clone()],
                            format!("data from {start} comes back to it through connectors"),
                        );
                        return;
                    }
                    if !seen.contains(next) {
                        seen.push(next);
                        frontier.push(next);
                    }
                }
            }
        }
    }
}

/// Checks a pipeline's references to components.
struct References<'a, 'b> {
    errors: &'a mut Errors<'b>,
    at: &'a [String],
    signal: Signal,
}

impl References<'_, '_> {
    fn check(
        &mut self,
        section: &str,
        ids: &[ComponentId],
        declared: &[String],
        signals_of: impl Fn(&ComponentId) -> Option<&'static [Signal]>,
    ) {
        if ids.is_empty() && section != "processors" {
            self.errors.at(
                self.at.to_vec(),
                format!("a pipeline needs at least one of its {section}"),
            );
        }
        for (i, id) in ids.iter().enumerate() {
            let at = [self.at.to_vec(), vec![section.into(), i.to_string()]].concat();
            if ids[..i].contains(id) {
                self.errors.at(at, format!("{id} is listed twice"));
            } else if !declared.iter().any(|d| d == id.as_str()) {
                self.errors.at(
                    at,
                    format!("{id} is not defined in the top-level {section} section"),
                );
            } else if let Some(signals) = signals_of(id)
                && !signals.contains(&self.signal)
            {
                self.errors
                    .at(at, format!("{id} does not support {}", self.signal));
            }
        }
    }
}

#[cfg(test)]
mod tests;
