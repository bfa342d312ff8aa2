//! Processors: stages between receivers and exporters that batch, limit, change or drop data.

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod memory_limiter;
pub mod probabilistic_sampler;

use odigos_proto::Signal;

use crate::config::{ComponentId, ParseError, parse_component};
use crate::consumer::Next;
use crate::topology::Context;
use crate::yaml::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum ProcessorConfig {
    Batch(batch::BatchConfig),
    MemoryLimiter(memory_limiter::MemoryLimiterConfig),
    Resource(attributes::ResourceConfig),
    Attributes(attributes::AttributesConfig),
    Filter(Box<filter::FilterConfig>),
    ProbabilisticSampler(probabilistic_sampler::SamplerConfig),
}

impl ProcessorConfig {
    pub const KINDS: &[&str] = &[
        "batch",
        "memory_limiter",
        "resource",
        "attributes",
        "filter",
        "probabilistic_sampler",
    ];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        Ok(match kind {
            "batch" => ProcessorConfig::Batch(parse_component(value)?),
            "memory_limiter" => ProcessorConfig::MemoryLimiter(parse_component(value)?),
            "resource" => ProcessorConfig::Resource(parse_component(value)?),
            "attributes" => ProcessorConfig::Attributes(parse_component(value)?),
            "filter" => ProcessorConfig::Filter(Box::new(parse_component(value)?)),
            "probabilistic_sampler" => {
                ProcessorConfig::ProbabilisticSampler(parse_component(value)?)
            }
            _ => return Err(ParseError::UnknownType { known: Self::KINDS }),
        })
    }

    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ProcessorConfig::ProbabilisticSampler(_) => &[Signal::Traces, Signal::Logs],
            _ => &Signal::ALL,
        }
    }

    /// Builds the processor in front of `next`, for one pipeline of `signal`.
    pub fn build(&self, id: &ComponentId, signal: Signal, next: Next, context: &Context) -> Next {
        match self {
            ProcessorConfig::Batch(config) => batch::build(config, id, signal, next, context),
            ProcessorConfig::MemoryLimiter(config) => {
                memory_limiter::build(config, id, next, context)
            }
            ProcessorConfig::Resource(config) => attributes::build_resource(config, next),
            ProcessorConfig::Attributes(config) => attributes::build(config, next),
            ProcessorConfig::Filter(config) => filter::build(config, id, next, context),
            ProcessorConfig::ProbabilisticSampler(config) => {
                probabilistic_sampler::build(config, id, next, context)
            }
        }
    }
}
