//! The item-store port: a thin item store (get, query by key or index, conditional
//! transactional write) that DynamoDB and the embedded database both implement. Its
//! adapters, and the entity mapping written once above it, are under `crate::store`; see
//! `docs/data-model.md` for the single-table design.
//!
//! Every update carries a condition (the item's version, or that it does not exist yet),
//! and a change that touches several items is one transaction: all or nothing.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// DynamoDB's limit on the items one transaction may touch.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// DynamoDB's limit on the keys one `BatchGetItem` may read.
pub const MAX_BATCH_GET: usize = 100;

/// Refuses a batched read DynamoDB would refuse: too many keys, or a key twice.
pub fn validate_keys(keys: &[Key]) -> Result<(), StoreError> {
    if keys.len() > MAX_BATCH_GET {
        return Err(StoreError::Invalid(format!("a batched read may name at most {MAX_BATCH_GET} keys")));
    }
    let mut seen = std::collections::HashSet::new();
    if !keys.iter().all(|k| seen.insert(k)) {
        return Err(StoreError::Invalid("a batched read may name each key only once".into()));
    }
    Ok(())
}

/// The primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key { pk: pk.into(), sk: sk.into() }
    }
}

/// The table's three global secondary indexes. All are sparse: an item is in an index
/// only while it carries that index's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Index {
    /// Listings: a customer's invoices, all customers, all subscriptions.
    Gsi1,
    /// Schedules: invoices due for an attempt, subscriptions due for renewal, events not
    /// yet published.
    Gsi2,
    /// Attention lists: a customer's outstanding invoices, subscriptions with failed
    /// payments.
    Gsi3,
}

impl Index {
    pub const ALL: [Index; 3] = [Index::Gsi1, Index::Gsi2, Index::Gsi3];

    pub fn name(self) -> &'static str {
        match self {
            Index::Gsi1 => "GSI1",
            Index::Gsi2 => "GSI2",
            Index::Gsi3 => "GSI3",
        }
    }

    fn slot(self) -> usize {
        match self {
            Index::Gsi1 => 0,
            Index::Gsi2 => 1,
            Index::Gsi3 => 2,
        }
    }
}

/// An item's key in one index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexKey {
    pub pk: String,
    pub sk: String,
}

impl IndexKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        IndexKey { pk: pk.into(), sk: sk.into() }
    }
}

/// The index keys an item carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKeys([Option<IndexKey>; 3]);

impl IndexKeys {
    pub fn with(mut self, index: Index, key: Option<IndexKey>) -> Self {
        self.0[index.slot()] = key;
        self
    }

    pub fn get(&self, index: Index) -> Option<&IndexKey> {
        self.0[index.slot()].as_ref()
    }
}

/// One stored item: keys, bookkeeping and the entity's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub key: Key,
    /// What the body is (`invoice`, `customer`, ...).
    pub entity: String,
    /// Bumped on every write; the optimistic-concurrency guard.
    pub version: u64,
    pub indexes: IndexKeys,
    /// When the item may be deleted (seconds since the epoch; DynamoDB TTL). Deletion is
    /// lazy (and the embedded store never deletes), so a reader that must not see stale
    /// items checks their age itself, as idempotency records do.
    pub expires_at: Option<i64>,
    /// The entity: a JSON object, or the entity itself as the repository wrote it.
    pub body: Body,
}

/// What an item holds. A store that keeps bytes asks for the JSON ([`Body::json`]); the
/// in-memory store keeps the entity as written and hands it back, so neither side pays
/// for JSON (a simulated month of a million invoices is mostly that cost otherwise). Both
/// forms of one entity are the same item: equality and serialization go through JSON.
#[derive(Clone)]
pub enum Body {
    Json(serde_json::Value),
    Entity(std::sync::Arc<dyn EntityBody>),
}

