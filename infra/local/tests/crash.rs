//! The crash test of the local product: the real `recoup-local` binary under concurrent
//! load — customers created, cards registered (good, declining, recovering after a few
//! declines, answers lost as after a timeout), invoices issued and charged, daily
//! subscriptions renewing as the dev clock jumps, dunning retries on a seconds-long
//! schedule, merchants retrying by hand — is killed with SIGKILL at random moments, at
//! least [`KILLS`] times, and restarted on the same data directory while the clients go
//! on (they retry through connection errors with the same `Idempotency-Key`).
//!
//! After the last restart the product drains (its schedules tick and its queues deliver
//! until nothing is left to do), is stopped, and its store is opened and read whole. Then:
//! - no invoice has two successful transactions, no transaction is left pending;
//! - every transaction sent to the PSP has its sandbox charge (same key, same amount, same
//!   outcome) and every sandbox charge has its transaction;
//! - every state change has its event (created, paid, each failed attempt, errored,
//!   subscription created / renewed / errored), no event lacks its state change, and every
//!   event left the outbox;
//! - every queue is drained, no message ever went to a dead-letter queue, and every
//!   consumer saw what it had to (each email the notifier owes exists; each subscription
//!   reflects its invoices as the subscription updater would make it);
//! - an `Idempotency-Key` never made two invoices, subscriptions or customers, and every
//!   invoice a client was told about exists.
//!
//! `RECOUP_CRASH_SEED=<n>` replays a run's kill schedule and client choices (the seed is
//! printed); thread timing still varies. `RECOUP_CRASH_KILLS=0` runs the same load for
//! 30 s without a kill: the control, which must pass every check.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use recoup_local::jwt;
use recoup_shared::domain::events::EventPayload;
use recoup_shared::domain::invoice::TransactionStatus;
use recoup_shared::domain::{Invoice, InvoiceStatus, Subscription, SubscriptionStatus};
use recoup_shared::store::Item;
use recoup_shared::store::embedded::EmbeddedStore;
use recoup_shared::store::repo::{OutboxRecord, from_item};
use serde_json::{Value, json};
use support::Runner;

/// SIGKILLs under load.
const KILLS: usize = 50;
/// How long the product runs between a restart and the next kill (uniform, ms).
const UP_MS: (u64, u64) = (150, 1_100);
/// Concurrent customer clients.
const CLIENTS: usize = 4;
/// Dunning on a scale of seconds, so retries and reconciliations happen during the run.
const RETRY_SCHEDULE: &str = "1s,2s,3s,5s";
const RECONCILE_AFTER: &str = "2s";
/// The schedules (retries, renewals, outbox relay) tick every second.
const SERVE_ARGS: &[&str] = &["--tick-seconds", "1"];
/// Nothing happens for this long (longer than `RECONCILE_AFTER` plus a tick): drained.
const QUIET_FOR: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);

/// SplitMix64: a seeded generator, so a run's choices can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn env_list() -> Vec<(&'static str, &'static str)> {
    vec![("RECOUP_RETRY_SCHEDULE", RETRY_SCHEDULE), ("RECOUP_RECONCILE_AFTER", RECONCILE_AFTER), ("RUST_LOG", "info")]
}

fn token(claims: Value) -> String {
    let Value::Object(claims) = claims else { unreachable!() };
    jwt::mint(jwt::DEFAULT_SECRET, claims, chrono::Utc::now().timestamp(), 3600)
}

#[derive(Default)]
struct Stats {
    requests: AtomicUsize,
    connection_errors: AtomicUsize,
    key_in_progress: AtomicUsize,
    replayed: AtomicUsize,
    gave_up: AtomicUsize,
}

/// What the clients share: where the product listens now, and what they were told.
struct Load {
    base: RwLock<String>,
    http: reqwest::Client,
    merchant: String,
    stop: AtomicBool,
    stats: Stats,
    /// Answers a user would call a server fault (5xx other than 503).
    faults: Mutex<Vec<String>>,
    /// Invoices the API acknowledged (201 with an id): each must exist at the end.
    acknowledged_invoices: Mutex<Vec<String>>,
}

