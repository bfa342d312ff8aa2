//! No kubelet runs here: a local HTTPS server stands in for one, serving a `/stats/summary`
//! recorded from the kubelet of a real single-node cluster (one pod, `web`, with an emptyDir
//! volume `cache`).

use std::sync::Mutex;

use hyper_util::rt::TokioIo;

use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::ConsumeError;
use crate::consumer::{Consumer, Next};
use crate::exporter::tls::testing;
use crate::receiver;
use crate::receiver::Prepared as _;
use odigos_proto::otlp::common::v1::any_value;

const SUMMARY: &str = include_str!("summary.json");

#[derive(Default)]
struct Capture(Mutex<Vec<ExportMetricsServiceRequest>>);

#[async_trait]
impl Consumer for Capture {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        batch.take_acks().accept();
        let Ok(Decoded::Metrics(metrics)) = batch.into_decoded() else {
            panic!("metrics")
        };
        self.0.lock().unwrap().push(metrics);
        Ok(())
    }
}

/// A metric's points as `(resource's pod or node or container, value)`.
fn points(request: &ExportMetricsServiceRequest, name: &str) -> Vec<(String, f64)> {
    let mut found = Vec::new();
    for resource in &request.resource_metrics {
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        let who: Vec<String> = attributes
            .iter()
            .filter(|kv| kv.key != "k8s.pod.uid")
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                },
            )
            .collect();
        for metric in resource.scope_metrics.iter().flat_map(|s| &s.metrics) {
            if metric.name != name {
                continue;
            }
            let data_points = match &metric.data {
                Some(metric::Data::Gauge(g)) => &g.data_points,
                Some(metric::Data::Sum(s)) => &s.data_points,
                _ => continue,
            };
            for point in data_points {
                let value = match point.value {
                    Some(number_data_point::Value::AsInt(v)) => v as f64,
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    None => f64::NAN,
                };
                found.push((who.join("/"), value));
            }
        }
    }
    found
}

#[test]
fn a_summary_becomes_the_collectors_metrics() {
    let summary: Summary = serde_json::from_str(SUMMARY).unwrap();
    let config = KubeletstatsConfig {
        metric_groups: vec![
            MetricGroup::Node,
            MetricGroup::Pod,
            MetricGroup::Container,
            MetricGroup::Volume,
        ],
        ..KubeletstatsConfig::default()
    };
    let request = metrics(&summary, &config, 1);
    assert_eq!(
        points(&request, "k8s.node.memory.working_set"),
        [("odigos-node".to_string(), 6_263_234_560.0)]
    );
    assert_eq!(
        points(&request, "k8s.node.filesystem.capacity"),
        [("odigos-node".to_string(), 270_553_174_016.0)]
    );
    let eth0: Vec<_> = points(&request, "k8s.node.network.io");
    assert!(
        eth0.contains(&("odigos-node".to_string(), 1_588_003_262.0)),
        "{eth0:?}"
    );
    assert_eq!(
        points(&request, "k8s.pod.cpu.time"),
        [("web/default".to_string(), 0.045_211_415)]
    );
    assert_eq!(
        points(&request, "k8s.pod.memory.rss"),
        [("web/default".to_string(), 86_016.0)]
    );
    assert_eq!(
        points(&request, "container.memory.working_set"),
        [("web/default/app".to_string(), 450_560.0)]
    );
    assert_eq!(
        points(&request, "container.filesystem.usage"),
        [("web/default/app".to_string(), 45_056.0)]
    );
    assert_eq!(
        points(&request, "k8s.volume.available"),
        [
            ("web/default/cache".to_string(), 9_838_657_536.0),
            (
                "web/default/default-token-cw4sk".to_string(),
                12_638_015_488.0
            )
        ]
    );
    // A cumulative CPU time starts when its container did.
    let container = request
        .resource_metrics
        .iter()
        .flat_map(|r| r.scope_metrics.iter().flat_map(|s| &s.metrics))
        .find(|m| m.name == "container.cpu.time")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &container.data else {
        panic!("a sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        rfc3339_nanos("2026-11-30T13:08:56Z").unwrap()
    );

    // The default groups leave volumes out; a metric turned off is not sent.
    let config: KubeletstatsConfig = crate::yaml::from_value(
        crate::yaml::parse(
            "auth_type: serviceAccount\nmetrics: {k8s.pod.cpu.time: {enabled: false}}",
        )
        .unwrap(),
    )
    .unwrap();
    let request = metrics(&summary, &config, 1);
    assert!(points(&request, "k8s.volume.available").is_empty());
    assert!(points(&request, "k8s.pod.cpu.time").is_empty());
    assert!(!points(&request, "k8s.pod.cpu.usage").is_empty());
}

/// What the stand-in kubelet saw: the `Authorization` header of each request.
type Seen = Arc<Mutex<Vec<String>>>;

/// Serves `body` over TLS at `/stats/summary` to requests with the bearer token `token`.
async fn kubelet(
    server: Arc<rustls::ServerConfig>,
    token: &'static str,
    body: &'static str,
) -> (std::net::SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Seen::default();
    let recorded = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(stream).await else {
                continue;
            };
            let recorded = recorded.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let authorization = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    recorded.lock().unwrap().push(authorization.clone());
                    let ok = authorization == format!("Bearer {token}")
                        && request.uri().path() == "/stats/summary";
                    let response = http::Response::builder()
                        .status(if ok { 200 } else { 401 })
                        .body(Full::new(Bytes::from(if ok {
                            body
                        } else {
                            "Unauthorized"
                        })))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });
    (address, seen)
}

