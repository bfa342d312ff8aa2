//! The unit of data that flows through a pipeline.

use bytes::{Bytes, BytesMut};
use odigos_proto::Signal;
use odigos_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use odigos_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::common::v1::KeyValue;
use odigos_proto::otlp::metrics::v1::metric;
use odigos_proto::wire;
use prost::Message;

/// Telemetry of one signal: either the validated bytes of an `Export*ServiceRequest`, or the
/// decoded request once a processor has needed to read or change it.
#[derive(Clone, Debug)]
pub enum Batch {
    Encoded {
        signal: Signal,
        bytes: Bytes,
        items: usize,
    },
    Decoded(Decoded),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Batch {
    /// Validates encoded bytes of `signal` and wraps them without decoding.
    pub fn from_bytes(signal: Signal, bytes: Bytes) -> Result<Batch, wire::WireError> {
        let items = wire::scan(signal, &bytes)?.items;
        Ok(Batch::Encoded {
            signal,
            bytes,
            items,
        })
    }

    pub fn signal(&self) -> Signal {
        match self {
            Batch::Encoded { signal, .. } => *signal,
            Batch::Decoded(Decoded::Traces(_)) => Signal::Traces,
            Batch::Decoded(Decoded::Metrics(_)) => Signal::Metrics,
            Batch::Decoded(Decoded::Logs(_)) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records in this batch.
    pub fn items(&self) -> usize {
        match self {
            Batch::Encoded { items, .. } => *items,
            Batch::Decoded(decoded) => decoded.items(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items() == 0
    }

    /// The decoded request, decoding it first if needed.
    pub fn decoded_mut(&mut self) -> &mut Decoded {
        if let Batch::Encoded { signal, bytes, .. } = self {
            // The bytes passed `wire::scan`, which accepts nothing a full decode refuses.
            let decoded = Decoded::decode(*signal, bytes).expect("validated OTLP decodes");
            *self = Batch::Decoded(decoded);
        }
        match self {
            Batch::Decoded(decoded) => decoded,
            Batch::Encoded { .. } => unreachable!(),
        }
    }

    pub fn into_decoded(mut self) -> Decoded {
        self.decoded_mut();
        match self {
            Batch::Decoded(decoded) => decoded,
            Batch::Encoded { .. } => unreachable!(),
        }
    }

    /// The encoded request, encoding it first if a processor decoded it.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Batch::Encoded { bytes, .. } => bytes,
            Batch::Decoded(decoded) => decoded.encode(),
        }
    }

    /// Joins batches of one signal into one request by concatenating their encodings.
    pub fn concat(signal: Signal, parts: Vec<Batch>) -> Batch {
        let items = parts.iter().map(Batch::items).sum();
        let bytes = match <[Batch; 1]>::try_from(parts) {
            Ok([only]) => only.into_bytes(),
            Err(parts) => {
                let parts: Vec<Bytes> = parts.into_iter().map(Batch::into_bytes).collect();
                let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                parts.iter().for_each(|part| joined.extend_from_slice(part));
                joined.freeze()
            }
        };
        Batch::Encoded {
            signal,
            bytes,
            items,
        }
    }

    /// Splits an encoded batch at resource boundaries into pieces of at most `max_items` items
    /// (a single resource larger than that stays whole).
    pub fn split(self, max_items: usize) -> Vec<Batch> {
        if max_items == 0 || self.items() <= max_items {
            return vec![self];
        }
        let signal = self.signal();
        let bytes = self.into_bytes();
        let mut pieces = Vec::new();
        let (mut start, mut end, mut items) = (0, 0, 0);
        for entry in wire::resource_entries(&bytes) {
            let offset = entry.as_ptr() as usize - bytes.as_ptr() as usize;
            let count = wire::scan(signal, entry)
                .map(|scan| scan.items)
                .unwrap_or(0);
            if items > 0 && items + count > max_items {
                pieces.push(Batch::Encoded {
                    signal,
                    bytes: bytes.slice(start..end),
                    items,
                });
                (start, items) = (offset, 0);
            }
            end = offset + entry.len();
            items += count;
        }
        pieces.push(Batch::Encoded {
            signal,
            bytes: bytes.slice(start..end),
            items,
        });
        pieces
    }
}

impl Decoded {
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Decoded, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => Decoded::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Metrics => Decoded::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => Decoded::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Decoded::Traces(req) => req.encode_to_vec(),
            Decoded::Metrics(req) => req.encode_to_vec(),
            Decoded::Logs(req) => req.encode_to_vec(),
        }
        .into()
    }

    pub fn items(&self) -> usize {
        match self {
            Decoded::Traces(req) => req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Decoded::Metrics(req) => req
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.len(),
                    Some(metric::Data::Sum(s)) => s.data_points.len(),
                    Some(metric::Data::Histogram(h)) => h.data_points.len(),
                    Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(metric::Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                })
                .sum(),
            Decoded::Logs(req) => req
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
        }
    }

