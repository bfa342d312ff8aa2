//! `debug`: logs what passes through, as a summary, one line per item, or in full.

use async_trait::async_trait;
use bytes::Bytes;
use odigos_proto::Signal;
use serde::Deserialize;

use super::queue::{self, SendError, Sender};
use crate::batch::Decoded;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::Next;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// `basic`: counts; `normal`: one line per span, log record or metric; `detailed`: the whole
    /// request as OTLP JSON.
    pub verbosity: Verbosity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

impl ComponentConfig for DebugConfig {}

struct Debug {
    id: String,
    verbosity: Verbosity,
}

#[async_trait]
impl Sender for Debug {
    async fn send(&self, signal: Signal, body: Bytes) -> Result<(), SendError> {
        let decoded = queue::decode(signal, &body)?;
        let items = decoded.items();
        tracing::info!(exporter = %self.id, %signal, items, "{items} {}", signal.item_name());
        match self.verbosity {
            Verbosity::Basic => {}
            Verbosity::Detailed => tracing::info!(exporter = %self.id, "{}", decoded.to_json()),
            Verbosity::Normal => {
                for line in summary_lines(&decoded) {
                    tracing::info!(exporter = %self.id, "{line}");
                }
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summary_lines(decoded: &Decoded) -> Vec<String> {
    match decoded {
        Decoded::Traces(req) => req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| {
                format!(
                    "span {:?} trace_id={} span_id={} attributes={}",
                    s.name,
                    hex(&s.trace_id),
                    hex(&s.span_id),
                    s.attributes.len()
                )
            })
            .collect(),
        Decoded::Logs(req) => req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|l| {
                let body = crate::processor::attributes::value_text(l.body.as_ref());
                format!(
                    "log {} {:?} attributes={}",
                    l.severity_text,
                    body,
                    l.attributes.len()
                )
            })
            .collect(),
        Decoded::Metrics(req) => req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| format!("metric {:?} unit={:?}", m.name, m.unit))
            .collect(),
    }
}

pub(super) fn build(
    config: &DebugConfig,
    id: &ComponentId,
    context: &Context,
) -> Result<Next, String> {
    let debug = Debug {
        id: id.to_string(),
        verbosity: config.verbosity,
    };
    queue::build_local(id, Box::new(debug), context)
}