async fn start(
    yaml: &str,
    token_file: &std::path::Path,
    capture: &Arc<Capture>,
) -> Box<dyn receiver::Running> {
    let config: KubeletstatsConfig =
        crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let routes = Routes([None, Some(capture.clone() as Next), None]);
    let prepared = prepare_with(
        &config,
        Some(token_file.to_path_buf()),
        &ComponentId::new("kubeletstats"),
        routes,
        &Context::new(),
    )
    .unwrap();
    Box::new(prepared).commit(None).0
}

#[tokio::test]
async fn the_kubelet_is_asked_with_the_service_account_token() {
    let pki = testing::pki(&["127.0.0.1"]);
    let (address, seen) = kubelet(pki.server.clone(), "sa-token", SUMMARY).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "sa-token\n").unwrap();
    let capture = Arc::new(Capture::default());
    let running = start(
        &format!(
            "endpoint: 127.0.0.1:{}\nauth_type: serviceAccount\nca_file: {}\ncollection_interval: 50ms\ninitial_delay: 0s",
            address.port(),
            pki.ca_file.display()
        ),
        &token,
        &capture,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while capture.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    assert_eq!(seen.lock().unwrap()[0], "Bearer sa-token");
    let request = &capture.0.lock().unwrap()[0];
    assert_eq!(
        points(request, "container.memory.working_set"),
        [("web/default/app".to_string(), 450_560.0)]
    );
}

#[tokio::test]
async fn a_kubelet_that_refuses_or_answers_garbage_is_said_and_asked_again() {
    let pki = testing::pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong").unwrap();
    let settings = |address: std::net::SocketAddr| {
        let yaml = format!(
            "endpoint: 127.0.0.1:{}\nauth_type: serviceAccount\nca_file: {}",
            address.port(),
            pki.ca_file.display()
        );
        let config: KubeletstatsConfig =
            crate::yaml::from_value(crate::yaml::parse(&yaml).unwrap()).unwrap();
        Settings::new(&config, Some(token.clone())).unwrap()
    };
    let (refusing, _) = kubelet(pki.server.clone(), "right", SUMMARY).await;
    let error = settings(refusing).summary().await.unwrap_err();
    assert!(error.contains("answered 401 Unauthorized"), "{error}");

    std::fs::write(&token, "right").unwrap();
    let (garbage, _) = kubelet(pki.server.clone(), "right", "<html>").await;
    let error = settings(garbage).summary().await.unwrap_err();
    assert!(error.contains("what is not a kubelet summary"), "{error}");

    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = settings(down).summary().await.unwrap_err();
    assert!(
        error.contains(&format!("127.0.0.1:{}", down.port())),
        "{error}"
    );
}

#[test]
fn bad_settings_are_named() {
    let problems = crate::receiver::problems::<KubeletstatsConfig>;
    assert_eq!(
        problems("auth_type: tls"),
        [
            "auth_type: tls presents a client certificate: give cert_file and key_file (or use serviceAccount)"
        ]
    );
    assert!(problems("auth_type: none\nmetric_groups: []")[0].starts_with("metric_groups"));
    let unknown = crate::yaml::from_value::<KubeletstatsConfig>(
        crate::yaml::parse("auth_type: kubeConfig").unwrap(),
    );
    assert!(unknown.is_err());
}
