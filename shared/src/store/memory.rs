//! The in-memory store: the same contract as the embedded and DynamoDB stores, held in
//! ordered maps behind one lock and gone when the process ends. For simulations and
//! benchmarks (a million-invoice dunning month), never for data anyone needs back.
//!
//! Bodies are kept as the repository wrote them: an entity written through the repository
//! is kept as that entity and read back as a clone of it, with no JSON on either side (JSON
//! was most of a simulated month's time, and a `serde_json::Value` tree costs about ten
//! times its text in memory). A body written as JSON is kept as its text.
//!
//! Two differences from the other stores: an entity written through the repository is not
//! measured against DynamoDB's 400 KB item limit (measuring means writing its JSON; bodies
//! given as JSON are), and a key holding a NUL is refused (key parts are joined by one).
//!
//! A write takes the lock, evaluates every condition, then applies every operation, so a
//! transaction is all or nothing and transactions are serialisable, as on the other
//! backends. Index entries are kept in the same critical section as the items.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{
    Body, Index, Item, ItemStore, Key, Page, Query, ReadBounds, Sizing, StoreError, WriteOp, bounds_empty, bounds_past,
    validate_batch_sizing,
};

/// Key parts joined by NUL in one string, so that keys order as the tuple would (no key
/// holds a NUL) at one allocation each: `PK` and `SK` for a table key; `index PK`,
/// `index SK`, `PK` and `SK` for an index entry.
fn joined<const N: usize>(parts: [&str; N]) -> String {
    let mut k = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            k.push('\0');
        }
        k.push_str(part);
    }
    k
}

/// Whether a key of the item holds the NUL that [`joined`] puts between key parts (the
/// other stores take it; no key Recoup makes has one).
fn holds_nul(item: &Item) -> bool {
    let key = [item.key.pk.as_str(), item.key.sk.as_str()];
    let indexes =
        Index::ALL.into_iter().filter_map(|i| item.indexes.get(i)).flat_map(|k| [k.pk.as_str(), k.sk.as_str()]);
    key.into_iter().chain(indexes).any(|part| part.contains('\0'))
}

/// The keys of one partition (table or index: every key in it starts with the partition
/// key and a NUL) that a query can select: within its sort key range and past its page
/// cursor, so a read visits only what it may return. `cursor` is the cursor's key in the
/// same joined form. `None` when nothing can be selected.
fn scan_bounds(q: &Query, cursor: Option<String>) -> Option<ReadBounds<String>> {
    let pk = &q.pk;
    let lower = Bound::Included(match q.range.lowest() {
        Some(a) => joined([pk, a]),
        None => format!("{pk}\0"),
    });
    // Every key whose sort key is the highest (an index entry's goes on with the item's
    // key) sorts before the highest followed by U+0001, which no greater one does.
    let upper = Bound::Excluded(match q.range.highest() {
        Some(b) => format!("{pk}\0{b}\u{1}"),
        None => format!("{pk}\u{1}"),
    });
    let bounds = match cursor {
        Some(at) => bounds_past((lower, upper), at, q.descending),
        None => (lower, upper),
    };
    (!bounds_empty(&bounds)).then_some(bounds)
}

