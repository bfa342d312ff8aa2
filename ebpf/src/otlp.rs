//! Spans as OTLP, with the OpenTelemetry semantic conventions for HTTP.
//!
//! A request is written straight into the protobuf bytes that are sent: building the message
//! structs and encoding them afterwards would cost more than assembling the spans.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

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

/// An attribute value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// An `ExportTraceServiceRequest` being written.
#[derive(Default)]
pub struct TraceRequest {
    out: Writer,
    spans: usize,
    addresses: Addresses,
}

/// The attributes a span takes from its connection's addresses alone, written once per
/// connection and request: a busy connection brings many spans to a request.
#[derive(Default)]
struct Addresses {
    written: Writer,
    /// By kind and (local, remote) address: where in `written` their attributes are.
    by_connection: foldhash::HashMap<(Role, SocketAddr, SocketAddr), Range<usize>>,
    /// Reused for addresses written as text.
    text: String,
}

// Field numbers of opentelemetry/proto/{collector/trace,trace,common,resource}/v1.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const STATUS_CODE: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_ARRAY: u32 = 5;
const ARRAY_VALUES: u32 = 1;
const SPAN_KIND_SERVER: u64 = 2;
const SPAN_KIND_CLIENT: u64 = 3;
const STATUS_CODE_ERROR: u64 = 2;

/// About what an HTTP span takes encoded, so that a request's buffer is sized once.
const SPAN_BYTES: usize = 384;

impl TraceRequest {
    /// A request about to hold `spans` spans.
    pub fn for_spans(spans: usize) -> TraceRequest {
        TraceRequest {
            out: Writer(Vec::with_capacity(spans * SPAN_BYTES)),
            ..TraceRequest::default()
        }
    }

    /// Adds the spans of one resource, recording the request headers named in `header_keys`
    /// and, if `url_query`, the query of each request.
    pub fn resource<'s>(
        &mut self,
        resource: &[(&str, Value)],
        scope: (&str, &str),
        spans: impl IntoIterator<Item = &'s HttpSpan>,
        clock: &Clock,
        header_keys: &[String],
        url_query: bool,
    ) {
        let TraceRequest {
            out,
            spans: count,
            addresses,
        } = self;
        out.message(REQUEST_RESOURCE_SPANS, |w| {
            w.message(RESOURCE_SPANS_RESOURCE, |w| {
                for (key, value) in resource {
                    w.key_value(RESOURCE_ATTRIBUTES, key, *value);
                }
            });
            w.message(RESOURCE_SPANS_SCOPE_SPANS, |w| {
                w.message(SCOPE_SPANS_SCOPE, |w| {
                    w.string(SCOPE_NAME, scope.0);
                    w.string(SCOPE_VERSION, scope.1);
                });
                for http in spans {
                    w.message(SCOPE_SPANS_SPANS, |w| {
                        span(w, http, clock, header_keys, url_query, addresses)
                    });
                    *count += 1;
                }
            });
        });
    }

    /// Spans written so far.
    pub fn spans(&self) -> usize {
        self.spans
    }

    pub fn finish(self) -> EncodedTraces {
        EncodedTraces {
            bytes: self.out.0,
            spans: self.spans,
        }
    }
}

/// A finished `ExportTraceServiceRequest`: its protobuf bytes and the spans they hold.
#[derive(Debug)]
pub struct EncodedTraces {
    pub bytes: Vec<u8>,
    pub spans: usize,
}

