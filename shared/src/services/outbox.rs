//! The outbox relay: events are written with their state change; this puts them on the
//! bus and marks them published. A crash between commit and publish loses nothing (the
//! relay finds the event in the schedule index); a crash between publish and mark
//! publishes it twice, which consumers tolerate.

use crate::domain::events::Event;
use crate::store::StoreError;
use crate::store::repo::{OutboxRecord, Tx, Versioned};

use super::Services;

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
    let mut published = 0;
    for (mut record, ok) in records.into_iter().zip(accepted) {
        if !ok {
            continue;
        }
        record.published_at = Some(now);
        let mut tx = Tx::new();
        tx.save(&record)?;
        match services.repo.commit(tx).await {
            Ok(_) => published += 1,
            // Someone else (the relay, or the writer) marked it first.
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(published)
}

/// One relay pass: publishes up to `limit` unpublished events. Returns how many it
/// published.
pub async fn relay(services: &Services, limit: usize) -> Result<usize, StoreError> {
    let pending = services.repo.unpublished_events(limit).await?;
    publish_records(services, pending).await
}