impl Load {
    /// Sends until the product answers. Connection errors (it is down, or was killed
    /// mid-request) and a key still held by a killed request are retried with the same
    /// request and the same key.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Option<(u16, Value)> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if Instant::now() > deadline {
                self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let base = self.base.read().unwrap_or_else(|e| e.into_inner()).clone();
            let mut req = self.http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(token);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b.to_string());
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotency-replayed");
            let Ok(text) = resp.text().await else {
                self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status == 409 && body["code"] == "idempotency_key_in_progress" {
                // The request that holds the key was killed; its lease runs out on the dev
                // clock, which the clock client moves on.
                self.stats.key_in_progress.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
            if status == 503 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if status >= 500 {
                self.faults.lock().unwrap().push(format!("{method} {path} -> {status} {body}"));
            }
            if replayed {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            }
            return Some((status, body));
        }
    }

    async fn dev(&self, path: &str, body: Option<Value>) -> Option<Value> {
        self.send("POST", path, "", body.as_ref(), None).await.map(|(_, b)| b)
    }
}

/// A card for a new customer: tokens with `_id<tag>` are distinct cards (own fingerprint,
/// own network ledger, own sandbox state).
fn card_for(rng: &mut Rng, tag: &str) -> String {
    match rng.below(20) {
        0..=5 => format!("pm_sandbox_visa_ok_id{tag}"),
        // One card many customers share: their claims contend on its ledger.
        6..=7 => "pm_card_visa".to_owned(),
        // Charged at the PSP, but the answer is lost: reconciled by idempotency key.
        8..=11 => format!("pm_sandbox_visa_timeout_id{tag}"),
        // Insufficient funds twice, then paid (by a retry, if one comes in time).
        12..=15 => format!("pm_sandbox_visa_51_recover2_id{tag}"),
        // Insufficient funds every time: dunned until the invoice errors.
        16..=18 => format!("pm_sandbox_mastercard_51_id{tag}"),
        // A hard decline (invalid card number): the card is invalidated, never retried.
        _ => format!("pm_sandbox_visa_14_id{tag}"),
    }
}

/// One customer client: a customer, a card, invoices or a subscription, sometimes a second
/// card (which pays what is outstanding) or a merchant's manual retry.
async fn client(load: Arc<Load>, w: usize, mut rng: Rng) {
    let merchant = load.merchant.clone();
    let mut i = 0;
    while !load.stop.load(Ordering::Relaxed) {
        i += 1;
        let tag = format!("w{w}c{i}");
        let body = json!({"email": format!("{tag}@example.com"), "name": tag});
        let Some((201, customer)) =
            load.send("POST", "/v1/customers", &merchant, Some(&body), Some(&format!("cus-{tag}"))).await
        else {
            continue;
        };
        let cus = customer["id"].as_str().unwrap_or_default().to_owned();
        let owner = token(json!({"role": "owner", "customer_id": cus, "sub": format!("owner-{tag}")}));
        let card = card_for(&mut rng, &tag);
        let pm = json!({"payment_method": card});
        let Some((201, _)) =
            load.send("POST", "/v1/payment-methods", &owner, Some(&pm), Some(&format!("pm-{tag}"))).await
        else {
            continue;
        };
        let mut invoices = Vec::new();
        if rng.below(10) < 6 {
            for j in 0..rng.between(1, 3) {
                let order = format!("inv-{tag}-{j}");
                let body = json!({"customer_id": cus, "amount": rng.between(100, 9_000), "currency": "usd", "description": format!("order {order}")});
                if let Some((201, inv)) = load.send("POST", "/v1/invoices", &merchant, Some(&body), Some(&order)).await
                    && let Some(id) = inv["id"].as_str()
                {
                    load.acknowledged_invoices.lock().unwrap().push(id.to_owned());
                    invoices.push(id.to_owned());
                }
            }
        } else {
            let key = format!("sub-{tag}");
            let body = json!({"customer_id": cus, "amount": rng.between(500, 5_000), "currency": "usd", "interval": "day", "description": format!("plan {key}")});
            if let Some((201, sub)) = load.send("POST", "/v1/subscriptions", &merchant, Some(&body), Some(&key)).await
                && let Some(id) = sub["first_payment"]["invoice_id"].as_str()
            {
                load.acknowledged_invoices.lock().unwrap().push(id.to_owned());
                invoices.push(id.to_owned());
            }
        }
        if rng.below(5) == 0 {
            // A new card pays every outstanding invoice at once.
            let pm = json!({"payment_method": format!("pm_sandbox_visa_ok_id{tag}x"), "set_default": true});
            load.send("POST", "/v1/payment-methods", &owner, Some(&pm), Some(&format!("pm2-{tag}"))).await;
        }
        if rng.below(4) == 0
            && let Some(id) = invoices.first()
        {
            // The merchant retries by hand, racing the dunning schedule (no key: a second
            // charge of an invoice is refused by the engine itself).
            load.send("POST", &format!("/v1/invoices/{id}/charge"), &merchant, Some(&json!({})), None).await;
        }
    }
}