/// The OTLP span of `http`.
fn span(
    w: &mut Writer,
    http: &HttpSpan,
    clock: &Clock,
    header_keys: &[String],
    url_query: bool,
    addresses: &mut Addresses,
) {
    w.bytes(SPAN_TRACE_ID, &http.trace_id);
    w.bytes(SPAN_SPAN_ID, &http.span_id);
    if let Some(parent) = &http.parent {
        w.bytes(SPAN_PARENT_SPAN_ID, parent);
    }
    w.string(SPAN_NAME, http.method);
    w.uint(
        SPAN_KIND,
        match http.kind {
            Role::Server => SPAN_KIND_SERVER,
            Role::Client => SPAN_KIND_CLIENT,
        },
    );
    w.fixed64(SPAN_START, clock.unix_nanos(http.start));
    w.fixed64(SPAN_END, clock.unix_nanos(http.end));

    let mut attribute = |key: &str, value: Value| w.key_value(SPAN_ATTRIBUTES, key, value);
    let (path, query) = http.target.split_once('?').unwrap_or((&http.target, ""));
    attribute("http.request.method", Value::Str(http.method));
    attribute("url.path", Value::Str(path));
    if url_query && !query.is_empty() {
        attribute("url.query", Value::Str(query));
    }
    attribute("network.protocol.version", Value::Str(http.version));
    if let Some(status) = http.status {
        attribute("http.response.status_code", Value::Int(status.into()));
    }
    if http.kind == Role::Client {
        let host = http
            .headers
            .iter()
            .find(|(name, _)| name == "host")
            .map(|(_, host)| host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h))
            .filter(|host| !host.is_empty());
        match host {
            Some(host) => attribute("server.address", Value::Str(host)),
            None => {
                let text = &mut addresses.text;
                attribute("server.address", Value::Str(ip(text, http.remote.ip())))
            }
        }
    }
    w.0.extend_from_slice(addresses.of(http));
    if http.partial {
        w.key_value(SPAN_ATTRIBUTES, "odigos.partial", Value::Bool(true));
    }
    for key in header_keys {
        let key = key.to_ascii_lowercase();
        let mut values = http
            .headers
            .iter()
            .filter(|(name, _)| *name == key)
            .peekable();
        if values.peek().is_none() {
            continue;
        }
        w.message(SPAN_ATTRIBUTES, |w| {
            w.string(KEY_VALUE_KEY, &format!("http.request.header.{key}"));
            w.message(KEY_VALUE_VALUE, |w| {
                w.message(ANY_ARRAY, |w| {
                    for (_, value) in values {
                        w.any_value(ARRAY_VALUES, Value::Str(value));
                    }
                });
            });
        });
    }
    let failed = match (http.kind, http.status) {
        (Role::Server, Some(code)) => code >= 500,
        (Role::Client, Some(code)) => code >= 400,
        (_, None) => false,
    };
    if failed {
        w.message(SPAN_STATUS, |w| w.uint(STATUS_CODE, STATUS_CODE_ERROR));
    }
}

impl Addresses {
    /// The encoded attributes of `http`'s connection addresses.
    fn of(&mut self, http: &HttpSpan) -> &[u8] {
        let Addresses {
            written: w,
            by_connection,
            text,
        } = self;
        let range = by_connection
            .entry((http.kind, http.local, http.remote))
            .or_insert_with(|| {
                let start = w.0.len();
                let mut attribute =
                    |key: &str, value: Value| w.key_value(SPAN_ATTRIBUTES, key, value);
                match http.kind {
                    Role::Server => {
                        attribute("server.address", Value::Str(ip(text, http.local.ip())));
                        attribute("server.port", Value::Int(http.local.port().into()));
                        attribute("client.address", Value::Str(ip(text, http.remote.ip())));
                        attribute("client.port", Value::Int(http.remote.port().into()));
                    }
                    Role::Client => {
                        attribute("server.port", Value::Int(http.remote.port().into()));
                        let peer = ip(text, http.remote.ip());
                        attribute("network.peer.address", Value::Str(peer));
                    }
                }
                start..w.0.len()
            });
        &w.0[range.clone()]
    }
}

/// `ip` as text, in `text` (IPv4 by hand: the formatter costs more than the rest of a span).
fn ip(text: &mut String, ip: std::net::IpAddr) -> &str {
    text.clear();
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
    text
}

/// Protobuf wire format, appended to one buffer.
#[derive(Default)]
struct Writer(Vec<u8>);

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;

impl Writer {
    fn varint(&mut self, value: u64) {
        // Tags and most lengths are one byte.
        if value < 0x80 {
            self.0.push(value as u8);
            return;
        }
        let (bytes, len) = varint(value);
        self.0.extend_from_slice(&bytes[..len]);
    }

