//! The in-memory store: the same contract as the embedded and DynamoDB stores, held in
//! hash maps, sorted vectors and ordered sets and gone when the process ends. For
//! simulations and benchmarks (a million-invoice dunning month), never for data anyone
//! needs back.
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
//! Items are spread over [`SHARDS`] maps by partition key, each behind its own lock, and so
//! are each index's entries by index partition key, so writers of different partitions
//! do not wait for each other. A write takes the write locks of the shards its items live
//! in (in shard order, so two writers never wait for each other in a cycle), evaluates
//! every condition, then takes the locks of the index shards whose entries change and
//! applies every operation: a transaction is all or nothing and transactions on one item
//! are serialisable, as on the other backends. A batched read holds the read locks of all
//! its shards at once, so it sees one moment. An index query reads its entries, lets go of
//! the index, then reads each item and keeps it only if it still carries that index key:
//! like a DynamoDB index, it may miss a change made meanwhile, but never returns an item
//! the query does not select.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::RwLock;

use async_trait::async_trait;
use rustc_hash::FxBuildHasher;

use super::{
    Body, Index, Item, ItemStore, Key, Page, Query, ReadBounds, Sizing, StoreError, WriteOp, bounds_empty, bounds_past,
    validate_batch_sizing,
};

/// Key parts joined by NUL in one string, so that index entries order as the tuple
/// `(index PK, index SK, PK, SK)` would (no key holds a NUL), at one allocation each.
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

