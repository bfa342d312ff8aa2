//! The `hostmetrics` receiver: the machine's CPU, memory, load, disks, filesystems, network,
//! paging and processes, read from `/proc` and `/sys` every `collection_interval`, with the
//! OpenTelemetry Collector's keys, metric names, units and attributes ([`scrape`]).
//!
//! A new config takes effect at the next collection; a scraper that fails says why once (and
//! again when the reason changes) while the others go on.

mod scrape;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use odigos_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use odigos_proto::otlp::common::v1::InstrumentationScope;
use odigos_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use odigos_proto::otlp::resource::v1::Resource;
use serde::Deserialize;

use self::scrape::{Attributes, Host, Kind, Measured, Number};
use super::looping::{self, Looped};
use super::{Routes, resource_metrics, text, unix_nanos};
use crate::config::{ComponentConfig, ComponentId};
use crate::topology::Context;
use crate::{Batch, Decoded};

/// The scrapers, by the name a config gives them.
const SCRAPERS: &[&str] = &[
    "cpu",
    "disk",
    "filesystem",
    "load",
    "memory",
    "network",
    "paging",
    "process",
    "processes",
];

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostmetricsConfig {
    #[serde(with = "crate::yaml::duration")]
    pub collection_interval: Duration,
    /// How long after start the first collection waits.
    #[serde(with = "crate::yaml::duration")]
    pub initial_delay: Duration,
    /// Where the host's filesystem is (`/hostfs` in a container that mounts it): `/proc`,
    /// `/sys` and mount points are read under it.
    pub root_path: PathBuf,
    /// The scrapers to run, each with its own settings (`cpu:` alone runs it as it is).
    pub scrapers: BTreeMap<String, Option<ScraperConfig>>,
}

impl Default for HostmetricsConfig {
    fn default() -> Self {
        HostmetricsConfig {
            collection_interval: Duration::from_secs(60),
            initial_delay: Duration::from_secs(1),
            root_path: PathBuf::from("/"),
            scrapers: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScraperConfig {
    /// Metrics turned off or on by name (`system.cpu.time: {enabled: false}`).
    pub metrics: BTreeMap<String, Toggle>,
    /// `network` (`interfaces`), `disk` (`devices`), `process` (`names`): only these.
    pub include: Option<Filter>,
    /// ... and not these.
    pub exclude: Option<Filter>,
    /// `filesystem`: by mount point and by filesystem type.
    pub include_mount_points: Option<Filter>,
    pub exclude_mount_points: Option<Filter>,
    pub include_fs_types: Option<Filter>,
    pub exclude_fs_types: Option<Filter>,
    /// `process`: errors reading a process that are not said (here none is).
    pub mute_process_name_error: bool,
    pub mute_process_exe_error: bool,
    pub mute_process_io_error: bool,
    pub mute_process_user_error: bool,
    pub mute_process_cgroup_error: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

/// Names to match, by the key each scraper uses for them.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub names: Vec<String>,
    pub interfaces: Vec<String>,
    pub devices: Vec<String>,
    pub mount_points: Vec<String>,
    pub fs_types: Vec<String>,
    /// `strict` (the default) or `regexp`.
    pub match_type: Option<String>,
}

impl Filter {
    fn patterns(&self) -> impl Iterator<Item = &String> {
        self.names
            .iter()
            .chain(&self.interfaces)
            .chain(&self.devices)
            .chain(&self.mount_points)
            .chain(&self.fs_types)
    }

    fn matcher(&self) -> Matcher {
        if self.match_type.as_deref() == Some("regexp") {
            Matcher::Regexes(
                self.patterns()
                    .filter_map(|p| regex::Regex::new(p).ok())
                    .collect(),
            )
        } else {
            Matcher::Names(self.patterns().cloned().collect())
        }
    }
}

enum Matcher {
    Names(Vec<String>),
    Regexes(Vec<regex::Regex>),
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Names(names) => names.iter().any(|n| n == value),
            Matcher::Regexes(regexes) => regexes.iter().any(|r| r.is_match(value)),
        }
    }
}

impl ComponentConfig for HostmetricsConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.scrapers.is_empty() {
            problems.push((
                vec!["scrapers".into()],
                format!("list at least one scraper: {}", SCRAPERS.join(", ")),
            ));
        }
        if self.collection_interval.is_zero() {
            problems.push((
                vec!["collection_interval".into()],
                "must be more than zero".into(),
            ));
        }
        for (name, config) in &self.scrapers {
            let at = |key: &str| {
                let mut path = vec!["scrapers".to_string(), name.clone()];
                path.extend(key.split('.').filter(|k| !k.is_empty()).map(String::from));
                path
            };
            if !SCRAPERS.contains(&name.as_str()) {
                problems.push((
                    at(""),
                    format!("unknown scraper {name:?}; known: {}", SCRAPERS.join(", ")),
                ));
                continue;
            }
            let Some(config) = config else { continue };
            let filters = [
                ("include", &config.include),
                ("exclude", &config.exclude),
                ("include_mount_points", &config.include_mount_points),
                ("exclude_mount_points", &config.exclude_mount_points),
                ("include_fs_types", &config.include_fs_types),
                ("exclude_fs_types", &config.exclude_fs_types),
            ];
            for (key, filter) in filters {
                let Some(filter) = filter else { continue };
                let wanted = match (name.as_str(), key) {
                    ("process", "include" | "exclude") => "names",
                    ("network", "include" | "exclude") => "interfaces",
                    ("disk", "include" | "exclude") => "devices",
                    ("filesystem", "include_mount_points" | "exclude_mount_points") => {
                        "mount_points"
                    }
                    ("filesystem", "include_fs_types" | "exclude_fs_types") => "fs_types",
                    _ => {
                        problems.push((at(key), format!("the {name} scraper has no {key}")));
                        continue;
                    }
                };
                let given = [
                    ("names", &filter.names),
                    ("interfaces", &filter.interfaces),
                    ("devices", &filter.devices),
                    ("mount_points", &filter.mount_points),
                    ("fs_types", &filter.fs_types),
                ];
                for (list, values) in given {
                    if list != wanted && !values.is_empty() {
                        problems.push((
                            at(&format!("{key}.{list}")),
                            format!("{key} of the {name} scraper takes {wanted}"),
                        ));
                    }
                }
                match filter.match_type.as_deref() {
                    None | Some("strict") => {}
                    Some("regexp") => {
                        for pattern in filter.patterns() {
                            if let Err(e) = regex::Regex::new(pattern) {
                                problems.push((
                                    at(&format!("{key}.{wanted}")),
                                    format!("invalid regex {pattern:?}: {e}"),
                                ));
                            }
                        }
                    }
                    Some(other) => problems.push((
                        at(&format!("{key}.match_type")),
                        format!("match_type {other:?}: use strict or regexp"),
                    )),
                }
            }
        }
        problems
    }
}

