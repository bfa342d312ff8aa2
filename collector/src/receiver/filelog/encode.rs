//! The records of a read written straight into an OTLP logs request (protobuf, as prost
//! encodes it): each body is copied once, from the read buffer into the request, and nothing
//! is allocated per record. What every record of the read shares (its attributes, the
//! resource) is encoded once.

use std::borrow::Cow;

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::framing::Record;

// Field numbers of the OTLP messages written.
const REQUEST_RESOURCE_LOGS: u32 = 1;
const RESOURCE_LOGS_RESOURCE: u32 = 1;
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
const RECORD_TIME: u32 = 1;
const RECORD_BODY: u32 = 5;
const RECORD_ATTRIBUTES: u32 = 6;
const RECORD_OBSERVED_TIME: u32 = 11;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_BYTES: u32 = 7;

/// What the records of one read share, encoded.
pub struct Shared {
    /// The `attributes` fields of a record.
    attributes: Vec<u8>,
    /// The `attributes` fields of the resource.
    resource: Vec<u8>,
    /// Bodies are bytes as read (`nop` encoding) rather than text.
    bytes: bool,
    observed_time_unix_nano: u64,
}

impl Shared {
    pub fn new<'a>(
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
        resource: impl IntoIterator<Item = (&'a str, &'a str)>,
        bytes: bool,
        observed_time_unix_nano: u64,
    ) -> Shared {
        Shared {
            attributes: text_attributes(attributes, RECORD_ATTRIBUTES),
            resource: text_attributes(resource, RESOURCE_ATTRIBUTES),
            bytes,
            observed_time_unix_nano,
        }
    }
}

/// The request holding `records`. Text bodies that are not valid UTF-8 have their bad bytes
/// replaced (U+FFFD) first.
pub fn request(records: &mut [Record<'_>], shared: &Shared) -> Bytes {
    if !shared.bytes {
        for record in records.iter_mut() {
            if std::str::from_utf8(&record.body).is_err() {
                let valid = String::from_utf8_lossy(&record.body).into_owned();
                record.body = Cow::Owned(valid.into_bytes());
            }
        }
    }
    let records_len: usize = records
        .iter()
        .map(|r| field_len(record_len(r, shared)))
        .sum();
    let resource_len = shared.resource.len();
    let resource_logs_len = field_len(resource_len) + field_len(records_len);
    let mut out = Vec::with_capacity(field_len(resource_logs_len));
    length_delimited(&mut out, REQUEST_RESOURCE_LOGS, resource_logs_len);
    length_delimited(&mut out, RESOURCE_LOGS_RESOURCE, resource_len);
    out.extend_from_slice(&shared.resource);
    length_delimited(&mut out, RESOURCE_LOGS_SCOPE_LOGS, records_len);
    for record in records.iter() {
        length_delimited(&mut out, SCOPE_LOGS_LOG_RECORDS, record_len(record, shared));
        if record.time_unix_nano != 0 {
            fixed64(&mut out, RECORD_TIME, record.time_unix_nano);
        }
        let body_tag = if shared.bytes { ANY_BYTES } else { ANY_STRING };
        length_delimited(&mut out, RECORD_BODY, field_len(record.body.len()));
        bytes_field(&mut out, body_tag, &record.body);
        out.extend_from_slice(&shared.attributes);
        if let Some(stream) = record.stream {
            text_attribute(&mut out, RECORD_ATTRIBUTES, "log.iostream", stream);
        }
        if let Some(tag) = record.tag {
            text_attribute(&mut out, RECORD_ATTRIBUTES, "logtag", tag);
        }
        if record.truncated {
            length_delimited(&mut out, RECORD_ATTRIBUTES, TRUNCATED_LEN);
            bytes_field(&mut out, KEY_VALUE_KEY, TRUNCATED.as_bytes());
            length_delimited(&mut out, KEY_VALUE_VALUE, 2);
            encode_key(ANY_BOOL, WireType::Varint, &mut out);
            encode_varint(1, &mut out);
        }
        if shared.observed_time_unix_nano != 0 {
            fixed64(
                &mut out,
                RECORD_OBSERVED_TIME,
                shared.observed_time_unix_nano,
            );
        }
    }
    debug_assert_eq!(out.len(), field_len(resource_logs_len));
    out.into()
}

const TRUNCATED: &str = "log.record.truncated";
/// The `KeyValue` that says a record was cut: the key, and a value of two bytes.
const TRUNCATED_LEN: usize = 1 + 1 + TRUNCATED.len() + 1 + 1 + 2;

fn record_len(record: &Record<'_>, shared: &Shared) -> usize {
    let time = |t: u64| if t != 0 { 1 + 8 } else { 0 };
    time(record.time_unix_nano)
        + field_len(field_len(record.body.len()))
        + shared.attributes.len()
        + (record.stream).map_or(0, |s| field_len(text_attribute_len("log.iostream", s)))
        + (record.tag).map_or(0, |t| field_len(text_attribute_len("logtag", t)))
        + if record.truncated {
            field_len(TRUNCATED_LEN)
        } else {
            0
        }
        + time(shared.observed_time_unix_nano)
}

/// The length of a field of `len` bytes whose number is below 16 (its key is one byte).
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn text_attribute_len(key: &str, value: &str) -> usize {
    field_len(key.len()) + field_len(field_len(value.len()))
}

fn length_delimited(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn bytes_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    length_delimited(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

fn fixed64(out: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&value.to_le_bytes());
}

/// `KeyValue`s with text values, as fields `tag` of their message.
fn text_attributes<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, tag: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        text_attribute(&mut out, tag, key, value);
    }
    out
}