/// Moves the dev clock on (renewing the daily subscriptions, letting retry slots pass and
/// idempotency leases of killed requests expire) or just ticks.
async fn clock(load: Arc<Load>, mut rng: Rng) {
    while !load.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.between(700, 2_000))).await;
        if rng.below(3) == 0 {
            load.dev("/v1/dev/tick", None).await;
        } else {
            load.dev("/v1/dev/clock/advance", Some(json!({"hours": rng.between(1, 6)}))).await;
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Ticks until nothing has happened for [`QUIET_FOR`]: no message delivered, nothing
/// enqueued, renewed or relayed, every queue idle.
async fn drain(load: &Load) -> Result<Duration, String> {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut last = Value::Null;
    while started.elapsed() < DRAIN_TIMEOUT {
        let tick = load.dev("/v1/dev/tick", None).await.unwrap_or_default();
        let queues = load.send("GET", "/v1/dev/queues", "", None, None).await.map(|(_, b)| b).unwrap_or_default();
        let runs = tick["schedules"].as_array().cloned().unwrap_or_default();
        let last_run = runs.last().cloned().unwrap_or_default();
        let idle =
            queues["data"].as_array().is_some_and(|qs| qs.iter().all(|q| q["ready"] == 0 && q["in_flight"] == 0));
        let quiet = tick["messages_delivered"] == 0
            && last_run["retry_scheduler"]["enqueued"] == 0
            && last_run["renewal_scheduler"]["renewed"] == 0
            && last_run["outbox_relay"]["published"] == 0
            && idle;
        if quiet {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET_FOR {
                return Ok(started.elapsed());
            }
        } else {
            quiet_since = None;
            last = json!({"tick": tick, "queues": queues});
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("not quiescent after {DRAIN_TIMEOUT:?}; the last busy tick: {last}"))
}

/// The invoice a sandbox charge was for, and what the store holds about it.
struct Charge {
    amount: i64,
    succeeded: bool,
    charge_id: Option<String>,
}

fn parse_charge(item: &Item) -> (String, Charge) {
    let b = item.body.json().expect("a stored body is JSON");
    let key = b["idempotency_key"].as_str().unwrap_or_default().to_owned();
    let succeeded = b["outcome"]["status"] == "succeeded";
    let charge_id = b["outcome"]["charge_id"].as_str().map(str::to_owned);
    (key, Charge { amount: b["amount"].as_i64().unwrap_or_default(), succeeded, charge_id })
}

/// Violations by the promise they break.
#[derive(Default)]
struct Report {
    violations: BTreeMap<&'static str, Vec<String>>,
}

impl Report {
    fn fail(&mut self, promise: &'static str, v: String) {
        self.violations.entry(promise).or_default().push(v);
    }

    fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// Each broken promise with its count and first examples.
    fn summary(&self) -> String {
        let mut out = String::new();
        for (promise, list) in &self.violations {
            out.push_str(&format!("\n{promise}: {} violation(s), e.g.\n", list.len()));
            for v in list.iter().take(4) {
                out.push_str(&format!("  - {v}\n"));
            }
        }
        out
    }

    fn all(&self) -> String {
        self.violations.iter().flat_map(|(p, l)| l.iter().map(move |v| format!("{p}: {v}\n"))).collect()
    }
}

/// Reads the whole store and checks every invariant; returns the counts it printed.
async fn check_store(data_dir: &Path, acknowledged: &[String], report: &mut Report) -> BTreeMap<&'static str, usize> {
    let store = EmbeddedStore::open(data_dir.join("recoup.redb")).expect("the store opens after the last kill");
    let items = store.all_items().await.expect("read every item");
    drop(store);

    let mut invoices: Vec<Invoice> = Vec::new();
    let mut subscriptions: Vec<Subscription> = Vec::new();
    let mut events: Vec<OutboxRecord> = Vec::new();
    let mut charges: HashMap<String, Charge> = HashMap::new();
    let mut emails: HashSet<String> = HashSet::new();
    let mut customers_by_email: HashMap<String, usize> = HashMap::new();
    for item in items {
        match item.entity.as_str() {
            "invoice" => invoices.push(from_item::<Invoice>(item).expect("an invoice").into_inner()),
            "subscription" => subscriptions.push(from_item::<Subscription>(item).expect("a subscription").into_inner()),
            "event" => events.push(from_item::<OutboxRecord>(item).expect("an outbox record").into_inner()),
            "sandbox_charge" => {
                let (key, charge) = parse_charge(&item);
                if charges.insert(key.clone(), charge).is_some() {
                    report.fail("a sandbox charge has its transaction", format!("two sandbox charges under key {key}"));
                }
            }
            "email" => {
                emails.insert(item.body.json().expect("JSON")["id"].as_str().unwrap_or_default().to_owned());
            }
            "customer" => {
                *customers_by_email
                    .entry(item.body.json().expect("JSON")["email"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    // Events by what they are about.
    let mut by_invoice: HashMap<String, Vec<&EventPayload>> = HashMap::new();
    let mut by_subscription: HashMap<String, Vec<&EventPayload>> = HashMap::new();
    for rec in &events {
        if rec.published_at.is_none() {
            report.fail(
                "every event leaves the outbox",
                format!("event {} ({}) never left the outbox", rec.event.id, rec.event.kind()),
            );
        }
        let p = &rec.event.payload;
        match p {
            EventPayload::SubscriptionCreated { subscription_id, .. }
            | EventPayload::SubscriptionRenewed { subscription_id, .. }
            | EventPayload::SubscriptionErrored { subscription_id, .. }
            | EventPayload::SubscriptionActivated { subscription_id, .. } => {
                by_subscription.entry(subscription_id.to_string()).or_default().push(p);
            }
            _ => {}
        }
        if let Some(id) = p.invoice_id()
            && !matches!(p, EventPayload::SubscriptionRenewed { .. } | EventPayload::SubscriptionErrored { .. })
        {
            by_invoice.entry(id.to_string()).or_default().push(p);
        }
        // The emails the notifier owes (the rule of `Services::notify`).
        let owed = match p {
            EventPayload::InvoicePaymentFailed { attempt_count, retry, .. } => *attempt_count == 1 || !retry.is_soft(),
            EventPayload::InvoiceErrored { .. } => true,
            _ => false,
        };
        if owed && !emails.contains(rec.event.id.as_str()) {
            report.fail(
                "every consumer gets its messages",
                format!(
                    "no email for {} {} ({:?}): the notifier never got the event",
                    rec.event.kind(),
                    rec.event.id,
                    p.invoice_id().map(ToString::to_string)
                ),
            );
        }
    }

    let ids: HashSet<String> = invoices.iter().map(|i| i.id.to_string()).collect();
    for id in acknowledged {
        if !ids.contains(id) {
            report.fail(
                "acknowledged writes survive",
                format!("invoice {id} was acknowledged to a client but is not in the store"),
            );
        }
    }

    let mut keys_seen: HashMap<String, String> = HashMap::new();
    let mut orders: HashMap<String, Vec<String>> = HashMap::new();
    let (mut transactions, mut succeeded_total) = (0, 0);
    for inv in &invoices {
        let id = inv.id.to_string();
        orders.entry(inv.description.clone()).or_default().push(id.clone());
        let txns = inv.transactions();
        transactions += txns.len();
        let succeeded = txns.iter().filter(|t| t.status == TransactionStatus::Succeeded).count();
        succeeded_total += succeeded;
        if succeeded > 1 {
            report.fail(
                "no invoice is charged twice",
                format!("invoice {id} has {succeeded} successful transactions: charged twice"),
            );
        }
        if (inv.status() == InvoiceStatus::Paid) != (succeeded == 1) {
            report.fail(
                "no invoice is charged twice",
                format!("invoice {id} is {} with {succeeded} successful transactions", inv.status().as_str()),
            );
        }
        let evs = by_invoice.get(&id).map(Vec::as_slice).unwrap_or_default();
        let count = |kind: &str| evs.iter().filter(|e| e.kind() == kind).count();
        if count("invoice.created") != 1 {
            report.fail(
                "every state change has its event",
                format!("invoice {id} has {} invoice.created events", count("invoice.created")),
            );
        }
        let paid_events = count("invoice.paid");
        if paid_events != usize::from(inv.status() == InvoiceStatus::Paid) {
            report.fail(
                "every state change has its event",
                format!("invoice {id} is {} with {paid_events} invoice.paid events", inv.status().as_str()),
            );
        }
        if inv.status() == InvoiceStatus::Error && count("invoice.errored") == 0 {
            report.fail(
                "every state change has its event",
                format!("invoice {id} is in error without an invoice.errored event"),
            );
        }
        let failed: HashSet<String> =
            txns.iter().filter(|t| t.status == TransactionStatus::Failed).map(|t| t.id.to_string()).collect();
        let reported: Vec<String> = evs
            .iter()
            .filter_map(|e| match e {
                EventPayload::InvoicePaymentFailed { transaction_id, .. } => Some(transaction_id.to_string()),
                _ => None,
            })
            .collect();
        if reported.len() != failed.len() || reported.iter().any(|t| !failed.contains(t)) {
            report.fail(
                "every state change has its event",
                format!(
                    "invoice {id}: failed transactions {failed:?} but invoice.payment_failed events for {reported:?}"
                ),
            );
        }
        for t in txns {
            if let Some(other) = keys_seen.insert(t.idempotency_key.clone(), id.clone()) {
                report.fail(
                    "a sandbox charge has its transaction",
                    format!("idempotency key {} used by invoices {other} and {id}", t.idempotency_key),
                );
            }
            match t.status {
                TransactionStatus::Pending => report.fail(
                    "no charge is left pending",
                    format!("invoice {id}: transaction {} still pending after the drain", t.id),
                ),
                _ if !t.sent_to_psp => {
                    if charges.contains_key(&t.idempotency_key) {
                        report.fail(
                            "a sandbox charge has its transaction",
                            format!("invoice {id}: transaction {} was never sent, yet the sandbox charged it", t.id),
                        );
                    }
                }
                status => match charges.get(&t.idempotency_key) {
                    None => report.fail(
                        "a transaction has its sandbox charge",
                        format!("invoice {id}: transaction {} ({status:?}) has no sandbox charge", t.id),
                    ),
                    Some(c) => {
                        if c.succeeded != (status == TransactionStatus::Succeeded) {
                            report.fail(
                                "a transaction has its sandbox charge",
                                format!(
                                    "invoice {id}: transaction {} is {status:?} but its sandbox charge {}",
                                    t.id,
                                    if c.succeeded { "succeeded" } else { "was declined" }
                                ),
                            );
                        }
                        if c.amount != inv.amount.amount() {
                            report.fail(
                                "a transaction has its sandbox charge",
                                format!("invoice {id}: charged {} for an amount of {}", c.amount, inv.amount.amount()),
                            );
                        }
                        if c.succeeded && c.charge_id != t.psp_charge_id {
                            report.fail(
                                "a transaction has its sandbox charge",
                                format!(
                                    "invoice {id}: transaction {} records charge {:?}, the sandbox {:?}",
                                    t.id, t.psp_charge_id, c.charge_id
                                ),
                            );
                        }
                    }
                },
            }
        }
    }
    for key in charges.keys() {
        if !keys_seen.contains_key(key) {
            report.fail("a sandbox charge has its transaction", format!("sandbox charge {key} has no transaction"));
        }
    }
    for (description, ids) in &orders {
        if description.starts_with("order ") && ids.len() > 1 {
            report.fail(
                "one Idempotency-Key, one resource",
                format!("one Idempotency-Key, {} invoices ({description}): {ids:?}", ids.len()),
            );
        }
    }
    for (email, n) in &customers_by_email {
        if *n > 1 {
            report.fail("one Idempotency-Key, one resource", format!("one Idempotency-Key, {n} customers ({email})"));
        }
    }

    let mut plans: HashMap<String, usize> = HashMap::new();
    let by_id: HashMap<String, &Invoice> = invoices.iter().map(|i| (i.id.to_string(), i)).collect();
    let now = chrono::Utc::now();
    for sub in &subscriptions {
        let id = sub.id.to_string();
        *plans.entry(sub.plan.description.clone()).or_default() += 1;
        let evs = by_subscription.get(&id).map(Vec::as_slice).unwrap_or_default();
        let count = |kind: &str| evs.iter().filter(|e| e.kind() == kind).count();
        if count("subscription.created") != 1 {
            report.fail(
                "every state change has its event",
                format!("subscription {id} has {} subscription.created events", count("subscription.created")),
            );
        }
        let payments = sub.payments().len();
        if count("subscription.renewed") != payments.saturating_sub(1) {
            report.fail(
                "every state change has its event",
                format!(
                    "subscription {id} has {payments} payments but {} subscription.renewed events",
                    count("subscription.renewed")
                ),
            );
        }
        if sub.status() == SubscriptionStatus::Errored && count("subscription.errored") == 0 {
            report.fail(
                "every state change has its event",
                format!("subscription {id} is errored without a subscription.errored event"),
            );
        }
        // What the subscription updater makes of each invoice, once more: nothing changes
        // unless it missed an invoice's last event.
        let mut again = sub.clone();
        for inv in invoices.iter().filter(|i| i.subscription_id() == Some(&sub.id)) {
            again.observe_invoice(inv, now);
            if again != *sub {
                report.fail("every consumer gets its messages", format!(
                    "subscription {id} ({}) does not reflect invoice {} ({}): the subscription updater missed its event",
                    sub.status().as_str(),
                    inv.id,
                    inv.status().as_str()
                ));
                break;
            }
        }
        for p in sub.payments() {
            if !by_id.contains_key(&p.invoice_id.to_string()) {
                report.fail(
                    "acknowledged writes survive",
                    format!("subscription {id} names invoice {} which does not exist", p.invoice_id),
                );
            }
        }
    }
    for (plan, n) in &plans {
        if *n > 1 {
            report
                .fail("one Idempotency-Key, one resource", format!("one Idempotency-Key, {n} subscriptions ({plan})"));
        }
    }

    BTreeMap::from([
        ("invoices", invoices.len()),
        ("paid invoices", invoices.iter().filter(|i| i.status() == InvoiceStatus::Paid).count()),
        ("invoices in error", invoices.iter().filter(|i| i.status() == InvoiceStatus::Error).count()),
        ("transactions", transactions),
        ("successful transactions", succeeded_total),
        ("sandbox charges", charges.len()),
        ("events", events.len()),
        ("emails", emails.len()),
        ("subscriptions", subscriptions.len()),
        ("customers", customers_by_email.len()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_product_keeps_every_promise_across_50_sigkills_under_load() {
    let started = Instant::now();
    let seed = std::env::var("RECOUP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
    eprintln!("crash test: seed {seed} (replay the schedule with RECOUP_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let data_dir: PathBuf = std::env::temp_dir().join(format!("recoup-crash-{}", support::uuid_like()));
    let env = env_list();
    let mut runner = Runner::serve(data_dir.clone(), SERVE_ARGS, &env).await;
    let load = Arc::new(Load {
        base: RwLock::new(runner.base.clone()),
        http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
        merchant: token(json!({"role": "merchant", "sub": "crash-test"})),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        faults: Mutex::new(Vec::new()),
        acknowledged_invoices: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        tasks.push(tokio::spawn(client(load.clone(), w, Rng(rng.next()))));
    }
    let clock_task = tokio::spawn(clock(load.clone(), Rng(rng.next())));

    let mut restarts = Duration::ZERO;
    // `RECOUP_CRASH_KILLS=0` runs the same load without kills: a control for the checks.
    let kills: usize = std::env::var("RECOUP_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(KILLS);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.between(UP_MS.0, UP_MS.1))).await;
        runner.stop().await; // SIGKILL, then reaped
        let t = Instant::now();
        runner = Runner::serve(data_dir.clone(), SERVE_ARGS, &env).await;
        restarts += t.elapsed();
        *load.base.write().unwrap() = runner.base.clone();
    }
    if kills == 0 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let loaded = started.elapsed();

    // The load stops; each client finishes what it was doing.
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("a client finishes its last request").unwrap();
    }
    clock_task.await.unwrap();
    // A day on: every retry slot and reconciliation time has passed, daily subscriptions
    // renew once more. Then tick until nothing is left to do.
    load.dev("/v1/dev/clock/advance", Some(json!({"days": 1}))).await;
    let drained = drain(&load).await;
    let queues = load.send("GET", "/v1/dev/queues", "", None, None).await.map(|(_, b)| b).unwrap_or_default();
    runner.stop().await;
    let log = data_dir.join("server.log");
    if let Err(e) = &drained {
        panic!("{e}\nthe end of {}:\n{}", log.display(), tail(&log, 40));
    }

    let mut report = Report::default();
    for q in queues["data"].as_array().cloned().unwrap_or_default() {
        if q["ready"] != 0 || q["in_flight"] != 0 || q["dead_letters"] != json!([]) {
            report.fail("every queue is drained", format!("queue not drained: {q}"));
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for line in log_text.lines() {
        if line.contains("dead-letter") || line.contains("panicked") {
            report.fail("no dead letters, no panics", format!("server log: {line}"));
        }
    }
    for f in load.faults.lock().unwrap().iter() {
        report.fail("no server faults", format!("server fault answered to a client: {f}"));
    }
    let acknowledged = load.acknowledged_invoices.lock().unwrap().clone();
    let counts = check_store(&data_dir, &acknowledged, &mut report).await;

    let s = &load.stats;
    eprintln!(
        "crash test: seed {seed}, {kills} kills in {:.1}s (restarts {:.1}s in all), drained in {:.1}s, {:.1}s in all",
        loaded.as_secs_f64(),
        restarts.as_secs_f64(),
        drained.as_ref().map_or(0.0, Duration::as_secs_f64),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "crash test: {} requests, {} connection errors retried, {} waits on a killed request's key, {} replayed, {} given up",
        s.requests.load(Ordering::Relaxed),
        s.connection_errors.load(Ordering::Relaxed),
        s.key_in_progress.load(Ordering::Relaxed),
        s.replayed.load(Ordering::Relaxed),
        s.gave_up.load(Ordering::Relaxed),
    );
    eprintln!("crash test: {}", counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
    assert!(counts["sandbox charges"] > 50, "too little load to prove anything: {counts:?}");
    if !report.is_empty() {
        let all = data_dir.join("violations.txt");
        std::fs::write(&all, report.all()).unwrap();
        panic!(
            "broken promises after {kills} SIGKILLs (seed {seed}; data in {}, every violation in {}):{}",
            data_dir.display(),
            all.display(),
            report.summary()
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
