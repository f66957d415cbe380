//! Idempotency keys for the HTTP API. The first request with a key claims a record
//! (a conditional put); the response is stored on completion. The same key with the same
//! request replays that response; with a different request it is refused. Records expire
//! after a day.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ErrorKind, Result};
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
