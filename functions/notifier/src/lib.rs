//! The notifier: consumes customer-facing events and sends the emails they call for (with
//! the link to the customer's billing page). An event delivered twice sends one email.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use recoup_lambda::App;
use recoup_lambda::sqs::{event, for_each_record};
use recoup_shared::error::Error;

pub async fn handle(app: &App, batch: SqsEvent) -> Result<SqsBatchResponse, Error> {
    Ok(for_each_record(batch, |record| async move {
        let e = event(&record)?;
        app.services.notify(&e).await?;
        Ok(())
    })
    .await)
}
