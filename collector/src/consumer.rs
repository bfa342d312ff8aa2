//! The one interface between pipeline stages.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Batch;

/// A pipeline stage that takes batches: a processor, a connector, an exporter, or a fan-out to
/// several.
///
/// `Ok` means the stage took the batch. Whether its senders' data was accepted for good travels
/// with the batch, in its acks (see [`crate::ack`]): a stage returns as soon as it has handed
/// the batch on or queued it, never waiting for a destination.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Takes `batch`; an error says the stage refused it at once (and refused its acks).
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError>;
}

pub type Next = Arc<dyn Consumer>;

/// Why a stage did not accept a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    /// Not now (a full queue, the memory limit, a disk error): the sender should retry later.
    #[error("{0}")]
    Exhausted(String),
    /// The data can never be accepted.
    #[error("{0}")]
    Rejected(String),
}

/// Hands each batch to every consumer at once. Each branch carries its own copy of the acks,
/// so the senders hear once every branch has taken the data over.
pub struct Fanout(pub Vec<Next>);

#[async_trait]
impl Consumer for Fanout {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        // One encoding shared by every copy, rather than a deep copy per branch.
        batch.encode();
        let mut copies: Vec<Batch> = (1..self.0.len()).map(|_| batch.clone()).collect();
        copies.push(batch);
        let branches = self
            .0
            .iter()
            .zip(copies)
            .map(|(next, copy)| next.consume(copy));
        futures_util::future::join_all(branches)
            .await
            .into_iter()
            .collect()
    }
}

/// Wraps a list of consumers, avoiding the fan-out when there is only one.
pub fn fanout(mut consumers: Vec<Next>) -> Next {
    if consumers.len() == 1 {
        consumers.remove(0)
    } else {
        Arc::new(Fanout(consumers))
    }
}
