//! The entity mapping, written once over any [`ItemStore`]: which key and index keys each
//! entity carries, typed reads, and transactions that always include the entity's version
//! check and, for state changes, their events (the outbox).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use chrono::TimeDelta;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys;
use super::{
    Body, Condition, Cursor, Index, IndexKey, IndexKeys, Item, ItemStore, Key, Query, SortKeyRange, StoreError, WriteOp,
};
use crate::domain::card::Fingerprint;
use crate::domain::events::{Event, EventPayload};
use crate::domain::wallet::{Wallet, WalletEntry};
use crate::domain::webhook::{Delivery, WebhookEndpoint};
use crate::domain::{CardLedger, Customer, Invoice, PaymentMethod, Subscription};
use crate::ids::{CustomerId, EventId, InvoiceId, PaymentMethodId, SubscriptionId, WebhookEndpointId};
use crate::time::Timestamp;

/// How long published events stay readable in the table (the event log).
pub const EVENT_RETENTION: TimeDelta = TimeDelta::days(30);

/// Something stored as one item of the single table.
pub trait Entity: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    const KIND: &'static str;
    fn key(&self) -> Key;
    fn index_keys(&self) -> IndexKeys {
        IndexKeys::default()
    }
    fn expires_at(&self) -> Option<i64> {
        None
    }
}

/// An entity with the version it was read at (0 for one not stored yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    value: T,
    version: u64,
}

