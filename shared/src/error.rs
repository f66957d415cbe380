//! The service layer's error: a stable machine-readable [`Code`] (one enum: each code
//! with its kind, which the HTTP layer maps to a status in one place, and a one-line
//! meaning), a message a developer can act on, and optional details. Internal causes are
//! logged, never returned.

use serde_json::{Map, Value};

use crate::domain::DomainError;
use crate::domain::money::MoneyError;
use crate::domain::payment_method::RemovalRefused;
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
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// A dependency is unavailable; retrying may succeed.
    Unavailable,
    Internal,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $kind:ident, $meaning:literal; )*) => {
        /// Every error code the API answers with. Codes are part of the API: never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            pub fn kind(self) -> ErrorKind {
                match self { $(Code::$variant => ErrorKind::$kind,)* }
            }

            /// One line a developer reads in the API reference.
            pub fn meaning(self) -> &'static str {
                match self { $(Code::$variant => $meaning,)* }
            }
        }
    };
}

codes! {
    InvalidRequest = "invalid_request", BadRequest, "the body or a query parameter is not valid (`field` names it)";
    InvalidAmount = "invalid_amount", BadRequest, "not an integer number of minor units in range";
    InvalidCurrency = "invalid_currency", BadRequest, "not a supported ISO 4217 code";
    InvalidCursor = "invalid_cursor", BadRequest, "`starting_after` is not a cursor this listing returned";
    InvalidPaymentMethod = "invalid_payment_method", BadRequest, "not a PSP token, or one the PSP does not know";
    InvalidSetupIntent = "invalid_setup_intent", BadRequest, "not a card setup this customer began, or not for this card";
    InvalidIdempotencyKey = "invalid_idempotency_key", BadRequest, "`Idempotency-Key` is not 1-255 visible ASCII characters";
    InvalidUrl = "invalid_url", BadRequest, "a webhook endpoint URL that is not an absolute https URL without credentials or fragment";
    UrlNotHttps = "url_not_https", BadRequest, "a webhook endpoint URL must use https";
    UrlForbiddenAddress = "url_forbidden_address", BadRequest, "a webhook endpoint URL that points at a loopback, private, link-local or metadata address";
    InvalidEventType = "invalid_event_type", BadRequest, "`enabled_events` names an unknown event type, or mixes \"*\" with types";
    RawCardDataRefused = "raw_card_data_refused", BadRequest, "the request holds a card number";
    InvalidSignature = "invalid_signature", BadRequest, "a PSP webhook whose signature is missing, malformed, stale or wrong; nothing was read";
    Unauthorized = "unauthorized", Unauthorized, "no bearer token, or its claims are missing or invalid";
    PaymentDeclined = "payment_declined", PaymentRequired, "the charge was attempted and declined";
    PaymentMethodVerificationFailed = "payment_method_verification_failed", PaymentRequired, "the PSP declined the card when it was registered";
    Forbidden = "forbidden", Forbidden, "the caller's role may not do this";
    NotFound = "not_found", NotFound, "no such resource, or not the caller's";
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed, "the path exists, the method does not";
    ConcurrentUpdate = "concurrent_update", Conflict, "the resource kept changing under concurrent writers; retry";
    IdempotencyKeyInProgress = "idempotency_key_in_progress", Conflict, "the first request with this key is still running";
    InvoiceAlreadyPaid = "invoice_already_paid", Conflict, "the invoice is paid";
    InvoiceNotChargeable = "invoice_not_chargeable", Conflict, "the invoice is void (or draft)";
    ChargeInProgress = "charge_in_progress", Conflict, "an attempt on the invoice is pending at the PSP";
    ChargeScheduled = "charge_scheduled", Conflict, "an earlier run of this request issued the invoice but did not start its charge; the schedule will";
    TransactionNotPending = "transaction_not_pending", Conflict, "an attempt's outcome was already recorded";
    InvalidStateTransition = "invalid_state_transition", Conflict, "the invoice or subscription is not in a state this action starts from";
    NoPaymentMethod = "no_payment_method", Conflict, "the customer has no default card";
    PaymentMethodUpdateRequired = "payment_method_update_required", Conflict, "this card hard-declined this invoice, or was proved unusable or blocked";
    CustomerAuthenticationRequired = "customer_authentication_required", Conflict, "the issuer wants the cardholder; only the customer can pay now";
    NetworkRetryLimit = "network_retry_limit", Conflict, "a card-network rule forbids another attempt now";
    SubscriptionInvoice = "subscription_invoice", Conflict, "an invoice of a subscription that is not canceled cannot be voided";
    SubscriptionCanceled = "subscription_canceled", Conflict, "the invoice's subscription is canceled: not collected automatically";
    PaymentAlreadyApproved = "payment_already_approved", Conflict, "subscription payment N is paid";
    PaymentWaiting = "payment_waiting", Conflict, "subscription payment N is queued for a future date or in flight";
    PendingTransactions = "pending_transactions", Conflict, "a charge on the card is pending";
    LastPaymentMethodWithActiveSubscription = "last_payment_method_with_active_subscription", Conflict, "the only card, and a subscription will bill again";
    DefaultPaymentMethod = "default_payment_method", Conflict, "the default card, while other cards exist";
    WebhookEndpointDisabled = "webhook_endpoint_disabled", Conflict, "the webhook endpoint is disabled; enable it first";
    InsufficientBalance = "insufficient_balance", Conflict, "the wallet's balance is less than the debit";
    RefillInProgress = "refill_in_progress", Conflict, "a refill of the wallet is being collected; one at a time";
    IdempotencyKeyReused = "idempotency_key_reused", Unprocessable, "the key was used with a different request";
    /// Queue consumers only: never an HTTP answer.
    PoisonMessage = "poison_message", BadRequest, "a queue message that can never be processed; it goes to the dead-letter queue";
    InternalError = "internal_error", Internal, "a bug on our side; logged";
    ServiceUnavailable = "service_unavailable", Unavailable, "the store or the payment provider is unavailable; retry";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Code,
    pub message: String,
    pub details: Map<String, Value>,
    /// What went wrong inside (a store failure, a bug): logged once, by the edge that
    /// answers (HTTP response, queue message, scheduled run); never part of an answer.
    pub cause: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { kind: code.kind(), code, message: message.into(), details: Map::new(), cause: None }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Error::new(Code::NotFound, format!("no such {what}"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::new(Code::Forbidden, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error {
            cause: Some(cause.to_string()),
            ..Error::new(Code::InternalError, "something went wrong on our side; it has been logged")
        }
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Error {
            cause: Some(cause.to_string()),
            ..Error::new(Code::ServiceUnavailable, "a dependency is unavailable; retry shortly")
        }
    }

    /// The one log line for an error that reaches an edge: internal errors and unavailable
    /// dependencies with their cause; anything else is the caller's and is not logged here.
    pub fn log_at_edge(&self, edge: &str) {
        match self.kind {
            ErrorKind::Internal => {
                tracing::error!(edge, code = %self.code, cause = self.cause.as_deref().unwrap_or(&self.message), "internal error")
            }
            ErrorKind::Unavailable => {
                tracing::warn!(edge, code = %self.code, cause = self.cause.as_deref().unwrap_or(&self.message), "dependency unavailable")
            }
            ErrorKind::BadRequest
            | ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::NotFound
            | ErrorKind::Conflict
            | ErrorKind::PaymentRequired
            | ErrorKind::Unprocessable
            | ErrorKind::MethodNotAllowed => {}
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConditionFailed { .. } => Error::new(
                Code::ConcurrentUpdate,
                "the resource changed while this request was being handled; retry it",
            ),
            StoreError::Contention(_) | StoreError::Unavailable(_) => Error::unavailable(e),
            StoreError::InvalidCursor(msg) => Error::new(Code::InvalidCursor, msg),
            StoreError::Invalid(_) | StoreError::Corrupt(_) => Error::internal(e),
        }
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        let code = match &e {
            DomainError::InvoiceNotChargeable(_) => Code::InvoiceNotChargeable,
            DomainError::InvoiceAlreadyPaid => Code::InvoiceAlreadyPaid,
            DomainError::ChargeInProgress => Code::ChargeInProgress,
            DomainError::TransactionNotPending(_) => Code::TransactionNotPending,
            DomainError::InvalidTransition { .. } => Code::InvalidStateTransition,
            DomainError::InvalidInput { .. } => Code::InvalidRequest,
            DomainError::Removal(RemovalRefused::LastPaymentMethodWithActiveSubscription) => {
                Code::LastPaymentMethodWithActiveSubscription
            }
            DomainError::Removal(RemovalRefused::DefaultPaymentMethod) => Code::DefaultPaymentMethod,
            DomainError::Removal(RemovalRefused::PendingTransactions) => Code::PendingTransactions,
        };
        match e {
            DomainError::InvalidInput { field, .. } => Error::new(code, message).with("field", field),
            _ => Error::new(code, message),
        }
    }
}

impl From<MoneyError> for Error {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::UnknownCurrency(_) => {
                Error::new(Code::InvalidCurrency, e.to_string()).with("field", "currency")
            }
            MoneyError::OutOfRange(_) => Error::new(Code::InvalidAmount, e.to_string()).with("field", "amount"),
        }
    }
}