    /// Calls `f` with the attributes of every resource.
    pub fn for_each_resource_attributes(&mut self, mut f: impl FnMut(&mut Vec<KeyValue>)) {
        let resources: Vec<_> = match self {
            Decoded::Traces(r) => r
                .resource_spans
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect(),
            Decoded::Metrics(r) => r
                .resource_metrics
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect(),
            Decoded::Logs(r) => r
                .resource_logs
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect(),
        };
        for resource in resources {
            f(&mut resource.get_or_insert_with(Default::default).attributes);
        }
    }

    /// Calls `f` with the attributes of every span, log record or metric data point.
    pub fn for_each_item_attributes(&mut self, mut f: impl FnMut(&mut Vec<KeyValue>)) {
        match self {
            Decoded::Traces(req) => req
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
                .for_each(|span| f(&mut span.attributes)),
            Decoded::Logs(req) => req
                .resource_logs
                .iter_mut()
                .flat_map(|r| &mut r.scope_logs)
                .flat_map(|s| &mut s.log_records)
                .for_each(|log| f(&mut log.attributes)),
            Decoded::Metrics(req) => {
                let metrics = req
                    .resource_metrics
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_metrics)
                    .flat_map(|s| &mut s.metrics);
                for metric in metrics {
                    match &mut metric.data {
                        Some(metric::Data::Gauge(g)) => {
                            g.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                        }
                        Some(metric::Data::Sum(s)) => {
                            s.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                        }
                        Some(metric::Data::Histogram(h)) => {
                            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                        }
                        Some(metric::Data::ExponentialHistogram(h)) => {
                            h.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                        }
                        Some(metric::Data::Summary(s)) => {
                            s.data_points.iter_mut().for_each(|p| f(&mut p.attributes))
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Drops resources and scopes left with no items by a filtering processor.
    pub fn prune_empty(&mut self) {
        match self {
            Decoded::Traces(req) => req.resource_spans.retain_mut(|r| {
                r.scope_spans.retain(|s| !s.spans.is_empty());
                !r.scope_spans.is_empty()
            }),
            Decoded::Logs(req) => req.resource_logs.retain_mut(|r| {
                r.scope_logs.retain(|s| !s.log_records.is_empty());
                !r.scope_logs.is_empty()
            }),
            Decoded::Metrics(req) => req.resource_metrics.retain_mut(|r| {
                r.scope_metrics.retain(|s| !s.metrics.is_empty());
                !r.scope_metrics.is_empty()
            }),
        }
    }

    /// The request as OTLP JSON.
    pub fn to_json(&self) -> String {
        let json = match self {
            Decoded::Traces(req) => serde_json::to_string(req),
            Decoded::Metrics(req) => serde_json::to_string(req),
            Decoded::Logs(req) => serde_json::to_string(req),
        };
        json.expect("OTLP messages serialize to JSON")
    }

    /// Parses an OTLP JSON request of `signal`.
    pub fn from_json(signal: Signal, json: &[u8]) -> Result<Decoded, serde_json::Error> {
        Ok(match signal {
            Signal::Traces => Decoded::Traces(serde_json::from_slice(json)?),
            Signal::Metrics => Decoded::Metrics(serde_json::from_slice(json)?),
            Signal::Logs => Decoded::Logs(serde_json::from_slice(json)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn traces(resources: usize, spans: usize) -> Batch {
        let req = ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|_| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![
                            Span {
                                name: "s".into(),
                                ..Default::default()
                            };
                            spans
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        Batch::from_bytes(Signal::Traces, req.encode_to_vec().into()).unwrap()
    }

    #[test]
    fn concat_keeps_every_item() {
        let joined = Batch::concat(Signal::Traces, vec![traces(1, 3), traces(2, 2)]);
        assert_eq!(joined.items(), 7);
        let Decoded::Traces(req) = joined.into_decoded() else {
            panic!()
        };
        assert_eq!(req.resource_spans.len(), 3);
    }

    #[test]
    fn split_at_resource_boundaries() {
        let pieces = traces(5, 10).split(25);
        let sizes: Vec<usize> = pieces.iter().map(Batch::items).collect();
        assert_eq!(sizes, vec![20, 20, 10]);
        let whole = traces(1, 40).split(25);
        assert_eq!(whole.len(), 1);
    }

    #[test]
    fn json_round_trip() {
        let decoded = traces(1, 2).into_decoded();
        let json = decoded.to_json();
        assert!(json.contains("\"resourceSpans\""), "{json}");
        assert_eq!(
            Decoded::from_json(Signal::Traces, json.as_bytes()).unwrap(),
            decoded
        );
    }
}
