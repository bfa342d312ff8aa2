//! A validating scanner over encoded OTLP export requests.
//!
//! It walks the protobuf wire format with a static description of the OTLP schema, checks every
//! tag, length, nesting and UTF-8 string the way a full decode would, and counts items (spans,
//! metric points, log records) without allocating. A request that passes can be forwarded or
//! concatenated with others as it is: repeated fields concatenate on the wire, so the bytes of
//! two `Export*ServiceRequest`s one after the other encode the request holding both.

use crate::Signal;

/// What a scan learned about a valid request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Spans, metric data points or log records.
    pub items: usize,
    /// Top-level `Resource*` entries.
    pub resources: usize,
}

/// Why a request is not valid OTLP, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid OTLP protobuf at byte {offset} in {message}: {problem}")]
pub struct WireError {
    pub offset: usize,
    /// The protobuf message being read when the problem was found.
    pub message: &'static str,
    pub problem: Problem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("varint longer than 64 bits")]
    VarintTooLong,
    #[error("field {field} has length {len} but only {left} bytes remain")]
    TruncatedLength { field: u32, len: u64, left: usize },
    #[error("truncated fixed-width field {field}")]
    TruncatedFixed { field: u32 },
    #[error("field number 0 is not allowed")]
    ZeroField,
    #[error("field key {key} is larger than 32 bits")]
    KeyTooLarge { key: u64 },
    #[error("field {field} has wire type {wire_type}, expected {expected}")]
    WrongWireType {
        field: u32,
        wire_type: u8,
        expected: &'static str,
    },
    #[error("wire type {wire_type} (groups or reserved) is not supported")]
    UnsupportedWireType { wire_type: u8 },
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 { field: u32 },
    #[error("packed field {field} has a length that is not a multiple of {width}")]
    BadPackedLength { field: u32, width: usize },
    #[error("messages nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

const MAX_DEPTH: usize = 100;

/// Validates an encoded `Export{Trace,Metrics,Logs}ServiceRequest` and counts its items.
pub fn scan(signal: Signal, buf: &[u8]) -> Result<Scan, WireError> {
    scan_resources(signal, buf, |_, _| {})
}

/// Like [`scan`], and hands `each` every top-level `Resource*` entry's body with its item
/// count, in the same pass.
pub fn scan_resources<'a>(
    signal: Signal,
    buf: &'a [u8],
    each: impl FnMut(&'a [u8], usize),
) -> Result<Scan, WireError> {
    let mut walker = Walker {
        items: 0,
        resources: 0,
        each,
    };
    walker.message(export_schema(signal), buf, 0, 0)?;
    Ok(Scan {
        items: walker.items,
        resources: walker.resources,
    })
}

/// The `service.name` of a top-level `Resource*` entry's body (as [`scan_resources`] gives
/// it), when its resource has one as a string.
pub fn service_name(entry: &[u8]) -> Option<&str> {
    // ResourceSpans/Metrics/Logs.resource = 1; Resource.attributes = 1; KeyValue.key = 1,
    // .value = 2; AnyValue.string_value = 1.
    let resource = fields(entry).find(|&(num, _)| num == 1)?.1;
    fields(resource)
        .filter(|&(num, _)| num == 1)
        .find_map(|(_, attribute)| {
            let mut key = None;
            let mut value = None;
            for (num, body) in fields(attribute) {
                match num {
                    1 => key = Some(body),
                    2 => value = Some(body),
                    _ => {}
                }
            }
            (key? == b"service.name").then_some(())?;
            let text = fields(value?).find(|&(num, _)| num == 1)?.1;
            std::str::from_utf8(text).ok()
        })
}

/// The length-delimited fields of a message, as (field number, body); stops at anything
/// malformed.
fn fields(buf: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos).ok()?;
            let end = match key & 7 {
                0 => read_varint(buf, &mut pos).map(|_| pos).ok()?,
                1 => pos + 8,
                5 => pos + 4,
                2 => {
                    let len = read_varint(buf, &mut pos).ok()?;
                    pos.checked_add(usize::try_from(len).ok()?)?
                }
                _ => return None,
            };
            if end > buf.len() {
                return None;
            }
            let start = pos;
            pos = end;
            if key & 7 == 2 {
                return Some((key >> 3, &buf[start..end]));
            }
        }
        None
    })
}

