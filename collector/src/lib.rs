//! The odigos-rs collector: OTLP receivers, processors and exporters wired into pipelines from
//! OpenTelemetry Collector YAML.
//!
//! Data moves as [`Batch`]es. A batch stays in the encoded bytes it arrived in until a processor
//! needs to read it, so a pipeline of receivers, `batch` and exporters never decodes a span.

pub mod batch;
pub mod config;
pub mod consumer;
pub mod exporter;
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
