//! Every key of the single table, built in one place. `docs/data-model.md` lists them with
//! the access pattern each serves.

use super::{IndexKey, Key};
use crate::domain::card::Fingerprint;
use crate::ids::{CustomerId, EventId, InvoiceId, PaymentMethodId, SubscriptionId, WebhookEndpointId};
use crate::time::{Timestamp, sortable};

/// Schedule partitions are spread over this many shards so one hot partition never
/// carries every due item; a sweep queries each shard.
pub const SCHEDULE_SHARDS: u32 = 8;

/// FNV-1a: stable across processes and releases (unlike `DefaultHasher`).
pub fn shard_of(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SCHEDULE_SHARDS
}

pub fn customer(id: &CustomerId) -> Key {
    Key::new(format!("CUS#{id}"), "PROFILE")
}

pub fn payment_method(customer: &CustomerId, id: &PaymentMethodId) -> Key {
    Key::new(format!("CUS#{customer}"), format!("PM#{id}"))
}

/// Sort-key prefix of a customer's payment methods inside the customer partition.
pub const PAYMENT_METHOD_PREFIX: &str = "PM#";

pub fn customer_partition(customer: &CustomerId) -> String {
    format!("CUS#{customer}")
}

pub fn invoice(id: &InvoiceId) -> Key {
    Key::new(format!("INV#{id}"), "INVOICE")
}

pub fn subscription(id: &SubscriptionId) -> Key {
    Key::new(format!("SUB#{id}"), "SUBSCRIPTION")
}

pub fn card_ledger(fingerprint: &Fingerprint) -> Key {
    Key::new(format!("CARD#{}", fingerprint.as_str()), "LEDGER")
}

pub fn event(id: &EventId) -> Key {
    Key::new(format!("EVT#{id}"), "EVENT")
}

/// An idempotency record: the caller's scope and key are hashed so neither length nor
/// characters of a client-chosen key reach the table's key schema.
pub fn idempotency(scope_and_key_hash: &str) -> Key {
    Key::new(format!("IDEM#{scope_and_key_hash}"), "IDEM")
}

/// What one run of an idempotent create made (see `services::idempotency::CreatedBy`),
/// keyed by that run's request id (itself a hash), so a re-run finds it.
pub fn created_by_request(request_id: &str) -> Key {
    Key::new(format!("REQ#{request_id}"), "REQ")
}

/// An email the notifier sent (kept for the dev console and for de-duplication).
pub fn email(id: &str) -> Key {
    Key::new(format!("MAIL#{id}"), "MAIL")
}

/// A reminder sent once (`kind` `EXPIRING` or `EXPIRED`) about one card and one expiry.
pub fn card_reminder(kind: &str, card: &PaymentMethodId, year: u16, month: u8) -> Key {
    Key::new(format!("REMIND#{kind}#{card}#{year:04}-{month:02}"), "REMIND")
}

/// A merchant's webhook endpoint; its deliveries share its partition.
pub fn webhook_endpoint(id: &WebhookEndpointId) -> Key {
    Key::new(webhook_partition(id), "ENDPOINT")
}

pub fn webhook_partition(id: &WebhookEndpointId) -> String {
    format!("WHE#{id}")
}

pub const DELIVERY_PREFIX: &str = "DLV#";

/// One event's delivery to one endpoint. Event ids sort by time, so the endpoint's
/// partition lists its deliveries newest first in one query.
pub fn webhook_delivery(endpoint: &WebhookEndpointId, event: &EventId) -> Key {
    Key::new(webhook_partition(endpoint), format!("{DELIVERY_PREFIX}{event}"))
}

/// A customer's wallet in one currency; its ledger entries share its partition.
pub fn wallet(customer: &CustomerId, currency: &str) -> Key {
    Key::new(wallet_partition(customer, currency), "WALLET")
}

pub fn wallet_partition(customer: &CustomerId, currency: &str) -> String {
    format!("WAL#{customer}#{currency}")
}

pub const WALLET_ENTRY_PREFIX: &str = "ENTRY#";