/// An entity held as itself in a [`Body`].
pub trait EntityBody: std::any::Any + Send + Sync + std::fmt::Debug {
    fn to_json(&self) -> Result<serde_json::Value, StoreError>;
    /// The length of its JSON text, counted without building it.
    fn json_len(&self) -> usize;
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: Serialize + std::fmt::Debug + Send + Sync + 'static> EntityBody for T {
    fn to_json(&self) -> Result<serde_json::Value, StoreError> {
        serde_json::to_value(self).map_err(|e| StoreError::Invalid(format!("a body that does not serialize: {e}")))
    }

    fn json_len(&self) -> usize {
        json_len(self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Body {
    /// The body as JSON (made from the entity when held as one).
    pub fn json(&self) -> Result<std::borrow::Cow<'_, serde_json::Value>, StoreError> {
        match self {
            Body::Json(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Body::Entity(e) => e.to_json().map(std::borrow::Cow::Owned),
        }
    }

    pub fn into_json(self) -> Result<serde_json::Value, StoreError> {
        match self {
            Body::Json(v) => Ok(v),
            Body::Entity(e) => e.to_json(),
        }
    }
}

impl From<serde_json::Value> for Body {
    fn from(v: serde_json::Value) -> Self {
        Body::Json(v)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(v) => v.fmt(f),
            Body::Entity(e) => e.fmt(f),
        }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        match (self.json(), other.json()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json().map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Body::Json)
    }
}

impl Item {
    /// Approximate size in bytes of the item's keys and index keys: what an index entry
    /// holds when it projects keys only.
    pub fn approximate_key_size(&self) -> usize {
        let mut size = 2 + self.key.pk.len() + 2 + self.key.sk.len();
        for index in Index::ALL {
            if let Some(k) = self.indexes.get(index) {
                size += 6 + k.pk.len() + 6 + k.sk.len();
            }
        }
        size
    }

    /// Approximate size in bytes of everything but the body: keys, index keys, entity,
    /// version and expiry.
    pub fn approximate_envelope_size(&self) -> usize {
        let mut size = self.approximate_key_size() + 6 + self.entity.len() + 7 + 8;
        if self.expires_at.is_some() {
            size += 3 + 8;
        }
        size
    }

    /// Approximate stored size in bytes, by DynamoDB's rules (attribute names plus values),
    /// with the body as a map named `data`.
    pub fn approximate_size(&self) -> usize {
        self.approximate_envelope_size()
            + 4
            + match &self.body {
                Body::Json(v) => json_len(v),
                Body::Entity(e) => e.json_len(),
            }
    }
}

/// The length of a value's JSON text, counted without building it.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No condition.
    Always,
    /// The item must not exist (a create, or a uniqueness claim).
    NotExists,
    Exists,
    /// The item must exist with exactly this version.
    Version(u64),
}

impl Condition {
    /// Whether the condition holds for an item stored at `version` (`None`: absent).
    pub fn holds(self, version: Option<u64>) -> bool {
        match self {
            Condition::Always => true,
            Condition::NotExists => version.is_none(),
            Condition::Exists => version.is_some(),
            Condition::Version(v) => version == Some(v),
        }
    }
}

// A batch is short-lived and puts dominate it; boxing the item would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        key: Key,
        condition: Condition,
    },
    /// Writes nothing; fails the transaction when the condition does not hold.
    Check {
        key: Key,
        condition: Condition,
    },
}

impl WriteOp {
    pub fn key(&self) -> &Key {
        match self {
            WriteOp::Put { item, .. } => &item.key,
            WriteOp::Delete { key, .. } | WriteOp::Check { key, .. } => key,
        }
    }
}

/// Which sort keys a query selects within one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKeyRange {
    All,
    BeginsWith(String),
    /// Sort keys `<=` the bound.
    AtMost(String),
    /// Sort keys `>=` the bound.
    AtLeast(String),
    /// Inclusive on both ends.
    Between(String, String),
}

impl SortKeyRange {
    pub fn contains(&self, sk: &str) -> bool {
        match self {
            SortKeyRange::All => true,
            SortKeyRange::BeginsWith(p) => sk.starts_with(p.as_str()),
            SortKeyRange::AtMost(b) => sk <= b.as_str(),
            SortKeyRange::AtLeast(b) => sk >= b.as_str(),
            SortKeyRange::Between(a, b) => sk >= a.as_str() && sk <= b.as_str(),
        }
    }

