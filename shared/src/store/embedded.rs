//! The embedded, file-backed store for the local product: redb, an ACID key-value
//! database in one file. Items live in one table keyed by `(PK, SK)`; each secondary index
//! is a table keyed by `(index PK, index SK, PK, SK)`, maintained in the same write
//! transaction as the item, so an index never disagrees with the table.
//!
//! redb serialises write transactions, so evaluating every condition and applying every
//! operation inside one gives the same all-or-nothing guarantee as DynamoDB's
//! `TransactWriteItems`.
//!
//! **Group commit.** One writer thread applies every logical transaction. It takes all the
//! transactions waiting for it, applies them one after another inside a single redb write
//! transaction, and makes them durable with one commit (one `fsync`) before answering any
//! of them. Each logical transaction is still all or nothing on its own: its conditions
//! are evaluated against the state its predecessors in the group left (reads inside a redb
//! write transaction see its earlier writes), and it writes nothing unless they all hold.
//! A caller is answered only after the commit that holds its writes is durable, so every
//! acknowledged write survives a crash; a crash before that commit loses only
//! unacknowledged writes. While one group is being made durable the next one gathers,
//! so under concurrency the cost of an `fsync` is shared.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Index, Item, ItemStore, Key, Page, Query, StoreError, WriteOp, bounds_empty, bounds_past, validate_batch};

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

/// The most logical transactions one durable commit carries.
const MAX_GROUP: usize = 512;

/// A logical transaction waiting for the writer, and where its answer goes. Its puts come
/// encoded: the caller's thread encodes them, so the one writer thread does not.
struct Pending {
    ops: Vec<WriteOp>,
    encoded: Encoded,
    reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Each put of a logical transaction as stored bytes (`None` for deletes and checks).
type Encoded = Vec<Option<Vec<u8>>>;

/// What the writer needs of a stored item: its version (for conditions) and its index
/// keys (to move its index entries). The body is skipped, never built.
#[derive(serde::Deserialize)]
struct Header {
    version: u64,
    indexes: super::IndexKeys,
}

fn decode_header(bytes: &[u8]) -> Result<Header, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("embedded item: {e}")))
}

fn encode(ops: &[WriteOp]) -> Result<Encoded, StoreError> {
    ops.iter()
        .map(|op| match op {
            WriteOp::Put { item, .. } => {
                serde_json::to_vec(item).map(Some).map_err(|e| StoreError::Invalid(e.to_string()))
            }
            WriteOp::Delete { .. } | WriteOp::Check { .. } => Ok(None),
        })
        .collect()
}

