use super::*;
use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::otlp::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
    exponential_histogram_data_point::Buckets, metric,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn traces(resources: usize, spans: usize) -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: vec![i as u8; 16],
        span_id: vec![1; 8],
        name: format!("span-{i}"),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        flags: 1,
        attributes: vec![
            kv("s", any_value::Value::StringValue("v".into())),
            kv("i", any_value::Value::IntValue(-3)),
            kv("d", any_value::Value::DoubleValue(1.5)),
            kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    }],
                }),
            ),
        ],
        events: vec![span::Event {
            name: "e".into(),
            time_unix_nano: 5,
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: vec![2; 16],
            flags: 3,
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|_| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("svc".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans).map(span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let number = NumberDataPoint {
        time_unix_nano: 1,
        ..Default::default()
    };
    let metric = |data| Metric {
        name: "m".into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(metric::Data::Gauge(Gauge {
                        data_points: vec![number.clone(); 2],
                    })),
                    metric(metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![0.5, 1.0],
                            sum: Some(2.0),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                    })),
                    metric(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint {
                            scale: -2,
                            positive: Some(Buckets {
                                offset: -1,
                                bucket_counts: vec![300, 1],
                            }),
                            ..Default::default()
                        }],
                        aggregation_temporality: 1,
                    })),
                    metric(metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint::default(); 3],
                    })),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("hi".into()))
                        }),
                        severity_number: 9,
                        trace_id: vec![7; 16],
                        ..Default::default()
                    };
                    4
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn counts_items_of_each_signal() {
    let t = traces(3, 5).encode_to_vec();
    assert_eq!(
        scan(Signal::Traces, &t),
        Ok(Scan {
            items: 15,
            resources: 3
        })
    );
    let m = metrics().encode_to_vec();
    assert_eq!(
        scan(Signal::Metrics, &m),
        Ok(Scan {
            items: 7,
            resources: 1
        })
    );
    let l = logs().encode_to_vec();
    assert_eq!(
        scan(Signal::Logs, &l),
        Ok(Scan {
            items: 4,
            resources: 1
        })
    );
    assert_eq!(scan(Signal::Traces, &[]), Ok(Scan::default()));
}

#[test]
fn each_resource_is_counted_under_its_service_name() {
    let mut request = traces(3, 2);
    request.resource_spans[1]
        .resource
        .as_mut()
        .unwrap()
        .attributes = vec![
        kv("host.name", any_value::Value::StringValue("h".into())),
        kv(
            "service.name",
            any_value::Value::StringValue("checkout".into()),
        ),
    ];
    request.resource_spans[2].resource = None;
    request.resource_spans[2].scope_spans[0].spans.pop();
    let bytes = request.encode_to_vec();
    let mut seen = Vec::new();
    let scan = scan_resources(Signal::Traces, &bytes, |entry, items| {
        seen.push((service_name(entry), items))
    })
    .unwrap();
    assert_eq!(scan.items, 5);
    assert_eq!(seen, [(Some("svc"), 2), (Some("checkout"), 2), (None, 1)]);
}

#[test]
fn concatenated_requests_decode_as_one() {
    let a = traces(1, 2).encode_to_vec();
    let b = traces(2, 3).encode_to_vec();
    let joined = [a, b].concat();
    assert_eq!(scan(Signal::Traces, &joined).unwrap().items, 8);
    let decoded = ExportTraceServiceRequest::decode(joined.as_slice()).unwrap();
    assert_eq!(decoded.resource_spans.len(), 3);
}

#[test]
fn resource_entries_split_and_rejoin() {
    let buf = traces(3, 2).encode_to_vec();
    let entries = resource_entries(&buf);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries.concat(), buf);
    assert_eq!(scan(Signal::Traces, entries[1]).unwrap().items, 2);
}

/// Every truncation and every single-byte corruption that the scanner accepts must also decode
/// with prost: the scanner never lets through what a full decode would refuse.
#[test]
fn never_accepts_what_prost_rejects() {
    fn check<M: Message + Default>(signal: Signal, buf: &[u8]) {
        for cut in 0..buf.len() {
            if scan(signal, &buf[..cut]).is_ok() {
                assert!(
                    M::decode(&buf[..cut]).is_ok(),
                    "{signal}: accepted truncation at {cut}"
                );
            }
        }
        let mut rng = 0x2545f4914f6cdd1du64;
        for i in 0..buf.len() {
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let mut bad = buf.to_vec();
                bad[i] = rng as u8;
                if scan(signal, &bad).is_ok()
                    && let Err(e) = M::decode(bad.as_slice())
                {
                    panic!("{signal}: accepted corruption at {i} ({:#x}): {e}", bad[i]);
                }
            }
        }
    }
    check::<ExportTraceServiceRequest>(Signal::Traces, &traces(2, 2).encode_to_vec());
    check::<ExportMetricsServiceRequest>(Signal::Metrics, &metrics().encode_to_vec());
    check::<ExportLogsServiceRequest>(Signal::Logs, &logs().encode_to_vec());
}

