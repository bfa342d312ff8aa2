//! Processors: stages between receivers and exporters that batch, limit, change or drop data.

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod k8s_attributes;
pub mod memory_limiter;
pub mod pii_masking;
pub mod probabilistic_sampler;
mod span_edit;
pub mod span_renamer;
pub mod tail_sampling;
pub mod url_template;

use std::sync::Arc;

use arc_swap::ArcSwap;
use odigos_proto::Signal;

use attributes::Actions;

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
    TailSampling(tail_sampling::TailSamplingConfig),
    PiiMasking(pii_masking::PiiMaskingConfig),
    UrlTemplate(url_template::UrlTemplateConfig),
    SpanRenamer(span_renamer::SpanRenamerConfig),
    K8sAttributes(k8s_attributes::K8sAttributesConfig),
}

impl ProcessorConfig {
    pub const KINDS: &[&str] = &[
        "batch",
        "memory_limiter",
        "resource",
        "attributes",
        "filter",
        "probabilistic_sampler",
        "tail_sampling",
        "odigospiimasking",
        "odigosurltemplate",
        "odigosspanrenamer",
        "k8sattributes",
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
            "tail_sampling" => ProcessorConfig::TailSampling(parse_component(value)?),
            "odigospiimasking" => ProcessorConfig::PiiMasking(parse_component(value)?),
            "odigosurltemplate" => ProcessorConfig::UrlTemplate(parse_component(value)?),
            "odigosspanrenamer" => ProcessorConfig::SpanRenamer(parse_component(value)?),
            "k8sattributes" => ProcessorConfig::K8sAttributes(parse_component(value)?),
            _ => return Err(ParseError::UnknownType { known: Self::KINDS }),
        })
    }

    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ProcessorConfig::ProbabilisticSampler(_) => &[Signal::Traces, Signal::Logs],
            ProcessorConfig::TailSampling(_)
            | ProcessorConfig::PiiMasking(_)
            | ProcessorConfig::UrlTemplate(_)
            | ProcessorConfig::SpanRenamer(_) => &[Signal::Traces],
            _ => &Signal::ALL,
        }
    }

    /// Builds the processor in front of `next`, for one pipeline of `signal`.
    pub fn build(&self, id: &ComponentId, signal: Signal, next: Next, context: &Context) -> Built {
        fn live<T>(value: T) -> Live<T> {
            Arc::new(ArcSwap::from_pointee(value))
        }
        match self {
            ProcessorConfig::Batch(config) => {
                Built::fixed(batch::build(config, id, signal, next, context))
            }
            ProcessorConfig::MemoryLimiter(config) => {
                Built::fixed(memory_limiter::build(config, id, next, context))
            }
            ProcessorConfig::Resource(config) => {
                let actions = live(Actions::new(&config.attributes));
                let next = attributes::build(actions.clone(), true, next);
                Built::live(next, move |config| {
                    if let ProcessorConfig::Resource(c) = config {
                        actions.store(Arc::new(Actions::new(&c.attributes)));
                    }
                })
            }
            ProcessorConfig::Attributes(config) => {
                let actions = live(Actions::new(&config.actions));
                let next = attributes::build(actions.clone(), false, next);
                Built::live(next, move |config| {
                    if let ProcessorConfig::Attributes(c) = config {
                        actions.store(Arc::new(Actions::new(&c.actions)));
                    }
                })
            }
            ProcessorConfig::Filter(config) => {
                let rules = live(filter::Rulebook::new(config));
                let next = filter::build(rules.clone(), id, next, context);
                Built::live(next, move |config| {
                    if let ProcessorConfig::Filter(c) = config {
                        rules.store(Arc::new(filter::Rulebook::new(c)));
                    }
                })
            }
            ProcessorConfig::ProbabilisticSampler(config) => {
                let rate = live(probabilistic_sampler::Rate::new(config));
                let next = probabilistic_sampler::build(rate.clone(), id, next, context);
                Built::live(next, move |config| {
                    if let ProcessorConfig::ProbabilisticSampler(c) = config {
                        rate.store(Arc::new(probabilistic_sampler::Rate::new(c)));
                    }
                })
            }
            ProcessorConfig::TailSampling(config) => {
                let registry = context.registry.clone();
                let processor = id.to_string();
                let compile = move |c: &tail_sampling::TailSamplingConfig| {
                    tail_sampling::Policies::new(&c.policies, &registry, &processor)
                };
                let policies = live(compile(config));
                let next = tail_sampling::build(config, policies.clone(), id, next, context);
                // Holds the policies only: the processor's entry going away is what flushes it.
                Built::live(next, move |config| {
                    if let ProcessorConfig::TailSampling(c) = config {
                        policies.store(Arc::new(compile(c)));
                    }
                })
            }
            ProcessorConfig::PiiMasking(config) => {
                let compile = |c: &pii_masking::PiiMaskingConfig| {
                    pii_masking::Masker::new(c).expect("validated")
                };
                let masker = live(compile(config));
                let next = span_edit::build(masker.clone(), next);
                Built::live(next, move |config| {
                    if let ProcessorConfig::PiiMasking(c) = config {
                        masker.store(Arc::new(compile(c)));
                    }
                })
            }
            ProcessorConfig::UrlTemplate(config) => {
                let compile = |c: &url_template::UrlTemplateConfig| {
                    url_template::Templater::new(c).expect("validated")
                };
                let templater = live(compile(config));
                let next = span_edit::build(templater.clone(), next);
                Built::live(next, move |config| {
                    if let ProcessorConfig::UrlTemplate(c) = config {
                        templater.store(Arc::new(compile(c)));
                    }
                })
            }
            ProcessorConfig::SpanRenamer(config) => {
                let compile = |c: &span_renamer::SpanRenamerConfig| {
                    span_renamer::Renamer::new(c).expect("validated")
                };
                let renamer = live(compile(config));
                let next = span_edit::build(renamer.clone(), next);
                Built::live(next, move |config| {
                    if let ProcessorConfig::SpanRenamer(c) = config {
                        renamer.store(Arc::new(compile(c)));
                    }
                })
            }
            ProcessorConfig::K8sAttributes(config) => {
                let config = live(config.clone());
                let next = k8s_attributes::build(config.clone(), next);
                Built::live(next, move |new| {
                    if let ProcessorConfig::K8sAttributes(c) = new {
                        config.store(Arc::new(c.clone()));
                    }
                })
            }
        }
    }

    /// Whether an instance built from `self` can take `new` in place, through [`Built::update`].
    pub fn updatable_to(&self, new: &ProcessorConfig) -> bool {
        use ProcessorConfig::*;
        match (self, new) {
            // Its other settings shape the held traces: only the policies change in place.
            (TailSampling(was), TailSampling(now)) => was.updatable_to(now),
            _ => matches!(
                (self, new),
                (Resource(_), Resource(_))
                    | (Attributes(_), Attributes(_))
                    | (Filter(_), Filter(_))
                    | (ProbabilisticSampler(_), ProbabilisticSampler(_))
                    | (PiiMasking(_), PiiMasking(_))
                    | (UrlTemplate(_), UrlTemplate(_))
                    | (SpanRenamer(_), SpanRenamer(_))
                    | (K8sAttributes(_), K8sAttributes(_))
            ),
        }
    }
}

/// Settings a running processor reads per batch, swapped without rewiring.
pub type Live<T> = Arc<ArcSwap<T>>;

/// Stores a new config's settings into a running processor.
pub type Updater = Box<dyn Fn(&ProcessorConfig) + Send + Sync>;

/// A built processor: its entry, and how to change its settings in place when it can.
pub struct Built {
    pub next: Next,
    pub update: Option<Updater>,
}

impl Built {
    fn fixed(next: Next) -> Built {
        Built { next, update: None }
    }

    fn live(next: Next, update: impl Fn(&ProcessorConfig) + Send + Sync + 'static) -> Built {
        Built {
            next,
            update: Some(Box::new(update)),
        }
    }
}
