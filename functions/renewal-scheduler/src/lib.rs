//! The renewal scheduler: on its EventBridge schedule, starts the next period of every
//! active subscription whose period ended (errored, paused and canceled subscriptions are
//! not in the renewal index) and puts the new invoices on the charge queue.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use recoup_lambda::App;
use recoup_shared::error::Error;
use serde_json::{Value, json};

pub const SWEEP_LIMIT: usize = 2_000;

pub async fn handle(app: &App, _schedule: EventBridgeEvent<Value>) -> Result<Value, Error> {
    let queue = app.charge_queue.as_deref().ok_or_else(|| Error::internal("RECOUP_CHARGE_QUEUE_URL is not set"))?;
    let renewed = app.services.sweep_renewals(queue, SWEEP_LIMIT).await?;
    Ok(json!({ "renewed": renewed }))
}
