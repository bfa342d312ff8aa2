//! Throughput from the collectors' own metrics. Every few seconds the control plane reads the
//! Prometheus endpoint each collector reports (`listening ADDR` on its
//! `service.telemetry.metrics` component) and turns the counters into rates, items per second:
//! per collector (received, sent, failed), per gateway exporter, and per `service.name` as the
//! node collectors received it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::opamp::Fleet;
use crate::reconciler::ROLE;

/// How often the collectors are read, and how long one read may take.
const EVERY: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A metrics page larger than this is cut off where it reaches it.
const MAX_PAGE: u64 = 4 << 20;

/// Rates, in items per second, over the last interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    /// By agent uid (hex).
    pub collectors: BTreeMap<String, CollectorRates>,
    /// By gateway exporter id (`otlp/default.backend`), summed over the gateways.
    pub exporters: BTreeMap<String, ExporterRates>,
    /// By `service.name` (empty when a resource has none), as the node collectors took it in.
    pub services: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectorRates {
    /// Accepted by its receivers.
    pub received: f64,
    /// Delivered by its exporters.
    pub sent: f64,
    /// Dropped after sending failed.
    pub failed: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExporterRates {
    pub sent: f64,
    pub failed: f64,
}

/// The latest rates, kept up to date while anyone holds this.
pub struct Throughput {
    rates: watch::Receiver<Arc<Rates>>,
}

impl Throughput {
    /// Starts reading the collectors of `fleet`; stops once this is dropped.
    pub fn start(fleet: Arc<Fleet>) -> Throughput {
        let (publish, rates) = watch::channel(Arc::new(Rates::default()));
        tokio::spawn(async move {
            let mut previous: HashMap<String, Sample> = HashMap::new();
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = publish.closed() => return,
                }
                let targets = fleet.metrics_endpoints();
                let reads = targets.iter().map(|(_, address)| read(address));
                let pages = futures_util::future::join_all(reads).await;
                let mut samples = HashMap::new();
                for ((uid, _), page) in targets.into_iter().zip(pages) {
                    if let Some(page) = page {
                        let node = fleet.agent(&uid).is_some_and(|a| {
                            let role = a.identifying.get(ROLE).or(a.non_identifying.get(ROLE));
                            role.is_some_and(|r| r == "node")
                        });
                        samples.insert(uid, Sample::of(&page, node));
                    }
                }
                publish.send_replace(Arc::new(rates_between(&previous, &samples)));
                previous = samples;
            }
        });
        Throughput { rates }
    }

    pub fn rates(&self) -> Arc<Rates> {
        self.rates.borrow().clone()
    }
}

/// One reading of a collector's counters.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    node: bool,
    received: f64,
    /// By exporter id: (sent, failed).
    exporters: HashMap<String, (f64, f64)>,
    services: HashMap<String, f64>,
}

impl Sample {
    /// Reads the counters that make throughput out of a Prometheus text page.
    fn of(page: &str, node: bool) -> Sample {
        let mut sample = Sample {
            at: Instant::now(),
            node,
            received: 0.0,
            exporters: HashMap::new(),
            services: HashMap::new(),
        };
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, labels, value)) = series(line) else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            if name.starts_with("otelcol_receiver_accepted_") {
                sample.received += value;
            } else if name.starts_with("otelcol_exporter_sent_") {
                sample.exporters.entry(label("exporter")).or_default().0 += value;
            } else if name.starts_with("otelcol_exporter_send_failed_") {
                sample.exporters.entry(label("exporter")).or_default().1 += value;
            } else if name == "odigos_receiver_accepted_items" {
                *sample.services.entry(label("service")).or_default() += value;
            }
        }
        sample
    }
}

/// A series' labels, as (key, value).
type Labels<'a> = Vec<(&'a str, String)>;

/// `name{key="value",...} number` → its parts; `None` for anything else.
fn series(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    let (head, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut text = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                (i, '"') => break i,
                (_, c) => text.push(c),
            }
        };
        labels.push((key.trim_start_matches(','), text));
        rest = &after[end + 1..];
    }
    Some((name, labels, value))
}

