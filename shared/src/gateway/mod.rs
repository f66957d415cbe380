//! The payment-gateway port: verify (attach) a card, charge it off- or on-session with an
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
use crate::ids::CustomerId;

pub mod sandbox;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Same key, same charge: the PSP never creates two.
    pub idempotency_key: String,
    pub psp_token: String,
    pub amount: Money,
    pub customer_id: CustomerId,
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

    /// The outcome of the charge made with this idempotency key; `None` when the PSP has
    /// no such charge (the request never reached it).
    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError>;

    fn name(&self) -> &'static str;
}
