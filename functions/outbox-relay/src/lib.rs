//! The outbox relay: on its schedule, publishes events that were committed but not yet put
//! on the bus (the writer publishes right after commit; this catches what a crash or a bus
//! outage left behind).

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use recoup_lambda::App;
use recoup_shared::error::Error;
use recoup_shared::services::outbox;
use serde_json::{Value, json};

pub const BATCH: usize = 500;

pub async fn handle(app: &App, _schedule: EventBridgeEvent<Value>) -> Result<Value, Error> {
    let published = outbox::relay(&app.services, BATCH).await?;
    Ok(json!({ "published": published }))
}