/// `(index SK, PK, SK)` of an entry.
fn entry_parts(e: &str) -> Option<(&str, &str, &str)> {
    let mut parts = e.splitn(4, '\0').skip(1);
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// What one operation of a write does once its condition holds. (Transient, a few per
/// write: boxing the put's item would cost an allocation for nothing.)
#[allow(clippy::large_enum_variant)]
enum Change {
    None,
    Delete,
    Put(Stored),
}

/// A body as kept.
enum Kept {
    Entity(std::sync::Arc<dyn super::EntityBody>),
    Json(Box<[u8]>),
}

/// An item as kept (its key is where it is kept).
struct Stored {
    entity: String,
    version: u64,
    indexes: super::IndexKeys,
    expires_at: Option<i64>,
    body: Kept,
}

impl Stored {
    fn keep(item: Item) -> Result<Stored, StoreError> {
        let body = match item.body {
            Body::Entity(e) => Kept::Entity(e),
            Body::Json(v) => {
                Kept::Json(serde_json::to_vec(&v).map_err(|e| StoreError::Invalid(e.to_string()))?.into_boxed_slice())
            }
        };
        Ok(Stored {
            entity: item.entity,
            version: item.version,
            indexes: item.indexes,
            expires_at: item.expires_at,
            body,
        })
    }

    fn item(&self, pk: &str, sk: &str) -> Result<Item, StoreError> {
        Ok(Item {
            key: Key::new(pk, sk),
            entity: self.entity.clone(),
            version: self.version,
            indexes: self.indexes.clone(),
            expires_at: self.expires_at,
            body: match &self.body {
                Kept::Entity(e) => Body::Entity(e.clone()),
                Kept::Json(text) => {
                    Body::Json(serde_json::from_slice(text).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                }
            },
        })
    }

    /// Approximate bytes held for the body (its JSON text's length for an entity).
    fn body_len(&self) -> usize {
        match &self.body {
            Kept::Json(text) => text.len(),
            Kept::Entity(e) => e.json_len(),
        }
    }
}

#[derive(Default)]
struct State {
    items: BTreeMap<String, Stored>,
    indexes: [BTreeSet<String>; 3],
}

impl State {
    fn get(&self, key: &Key) -> Option<&Stored> {
        self.items.get(&joined([&key.pk, &key.sk]))
    }

    fn remove(&mut self, key: &Key) -> Option<Stored> {
        let old = self.items.remove(&joined([&key.pk, &key.sk]));
        if let Some(old) = &old {
            for index in Index::ALL {
                if let Some(ik) = old.indexes.get(index) {
                    self.indexes[slot(index)].remove(&joined([&ik.pk, &ik.sk, &key.pk, &key.sk]));
                }
            }
        }
        old
    }

    fn insert(&mut self, key: Key, stored: Stored) {
        for index in Index::ALL {
            if let Some(ik) = stored.indexes.get(index) {
                self.indexes[slot(index)].insert(joined([&ik.pk, &ik.sk, &key.pk, &key.sk]));
            }
        }
        self.items.insert(joined([&key.pk, &key.sk]), stored);
    }
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
        for (key, stored) in &self.read().items {
            let e = out.entry(stored.entity.clone()).or_default();
            e.0 += 1;
            e.1 += stored.body_len() + key.len() - 1;
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

fn query_state(state: &State, q: &Query) -> Result<Page, StoreError> {
    q.validate_cursor()?;
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut out: Vec<Item> = Vec::new();
    let mut more = false;
    match q.index {
        None => {
            let cursor = q.after.as_ref().map(|c| joined([&q.pk, &c.key.sk]));
            let Some(bounds) = scan_bounds(q, cursor) else { return Ok(q.page(out, more)) };
            let range = state.items.range::<String, _>(bounds);
            let iter: Box<dyn Iterator<Item = (&String, &Stored)>> =
                if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for (key, item) in iter {
                let sk = &key[q.pk.len() + 1..];
                if q.beyond(sk) {
                    break;
                }
                if !q.selects(sk) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(item.item(&q.pk, sk)?);
            }
        }
        Some(index) => {
            let cursor = q.after.as_ref().map(|c| {
                let isk = c.index_key.as_ref().map_or("", |k| k.sk.as_str());
                joined([&q.pk, isk, &c.key.pk, &c.key.sk])
            });
            let Some(bounds) = scan_bounds(q, cursor) else { return Ok(q.page(out, more)) };
            let range = state.indexes[slot(index)].range::<String, _>(bounds);
            let iter: Box<dyn Iterator<Item = &String>> =
                if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for e in iter {
                let (isk, pk, sk) =
                    entry_parts(e).ok_or_else(|| StoreError::Corrupt(format!("a malformed index entry {e:?}")))?;
                if q.beyond(isk) {
                    break;
                }
                if !q.selects_index_entry(isk, pk, sk) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                match state.items.get(&joined([pk, sk])) {
                    Some(stored) => out.push(stored.item(pk, sk)?),
                    None => return Err(StoreError::Corrupt(format!("index entry for missing item {pk}/{sk}"))),
                }
            }
        }
    }
    Ok(q.page(out, more))
}

#[async_trait]
impl ItemStore for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.read().get(key).map(|s| s.item(&key.pk, &key.sk)).transpose()
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_keys(keys)?;
        let state = self.read();
        keys.iter().map(|k| state.get(k).map(|s| s.item(&k.pk, &k.sk)).transpose()).collect()
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        query_state(&self.read(), query)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        validate_batch_sizing(&ops, Sizing::JsonBodies)?;
        // Bodies are made ready to keep before the lock is taken (and before anything is
        // written), so one that cannot be kept refuses the whole write.
        let mut prepared = Vec::with_capacity(ops.len());
        for op in ops {
            prepared.push(match op {
                WriteOp::Put { item, condition } => {
                    if holds_nul(&item) {
                        return Err(StoreError::Invalid("the in-memory store keeps no key holding a NUL".into()));
                    }
                    let key = item.key.clone();
                    (key, condition, Change::Put(Stored::keep(item)?))
                }
                WriteOp::Delete { key, condition } => (key, condition, Change::Delete),
                WriteOp::Check { key, condition } => (key, condition, Change::None),
            });
        }
        let mut state = self.write_lock();
        for (i, (key, condition, _)) in prepared.iter().enumerate() {
            if !condition.holds(state.get(key).map(|i| i.version)) {
                return Err(StoreError::ConditionFailed { op: i });
            }
        }
        for (key, _, change) in prepared {
            match change {
                Change::None => {}
                Change::Delete => {
                    state.remove(&key);
                }
                Change::Put(stored) => {
                    state.remove(&key);
                    state.insert(key, stored);
                }
            }
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Condition, IndexKey, IndexKeys};

    fn put(pk: &str, sk: &str, gsi2: Option<(&str, &str)>) -> WriteOp {
        let indexes =
            IndexKeys::default().with(Index::Gsi2, gsi2.map(|(pk, sk)| IndexKey { pk: pk.into(), sk: sk.into() }));
        WriteOp::Put {
            item: Item {
                key: Key::new(pk, sk),
                entity: "thing".into(),
                version: 1,
                indexes,
                expires_at: None,
                body: serde_json::json!({}).into(),
            },
            condition: Condition::NotExists,
        }
    }

    #[tokio::test]
    async fn a_key_holding_a_nul_is_refused_and_nothing_is_written() {
        let store = MemoryStore::new();
        for bad in [put("a\0b", "c", None), put("a", "b\0", None), put("a", "b", Some(("due", "x\0y")))] {
            let err = store.write(vec![put("ok", "1", None), bad]).await.unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        }
        assert!(store.get(&Key::new("ok", "1")).await.unwrap().is_none(), "the whole write was refused");
        store.write(vec![put("ok", "1", Some(("due", "2026")))]).await.unwrap();
        assert!(store.get(&Key::new("ok", "1")).await.unwrap().is_some());
    }
}
