//! The mailer port: customer emails, sent once per id. Adapter: `crate::mail::StoreMailer`,
//! which records each email in the table (its outbox) and hands it to a
//! [`MailTransport`]: SES in AWS (`crate::aws::SesTransport`), `.eml` files in the local
//! product (`crate::mail::EmlDirectory`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::CustomerId;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Unique per reason to write: the id of the event that prompted it.
    pub id: String,
    /// Which template wrote it (`payment_failed`, `card_expiring`...).
    #[serde(default)]
    pub template: String,
    /// The customer it is about; `None` for the merchant's own (a webhook endpoint disabled).
    pub customer_id: Option<CustomerId>,
    pub to: String,
    pub subject: String,
    /// The plain-text part.
    pub body: String,
    /// The HTML part.
    #[serde(default)]
    pub html: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub status: EmailStatus,
    /// The transport's id for it (SES's message id, the `.eml` file's name).
    #[serde(default)]
    pub message_id: Option<String>,
}

/// Where an email stands. It moves forward only, so it is sent at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailStatus {
    /// Recorded, not yet handed to the transport (or handed and refused: tried again).
    #[default]
    Queued,
    /// Being handed to the transport. An email found here after a crash is left, not
    /// sent again: whether the transport took it is unknown, and twice is worse than once.
    Sending,
    Sent,
    /// Kept only: no transport is configured (no sender address).
    Recorded,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email could not be sent: {0}")]
pub struct MailError(pub String);

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the email once; sending the same id again is a no-op that succeeds.
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Who emails come from: the template's parameters in AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// `Billing <billing@example.com>`; a verified SES identity.
    pub from: String,
    pub reply_to: Option<String>,
    /// The SES configuration set (event publishing, suppression, dedicated IPs).
    pub configuration_set: Option<String>,
}

/// Hands one rendered message (RFC 5322, MIME) to whatever delivers it.
#[async_trait]
pub trait MailTransport: Send + Sync {
    /// Answers the transport's id for the message. An error means it was not taken.
    async fn deliver(&self, email: &Email, sender: &Sender, mime: &[u8]) -> Result<String, MailError>;
}
