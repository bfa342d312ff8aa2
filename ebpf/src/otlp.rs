//! Spans as OTLP, with the OpenTelemetry semantic conventions for HTTP.

use odigos_proto::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use odigos_proto::otlp::trace::v1::{Span, Status, span, status};

use crate::http::HttpSpan;
use crate::tracer::Role;

/// Converts kernel times (nanoseconds since boot) to Unix times.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot_unix_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        use rustix::time::{ClockId, clock_gettime};
        let ns = |t: rustix::time::Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let monotonic = ns(clock_gettime(ClockId::Monotonic));
        let realtime = ns(clock_gettime(ClockId::Realtime));
        Clock {
            boot_unix_ns: realtime - monotonic,
        }
    }

    pub fn unix_nanos(&self, since_boot: u64) -> u64 {
        (self.boot_unix_ns + since_boot as i128).max(0) as u64
    }
}

/// Whether a trace with this id is kept at `fraction` (0 to 1): the same answer on every node.
pub fn sampled(trace_id: &[u8; 16], fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let value = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
    (value as f64) < fraction * u64::MAX as f64
}

pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

pub fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(value))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// The OTLP span of `http`, recording the request headers named in `header_keys`.
pub fn span(http: &HttpSpan, clock: &Clock, header_keys: &[String]) -> Span {
    let (path, _query) = http.target.split_once('?').unwrap_or((&http.target, ""));
    let mut attributes = vec![
        string("http.request.method", &http.method),
        string("url.path", path),
        string("network.protocol.version", &http.version),
    ];
    if let Some(status) = http.status {
        attributes.push(int("http.response.status_code", status.into()));
    }
    match http.kind {
        Role::Server => {
            attributes.push(string("server.address", http.local.ip().to_string()));
            attributes.push(int("server.port", http.local.port().into()));
            attributes.push(string("client.address", http.remote.ip().to_string()));
            attributes.push(int("client.port", http.remote.port().into()));
        }
        Role::Client => {
            let host = http
                .headers
                .iter()
                .find(|(name, _)| name == "host")
                .map(|(_, host)| host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h))
                .unwrap_or_default();
            let address = if host.is_empty() {
                http.remote.ip().to_string()
            } else {
                host.to_string()
            };
            attributes.push(string("server.address", address));
            attributes.push(int("server.port", http.remote.port().into()));
            attributes.push(string("network.peer.address", http.remote.ip().to_string()));
        }
    }
    for key in header_keys {
        let key = key.to_ascii_lowercase();
        let values: Vec<AnyValue> = http
            .headers
            .iter()
            .filter(|(name, _)| *name == key)
            .map(|(_, value)| AnyValue {
                value: Some(any_value::Value::StringValue(value.clone())),
            })
            .collect();
        if !values.is_empty() {
            attributes.push(attribute(
                &format!("http.request.header.{key}"),
                any_value::Value::ArrayValue(ArrayValue { values }),
            ));
        }
    }
    if http.partial {
        attributes.push(attribute(
            "odigos.partial",
            any_value::Value::BoolValue(true),
        ));
    }
    let failed = match (http.kind, http.status) {
        (Role::Server, Some(code)) => code >= 500,
        (Role::Client, Some(code)) => code >= 400,
        (_, None) => false,
    };
    Span {
        trace_id: http.trace_id.to_vec(),
        span_id: http.span_id.to_vec(),
        parent_span_id: http.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: http.method.clone(),
        kind: match http.kind {
            Role::Server => span::SpanKind::Server,
            Role::Client => span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: clock.unix_nanos(http.start),
        end_time_unix_nano: clock.unix_nanos(http.end),
        attributes,
        status: failed.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}
