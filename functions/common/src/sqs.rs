//! SQS batches: every record is handled on its own and failures are reported per record
//! (`batchItemFailures`), so one bad message is retried alone and, after the queue's
//! `maxReceiveCount`, lands in its dead-letter queue. A message that can never be
//! processed (a poison message) is reported as failed every time: that is how it reaches
//! the DLQ instead of being silently dropped.

use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use recoup_shared::domain::events::Event;
use recoup_shared::error::{Code, Error};
use serde::Deserialize;

/// Runs `handle` on every record concurrently and reports the ones that failed.
pub async fn for_each_record<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let runs = event.records.into_iter().map(|record| {
        let id = record.message_id.clone().unwrap_or_default();
        let fut = handle(record);
        async move { (id, fut.await) }
    });
    let mut response = SqsBatchResponse::default();
    for (id, result) in futures::future::join_all(runs).await {
        if let Err(e) = result {
            e.log_at_edge("sqs");
            tracing::warn!(message_id = %id, code = %e.code, error = %e.message, retryable = e.is_retryable(), "message failed");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The body of a message, parsed; a body that does not parse is a poison message.
pub fn body<T: for<'de> Deserialize<'de>>(record: &SqsMessage) -> Result<T, Error> {
    let raw = record.body.as_deref().unwrap_or("");
    serde_json::from_str(raw).map_err(|e| Error::new(Code::PoisonMessage, format!("message body does not parse: {e}")))
}

/// An EventBridge event as an SQS target receives it: the bus envelope around our event.
#[derive(Debug, Deserialize)]
pub struct BusEnvelope {
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub detail: Event,
}

/// The Recoup event carried by a bus-delivered message.
pub fn event(record: &SqsMessage) -> Result<Event, Error> {
    let envelope: BusEnvelope = body(record)?;
    if envelope.detail.kind() != envelope.detail_type {
        return Err(Error::new(Code::PoisonMessage, "detail-type does not match the event's type"));
    }
    Ok(envelope.detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m
    }

    #[tokio::test]
    async fn only_the_failed_records_are_reported() {
        let mut event = SqsEvent::default();
        event.records = vec![record("a", "1"), record("b", "oops"), record("c", "3")];
        let response = for_each_record(event, |r| async move { body::<u32>(&r).map(|_| ()) }).await;
        let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, ["b"]);
    }
}
