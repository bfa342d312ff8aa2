//! Traffic with identity: a load generator whose every span has a unique id and records which
//! ones the collector acknowledged, and a sink that records every span it receives, so a test
//! can prove that nothing acknowledged was lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

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
    pub fn received(&self) -> usize {
        self.spans.lock().unwrap().len()
    }

    /// How many of `ids` (hex span ids) it has not received.
    pub fn missing(&self, ids: &[String]) -> usize {
        let spans = self.spans.lock().unwrap();
        ids.iter()
            .filter(|id| u64::from_str_radix(id, 16).map_or(true, |id| !spans.contains_key(&id)))
            .count()
    }
}

/// What a [`Backend`] does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refused while it never listened; after that, accepted and closed at once.
    Down,
    /// Accepted and never answered.
    Hung,
    /// Served: an OTLP/gRPC traces sink.
    Up,
}

/// A destination at a fixed address that the test switches between down, hung and up. The
/// address is held from the start, so nothing else can take it.
pub struct Backend {
    pub sink: Sink,
    pub port: u16,
    mode: tokio::sync::watch::Sender<Mode>,
    /// The bound socket until it first listens.
    unlistened: Mutex<Option<TcpSocket>>,
}

impl Backend {
    pub fn new(mode: Mode) -> Backend {
        Backend::with_sink(mode, Sink::default())
    }

    /// A backend that records into `sink`, which other backends may share.
    pub fn with_sink(mode: Mode, sink: Sink) -> Backend {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let backend = Backend {
            sink,
            port: socket.local_addr().unwrap().port(),
            mode: tokio::sync::watch::Sender::new(Mode::Down),
            unlistened: Mutex::new(Some(socket)),
        };
        backend.set(mode);
        backend
    }

    /// Switches to `mode`: connections held while hung are closed when it is left, and
    /// connections served while up are closed when it is left.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode == Mode::Down {
            return;
        }
        let Some(socket) = self.unlistened.lock().unwrap().take() else {
            return;
        };
        let listener = socket.listen(1024).unwrap();
        tokio::spawn(serve(listener, self.mode.subscribe(), self.sink.clone()));
    }
}

/// Accepts connections and does with each what the current mode says, until the backend
/// goes.
async fn serve(listener: TcpListener, mut mode: tokio::sync::watch::Receiver<Mode>, sink: Sink) {
    type Connections = tokio::sync::mpsc::Sender<std::io::Result<tokio::net::TcpStream>>;
    let mut held = Vec::new();
    // The server of the current up period: its connections, and what stops it.
    let mut serving: Option<(Connections, tokio::sync::oneshot::Sender<()>)> = None;
    loop {
        let current = *mode.borrow_and_update();
        if current != Mode::Hung {
            held.clear();
        }
        if current != Mode::Up {
            serving = None;
        } else if serving.is_none() {
            let (connections, incoming) = tokio::sync::mpsc::channel(64);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let service = TraceServiceServer::new(sink.clone())
                .max_decoding_message_size(64 << 20)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::ReceiverStream::new(incoming),
                        async {
                            let _ = stopped.await;
                        },
                    ),
            );
            serving = Some((connections, stop));
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((connection, _)) = accepted else { continue };
                match (current, &serving) {
                    (Mode::Up, Some((connections, _))) => {
                        let _ = connections.send(Ok(connection)).await;
                    }
                    (Mode::Hung, _) => held.push(connection),
                    _ => drop(connection),
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
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
        Load::starting_at(1)
    }

    /// A load whose span ids start at `first`, so that two loads never share an id.
    pub fn starting_at(first: u64) -> Arc<Load> {
        Arc::new(Load {
            next_id: AtomicU64::new(first),
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
