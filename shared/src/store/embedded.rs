//! The embedded, file-backed store for the local product: redb, an ACID key-value
//! database in one file. Items live in one table keyed by `(PK, SK)`; each secondary index
//! is a table keyed by `(index PK, index SK, PK, SK)`, maintained in the same write
//! transaction as the item, so an index never disagrees with the table.
//!
//! redb serialises write transactions, so evaluating every condition and applying every
//! operation inside one gives the same all-or-nothing guarantee as DynamoDB's
//! `TransactWriteItems`.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Condition, Cursor, Index, IndexKey, Item, ItemStore, Key, Page, Query, StoreError, WriteOp, validate_batch,
};

/// `(PK, SK)` → the item.
const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
/// `(index PK, index SK, PK, SK)` → nothing: an index is its keys.
type IndexTable = TableDefinition<'static, (&'static str, &'static str, &'static str, &'static str), u8>;
const GSI: [IndexTable; 3] = [TableDefinition::new("gsi1"), TableDefinition::new("gsi2"), TableDefinition::new("gsi3")];

fn gsi_table(index: Index) -> IndexTable {
    match index {
        Index::Gsi1 => GSI[0],
        Index::Gsi2 => GSI[1],
        Index::Gsi3 => GSI[2],
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn decode(bytes: &[u8]) -> Result<Item, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("embedded item: {e}")))
}

/// The smallest string greater than every string equal to `s` in a tuple's first place.
fn after_partition(s: &str) -> String {
    format!("{s}\u{0}")
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database file. Data written before a restart is there after.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        if let Some(dir) = path.as_ref().parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Database::create(path.as_ref()).map_err(unavailable)?;
        // Create the tables up front so read transactions never find them missing.
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(ITEMS).map_err(unavailable)?;
            for def in GSI {
                txn.open_table(def).map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }
}

fn get_sync(db: &Database, key: &Key) -> Result<Option<Item>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(ITEMS).map_err(unavailable)?;
    let value = table.get((key.pk.as_str(), key.sk.as_str())).map_err(unavailable)?;
    value.map(|v| decode(v.value())).transpose()
}

