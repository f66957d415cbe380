//! The mailer port and the store-backed outbox of customer emails.
//!
//! Emails are recorded in the table under their id (the event that caused them), so a
//! redelivered event never sends the same email twice; the local product shows them at
//! `GET /v1/dev/emails`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::CustomerId;
use crate::store::repo::{Entity, Repo, Tx, Versioned};
use crate::store::{Index, IndexKeys, Key, Query, SortKeyRange, StoreError, keys};
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

impl Entity for Email {
    const KIND: &'static str = "email";
    fn key(&self) -> Key {
        keys::email(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        IndexKeys::default().with(Index::Gsi1, Some(keys::listing_entry(keys::ALL_EMAILS, self.created_at, &self.id)))
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.created_at + chrono::TimeDelta::days(90)).timestamp())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email could not be sent: {0}")]
pub struct MailError(pub String);

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends the email once; sending the same id again is a no-op that succeeds.
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Records each email in the store (once per id) and logs that it was queued. Delivery
/// through an email service plugs in behind the same port.
pub struct StoreMailer {
    repo: Repo,
}

impl StoreMailer {
    pub fn new(repo: Repo) -> Self {
        StoreMailer { repo }
    }

    /// Most recent first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Email>, StoreError> {
        let q = Query::index(Index::Gsi1, keys::ALL_EMAILS, SortKeyRange::All).descending().limit(limit);
        let page = self.repo.store().query(&q).await?;
        page.items.into_iter().map(|i| crate::store::repo::from_item::<Email>(i).map(Versioned::into_inner)).collect()
    }
}

#[async_trait]
impl Mailer for StoreMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let mut tx = Tx::new();
        tx.save(&Versioned::new(email.clone())).map_err(|e| MailError(e.to_string()))?;
        match self.repo.commit(tx).await {
            Ok(_) => {
                tracing::info!(email_id = %email.id, customer_id = %email.customer_id, subject = %email.subject, "email queued");
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(MailError(e.to_string())),
        }
    }
}
