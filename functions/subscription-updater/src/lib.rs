//! The subscription updater: consumes invoice events from the bus and brings each
//! invoice's subscription in line with the invoice as it is now (errored, or active again
//! when the errored invoice is paid inside the period). Re-reading the invoice makes
//! duplicates and out-of-order deliveries harmless.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use recoup_lambda::App;
use recoup_lambda::sqs::{event, for_each_record};
use recoup_shared::error::Error;

pub async fn handle(app: &App, batch: SqsEvent) -> Result<SqsBatchResponse, Error> {
    Ok(for_each_record(batch, |record| async move {
        let e = event(&record)?;
        if let Some(invoice_id) = e.payload.invoice_id() {
            app.services.follow_invoice(invoice_id).await?;
        }
        Ok(())
    })
    .await)
}