#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    /// Closes the queue and waits for the writer, so the database file is released (and
    /// may be opened again) once the last handle is gone.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file. Data written before a restart is there after.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        if let Some(dir) = path.as_ref().parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        Self::start(Database::create(path.as_ref()).map_err(unavailable)?, Durability::Immediate)
    }

    /// The same store over redb's in-memory backend: the same transactions, conditions,
    /// indexes and group commit, nothing written to disk (gone when dropped). For the
    /// property tests, which open thousands of stores. Commits skip the work that only
    /// makes a file durable.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db =
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(unavailable)?;
        Self::start(db, Durability::None)
    }

    fn start(db: Database, durability: Durability) -> Result<Self, StoreError> {
        // Create the tables up front so read transactions never find them missing.
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(ITEMS).map_err(unavailable)?;
            for def in GSI {
                txn.open_table(def).map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        let db = Arc::new(db);
        let (writer, queue) = mpsc::channel::<Pending>();
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("recoup-store-writer".into())
            .spawn(move || write_loop(&writer_db, durability, &queue))
            .map_err(unavailable)?;
        Ok(EmbeddedStore { shared: Arc::new(Shared { db, writer: Some(writer), thread: Some(thread) }) })
    }

    /// Every item, in key order. No use case scans (each reads by key or index); this is
    /// for inspecting a database from outside, as the local product's crash test does once
    /// the product is stopped.
    pub async fn all_items(&self) -> Result<Vec<Item>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
    }

    /// Runs a read on the calling task. A redb read transaction never waits for the
    /// writer (it reads the last committed snapshot) and its pages are usually in redb's
    /// cache, so a read takes microseconds: less than a hop to the blocking pool and back,
    /// which is what every read used to pay.
    fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&self.shared.db)
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
    // The read starts and stops at the query's sort key range (and its page cursor), so it
    // visits only what it may return: from the lowest sort key, to before the highest
    // followed by a NUL (an index entry's key goes on with the item's key).
    let low = q.range.lowest().unwrap_or("");
    let past_high = q.range.highest().map(|b| format!("{b}\0"));

    match q.index {
        None => {
            let lower: Bound<(&str, &str)> = Bound::Included((pk, low));
            let upper: Bound<(&str, &str)> = match &past_high {
                Some(h) => Bound::Excluded((pk, h.as_str())),
                None => Bound::Excluded((end.as_str(), "")),
            };
            let bounds = match &q.after {
                Some(c) => bounds_past((lower, upper), (pk, c.key.sk.as_str()), q.descending),
                None => (lower, upper),
            };
            if bounds_empty(&bounds) {
                return Ok(q.page(out, more));
            }
            let range = items.range::<(&str, &str)>(bounds).map_err(unavailable)?;
            let iter: Box<dyn Iterator<Item = _>> = if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for entry in iter {
                let (k, v) = entry.map_err(unavailable)?;
                let (_, sk) = k.value();
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
                out.push(decode(v.value())?);
            }
        }
        Some(index) => {
            let gsi = txn.open_table(gsi_table(index)).map_err(unavailable)?;
            let lower: Bound<(&str, &str, &str, &str)> = Bound::Included((pk, low, "", ""));
            let upper: Bound<(&str, &str, &str, &str)> = match &past_high {
                Some(h) => Bound::Excluded((pk, h.as_str(), "", "")),
                None => Bound::Excluded((end.as_str(), "", "", "")),
            };
            let bounds = match &q.after {
                Some(c) => {
                    let isk = c.index_key.as_ref().map_or("", |k| k.sk.as_str());
                    bounds_past((lower, upper), (pk, isk, c.key.pk.as_str(), c.key.sk.as_str()), q.descending)
                }
                None => (lower, upper),
            };
            if bounds_empty(&bounds) {
                return Ok(q.page(out, more));
            }
            let range = gsi.range::<(&str, &str, &str, &str)>(bounds).map_err(unavailable)?;
            let iter: Box<dyn Iterator<Item = _>> = if q.descending { Box::new(range.rev()) } else { Box::new(range) };
            for entry in iter {
                let (k, _) = entry.map_err(unavailable)?;
                let (_, isk, tpk, tsk) = k.value();
                if q.beyond(isk) {
                    break;
                }
                if !q.selects_index_entry(isk, tpk, tsk) {
                    continue;
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
    Ok(q.page(out, more))
}

/// The writer thread: gathers what is waiting, applies it as one group, commits once, then
/// answers. Ends when every handle to the store is gone.
fn write_loop(db: &Database, durability: Durability, queue: &mpsc::Receiver<Pending>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|p| ((p.ops, p.encoded), p.reply)).unzip();
        for (reply, result) in replies.into_iter().zip(commit_group(db, durability, ops)) {
            // A caller that stopped waiting (its task was dropped) needs no answer.
            let _ = reply.send(result);
        }
    }
}

/// Applies each logical transaction of the group in order and commits them together. A
/// logical transaction whose conditions fail is answered with that failure and writes
/// nothing; the others are unaffected. A storage failure fails the whole group (nothing of
/// it is committed) and every member is told the store is unavailable.
fn commit_group(
    db: &Database,
    durability: Durability,
    group: Vec<(Vec<WriteOp>, Encoded)>,
) -> Vec<Result<(), StoreError>> {
    let n = group.len();
    let fail_all = |e: StoreError| vec![Err(e); n];
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail_all(unavailable(e)),
    };
    if let Err(e) = txn.set_durability(durability) {
        return fail_all(unavailable(e));
    }
    let mut results = Vec::with_capacity(n);
    {
        let tables = (|| {
            Ok::<_, StoreError>((
                txn.open_table(ITEMS).map_err(unavailable)?,
                [
                    txn.open_table(GSI[0]).map_err(unavailable)?,
                    txn.open_table(GSI[1]).map_err(unavailable)?,
                    txn.open_table(GSI[2]).map_err(unavailable)?,
                ],
            ))
        })();
        let (mut items, mut gsis) = match tables {
            Ok(t) => t,
            Err(e) => return fail_all(e),
        };
        for (ops, encoded) in group {
            match apply(&mut items, &mut gsis, ops, encoded) {
                Ok(()) => results.push(Ok(())),
                Err(Applied::Refused(e)) => results.push(Err(e)),
                // Part of this transaction may be applied: abandon the whole group.
                Err(Applied::Broken(e)) => return fail_all(e),
            }
        }
    }
    match txn.commit() {
        Ok(()) => results,
        Err(e) => fail_all(unavailable(e)),
    }
}

