//! Application services: each use case loads what it needs through the repository, asks
//! the domain to decide, and commits the result with its events in one transaction.
//! Conflicting concurrent writers are detected by version checks and retried here.

use std::sync::Arc;

use crate::domain::events::Event;
use crate::domain::policy::DunningPolicy;
use crate::error::{Code, Error, Result};
use crate::mail::Mailer;
use crate::ports::gateway::PaymentGateway;
use crate::store::StoreError;
use crate::store::repo::{Repo, Tx};
use crate::time::{Clock, Timestamp};

mod card_locks;
pub use card_locks::CardTurns;
pub mod charging;
pub mod customers;
pub mod idempotency;
pub mod invoices;
pub mod notifier;
pub mod outbox;
pub mod payment_methods;
pub mod psp_events;
pub mod reminders;
pub mod scheduler;
pub mod subscriptions;
pub mod wallet;
pub mod webhooks;

use crate::ports::messaging::EventPublisher;

/// How many times a use case re-reads and retries after losing a race to another writer.
pub(crate) const OPTIMISTIC_RETRIES: usize = 8;

/// The longest pause between two rounds after lost races, in milliseconds.
const BACKOFF_CAP_MS: u64 = 16;

/// Full jitter: a random pause up to an exponentially growing bound, so writers that
/// collided (many customers charging one shared card, whose ledger every claim writes) do
/// not collide again in lockstep. The first retry goes at once.
fn backoff(lost: usize) -> std::time::Duration {
    if lost <= 1 {
        return std::time::Duration::ZERO;
    }
    let bound_us = (1u64 << lost.min(16)).saturating_mul(250).min(BACKOFF_CAP_MS * 1000);
    std::time::Duration::from_micros(fastrand::u64(0..=bound_us))
}

/// What one optimistic round read and decided.
pub(crate) enum Decision<T> {
    /// Nothing to write: the answer is this.
    Answer(T),
    /// Write this (every entity it read carries its version check), then answer that.
    Commit(Tx, T),
}

/// The one error for a use case that lost every race it ran.
pub(crate) fn concurrent_update(what: &str) -> Error {
    Error::new(Code::ConcurrentUpdate, format!("the {what} kept changing under concurrent writers; retry"))
}

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
    /// The merchant's own address: told when Recoup disables a failing webhook endpoint.
    pub merchant_email: Option<String>,
    /// Signed links to a customer's billing page, for the emails (else `portal_url`).
    pub portal_links: Option<Arc<dyn crate::ports::portal::PortalLinks>>,
    /// One claim or settle at a time per card in this process (see `card_locks`).
    pub card_turns: CardTurns,
    /// Whether committed events are published before a use case answers, or meanwhile.
    pub publishing: outbox::Publishing,
}

impl Services {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The read–decide–commit loop every use case runs: `round` reads what it needs and
    /// decides; its writes commit only if nothing it read has changed, and its events are
    /// published after the commit. A lost race runs the round again on fresh reads, up to
    /// [`OPTIMISTIC_RETRIES`] times, then answers `409 concurrent_update`.
    ///
    /// A round is `|| async move { ... }` over references, so that each future it returns
    /// owns its captures (what keeps the handlers' futures `Send`).
    pub(crate) async fn optimistic<T, F, Fut>(&self, what: &str, round: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision<T>>>,
    {
        self.optimistic_tries(OPTIMISTIC_RETRIES, what, round).await
    }

    pub(crate) async fn optimistic_tries<T, F, Fut>(&self, tries: usize, what: &str, mut round: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision<T>>>,
    {
        for attempt in 0..tries {
            let pause = backoff(attempt);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            match round().await? {
                Decision::Answer(answer) => return Ok(answer),
                Decision::Commit(tx, answer) => match self.repo.commit(tx).await {
                    Ok(events) => {
                        self.publish(events).await;
                        return Ok(answer);
                    }
                    // Either way nothing was written: the round reads and decides again.
                    // A collision (DynamoDB cancels a transaction that meets another on
                    // one of its items) is not an answer for the caller: a settle that
                    // gave up on one would report a charge the PSP made as not made.
                    Err(StoreError::ConditionFailed { .. } | StoreError::Contention(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(concurrent_update(what))
    }

    /// Publishes freshly committed events right away (or starts to, when publishing in
    /// the background). Failures are left to the relay, which finds every unpublished
    /// event in the outbox.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        outbox::publish(self, events).await;
    }
}
