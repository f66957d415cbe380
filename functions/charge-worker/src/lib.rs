//! The charge worker: consumes the charge queue. Each message names an invoice that came
//! due; the engine re-reads it and does what the dunning policy says (attempt, reconcile,
//! skip, park, or nothing if the message is stale or a duplicate).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use recoup_lambda::App;
use recoup_lambda::sqs::{body, for_each_record};
use recoup_shared::error::Error;
use recoup_shared::services::scheduler::ChargeMessage;

pub async fn handle(app: &App, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    Ok(for_each_record(event, |record| async move {
        let message: ChargeMessage = body(&record)?;
        let outcome = app.services.process_due_hinted(&message.invoice_id, message.hint.as_ref()).await?;
        tracing::info!(invoice_id = %message.invoice_id, ?outcome, "due invoice processed");
        Ok(())
    })
    .await)
}
