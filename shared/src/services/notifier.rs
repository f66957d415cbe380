//! Customer notifications: which event calls for which email, and what it says. Each email
//! is rendered from its template (`shared/templates/emails/`), with amounts as people read
//! them (`$25.00`, `¥500`), the reason for a decline as the customer may see it (fraud is
//! never named), and the link to the customer's billing page. Keyed by the event's id, so
//! a redelivered event sends nothing twice.
//!
//! | event | email |
//! |---|---|
//! | `invoice.payment_failed`, the invoice's first failure or one only the customer can fix | `payment_failed` |
//! | `invoice.errored` | `invoice_errored` |
//! | `invoice.paid` by card after a failed attempt | `payment_receipt` |
//! | `payment_method.expiring` | `card_expiring` |
//! | `payment_method.attached` | `card_updated` |
//! | `webhook_endpoint.disabled` | `webhook_endpoint_disabled`, to the merchant's address |

use serde_json::{Value, json};

use crate::domain::decline::RetryClass;
use crate::domain::events::{Event, EventPayload, PaidWith};
use crate::domain::invoice::TransactionStatus;
use crate::error::{Error, Result};
use crate::mail::{Email, EmailStatus, render};

use super::Services;

/// How people read a brand.
fn brand_name(brand: crate::domain::card::CardBrand) -> String {
    let s = brand.as_str();
    match s {
        "amex" => "American Express".into(),
        "mastercard" => "Mastercard".into(),
        "unionpay" => "UnionPay".into(),
        "jcb" => "JCB".into(),
        _ => {
            let mut c = s.chars();
            c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
        }
    }
}

