//! The service layer's error: a kind (which the HTTP layer maps to a status, in one
//! place), a stable machine-readable code, a message a developer can act on, and optional
//! details. Internal causes are logged, never returned.

use serde_json::{Map, Value};

use crate::domain::DomainError;
use crate::money::MoneyError;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    /// A payment or card verification was declined.
    PaymentRequired,
    /// The request is well-formed but cannot be honoured as sent (idempotency key reuse).
    Unprocessable,
    /// A dependency is unavailable; retrying may succeed.
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error { kind, code, message: message.into(), details: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadRequest, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Error::new(ErrorKind::NotFound, "not_found", format!("no such {what}"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Forbidden, "forbidden", message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Error::new(ErrorKind::Internal, "internal_error", "something went wrong on our side; it has been logged")
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Error::new(ErrorKind::Unavailable, "service_unavailable", "a dependency is unavailable; retry shortly")
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed { .. } => Error::conflict(
                "concurrent_update",
                "the resource changed while this request was being handled; retry it",
            ),
            StoreError::Contention(_) | StoreError::Unavailable(_) => Error::unavailable(e),
            StoreError::Invalid(msg) if msg.contains("cursor") => Error::bad_request("invalid_cursor", msg),
            StoreError::Invalid(_) | StoreError::Corrupt(_) => Error::internal(e),
        }
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        let code = e.code();
        match e {
            DomainError::InvalidInput { field, .. } => Error::bad_request(code, message).with("field", field),
            DomainError::InvoiceNotChargeable(_)
            | DomainError::InvoiceAlreadyPaid
            | DomainError::ChargeInProgress
            | DomainError::TransactionNotPending(_)
            | DomainError::InvalidTransition { .. }
            | DomainError::Removal(_) => Error::conflict(code, message),
        }
    }
}

impl From<MoneyError> for Error {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::UnknownCurrency(_) => {
                Error::bad_request("invalid_currency", e.to_string()).with("field", "currency")
            }
            MoneyError::OutOfRange(_) => Error::bad_request("invalid_amount", e.to_string()).with("field", "amount"),
        }
    }
}
