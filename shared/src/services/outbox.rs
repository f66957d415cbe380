//! The outbox relay: events are written with their state change; this puts them on the
//! bus and marks them published. A crash between commit and publish loses nothing (the
//! relay finds the event in the schedule index); a crash between publish and mark
//! publishes it twice, which consumers tolerate.

use crate::domain::events::Event;
use crate::store::StoreError;
use crate::store::repo::{OutboxRecord, Tx, Versioned};

use futures::StreamExt;

use super::Services;

/// At most this many marks are in flight at once (a relay pass may carry hundreds).
const MARKS_IN_FLIGHT: usize = 25;

/// Publishes `events` (just committed, so at version 1) and marks those the bus took.
pub(crate) async fn publish_and_mark(services: &Services, events: Vec<Event>) {
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
