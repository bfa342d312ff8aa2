//! The OTLP receiver: gRPC and HTTP (protobuf and JSON) for traces, metrics and logs.

mod grpc;
mod http;

use std::collections::HashMap;

use bytes::Bytes;
use odigos_proto::Signal;
use serde::{Deserialize, Deserializer};

use super::Running;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Next};
use crate::telemetry::Counter;
use crate::topology::Context;
use crate::{Batch, Decoded};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub protocols: Protocols,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC; `grpc:` with no settings enables it with defaults.
    #[serde(default, deserialize_with = "enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP; `http:` with no settings enables it with defaults.
    #[serde(default, deserialize_with = "enabled")]
    pub http: Option<HttpConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Largest request accepted, in MiB.
    pub max_recv_msg_size_mib: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".into(),
            max_recv_msg_size_mib: 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    /// Largest request body accepted, in bytes, after decompression.
    pub max_request_body_size: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "localhost:4318".into(),
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            max_request_body_size: 20 << 20,
        }
    }
}

fn enabled<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

impl ComponentConfig for OtlpConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            problems.push((vec!["protocols".into()], "enable grpc, http or both".into()));
        }
        if let Some(http) = &self.protocols.http {
            for (field, path) in [
                ("traces_url_path", &http.traces_url_path),
                ("metrics_url_path", &http.metrics_url_path),
                ("logs_url_path", &http.logs_url_path),
            ] {
                if !path.starts_with('/') {
                    problems.push((
                        vec!["protocols".into(), "http".into(), field.into()],
                        format!("{path:?} must start with /"),
                    ));
                }
            }
        }
        problems
    }
}

pub(super) async fn start(
    config: &OtlpConfig,
    id: &ComponentId,
    consumers: HashMap<Signal, Next>,
    context: &Context,
) -> Result<Running, String> {
    let mut running = Running {
        stops: Vec::new(),
        servers: Vec::new(),
    };
    if let Some(grpc) = &config.protocols.grpc {
        let ingest = Ingest::new(id, "grpc", &consumers, context);
        let (stop, server) = grpc::start(grpc, ingest).await?;
        running.stops.push(stop);
        running.servers.push(server);
    }
    if let Some(http) = &config.protocols.http {
        let ingest = Ingest::new(id, "http", &consumers, context);
        match http::start(http, ingest).await {
            Ok((stop, server)) => {
                running.stops.push(stop);
                running.servers.push(server);
            }
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        }
    }
    Ok(running)
}

/// What both transports do with a request: validate, count, hand to the pipeline.
struct Ingest {
    signals: [Option<Next>; 3],
    accepted: [Counter; 3],
    refused: [Counter; 3],
}

enum IngestError {
    /// Malformed data: the client must not retry.
    Invalid(String),
    /// No pipeline takes this signal from this receiver.
    Unsupported(Signal),
    /// Full: retry later.
    Exhausted(String),
    /// Refused downstream for good.
    Rejected(String),
}

impl Ingest {
    fn new(
        id: &ComponentId,
        transport: &str,
        consumers: &HashMap<Signal, Next>,
        context: &Context,
    ) -> Ingest {
        let counter = |outcome: &str, signal: Signal| {
            let name = format!("otelcol_receiver_{outcome}_{}", signal.item_name());
            let help = if outcome == "accepted" {
                "Items successfully pushed into the pipeline."
            } else {
                "Items that could not be pushed into the pipeline."
            };
            context.registry.counter(
                &name,
                help,
                &[("receiver", id.as_str()), ("transport", transport)],
            )
        };
        Ingest {
            signals: Signal::ALL.map(|s| consumers.get(&s).cloned()),
            accepted: Signal::ALL.map(|s| counter("accepted", s)),
            refused: Signal::ALL.map(|s| counter("refused", s)),
        }
    }

    /// The pipeline entry for `signal`, if this receiver feeds one.
    fn entry(&self, signal: Signal) -> Result<&Next, IngestError> {
        self.signals[signal as usize]
            .as_ref()
            .ok_or(IngestError::Unsupported(signal))
    }

    /// Validates an encoded request and pushes it on.
    async fn encoded(&self, signal: Signal, bytes: Bytes) -> Result<(), IngestError> {
        self.entry(signal)?;
        let batch =
            Batch::from_bytes(signal, bytes).map_err(|e| IngestError::Invalid(e.to_string()))?;
        self.push(batch).await
    }

    /// Validates an OTLP JSON request and pushes it on.
    async fn json(&self, signal: Signal, json: &[u8]) -> Result<(), IngestError> {
        self.entry(signal)?;
        let decoded = Decoded::from_json(signal, json)
            .map_err(|e| IngestError::Invalid(format!("invalid OTLP JSON: {e}")))?;
        self.push(Batch::Decoded(decoded)).await
    }

    async fn push(&self, batch: Batch) -> Result<(), IngestError> {
        let signal = batch.signal();
        let index = signal as usize;
        let next = self.entry(signal)?;
        let items = batch.items();
        if items == 0 {
            return Ok(());
        }
        match next.consume(batch).await {
            Ok(()) => {
                self.accepted[index].add(items);
                Ok(())
            }
            Err(e) => {
                self.refused[index].add(items);
                Err(match e {
                    ConsumeError::Exhausted(m) => IngestError::Exhausted(m),
                    ConsumeError::Rejected(m) => IngestError::Rejected(m),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
