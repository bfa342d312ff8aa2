//! Protocol types shared by every part of odigos-rs.
//!
//! - [`odiglet`]: what the control plane tells odiglet to trace.
//! - [`opamp`]: the OpAMP messages, compiled from `proto/opamp.proto` at build time.
//! - [`otlp`]: the OTLP messages (re-exported from `opentelemetry-proto`) and [`Signal`].
//! - [`wire`]: a validating scanner over encoded OTLP export requests that counts items without
//!   decoding them, so data no processor reads is forwarded as the bytes it arrived in.
//! - [`codec`]: a tonic codec that moves those bytes through gRPC untouched.
//! - [`rpc`]: `google.rpc.Status` and `RetryInfo`, how OTLP tells a client to retry later.
//! - [`yaml`]: YAML parsing with error locations, env substitution and secret redaction.
//! - [`private`]: writing files that may hold secrets: owner-only, never half written.

pub mod codec;
pub mod odiglet;
pub mod opamp;
pub mod private;
pub mod rpc;
pub mod wire;
pub mod yaml;

pub use opentelemetry_proto::tonic as otlp;

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The name used in pipeline ids and configs: `traces`, `metrics`, `logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// What one item of this signal is called in counters: spans, metric points, log records.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    /// The gRPC method path of the OTLP export service for this signal.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The OTLP/HTTP path for this signal.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|sig| sig.as_str() == s)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