/// The top-level `Resource*` entries of a valid request, each still encoded as the field
/// (tag, length and body) so that any subset of them concatenates into a valid request.
pub fn resource_entries(buf: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let Ok(key) = read_varint(buf, &mut pos) else {
            break;
        };
        let end = match key & 7 {
            0 => read_varint(buf, &mut pos).map(|_| pos).ok(),
            1 => Some(pos + 8),
            5 => Some(pos + 4),
            2 => read_varint(buf, &mut pos)
                .ok()
                .map(|len| pos + len as usize),
            _ => None,
        };
        let Some(end) = end.filter(|&end| end <= buf.len()) else {
            break;
        };
        if key >> 3 == 1 && key & 7 == 2 {
            entries.push(&buf[start..end]);
        }
        pos = end;
    }
    entries
}

fn export_schema(signal: Signal) -> &'static Schema {
    match signal {
        Signal::Traces => &EXPORT_TRACES,
        Signal::Metrics => &EXPORT_METRICS,
        Signal::Logs => &EXPORT_LOGS,
    }
}

struct Walker<F> {
    items: usize,
    resources: usize,
    each: F,
}

impl<'a, F: FnMut(&'a [u8], usize)> Walker<F> {
    fn message(
        &mut self,
        schema: &'static Schema,
        buf: &'a [u8],
        base: usize,
        depth: usize,
    ) -> Result<(), WireError> {
        let fail = |offset: usize, problem| WireError {
            offset: base + offset,
            message: schema.name,
            problem,
        };
        if depth > MAX_DEPTH {
            return Err(fail(0, Problem::TooDeep));
        }
        let mut pos = 0;
        while pos < buf.len() {
            let key_at = pos;
            let key = read_varint(buf, &mut pos).map_err(|p| fail(key_at, p))?;
            // Decoders refuse keys beyond 32 bits rather than truncate them.
            if key > u64::from(u32::MAX) {
                return Err(fail(key_at, Problem::KeyTooLarge { key }));
            }
            let field = (key >> 3) as u32;
            let wire_type = (key & 7) as u8;
            if field == 0 {
                return Err(fail(key_at, Problem::ZeroField));
            }
            let kind = schema.kinds.get(field as usize).copied().flatten();
            match wire_type {
                0 => {
                    if let Some(kind) = kind
                        && !matches!(kind, Kind::Varint | Kind::PackedVarint)
                    {
                        return Err(fail(key_at, kind.wrong(field, wire_type)));
                    }
                    let at = pos;
                    read_varint(buf, &mut pos).map_err(|p| fail(at, p))?;
                }
                1 | 5 => {
                    let width = if wire_type == 1 { 8 } else { 4 };
                    if let Some(kind) = kind {
                        let ok = match kind {
                            Kind::I64 | Kind::PackedI64 => width == 8,
                            Kind::I32 => width == 4,
                            _ => false,
                        };
                        if !ok {
                            return Err(fail(key_at, kind.wrong(field, wire_type)));
                        }
                    }
                    if buf.len() - pos < width {
                        return Err(fail(key_at, Problem::TruncatedFixed { field }));
                    }
                    pos += width;
                }
                2 => {
                    let at = pos;
                    let len = read_varint(buf, &mut pos).map_err(|p| fail(at, p))?;
                    let left = buf.len() - pos;
                    if len > left as u64 {
                        return Err(fail(key_at, Problem::TruncatedLength { field, len, left }));
                    }
                    let body = &buf[pos..pos + len as usize];
                    match kind {
                        None | Some(Kind::Bytes) => {}
                        Some(Kind::Str) => {
                            // Most strings are ASCII, which is checked a word at a time.
                            if !body.is_ascii() && std::str::from_utf8(body).is_err() {
                                return Err(fail(key_at, Problem::InvalidUtf8 { field }));
                            }
                        }
                        Some(Kind::Msg(inner)) => {
                            if schema.items_field == field {
                                self.items += 1;
                            }
                            let before = self.items;
                            self.message(inner, body, base + pos, depth + 1)?;
                            if depth == 0 {
                                self.resources += 1;
                                (self.each)(body, self.items - before);
                            }
                        }
                        Some(Kind::PackedI64) => {
                            if !body.len().is_multiple_of(8) {
                                return Err(fail(
                                    key_at,
                                    Problem::BadPackedLength { field, width: 8 },
                                ));
                            }
                        }
                        Some(Kind::PackedVarint) => {
                            let mut p = 0;
                            while p < body.len() {
                                let at = pos + p;
                                read_varint(body, &mut p).map_err(|e| fail(at, e))?;
                            }
                        }
                        Some(kind @ (Kind::Varint | Kind::I64 | Kind::I32)) => {
                            return Err(fail(key_at, kind.wrong(field, wire_type)));
                        }
                    }
                    pos += len as usize;
                }
                _ => return Err(fail(key_at, Problem::UnsupportedWireType { wire_type })),
            }
        }
        Ok(())
    }
}

