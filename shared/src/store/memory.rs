//! The in-memory store: the same contract as the embedded and DynamoDB stores, held in
//! ordered maps behind one lock and gone when the process ends. For simulations and
//! benchmarks (a million-invoice dunning month), never for data anyone needs back.
//!
//! Bodies are kept as JSON text, not as `serde_json::Value` trees: a tree costs about ten
//! times its text in allocations, which is the difference between a million invoices
//! fitting in memory or not.
//!
//! A write takes the lock, evaluates every condition, then applies every operation, so a
//! transaction is all or nothing and transactions are serialisable, as on the other
//! backends. Index entries are kept in the same critical section as the items.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{Index, Item, ItemStore, Key, Page, Query, StoreError, WriteOp, validate_batch};

type TableKey = (String, String);
/// `(index PK, index SK, PK, SK)`.
type IndexEntry = (String, String, String, String);

/// An item as kept: everything but the body as is, the body as JSON text.
struct Stored {
    key: Key,
    entity: String,
    version: u64,
    indexes: super::IndexKeys,
    expires_at: Option<i64>,
    body: Box<[u8]>,
}

impl Stored {
    fn keep(item: &Item) -> Result<Stored, StoreError> {
        let body = serde_json::to_vec(&item.body).map_err(|e| StoreError::Invalid(e.to_string()))?.into_boxed_slice();
        Ok(Stored {
            key: item.key.clone(),
            entity: item.entity.clone(),
            version: item.version,
            indexes: item.indexes.clone(),
            expires_at: item.expires_at,
            body,
        })
    }

    fn item(&self) -> Result<Item, StoreError> {
        Ok(Item {
            key: self.key.clone(),
            entity: self.entity.clone(),
            version: self.version,
            indexes: self.indexes.clone(),
            expires_at: self.expires_at,
            body: serde_json::from_slice(&self.body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        })
    }
}

#[derive(Default)]
struct State {
    items: BTreeMap<TableKey, Stored>,
    indexes: [BTreeSet<IndexEntry>; 3],
}

#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// How many items are stored.
    pub fn len(&self) -> usize {
        self.read().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is stored, by entity: how many items and their approximate size in bytes.
    pub fn footprint(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for stored in self.read().items.values() {
            let e = out.entry(stored.entity.clone()).or_default();
            e.0 += 1;
            e.1 += stored.body.len() + stored.key.pk.len() + stored.key.sk.len();
        }
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write: writes are
        // applied only after every check passed, with nothing in between that can panic.
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn slot(index: Index) -> usize {
    match index {
        Index::Gsi1 => 0,
        Index::Gsi2 => 1,
        Index::Gsi3 => 2,
    }
}

fn table_key(key: &Key) -> TableKey {
    (key.pk.clone(), key.sk.clone())
}

/// Bounds selecting one partition of an ordered map keyed by tuples starting with `pk`.
fn partition(pk: &str) -> (String, String) {
    (pk.to_owned(), format!("{pk}\u{0}"))
}

fn query_state(state: &State, q: &Query) -> Result<Page, StoreError> {
    q.validate_cursor()?;
    let limit = q.limit.unwrap_or(usize::MAX);
    let (lo, hi) = partition(&q.pk);
    let mut out: Vec<Item> = Vec::new();
    let mut more = false;
    match q.index {
        None => {
            let range = state
                .items
                .range::<TableKey, _>((Bound::Included((lo, String::new())), Bound::Excluded((hi, String::new()))));
            let iter: Box<dyn Iterator<Item = (&TableKey, &Stored)>> =
                if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for ((_, sk), item) in iter {
                if !q.selects(sk) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(item.item()?);
            }
        }
        Some(index) => {
            let empty = String::new;
            let range = state.indexes[slot(index)].range::<IndexEntry, _>((
                Bound::Included((lo, empty(), empty(), empty())),
                Bound::Excluded((hi, empty(), empty(), empty())),
            ));
            let iter: Box<dyn Iterator<Item = &IndexEntry>> =
                if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for (_, isk, pk, sk) in iter {
                if !q.selects_index_entry(isk, pk, sk) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                match state.items.get(&(pk.clone(), sk.clone())) {
                    Some(stored) => out.push(stored.item()?),
                    None => return Err(StoreError::Corrupt(format!("index entry for missing item {pk}/{sk}"))),
                }
            }
        }
    }
    Ok(q.page(out, more))
}

fn unindex(state: &mut State, item: &Stored) {
    for index in Index::ALL {
        if let Some(ik) = item.indexes.get(index) {
            state.indexes[slot(index)].remove(&(
                ik.pk.clone(),
                ik.sk.clone(),
                item.key.pk.clone(),
                item.key.sk.clone(),
            ));
        }
    }
}

fn index(state: &mut State, item: &Stored) {
    for index in Index::ALL {
        if let Some(ik) = item.indexes.get(index) {
            state.indexes[slot(index)].insert((ik.pk.clone(), ik.sk.clone(), item.key.pk.clone(), item.key.sk.clone()));
        }
    }
}

#[async_trait]
impl ItemStore for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.read().items.get(&table_key(key)).map(Stored::item).transpose()
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_keys(keys)?;
        let state = self.read();
        keys.iter().map(|k| state.items.get(&table_key(k)).map(Stored::item).transpose()).collect()
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        query_state(&self.read(), query)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        validate_batch(&ops)?;
        // Bodies are encoded before the lock is taken (and before anything is written).
        let mut kept = Vec::with_capacity(ops.len());
        for op in &ops {
            kept.push(match op {
                WriteOp::Put { item, .. } => Some(Stored::keep(item)?),
                WriteOp::Delete { .. } | WriteOp::Check { .. } => None,
            });
        }
        let mut state = self.write_lock();
        for (i, op) in ops.iter().enumerate() {
            let condition = match op {
                WriteOp::Put { condition, .. }
                | WriteOp::Delete { condition, .. }
                | WriteOp::Check { condition, .. } => *condition,
            };
            if !condition.holds(state.items.get(&table_key(op.key())).map(|i| i.version)) {
                return Err(StoreError::ConditionFailed { op: i });
            }
        }
        for (op, kept) in ops.into_iter().zip(kept) {
            match (op, kept) {
                (WriteOp::Check { .. }, _) => {}
                (WriteOp::Put { item, .. }, Some(stored)) => {
                    if let Some(old) = state.items.remove(&table_key(&item.key)) {
                        unindex(&mut state, &old);
                    }
                    index(&mut state, &stored);
                    state.items.insert(table_key(&item.key), stored);
                }
                (WriteOp::Put { .. }, None) => {}
                (WriteOp::Delete { key, .. }, _) => {
                    if let Some(old) = state.items.remove(&table_key(&key)) {
                        unindex(&mut state, &old);
                    }
                }
            }
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
