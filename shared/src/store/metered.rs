//! A wrapper that counts what a store is asked to do and estimates the DynamoDB capacity it
//! would consume, by DynamoDB's published rules: a strongly consistent read costs one read
//! unit per 4 KB (half that when eventually consistent, as index queries are), a write one
//! write unit per 1 KB, and every item in a transaction twice that. An index query reads the
//! index's keys, then the items (the indexes project keys only). Items are sized as the
//! DynamoDB store writes them, a large body deflated where that saves units
//! ([`super::deflated`]), whichever store is wrapped. The figures in the README come from
//! it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::repo::{Entity, OutboxRecord};
use super::{Item, ItemStore, Key, Page, Query, StoreError, WriteOp};

#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub get_requests: AtomicU64,
    pub query_requests: AtomicU64,
    pub write_requests: AtomicU64,
    pub items_read: AtomicU64,
    pub items_written: AtomicU64,
    /// Read and write capacity units, in thousandths.
    pub read_milli_units: AtomicU64,
    pub write_milli_units: AtomicU64,
    /// Writes that only mark an outbox event published (after the use case committed and
    /// published), and their write units in thousandths: counted apart from the above, as
    /// the outbox's bookkeeping after the operation rather than a step of it.
    pub mark_requests: AtomicU64,
    pub mark_write_milli_units: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub get_requests: u64,
    pub query_requests: u64,
    pub write_requests: u64,
    pub items_read: u64,
    pub items_written: u64,
    pub read_units: f64,
    pub write_units: f64,
    pub mark_requests: u64,
    pub mark_write_units: f64,
}

impl MetricsSnapshot {
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            get_requests: self.get_requests - earlier.get_requests,
            query_requests: self.query_requests - earlier.query_requests,
            write_requests: self.write_requests - earlier.write_requests,
            items_read: self.items_read - earlier.items_read,
            items_written: self.items_written - earlier.items_written,
            read_units: self.read_units - earlier.read_units,
            write_units: self.write_units - earlier.write_units,
            mark_requests: self.mark_requests - earlier.mark_requests,
            mark_write_units: self.mark_write_units - earlier.mark_write_units,
        }
    }
}

impl StoreMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            get_requests: l(&self.get_requests),
            query_requests: l(&self.query_requests),
            write_requests: l(&self.write_requests),
            items_read: l(&self.items_read),
            items_written: l(&self.items_written),
            read_units: l(&self.read_milli_units) as f64 / 1000.0,
            write_units: l(&self.write_milli_units) as f64 / 1000.0,
            mark_requests: l(&self.mark_requests),
            mark_write_units: l(&self.mark_write_milli_units) as f64 / 1000.0,
        }
    }
}

/// An item's size as DynamoDB would store it.
fn size(item: &Item) -> usize {
    super::deflated::stored_size(item).unwrap_or_else(|_| item.approximate_size())
}

fn units(bytes: usize, per: usize) -> u64 {
    bytes.div_ceil(per).max(1) as u64
}

pub struct Metered {
    inner: Arc<dyn ItemStore>,
    metrics: Arc<StoreMetrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Metered { inner, metrics: Arc::new(StoreMetrics::default()) }
    }

    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.metrics.clone()
    }

    /// A batched read: one round trip, each item's units rounded up on their own (as
    /// `BatchGetItem` is billed), `milli_per_unit` thousandths of a unit per 4 KB.
    fn count_batch(&self, items: &[Option<Item>], milli_per_unit: u64) {
        let m = &self.metrics;
        m.get_requests.fetch_add(1, Ordering::Relaxed);
        m.items_read.fetch_add(items.iter().flatten().count() as u64, Ordering::Relaxed);
        let units: u64 = items.iter().flatten().map(|i| units(size(i), 4096)).sum();
        m.read_milli_units.fetch_add(milli_per_unit * units, Ordering::Relaxed);
    }
}

/// A lone write of an outbox event leaving the unpublished index: the relay's mark.
fn marks_published(ops: &[WriteOp]) -> bool {
    match ops {
        [WriteOp::Put { item, .. }] => {
            item.entity == <OutboxRecord as Entity>::KIND && item.indexes.get(super::Index::Gsi2).is_none()
        }
        _ => false,
    }
}

#[async_trait]
impl ItemStore for Metered {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let item = self.inner.get(key).await?;
        let m = &self.metrics;
        m.get_requests.fetch_add(1, Ordering::Relaxed);
        m.items_read.fetch_add(u64::from(item.is_some()), Ordering::Relaxed);
        let bytes = item.as_ref().map_or(0, size);
        m.read_milli_units.fetch_add(1000 * units(bytes, 4096), Ordering::Relaxed);
        Ok(item)
    }

    /// One round trip; strongly consistent reads cost a unit per 4 KB of each item.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        let items = self.inner.get_many(keys).await?;
        self.count_batch(&items, 1000);
        Ok(items)
    }

    /// Half a unit per 4 KB of each item.
    async fn get_many_eventually(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        let items = self.inner.get_many_eventually(keys).await?;
        self.count_batch(&items, 500);
        Ok(items)
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let page = self.inner.query(query).await?;
        let m = &self.metrics;
        m.query_requests.fetch_add(1, Ordering::Relaxed);
        m.items_read.fetch_add(page.items.len() as u64, Ordering::Relaxed);
        let milli = match query.index {
            // The indexes project keys only: the query reads the index's entries (keys,
            // eventually consistent), then one batched read of the items, eventually
            // consistent, each item rounded up on its own.
            Some(_) => {
                let keys: usize = page.items.iter().map(Item::approximate_key_size).sum();
                500 * units(keys, 4096) + page.items.iter().map(|i| 500 * units(size(i), 4096)).sum::<u64>()
            }
            None => 1000 * units(page.items.iter().map(size).sum(), 4096),
        };
        m.read_milli_units.fetch_add(milli, Ordering::Relaxed);
        Ok(page)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let transactional = ops.len() > 1;
        let mut written = 0u64;
        let mut milli = 0u64;
        for op in &ops {
            let size = match op {
                WriteOp::Put { item, .. } => size(item),
                WriteOp::Delete { .. } | WriteOp::Check { .. } => 0,
            };
            if !matches!(op, WriteOp::Check { .. }) {
                written += 1;
            }
            milli += 1000 * units(size, 1024) * if transactional { 2 } else { 1 };
        }
        let mark = marks_published(&ops);
        let result = self.inner.write(ops).await;
        let m = &self.metrics;
        // Capacity is consumed even when a condition fails.
        if mark {
            m.mark_requests.fetch_add(1, Ordering::Relaxed);
            m.mark_write_milli_units.fetch_add(milli, Ordering::Relaxed);
            return result;
        }
        m.write_requests.fetch_add(1, Ordering::Relaxed);
        m.write_milli_units.fetch_add(milli, Ordering::Relaxed);
        if result.is_ok() {
            m.items_written.fetch_add(written, Ordering::Relaxed);
        }
        result
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
