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
    pub pipelines: BTreeMap<PipelineId, Pipeline>,
    pub telemetry: TelemetryConfig,
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
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub metrics: MetricsTelemetry,
    pub logs: LogsTelemetry,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// Where Prometheus scrapes `/metrics`.
    pub address: String,
    /// `none` turns the endpoint off; anything else keeps it on.
    pub level: String,
}

impl Default for MetricsTelemetry {
    fn default() -> Self {
        MetricsTelemetry {
            address: "127.0.0.1:8888".into(),
            level: "normal".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// `error`, `warn`, `info` or `debug`.
    pub level: String,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: "info".into(),
        }
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
    let config: T = yaml::from_value(value).map_err(|e| ParseError::Fields(vec![e]))?;
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ParseError::Fields(problems))
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
        for (path, message) in yaml::substitute_env(&mut document, env) {
            errors.at(path.clone(), message);
            errors.unresolved.push(path);
        }
        let raw: RawConfig = match yaml::from_value(document) {
            Ok(raw) => raw,
            Err((path, message)) => {
                errors.at(path, message);
                return Err(ConfigErrors(errors.list));
            }
        };

        let receivers = parse_section(
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
        let exporters = parse_section(
            &mut errors,
            "exporters",
            raw.exporters,
            ExporterConfig::parse,
        );
        for id in raw.extensions.keys() {
            errors.at(
                vec!["extensions".into(), id.clone()],
                format!(
                    "unknown extension type {:?} (no extensions are supported yet)",
                    ComponentId::new(id.as_str()).kind()
                ),
            );
        }
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
        for (i, id) in raw.service.extensions.iter().enumerate() {
            errors.at(
                vec!["service".into(), "extensions".into(), i.to_string()],
                format!("extension {id:?} is not defined"),
            );
        }
        let telemetry = match yaml::from_value::<TelemetryConfig>(raw.service.telemetry) {
            Ok(telemetry) => telemetry,
            Err((path, message)) => {
                errors.at(prefixed(&["service", "telemetry"], path), message);
                TelemetryConfig::default()
            }
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
            let pipeline: Pipeline = match yaml::from_value(value) {
                Ok(pipeline) => pipeline,
                Err((path, message)) => {
                    errors.at(prefixed(&["service", "pipelines", &id], path), message);
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
            pipelines,
            telemetry,
        })
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
            Err(ParseError::UnknownType { known }) => errors.at(
                vec![section.into(), id.clone()],
                format!(
                    "unknown {} type {:?} (known: {})",
                    section.trim_end_matches('s'),
                    cid.kind(),
                    known.join(", ")
                ),
            ),
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
