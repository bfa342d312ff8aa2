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

use crate::ack::Acks;
use crate::consumer::ConsumeError;

/// Telemetry of one signal on its way through a pipeline, with the acknowledgements of the
/// senders whose data it holds. The data is either the validated bytes of an
/// `Export*ServiceRequest`, or the decoded request once a processor has needed to read or
/// change it.
#[derive(Clone, Debug)]
pub struct Batch {
    data: Data,
    acks: Acks,
}

#[derive(Clone, Debug)]
enum Data {
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
        Ok(Batch::trusted(signal, bytes, items))
    }

    /// Wraps bytes known to be valid, with their item count: bytes that passed
    /// [`wire::scan`] before (in this process or before they were written to a queue on disk),
    /// or that this process encoded itself.
    pub fn trusted(signal: Signal, bytes: Bytes, items: usize) -> Batch {
        Batch {
            data: Data::Encoded {
                signal,
                bytes,
                items,
            },
            acks: Acks::default(),
        }
    }

    pub fn from_decoded(decoded: Decoded) -> Batch {
        Batch {
            data: Data::Decoded(decoded),
            acks: Acks::default(),
        }
    }

    /// The same data, carrying `acks`.
    pub fn with_acks(mut self, acks: Acks) -> Batch {
        self.acks = acks;
        self
    }

    /// Takes the acks off the data: the caller settles them.
    pub fn take_acks(&mut self) -> Acks {
        std::mem::take(&mut self.acks)
    }

    /// Refuses every sender of this batch with `error`, and returns it for the caller to
    /// return: how a stage turns data away.
    pub fn refuse(mut self, error: ConsumeError) -> ConsumeError {
        self.take_acks().refuse(&error);
        error
    }

    /// Drops the data on purpose (filtered out, sampled away, written nowhere): its senders
    /// have nothing to retry.
    pub fn discard(mut self) {
        self.take_acks().accept();
    }

    pub fn signal(&self) -> Signal {
        match &self.data {
            Data::Encoded { signal, .. } => *signal,
            Data::Decoded(Decoded::Traces(_)) => Signal::Traces,
            Data::Decoded(Decoded::Metrics(_)) => Signal::Metrics,
            Data::Decoded(Decoded::Logs(_)) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records in this batch.
    pub fn items(&self) -> usize {
        match &self.data {
            Data::Encoded { items, .. } => *items,
            Data::Decoded(decoded) => decoded.items(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items() == 0
    }

    /// The decoded request, decoding it first if needed. Bytes that passed [`wire::scan`]
    /// always decode; should they not, the batch's senders are refused and the error returned.
    pub fn decoded_mut(&mut self) -> Result<&mut Decoded, ConsumeError> {
        if let Data::Encoded { signal, bytes, .. } = &self.data {
            match Decoded::decode(*signal, bytes) {
                Ok(decoded) => self.data = Data::Decoded(decoded),
                Err(e) => {
                    let error = ConsumeError::Rejected(format!("undecodable {signal}: {e}"));
                    self.take_acks().refuse(&error);
                    return Err(error);
                }
            }
        }
        // A processor may change the data: where each sender's part lies is no longer known.
        self.acks.unplace();
        match &mut self.data {
            Data::Decoded(decoded) => Ok(decoded),
            Data::Encoded { .. } => unreachable!("decoded above"),
        }
    }

    /// The decoded request. Take the acks first: they are refused with the batch.
    pub fn into_decoded(mut self) -> Result<Decoded, ConsumeError> {
        self.decoded_mut()?;
        match self.data {
            Data::Decoded(decoded) => Ok(decoded),
            Data::Encoded { .. } => unreachable!("decoded above"),
        }
    }

    /// The encoded request, encoding it first if a processor decoded it.
    pub fn to_bytes(&self) -> Bytes {
        match &self.data {
            Data::Encoded { bytes, .. } => bytes.clone(),
            Data::Decoded(decoded) => decoded.encode(),
        }
    }

    /// Encodes a decoded batch in place, so that copies share one encoding.
    pub fn encode(&mut self) {
        if let Data::Decoded(decoded) = &self.data {
            self.data = Data::Encoded {
                signal: self.signal(),
                bytes: decoded.encode(),
                items: decoded.items(),
            };
        }
    }

    /// Joins batches of one signal into one request by concatenating their encodings; the
    /// joined batch carries every part's acks, each placed over its own part.
    pub fn concat(signal: Signal, parts: Vec<Batch>) -> Batch {
        if parts.len() == 1 {
            let mut only = parts.into_iter().next().expect("one part");
            only.encode();
            return only;
        }
        let items = parts.iter().map(Batch::items).sum();
        let parts: Vec<(Acks, Bytes)> = (parts.into_iter())
            .map(|mut part| (part.take_acks(), part.to_bytes()))
            .collect();
        let mut acks = Acks::default();
        let mut joined = BytesMut::with_capacity(parts.iter().map(|(_, bytes)| bytes.len()).sum());
        for (part_acks, bytes) in parts {
            acks.append_part(part_acks, joined.len()..joined.len() + bytes.len());
            joined.extend_from_slice(&bytes);
        }
        Batch::trusted(signal, joined.freeze(), items).with_acks(acks)
    }

    /// Splits a batch at resource boundaries into pieces of at most `max_items` items (a
    /// single resource larger than that stays whole). Each piece answers only the senders
    /// whose data it holds.
    pub fn split(mut self, max_items: usize) -> Vec<Batch> {
        if max_items == 0 || self.items() <= max_items {
            return vec![self];
        }
        let signal = self.signal();
        let acks = self.take_acks();
        let bytes = self.to_bytes();
        let mut ranges = Vec::new();
        let (mut start, mut end, mut items) = (0, 0, 0);
        for entry in wire::resource_entries(&bytes) {
            let offset = entry.as_ptr() as usize - bytes.as_ptr() as usize;
            let count = wire::scan(signal, entry)
                .map(|scan| scan.items)
                .unwrap_or(0);
            if items > 0 && items + count > max_items {
                ranges.push((start..end, items));
                (start, items) = (offset, 0);
            }
            end = offset + entry.len();
            items += count;
        }
        ranges.push((start..end, items));
        let pieces = ranges
            .into_iter()
            .map(|(range, items)| {
                let piece_acks = acks.slice(range.clone());
                Batch::trusted(signal, bytes.slice(range), items).with_acks(piece_acks)
            })
            .collect();
        acks.accept(); // handed on to the pieces
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

/// Batches for tests.
#[cfg(test)]
pub(crate) mod testing {
    use odigos_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::ack::{Ack, Receipt};

    /// `n` log records in one resource, with the receipt its sender waits on.
    pub(crate) fn logs(n: usize) -> (Batch, Receipt) {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (ack, receipt) = Ack::new();
        let batch = Batch::from_bytes(Signal::Logs, request.encode_to_vec().into()).unwrap();
        (batch.with_acks(Acks::one(ack)), receipt)
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
        let Decoded::Traces(req) = joined.into_decoded().unwrap() else {
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

    #[tokio::test]
    async fn a_refused_piece_answers_only_its_own_senders() {
        use crate::ack::Ack;
        let mut receipts = Vec::new();
        let parts = [traces(1, 10), traces(2, 10), traces(1, 10)]
            .into_iter()
            .map(|part| {
                let (ack, receipt) = Ack::new();
                receipts.push(receipt);
                part.with_acks(Acks::one(ack))
            })
            .collect();
        // One piece per resource: the second sender's data spans two pieces.
        let pieces = Batch::concat(Signal::Traces, parts).split(15);
        assert_eq!(pieces.iter().map(Batch::items).collect::<Vec<_>>(), [10; 4]);
        let mut error = None;
        for (i, piece) in pieces.into_iter().enumerate() {
            if i == 2 {
                error = Some(piece.refuse(ConsumeError::Rejected("piece 2".into())));
            } else {
                piece.discard();
            }
        }
        let error = error.unwrap();
        let outcomes: Vec<_> = futures_util::future::join_all(receipts).await;
        assert_eq!(outcomes, [Ok(()), Err(error), Ok(())]);
    }

    #[test]
    fn json_round_trip() {
        let decoded = traces(1, 2).into_decoded().unwrap();
        let json = decoded.to_json();
        assert!(json.contains("\"resourceSpans\""), "{json}");
        assert_eq!(
            Decoded::from_json(Signal::Traces, json.as_bytes()).unwrap(),
            decoded
        );
    }
}