    /// The least sort key the range can hold, when it has one.
    pub fn lowest(&self) -> Option<&str> {
        match self {
            SortKeyRange::BeginsWith(a) | SortKeyRange::AtLeast(a) | SortKeyRange::Between(a, _) => Some(a),
            SortKeyRange::All | SortKeyRange::AtMost(_) => None,
        }
    }

    /// The greatest sort key the range can hold, when it has one.
    pub fn highest(&self) -> Option<&str> {
        match self {
            SortKeyRange::AtMost(b) | SortKeyRange::Between(_, b) => Some(b),
            SortKeyRange::All | SortKeyRange::BeginsWith(_) | SortKeyRange::AtLeast(_) => None,
        }
    }
}

/// The bounds of an ordered read, `(lower, upper)`.
pub type ReadBounds<T> = (std::ops::Bound<T>, std::ops::Bound<T>);

/// Tightens a read's bounds to what follows a page cursor `at` in the reading direction
/// (the cursor's own key excluded), unless the bounds already start past it.
pub fn bounds_past<T: Ord>((lower, upper): ReadBounds<T>, at: T, descending: bool) -> ReadBounds<T> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    if descending {
        let tighter = match &upper {
            Included(u) | Excluded(u) => at <= *u,
            Unbounded => true,
        };
        (lower, if tighter { Excluded(at) } else { upper })
    } else {
        let tighter = match &lower {
            Included(l) | Excluded(l) => at >= *l,
            Unbounded => true,
        };
        (if tighter { Excluded(at) } else { lower }, upper)
    }
}

/// Whether bounds hold nothing (ordered maps refuse such a range rather than read it).
pub fn bounds_empty<T: Ord>((lower, upper): &ReadBounds<T>) -> bool {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    match (lower, upper) {
        (Included(l), Included(u)) => l > u,
        (Included(l), Excluded(u)) | (Excluded(l), Included(u)) | (Excluded(l), Excluded(u)) => l >= u,
        (Unbounded, _) | (_, Unbounded) => false,
    }
}

/// Where a page of query results stopped: the last item's table key and, for an index
/// query, its index key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub key: Key,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<IndexKey>,
}

impl Cursor {
    /// The opaque form handed to API callers.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `None` queries the table itself.
    pub index: Option<Index>,
    pub pk: String,
    pub range: SortKeyRange,
    pub limit: Option<usize>,
    pub descending: bool,
    pub after: Option<Cursor>,
}

impl Query {
    pub fn table(pk: impl Into<String>, range: SortKeyRange) -> Self {
        Query { index: None, pk: pk.into(), range, limit: None, descending: false, after: None }
    }

    pub fn index(index: Index, pk: impl Into<String>, range: SortKeyRange) -> Self {
        Query { index: Some(index), pk: pk.into(), range, limit: None, descending: false, after: None }
    }

    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// For a table query: whether an item with this sort key belongs on the page (in the
    /// range, past the page cursor in the query's direction).
    pub fn selects(&self, sk: &str) -> bool {
        if !self.range.contains(sk) {
            return false;
        }
        match &self.after {
            None => true,
            Some(c) if self.descending => sk < c.key.sk.as_str(),
            Some(c) => sk > c.key.sk.as_str(),
        }
    }

    /// Whether no entry after one with this sort key (the index sort key for an index
    /// query), in the reading direction, can be in the range: a store reading in order
    /// stops there.
    pub fn beyond(&self, sk: &str) -> bool {
        if self.descending {
            self.range.lowest().is_some_and(|a| sk < a)
        } else {
            match &self.range {
                SortKeyRange::BeginsWith(p) => sk > p.as_str() && !sk.starts_with(p.as_str()),
                range => range.highest().is_some_and(|b| sk > b),
            }
        }
    }