pub(super) fn prepare(
    config: &HostmetricsConfig,
    id: &ComponentId,
    routes: Routes,
    context: &Context,
) -> Result<looping::Prepared<HostmetricsConfig>, Vec<String>> {
    // The root must hold a /proc to read.
    Host::new(&config.root_path).map_err(|e| vec![format!("root_path: {e}")])?;
    Ok(looping::Prepared {
        settings: config.clone(),
        routes,
        id: id.clone(),
        context: context.clone(),
        task: |looped| Box::pin(collect(looped)),
        describe: |config| {
            let scrapers: Vec<&str> = config.scrapers.keys().map(String::as_str).collect();
            format!(
                "scrapers {} every {:?}",
                scrapers.join(" "),
                config.collection_interval
            )
        },
    })
}

/// Collects every `collection_interval` until stopped.
async fn collect(mut looped: Looped<HostmetricsConfig>) {
    let mut wait = looped.settings.load().initial_delay;
    // The last error of each scraper, said once.
    let mut failing: HashMap<String, String> = HashMap::new();
    while looped.wait(wait).await {
        let config = looped.settings.load_full();
        wait = config.collection_interval;
        let root = config.root_path.clone();
        let scraped = tokio::task::spawn_blocking(move || scrape_all(&config, &root)).await;
        let Ok((request, errors)) = scraped else {
            continue;
        };
        for (scraper, error) in errors {
            if failing.get(&scraper) != Some(&error) {
                tracing::warn!(receiver = looped.name, scraper, %error, "hostmetrics: scraper failed; trying again at each collection");
                failing.insert(scraper, error);
            }
        }
        if request.resource_metrics.is_empty() {
            continue;
        }
        let batch = Batch::from_decoded(Decoded::Metrics(request));
        if let Err(e) = looped.output.push(batch).await {
            tracing::warn!(receiver = looped.name, error = %e, "hostmetrics: the pipeline refused a collection");
        }
    }
}

