//! Acknowledgements that travel with the data.
//!
//! A receiver attaches an [`Ack`] to what it pushes into a pipeline and waits on the
//! [`Receipt`]. The ack goes wherever the data goes: into a batch joined with others, into
//! every branch of a fan-out, into each piece of a split. Each copy is settled where its data
//! is taken over for good (a sending queue accepts it, a filter drops it on purpose) or
//! refused; the sender hears once every copy is settled, and hears the first refusal if there
//! was one. A copy dropped unsettled (a stage that stopped mid-way) counts as a refusal to
//! retry, so data is never acknowledged by accident.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::consumer::ConsumeError;

/// One sender's stake in a piece of data. Clones share the outcome.
pub struct Ack {
    tracker: Arc<Tracker>,
    settled: bool,
}

struct Tracker {
    refusal: Mutex<Option<ConsumeError>>,
    reply: Mutex<Option<oneshot::Sender<Result<(), ConsumeError>>>>,
}

impl Drop for Tracker {
    /// The last copy is settled: tell the sender.
    fn drop(&mut self) {
        let outcome = match self.refusal.get_mut().unwrap().take() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        if let Some(reply) = self.reply.get_mut().unwrap().take() {
            let _ = reply.send(outcome);
        }
    }
}

impl Ack {
    /// An ack and the receipt its sender waits on.
    pub fn new() -> (Ack, Receipt) {
        let (reply, outcome) = oneshot::channel();
        let tracker = Arc::new(Tracker {
            refusal: Mutex::new(None),
            reply: Mutex::new(Some(reply)),
        });
        (
            Ack {
                tracker,
                settled: false,
            },
            Receipt(outcome),
        )
    }

    /// This copy needs nothing more: its data was taken over for good, dropped on purpose, or
    /// handed on to copies that carry the outcome.
    pub fn accept(mut self) {
        self.settled = true;
    }

    /// This copy was refused; the sender hears `error` unless another copy was refused first.
    pub fn refuse(mut self, error: ConsumeError) {
        self.tracker.refuse(error);
        self.settled = true;
    }
}

impl Tracker {
    fn refuse(&self, error: ConsumeError) {
        self.refusal.lock().unwrap().get_or_insert(error);
    }
}

impl Clone for Ack {
    fn clone(&self) -> Ack {
        Ack {
            tracker: self.tracker.clone(),
            settled: false,
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.tracker.refuse(ConsumeError::Exhausted(
                "data was dropped before it was accepted; retry".into(),
            ));
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// What a sender waits on: whether every copy of its data was accepted.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<(), ConsumeError>>);

impl Future for Receipt {
    type Output = Result<(), ConsumeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The tracker always answers before it goes; a closed channel cannot happen but is a
        // refusal, never a silent success.
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or_else(|_| Err(lost())))
    }
}

fn lost() -> ConsumeError {
    ConsumeError::Exhausted("the acknowledgement was lost; retry".into())
}

/// The acks of a batch, each with the bytes of the batch's encoding that belong to its sender,
/// so that the pieces of a split batch answer only the senders whose data they hold.
#[derive(Clone, Debug, Default)]
pub struct Acks(Vec<(Ack, Range<usize>)>);

/// The range of a part whose place in the encoding is not known: every piece holds some of it.
const EVERYWHERE: Range<usize> = 0..usize::MAX;

impl Acks {
    pub fn one(ack: Ack) -> Acks {
        Acks(vec![(ack, EVERYWHERE)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Every copy settled without refusal (see [`Ack::accept`]).
    pub fn accept(self) {
        self.0.into_iter().for_each(|(ack, _)| ack.accept());
    }

    /// Every copy refused with `error`.
    pub fn refuse(self, error: &ConsumeError) {
        self.0
            .into_iter()
            .for_each(|(ack, _)| ack.refuse(error.clone()));
    }

    /// Adds the acks of a part that occupies `at` of the joined encoding. Acks whose place in
    /// their part was known keep it, shifted; the others cover the whole part.
    pub(crate) fn append_part(&mut self, part: Acks, at: Range<usize>) {
        for (ack, range) in part.0 {
            let shifted = if range == EVERYWHERE {
                at.clone()
            } else {
                at.start + range.start..at.start + range.end
            };
            self.0.push((ack, shifted));
        }
    }

    /// The acks of the data in `piece` of the encoding, placed relative to the piece.
    pub(crate) fn slice(&self, piece: Range<usize>) -> Acks {
        self.gather(&[piece])
    }

    /// The acks of the data in `pieces` of the encoding, placed as in the concatenation of
    /// those pieces.
    pub(crate) fn gather(&self, pieces: &[Range<usize>]) -> Acks {
        let mut gathered = Vec::new();
        let mut base = 0;
        for piece in pieces {
            for (ack, range) in &self.0 {
                if range.start < piece.end && piece.start < range.end {
                    let start = base + range.start.max(piece.start) - piece.start;
                    let end = base + range.end.min(piece.end) - piece.start;
                    gathered.push((ack.clone(), start..end));
                }
            }
            base += piece.len();
        }
        Acks(gathered)
    }

    /// Forgets where each sender's data lies: the encoding is about to change.
    pub(crate) fn unplace(&mut self) {
        self.0.iter_mut().for_each(|(_, range)| *range = EVERYWHERE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sender_hears_once_every_copy_is_settled() {
        let (ack, receipt) = Ack::new();
        let copy = ack.clone();
        ack.accept();
        let mut receipt = Box::pin(receipt);
        assert!(futures_util::poll!(&mut receipt).is_pending());
        copy.accept();
        assert_eq!(receipt.await, Ok(()));
    }

    #[tokio::test]
    async fn the_first_refusal_is_what_the_sender_hears() {
        let (ack, receipt) = Ack::new();
        let (a, b) = (ack.clone(), ack.clone());
        ack.accept();
        a.refuse(ConsumeError::Exhausted("queue a is full".into()));
        b.refuse(ConsumeError::Rejected("b".into()));
        assert_eq!(
            receipt.await,
            Err(ConsumeError::Exhausted("queue a is full".into()))
        );
    }

    #[tokio::test]
    async fn a_copy_dropped_unsettled_is_a_refusal() {
        let (ack, receipt) = Ack::new();
        drop(ack);
        assert!(matches!(receipt.await, Err(ConsumeError::Exhausted(_))));
    }

    #[tokio::test]
    async fn pieces_hold_only_the_acks_of_their_bytes() {
        let (first, first_receipt) = Ack::new();
        let (second, second_receipt) = Ack::new();
        let mut joined = Acks::default();
        joined.append_part(Acks::one(first), 0..10);
        joined.append_part(Acks::one(second), 10..25);
        let (head, tail) = (joined.slice(0..10), joined.slice(10..25));
        let across = joined.slice(8..12);
        assert_eq!(across.len(), 2, "a piece across both parts holds both");
        across.accept();
        joined.accept(); // handed on to the pieces
        assert_eq!((head.len(), tail.len()), (1, 1));
        head.accept();
        tail.refuse(&ConsumeError::Rejected("tail".into()));
        assert_eq!(first_receipt.await, Ok(()));
        assert_eq!(
            second_receipt.await,
            Err(ConsumeError::Rejected("tail".into()))
        );
    }
}
