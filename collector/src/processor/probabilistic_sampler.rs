//! `probabilistic_sampler`: keeps a percentage of traces, deciding by trace id so every span of
//! a trace, in every collector with the same seed, gets the same decision (the collector's
//! `hash_seed` mode: FNV-1a of seed and trace id into 16384 buckets).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::batch::{Batch, Decoded};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::processor::Live;
use crate::telemetry::Counter;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Percentage of traces kept, 0 to 100.
    pub sampling_percentage: f64,
    /// Collectors that must agree on decisions use the same seed.
    pub hash_seed: u32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            sampling_percentage: 100.0,
            hash_seed: 0,
        }
    }
}

impl ComponentConfig for SamplerConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        if (0.0..=100.0).contains(&self.sampling_percentage) {
            Vec::new()
        } else {
            vec![(
                vec!["sampling_percentage".into()],
                format!("{} is not between 0 and 100", self.sampling_percentage),
            )]
        }
    }
}

const BUCKETS: u32 = 0x4000;

/// Whether the trace with this id is kept.
pub fn keep(trace_id: &[u8], seed: u32, threshold: u32) -> bool {
    let mut hash: u32 = 0x811c9dc5;
    for byte in seed.to_le_bytes().iter().chain(trace_id) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x01000193);
    }
    hash & (BUCKETS - 1) < threshold
}

/// A compiled sampling decision rule.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    seed: u32,
    threshold: u32,
}

impl Rate {
    pub fn new(config: &SamplerConfig) -> Rate {
        let threshold = (config.sampling_percentage / 100.0 * f64::from(BUCKETS)) as u32;
        Rate {
            seed: config.hash_seed,
            threshold,
        }
    }
}

struct Sampler {
    rate: Live<Rate>,
    next: Next,
    dropped: Counter,
}

#[async_trait]
impl Consumer for Sampler {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let before = batch.items();
        let decoded = batch.decoded_mut()?;
        let rate = **self.rate.load();
        let keep = |trace_id: &[u8]| keep(trace_id, rate.seed, rate.threshold);
        match decoded {
            Decoded::Traces(req) => req
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .for_each(|s| s.spans.retain(|span| keep(&span.trace_id))),
            // Log records without a trace id are kept: there is nothing to decide by.
            Decoded::Logs(req) => req
                .resource_logs
                .iter_mut()
                .flat_map(|r| &mut r.scope_logs)
                .for_each(|s| {
                    s.log_records
                        .retain(|l| l.trace_id.is_empty() || keep(&l.trace_id))
                }),
            Decoded::Metrics(_) => {}
        }
        decoded.prune_empty();
        self.dropped.add(before - batch.items());
        if batch.is_empty() {
            batch.discard();
            return Ok(());
        }
        self.next.consume(batch).await
    }
}

pub(super) fn build(rate: Live<Rate>, id: &ComponentId, next: Next, context: &Context) -> Next {
    let dropped = context.registry.counter(
        "otelcol_processor_probabilistic_sampler_dropped_items",
        "Items not sampled.",
        &[("processor", id.as_str())],
    );
    Arc::new(Sampler {
        rate,
        next,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_the_percentage_and_is_consistent() {
        let threshold = (25.0 / 100.0 * f64::from(BUCKETS)) as u32;
        let ids: Vec<[u8; 16]> = (0u64..20_000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.wrapping_mul(0x9e3779b97f4a7c15).to_le_bytes());
                id[8..].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        let kept = ids.iter().filter(|id| keep(*id, 7, threshold)).count();
        assert!(
            (4_500..5_500).contains(&kept),
            "kept {kept} of 20000 at 25%"
        );
        assert!(
            ids.iter()
                .all(|id| keep(id, 7, threshold) == keep(id, 7, threshold))
        );
        assert!(ids.iter().all(|id| keep(id, 7, BUCKETS)));
        assert!(!ids.iter().any(|id| keep(id, 7, 0)));
    }
}
