//! Customer notifications. When a payment fails in a way the customer can fix, and when
//! collection ends in error, the customer gets an email that says what happened and links
//! to their billing page. Fraud is never named to the customer.

use crate::domain::decline::RetryClass;
use crate::domain::events::{Event, EventPayload};
use crate::error::{Error, Result};
use crate::mail::Email;

use super::Services;

impl Services {
    /// Sends the email an event calls for, if any. Redelivery sends nothing twice.
    pub async fn notify(&self, event: &Event) -> Result<Option<Email>> {
        let (subject, body) = match &event.payload {
            EventPayload::InvoicePaymentFailed {
                invoice_id,
                amount,
                attempt_count,
                next_attempt_at,
                error_type,
                retry,
                ..
            } => {
                // One email when trouble starts, and one whenever only the customer can fix it.
                if *attempt_count > 1 && retry.is_soft() {
                    return Ok(None);
                }
                let when = match (retry, next_attempt_at) {
                    (RetryClass::Soft, Some(at)) => format!("We will try again on {}.", at.format("%Y-%m-%d")),
                    _ => "We will not try this card again until you update your payment details.".to_owned(),
                };
                (
                    format!("Payment of {amount} failed"),
                    format!(
                        "We could not collect {amount} for invoice {invoice_id}.\n{}\n{when}\nManage your payment: {}",
                        error_type.for_customer().customer_advice(),
                        self.portal_url
                    ),
                )
            }
            EventPayload::InvoiceErrored { invoice_id, amount, error_type, .. } => (
                format!("Invoice {invoice_id} is unpaid"),
                format!(
                    "We could not collect {amount} for invoice {invoice_id} and have stopped trying.\n{}\nPay or update your card: {}",
                    error_type.map_or("Please add a card to pay it.", |t| t.for_customer().customer_advice()),
                    self.portal_url
                ),
            ),
            _ => return Ok(None),
        };
        let Some(customer_id) = event.payload.customer_id() else { return Ok(None) };
        let customer = self.repo.customer(customer_id).await?.ok_or_else(|| Error::not_found("customer"))?;
        let email = Email {
            id: event.id.to_string(),
            customer_id: customer_id.clone(),
            to: customer.email.clone(),
            subject,
            body,
            created_at: self.now(),
        };
        self.mailer.send(&email).await.map_err(Error::unavailable)?;
        Ok(Some(email))
    }
}
