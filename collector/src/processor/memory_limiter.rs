//! `memory_limiter`: refuses data while the process uses more memory than allowed, so senders
//! back off instead of the collector growing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::Batch;
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::telemetry::Counter;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    /// How often resident memory is measured.
    #[serde(with = "crate::yaml::duration")]
    pub check_interval: Duration,
    /// Hard limit on resident memory, in MiB.
    pub limit_mib: u64,
    /// Headroom below the hard limit, in MiB: data is refused above `limit_mib - spike_limit_mib`.
    /// Defaults to 20% of the limit.
    pub spike_limit_mib: Option<u64>,
    /// The hard limit as a percentage of total memory (instead of `limit_mib`).
    pub limit_percentage: u64,
    /// The headroom as a percentage of total memory.
    pub spike_limit_percentage: u64,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 0,
            spike_limit_mib: None,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

impl ComponentConfig for MemoryLimiterConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.check_interval.is_zero() {
            problems.push((
                vec!["check_interval".into()],
                "must be greater than 0".into(),
            ));
        }
        match (self.limit_mib, self.limit_percentage) {
            (0, 0) => problems.push((
                vec!["limit_mib".into()],
                "set limit_mib or limit_percentage".into(),
            )),
            (_, p) if p > 100 => problems.push((
                vec!["limit_percentage".into()],
                format!("{p} is more than 100"),
            )),
            _ => {}
        }
        if let Some(spike) = self.spike_limit_mib
            && self.limit_mib != 0
            && spike >= self.limit_mib
        {
            problems.push((
                vec!["spike_limit_mib".into()],
                format!(
                    "must be less than limit_mib ({}), got {spike}",
                    self.limit_mib
                ),
            ));
        }
        problems
    }
}

impl MemoryLimiterConfig {
    /// The resident size, in bytes, above which data is refused.
    pub fn soft_limit_bytes(&self, total_memory: u64) -> u64 {
        let mib = 1u64 << 20;
        let (limit, spike) = if self.limit_mib != 0 {
            let limit = self.limit_mib * mib;
            (limit, self.spike_limit_mib.map_or(limit / 5, |s| s * mib))
        } else {
            let limit = total_memory / 100 * self.limit_percentage;
            (
                limit,
                total_memory / 100 * self.spike_limit_percentage.max(self.limit_percentage / 5),
            )
        };
        limit.saturating_sub(spike)
    }
}

struct MemoryLimiter {
    over: Arc<AtomicBool>,
    next: Next,
    refused: Counter,
}

#[async_trait]
impl Consumer for MemoryLimiter {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        if self.over.load(Ordering::Relaxed) {
            self.refused.add(batch.items());
            return Err(batch.refuse(ConsumeError::Exhausted(
                "memory limit reached, retry later".into(),
            )));
        }
        self.next.consume(batch).await
    }
}

pub(super) fn build(
    config: &MemoryLimiterConfig,
    id: &ComponentId,
    next: Next,
    context: &Context,
) -> Next {
    let over = Arc::new(AtomicBool::new(false));
    let soft_limit = config.soft_limit_bytes(total_memory_bytes());
    let refused = context.registry.counter(
        "otelcol_processor_memory_limiter_refused_items",
        "Items refused because memory use was above the limit.",
        &[("processor", id.as_str())],
    );
    let watch = Arc::downgrade(&over);
    let interval = config.check_interval;
    let name = id.to_string();
    // The watcher ends when the processor is dropped.
    context.tasks.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        while let Some(over) = watch.upgrade() {
            let rss = resident_bytes();
            let now_over = rss > soft_limit;
            if over.swap(now_over, Ordering::Relaxed) != now_over {
                let (rss_mib, limit_mib) = (rss >> 20, soft_limit >> 20);
                if now_over {
                    tracing::warn!(processor = %name, rss_mib, limit_mib, "memory above limit: refusing data");
                } else {
                    tracing::info!(processor = %name, rss_mib, limit_mib, "memory back under limit: accepting data");
                }
            }
            drop(over);
            ticker.tick().await;
        }
    });
    Arc::new(MemoryLimiter {
        over,
        next,
        refused,
    })
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn total_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_leaves_spike_headroom() {
        let config = MemoryLimiterConfig {
            limit_mib: 100,
            spike_limit_mib: Some(30),
            ..Default::default()
        };
        assert_eq!(config.soft_limit_bytes(0), 70 << 20);
        let config = MemoryLimiterConfig {
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(config.soft_limit_bytes(0), 80 << 20);
        let config = MemoryLimiterConfig {
            limit_percentage: 50,
            spike_limit_percentage: 10,
            ..Default::default()
        };
        assert_eq!(config.soft_limit_bytes(1000 << 20), 400 << 20);
    }
}