/// The entries of one index partition (every one starts with the partition key and a
/// NUL) that a query can select: within its sort key range and past its page cursor, so a
/// read visits only what it may return. `cursor` is the cursor's entry in the same joined
/// form. `None` when nothing can be selected.
fn scan_bounds(q: &Query, cursor: Option<String>) -> Option<ReadBounds<String>> {
    let pk = &q.pk;
    let lower = Bound::Included(match q.range.lowest() {
        Some(a) => joined([pk, a]),
        None => format!("{pk}\0"),
    });
    // Every entry whose sort key is the highest (it goes on with the item's key) sorts
    // before the highest followed by U+0001, which no greater one does.
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
    /// `None` when the item carries no index key (most do not: the key pairs take more
    /// room than the rest of an item's bookkeeping).
    indexes: Option<Box<super::IndexKeys>>,
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
            indexes: (item.indexes != super::IndexKeys::default()).then(|| Box::new(item.indexes)),
            expires_at: item.expires_at,
            body,
        })
    }

    fn item(&self, pk: &str, sk: &str) -> Result<Item, StoreError> {
        Ok(Item {
            key: Key::new(pk, sk),
            entity: self.entity.clone(),
            version: self.version,
            indexes: self.indexes.as_deref().cloned().unwrap_or_default(),
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

/// How many shards the items, and each index's entries, are spread over.
pub const SHARDS: usize = 32;

/// The shard of a partition key (FNV-1a: short keys, no need to resist anyone).
fn shard_of(pk: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pk.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// One shard of the items, by partition key: a point read or write costs a hash of the
/// partition key and a binary search among its few sort keys, not a walk down a tree of
/// string comparisons, and no key is joined or kept twice.
#[derive(Default)]
struct Items {
    partitions: HashMap<Box<str>, Partition, FxBuildHasher>,
}

/// One partition's items in sort key order. Most partitions hold one item; the larger
/// ones (a webhook endpoint's deliveries, a wallet's entries) grow at their end, as their
/// sort keys rise with time, so an insertion moves little.
type Partition = Vec<(Box<str>, Stored)>;

fn position(partition: &Partition, sk: &str) -> Result<usize, usize> {
    partition.binary_search_by(|(k, _)| k.as_ref().cmp(sk))
}

impl Items {
    fn get(&self, pk: &str, sk: &str) -> Option<&Stored> {
        let partition = self.partitions.get(pk)?;
        position(partition, sk).ok().map(|i| &partition[i].1)
    }

    fn insert(&mut self, key: Key, stored: Stored) {
        let Some(partition) = self.partitions.get_mut(key.pk.as_str()) else {
            self.partitions.insert(key.pk.into_boxed_str(), vec![(key.sk.into_boxed_str(), stored)]);
            return;
        };
        match position(partition, &key.sk) {
            Ok(i) => partition[i].1 = stored,
            Err(i) => partition.insert(i, (key.sk.into_boxed_str(), stored)),
        }
    }

    fn remove(&mut self, key: &Key) {
        let Some(partition) = self.partitions.get_mut(key.pk.as_str()) else { return };
        if let Ok(i) = position(partition, &key.sk) {
            partition.remove(i);
        }
        if partition.is_empty() {
            self.partitions.remove(key.pk.as_str());
        }
    }

    /// The items of a partition a table query can select, in sort key order: within its
    /// sort key range and past its page cursor.
    fn candidates<'a>(&'a self, q: &Query) -> &'a [(Box<str>, Stored)] {
        let Some(partition) = self.partitions.get(q.pk.as_str()) else { return &[] };
        let below = |bound: &str| partition.partition_point(|(k, _)| k.as_ref() < bound);
        let up_to = |bound: &str| partition.partition_point(|(k, _)| k.as_ref() <= bound);
        let mut lo = q.range.lowest().map_or(0, below);
        let mut hi = q.range.highest().map_or(partition.len(), up_to);
        match &q.after {
            Some(c) if q.descending => hi = hi.min(below(&c.key.sk)),
            Some(c) => lo = lo.max(up_to(&c.key.sk)),
            None => {}
        }
        partition.get(lo..hi).unwrap_or_default()
    }
}

/// One shard of one index's entries, by joined index key and table key.
type Entries = BTreeSet<String>;

fn slot(index: Index) -> usize {
    match index {
        Index::Gsi1 => 0,
        Index::Gsi2 => 1,
        Index::Gsi3 => 2,
    }
}

/// Where an index entry lives among the index shards: the index, then its partition's
/// shard.
fn entry_shard(index: Index, index_pk: &str) -> usize {
    slot(index) * SHARDS + shard_of(index_pk)
}

/// An index entry: its index key, then the item's table key.
fn entry(ik: &super::IndexKey, key: &Key) -> String {
    joined([&ik.pk, &ik.sk, &key.pk, &key.sk])
}

fn lock_read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding a lock cannot leave a half-applied write: writes are applied
    // only after every check passed, with nothing in between that can panic.
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shard numbers in ascending order, once each: the order every reader and writer takes
/// their locks in.
fn in_lock_order(mut shards: Vec<usize>) -> Vec<usize> {
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// Locks held on some shards, found by shard number.
struct Held<G>(Vec<(usize, G)>);

impl<G> Held<G> {
    fn take(shards: Vec<usize>, lock: impl Fn(usize) -> G) -> Held<G> {
        Held(in_lock_order(shards).into_iter().map(|s| (s, lock(s))).collect())
    }

    fn at(&mut self, shard: usize) -> &mut G {
        let i = self.0.iter().position(|(s, _)| *s == shard).expect("the shard's lock is held");
        &mut self.0[i].1
    }
}

pub struct MemoryStore {
    items: Box<[RwLock<Items>]>,
    /// `SHARDS` per index, index after index ([`entry_shard`]).
    indexes: Box<[RwLock<Entries>]>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            items: (0..SHARDS).map(|_| RwLock::default()).collect(),
            indexes: (0..SHARDS * Index::ALL.len()).map(|_| RwLock::default()).collect(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// How many items are stored.
    pub fn len(&self) -> usize {
        self.items.iter().map(|shard| lock_read(shard).partitions.values().map(Vec::len).sum::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is stored, by entity: how many items and their approximate size in bytes.
    pub fn footprint(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for shard in self.items.iter() {
            for (pk, partition) in &lock_read(shard).partitions {
                for (sk, stored) in partition {
                    let e = out.entry(stored.entity.clone()).or_default();
                    e.0 += 1;
                    e.1 += stored.body_len() + pk.len() + sk.len();
                }
            }
        }
        out
    }

    /// The item under a table key, read under its shard's lock.
    fn get_one(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        lock_read(&self.items[shard_of(pk)]).get(pk, sk).map(|s| s.item(pk, sk)).transpose()
    }

    fn query_table(&self, q: &Query) -> Result<Page, StoreError> {
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out: Vec<Item> = Vec::new();
        let mut more = false;
        let shard = lock_read(&self.items[shard_of(&q.pk)]);
        let candidates = shard.candidates(q);
        let iter: Box<dyn Iterator<Item = &(Box<str>, Stored)>> =
            if q.descending { Box::new(candidates.iter().rev()) } else { Box::new(candidates.iter()) };
        for (sk, stored) in iter {
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
            out.push(stored.item(&q.pk, sk)?);
        }
        Ok(q.page(out, more))
    }

    fn query_index(&self, index: Index, q: &Query) -> Result<Page, StoreError> {
        let limit = q.limit.unwrap_or(usize::MAX);
        let cursor = q.after.as_ref().map(|c| {
            let isk = c.index_key.as_ref().map_or("", |k| k.sk.as_str());
            joined([&q.pk, isk, &c.key.pk, &c.key.sk])
        });
        let Some(bounds) = scan_bounds(q, cursor) else { return Ok(q.page(Vec::new(), false)) };
        // The entries on this page (and whether one more follows), copied out so the
        // index's lock is let go before any item's is taken.
        let mut chosen: Vec<String> = Vec::new();
        let mut more = false;
        {
            let entries = lock_read(&self.indexes[entry_shard(index, &q.pk)]);
            let range = entries.range::<String, _>(bounds);
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
                if chosen.len() == limit {
                    more = true;
                    break;
                }
                chosen.push(e.clone());
            }
        }
        let mut out = Vec::with_capacity(chosen.len());
        for e in &chosen {
            let (isk, pk, sk) =
                entry_parts(e).ok_or_else(|| StoreError::Corrupt(format!("a malformed index entry {e:?}")))?;
            let shard = lock_read(&self.items[shard_of(pk)]);
            // Gone or moved since the entry was read: not on this page, as on an index
            // that has not caught up.
            let Some(stored) = shard.get(pk, sk) else { continue };
            if stored.indexes.as_deref().and_then(|k| k.get(index)).is_some_and(|ik| ik.pk == q.pk && ik.sk == isk) {
                out.push(stored.item(pk, sk)?);
            }
        }
        Ok(q.page(out, more))
    }
}

/// One operation of a write, made ready before any lock is taken.
struct Prepared {
    shard: usize,
    key: Key,
    condition: super::Condition,
    change: Change,
}

#[async_trait]
impl ItemStore for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.get_one(&key.pk, &key.sk)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_keys(keys)?;
        let mut held = Held::take(keys.iter().map(|k| shard_of(&k.pk)).collect(), |s| lock_read(&self.items[s]));
        keys.iter()
            .map(|k| held.at(shard_of(&k.pk)).get(&k.pk, &k.sk).map(|s| s.item(&k.pk, &k.sk)).transpose())
            .collect()
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        query.validate_cursor()?;
        match query.index {
            None => self.query_table(query),
            Some(index) => self.query_index(index, query),
        }
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        validate_batch_sizing(&ops, Sizing::JsonBodies)?;
        // Keys are joined and bodies made ready to keep before any lock is taken (and
        // before anything is written), so one that cannot be kept refuses the whole write.
        let mut prepared = Vec::with_capacity(ops.len());
        for op in ops {
            let (key, condition, change) = match op {
                WriteOp::Put { item, condition } => {
                    if holds_nul(&item) {
                        return Err(StoreError::Invalid("the in-memory store keeps no key holding a NUL".into()));
                    }
                    let key = item.key.clone();
                    (key, condition, Change::Put(Stored::keep(item)?))
                }
                WriteOp::Delete { key, condition } => (key, condition, Change::Delete),
                WriteOp::Check { key, condition } => (key, condition, Change::None),
            };
            prepared.push(Prepared { shard: shard_of(&key.pk), key, condition, change });
        }
        let mut items = Held::take(prepared.iter().map(|p| p.shard).collect(), |s| lock_write(&self.items[s]));
        for (i, p) in prepared.iter().enumerate() {
            if !p.condition.holds(items.at(p.shard).get(&p.key.pk, &p.key.sk).map(|s| s.version)) {
                return Err(StoreError::ConditionFailed { op: i });
            }
        }
        // The index entries that change: the old item's that it no longer carries, and the
        // new item's it did not carry.
        let mut removed: Vec<(usize, String)> = Vec::new();
        let mut added: Vec<(usize, String)> = Vec::new();
        for p in &prepared {
            let new = match &p.change {
                Change::None => continue,
                Change::Delete => None,
                Change::Put(stored) => stored.indexes.as_deref(),
            };
            let old = items.at(p.shard).get(&p.key.pk, &p.key.sk).and_then(|s| s.indexes.as_deref());
            for index in Index::ALL {
                let (was, is) = (old.and_then(|k| k.get(index)), new.and_then(|k| k.get(index)));
                if was == is {
                    continue;
                }
                if let Some(ik) = was {
                    removed.push((entry_shard(index, &ik.pk), entry(ik, &p.key)));
                }
                if let Some(ik) = is {
                    added.push((entry_shard(index, &ik.pk), entry(ik, &p.key)));
                }
            }
        }
        let mut entries =
            Held::take(removed.iter().chain(&added).map(|(s, _)| *s).collect(), |s| lock_write(&self.indexes[s]));
        for (shard, e) in &removed {
            entries.at(*shard).remove(e);
        }
        for (shard, e) in added {
            entries.at(shard).insert(e);
        }
        for p in prepared {
            match p.change {
                Change::None => {}
                Change::Delete => {
                    items.at(p.shard).remove(&p.key);
                }
                Change::Put(stored) => {
                    items.at(p.shard).insert(p.key, stored);
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

    /// Transfers between accounts in different shards, from threads at once, while
    /// readers check that a batched read sees one moment (the total never changes) and
    /// that an index query returns only items carrying the key it asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn transactions_across_shards_are_atomic_and_reads_see_one_moment() {
        const ACCOUNTS: usize = 12;
        const START: i64 = 100;
        let store = std::sync::Arc::new(MemoryStore::new());
        fn key(i: usize) -> Key {
            Key::new(format!("ACCT#{i}"), "BALANCE")
        }
        fn account(i: usize, balance: i64, version: u64) -> Item {
            Item {
                key: key(i),
                entity: "account".into(),
                version,
                // Accounts in credit are listed on one index partition, in debt on another.
                indexes: IndexKeys::default().with(
                    Index::Gsi2,
                    Some(IndexKey::new(if balance >= 0 { "CREDIT" } else { "DEBT" }, format!("{i:02}"))),
                ),
                expires_at: None,
                body: serde_json::json!({ "balance": balance }).into(),
            }
        }
        fn balance(item: &Item) -> i64 {
            item.body.json().unwrap()["balance"].as_i64().unwrap()
        }
        let seed = (0..ACCOUNTS).map(|i| WriteOp::Put { item: account(i, START, 1), condition: Condition::NotExists });
        store.write(seed.collect()).await.unwrap();
        let shards: std::collections::HashSet<usize> = (0..ACCOUNTS).map(|i| shard_of(&key(i).pk)).collect();
        assert!(shards.len() > 3, "the accounts span several shards");

        let mut tasks = Vec::new();
        for t in 0..4usize {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                let mut n = t;
                while done < 200 {
                    n = (n * 7 + 13) % 1_000_003;
                    let (from, to) = (n % ACCOUNTS, (n / ACCOUNTS) % ACCOUNTS);
                    if from == to {
                        continue;
                    }
                    let read = store.get_many(&[key(from), key(to)]).await.unwrap();
                    let (a, b) = (read[0].clone().unwrap(), read[1].clone().unwrap());
                    let amount = 1 + (n % 40) as i64;
                    let ops = vec![
                        WriteOp::Put {
                            item: account(from, balance(&a) - amount, a.version + 1),
                            condition: Condition::Version(a.version),
                        },
                        WriteOp::Put {
                            item: account(to, balance(&b) + amount, b.version + 1),
                            condition: Condition::Version(b.version),
                        },
                    ];
                    match store.write(ops).await {
                        Ok(()) => done += 1,
                        Err(StoreError::ConditionFailed { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }));
        }
        let readers = {
            let store = store.clone();
            tokio::spawn(async move {
                let keys: Vec<Key> = (0..ACCOUNTS).map(key).collect();
                for _ in 0..2000 {
                    let all = store.get_many(&keys).await.unwrap();
                    let total: i64 = all.iter().map(|i| balance(i.as_ref().unwrap())).sum();
                    assert_eq!(total, START * ACCOUNTS as i64, "a batched read saw half a transfer");
                    for partition in ["CREDIT", "DEBT"] {
                        let q = Query::index(Index::Gsi2, partition, crate::store::SortKeyRange::All);
                        for item in store.query(&q).await.unwrap().items {
                            let listed = item.indexes.get(Index::Gsi2).unwrap();
                            assert_eq!(listed.pk, partition, "an index query returned an item it does not select");
                            assert_eq!(partition == "CREDIT", balance(&item) >= 0);
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        readers.await.unwrap();
        let keys: Vec<Key> = (0..ACCOUNTS).map(key).collect();
        let all = store.get_many(&keys).await.unwrap();
        assert_eq!(all.iter().map(|i| balance(i.as_ref().unwrap())).sum::<i64>(), START * ACCOUNTS as i64);
        // Every account is on exactly the index partition its balance says.
        let mut listed = 0;
        for partition in ["CREDIT", "DEBT"] {
            let q = Query::index(Index::Gsi2, partition, crate::store::SortKeyRange::All);
            listed += store.query(&q).await.unwrap().items.len();
        }
        assert_eq!(listed, ACCOUNTS, "each account listed once");
    }
}
