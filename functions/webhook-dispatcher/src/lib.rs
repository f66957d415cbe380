//! The webhook dispatcher: consumes the webhooks queue, which carries every event from the
//! bus (rule `MerchantWebhooks`) and the attempts this function schedules for itself.
//!
//! - An event becomes one delivery per endpoint that wants it, and each is attempted at
//!   once, concurrently.
//! - A failed attempt puts the next on the same queue with an SQS delay. SQS holds a
//!   message back at most 15 minutes, so a later attempt arrives early, finds it is not
//!   due, and goes back with the time left: a few cheap hops per hour of back-off, no
//!   extra resources, and the store's delivery record stays the one truth (a stale or
//!   duplicate message finds its attempt made and does nothing).
//!
//! Why not EventBridge Scheduler one-shot schedules: one schedule per retry is an API call
//! and an IAM role more, with its own cleanup, for nothing SQS does not already do.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use recoup_lambda::App;
use recoup_lambda::sqs::{event, for_each_record};
use recoup_shared::error::Error;
use recoup_shared::services::webhooks::{AttemptMessage, AttemptResult};

/// At most this many attempts of one event run at once (one per endpoint).
const ATTEMPTS_IN_FLIGHT: usize = 16;

pub async fn handle(app: &App, batch: SqsEvent) -> Result<SqsBatchResponse, Error> {
    Ok(for_each_record(batch, |record| async move {
        let body = record.body.as_deref().unwrap_or("");
        let attempts = match AttemptMessage::decode(body) {
            Some(message) => vec![message],
            None => app.services.plan_deliveries(&event(&record)?).await?,
        };
        let results: Vec<Result<(), Error>> = futures::stream::iter(attempts)
            .map(|message| attempt(app, message))
            .buffer_unordered(ATTEMPTS_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    })
    .await)
}

/// Makes one attempt and puts what follows on the queue. Failing here fails the message,
/// which SQS redelivers: the delivery record makes the redelivery harmless.
async fn attempt(app: &App, message: AttemptMessage) -> Result<(), Error> {
    let webhooks = &app.webhooks;
    match app.services.attempt_delivery(&message, webhooks.transport.as_ref()).await? {
        AttemptResult::Done => Ok(()),
        AttemptResult::Later { message, at } => {
            let queue =
                webhooks.queue.as_deref().ok_or_else(|| Error::internal("RECOUP_WEBHOOKS_QUEUE_URL is not set"))?;
            let wait = (at - app.services.now()).to_std().unwrap_or(Duration::ZERO);
            queue.send_delayed(&message.encode(), wait).await.map_err(Error::unavailable)
        }
    }
}
