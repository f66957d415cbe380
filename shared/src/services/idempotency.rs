//! Idempotency keys for the HTTP API. The first request with a key claims a record
//! (a conditional put); the response is stored on completion. The same key with the same
//! request replays that response; with a different request it is refused. Records expire
//! after a day.
//!
//! The record alone cannot make a create happen once: a process that dies after the
//! create committed but before the record was completed leaves it in progress, and once
//! the lease lapses a retry runs the request again. So each create also writes, in its own
//! transaction, a [`CreatedBy`] mark under the claim's [`RequestId`] (which must not exist
//! yet); a re-run finds the mark and answers with what the first run made.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::ids::{CustomerId, InvoiceId, SubscriptionId};
use crate::store::repo::{Entity, Tx, Versioned};
use crate::store::{Key, StoreError, keys};
use crate::time::Timestamp;

use super::{Decision, Services};

/// How long a key is remembered.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// How long a request may hold its key before another may take over (a crashed handler).
pub const LEASE: TimeDelta = TimeDelta::seconds(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IdempotencyState {
    InProgress { lease_until: Timestamp },
    Completed { status: u16, body: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub id: String,
    pub request_hash: String,
    pub state: IdempotencyState,
    pub created_at: Timestamp,
}

impl Entity for IdempotencyRecord {
    const KIND: &'static str = "idempotency";
    fn key(&self) -> Key {
        keys::idempotency(&self.id)
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.created_at + RETENTION).timestamp())
    }
}

impl IdempotencyRecord {
    /// The id a create run under this claim records what it made by: the caller's key
    /// (already hashed with its scope). Every run with the key finds what the first one
    /// made: after a lapsed lease, and after a release (a failure once the create had
    /// committed). A mark as old as the record's retention is forgotten with it.
    pub fn request_id(&self) -> RequestId {
        RequestId(self.id.clone())
    }
}

/// One request that may run more than once (a retry with the same `Idempotency-Key`) but
/// must create its resource once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// From any text (hashed, so it is bounded and safe in a key). The HTTP edge uses
    /// [`IdempotencyRecord::request_id`].
    pub fn new(text: &str) -> Self {
        RequestId(sha256_hex(&[text.as_bytes()]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a create made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Created {
    Customer(CustomerId),
    Invoice(InvoiceId),
    Subscription(SubscriptionId),
    /// A wallet debit: `<currency>:<entry number>`.
    WalletEntry(String),
}

/// The mark a create writes with what it creates, in the same transaction: "request R
/// created X". It must not exist, so of two runs of one request only one commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedBy {
    pub request_id: String,
    pub created: Created,
    pub created_at: Timestamp,
}

impl Entity for CreatedBy {
    const KIND: &'static str = "created_by_request";
    fn key(&self) -> Key {
        keys::created_by_request(&self.request_id)
    }
    // As long as the idempotency record: no retry with the key can come later.
    fn expires_at(&self) -> Option<i64> {
        Some((self.created_at + RETENTION).timestamp())
    }
}

/// Adds the mark "`request` created `created`" to a create's transaction (nothing without
/// a request id). The commit then fails on it if another run of the request committed.
pub(crate) fn mark_created(tx: &mut Tx, request: Option<&RequestId>, created: Created, now: Timestamp) -> Result<()> {
    if let Some(request) = request {
        let mark = CreatedBy { request_id: request.as_str().to_owned(), created, created_at: now };
        tx.save(&Versioned::new(mark))?;
    }
    Ok(())
}

/// A mark naming another kind of resource than the create that read it: the request hash
/// covers the path, so this is a bug, never a caller's mistake.
pub(crate) fn created_something_else(expected: &str, found: &Created) -> Error {
    Error::internal(format!("a {expected} create found its request marked as having created {found:?}"))
}

pub enum Begin {
    /// First use: go ahead, then complete (or release) the record.
    Proceed(Versioned<IdempotencyRecord>),
    Replay {
        status: u16,
        body: String,
    },
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Services {
    /// `scope` names the caller (keys are per caller); `request_hash` covers method, path
    /// and body.
    pub async fn idempotency_begin(&self, scope: &str, key: &str, request_hash: &str) -> Result<Begin> {
        let id = sha256_hex(&[scope.as_bytes(), key.as_bytes()]);
        let id = &id;
        let begun = self
            .optimistic_tries(3, "idempotency record", || async move {
                let now = self.now();
                let existing = self.repo.load::<IdempotencyRecord>(&keys::idempotency(id)).await?;
                let fresh = IdempotencyRecord {
                    id: id.clone(),
                    request_hash: request_hash.to_owned(),
                    state: IdempotencyState::InProgress { lease_until: now + LEASE },
                    created_at: now,
                };
                let claim = match existing {
                    None => Versioned::new(fresh),
                    Some(rec) if rec.created_at + RETENTION <= now => {
                        let mut rec = rec;
                        *rec = fresh;
                        rec
                    }
                    Some(rec) if rec.request_hash != request_hash => return Ok(Decision::Answer(Begin::Mismatch)),
                    Some(rec) => match &rec.state {
                        IdempotencyState::Completed { status, body } => {
                            return Ok(Decision::Answer(Begin::Replay { status: *status, body: body.clone() }));
                        }
                        IdempotencyState::InProgress { lease_until } if *lease_until > now => {
                            return Ok(Decision::Answer(Begin::InProgress));
                        }
                        IdempotencyState::InProgress { .. } => {
                            let mut rec = rec;
                            rec.state = IdempotencyState::InProgress { lease_until: now + LEASE };
                            rec
                        }
                    },
                };
                let mut tx = Tx::new();
                tx.save(&claim)?;
                let mut claimed = claim;
                claimed.set_version(claimed.version() + 1);
                Ok(Decision::Commit(tx, Begin::Proceed(claimed)))
            })
            .await;
        match begun {
            // Three requests with the key raced for it: another one holds it now.
            Err(e) if e.kind == ErrorKind::Conflict => Ok(Begin::InProgress),
            other => other,
        }
    }

    /// What an earlier run of `request` created, if one committed. A mark past the
    /// retention belongs to an earlier use of the key (a new request now, as its record
    /// is): it is deleted, so this run's mark can take its place.
    pub(crate) async fn created_by(&self, request: Option<&RequestId>) -> Result<Option<Created>> {
        let Some(request) = request else { return Ok(None) };
        let Some(mark) = self.repo.load::<CreatedBy>(&keys::created_by_request(request.as_str())).await? else {
            return Ok(None);
        };
        if mark.created_at + RETENTION > self.now() {
            return Ok(Some(mark.into_inner().created));
        }
        let mut tx = Tx::new();
        tx.delete(&mark);
        match self.repo.commit(tx).await {
            // Gone or rewritten meanwhile: this run's commit decides against whatever is there.
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn idempotency_complete(
        &self,
        mut record: Versioned<IdempotencyRecord>,
        status: u16,
        body: String,
    ) -> Result<()> {
        record.state = IdempotencyState::Completed { status, body };
        let mut tx = Tx::new();
        tx.save(&record)?;
        self.repo.commit(tx).await?;
        Ok(())
    }

    /// Forgets the key (after a server-side failure) so the client can retry with it.
    pub async fn idempotency_release(&self, record: Versioned<IdempotencyRecord>) -> Result<()> {
        let mut tx = Tx::new();
        tx.delete(&record);
        match self.repo.commit(tx).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
