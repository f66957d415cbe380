//! Domain events. Each is written in the same store transaction as the state change it
//! reports (the outbox), then published to the event bus as `detail-type` = its `type` and
//! `detail` = the whole envelope. Consumers must tolerate duplicates and any order:
//! `id` is unique per event, and the state an event names should be re-read, not trusted.

use serde::{Deserialize, Serialize};

use crate::domain::card::CardBrand;
use crate::domain::decline::{ErrorType, RetryClass};
use crate::domain::money::{Currency, Money};
use crate::ids::{CustomerId, EventId, InvoiceId, PaymentMethodId, SubscriptionId, TransactionId, WebhookEndpointId};
use crate::time::Timestamp;

/// The `source` every Recoup event carries on the bus.
pub const EVENT_SOURCE: &str = "recoup";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub occurred_at: Timestamp,
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl Event {
    pub fn new(payload: EventPayload, occurred_at: Timestamp) -> Self {
        Event { id: EventId::generate(), occurred_at, payload }
    }

    pub fn kind(&self) -> &'static str {
        self.payload.kind()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaidWith {
    Card,
    OutOfBand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationReason {
    /// The errored invoice was paid inside the period.
    Payment,
    /// The merchant re-activated it; the invoice stays unpaid.
    Manual,
    /// Resumed after a pause.
    Resumed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventPayload {
    #[serde(rename = "invoice.created")]
    InvoiceCreated {
        invoice_id: InvoiceId,
        customer_id: CustomerId,
        subscription_id: Option<SubscriptionId>,
        amount: Money,
    },
    #[serde(rename = "invoice.payment_failed")]
    InvoicePaymentFailed {
        invoice_id: InvoiceId,
        customer_id: CustomerId,
        subscription_id: Option<SubscriptionId>,
        transaction_id: TransactionId,
        amount: Money,
        /// Attempts made so far, this one included.
        attempt_count: u32,
        /// When the next automatic attempt is planned; null when none is.
        next_attempt_at: Option<Timestamp>,
        error_type: ErrorType,
        retry: RetryClass,
    },
    #[serde(rename = "invoice.paid")]
    InvoicePaid {
        invoice_id: InvoiceId,
        customer_id: CustomerId,
        subscription_id: Option<SubscriptionId>,
        amount: Money,
        paid_at: Timestamp,
        paid_with: PaidWith,
    },
    #[serde(rename = "invoice.errored")]
    InvoiceErrored {
        invoice_id: InvoiceId,
        customer_id: CustomerId,
        subscription_id: Option<SubscriptionId>,
        amount: Money,
        attempt_count: u32,
        /// The last failure's type, when there was an attempt at all.
        error_type: Option<ErrorType>,
    },
    #[serde(rename = "invoice.voided")]
    InvoiceVoided { invoice_id: InvoiceId, customer_id: CustomerId, subscription_id: Option<SubscriptionId> },
    #[serde(rename = "subscription.created")]
    SubscriptionCreated { subscription_id: SubscriptionId, customer_id: CustomerId },
    #[serde(rename = "subscription.renewed")]
    SubscriptionRenewed {
        subscription_id: SubscriptionId,
        customer_id: CustomerId,
        invoice_id: InvoiceId,
        payment_number: u32,
    },
    #[serde(rename = "subscription.errored")]
    SubscriptionErrored { subscription_id: SubscriptionId, customer_id: CustomerId, invoice_id: InvoiceId },
    #[serde(rename = "subscription.activated")]
    SubscriptionActivated { subscription_id: SubscriptionId, customer_id: CustomerId, reason: ActivationReason },
    #[serde(rename = "subscription.paused")]
    SubscriptionPaused { subscription_id: SubscriptionId, customer_id: CustomerId },
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled { subscription_id: SubscriptionId, customer_id: CustomerId },
    #[serde(rename = "payment_method.attached")]
    PaymentMethodAttached {
        payment_method_id: PaymentMethodId,
        customer_id: CustomerId,
        brand: CardBrand,
        last4: String,
        /// The same card was registered again and replaced the saved one.
        replaced: bool,
    },
    #[serde(rename = "payment_method.removed")]
    PaymentMethodRemoved { payment_method_id: PaymentMethodId, customer_id: CustomerId },
    /// The cardholder disputed a payment of the invoice with their bank (a chargeback).
    #[serde(rename = "invoice.disputed")]
    InvoiceDisputed {
        invoice_id: InvoiceId,
        customer_id: CustomerId,
        /// The PSP's dispute id (`dp_...`).
        dispute_id: String,
        /// The disputed payment, as the attempt's `charge_id` records it.
        charge_id: String,
        amount: Money,
        /// The PSP's reason (`fraudulent`, `product_not_received`...).
        reason: String,
    },
    /// A saved card expires at the end of next month (sent once per card and expiry).
    #[serde(rename = "payment_method.expiring")]
    PaymentMethodExpiring {
        payment_method_id: PaymentMethodId,
        customer_id: CustomerId,
        brand: CardBrand,
        last4: String,
        exp_month: u8,
        exp_year: u16,
        is_default: bool,
    },
    /// The default card of a customer with an active subscription has expired: the next
    /// renewal will fail unless the customer adds a card.
    #[serde(rename = "payment_method.expired")]
    PaymentMethodExpired {
        payment_method_id: PaymentMethodId,
        customer_id: CustomerId,
        subscription_ids: Vec<SubscriptionId>,
    },
    /// A delivery to a merchant webhook endpoint was retried for three days and failed.
    #[serde(rename = "webhook_endpoint.delivery_failed")]
    WebhookDeliveryFailed {
        webhook_endpoint_id: WebhookEndpointId,
        /// The event that could not be delivered, and its type.
        event_id: EventId,
        event_type: String,
        attempts: u32,
        last_response_code: Option<u16>,
    },
    /// Every delivery to the endpoint failed for days: Recoup disabled it.
    #[serde(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled { webhook_endpoint_id: WebhookEndpointId, url: String },
    /// A refill was paid and credited to the wallet.
    #[serde(rename = "wallet.refilled")]
    WalletRefilled {
        customer_id: CustomerId,
        invoice_id: InvoiceId,
        amount: Money,
        /// The wallet's balance after the credit, in minor units of `amount`'s currency.
        balance: i64,
        automatic: bool,
    },
    /// A refill attempt was declined (or could not be made).
    #[serde(rename = "wallet.refill_failed")]
    WalletRefillFailed {
        customer_id: CustomerId,
        invoice_id: InvoiceId,
        amount: Money,
        automatic: bool,
        error_type: Option<ErrorType>,
        /// An automatic refill's next attempt; null when the refill has ended.
        next_attempt_at: Option<Timestamp>,
        /// Automatic refill was turned off: its schedule of attempts ended.
        auto_refill_disabled: bool,
    },
    /// A debit took the balance under the automatic refill threshold.
    #[serde(rename = "wallet.low_balance")]
    WalletLowBalance { customer_id: CustomerId, currency: Currency, balance: i64, threshold: i64 },
}

impl EventPayload {
    /// Every event type, as routed on the bus and documented in `docs/events.md`.
    pub const KINDS: [&'static str; 21] = [
        "invoice.created",
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.errored",
        "invoice.voided",
        "subscription.created",
        "subscription.renewed",
        "subscription.errored",
        "subscription.activated",
        "subscription.paused",
        "subscription.canceled",
        "payment_method.attached",
        "payment_method.removed",
        "invoice.disputed",
        "payment_method.expiring",
        "payment_method.expired",
        "webhook_endpoint.delivery_failed",
        "webhook_endpoint.disabled",
        "wallet.refilled",
        "wallet.refill_failed",
        "wallet.low_balance",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            EventPayload::InvoiceCreated { .. } => "invoice.created",
            EventPayload::InvoicePaymentFailed { .. } => "invoice.payment_failed",
            EventPayload::InvoicePaid { .. } => "invoice.paid",
            EventPayload::InvoiceErrored { .. } => "invoice.errored",
            EventPayload::InvoiceVoided { .. } => "invoice.voided",
            EventPayload::SubscriptionCreated { .. } => "subscription.created",
            EventPayload::SubscriptionRenewed { .. } => "subscription.renewed",
            EventPayload::SubscriptionErrored { .. } => "subscription.errored",
            EventPayload::SubscriptionActivated { .. } => "subscription.activated",
            EventPayload::SubscriptionPaused { .. } => "subscription.paused",
            EventPayload::SubscriptionCanceled { .. } => "subscription.canceled",
            EventPayload::PaymentMethodAttached { .. } => "payment_method.attached",
            EventPayload::PaymentMethodRemoved { .. } => "payment_method.removed",
            EventPayload::InvoiceDisputed { .. } => "invoice.disputed",
            EventPayload::PaymentMethodExpiring { .. } => "payment_method.expiring",
            EventPayload::PaymentMethodExpired { .. } => "payment_method.expired",
            EventPayload::WebhookDeliveryFailed { .. } => "webhook_endpoint.delivery_failed",
            EventPayload::WebhookEndpointDisabled { .. } => "webhook_endpoint.disabled",
            EventPayload::WalletRefilled { .. } => "wallet.refilled",
            EventPayload::WalletRefillFailed { .. } => "wallet.refill_failed",
            EventPayload::WalletLowBalance { .. } => "wallet.low_balance",
        }
    }

    /// The customer an event is about; `None` for the merchant's own (webhook endpoints).
    pub fn customer_id(&self) -> Option<&CustomerId> {
        match self {
            EventPayload::InvoiceCreated { customer_id, .. }
            | EventPayload::InvoicePaymentFailed { customer_id, .. }
            | EventPayload::InvoicePaid { customer_id, .. }
            | EventPayload::InvoiceErrored { customer_id, .. }
            | EventPayload::InvoiceVoided { customer_id, .. }
            | EventPayload::SubscriptionCreated { customer_id, .. }
            | EventPayload::SubscriptionRenewed { customer_id, .. }
            | EventPayload::SubscriptionErrored { customer_id, .. }
            | EventPayload::SubscriptionActivated { customer_id, .. }
            | EventPayload::SubscriptionPaused { customer_id, .. }
            | EventPayload::SubscriptionCanceled { customer_id, .. }
            | EventPayload::PaymentMethodAttached { customer_id, .. }
            | EventPayload::PaymentMethodRemoved { customer_id, .. }
            | EventPayload::InvoiceDisputed { customer_id, .. }
            | EventPayload::PaymentMethodExpiring { customer_id, .. }
            | EventPayload::PaymentMethodExpired { customer_id, .. }
            | EventPayload::WalletRefilled { customer_id, .. }
            | EventPayload::WalletRefillFailed { customer_id, .. }
            | EventPayload::WalletLowBalance { customer_id, .. } => Some(customer_id),
            EventPayload::WebhookDeliveryFailed { .. } | EventPayload::WebhookEndpointDisabled { .. } => None,
        }
    }

    /// The invoice an invoice event is about.
    pub fn invoice_id(&self) -> Option<&InvoiceId> {
        match self {
            EventPayload::InvoiceCreated { invoice_id, .. }
            | EventPayload::InvoicePaymentFailed { invoice_id, .. }
            | EventPayload::InvoicePaid { invoice_id, .. }
            | EventPayload::InvoiceErrored { invoice_id, .. }
            | EventPayload::InvoiceVoided { invoice_id, .. }
            | EventPayload::InvoiceDisputed { invoice_id, .. } => Some(invoice_id),
            EventPayload::SubscriptionCreated { .. }
            | EventPayload::SubscriptionRenewed { .. }
            | EventPayload::SubscriptionErrored { .. }
            | EventPayload::SubscriptionActivated { .. }
            | EventPayload::SubscriptionPaused { .. }
            | EventPayload::SubscriptionCanceled { .. }
            | EventPayload::PaymentMethodAttached { .. }
            | EventPayload::PaymentMethodRemoved { .. }
            | EventPayload::PaymentMethodExpiring { .. }
            | EventPayload::PaymentMethodExpired { .. }
            | EventPayload::WebhookDeliveryFailed { .. }
            | EventPayload::WebhookEndpointDisabled { .. }
            | EventPayload::WalletRefilled { .. }
            | EventPayload::WalletRefillFailed { .. }
            | EventPayload::WalletLowBalance { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    #[test]
    fn events_serialize_as_a_flat_envelope_with_type_and_data() {
        let e = Event::new(
            EventPayload::InvoicePaid {
                invoice_id: InvoiceId::generate(),
                customer_id: CustomerId::generate(),
                subscription_id: None,
                amount: Money::new(500, Currency::parse("JPY").unwrap()).unwrap(),
                paid_at: parse("2030-01-01T00:00:00Z"),
                paid_with: PaidWith::Card,
            },
            parse("2030-01-01T00:00:00Z"),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "invoice.paid");
        assert_eq!(v["data"]["amount"]["amount"], 500);
        assert_eq!(v["data"]["amount"]["currency"], "JPY");
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.kind(), "invoice.paid");
    }
}
