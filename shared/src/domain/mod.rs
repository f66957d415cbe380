//! Every business rule: money, cards, the decline taxonomy and retry policy, entities and
//! the rules that move them, and the events they emit. Everything here is pure: no I/O,
//! time passed in.

pub mod card;
pub mod customer;
pub mod decline;
pub mod dunning;
pub mod events;
pub mod invoice;
pub mod ledger;
pub mod money;
pub mod payment_method;
pub mod policy;
pub mod portal;
pub mod subscription;
pub mod wallet;
pub mod webhook;

pub use customer::Customer;
pub use invoice::{Invoice, InvoiceStatus, Transaction, TransactionStatus};
pub use ledger::CardLedger;
pub use payment_method::{PaymentMethod, PaymentMethodStatus};
pub use subscription::{Subscription, SubscriptionStatus};

use crate::ids::TransactionId;

/// Why a domain rule refused an action. Each variant maps to a stable API code
/// (`crate::error::Code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the invoice is {0}; only open or errored invoices can be charged")]
    InvoiceNotChargeable(&'static str),
    #[error("the invoice is already paid")]
    InvoiceAlreadyPaid,
    #[error("a charge of this invoice is already in progress; try again shortly")]
    ChargeInProgress,
    #[error("transaction {0} is not pending")]
    TransactionNotPending(TransactionId),
    #[error("cannot {action} the {entity}: it is {state}")]
    InvalidTransition { entity: &'static str, state: &'static str, action: &'static str },
    #[error("{field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error(transparent)]
    Removal(#[from] payment_method::RemovalRefused),
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::InvalidInput { field, reason: reason.into() }
    }
}
