//! The expiry reminder: once a day, finds the saved cards that expire at the end of next
//! month through the expiry index and writes one `payment_method.expiring` event per card
//! and expiry (the notifier emails the owner), and one `payment_method.expired` for a
//! default card of an active subscription that has expired.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use recoup_lambda::App;
use recoup_shared::error::Error;
use serde_json::{Value, json};

pub async fn handle(app: &App, _schedule: EventBridgeEvent<Value>) -> Result<Value, Error> {
    let sweep = app.services.sweep_card_expiries().await?;
    Ok(json!({ "expiring": sweep.expiring, "expired": sweep.expired }))
}