#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Problem> {
    // Tags and short lengths are one byte: the common case, inlined.
    if let Some(&byte) = buf.get(*pos)
        && byte < 0x80
    {
        *pos += 1;
        return Ok(u64::from(byte));
    }
    read_long_varint(buf, pos)
}

#[inline(never)]
fn read_long_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Problem> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = buf.get(*pos) else {
            return Err(Problem::TruncatedVarint);
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // The tenth byte may carry only the 64th bit.
            return if i == 9 && byte > 1 {
                Err(Problem::VarintTooLong)
            } else {
                Ok(value)
            };
        }
    }
    Err(Problem::VarintTooLong)
}

/// The wire shape of one field, as far as validation needs it.
#[derive(Clone, Copy)]
enum Kind {
    Msg(&'static Schema),
    Str,
    Bytes,
    Varint,
    I64,
    I32,
    /// Repeated fixed64/double: packed (LEN) or one at a time.
    PackedI64,
    /// Repeated varint: packed (LEN) or one at a time.
    PackedVarint,
}

impl Kind {
    fn wrong(self, field: u32, wire_type: u8) -> Problem {
        let expected = match self {
            Kind::Msg(_) => "a message",
            Kind::Str => "a string",
            Kind::Bytes => "bytes",
            Kind::Varint => "a varint",
            Kind::I64 => "a 64-bit fixed value",
            Kind::I32 => "a 32-bit fixed value",
            Kind::PackedI64 => "packed 64-bit values",
            Kind::PackedVarint => "packed varints",
        };
        Problem::WrongWireType {
            field,
            wire_type,
            expected,
        }
    }
}

struct Field {
    num: u32,
    kind: Kind,
}

/// The highest field number in the OTLP messages.
const MAX_FIELD: usize = 16;

struct Schema {
    name: &'static str,
    /// Each field's kind by its number, so that a field is looked up in one step; `None`
    /// for numbers the schema does not know.
    kinds: [Option<Kind>; MAX_FIELD + 1],
    /// The field whose entries are the signal's items (0 when none).
    items_field: u32,
}

const fn f(num: u32, kind: Kind) -> Field {
    Field { num, kind }
}

const fn schema(name: &'static str, fields: &[Field]) -> Schema {
    item_schema(name, 0, fields)
}

const fn item_schema(name: &'static str, items_field: u32, fields: &[Field]) -> Schema {
    let mut kinds = [None; MAX_FIELD + 1];
    let mut i = 0;
    while i < fields.len() {
        let num = fields[i].num as usize;
        assert!(num <= MAX_FIELD, "a field number above MAX_FIELD");
        kinds[num] = Some(fields[i].kind);
        i += 1;
    }
    Schema {
        name,
        kinds,
        items_field,
    }
}

use Kind::{Bytes, I32, I64, Msg, PackedI64, PackedVarint, Str, Varint};

// common.proto and resource.proto
static ANY_VALUE: Schema = schema(
    "AnyValue",
    &[
        f(1, Str),
        f(2, Varint),
        f(3, Varint),
        f(4, I64),
        f(5, Msg(&ARRAY_VALUE)),
        f(6, Msg(&KEY_VALUE_LIST)),
        f(7, Bytes),
        f(8, Varint),
    ],
);
static ARRAY_VALUE: Schema = schema("ArrayValue", &[f(1, Msg(&ANY_VALUE))]);
static KEY_VALUE_LIST: Schema = schema("KeyValueList", &[f(1, Msg(&KEY_VALUE))]);
static KEY_VALUE: Schema = schema(
    "KeyValue",
    &[f(1, Str), f(2, Msg(&ANY_VALUE)), f(3, Varint)],
);
static SCOPE: Schema = schema(
    "InstrumentationScope",
    &[f(1, Str), f(2, Str), f(3, Msg(&KEY_VALUE)), f(4, Varint)],
);
static ENTITY_REF: Schema = schema("EntityRef", &[f(1, Str), f(2, Str), f(3, Str), f(4, Str)]);
static RESOURCE: Schema = schema(
    "Resource",
    &[f(1, Msg(&KEY_VALUE)), f(2, Varint), f(3, Msg(&ENTITY_REF))],
);

// trace.proto
static EXPORT_TRACES: Schema = schema("ExportTraceServiceRequest", &[f(1, Msg(&RESOURCE_SPANS))]);
static RESOURCE_SPANS: Schema = schema(
    "ResourceSpans",
    &[f(1, Msg(&RESOURCE)), f(2, Msg(&SCOPE_SPANS)), f(3, Str)],
);
static SCOPE_SPANS: Schema = item_schema(
    "ScopeSpans",
    2,
    &[f(1, Msg(&SCOPE)), f(2, Msg(&SPAN)), f(3, Str)],
);
static SPAN: Schema = schema(
    "Span",
    &[
        f(1, Bytes),
        f(2, Bytes),
        f(3, Str),
        f(4, Bytes),
        f(5, Str),
        f(6, Varint),
        f(7, I64),
        f(8, I64),
        f(9, Msg(&KEY_VALUE)),
        f(10, Varint),
        f(11, Msg(&SPAN_EVENT)),
        f(12, Varint),
        f(13, Msg(&SPAN_LINK)),
        f(14, Varint),
        f(15, Msg(&STATUS)),
        f(16, I32),
    ],
);
static SPAN_EVENT: Schema = schema(
    "Span.Event",
    &[f(1, I64), f(2, Str), f(3, Msg(&KEY_VALUE)), f(4, Varint)],
);
static SPAN_LINK: Schema = schema(
    "Span.Link",
    &[
        f(1, Bytes),
        f(2, Bytes),
        f(3, Str),
        f(4, Msg(&KEY_VALUE)),
        f(5, Varint),
        f(6, I32),
    ],
);
static STATUS: Schema = schema("Status", &[f(2, Str), f(3, Varint)]);

// logs.proto
static EXPORT_LOGS: Schema = schema("ExportLogsServiceRequest", &[f(1, Msg(&RESOURCE_LOGS))]);
static RESOURCE_LOGS: Schema = schema(
    "ResourceLogs",
    &[f(1, Msg(&RESOURCE)), f(2, Msg(&SCOPE_LOGS)), f(3, Str)],
);
static SCOPE_LOGS: Schema = item_schema(
    "ScopeLogs",
    2,
    &[f(1, Msg(&SCOPE)), f(2, Msg(&LOG_RECORD)), f(3, Str)],
);
static LOG_RECORD: Schema = schema(
    "LogRecord",
    &[
        f(1, I64),
        f(2, Varint),
        f(3, Str),
        f(5, Msg(&ANY_VALUE)),
        f(6, Msg(&KEY_VALUE)),
        f(7, Varint),
        f(8, I32),
        f(9, Bytes),
        f(10, Bytes),
        f(11, I64),
        f(12, Str),
    ],
);

// metrics.proto
static EXPORT_METRICS: Schema = schema(
    "ExportMetricsServiceRequest",
    &[f(1, Msg(&RESOURCE_METRICS))],
);
static RESOURCE_METRICS: Schema = schema(
    "ResourceMetrics",
    &[f(1, Msg(&RESOURCE)), f(2, Msg(&SCOPE_METRICS)), f(3, Str)],
);
static SCOPE_METRICS: Schema = schema(
    "ScopeMetrics",
    &[f(1, Msg(&SCOPE)), f(2, Msg(&METRIC)), f(3, Str)],
);
static METRIC: Schema = schema(
    "Metric",
    &[
        f(1, Str),
        f(2, Str),
        f(3, Str),
        f(5, Msg(&GAUGE)),
        f(7, Msg(&SUM)),
        f(9, Msg(&HISTOGRAM)),
        f(10, Msg(&EXP_HISTOGRAM)),
        f(11, Msg(&SUMMARY)),
        f(12, Msg(&KEY_VALUE)),
    ],
);
static GAUGE: Schema = item_schema("Gauge", 1, &[f(1, Msg(&NUMBER_POINT))]);
static SUM: Schema = item_schema(
    "Sum",
    1,
    &[f(1, Msg(&NUMBER_POINT)), f(2, Varint), f(3, Varint)],
);
static HISTOGRAM: Schema =
    item_schema("Histogram", 1, &[f(1, Msg(&HISTOGRAM_POINT)), f(2, Varint)]);
static EXP_HISTOGRAM: Schema = item_schema(
    "ExponentialHistogram",
    1,
    &[f(1, Msg(&EXP_HISTOGRAM_POINT)), f(2, Varint)],
);
static SUMMARY: Schema = item_schema("Summary", 1, &[f(1, Msg(&SUMMARY_POINT))]);
static NUMBER_POINT: Schema = schema(
    "NumberDataPoint",
    &[
        f(2, I64),
        f(3, I64),
        f(4, I64),
        f(5, Msg(&EXEMPLAR)),
        f(6, I64),
        f(7, Msg(&KEY_VALUE)),
        f(8, Varint),
    ],
);
static HISTOGRAM_POINT: Schema = schema(
    "HistogramDataPoint",
    &[
        f(2, I64),
        f(3, I64),
        f(4, I64),
        f(5, I64),
        f(6, PackedI64),
        f(7, PackedI64),
        f(8, Msg(&EXEMPLAR)),
        f(9, Msg(&KEY_VALUE)),
        f(10, Varint),
        f(11, I64),
        f(12, I64),
    ],
);
static EXP_HISTOGRAM_POINT: Schema = schema(
    "ExponentialHistogramDataPoint",
    &[
        f(1, Msg(&KEY_VALUE)),
        f(2, I64),
        f(3, I64),
        f(4, I64),
        f(5, I64),
        f(6, Varint),
        f(7, I64),
        f(8, Msg(&BUCKETS)),
        f(9, Msg(&BUCKETS)),
        f(10, Varint),
        f(11, Msg(&EXEMPLAR)),
        f(12, I64),
        f(13, I64),
        f(14, I64),
    ],
);
static BUCKETS: Schema = schema("Buckets", &[f(1, Varint), f(2, PackedVarint)]);
static SUMMARY_POINT: Schema = schema(
    "SummaryDataPoint",
    &[
        f(2, I64),
        f(3, I64),
        f(4, I64),
        f(5, I64),
        f(6, Msg(&VALUE_AT_QUANTILE)),
        f(7, Msg(&KEY_VALUE)),
        f(8, Varint),
    ],
);
static VALUE_AT_QUANTILE: Schema = schema("ValueAtQuantile", &[f(1, I64), f(2, I64)]);
static EXEMPLAR: Schema = schema(
    "Exemplar",
    &[
        f(2, I64),
        f(3, I64),
        f(4, Bytes),
        f(5, Bytes),
        f(6, I64),
        f(7, Msg(&KEY_VALUE)),
    ],
);

#[cfg(test)]
mod tests;
