//! Exporters: where telemetry leaves the collector.

pub mod debug;
pub mod file;
pub mod otlp;
pub mod otlphttp;
pub mod queue;
pub mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use odigos_proto::Signal;
use serde::Deserialize;

use crate::Batch;
use crate::config::{ComponentConfig, ComponentId, ParseError, parse_component};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::topology::Context;
use crate::yaml::Value;

pub use tls::TlsConfig;

#[derive(Clone, Debug, PartialEq)]
pub enum ExporterConfig {
    Otlp(otlp::OtlpExporterConfig),
    OtlpHttp(otlphttp::OtlpHttpExporterConfig),
    Debug(debug::DebugConfig),
    File(file::FileConfig),
    Nop,
}

impl ExporterConfig {
    pub const KINDS: &[&str] = &["otlp", "otlphttp", "debug", "file", "nop"];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        Ok(match kind {
            "otlp" | "otlp_grpc" => ExporterConfig::Otlp(parse_component(value)?),
            "otlphttp" | "otlp_http" => ExporterConfig::OtlpHttp(parse_component(value)?),
            "debug" => ExporterConfig::Debug(parse_component(value)?),
            "file" => ExporterConfig::File(parse_component(value)?),
            "nop" => {
                parse_component::<NopConfig>(value)?;
                ExporterConfig::Nop
            }
            _ => return Err(ParseError::UnknownType { known: Self::KINDS }),
        })
    }

    pub fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    /// Its sending queue's settings, for an exporter that has them.
    pub(crate) fn queue_mut(&mut self) -> Option<&mut queue::QueueConfig> {
        match self {
            ExporterConfig::Otlp(config) => Some(&mut config.sending_queue),
            ExporterConfig::OtlpHttp(config) => Some(&mut config.sending_queue),
            _ => None,
        }
    }

    /// Builds the exporter; one instance serves every pipeline that lists it.
    pub fn build(&self, id: &ComponentId, context: &Context) -> Result<Next, String> {
        Ok(match self {
            ExporterConfig::Otlp(config) => otlp::build(config, id, context)?,
            ExporterConfig::OtlpHttp(config) => otlphttp::build(config, id, context)?,
            ExporterConfig::Debug(config) => debug::build(config, id, context)?,
            ExporterConfig::File(config) => file::build(config, id, context)?,
            ExporterConfig::Nop => Arc::new(Nop),
        })
    }
}

/// Builds exporter `id` of type `kind` from its YAML `settings`, outside any pipeline: how
/// odiglet sends what it records to its node collector.
pub fn standalone(kind: &str, id: &str, settings: &str, context: &Context) -> Result<Next, String> {
    let value = odigos_proto::yaml::parse(settings).map_err(|(_, e)| e)?;
    let config = ExporterConfig::parse(kind, value).map_err(|e| match e {
        ParseError::UnknownType { known } => {
            format!(
                "unknown exporter type {kind:?}; known: {}",
                known.join(", ")
            )
        }
        ParseError::Fields(problems) => problems
            .iter()
            .map(|(path, problem)| format!("{}: {problem}", path.join(".")))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    config.build(&ComponentId::new(id), context)
}

/// Builds exporter `id` of type `kind` from its YAML `settings`, as a pipeline would, and for
/// a network exporter sends one empty export of each of `signals`: whether the destination
/// can be reached and takes data, in the exporter's own words. Nothing is queued or retried.
pub async fn probe(kind: &str, id: &str, settings: &str, signals: &[Signal]) -> Result<(), String> {
    let context = Context::new();
    let mut value = odigos_proto::yaml::parse(settings).map_err(|(_, e)| e)?;
    let network = matches!(kind, "otlp" | "otlp_grpc" | "otlphttp" | "otlp_http");
    if network && let Value::Mapping(fields) = &mut value {
        let off = || {
            Value::Mapping(
                [("enabled".into(), Value::Bool(false))]
                    .into_iter()
                    .collect(),
            )
        };
        fields.insert("sending_queue".into(), off());
        fields.insert("retry_on_failure".into(), off());
    }
    let exporter = standalone(kind, id, &odigos_proto::yaml::to_string(&value), &context)?;
    if network {
        for &signal in signals {
            let empty = Batch::trusted(signal, bytes::Bytes::new(), 0);
            exporter
                .consume(empty)
                .await
                .map_err(|e| format!("{signal}: {e}"))?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NopConfig {}

impl ComponentConfig for NopConfig {}

/// `nop`: accepts everything and keeps nothing.
struct Nop;

#[async_trait]
impl Consumer for Nop {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        batch.discard();
        Ok(())
    }
}

/// How an exporter compresses what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}