fn query_sync(db: &Database, q: &Query) -> Result<Page, StoreError> {
    q.validate_cursor()?;
    let txn = db.begin_read().map_err(unavailable)?;
    let items = txn.open_table(ITEMS).map_err(unavailable)?;
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut out: Vec<Item> = Vec::new();
    let mut more = false;
    let pk = q.pk.as_str();
    let end = after_partition(pk);

    match q.index {
        None => {
            let lower: Bound<(&str, &str)> = Bound::Included((pk, ""));
            let upper: Bound<(&str, &str)> = Bound::Excluded((end.as_str(), ""));
            let range = items.range::<(&str, &str)>((lower, upper)).map_err(unavailable)?;
            let iter: Box<dyn Iterator<Item = _>> = if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for entry in iter {
                let (k, v) = entry.map_err(unavailable)?;
                let (_, sk) = k.value();
                if !q.range.contains(sk) {
                    continue;
                }
                if let Some(c) = &q.after {
                    let past = if q.descending { sk < c.key.sk.as_str() } else { sk > c.key.sk.as_str() };
                    if !past {
                        continue;
                    }
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(decode(v.value())?);
            }
        }
        Some(index) => {
            let gsi = txn.open_table(gsi_table(index)).map_err(unavailable)?;
            let lower: Bound<(&str, &str, &str, &str)> = Bound::Included((pk, "", "", ""));
            let upper: Bound<(&str, &str, &str, &str)> = Bound::Excluded((end.as_str(), "", "", ""));
            let range = gsi.range::<(&str, &str, &str, &str)>((lower, upper)).map_err(unavailable)?;
            let iter: Box<dyn Iterator<Item = _>> = if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            let cursor = q.after.as_ref().map(|c| {
                let ik = c.index_key.clone().unwrap_or_else(|| IndexKey::new("", ""));
                (ik.sk, c.key.pk.clone(), c.key.sk.clone())
            });
            for entry in iter {
                let (k, _) = entry.map_err(unavailable)?;
                let (_, isk, tpk, tsk) = k.value();
                if !q.range.contains(isk) {
                    continue;
                }
                if let Some((csk, cpk, ctsk)) = &cursor {
                    let here = (isk, tpk, tsk);
                    let there = (csk.as_str(), cpk.as_str(), ctsk.as_str());
                    let past = if q.descending { here < there } else { here > there };
                    if !past {
                        continue;
                    }
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                let value = items.get((tpk, tsk)).map_err(unavailable)?;
                match value {
                    Some(v) => out.push(decode(v.value())?),
                    None => return Err(StoreError::Corrupt(format!("index entry for missing item {tpk}/{tsk}"))),
                }
            }
        }
    }
    let next = if more {
        out.last()
            .map(|last| Cursor { key: last.key.clone(), index_key: q.index.and_then(|i| last.indexes.get(i).cloned()) })
    } else {
        None
    };
    Ok(Page { items: out, next })
}

fn holds(condition: Condition, current: Option<&Item>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::NotExists => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::Version(v) => current.is_some_and(|i| i.version == v),
    }
}

fn write_sync(db: &Database, ops: Vec<WriteOp>) -> Result<(), StoreError> {
    validate_batch(&ops)?;
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut items = txn.open_table(ITEMS).map_err(unavailable)?;
        // Conditions first, against the state before this transaction.
        let mut current: Vec<Option<Item>> = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let key = op.key();
            let existing = items
                .get((key.pk.as_str(), key.sk.as_str()))
                .map_err(unavailable)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let condition = match op {
                WriteOp::Put { condition, .. }
                | WriteOp::Delete { condition, .. }
                | WriteOp::Check { condition, .. } => *condition,
            };
            if !holds(condition, existing.as_ref()) {
                // Dropping the transaction without commit aborts it: nothing is written.
                return Err(StoreError::ConditionFailed { op: i });
            }
            current.push(existing);
        }
        let mut gsis = [
            txn.open_table(GSI[0]).map_err(unavailable)?,
            txn.open_table(GSI[1]).map_err(unavailable)?,
            txn.open_table(GSI[2]).map_err(unavailable)?,
        ];
        for (op, existing) in ops.into_iter().zip(current) {
            let (key, new_item) = match op {
                WriteOp::Check { .. } => continue,
                WriteOp::Put { item, .. } => (item.key.clone(), Some(item)),
                WriteOp::Delete { key, .. } => (key, None),
            };
            if let Some(old) = &existing {
                for (slot, index) in Index::ALL.iter().enumerate() {
                    if let Some(ik) = old.indexes.get(*index) {
                        gsis[slot]
                            .remove((ik.pk.as_str(), ik.sk.as_str(), key.pk.as_str(), key.sk.as_str()))
                            .map_err(unavailable)?;
                    }
                }
            }
            match new_item {
                Some(item) => {
                    let bytes = serde_json::to_vec(&item).map_err(|e| StoreError::Invalid(e.to_string()))?;
                    items.insert((key.pk.as_str(), key.sk.as_str()), bytes.as_slice()).map_err(unavailable)?;
                    for (slot, index) in Index::ALL.iter().enumerate() {
                        if let Some(ik) = item.indexes.get(*index) {
                            gsis[slot]
                                .insert((ik.pk.as_str(), ik.sk.as_str(), key.pk.as_str(), key.sk.as_str()), 0u8)
                                .map_err(unavailable)?;
                        }
                    }
                }
                None => {
                    items.remove((key.pk.as_str(), key.sk.as_str())).map_err(unavailable)?;
                }
            }
        }
    }
    txn.commit().map_err(unavailable)
}

#[async_trait]
impl ItemStore for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| get_sync(db, &key)).await
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let query = query.clone();
        self.blocking(move |db| query_sync(db, &query)).await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.blocking(move |db| write_sync(db, ops)).await
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}
