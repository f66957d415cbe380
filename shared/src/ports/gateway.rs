//! The payment-gateway port (adapters: the `recoup-sandbox` and `recoup-stripe` crates): verify (attach) a card, charge it off- or on-session with an
//! idempotency key, and look a charge up by that key.
//!
//! A charge never returns an error: whatever happens is an [`AttemptOutcome`]. Anything
//! short of a definite answer from the PSP (timeout, dropped connection, 5xx) is
//! `Unknown`, which the engine never treats as a failure and never re-charges blindly.

use async_trait::async_trait;

use crate::domain::decline::Decline;
use crate::domain::invoice::AttemptOutcome;
use crate::domain::money::Money;
use crate::domain::payment_method::VerifiedCard;
use crate::ids::{CustomerId, InvoiceId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Same key, same charge: the PSP never creates two.
    pub idempotency_key: String,
    pub psp_token: String,
    pub amount: Money,
    pub customer_id: CustomerId,
    /// The invoice and the attempt's number on it, so the PSP's records can be traced
    /// back (Stripe: the PaymentIntent's metadata).
    pub invoice_id: InvoiceId,
    pub attempt: u32,
    /// False when the cardholder is present (paying from the portal).
    pub off_session: bool,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The verification hold was declined: the card is not saved.
    #[error("the card was declined at verification: {}", .0.message)]
    Declined(Decline),
    /// The PSP does not know this token.
    #[error("no such payment method token")]
    InvalidToken,
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Attaches the tokenized card to the customer and runs the PSP's verification (a
    /// small hold, released at once). Returns what may be stored about the card.
    async fn verify(&self, psp_token: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError>;

    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome;

    /// Detaches a removed card from the customer at the PSP, so it can never be charged
    /// again. Detaching a card the PSP no longer has is not an error.
    async fn detach(&self, psp_token: &str) -> Result<(), GatewayError>;

    /// The outcome of the charge made with this idempotency key; `None` when the PSP has
    /// no such charge (the request never reached it).
    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError>;

    fn name(&self) -> &'static str;
}

/// A PSP webhook, in Recoup's terms: its id (for deduplication) and type, and what it
/// means for Recoup, if anything. The provider's adapter parses and verifies it; the
/// services settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspNotice {
    pub id: String,
    pub kind: String,
    pub event: Option<PspEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PspEvent {
    /// A charge Recoup made (found by the idempotency key it carried) reached this outcome.
    /// `needs_cardholder`: the issuer asks for 3-D Secure, which an on-session payer may
    /// still complete, so an on-session attempt stays pending.
    Payment { idempotency_key: String, invoice_id: Option<InvoiceId>, outcome: AttemptOutcome, needs_cardholder: bool },
    /// The issuer updated a saved card (account updater): new expiry, or new number.
    CardUpdated { customer_id: CustomerId, card: VerifiedCard },
    /// The card was detached at the PSP: it can no longer be charged.
    CardDetached { customer_id: CustomerId, psp_token: String },
}