/// Why a logical transaction was not applied.
enum Applied {
    /// Refused before writing anything (a condition, an invalid request).
    Refused(StoreError),
    /// Storage failed part-way: the group's redb transaction must not be committed.
    Broken(StoreError),
}

type ItemsTable<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;
type GsiTable<'t> = redb::Table<'t, (&'static str, &'static str, &'static str, &'static str), u8>;

fn apply(
    items: &mut ItemsTable<'_>,
    gsis: &mut [GsiTable<'_>; 3],
    ops: Vec<WriteOp>,
    encoded: Encoded,
) -> Result<(), Applied> {
    validate_batch(&ops).map_err(Applied::Refused)?;
    // Conditions first, against the state before this transaction (and after the
    // group's earlier ones).
    let mut current: Vec<Option<Header>> = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let key = op.key();
        let existing = items
            .get((key.pk.as_str(), key.sk.as_str()))
            .map_err(|e| Applied::Refused(unavailable(e)))?
            .map(|v| decode_header(v.value()))
            .transpose()
            .map_err(Applied::Refused)?;
        let condition = match op {
            WriteOp::Put { condition, .. } | WriteOp::Delete { condition, .. } | WriteOp::Check { condition, .. } => {
                *condition
            }
        };
        if !condition.holds(existing.as_ref().map(|i| i.version)) {
            return Err(Applied::Refused(StoreError::ConditionFailed { op: i }));
        }
        current.push(existing);
    }
    let broken = |e: redb::StorageError| Applied::Broken(unavailable(e));
    for ((op, existing), bytes) in ops.into_iter().zip(current).zip(encoded) {
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
                        .map_err(broken)?;
                }
            }
        }
        match (new_item, bytes) {
            (Some(item), Some(bytes)) => {
                items.insert((key.pk.as_str(), key.sk.as_str()), bytes.as_slice()).map_err(broken)?;
                for (slot, index) in Index::ALL.iter().enumerate() {
                    if let Some(ik) = item.indexes.get(*index) {
                        gsis[slot]
                            .insert((ik.pk.as_str(), ik.sk.as_str(), key.pk.as_str(), key.sk.as_str()), 0u8)
                            .map_err(broken)?;
                    }
                }
            }
            _ => {
                items.remove((key.pk.as_str(), key.sk.as_str())).map_err(broken)?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ItemStore for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.read(|db| get_sync(db, key))
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_keys(keys)?;
        // One read transaction: the items as of one moment.
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            keys.iter()
                .map(|key| {
                    let value = table.get((key.pk.as_str(), key.sk.as_str())).map_err(unavailable)?;
                    value.map(|v| decode(v.value())).transpose()
                })
                .collect()
        })
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.read(|db| query_sync(db, query))
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        // Encoded here, before the first write, so a body that cannot be encoded is refused
        // cleanly (and on the caller's thread, not the writer's).
        let encoded = encode(&ops)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let writer = self.shared.writer.as_ref().ok_or_else(|| unavailable("the store is closing"))?;
        writer.send(Pending { ops, encoded, reply }).map_err(|_| unavailable("the writer thread has stopped"))?;
        answer.await.map_err(|_| unavailable("the writer thread has stopped"))?
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}