/// A `KeyValue` with a text value, as field `tag` of its message.
fn text_attribute(out: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    length_delimited(out, tag, text_attribute_len(key, value));
    bytes_field(out, KEY_VALUE_KEY, key.as_bytes());
    length_delimited(out, KEY_VALUE_VALUE, field_len(value.len()));
    bytes_field(out, ANY_STRING, value.as_bytes());
}

#[cfg(test)]
mod tests {
    use odigos_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    use odigos_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use odigos_proto::otlp::resource::v1::Resource;
    use prost::Message;

    use super::*;
    use crate::receiver::text;

    fn record<'a>(
        body: &'a [u8],
        stream: Option<&'static str>,
        truncated: bool,
        time: u64,
    ) -> Record<'a> {
        Record {
            body: Cow::Borrowed(body),
            time_unix_nano: time,
            stream,
            // A container's records have a stream and CRI's tag.
            tag: stream.map(|_| "F"),
            truncated,
            end: 0,
        }
    }

    /// What prost makes of the same records.
    fn expected(
        records: &[(&str, Option<&str>, bool, u64)],
        bytes: bool,
        attributes: &[(&str, &str)],
        resource: &[(&str, &str)],
    ) -> Vec<u8> {
        let records = records
            .iter()
            .map(|(body, stream, truncated, time)| {
                let mut attributes: Vec<KeyValue> =
                    attributes.iter().map(|(k, v)| text(k, *v)).collect();
                if let Some(stream) = stream {
                    attributes.push(text("log.iostream", *stream));
                    attributes.push(text("logtag", "F"));
                }
                if *truncated {
                    attributes.push(KeyValue {
                        key: TRUNCATED.into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        }),
                        ..Default::default()
                    });
                }
                let body = if bytes {
                    any_value::Value::BytesValue(body.as_bytes().to_vec())
                } else {
                    any_value::Value::StringValue(body.to_string())
                };
                LogRecord {
                    time_unix_nano: *time,
                    observed_time_unix_nano: 42,
                    body: Some(AnyValue { value: Some(body) }),
                    attributes,
                    ..Default::default()
                }
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: resource.iter().map(|(k, v)| text(k, *v)).collect(),
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn requests_are_what_prost_encodes() {
        let attributes = [("log.file.name", "app.log"), ("team", "logs")];
        let resource = [("k8s.pod.name", "web-1")];
        let shared = Shared::new(attributes, resource, false, 42);
        let long = "y".repeat(300);
        let mut records = vec![
            record(b"first line", None, false, 0),
            record(b"", None, false, 0),
            record(
                long.as_bytes(),
                Some("stderr"),
                true,
                1_714_557_600_123_456_789,
            ),
            record("caf\u{e9}".as_bytes(), Some("stdout"), false, 7),
        ];
        let encoded = request(&mut records, &shared);
        assert_eq!(
            encoded[..],
            expected(
                &[
                    ("first line", None, false, 0),
                    ("", None, false, 0),
                    (&long, Some("stderr"), true, 1_714_557_600_123_456_789),
                    ("caf\u{e9}", Some("stdout"), false, 7),
                ],
                false,
                &attributes,
                &resource
            )[..]
        );
        let scanned = odigos_proto::wire::scan(odigos_proto::Signal::Logs, &encoded).unwrap();
        assert_eq!(scanned.items, 4);
    }

    #[test]
    fn bad_text_is_mended_and_bytes_are_kept_as_read() {
        let shared = Shared::new([], [], false, 42);
        let mut records = vec![record(b"bad \xff\xfe bytes", None, false, 0)];
        let encoded = request(&mut records, &shared);
        assert_eq!(
            encoded[..],
            expected(
                &[("bad \u{fffd}\u{fffd} bytes", None, false, 0)],
                false,
                &[],
                &[]
            )[..]
        );
        let shared = Shared::new([], [], true, 42);
        let mut records = vec![record(b"as read", None, false, 0)];
        assert_eq!(
            request(&mut records, &shared)[..],
            expected(&[("as read", None, false, 0)], true, &[], &[])[..]
        );
    }
}