/// What grew between two readings of each collector, per second. A counter that went down
/// (its collector restarted) counts from zero.
fn rates_between(previous: &HashMap<String, Sample>, now: &HashMap<String, Sample>) -> Rates {
    let mut rates = Rates::default();
    for (uid, sample) in now {
        let Some(before) = previous.get(uid) else {
            continue;
        };
        let seconds = sample.at.duration_since(before.at).as_secs_f64();
        if seconds <= 0.0 {
            continue;
        }
        let rate = |now: f64, then: Option<f64>| {
            let grown = match then {
                Some(then) if now >= then => now - then,
                _ => now,
            };
            grown / seconds
        };
        let mut collector = CollectorRates {
            received: rate(sample.received, Some(before.received)),
            ..CollectorRates::default()
        };
        for (exporter, &(sent, failed)) in &sample.exporters {
            let then = before.exporters.get(exporter);
            let sent = rate(sent, then.map(|t| t.0));
            let failed = rate(failed, then.map(|t| t.1));
            collector.sent += sent;
            collector.failed += failed;
            let total = rates.exporters.entry(exporter.clone()).or_default();
            total.sent += sent;
            total.failed += failed;
        }
        if sample.node {
            for (service, &items) in &sample.services {
                let then = before.services.get(service).copied();
                *rates.services.entry(service.clone()).or_default() += rate(items, then);
            }
        }
        rates.collectors.insert(uid.clone(), collector);
    }
    rates
}

/// `GET http://ADDRESS/metrics`, the body as text; `None` when it cannot be read in time.
async fn read(address: &str) -> Option<String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(MAX_PAGE)
            .read_to_end(&mut response)
            .await
            .ok()?;
        let response = String::from_utf8(response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?;
        (status == "200").then(|| body.to_string())
    };
    tokio::time::timeout(READ_TIMEOUT, get).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_with_escaped_labels() {
        let (name, labels, value) =
            series(r#"odigos_receiver_accepted_items{receiver="otlp",service="a \"b\"",signal="traces"} 12"#)
                .unwrap();
        assert_eq!(name, "odigos_receiver_accepted_items");
        assert_eq!(
            labels,
            [
                ("receiver", "otlp".to_string()),
                ("service", "a \"b\"".to_string()),
                ("signal", "traces".to_string())
            ]
        );
        assert_eq!(value, 12.0);
        assert_eq!(series("up 1"), Some(("up", Vec::new(), 1.0)));
        assert_eq!(series("garbage"), None);
    }

    #[test]
    fn rates_are_growth_per_second_and_a_restart_counts_from_zero() {
        let page = |received: u32, sent: u32, service: u32| {
            format!(
                "otelcol_receiver_accepted_spans{{receiver=\"otlp\"}} {received}\n\
                 otelcol_exporter_sent_spans{{exporter=\"otlp/default.b\"}} {sent}\n\
                 otelcol_exporter_send_failed_spans{{exporter=\"otlp/default.b\"}} 0\n\
                 odigos_receiver_accepted_items{{service=\"checkout\",signal=\"traces\"}} {service}\n"
            )
        };
        let mut before = Sample::of(&page(100, 90, 100), true);
        before.at = Instant::now() - Duration::from_secs(2);
        let previous = HashMap::from([("n".to_string(), before)]);
        let now = HashMap::from([("n".to_string(), Sample::of(&page(300, 10, 300), true))]);
        let rates = rates_between(&previous, &now);
        let node = &rates.collectors["n"];
        assert!((node.received - 100.0).abs() < 1.0, "{rates:?}");
        // 90 → 10: restarted, so 10 in the interval.
        assert!((node.sent - 5.0).abs() < 0.1, "{rates:?}");
        assert!(
            (rates.services["checkout"] - 100.0).abs() < 1.0,
            "{rates:?}"
        );
        assert!((rates.exporters["otlp/default.b"].sent - 5.0).abs() < 0.1);
    }
}
