//! The one interface between pipeline stages.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Batch;

/// A pipeline stage that takes batches: a processor, an exporter, or a fan-out to several.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Takes `batch`; an error tells the sender the data was not accepted.
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError>;
}

pub type Next = Arc<dyn Consumer>;

/// Why a stage did not accept a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    /// Full (queue or memory limit): the sender should retry later.
    #[error("{0}")]
    Exhausted(String),
    /// The data can never be accepted.
    #[error("{0}")]
    Rejected(String),
}

/// Sends each batch to every consumer at once; the batch is accepted when all of them accept
/// it, so an acknowledgement upstream means every branch has the data.
pub struct Fanout(pub Vec<Next>);

#[async_trait]
impl Consumer for Fanout {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let branches = self.0.iter().map(|next| next.consume(batch.clone()));
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
