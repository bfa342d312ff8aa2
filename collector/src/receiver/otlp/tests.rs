use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::codec::RawCodec;
use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::*;
use crate::consumer::{Consumer, Next};
use crate::receiver::Prepared as _;
use crate::telemetry::Registry;

/// Records what reaches the pipeline; refuses everything while `full` is set.
#[derive(Default)]
struct Capture {
    batches: Mutex<Vec<Batch>>,
    full: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Consumer for Capture {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(batch.refuse(ConsumeError::Exhausted("queue is full".into())));
        }
        batch.take_acks().accept();
        self.batches.lock().unwrap().push(batch);
        Ok(())
    }
}

impl Capture {
    fn items(&self) -> usize {
        self.batches.lock().unwrap().iter().map(Batch::items).sum()
    }
}

fn request(spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: format!("op-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Harness {
    capture: Arc<Capture>,
    running: Box<dyn receiver::Running>,
    grpc: String,
    http: String,
    registry: Registry,
}

/// Starts an OTLP receiver on ports of its choosing, feeding traces and logs (not metrics)
/// to a capture.
async fn start_receiver(max_body: usize) -> Harness {
    start_with(OtlpConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                max_recv_msg_size_mib: 1,
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                max_request_body_size: max_body,
                ..Default::default()
            }),
        },
    })
    .await
}

/// Starts an OTLP receiver on `config`, feeding traces and logs (not metrics) to a capture.
async fn start_with(config: OtlpConfig) -> Harness {
    let capture = Arc::new(Capture::default());
    let routes = Routes([
        Some(capture.clone() as Next),
        None,
        Some(capture.clone() as Next),
    ]);
    let context = Context::new();
    let prepared = prepare(&config, &ComponentId::new("otlp"), None, routes, &context)
        .await
        .unwrap();
    let (running, retired) = Box::new(prepared).commit(None);
    assert!(retired.is_empty());
    // `grpc 127.0.0.1:PORT`, `http 127.0.0.1:PORT`; empty for a protocol turned off.
    let url = |protocol: &str| {
        running
            .endpoints()
            .into_iter()
            .find(|e| e.starts_with(protocol))
            .map(|e| format!("http://{}", e.split_once(' ').unwrap().1))
            .unwrap_or_default()
    };
    Harness {
        grpc: url("grpc"),
        http: url("http"),
        capture,
        running,
        registry: context.registry,
    }
}

async fn grpc_export(endpoint: &str, signal: Signal, body: Bytes) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = ::http::uri::PathAndQuery::from_static(signal.grpc_path());
    client
        .unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|_| ())
}

struct Reply {
    status: u16,
    headers: ::http::HeaderMap,
    body: Bytes,
}