/// Entry `number` of a wallet's ledger (zero-padded, so the sort key orders them).
pub fn wallet_entry(customer: &CustomerId, currency: &str, number: u64) -> Key {
    Key::new(wallet_partition(customer, currency), format!("{WALLET_ENTRY_PREFIX}{number:012}"))
}

/// GSI1 entry listing a customer's wallets (one per currency).
pub fn wallet_listing(customer: &CustomerId, currency: &str) -> IndexKey {
    IndexKey::new(format!("WALLETS#{customer}"), currency)
}

pub fn customer_wallets(customer: &CustomerId) -> String {
    format!("WALLETS#{customer}")
}

/// A payment-provider adapter's own records (the sandbox's tokens and charges, Stripe
/// customer ids) live in their own key space.
pub fn psp(kind: &str, id: &str) -> Key {
    Key::new(format!("PSP#{kind}#{id}"), kind.to_owned())
}

// GSI1: listings.

pub fn customer_invoices(customer: &CustomerId) -> String {
    format!("CUS#{customer}#INV")
}

pub fn customer_invoice_entry(customer: &CustomerId, created: Timestamp, id: &InvoiceId) -> IndexKey {
    IndexKey::new(customer_invoices(customer), format!("{}#{id}", sortable(created)))
}

pub const ALL_CUSTOMERS: &str = "CUSTOMERS";
pub const ALL_SUBSCRIPTIONS: &str = "SUBSCRIPTIONS";
pub const ALL_EMAILS: &str = "EMAILS";
pub const ALL_WEBHOOK_ENDPOINTS: &str = "WEBHOOK_ENDPOINTS";

pub fn listing_entry(partition: &str, created: Timestamp, id: &str) -> IndexKey {
    IndexKey::new(partition, format!("{}#{id}", sortable(created)))
}

// GSI2: schedules.

pub fn due_partition(shard: u32) -> String {
    format!("DUE#{shard}")
}

pub fn due_entry(id: &InvoiceId, at: Timestamp) -> IndexKey {
    IndexKey::new(due_partition(shard_of(id.as_str())), format!("{}#{id}", sortable(at)))
}

pub fn renewal_partition(shard: u32) -> String {
    format!("RENEW#{shard}")
}

pub fn renewal_entry(id: &SubscriptionId, at: Timestamp) -> IndexKey {
    IndexKey::new(renewal_partition(shard_of(id.as_str())), format!("{}#{id}", sortable(at)))
}

/// The cards that expire at the end of one month (`EXPIRES#2030-01`): the expiry
/// reminder's query.
pub fn expiry_partition(year: u16, month: u8) -> String {
    format!("EXPIRES#{year:04}-{month:02}")
}

pub fn expiry_entry(year: u16, month: u8, customer: &CustomerId, card: &PaymentMethodId) -> IndexKey {
    IndexKey::new(expiry_partition(year, month), format!("{customer}#{card}"))
}

pub fn outbox_partition(shard: u32) -> String {
    format!("OUTBOX#{shard}")
}

pub fn outbox_entry(id: &EventId, at: Timestamp) -> IndexKey {
    IndexKey::new(outbox_partition(shard_of(id.as_str())), format!("{}#{id}", sortable(at)))
}

/// The upper bound for "due at or before `now`" in a schedule partition.
pub fn due_bound(now: Timestamp) -> String {
    // '$' sorts after '#', so every "<now>#<id>" key is below it.
    format!("{}$", sortable(now))
}

// GSI3: attention lists.

pub fn outstanding_invoices(customer: &CustomerId) -> String {
    format!("OUT#{customer}")
}

pub const FAILING_SUBSCRIPTIONS: &str = "FAILING";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("in_abc"), shard_of("in_abc"));
        for i in 0..100 {
            assert!(shard_of(&format!("in_{i}")) < SCHEDULE_SHARDS);
        }
    }

    #[test]
    fn the_due_bound_includes_items_due_exactly_now_and_excludes_later_ones() {
        let now = crate::time::parse("2030-01-01T00:00:00Z");
        let id = InvoiceId::generate();
        let bound = due_bound(now);
        assert!(due_entry(&id, now).sk <= bound);
        assert!(due_entry(&id, now + chrono::TimeDelta::milliseconds(1)).sk > bound);
    }
}
