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

/// A card setup begun for the PSP's card form (Stripe: a SetupIntent for off-session
/// use). The form confirms it in the cardholder's browser with `client_secret`, so the
/// card number and any 3-D Secure challenge go to the PSP only; then the card is
/// registered with [`PaymentGateway::verify_setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSetup {
    pub id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The verification hold was declined: the card is not saved.
    #[error("the card was declined at verification: {}", .0.message)]
    Declined(Decline),
    /// The PSP does not know this token.
    #[error("no such payment method token")]
    InvalidToken,
    /// The card setup is unknown, another customer's, or not for this card.
    #[error("the card setup does not match: {0}")]
    SetupMismatch(&'static str),
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Attaches the tokenized card to the customer and runs the PSP's verification (a
    /// small hold, released at once). Returns what may be stored about the card.
    async fn verify(&self, psp_token: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError>;

    /// Begins a card setup for the PSP's card form, for this customer.
    async fn begin_setup(&self, customer: &CustomerId) -> Result<CardSetup, GatewayError>;

    /// The card a setup from [`PaymentGateway::begin_setup`] saved, once the cardholder
    /// confirmed it: the setup must be this customer's, for this card, and succeeded (the
    /// verification and any authentication are done; nothing is sent again).
    async fn verify_setup(
        &self,
        setup_id: &str,
        psp_token: &str,
        customer: &CustomerId,
    ) -> Result<VerifiedCard, GatewayError>;

    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome;

    /// Detaches a removed card from the customer at the PSP, so it can never be charged
    /// again. Detaching a card the PSP no longer has is not an error.
    async fn detach(&self, psp_token: &str) -> Result<(), GatewayError>;

    /// The outcome of the charge made with this idempotency key; `None` when the PSP has
    /// no such charge (the request never reached it).
    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError>;

    /// The outcome of the payment `payment_id` (the charge id an attempt recorded, e.g. a
    /// PaymentIntent waiting for 3-D Secure), read directly; `None` when the provider cannot
    /// say (then [`PaymentGateway::lookup`] by idempotency key is the way).
    async fn payment_outcome(&self, payment_id: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        let _ = payment_id;
        Ok(None)
    }

    /// The Recoup invoice and customer of a payment the PSP made for Recoup (from what the
    /// charge carried); `None` for a payment Recoup did not make.
    async fn payment_owner(&self, payment_id: &str) -> Result<Option<(InvoiceId, CustomerId)>, GatewayError>;

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
    /// A setup begun by Recoup's card form succeeded at the PSP. The form registers the
    /// card itself; this saves it when the browser never came back.
    CardSetUp { customer_id: CustomerId, setup_id: String, psp_token: String },
    /// The cardholder disputed a charge (a chargeback).
    Dispute(Dispute),
}

/// A dispute (chargeback) as the PSP reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub id: String,
    /// The PSP's id of the disputed payment, as an attempt's `charge_id` records it.
    pub payment_id: String,
    pub amount: Money,
    /// The PSP's reason (`fraudulent`, `product_not_received`...).
    pub reason: String,
    /// The PSP's status (`needs_response`, `warning_needs_response`...).
    pub status: String,
}