    fn tag(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    fn uint(&mut self, field: u32, value: u64) {
        self.tag(field, VARINT);
        self.varint(value);
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        self.tag(field, FIXED64);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, LENGTH_DELIMITED);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    /// A nested message: its length goes before it once it is written, in two bytes kept
    /// for it (a span's length takes two); a message whose length takes more or fewer moves
    /// once.
    fn message(&mut self, field: u32, write: impl FnOnce(&mut Writer)) {
        const KEPT: usize = 2;
        self.tag(field, LENGTH_DELIMITED);
        let start = self.0.len();
        self.0.extend_from_slice(&[0; KEPT]);
        write(self);
        let body = start + KEPT..self.0.len();
        let (length, len) = varint(body.len() as u64);
        if len != KEPT {
            let end = body.end;
            if len > KEPT {
                self.0.resize(end + len - KEPT, 0);
            }
            self.0.copy_within(body, start + len);
            self.0.truncate(end + len - KEPT);
        }
        self.0[start..start + len].copy_from_slice(&length[..len]);
    }

    fn any_value(&mut self, field: u32, value: Value) {
        self.tag(field, LENGTH_DELIMITED);
        self.varint(any_value_len(value) as u64);
        match value {
            Value::Str(text) => self.string(ANY_STRING, text),
            Value::Int(n) => self.uint(ANY_INT, n as u64),
            Value::Bool(b) => self.uint(ANY_BOOL, b.into()),
        }
    }

    /// A `KeyValue`: its length is known ahead, so nothing moves.
    fn key_value(&mut self, field: u32, key: &str, value: Value) {
        let value_len = any_value_len(value);
        self.tag(field, LENGTH_DELIMITED);
        self.varint((delimited_len(key.len()) + delimited_len(value_len)) as u64);
        self.string(KEY_VALUE_KEY, key);
        self.any_value(KEY_VALUE_VALUE, value);
    }
}

/// `value` as a protobuf varint: its bytes, and how many of them count.
fn varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0; 10];
    let mut len = 0;
    while value >= 0x80 {
        bytes[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    bytes[len] = value as u8;
    (bytes, len + 1)
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field of a one-byte tag and `len` bytes.
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn any_value_len(value: Value) -> usize {
    match value {
        Value::Str(text) => delimited_len(text.len()),
        Value::Int(n) => 1 + varint_len(n as u64),
        Value::Bool(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use odigos_proto::otlp::common::v1::any_value;
    use prost::Message;

    use super::*;

    fn http_span(kind: Role, status: u16) -> HttpSpan {
        HttpSpan {
            pid: 7,
            kind,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: (kind == Role::Client).then_some([3; 8]),
            start: 1_000,
            end: 301_000,
            method: "POST",
            target: "/orders?id=1".into(),
            version: "1.1",
            status: Some(status),
            headers: vec![
                ("host".into(), "shop.local:8080".into()),
                ("x-user".into(), "ann".into()),
            ],
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "[::1]:8080".parse().unwrap(),
            partial: true,
        }
    }

    fn value(span: &odigos_proto::otlp::trace::v1::Span, key: &str) -> Option<any_value::Value> {
        let kv = span.attributes.iter().find(|kv| kv.key == key)?;
        kv.value.clone()?.value
    }

    #[test]
    fn decodes_as_the_otlp_messages() {
        let clock = Clock { boot_unix_ns: 5 };
        let spans = [http_span(Role::Client, 503), http_span(Role::Server, 200)];
        let mut request = TraceRequest::default();
        // Long enough that lengths take two varint bytes.
        let long = "s".repeat(300);
        request.resource(
            &[
                ("service.name", Value::Str(&long)),
                ("process.pid", Value::Int(7)),
            ],
            ("scope", "1.0"),
            &spans,
            &clock,
            &["X-User".into()],
            true,
        );
        assert_eq!(request.spans(), 2);
        let decoded = ExportTraceServiceRequest::decode(request.finish().bytes.as_slice()).unwrap();
        let resource = &decoded.resource_spans[0];
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(
            attributes[0].value.clone().unwrap().value,
            Some(any_value::Value::StringValue(long.clone()))
        );
        assert_eq!(
            attributes[1].value.clone().unwrap().value,
            Some(any_value::Value::IntValue(7))
        );
        let scope = &resource.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "scope");
        let [client, server] = &scope.spans[..] else {
            panic!("{:?}", scope.spans);
        };
        assert_eq!(client.trace_id, vec![1; 16]);
        assert_eq!(client.parent_span_id, vec![3; 8]);
        assert!(server.parent_span_id.is_empty());
        assert_eq!((client.name.as_str(), client.kind), ("POST", 3));
        assert_eq!(server.kind, 2);
        assert_eq!(
            (client.start_time_unix_nano, client.end_time_unix_nano),
            (1_005, 301_005)
        );
        assert_eq!(
            client.status.as_ref().map(|s| s.code),
            Some(2),
            "503 fails a client"
        );
        assert_eq!(server.status, None, "200 is fine");
        let text = |s: &str| Some(any_value::Value::StringValue(s.into()));
        assert_eq!(value(client, "url.path"), text("/orders"));
        assert_eq!(value(client, "url.query"), text("id=1"));
        assert_eq!(value(client, "server.address"), text("shop.local"));
        assert_eq!(value(client, "network.peer.address"), text("::1"));
        assert_eq!(
            value(client, "http.response.status_code"),
            Some(any_value::Value::IntValue(503))
        );
        assert_eq!(
            value(client, "odigos.partial"),
            Some(any_value::Value::BoolValue(true))
        );
        assert_eq!(value(server, "server.address"), text("127.0.0.1"));
        assert_eq!(
            value(server, "client.port"),
            Some(any_value::Value::IntValue(8080))
        );
        let Some(any_value::Value::ArrayValue(user)) = value(server, "http.request.header.x-user")
        else {
            panic!("{:?}", server.attributes);
        };
        assert_eq!(user.values[0].value, text("ann"));
    }

    #[test]
    fn spans_of_one_connection_share_its_addresses_and_no_other_connection_does() {
        let on = |port: u16| HttpSpan {
            remote: SocketAddr::from(([10, 0, 0, 9], port)),
            partial: false,
            ..http_span(Role::Server, 200)
        };
        let spans = [on(1001), on(1002), on(1001), http_span(Role::Client, 200)];
        let mut request = TraceRequest::default();
        let clock = Clock { boot_unix_ns: 0 };
        request.resource(&[], ("scope", "1.0"), &spans, &clock, &[], false);
        let decoded = ExportTraceServiceRequest::decode(request.finish().bytes.as_slice()).unwrap();
        let decoded = &decoded.resource_spans[0].scope_spans[0].spans;
        let int = |n: i64| Some(any_value::Value::IntValue(n));
        let text = |s: &str| Some(any_value::Value::StringValue(s.into()));
        for (span, port) in decoded.iter().zip([1001, 1002, 1001]) {
            assert_eq!(value(span, "client.port"), int(port));
            assert_eq!(value(span, "client.address"), text("10.0.0.9"));
            assert_eq!(value(span, "server.port"), int(40000));
            assert_eq!(value(span, "url.query"), None, "not asked for");
            assert_eq!(span.attributes.len(), 8, "{:?}", span.attributes);
        }
        // Same addresses, other kind: a client's attributes.
        assert_eq!(value(&decoded[3], "client.port"), None);
        assert_eq!(value(&decoded[3], "network.peer.address"), text("::1"));
    }

    #[test]
    fn addresses_as_text() {
        let mut text = String::new();
        for address in ["0.0.0.0", "10.0.99.255", "127.0.0.1", "::1", "fe80::2"] {
            assert_eq!(ip(&mut text, address.parse().unwrap()), address);
        }
    }

    #[test]
    fn a_span_fits_the_room_a_request_keeps_for_it() {
        let clock = Clock { boot_unix_ns: 5 };
        for kind in [Role::Server, Role::Client] {
            let mut w = Writer::default();
            span(
                &mut w,
                &http_span(kind, 200),
                &clock,
                &[],
                true,
                &mut Addresses::default(),
            );
            assert!(w.0.len() <= SPAN_BYTES, "{kind:?}: {} bytes", w.0.len());
        }
    }

    #[test]
    fn messages_of_any_length_are_prefixed_by_it() {
        for n in [0, 1, 127, 128, 16383, 16384, 100_000] {
            let mut w = Writer::default();
            w.message(3, |w| w.0.extend(std::iter::repeat_n(7, n)));
            let (length, len) = varint(n as u64);
            let mut expected = vec![3 << 3 | 2];
            expected.extend_from_slice(&length[..len]);
            expected.extend(std::iter::repeat_n(7, n));
            assert_eq!(w.0, expected, "{n} bytes");
        }
    }

    #[test]
    fn varint_lengths() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut w = Writer::default();
            w.varint(value);
            assert_eq!((w.0.len(), varint_len(value)), (len, len), "{value}");
        }
    }
}
