//! The store-backed outbox of customer emails: the adapter of the mailer port
//! ([`crate::ports::mailer`], re-exported here).
//!
//! Emails are recorded in the table under their id (the event that caused them), so a
//! redelivered event never sends the same email twice; the local product shows them at
//! `GET /v1/dev/emails`.

use async_trait::async_trait;

pub use crate::ports::mailer::{Email, MailError, Mailer};
use crate::store::repo::{Entity, Repo, Tx, Versioned};
use crate::store::{Index, IndexKeys, Key, Query, SortKeyRange, StoreError, keys};

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