impl Services {
    /// The template and its values an event calls for, if any.
    async fn email_for(&self, event: &Event) -> Result<Option<(&'static str, Value)>> {
        // A wallet refill's own events speak for it: not the invoice's.
        if let Some(id) = event.payload.invoice_id()
            && matches!(
                event.payload,
                EventPayload::InvoicePaymentFailed { .. } | EventPayload::InvoiceErrored { .. } | EventPayload::InvoicePaid { .. }
            )
            && self.repo.invoice(id).await?.is_some_and(|inv| inv.wallet_refill.is_some())
        {
            return Ok(None);
        }
        Ok(Some(match &event.payload {
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
                let next = match (retry, next_attempt_at) {
                    (RetryClass::Soft, Some(at)) => Some(at.format("%B %-d, %Y").to_string()),
                    _ => None,
                };
                let values = json!({
                    "invoice_id": invoice_id,
                    "amount": amount.for_people(),
                    "reason": error_type.for_customer().customer_advice(),
                    "next_attempt": next,
                });
                ("payment_failed", values)
            }
            EventPayload::InvoiceErrored { invoice_id, amount, error_type, .. } => {
                let values = json!({
                    "invoice_id": invoice_id,
                    "amount": amount.for_people(),
                    "reason": error_type.map_or("Please add a card to pay it.", |t| t.for_customer().customer_advice()),
                });
                ("invoice_errored", values)
            }
            EventPayload::InvoicePaid { invoice_id, amount, paid_at, paid_with, .. } => {
                // A receipt when a payment recovers a failure; a first-time success is
                // the PSP's receipt to send, not a dunning email.
                if *paid_with != PaidWith::Card {
                    return Ok(None);
                }
                let Some(invoice) = self.repo.invoice(invoice_id).await? else { return Ok(None) };
                if !invoice.transactions().iter().any(|t| t.status == TransactionStatus::Failed) {
                    return Ok(None);
                }
                let values = json!({
                    "invoice_id": invoice_id,
                    "amount": amount.for_people(),
                    "paid_on": paid_at.format("%B %-d, %Y").to_string(),
                });
                ("payment_receipt", values)
            }
            EventPayload::PaymentMethodExpiring { brand, last4, exp_month, exp_year, .. } => {
                let values = json!({
                    "brand": brand_name(*brand),
                    "last4": last4,
                    "expiry": format!("{exp_month:02}/{exp_year}"),
                });
                ("card_expiring", values)
            }
            EventPayload::PaymentMethodAttached { payment_method_id, customer_id, brand, last4, replaced } => {
                let card = self.repo.payment_method(customer_id, payment_method_id).await?;
                let expiry = card.map(|c| format!("{:02}/{}", c.expiry.month(), c.expiry.year())).unwrap_or_default();
                let values = json!({
                    "brand": brand_name(*brand),
                    "last4": last4,
                    "expiry": expiry,
                    "replaced": replaced,
                });
                ("card_updated", values)
            }
            EventPayload::InvoiceCreated { .. }
            | EventPayload::InvoiceVoided { .. }
            | EventPayload::InvoiceDisputed { .. }
            | EventPayload::SubscriptionCreated { .. }
            | EventPayload::SubscriptionRenewed { .. }
            | EventPayload::SubscriptionErrored { .. }
            | EventPayload::SubscriptionActivated { .. }
            | EventPayload::SubscriptionPaused { .. }
            | EventPayload::SubscriptionCanceled { .. }
            | EventPayload::PaymentMethodRemoved { .. }
            | EventPayload::PaymentMethodExpired { .. }
            | EventPayload::WebhookDeliveryFailed { .. }
            | EventPayload::WalletRefilled { .. }
            | EventPayload::WalletLowBalance { .. } => return Ok(None),
            EventPayload::WalletRefillFailed { amount, error_type, auto_refill_disabled, .. } => {
                if !auto_refill_disabled {
                    return Ok(None);
                }
                let values = json!({
                    "amount": amount.for_people(),
                    "reason": error_type.map_or("Please add a card.", |t| t.for_customer().customer_advice()),
                });
                ("auto_refill_disabled", values)
            }
            // The merchant's, sent by `notify_merchant`.
            EventPayload::WebhookEndpointDisabled { .. } => return Ok(None),
        }))
    }

    /// Tells the merchant what it must act on: a webhook endpoint Recoup disabled.
    async fn notify_merchant(&self, event: &Event) -> Result<Option<Email>> {
        let EventPayload::WebhookEndpointDisabled { webhook_endpoint_id, url } = &event.payload else {
            return Ok(None);
        };
        let Some(to) = self.merchant_email.clone() else {
            tracing::warn!(webhook_endpoint_id = %webhook_endpoint_id, "webhook endpoint disabled; no merchant address to tell");
            return Ok(None);
        };
        let values = json!({ "url": url, "webhook_endpoint_id": webhook_endpoint_id });
        self.send_email(event, "webhook_endpoint_disabled", &values, None, to).await.map(Some)
    }

    /// Renders `template` and sends it, keyed by the event's id.
    async fn send_email(
        &self,
        event: &Event,
        template: &str,
        values: &Value,
        customer_id: Option<&crate::ids::CustomerId>,
        to: String,
    ) -> Result<Email> {
        let rendered = render(template, values).map_err(|e| Error::internal(e.to_string()))?;
        let email = Email {
            id: event.id.to_string(),
            template: template.to_owned(),
            customer_id: customer_id.cloned(),
            to,
            subject: rendered.subject,
            body: rendered.text,
            html: rendered.html,
            created_at: self.now(),
            status: EmailStatus::Queued,
            message_id: None,
        };
        self.mailer.send(&email).await.map_err(Error::unavailable)?;
        Ok(email)
    }

    /// Sends the email an event calls for, if any. Redelivery sends nothing twice.
    pub async fn notify(&self, event: &Event) -> Result<Option<Email>> {
        let Some(customer_id) = event.payload.customer_id() else { return self.notify_merchant(event).await };
        let Some((template, mut values)) = self.email_for(event).await? else { return Ok(None) };
        let customer = self.repo.customer(customer_id).await?.ok_or_else(|| Error::not_found("customer"))?;
        values["customer_name"] = json!(customer.name.clone().unwrap_or_else(|| "there".to_owned()));
        let link = match &self.portal_links {
            Some(links) => links.link_for(customer_id).await,
            None => None,
        };
        values["portal_url"] = json!(link.unwrap_or_else(|| self.portal_url.clone()));
        self.send_email(event, template, &values, Some(customer_id), customer.email.clone()).await.map(Some)
    }
}
