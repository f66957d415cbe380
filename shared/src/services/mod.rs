//! Application services: each use case loads what it needs through the repository, asks
//! the domain to decide, and commits the result with its events in one transaction.
//! Conflicting concurrent writers are detected by version checks and retried here.

use std::sync::Arc;

use crate::events::Event;
use crate::gateway::PaymentGateway;
use crate::mail::Mailer;
use crate::policy::DunningPolicy;
use crate::store::repo::Repo;
use crate::time::{Clock, Timestamp};

pub mod charging;
pub mod customers;
pub mod idempotency;
pub mod invoices;
pub mod notifier;
pub mod outbox;
pub mod payment_methods;
pub mod ports;
pub mod scheduler;
pub mod subscriptions;

use ports::EventPublisher;

/// How many times a use case re-reads and retries after losing a race to another writer.
pub(crate) const OPTIMISTIC_RETRIES: usize = 8;

/// Everything a use case may touch, built once per process (per Lambda cold start).
#[derive(Clone)]
pub struct Services {
    pub repo: Repo,
    pub gateway: Arc<dyn PaymentGateway>,
    pub clock: Arc<dyn Clock>,
    pub publisher: Arc<dyn EventPublisher>,
    pub mailer: Arc<dyn Mailer>,
    pub policy: DunningPolicy,
    /// Where customers manage their cards; linked from dunning emails.
    pub portal_url: String,
}

impl Services {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Publishes freshly committed events right away. Failures are left to the relay,
    /// which finds every unpublished event in the outbox.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        outbox::publish_and_mark(self, events).await;
    }
}
