//! The outbox relay: events are written with their state change; this puts them on the
//! bus and marks them published. A crash between commit and publish loses nothing (the
//! relay finds the event in the schedule index); a crash between publish and mark
//! publishes it twice, which consumers tolerate.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::domain::events::Event;
use crate::store::StoreError;
use crate::store::repo::{OutboxRecord, Tx, Versioned};

use futures::StreamExt;

use super::Services;

/// At most this many marks are in flight at once (a relay pass may carry hundreds).
const MARKS_IN_FLIGHT: usize = 25;

/// When a use case's freshly committed events go to the bus.
#[derive(Clone, Default)]
pub enum Publishing {
    /// Before the use case answers. A Lambda must: once it answers, its runtime may be
    /// frozen, and work left running would finish only at its next invocation, if ever.
    #[default]
    Inline,
    /// On a task of their own, while the use case answers. For a long-running process
    /// (`recoup-local`): a request then waits for its own commits, not also for the bus's
    /// and the outbox mark's. The events are already durable in the outbox, so a crash
    /// before they are published loses nothing: the relay publishes them.
    Background(Arc<InFlight>),
}

/// The publishes running in the background, so that whoever looks at the bus's output (a
/// queue drain, the relay, the dev console) first waits for those begun before it looked.
#[derive(Default)]
pub struct InFlight {
    /// The next ticket, and the tickets still running.
    tickets: Mutex<(u64, BTreeSet<u64>)>,
    finished: tokio::sync::Notify,
}

/// One background publish; finished when dropped (also if its task panics or is dropped).
struct Ticket {
    number: u64,
    of: Arc<InFlight>,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> Ticket {
        let mut tickets = self.tickets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let number = tickets.0;
        tickets.0 += 1;
        tickets.1.insert(number);
        Ticket { number, of: self.clone() }
    }

    /// Waits until every publish begun before this call has finished. Publishes begun
    /// after it are not waited for, so a steady stream of new ones never starves it.
    pub async fn caught_up(&self) {
        let upto = self.tickets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0;
        loop {
            let finished = self.finished.notified();
            let mut finished = std::pin::pin!(finished);
            finished.as_mut().enable();
            let oldest = self.tickets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.first().copied();
            if oldest.is_none_or(|n| n >= upto) {
                return;
            }
            finished.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.of.tickets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.remove(&self.number);
        self.of.finished.notify_waiters();
    }
}

/// Publishes `events` (just committed) as `services` is set to: now, or on a task of its
/// own.
pub(crate) async fn publish(services: &Services, events: Vec<Event>) {
    match &services.publishing {
        Publishing::Inline => publish_and_mark(services, events).await,
        Publishing::Background(in_flight) => {
            let ticket = in_flight.start();
            let services = services.clone();
            tokio::spawn(async move {
                publish_and_mark(&services, events).await;
                drop(ticket);
            });
        }
    }
}

/// Waits for the background publishes begun before this call (at once when publishing
/// inline).
pub async fn caught_up(services: &Services) {
    if let Publishing::Background(in_flight) = &services.publishing {
        in_flight.caught_up().await;
    }
}

/// Publishes `events` (just committed, so at version 1) and marks those the bus took.
async fn publish_and_mark(services: &Services, events: Vec<Event>) {
    let records = events
        .into_iter()
        .map(|event| {
            // Freshly committed outbox records are at version 1.
            let mut v = Versioned::new(OutboxRecord { event, published_at: None });
            v.set_version(1);
            v
        })
        .collect();
    if let Err(e) = publish_records(services, records).await {
        tracing::warn!(error = %e, "publishing after commit failed; the relay will retry");
    }
}

async fn publish_records(services: &Services, records: Vec<Versioned<OutboxRecord>>) -> Result<usize, StoreError> {
    if records.is_empty() {
        return Ok(0);
    }
    let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
    let accepted = match services.publisher.publish(&events).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, count = events.len(), "event bus refused a batch");
            return Ok(0);
        }
    };
    let now = services.now();
    // The marks go out together: one round trip of parallel single-item writes on DynamoDB
    // (no transaction, so no doubled write cost), one group commit in the embedded store.
    let marks = records.into_iter().zip(accepted).filter(|(_, ok)| *ok).map(|(mut record, _)| async move {
        record.published_at = Some(now);
        let mut tx = Tx::new();
        tx.save(&record)?;
        match services.repo.commit(tx).await {
            Ok(_) => Ok(1),
            // Someone else (the relay, or the writer) marked it first.
            Err(StoreError::ConditionFailed { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    });
    let mut results = futures::stream::iter(marks).buffer_unordered(MARKS_IN_FLIGHT);
    let mut published = 0;
    while let Some(result) = results.next().await {
        published += result?;
    }
    Ok(published)
}

/// One relay pass: publishes up to `limit` unpublished events. Returns how many it
/// published.
pub async fn relay(services: &Services, limit: usize) -> Result<usize, StoreError> {
    let pending = services.repo.unpublished_events(limit).await?;
    publish_records(services, pending).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(in_flight: &Arc<InFlight>) -> tokio::task::JoinHandle<()> {
        let in_flight = in_flight.clone();
        tokio::spawn(async move { in_flight.caught_up().await })
    }

    async fn settles(waiter: &mut tokio::task::JoinHandle<()>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), waiter).await.is_ok()
    }

    #[tokio::test]
    async fn caught_up_waits_for_every_publish_begun_before_it_and_no_later_one() {
        let in_flight = Arc::new(InFlight::default());
        // Nothing running: at once.
        assert!(settles(&mut waiting(&in_flight)).await);

        let first = in_flight.start();
        let second = in_flight.start();
        let mut waiter = waiting(&in_flight);
        tokio::task::yield_now().await;
        // Begun after the waiter looked: not waited for, however long it runs.
        let later = in_flight.start();
        assert!(!settles(&mut waiter).await, "two earlier publishes still running");
        drop(second);
        assert!(!settles(&mut waiter).await, "the first still running");
        drop(first);
        assert!(settles(&mut waiter).await, "the later one is not waited for");
        drop(later);
    }

    #[tokio::test]
    async fn a_publish_whose_task_panics_still_counts_as_finished() {
        let in_flight = Arc::new(InFlight::default());
        let ticket = in_flight.start();
        let task = tokio::spawn(async move {
            let _ticket = ticket;
            panic!("a publish that panics");
        });
        assert!(task.await.is_err());
        assert!(settles(&mut waiting(&in_flight)).await);
    }
}
