//! The odigos-rs collector: OTLP receivers, processors and exporters wired into pipelines from
//! OpenTelemetry Collector YAML.
//!
//! Data moves as [`Batch`]es. A batch stays in the encoded bytes it arrived in until a processor
//! needs to read it, so a pipeline of receivers, `batch` and exporters never decodes a span. A
//! batch carries the acknowledgements of its senders ([`ack`]): they are answered once every
//! destination's queue has accepted their data.

pub mod ack;
pub mod batch;
pub mod config;
pub mod connector;
pub mod consumer;
pub mod exporter;
pub mod extension;
pub mod processor;
pub mod receiver;
pub mod telemetry;
pub mod topology;
use odigos_proto::yaml;

pub use batch::{Batch, Decoded};
pub use config::{Config, ConfigError, ConfigErrors};
pub use consumer::{ConsumeError, Consumer};
pub use odigos_proto::Signal;
pub use topology::Topology;
