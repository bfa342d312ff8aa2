//! The benchmark payload: pre-encoded OTLP trace export requests of a fixed, documented shape.
//!
//! Each request holds one resource (`service.name` and three more attributes), one scope and
//! [`SPANS_PER_REQUEST`] spans. Every span has random trace, span and parent span ids, a name, a
//! kind, start and end times, a status and ten attributes (HTTP server, database and application
//! keys of string, int, bool and double type), so it encodes to about 440 bytes, close to what an
//! instrumented web service emits. Requests are encoded once, before any load is sent, so the
//! generator spends its time on the network and not on protobuf encoding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use odigos_proto::otlp::resource::v1::Resource;
use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Spans in every generated request.
pub const SPANS_PER_REQUEST: usize = 100;

const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const STATUS_CODES: [i64; 8] = [200, 200, 200, 200, 200, 201, 404, 500];
const ROUTES: [&str; 4] = [
    "/orders/{id}/items",
    "/orders/{id}/payment",
    "/carts/{id}/checkout",
    "/orders/{id}/shipping",
];

/// A set of distinct encoded requests that load workers take turns sending.
#[derive(Debug)]
pub struct Payloads {
    requests: Vec<Bytes>,
    next: AtomicUsize,
    span_bytes: f64,
}

impl Payloads {
    /// Builds and encodes `count` distinct requests; the seed makes the set reproducible.
    pub fn generate(count: usize, seed: u64) -> Payloads {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let now = u64::try_from(now).unwrap_or(u64::MAX);
        let mut span_bytes = 0usize;
        let mut requests = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let request = build_request(&mut rng, now);
            span_bytes += request.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(Message::encoded_len)
                .sum::<usize>();
            requests.push(Bytes::from(request.encode_to_vec()));
        }
        let spans = requests.len() * SPANS_PER_REQUEST;
        Payloads {
            requests,
            next: AtomicUsize::new(0),
            span_bytes: span_bytes as f64 / spans as f64,
        }
    }

    /// The next request in round-robin order; cloning `Bytes` does not copy the payload.
    pub fn next(&self) -> Bytes {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.requests.len();
        self.requests[i].clone()
    }

    pub fn requests(&self) -> &[Bytes] {
        &self.requests
    }

    /// Mean encoded size of one span message, without the request's framing.
    pub fn avg_span_bytes(&self) -> f64 {
        self.span_bytes
    }

    /// Mean encoded size of one whole request.
    pub fn avg_request_bytes(&self) -> f64 {
        self.requests.iter().map(Bytes::len).sum::<usize>() as f64 / self.requests.len() as f64
    }
}

/// One request of the documented shape, with span start times in the second before `now`.
pub fn build_request(rng: &mut StdRng, now_unix_nanos: u64) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            string_kv("service.name", "checkout"),
            string_kv("service.version", "1.4.2"),
            string_kv("deployment.environment.name", "production"),
            string_kv("host.name", &format!("node-{}", rng.random_range(1..=32))),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "io.opentelemetry.http".to_owned(),
        version: "2.3.0".to_owned(),
        ..Default::default()
    };
    let spans = (0..SPANS_PER_REQUEST)
        .map(|_| build_span(rng, now_unix_nanos))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn build_span(rng: &mut StdRng, now: u64) -> Span {
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let route = ROUTES[rng.random_range(0..ROUTES.len())];
    let code = STATUS_CODES[rng.random_range(0..STATUS_CODES.len())];
    let order_id: u32 = rng.random_range(100_000..1_000_000);
    let duration_s: f64 = rng.random_range(0.0005..0.25);
    let start = now.saturating_sub(rng.random_range(0..1_000_000_000));
    let end = start + (duration_s * 1e9) as u64;
    let status = if code >= 500 {
        Status {
            code: status::StatusCode::Error as i32,
            message: "upstream timeout".to_owned(),
        }
    } else {
        Status {
            code: status::StatusCode::Ok as i32,
            message: String::new(),
        }
    };
    let url = route.replace("{id}", &order_id.to_string());
    Span {
        trace_id: rng.random::<[u8; 16]>().to_vec(),
        span_id: rng.random::<[u8; 8]>().to_vec(),
        parent_span_id: rng.random::<[u8; 8]>().to_vec(),
        name: format!("{method} {route}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![
            string_kv("http.request.method", method),
            string_kv("http.route", route),
            string_kv("url.full", &format!("https://shop.example.com{url}")),
            int_kv("http.response.status_code", code),
            int_kv("server.port", 8443),
            bool_kv("http.cache_hit", rng.random_bool(0.3)),
            double_kv(
                "app.order.total",
                f64::from(rng.random_range(500..50_000u32)) / 100.0,
            ),
            string_kv("db.system", "postgresql"),
            string_kv("db.statement", "SELECT * FROM orders WHERE id = $1"),
            int_kv("db.response.returned_rows", rng.random_range(0..50)),
        ],
        status: Some(status),
        ..Default::default()
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn bool_kv(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

fn double_kv(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use odigos_proto::Signal;
    use odigos_proto::wire;

    use super::*;

    #[test]
    fn spans_encode_to_about_440_bytes() {
        let payloads = Payloads::generate(8, 1);
        let bytes = payloads.avg_span_bytes();
        assert!(
            (400.0..480.0).contains(&bytes),
            "average span is {bytes} bytes"
        );
    }

    #[test]
    fn requests_are_distinct() {
        let payloads = Payloads::generate(16, 2);
        let distinct: HashSet<&Bytes> = payloads.requests().iter().collect();
        assert_eq!(distinct.len(), 16);
    }

    #[test]
    fn wire_scan_counts_every_span() {
        let payloads = Payloads::generate(4, 3);
        for request in payloads.requests() {
            let scan = wire::scan(Signal::Traces, request).expect("valid request");
            assert_eq!(scan.items, SPANS_PER_REQUEST);
            assert_eq!(scan.resources, 1);
        }
    }

    #[test]
    fn next_cycles_through_all_requests() {
        let payloads = Payloads::generate(3, 4);
        let seen: HashSet<Bytes> = (0..6).map(|_| payloads.next()).collect();
        assert_eq!(seen.len(), 3);
    }
}
