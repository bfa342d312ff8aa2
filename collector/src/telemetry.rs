//! The collector's own metrics: counters and gauges per component, served as Prometheus text.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, such as a queue size.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

enum Value {
    Counter(Counter),
    Gauge(Gauge),
}

struct Series {
    name: String,
    help: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// Whether log lines are written as JSON (`service.telemetry.logs.encoding: json`): the
/// process's log output reads it for every line, so a new config switches it in place.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
}

pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// All metrics of one collector process.
#[derive(Clone, Default)]
pub struct Registry {
    series: Arc<Mutex<Vec<Series>>>,
    /// `service.telemetry.resource`: served as the labels of `target_info`.
    resource: Arc<Mutex<Vec<(String, String)>>>,
}

impl Registry {
    /// Registers a counter; registering the same name and labels again returns the same counter,
    /// so a component rebuilt with the same id keeps counting from where it was.
    pub fn counter(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        let mut series = self.series.lock().unwrap();
        if let Some(Series {
            value: Value::Counter(c),
            ..
        }) = find(&series, name, labels)
        {
            return c.clone();
        }
        let counter = Counter::default();
        series.push(new_series(
            name,
            help,
            labels,
            Value::Counter(counter.clone()),
        ));
        counter
    }

    pub fn gauge(&self, name: &str, help: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let mut series = self.series.lock().unwrap();
        if let Some(Series {
            value: Value::Gauge(g),
            ..
        }) = find(&series, name, labels)
        {
            return g.clone();
        }
        let gauge = Gauge::default();
        series.push(new_series(name, help, labels, Value::Gauge(gauge.clone())));
        gauge
    }

    /// The value of the counter or gauge with this name and labels, if registered.
    pub fn value(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<i64> {
        let series = self.series.lock().unwrap();
        find(&series, name, labels).map(|s| match &s.value {
            Value::Counter(c) => c.get() as i64,
            Value::Gauge(g) => g.get(),
        })
    }

    /// Sets the attributes that describe this collector.
    pub fn set_resource(&self, attributes: Vec<(String, String)>) {
        *self.resource.lock().unwrap() = attributes;
    }

    /// The Prometheus text exposition of every series, after `target_info` with the resource
    /// attributes when there are some.
    pub fn render(&self) -> String {
        let mut series: Vec<_> = self.series.lock().unwrap().iter().map(snapshot).collect();
        series.sort();
        let mut out = String::new();
        let resource = self.resource.lock().unwrap().clone();
        if !resource.is_empty() {
            let labels: Vec<String> = resource
                .iter()
                .map(|(k, v)| format!("{}=\"{}\"", label_name(k), escape_label(v)))
                .collect();
            let _ = writeln!(
                out,
                "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{{{}}} 1",
                labels.join(",")
            );
        }
        let mut last = "";
        for (name, help, kind, labels, value) in &series {
            if name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                last = name;
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        out
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::routing::get;
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let body = self.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn find<'a>(
    series: &'a [Series],
    name: &str,
    labels: &[(&'static str, &str)],
) -> Option<&'a Series> {
    series.iter().find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && s.labels
                .iter()
                .zip(labels)
                .all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
    })
}

fn new_series(
    name: &str,
    help: &'static str,
    labels: &[(&'static str, &str)],
    value: Value,
) -> Series {
    let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    Series {
        name: name.to_string(),
        help,
        labels,
        value,
    }
}

/// A Prometheus label name for an attribute key: `service.name` → `service_name`.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// A label value as the text format writes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn snapshot(s: &Series) -> (String, &'static str, &'static str, String, i64) {
    let labels = if s.labels.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['"', '\\'], "_")))
            .collect();
        format!("{{{}}}", parts.join(","))
    };
    let (kind, value) = match &s.value {
        Value::Counter(c) => ("counter", c.get() as i64),
        Value::Gauge(g) => ("gauge", g.get()),
    };
    (s.name.clone(), s.help, kind, labels, value)
}

/// Whether a component works, as it last found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentHealth {
    pub healthy: bool,
    /// The most recent error, kept after recovery for context.
    pub last_error: Option<String>,
    /// When it last turned healthy or failing; `None` while it has never reported.
    pub since: Option<SystemTime>,
    /// Failed attempts since it last turned failing.
    pub failures: u64,
    /// What it says of its work: an exporter its queue and its losses.
    pub detail: String,
}

impl ComponentHealth {
    /// A component that runs and has nothing to report.
    pub fn running() -> ComponentHealth {
        ComponentHealth {
            healthy: true,
            last_error: None,
            since: None,
            failures: 0,
            detail: String::new(),
        }
    }
}

/// Health of the components that report it (exporters report every send), by
/// `section.id` (`exporters.otlp`).
#[derive(Clone, Default)]
pub struct HealthBoard {
    entries: Arc<Mutex<std::collections::BTreeMap<String, ComponentHealth>>>,
}

impl HealthBoard {
    pub fn report(&self, component: &str, outcome: Result<(), &str>) {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries
            .entry(component.to_string())
            .or_insert_with(ComponentHealth::running);
        if entry.since.is_none() || entry.healthy != outcome.is_ok() {
            entry.since = Some(SystemTime::now());
            entry.failures = 0;
        }
        entry.healthy = outcome.is_ok();
        if let Err(error) = outcome {
            entry.failures += 1;
            entry.last_error = Some(error.to_string());
        }
    }

    pub fn get(&self, component: &str) -> Option<ComponentHealth> {
        self.entries.lock().unwrap().get(component).cloned()
    }
}

/// Binds the metrics endpoint; `address` is `host:port`.
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = crate::receiver::resolve(address).await?;
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let registry = Registry::default();
        let accepted = registry.counter(
            "otelcol_receiver_accepted_spans",
            "Spans accepted",
            &[("receiver", "otlp"), ("transport", "grpc")],
        );
        accepted.add(5);
        registry
            .counter(
                "otelcol_receiver_accepted_spans",
                "",
                &[("receiver", "otlp"), ("transport", "grpc")],
            )
            .add(2);
        registry
            .gauge(
                "otelcol_exporter_queue_size",
                "Batches queued",
                &[("exporter", "otlp")],
            )
            .set(3);
        let text = registry.render();
        assert!(
            text.contains("# TYPE otelcol_receiver_accepted_spans counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"} 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("otelcol_exporter_queue_size{exporter=\"otlp\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("target_info"), "{text}");
        registry.set_resource(vec![
            ("service.name".into(), "gateway".into()),
            ("k8s.pod.uid".into(), "a\"b".into()),
        ]);
        let text = registry.render();
        assert!(
            text.starts_with(
                "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{service_name=\"gateway\",k8s_pod_uid=\"a\\\"b\"} 1\n"
            ),
            "{text}"
        );
    }
}
