//! The mailer port: customer emails, sent once per id. Adapter: `crate::mail::StoreMailer`
//! (records them in the table; delivery through an email service plugs in behind it).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::CustomerId;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Unique per reason to write: the id of the event that prompted it.
    pub id: String,
    pub customer_id: CustomerId,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email could not be sent: {0}")]
pub struct MailError(pub String);

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the email once; sending the same id again is a no-op that succeeds.
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}