#[test]
fn errors_name_the_message_and_offset() {
    let buf = traces(1, 1).encode_to_vec();
    let err = scan(Signal::Traces, &buf[..buf.len() - 3]).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid OTLP protobuf at byte"),
        "{err}"
    );

    // A span name that is not UTF-8.
    let mut req = traces(1, 1);
    req.resource_spans[0].scope_spans[0].spans[0].name = "\u{1}XYZ".into();
    let mut buf = req.encode_to_vec();
    let at = buf.windows(4).position(|w| w == b"\x01XYZ").unwrap();
    buf[at] = 0xff;
    let err = scan(Signal::Traces, &buf).unwrap_err();
    assert_eq!(err.message, "Span");
    assert_eq!(err.problem, Problem::InvalidUtf8 { field: 5 });

    assert_eq!(
        scan(Signal::Logs, b"\x0a\x05ab").unwrap_err().problem,
        Problem::TruncatedLength {
            field: 1,
            len: 5,
            left: 2
        }
    );
    assert_eq!(
        scan(Signal::Logs, &[0x10]).unwrap_err().problem,
        Problem::TruncatedVarint
    );
    assert!(matches!(
        scan(Signal::Metrics, &[0x08, 0x01]).unwrap_err().problem,
        Problem::WrongWireType { field: 1, .. }
    ));
}

#[test]
fn deep_nesting_is_refused() {
    // AnyValue{array_value: ArrayValue{values: [AnyValue{...}]}} nested far beyond the limit.
    let mut value = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    };
    for _ in 0..120 {
        value = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut req = traces(1, 1);
    req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    }];
    let err = scan(Signal::Traces, &req.encode_to_vec()).unwrap_err();
    assert_eq!(err.problem, Problem::TooDeep);
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes shaped like protobuf, mostly valid and sometimes not in every way a decoder can
/// object to: field numbers from the schema and far beyond it (keys past 32 bits among them),
/// every wire type, overlong and truncated varints, wrong lengths, invalid UTF-8, nesting.
fn garbage(rng: &mut StdRng, depth: usize, out: &mut Vec<u8>) {
    for _ in 0..rng.random_range(0..6) {
        let field: u64 = match rng.random_range(0..10) {
            0 => rng.random_range(0..1 << 29),
            1 => rng.random_range(1 << 29..1 << 33),
            _ => rng.random_range(1..17),
        };
        let wire_type = match rng.random_range(0..12) {
            0 => rng.random_range(3..8),
            1..5 => 0,
            5 => 1,
            6 => 5,
            _ => 2,
        };
        varint(field << 3 | wire_type, out);
        match wire_type {
            0 => match rng.random_range(0..8) {
                0 => out.extend_from_slice(&[0xff; 10]),
                1 => out.extend_from_slice(&[0x80; 3]),
                _ => varint(rng.random(), out),
            },
            1 => out.extend((0..rng.random_range(6..9)).map(|_| rng.random::<u8>())),
            5 => out.extend((0..rng.random_range(2..5)).map(|_| rng.random::<u8>())),
            2 => {
                let mut body = Vec::new();
                match rng.random_range(0..4) {
                    0 if depth < 6 => garbage(rng, depth + 1, &mut body),
                    1 => body.extend_from_slice(&[0xc3, 0x28]),
                    _ => body.extend((0..rng.random_range(0..12)).map(|_| rng.random::<u8>())),
                }
                let len = match rng.random_range(0..10) {
                    0 => body.len() as u64 + rng.random_range(1..4),
                    1 => body.len().saturating_sub(1) as u64,
                    _ => body.len() as u64,
                };
                varint(len, out);
                out.extend_from_slice(&body);
            }
            _ => {}
        }
    }
}

/// Structured garbage, differentially: whatever the scanner accepts, prost decodes.
#[test]
fn structured_garbage_accepted_only_if_prost_decodes() {
    fn check<M: Message + Default>(signal: Signal, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut accepted = 0;
        for case in 0..20_000 {
            let mut buf = Vec::new();
            garbage(&mut rng, 0, &mut buf);
            if scan(signal, &buf).is_ok() {
                accepted += 1;
                if let Err(e) = M::decode(buf.as_slice()) {
                    panic!("{signal} case {case}: accepted {buf:02x?}, which prost refuses: {e}");
                }
            }
        }
        assert!(
            accepted > 1000,
            "{signal}: only {accepted} cases were valid"
        );
    }
    check::<ExportTraceServiceRequest>(Signal::Traces, 1);
    check::<ExportMetricsServiceRequest>(Signal::Metrics, 2);
    check::<ExportLogsServiceRequest>(Signal::Logs, 3);
}

#[test]
fn a_key_beyond_32_bits_is_refused() {
    // An unknown field whose number, cut to 32 bits, would be 100: prost refuses the key.
    let mut buf = Vec::new();
    varint(((1 << 32) + 100) << 3, &mut buf);
    buf.push(0);
    assert!(ExportTraceServiceRequest::decode(buf.as_slice()).is_err());
    assert!(matches!(
        scan(Signal::Traces, &buf).unwrap_err().problem,
        Problem::KeyTooLarge { .. }
    ));
}