    /// For an index query: whether an entry (index sort key, then the item's key) belongs
    /// on the page.
    pub fn selects_index_entry(&self, index_sk: &str, pk: &str, sk: &str) -> bool {
        if !self.range.contains(index_sk) {
            return false;
        }
        let Some(c) = &self.after else { return true };
        let here = (index_sk, pk, sk);
        let there = (c.index_key.as_ref().map_or("", |k| k.sk.as_str()), c.key.pk.as_str(), c.key.sk.as_str());
        if self.descending { here < there } else { here > there }
    }

    /// The page of `items`; with a cursor after the last one when `more` may follow.
    pub fn page(&self, items: Vec<Item>, more: bool) -> Page {
        let next = if more {
            items.last().map(|last| Cursor {
                key: last.key.clone(),
                index_key: self.index.and_then(|i| last.indexes.get(i).cloned()),
            })
        } else {
            None
        };
        Page { items, next }
    }

    /// A cursor must point into the partition being queried.
    pub fn validate_cursor(&self) -> Result<(), StoreError> {
        let Some(c) = &self.after else { return Ok(()) };
        let ok = match self.index {
            None => c.key.pk == self.pk,
            Some(_) => c.index_key.as_ref().is_some_and(|k| k.pk == self.pk),
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::InvalidCursor("the page cursor does not belong to this listing".into()))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// Present when more items may follow.
    pub next: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The condition of write operation `op` (its index in the batch) did not hold.
    #[error("condition failed on write operation {op}")]
    ConditionFailed { op: usize },
    /// Concurrent transactions collided or the store throttled: try again.
    #[error("store contention: {0}")]
    Contention(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A page cursor that does not belong to the listing it was sent to.
    #[error("invalid page cursor: {0}")]
    InvalidCursor(String),
    /// The request can never succeed (too many items, the same item twice, ...).
    #[error("invalid store request: {0}")]
    Invalid(String),
    #[error("stored item could not be read: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Contention(_) | StoreError::Unavailable(_) => true,
            StoreError::ConditionFailed { .. }
            | StoreError::InvalidCursor(_)
            | StoreError::Invalid(_)
            | StoreError::Corrupt(_) => false,
        }
    }
}

/// Checks what both backends refuse before touching anything.
pub fn validate_batch(ops: &[WriteOp]) -> Result<(), StoreError> {
    validate_batch_sizing(ops, Sizing::Every)
}

/// Which items' sizes a write checks against DynamoDB's 400 KB limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    Every,
    /// Only bodies given as JSON: the in-memory store, which never turns entities into
    /// JSON, does not do it just to measure them (see `store::memory`).
    JsonBodies,
}

pub fn validate_batch_sizing(ops: &[WriteOp], sizing: Sizing) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Err(StoreError::Invalid("a write needs at least one operation".into()));
    }
    if ops.len() > MAX_TRANSACTION_ITEMS {
        return Err(StoreError::Invalid(format!(
            "a transaction may touch at most {MAX_TRANSACTION_ITEMS} items, got {}",
            ops.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::Invalid("a transaction may touch each item only once".into()));
        }
        if let WriteOp::Put { item, .. } = op
            && (sizing == Sizing::Every || matches!(item.body, Body::Json(_)))
            && item.approximate_size() > 400 * 1024
        {
            return Err(StoreError::Invalid("an item may be at most 400 KB".into()));
        }
    }
    Ok(())
}

#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// Reads one item, strongly consistent.
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError>;

    /// Reads several items in one round trip, strongly consistent; the answer is in the
    /// order of `keys`. At most [`MAX_BATCH_GET`] distinct keys.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// [`ItemStore::get_many`], eventually consistent: a read may miss the latest writes
    /// (by about a second at most on DynamoDB) and costs half. For a first look that every
    /// write after it checks by version, so a stale answer costs a retry, not a wrong
    /// write. Stores that are always consistent answer as `get_many`.
    async fn get_many_eventually(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        self.get_many(keys).await
    }

    /// Reads items of one partition in sort-key order. Table queries are strongly
    /// consistent; index queries may lag writes slightly.
    async fn query(&self, query: &Query) -> Result<Page, StoreError>;

    /// Applies every operation or none. On a failed condition nothing is written.
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;

    /// `dynamodb` or `embedded`, for logs and figures.
    fn backend(&self) -> &'static str;
}