impl<T> Versioned<T> {
    pub fn new(value: T) -> Self {
        Versioned { value, version: 0 }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// For records known to be at a version without reading them (an outbox record just
    /// committed is at version 1).
    pub(crate) fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Versioned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Versioned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// The entity as an item. Its body is the entity itself; a store that keeps bytes turns it
/// into JSON when it writes.
pub fn to_item<T: Entity>(value: &T, version: u64) -> Result<Item, StoreError> {
    let body = Body::Entity(Arc::new(value.clone()));
    Ok(Item {
        key: value.key(),
        entity: T::KIND.to_owned(),
        version,
        indexes: value.index_keys(),
        expires_at: value.expires_at(),
        body,
    })
}

pub fn from_item<T: Entity>(item: Item) -> Result<Versioned<T>, StoreError> {
    if item.entity != T::KIND {
        return Err(StoreError::Corrupt(format!("expected a {} at {:?}, found a {}", T::KIND, item.key, item.entity)));
    }
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{} at {:?}: {e}", T::KIND, item.key));
    let value = match item.body {
        Body::Entity(held) => match held.as_any().downcast_ref::<T>() {
            Some(value) => value.clone(),
            None => serde_json::from_value(held.to_json()?).map_err(|e| corrupt(&e))?,
        },
        Body::Json(json) => serde_json::from_value(json).map_err(|e| corrupt(&e))?,
    };
    Ok(Versioned { value, version: item.version })
}

/// A unit of work: writes that succeed or fail together, and the events they record.
#[derive(Debug, Default)]
pub struct Tx {
    ops: Vec<WriteOp>,
    events: Vec<Event>,
}

impl Tx {
    pub fn new() -> Self {
        Tx::default()
    }

    /// Creates the entity (it must not exist) or updates it (its version must not have
    /// moved since it was read).
    pub fn save<T: Entity>(&mut self, v: &Versioned<T>) -> Result<&mut Self, StoreError> {
        let condition = if v.version == 0 { Condition::NotExists } else { Condition::Version(v.version) };
        self.ops.push(WriteOp::Put { item: to_item(&v.value, v.version + 1)?, condition });
        Ok(self)
    }

    pub fn delete<T: Entity>(&mut self, v: &Versioned<T>) -> &mut Self {
        self.ops.push(WriteOp::Delete { key: v.value.key(), condition: Condition::Version(v.version) });
        self
    }

    /// Fails the transaction if the entity changed since it was read.
    pub fn check<T: Entity>(&mut self, v: &Versioned<T>) -> &mut Self {
        let condition = if v.version == 0 { Condition::NotExists } else { Condition::Version(v.version) };
        self.ops.push(WriteOp::Check { key: v.value.key(), condition });
        self
    }

    pub fn raw(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Records events in the outbox, in this same transaction.
    pub fn emit(
        &mut self,
        payloads: impl IntoIterator<Item = EventPayload>,
        now: Timestamp,
    ) -> Result<&mut Self, StoreError> {
        for payload in payloads {
            let event = Event::new(payload, now);
            let record = OutboxRecord { event: event.clone(), published_at: None };
            self.ops.push(WriteOp::Put { item: to_item(&record, 1)?, condition: Condition::NotExists });
            self.events.push(event);
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// An event in the outbox. Unpublished events sit in the schedule index until the relay
/// (or the writer, right after commit) has put them on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct OutboxRecord {
    pub event: Event,
    pub published_at: Option<Timestamp>,
}

impl Entity for OutboxRecord {
    const KIND: &'static str = "event";
    fn key(&self) -> Key {
        keys::event(&self.event.id)
    }
    fn index_keys(&self) -> IndexKeys {
        let pending = self.published_at.is_none().then(|| keys::outbox_entry(&self.event.id, self.event.occurred_at));
        IndexKeys::default().with(Index::Gsi2, pending)
    }
    fn expires_at(&self) -> Option<i64> {
        self.published_at.map(|at| (at + EVENT_RETENTION).timestamp())
    }
}

impl Entity for Customer {
    const KIND: &'static str = "customer";
    fn key(&self) -> Key {
        keys::customer(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        IndexKeys::default()
            .with(Index::Gsi1, Some(keys::listing_entry(keys::ALL_CUSTOMERS, self.created_at, self.id.as_str())))
    }
}

impl Entity for PaymentMethod {
    const KIND: &'static str = "payment_method";
    fn key(&self) -> Key {
        keys::payment_method(&self.customer_id, &self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        let expiry = keys::expiry_entry(self.expiry.year(), self.expiry.month(), &self.customer_id, &self.id);
        IndexKeys::default().with(Index::Gsi2, Some(expiry))
    }
}

impl Entity for Invoice {
    const KIND: &'static str = "invoice";
    fn key(&self) -> Key {
        keys::invoice(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        let listing = keys::customer_invoice_entry(&self.customer_id, self.created_at, &self.id);
        let due = self.next_attempt_at().map(|at| keys::due_entry(&self.id, at));
        let outstanding = self.status().is_outstanding().then(|| {
            IndexKey::new(
                keys::outstanding_invoices(&self.customer_id),
                format!("{}#{}", crate::time::sortable(self.created_at), self.id),
            )
        });
        IndexKeys::default().with(Index::Gsi1, Some(listing)).with(Index::Gsi2, due).with(Index::Gsi3, outstanding)
    }
}

impl Entity for Subscription {
    const KIND: &'static str = "subscription";
    fn key(&self) -> Key {
        keys::subscription(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        let listing = keys::listing_entry(keys::ALL_SUBSCRIPTIONS, self.created_at, self.id.as_str());
        let renewal = self.next_renewal_at().map(|at| keys::renewal_entry(&self.id, at));
        let failing = (self.failed_payment_count() > 0)
            .then(|| keys::listing_entry(keys::FAILING_SUBSCRIPTIONS, self.created_at, self.id.as_str()));
        IndexKeys::default().with(Index::Gsi1, Some(listing)).with(Index::Gsi2, renewal).with(Index::Gsi3, failing)
    }
}

impl Entity for CardLedger {
    const KIND: &'static str = "card_ledger";
    fn key(&self) -> Key {
        keys::card_ledger(&self.fingerprint)
    }
}

/// A page of a listing, newest first, with the cursor for the next page.
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// The id at the end of a schedule or listing sort key (`<time>#<id>`).
fn id_suffix(sk: &str) -> &str {
    sk.rsplit('#').next().unwrap_or(sk)
}

/// Typed access to the single table.
#[derive(Clone)]
pub struct Repo {
    store: Arc<dyn ItemStore>,
}

impl Repo {
    pub fn new(store: Arc<dyn ItemStore>) -> Self {
        Repo { store }
    }

    pub fn store(&self) -> &Arc<dyn ItemStore> {
        &self.store
    }

    pub async fn load<T: Entity>(&self, key: &Key) -> Result<Option<Versioned<T>>, StoreError> {
        match self.store.get(key).await? {
            Some(item) => from_item(item).map(Some),
            None => Ok(None),
        }
    }

    /// Applies the transaction; on success returns the events it recorded.
    pub async fn commit(&self, tx: Tx) -> Result<Vec<Event>, StoreError> {
        if tx.ops.is_empty() {
            return Ok(tx.events);
        }
        self.store.write(tx.ops).await?;
        Ok(tx.events)
    }

    async fn query_all<T: Entity>(&self, mut query: Query) -> Result<Vec<Versioned<T>>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = self.store.query(&query).await?;
            for item in page.items {
                out.push(from_item(item)?);
            }
            match page.next {
                Some(c) => query.after = Some(c),
                None => return Ok(out),
            }
        }
    }

    async fn listing<T: Entity>(&self, query: Query) -> Result<Listing<T>, StoreError> {
        query.validate_cursor()?;
        let page = self.store.query(&query).await?;
        let items =
            page.items.into_iter().map(|i| from_item::<T>(i).map(Versioned::into_inner)).collect::<Result<_, _>>()?;
        Ok(Listing { items, next: page.next })
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Option<Versioned<Customer>>, StoreError> {
        self.load(&keys::customer(id)).await
    }

    pub async fn payment_method(
        &self,
        customer: &CustomerId,
        id: &PaymentMethodId,
    ) -> Result<Option<Versioned<PaymentMethod>>, StoreError> {
        self.load(&keys::payment_method(customer, id)).await
    }

    /// A customer's cards, oldest first (strongly consistent: one partition).
    pub async fn payment_methods(&self, customer: &CustomerId) -> Result<Vec<Versioned<PaymentMethod>>, StoreError> {
        self.query_all(Query::table(
            keys::customer_partition(customer),
            SortKeyRange::BeginsWith(keys::PAYMENT_METHOD_PREFIX.into()),
        ))
        .await
    }

    pub async fn invoice(&self, id: &InvoiceId) -> Result<Option<Versioned<Invoice>>, StoreError> {
        self.load(&keys::invoice(id)).await
    }

    /// A customer's invoices, newest first.
    pub async fn customer_invoices(
        &self,
        customer: &CustomerId,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Invoice>, StoreError> {
        let q = Query::index(Index::Gsi1, keys::customer_invoices(customer), SortKeyRange::All)
            .descending()
            .limit(limit)
            .after(after);
        self.listing(q).await
    }

    /// A customer's open and errored invoices, oldest first, each re-read consistently.
    pub async fn outstanding_invoices(&self, customer: &CustomerId) -> Result<Vec<Versioned<Invoice>>, StoreError> {
        let entries: Vec<Versioned<Invoice>> =
            self.query_all(Query::index(Index::Gsi3, keys::outstanding_invoices(customer), SortKeyRange::All)).await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(inv) = self.invoice(&entry.id).await?
                && inv.status().is_outstanding()
            {
                out.push(inv);
            }
        }
        Ok(out)
    }

    pub async fn subscription(&self, id: &SubscriptionId) -> Result<Option<Versioned<Subscription>>, StoreError> {
        self.load(&keys::subscription(id)).await
    }

    pub async fn subscriptions(
        &self,
        failing_only: bool,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Subscription>, StoreError> {
        let q = if failing_only {
            Query::index(Index::Gsi3, keys::FAILING_SUBSCRIPTIONS, SortKeyRange::All)
        } else {
            Query::index(Index::Gsi1, keys::ALL_SUBSCRIPTIONS, SortKeyRange::All)
        };
        self.listing(q.descending().limit(limit).after(after)).await
    }

    pub async fn customers(&self, limit: usize, after: Option<Cursor>) -> Result<Listing<Customer>, StoreError> {
        let q =
            Query::index(Index::Gsi1, keys::ALL_CUSTOMERS, SortKeyRange::All).descending().limit(limit).after(after);
        self.listing(q).await
    }

    pub async fn ledger(&self, fingerprint: &Fingerprint) -> Result<Option<Versioned<CardLedger>>, StoreError> {
        self.load(&keys::card_ledger(fingerprint)).await
    }

    /// Items in one schedule partition due at or before `now`, oldest first.
    async fn due_items(&self, partition: String, now: Timestamp, limit: usize) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut query =
            Query::index(Index::Gsi2, partition, SortKeyRange::AtMost(keys::due_bound(now))).limit(limit.min(1000));
        loop {
            let page = self.store.query(&query).await?;
            items.extend(page.items);
            if items.len() >= limit {
                items.truncate(limit);
                return Ok(items);
            }
            match page.next {
                Some(c) => query.after = Some(c),
                None => return Ok(items),
            }
        }
    }

    /// Items due at or before `now` in every shard of a schedule, up to `limit`.
    async fn due_in_shards(
        &self,
        partition: fn(u32) -> String,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..keys::SCHEDULE_SHARDS {
            if out.len() >= limit {
                break;
            }
            out.extend(self.due_items(partition(shard), now, limit - out.len()).await?);
        }
        Ok(out)
    }

    /// The ids a schedule's due items name in their index sort keys.
    fn due_ids<T>(items: &[Item], parse: fn(&str) -> Option<T>) -> Vec<T> {
        items.iter().filter_map(|item| item.indexes.get(Index::Gsi2)).filter_map(|k| parse(id_suffix(&k.sk))).collect()
    }

    /// Invoices due for an attempt (or for reconciling one) at `now`, from every shard.
    pub async fn due_invoices(&self, now: Timestamp, limit: usize) -> Result<Vec<InvoiceId>, StoreError> {
        let items = self.due_in_shards(keys::due_partition, now, limit).await?;
        Ok(Self::due_ids(&items, InvoiceId::parse))
    }

    /// [`Repo::due_invoices`], whole (the schedule index carries every attribute), so the
    /// scheduler can tell the charge worker what each charge will read.
    pub async fn due_invoice_entities(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Versioned<Invoice>>, StoreError> {
        self.due_in_shards(keys::due_partition, now, limit).await?.into_iter().map(from_item).collect()
    }

    pub async fn due_renewals(&self, now: Timestamp, limit: usize) -> Result<Vec<SubscriptionId>, StoreError> {
        let items = self.due_in_shards(keys::renewal_partition, now, limit).await?;
        Ok(Self::due_ids(&items, SubscriptionId::parse))
    }

    /// Outbox records not yet published, oldest first per shard.
    pub async fn unpublished_events(&self, limit: usize) -> Result<Vec<Versioned<OutboxRecord>>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..keys::SCHEDULE_SHARDS {
            if out.len() >= limit {
                break;
            }
            let q =
                Query::index(Index::Gsi2, keys::outbox_partition(shard), SortKeyRange::All).limit(limit - out.len());
            let page = self.store.query(&q).await?;
            for item in page.items {
                out.push(from_item(item)?);
            }
        }
        Ok(out)
    }

    pub async fn event(&self, id: &crate::ids::EventId) -> Result<Option<Versioned<OutboxRecord>>, StoreError> {
        self.load(&keys::event(id)).await
    }
}

/// How long a delivery's record stays readable after its last change (the delivery log).
pub const DELIVERY_RETENTION: TimeDelta = TimeDelta::days(30);

impl Entity for WebhookEndpoint {
    const KIND: &'static str = "webhook_endpoint";
    fn key(&self) -> Key {
        keys::webhook_endpoint(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        let entry = keys::listing_entry(keys::ALL_WEBHOOK_ENDPOINTS, self.created_at, self.id.as_str());
        IndexKeys::default().with(Index::Gsi1, Some(entry))
    }
}

impl Entity for Delivery {
    const KIND: &'static str = "webhook_delivery";
    fn key(&self) -> Key {
        keys::webhook_delivery(&self.endpoint_id, &self.event_id)
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.updated_at + DELIVERY_RETENTION).timestamp())
    }
}

impl Entity for Wallet {
    const KIND: &'static str = "wallet";
    fn key(&self) -> Key {
        keys::wallet(&self.customer_id, self.currency.code())
    }
    fn index_keys(&self) -> IndexKeys {
        IndexKeys::default().with(Index::Gsi1, Some(keys::wallet_listing(&self.customer_id, self.currency.code())))
    }
}

impl Entity for WalletEntry {
    const KIND: &'static str = "wallet_entry";
    fn key(&self) -> Key {
        keys::wallet_entry(&self.customer_id, self.currency.code(), self.number)
    }
}

impl Repo {
    pub async fn wallet(&self, customer: &CustomerId, currency: &str) -> Result<Option<Versioned<Wallet>>, StoreError> {
        self.load(&keys::wallet(customer, currency)).await
    }

    pub async fn wallet_entry(
        &self,
        customer: &CustomerId,
        currency: &str,
        number: u64,
    ) -> Result<Option<Versioned<WalletEntry>>, StoreError> {
        self.load(&keys::wallet_entry(customer, currency, number)).await
    }

    /// A customer's wallets, one per currency.
    pub async fn wallets(&self, customer: &CustomerId) -> Result<Vec<Versioned<Wallet>>, StoreError> {
        self.query_all(Query::index(Index::Gsi1, keys::customer_wallets(customer), SortKeyRange::All)).await
    }

    /// A wallet's ledger, newest entry first.
    pub async fn wallet_entries(
        &self,
        customer: &CustomerId,
        currency: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<WalletEntry>, StoreError> {
        let q = Query::table(
            keys::wallet_partition(customer, currency),
            SortKeyRange::BeginsWith(keys::WALLET_ENTRY_PREFIX.into()),
        )
        .descending()
        .limit(limit)
        .after(after);
        self.listing(q).await
    }

    /// Every saved card that expires at the end of `month` of `year` (the index is
    /// eventually consistent: re-read a card before acting on it).
    pub async fn cards_expiring(&self, year: u16, month: u8) -> Result<Vec<Versioned<PaymentMethod>>, StoreError> {
        self.query_all(Query::index(Index::Gsi2, keys::expiry_partition(year, month), SortKeyRange::All)).await
    }

    pub async fn webhook_endpoint(
        &self,
        id: &WebhookEndpointId,
    ) -> Result<Option<Versioned<WebhookEndpoint>>, StoreError> {
        self.load(&keys::webhook_endpoint(id)).await
    }

    /// Every endpoint, newest first (a merchant has a handful).
    pub async fn webhook_endpoints(&self) -> Result<Vec<Versioned<WebhookEndpoint>>, StoreError> {
        self.query_all(Query::index(Index::Gsi1, keys::ALL_WEBHOOK_ENDPOINTS, SortKeyRange::All).descending()).await
    }

    pub async fn webhook_delivery(
        &self,
        endpoint: &WebhookEndpointId,
        event: &EventId,
    ) -> Result<Option<Versioned<Delivery>>, StoreError> {
        self.load(&keys::webhook_delivery(endpoint, event)).await
    }

    /// An endpoint's deliveries, newest event first.
    pub async fn webhook_deliveries(
        &self,
        endpoint: &WebhookEndpointId,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Delivery>, StoreError> {
        let q = Query::table(keys::webhook_partition(endpoint), SortKeyRange::BeginsWith(keys::DELIVERY_PREFIX.into()))
            .descending()
            .limit(limit)
            .after(after);
        self.listing(q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_last_segment_of_a_schedule_sort_key() {
        assert_eq!(id_suffix("2030-01-01T00:00:00.000Z#in_abc"), "in_abc");
    }
}
