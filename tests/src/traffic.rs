//! Traffic with identity: a load generator whose every span has a unique id and records which
//! ones the collector acknowledged, and a sink that records every span it receives, so a test
//! can prove that nothing acknowledged was lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// What the sink saw of one span: the `tag` and `sent_after` attributes, its attribute keys, and
/// how many times.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub tag: String,
    pub sent_after: String,
    pub copies: usize,
    /// The span's attribute keys.
    pub keys: std::collections::BTreeSet<String>,
}

/// An OTLP/gRPC traces sink that records spans by id. Clones share the record.
#[derive(Clone, Default)]
pub struct Sink {
    pub spans: Arc<Mutex<HashMap<u64, Seen>>>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let id = u64::from_be_bytes(span.span_id[..8].try_into().unwrap_or_default());
                    let text = |key: &str| {
                        span.attributes
                            .iter()
                            .find(|kv| kv.key == key)
                            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                            .map(|v| match v {
                                any_value::Value::StringValue(s) => s.clone(),
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default()
                    };
                    let seen = spans.entry(id).or_default();
                    seen.tag = text("tag");
                    seen.sent_after = text("sent_after");
                    seen.copies += 1;
                    seen.keys = span.attributes.iter().map(|kv| kv.key.clone()).collect();
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Sink {
    /// Serves this sink on `port` (127.0.0.1) until the returned sender is dropped or fired.
    pub async fn serve(&self, port: u16) -> tokio::sync::oneshot::Sender<()> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = TraceServiceServer::new(self.clone())
            .max_decoding_message_size(64 << 20)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        stop
    }

    pub fn received(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}

/// A load generator over OTLP/gRPC; every span carries a unique id.
pub struct Load {
    next_id: AtomicU64,
    /// Ids the collector acknowledged.
    pub acked: Mutex<Vec<u64>>,
    pub failed: AtomicU64,
    /// The first distinct errors, for the report.
    pub errors: Mutex<Vec<String>>,
    /// Stamped on every span sent from now on as `sent_after`.
    pub generation: Mutex<String>,
    stop: AtomicBool,
}

impl Load {
    pub fn new() -> Arc<Load> {
        Arc::new(Load {
            next_id: AtomicU64::new(1),
            acked: Mutex::new(Vec::new()),
            failed: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            generation: Mutex::new(String::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Sends `spans_per_second` in requests of 100 spans from `workers` tasks until
    /// [`Load::stop`]; returns when they have all finished.
    pub fn start(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        workers: usize,
        spans_per_second: u64,
    ) -> tokio::task::JoinHandle<()> {
        let load = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(100.0 * workers as f64 / spans_per_second as f64);
            let mut tasks = Vec::new();
            for _ in 0..workers {
                let load = load.clone();
                tasks.push(tokio::spawn(
                    async move { load.worker(endpoint, period).await },
                ));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn acked(&self) -> Vec<u64> {
        self.acked.lock().unwrap().clone()
    }

    async fn worker(&self, endpoint: SocketAddr, period: Duration) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let mut client = TraceServiceClient::new(channel);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let first = self.next_id.fetch_add(100, Ordering::Relaxed);
            let ids: Vec<u64> = (first..first + 100).collect();
            let generation = self.generation.lock().unwrap().clone();
            match client.export(request(&ids, &generation)).await {
                Ok(_) => self.acked.lock().unwrap().extend(ids),
                Err(status) => {
                    self.failed.fetch_add(100, Ordering::Relaxed);
                    let message = format!("{:?}: {}", status.code(), status.message());
                    let mut errors = self.errors.lock().unwrap();
                    if errors.len() < 5 && !errors.contains(&message) {
                        errors.push(message);
                    }
                }
            }
        }
    }
}

fn request(ids: &[u64], generation: &str) -> ExportTraceServiceRequest {
    let string = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let spans = ids
        .iter()
        .map(|id| Span {
            trace_id: [id.to_be_bytes(), id.to_le_bytes()].concat(),
            span_id: id.to_be_bytes().to_vec(),
            name: "GET /orders".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                string("sent_after", generation),
                string("http.route", "/orders"),
                string("user.id", "u-123"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "load")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