async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    send("POST", url, headers, body.into()).await
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = ::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn grpc_accepts_valid_and_explains_invalid_requests() {
    let h = start_receiver(1 << 20).await;
    let body: Bytes = request(3).encode_to_vec().into();
    grpc_export(&h.grpc, Signal::Traces, body.clone())
        .await
        .unwrap();
    assert_eq!(h.capture.items(), 3);

    let truncated = body.slice(..body.len() - 2);
    let status = grpc_export(&h.grpc, Signal::Traces, truncated)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("invalid OTLP protobuf at byte"),
        "{}",
        status.message()
    );

    let status = grpc_export(&h.grpc, Signal::Metrics, Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(
        status.message().contains("no metrics pipeline"),
        "{}",
        status.message()
    );

    let oversized: Bytes = request(40_000).encode_to_vec().into();
    assert!(oversized.len() > 1 << 20);
    let status = grpc_export(&h.grpc, Signal::Traces, oversized)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    h.capture
        .full
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let status = grpc_export(&h.grpc, Signal::Traces, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let details = odigos_proto::rpc::Status::decode(status.details()).unwrap();
    assert_eq!(
        details.retry_delay(),
        Some(Duration::from_secs(1)),
        "RetryInfo tells when"
    );

    assert_eq!(
        h.capture.items(),
        3,
        "nothing but the valid request reached the pipeline"
    );
    let accepted = h.registry.value(
        "otelcol_receiver_accepted_spans",
        &[("receiver", "otlp"), ("transport", "grpc")],
    );
    let refused = h.registry.value(
        "otelcol_receiver_refused_spans",
        &[("receiver", "otlp"), ("transport", "grpc")],
    );
    assert_eq!((accepted, refused), (Some(3), Some(3)));
    h.running.stop().await;
}

#[tokio::test]
async fn http_accepts_protobuf_json_and_gzip() {
    let h = start_receiver(1 << 20).await;
    let url = format!("{}/v1/traces", h.http);
    let body = request(2).encode_to_vec();

    let reply = post(&url, &[PROTOBUF], body.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/x-protobuf");
    assert!(reply.body.is_empty());

    let reply = post(&url, &[PROTOBUF, ("content-encoding", "gzip")], gzip(&body)).await;
    assert_eq!(reply.status, 200);

    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
        "attributes":[{"key":"http.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
    let reply = post(&url, &[JSON], json).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(&reply.body[..], b"{}");
    assert_eq!(h.capture.items(), 5);

    let last = h.capture.batches.lock().unwrap().pop().unwrap();
    let crate::Decoded::Traces(req) = last.into_decoded().unwrap() else {
        panic!("not traces")
    };
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "GET /cart");
    assert_eq!(span.trace_id[0], 0x5b);
    assert_eq!(span.start_time_unix_nano, 1544712660000000000);
    // Counted by service: the protobuf requests have no service.name, the JSON one has.
    let by_service = |service: &str| {
        let labels = [
            ("receiver", "otlp"),
            ("signal", "traces"),
            ("service", service),
        ];
        h.registry.value("odigos_receiver_accepted_items", &labels)
    };
    assert_eq!(by_service("checkout"), Some(1));
    assert_eq!(by_service(""), Some(4));
    h.running.stop().await;
}

#[tokio::test]
async fn http_refuses_bad_requests_with_clear_errors() {
    let h = start_receiver(64 << 10).await;
    let url = format!("{}/v1/traces", h.http);
    let body = request(2).encode_to_vec();
    let message = |reply: &Reply| {
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .map(|v| v["message"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };

    let reply = post(&url, &[("content-type", "text/plain")], body.clone()).await;
    assert_eq!(reply.status, 415);
    assert!(message(&reply).contains("unsupported content type \"text/plain\""));

    let reply = post(&url, &[PROTOBUF], body[..body.len() - 1].to_vec()).await;
    assert_eq!(reply.status, 400);
    // Protobuf requests get a protobuf google.rpc.Status back.
    let status = odigos_proto::rpc::Status::decode(reply.body).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("invalid OTLP protobuf"),
        "{}",
        status.message
    );

    let reply = post(&url, &[JSON], "{\"resourceSpans\": [{]").await;
    assert_eq!(reply.status, 400);
    assert!(
        message(&reply).contains("invalid OTLP JSON"),
        "{}",
        message(&reply)
    );

    // OTLP/JSON receivers must ignore fields they do not know, for forward compatibility.
    let reply = post(&url, &[JSON], "{\"resourceSpans\": [], \"futureField\": 1}").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let reply = post(&url, &[PROTOBUF, ("content-encoding", "br")], body.clone()).await;
    assert_eq!(reply.status, 415);

    let reply = post(
        &url,
        &[PROTOBUF, ("content-encoding", "gzip")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 400, "a body that is not gzip");

    let huge = request(2_000).encode_to_vec();
    let reply = post(&url, &[PROTOBUF], huge.clone()).await;
    assert_eq!(reply.status, 413);
    let reply = post(&url, &[PROTOBUF, ("content-encoding", "gzip")], gzip(&huge)).await;
    assert_eq!(reply.status, 413, "the limit applies after decompression");

    let reply = send("GET", &url, &[], Bytes::new()).await;
    assert_eq!(reply.status, 405);
    let reply = post(&format!("{}/v1/spans", h.http), &[PROTOBUF], body.clone()).await;
    assert_eq!(reply.status, 404);
    let reply = post(&format!("{}/v1/metrics", h.http), &[PROTOBUF], body.clone()).await;
    assert_eq!(reply.status, 404);

    h.capture
        .full
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let reply = post(&url, &[PROTOBUF], body.clone()).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(h.capture.items(), 0);
    h.running.stop().await;
}

/// Random and mutated bodies never crash either transport, never reach the pipeline unless
/// valid, and never disturb data already accepted.
#[tokio::test]
async fn fuzzed_bodies_get_errors_not_crashes() {
    let h = start_receiver(1 << 20).await;
    let valid = request(4).encode_to_vec();
    grpc_export(&h.grpc, Signal::Traces, valid.clone().into())
        .await
        .unwrap();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let url = format!("{}/v1/traces", h.http);
    let mut accepted = 4;
    for round in 0..300 {
        let mut body = valid.clone();
        match round % 3 {
            0 => body = (0..next() % 200).map(|_| next() as u8).collect(),
            1 => body.truncate((next() as usize) % body.len()),
            _ => {
                for _ in 0..3 {
                    let at = (next() as usize) % body.len();
                    body[at] = next() as u8;
                }
            }
        }
        let valid_items = odigos_proto::wire::scan(Signal::Traces, &body).map(|s| s.items);
        let grpc = grpc_export(&h.grpc, Signal::Traces, body.clone().into()).await;
        let http = post(&url, &[PROTOBUF], body.clone()).await;
        match valid_items {
            Ok(items) => {
                assert!(grpc.is_ok(), "{grpc:?}");
                assert_eq!(http.status, 200);
                accepted += 2 * items;
            }
            Err(_) => {
                assert_eq!(grpc.unwrap_err().code(), tonic::Code::InvalidArgument);
                assert_eq!(http.status, 400);
            }
        }
        let json: Vec<u8> = (0..next() % 100)
            .map(|_| b"{}[]\":,0a"[(next() % 9) as usize])
            .collect();
        assert!([200, 400].contains(&post(&url, &[JSON], json).await.status));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.capture.items(), accepted);
    h.running.stop().await;
}

fn cors_config() -> OtlpConfig {
    OtlpConfig {
        protocols: Protocols {
            grpc: None,
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                cors: Some(CorsConfig {
                    allowed_origins: vec![
                        "https://*.example.com".into(),
                        "http://localhost:3000".into(),
                    ],
                    allowed_headers: vec!["X-Tenant".into()],
                    max_age: 600,
                }),
                ..Default::default()
            }),
        },
    }
}

#[tokio::test]
async fn http_answers_cors_preflights_and_requests() {
    let h = start_with(cors_config()).await;
    let url = format!("{}/v1/traces", h.http);
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let preflight = |origin: &'static str, headers: &'static str| {
        let url = url.clone();
        async move {
            send(
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", headers),
                ],
                Bytes::new(),
            )
            .await
        }
    };

    let allowed = preflight("https://app.example.com", "content-type, x-tenant").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-methods").as_deref(),
        Some("POST")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-headers").as_deref(),
        Some("content-type, x-tenant")
    );
    assert_eq!(
        header(&allowed, "access-control-max-age").as_deref(),
        Some("600")
    );

    // Another origin, or a header not allowed: no permission, so the browser refuses.
    for (origin, headers) in [
        ("https://evil.test", "content-type"),
        ("https://example.com", "content-type"),
        ("http://localhost:3000", "x-secret"),
    ] {
        let refused = preflight(origin, headers).await;
        assert_eq!(refused.status, 204);
        assert_eq!(
            header(&refused, "access-control-allow-origin"),
            None,
            "{origin}"
        );
    }

    // The request itself carries the permission for an allowed origin only.
    let body = request(1).encode_to_vec();
    let reply = post(
        &url,
        &[PROTOBUF, ("origin", "http://localhost:3000")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        header(&reply, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(header(&reply, "vary").as_deref(), Some("origin"));
    let reply = post(&url, &[PROTOBUF, ("origin", "https://evil.test")], body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "access-control-allow-origin"), None);
    assert_eq!(h.capture.items(), 2);
    h.running.stop().await;
}

#[tokio::test]
async fn grpc_server_settings_change_on_the_same_socket() {
    let config = |streams: u32| OtlpConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                max_concurrent_streams: streams,
                ..Default::default()
            }),
            http: None,
        },
    };
    let h = start_with(config(0)).await;
    let body = Bytes::from(request(1).encode_to_vec());
    grpc_export(&h.grpc, Signal::Traces, body.clone())
        .await
        .unwrap();

    let capture = h.capture.clone();
    let routes = || {
        Routes([
            Some(capture.clone() as Next),
            None,
            Some(capture.clone() as Next),
        ])
    };
    let context = Context::new();
    let id = ComponentId::new("otlp");
    let running = h.running.as_any().downcast_ref::<Running>().unwrap();
    let prepared = prepare(&config(8), &id, Some(running), routes(), &context)
        .await
        .unwrap();
    assert_eq!(
        prepared.started.len(),
        1,
        "a new server for the new settings"
    );
    let (running, retired) = Box::new(prepared).commit(Some(h.running));
    assert_eq!(retired.len(), 1);
    for server in retired {
        server.stop().await;
    }
    // Same address, new server: requests still get through.
    assert_eq!(
        running.endpoints(),
        [format!("grpc {}", h.grpc.trim_start_matches("http://"))]
    );
    grpc_export(&h.grpc, Signal::Traces, body.clone())
        .await
        .unwrap();

    // Unchanged settings: nothing new is started.
    let same = running.as_any().downcast_ref::<Running>().unwrap();
    let prepared = prepare(&config(8), &id, Some(same), routes(), &context)
        .await
        .unwrap();
    assert!(prepared.started.is_empty());
    let (running, retired) = Box::new(prepared).commit(Some(running));
    assert!(retired.is_empty());
    grpc_export(&h.grpc, Signal::Traces, body).await.unwrap();
    assert_eq!(h.capture.items(), 3);
    running.stop().await;
}