/// Runs every scraper of `config` once: the metrics, and the scrapers that failed with why.
fn scrape_all(
    config: &HostmetricsConfig,
    root: &std::path::Path,
) -> (ExportMetricsServiceRequest, Vec<(String, String)>) {
    let mut request = ExportMetricsServiceRequest::default();
    let mut errors = Vec::new();
    let host = match Host::new(root) {
        Ok(host) => host,
        Err(e) => return (request, vec![("all".into(), e)]),
    };
    let now = unix_nanos();
    let mut host_metrics = Vec::new();
    for (name, scraper) in &config.scrapers {
        let scraper = scraper.clone().unwrap_or_default();
        let scope = InstrumentationScope {
            name: format!("odigos-rs/hostmetrics/{name}"),
            ..Default::default()
        };
        let enabled = |m: &Measured| scraper.metrics.get(m.name).is_none_or(|t| t.enabled);
        if name == "process" {
            let names = Passes::of(&scraper.include, &scraper.exclude);
            match host.process(|executable| names.admits(executable)) {
                Ok(processes) => {
                    for (resource, measured) in processes {
                        let metrics = measured
                            .iter()
                            .filter(|m| enabled(m))
                            .map(|m| metric(m, now))
                            .collect();
                        let attributes = resource.into_iter().map(|(k, v)| text(k, v)).collect();
                        request
                            .resource_metrics
                            .push(resource_metrics(attributes, &scope, metrics));
                    }
                }
                Err(e) => errors.push((name.clone(), e)),
            }
            continue;
        }
        let measured = match name.as_str() {
            "cpu" => host.cpu(),
            "memory" => host.memory(),
            "load" => host.load(),
            "disk" => host.disk(),
            "filesystem" => host.filesystem(),
            "network" => host.network(),
            "paging" => host.paging(),
            "processes" => host.processes(),
            _ => continue,
        };
        match measured {
            Ok(measured) => {
                let filters = series_filters(name, &scraper);
                let keep = |attributes: &Attributes| {
                    filters.iter().all(|(key, passes)| {
                        let value = attributes.iter().find(|(k, _)| k == key);
                        value.is_none_or(|(_, v)| passes.admits(v))
                    })
                };
                let metrics = measured
                    .into_iter()
                    .filter(|m| enabled(m))
                    .map(|mut m| {
                        m.series.retain(|(attributes, _)| keep(attributes));
                        metric(&m, now)
                    })
                    .collect();
                host_metrics.push(ScopeMetrics {
                    scope: Some(scope),
                    metrics,
                    ..Default::default()
                });
            }
            Err(e) => errors.push((name.clone(), e)),
        }
    }
    if !host_metrics.is_empty() {
        request.resource_metrics.insert(
            0,
            ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics: host_metrics,
                ..Default::default()
            },
        );
    }
    (request, errors)
}

/// An include filter and an exclude filter, compiled once per collection.
struct Passes(Option<Matcher>, Option<Matcher>);

impl Passes {
    fn of(include: &Option<Filter>, exclude: &Option<Filter>) -> Passes {
        Passes(
            include.as_ref().map(Filter::matcher),
            exclude.as_ref().map(Filter::matcher),
        )
    }

    /// Whether `value` is included and not excluded.
    fn admits(&self, value: &str) -> bool {
        self.0.as_ref().is_none_or(|m| m.matches(value))
            && !self.1.as_ref().is_some_and(|m| m.matches(value))
    }
}

/// The filters of scraper `name` by the attribute of its series they look at.
fn series_filters(name: &str, scraper: &ScraperConfig) -> Vec<(&'static str, Passes)> {
    match name {
        "network" | "disk" => vec![("device", Passes::of(&scraper.include, &scraper.exclude))],
        "filesystem" => vec![
            (
                "mountpoint",
                Passes::of(&scraper.include_mount_points, &scraper.exclude_mount_points),
            ),
            (
                "type",
                Passes::of(&scraper.include_fs_types, &scraper.exclude_fs_types),
            ),
        ],
        _ => Vec::new(),
    }
}

fn metric(measured: &Measured, now: u64) -> Metric {
    let start = match measured.kind {
        Kind::Sum { start, .. } => start,
        Kind::Gauge => 0,
    };
    let data_points = measured
        .series
        .iter()
        .map(|(attributes, value)| NumberDataPoint {
            attributes: attributes.iter().map(|(k, v)| text(k, v.clone())).collect(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(match value {
                Number::Int(v) => number_data_point::Value::AsInt(*v),
                Number::Double(v) => number_data_point::Value::AsDouble(*v),
            }),
            ..Default::default()
        })
        .collect();
    Metric {
        name: measured.name.into(),
        description: measured.description.into(),
        unit: measured.unit.into(),
        data: Some(match measured.kind {
            Kind::Gauge => metric::Data::Gauge(Gauge { data_points }),
            Kind::Sum { monotonic, .. } => metric::Data::Sum(Sum {
                data_points,
                // Cumulative.
                aggregation_temporality: 2,
                is_monotonic: monotonic,
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
