//! The retry scheduler: on its EventBridge schedule, finds invoices due for an attempt (or
//! for reconciling an unanswered one) through the sparse schedule index and puts them on
//! the charge queue.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use recoup_lambda::App;
use recoup_shared::error::Error;
use serde_json::{Value, json};

/// The most invoices one sweep enqueues; the rest wait for the next sweep.
pub const SWEEP_LIMIT: usize = 5_000;

pub async fn handle(app: &App, _schedule: EventBridgeEvent<Value>) -> Result<Value, Error> {
    let queue = app.charge_queue.as_deref().ok_or_else(|| Error::internal("RECOUP_CHARGE_QUEUE_URL is not set"))?;
    let enqueued = app.services.sweep_due(queue, SWEEP_LIMIT).await?;
    Ok(json!({ "enqueued": enqueued }))
}
