//! Properties of the engine over random interleavings: two customers who share cards,
//! scheduled retries, manual and customer charges, new cards and default changes, races
//! between workers, duplicate and reordered event deliveries, renewals, pauses, resumes,
//! cancels and re-activations, voids, clock jumps. After every step:
//!
//! * no invoice is ever charged successfully twice, in Recoup or at the PSP;
//! * no reattempt breaks a card network's limit;
//! * no automatic attempt hits a card that hard-declined the invoice until that card is
//!   registered again, and no expired card is ever sent to the PSP;
//! * a card condemned by a never-retry decline is sent to the PSP again by no one, for any
//!   customer, until its expiry changes;
//! * no automatic attempt starts on a canceled subscription's invoice;
//! * every open invoice of an active subscription has a next attempt or a pending charge;
//! * every invoice and subscription is in a consistent state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::TimeDelta;
use proptest::prelude::*;
use recoup_shared::domain::card::Fingerprint;
use recoup_shared::domain::decline::{RetryClass, mastercard_retry_after};
use recoup_shared::domain::invoice::{AttemptOutcome, AttemptTrigger, CollectionMethod, TransactionStatus};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::policy::network_limits;
use recoup_shared::domain::subscription::Interval;
use recoup_shared::domain::{Invoice, InvoiceStatus, Subscription, SubscriptionStatus};
use recoup_shared::ids::{CustomerId, InvoiceId, PaymentMethodId, SubscriptionId};
use recoup_shared::services::charging::CardChoice;
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::services::subscriptions::NewSubscription;
use recoup_shared::testkit::{TestApp, embedded_store_in_memory};
use recoup_shared::time::Timestamp;

/// The engine over `store`, with the sandbox payment provider.
fn sandboxed(store: Arc<dyn recoup_shared::store::ItemStore>) -> TestApp {
    recoup_shared::testkit::test_app(store, |repo, clock| Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock)))
}

/// Cards the customers may register (both draw from the same list, so they share cards): soft declines (Visa, Mastercard with an advice
/// code, or without), a good card, hard declines, an unanswered charge, a card that expires
/// at the end of January (the clock starts mid-January).
const CARDS: [&str; 10] = [
    "pm_sandbox_visa_51",
    "pm_sandbox_mastercard_51_advice24",
    "pm_sandbox_mastercard_51",
    "pm_card_visa",
    "pm_sandbox_visa_04",
    "pm_sandbox_visa_timeout",
    "pm_sandbox_visa_51_idexpiring_exp0130",
    // Hard declines that leave the card itself valid: only the invoice's block stops them.
    "pm_sandbox_visa_59",
    "pm_card_authenticationRequired",
    // A pick-up card: condemned for everyone once declined.
    "pm_sandbox_visa_04_idshared",
];

/// The two customers.
const WHO: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Advance {
        hours: i64,
    },
    ProcessDue {
        invoice: usize,
    },
    ManualCharge {
        invoice: usize,
    },
    CustomerPay {
        invoice: usize,
    },
    RegisterCard {
        who: usize,
        card: usize,
        default: bool,
    },
    SetDefault {
        card: usize,
    },
    Issue {
        who: usize,
        amount: i64,
    },
    /// Redeliver an invoice's event to the subscription updater, in any order, any time.
    Deliver {
        invoice: usize,
    },
    /// A worker and the merchant charge the same invoice at the same moment.
    Race {
        invoice: usize,
    },
    /// The schedulers: renew what is due, then process every due invoice.
    Sweep,
    MarkPaid {
        invoice: usize,
    },
    Void {
        invoice: usize,
    },
    Pause {
        who: usize,
    },
    Resume {
        who: usize,
    },
    Cancel {
        who: usize,
    },
    Reactivate {
        who: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![(1i64..=3), (4i64..=80), (120i64..=480)].prop_map(|hours| Op::Advance { hours }),
        4 => (0usize..6).prop_map(|invoice| Op::ProcessDue { invoice }),
        6 => (0usize..6).prop_map(|invoice| Op::ManualCharge { invoice }),
        1 => (0usize..6).prop_map(|invoice| Op::CustomerPay { invoice }),
        2 => (0usize..WHO, 0usize..CARDS.len(), any::<bool>())
            .prop_map(|(who, card, default)| Op::RegisterCard { who, card, default }),
        2 => (0usize..CARDS.len()).prop_map(|card| Op::SetDefault { card }),
        1 => (0usize..WHO, 100i64..50_000).prop_map(|(who, amount)| Op::Issue { who, amount }),
        2 => (0usize..6).prop_map(|invoice| Op::Deliver { invoice }),
        2 => (0usize..6).prop_map(|invoice| Op::Race { invoice }),
        3 => Just(Op::Sweep),
        1 => (0usize..6).prop_map(|invoice| Op::MarkPaid { invoice }),
        1 => (0usize..6).prop_map(|invoice| Op::Void { invoice }),
        1 => (0usize..WHO).prop_map(|who| Op::Pause { who }),
        1 => (0usize..WHO).prop_map(|who| Op::Resume { who }),
        1 => (0usize..WHO).prop_map(|who| Op::Cancel { who }),
        1 => (0usize..WHO).prop_map(|who| Op::Reactivate { who }),
    ]
}

struct World {
    app: TestApp,
    customers: Vec<CustomerId>,
    /// One subscription per customer.
    subscriptions: Vec<SubscriptionId>,
    /// When each customer registered each card (by fingerprint).
    registrations: HashMap<(CustomerId, Fingerprint), Vec<Timestamp>>,
    cards: Vec<(CustomerId, PaymentMethodId)>,
}

impl World {
    /// Every invoice of both customers, in id order, read once.
    async fn all_invoices(&self) -> Vec<Invoice> {
        let mut out = Vec::new();
        for c in &self.customers {
            out.extend(self.app.services.list_invoices(c, 100, None).await.unwrap().items);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    async fn invoices(&self) -> Vec<InvoiceId> {
        self.all_invoices().await.into_iter().map(|i| i.id).collect()
    }

    async fn subscriptions(&self) -> Vec<Subscription> {
        let mut out = Vec::new();
        for id in &self.subscriptions {
            out.push(self.app.services.subscription(id).await.unwrap().into_inner());
        }
        out
    }

    async fn pick(&self, i: usize) -> Option<InvoiceId> {
        let ids = self.invoices().await;
        (!ids.is_empty()).then(|| ids[i % ids.len()].clone())
    }

    async fn register(&mut self, who: usize, token: &str, default: bool) {
        let customer = self.customers[who % WHO].clone();
        if let Ok(reg) = self.app.services.register_payment_method(&customer, token, default).await {
            let pm = reg.card.method;
            self.registrations.entry((customer.clone(), pm.fingerprint.clone())).or_default().push(pm.verified_at);
            if !self.cards.iter().any(|(_, id)| *id == pm.id) {
                self.cards.push((customer, pm.id));
            }
        }
    }

    async fn apply(&mut self, op: &Op) {
        let s = self.app.services.clone();
        match op {
            Op::Advance { hours } => self.app.clock.advance(TimeDelta::hours(*hours)),
            Op::ProcessDue { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.process_due(&id).await;
                }
            }
            Op::ManualCharge { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.charge_invoice(&id, CardChoice::Default, AttemptTrigger::Manual).await;
                }
            }
            Op::CustomerPay { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.charge_invoice(&id, CardChoice::Default, AttemptTrigger::Customer).await;
                }
            }
            Op::RegisterCard { who, card, default } => self.register(*who, CARDS[*card], *default).await,
            Op::Issue { who, amount } => {
                let _ = s
                    .issue_invoice(IssueInvoice {
                        customer_id: self.customers[who % WHO].clone(),
                        amount: Money::new(*amount, Currency::parse("USD").unwrap()).unwrap(),
                        description: String::new(),
                        collection_method: Some(CollectionMethod::ChargeAutomatically),
                    })
                    .await;
            }
            Op::SetDefault { card } => {
                if !self.cards.is_empty() {
                    let (customer, id) = self.cards[*card % self.cards.len()].clone();
                    let _ = s.set_default_payment_method(&customer, &id).await;
                }
            }
            Op::Deliver { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.follow_invoice(&id).await;
                }
            }
            Op::Race { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let a = s.clone();
                    let b = s.clone();
                    let (ia, ib) = (id.clone(), id);
                    let t1 = tokio::spawn(async move { a.process_due(&ia).await.map(|_| ()) });
                    let t2 = tokio::spawn(async move {
                        b.charge_invoice(&ib, CardChoice::Default, AttemptTrigger::Manual).await.map(|_| ())
                    });
                    let _ = t1.await;
                    let _ = t2.await;
                }
            }
            Op::Sweep => {
                let _ = s.renew_due(50).await;
                for id in s.repo.due_invoices(s.now(), 50).await.unwrap() {
                    let _ = s.process_due(&id).await;
                }
            }
            Op::MarkPaid { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.mark_invoice_paid(&id, Some("wire".into())).await;
                }
            }
            Op::Void { invoice } => {
                if let Some(id) = self.pick(*invoice).await {
                    let _ = s.void_invoice(&id).await;
                }
            }
            Op::Pause { who } => {
                let _ = s.pause_subscription(&self.subscriptions[who % WHO]).await;
            }
            Op::Resume { who } => {
                let _ = s.resume_subscription(&self.subscriptions[who % WHO]).await;
            }
            Op::Cancel { who } => {
                let _ = s.cancel_subscription(&self.subscriptions[who % WHO]).await;
            }
            Op::Reactivate { who } => {
                let _ = s.reactivate_subscription(&self.subscriptions[who % WHO]).await;
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        let s = &self.app.services;
        let mut fingerprints = BTreeMap::new();
        let invoices = self.all_invoices().await;
        for inv in &invoices {
            let id = &inv.id;
            check_invoice(inv)?;
            let mut psp_successes = 0;
            for t in inv.transactions() {
                if let Some(AttemptOutcome::Succeeded { .. }) = s.gateway.lookup(&t.idempotency_key).await.unwrap() {
                    psp_successes += 1;
                }
                fingerprints.insert(t.card.fingerprint.clone(), ());
            }
            if psp_successes > 1 {
                return Err(format!("invoice {id} was charged {psp_successes} times at the PSP"));
            }
            self.check_no_blocked_retries(inv)?;
            self.check_no_expired_card_sent(inv).await?;
        }
        Self::check_advice_delays(&invoices)?;
        let subscriptions = self.subscriptions().await;
        check_card_blocks(&invoices)?;
        check_schedule_keeps_every_open_invoice(&invoices, &subscriptions)?;
        check_no_automatic_attempt_after_cancel(&invoices, &subscriptions)?;
        for fp in fingerprints.keys() {
            if let Some(ledger) = s.repo.ledger(fp).await.unwrap() {
                for limit in network_limits(ledger.network) {
                    let times: Vec<Timestamp> = ledger.entries().iter().filter(|e| e.reattempt).map(|e| e.at).collect();
                    for t in &times {
                        let in_window = times.iter().filter(|u| **u <= *t && **u > *t - limit.window).count();
                        if in_window > limit.max_reattempts {
                            return Err(format!(
                                "{:?} broken: {in_window} reattempts in the window ending {t}",
                                limit.rule
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A Mastercard advice code 24-30 holds every reattempt of the card until its wait is
    /// over, across invoices.
    fn check_advice_delays(invoices: &[Invoice]) -> Result<(), String> {
        let all: Vec<_> = invoices.iter().flat_map(|i| i.transactions()).collect();
        for t in all.iter().filter(|t| t.sent_to_psp && t.reattempt) {
            for d in &all {
                let Some(wait) =
                    d.decline.as_ref().and_then(|x| x.advice_code.as_deref()).and_then(mastercard_retry_after)
                else {
                    continue;
                };
                let Some(declined_at) = d.settled_at else { continue };
                if d.card.fingerprint == t.card.fingerprint
                    && t.created_at > declined_at
                    && t.created_at < declined_at + wait
                {
                    return Err(format!(
                        "card {} reattempted {} after an advice to wait {wait}",
                        t.card.last4,
                        t.created_at - declined_at
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_no_blocked_retries(&self, inv: &Invoice) -> Result<(), String> {
        let txns = inv.transactions();
        for (i, t) in txns.iter().enumerate() {
            if t.trigger != AttemptTrigger::Retry || !t.sent_to_psp {
                continue;
            }
            for h in &txns[..i] {
                let blocking = h.card.fingerprint == t.card.fingerprint
                    && matches!(h.retry_class, Some(RetryClass::Hard { .. } | RetryClass::NeedsCustomer));
                if !blocking {
                    continue;
                }
                let reregistered = self
                    .registrations
                    .get(&(inv.customer_id.clone(), t.card.fingerprint.clone()))
                    .is_some_and(|times| times.iter().any(|r| *r >= h.created_at && *r <= t.created_at));
                if !reregistered {
                    return Err(format!("invoice {} retried card {} after a hard decline", inv.id, t.card.last4));
                }
            }
        }
        Ok(())
    }

    async fn check_no_expired_card_sent(&self, inv: &Invoice) -> Result<(), String> {
        for t in inv.transactions().iter().filter(|t| t.sent_to_psp) {
            if let Some(pm) =
                self.app.services.repo.payment_method(&inv.customer_id, &t.card.payment_method_id).await.unwrap()
                && pm.fingerprint == t.card.fingerprint
                && pm.verified_at <= t.created_at
                && pm.expiry.is_expired(t.created_at)
            {
                return Err(format!("invoice {} sent an expired card to the PSP", inv.id));
            }
        }
        Ok(())
    }

    /// After every event has been delivered, each subscription agrees with its invoices: an
    /// errored invoice the merchant did not re-activate past keeps it from being active.
    async fn check_subscriptions_settle(&self) -> Result<(), String> {
        let s = &self.app.services;
        for id in self.invoices().await {
            s.follow_invoice(&id).await.map_err(|e| e.to_string())?;
        }
        for sub in self.subscriptions().await {
            for p in sub.payments() {
                let errored = s.invoice(&p.invoice_id).await.unwrap().status() == InvoiceStatus::Error;
                if errored && !sub.is_forgiven(&p.invoice_id) && sub.status() == SubscriptionStatus::Active {
                    return Err(format!("payment {} is in error but the subscription is active", p.number));
                }
            }
        }
        Ok(())
    }
}

/// Invariant 7: after a never-retry decline, no one sends that card (same fingerprint and
/// expiry) to the PSP again.
fn check_card_blocks(invoices: &[Invoice]) -> Result<(), String> {
    let all: Vec<_> = invoices.iter().flat_map(|i| i.transactions().iter().map(move |t| (i, t))).collect();
    for (_, d) in &all {
        let Some(RetryClass::Hard { reason }) = d.retry_class else { continue };
        let Some(declined_at) = d.settled_at.filter(|_| reason.blocks_card() && d.sent_to_psp) else { continue };
        for (inv, t) in &all {
            if t.sent_to_psp
                && t.created_at > declined_at
                && t.card.fingerprint == d.card.fingerprint
                && t.card.expiry == d.card.expiry
            {
                return Err(format!(
                    "card {} was condemned ({reason:?}) at {declined_at} but sent again for invoice {} of {}",
                    t.card.last4, inv.id, inv.customer_id
                ));
            }
        }
    }
    Ok(())
}

/// Invariant 8: every open invoice of an active subscription has a next attempt or a
/// pending charge.
fn check_schedule_keeps_every_open_invoice(invoices: &[Invoice], subs: &[Subscription]) -> Result<(), String> {
    for sub in subs.iter().filter(|s| s.status() == SubscriptionStatus::Active) {
        for inv in invoices.iter().filter(|i| i.subscription_id() == Some(&sub.id)) {
            if inv.status() == InvoiceStatus::Open
                && inv.next_attempt_at().is_none()
                && inv.pending_transaction().is_none()
            {
                return Err(format!("open invoice {} of active subscription {} is off the schedule", inv.id, sub.id));
            }
        }
    }
    Ok(())
}

/// A canceled subscription's invoices are charged after the cancel only by a person.
fn check_no_automatic_attempt_after_cancel(invoices: &[Invoice], subs: &[Subscription]) -> Result<(), String> {
    for sub in subs {
        let Some(canceled_at) = sub.canceled_at() else { continue };
        for inv in invoices.iter().filter(|i| i.subscription_id() == Some(&sub.id)) {
            for t in inv.transactions() {
                let automatic = matches!(
                    t.trigger,
                    AttemptTrigger::Initial | AttemptTrigger::Retry | AttemptTrigger::NewPaymentMethod
                );
                if automatic && t.sent_to_psp && t.created_at > canceled_at {
                    return Err(format!(
                        "invoice {} charged ({:?}) after its subscription was canceled",
                        inv.id, t.trigger
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_invoice(inv: &Invoice) -> Result<(), String> {
    let ok = |cond: bool, what: &str| if cond { Ok(()) } else { Err(format!("invoice {}: {what}: {inv:#?}", inv.id)) };
    ok(inv.succeeded_transactions() <= 1, "more than one successful transaction")?;
    let pending = inv.transactions().iter().filter(|t| t.status == TransactionStatus::Pending).count();
    ok(pending <= 1, "more than one pending transaction")?;
    match inv.status() {
        InvoiceStatus::Paid => {
            ok(inv.paid_at().is_some(), "paid without a time")?;
            ok(pending == 0, "paid with an attempt pending")?;
            ok(inv.next_attempt_at().is_none(), "paid but still scheduled")?;
            ok(inv.succeeded_transactions() == 1 || inv.out_of_band_reference().is_some(), "paid without a payment")?;
        }
        InvoiceStatus::Error => {
            ok(inv.errored_at().is_some(), "errored without a time")?;
            ok(inv.succeeded_transactions() == 0, "errored after a success")?;
            ok(pending == 1 || inv.next_attempt_at().is_none(), "errored but scheduled")?;
        }
        InvoiceStatus::Open => ok(inv.succeeded_transactions() == 0, "open after a success")?,
        InvoiceStatus::Draft | InvoiceStatus::Void => {
            ok(inv.succeeded_transactions() == 0, "void or draft after a success")?
        }
    }
    ok(pending == 0 || inv.next_attempt_at().is_some(), "a pending attempt with no reconciliation planned")
}

async fn world(first_cards: [usize; WHO]) -> World {
    let app = sandboxed(embedded_store_in_memory());
    let s = app.services.clone();
    let mut w = World {
        app,
        customers: Vec::new(),
        subscriptions: Vec::new(),
        registrations: HashMap::new(),
        cards: Vec::new(),
    };
    let usd = |n| Money::new(n, Currency::parse("USD").unwrap()).unwrap();
    for (who, (email, card)) in ["ada@example.com", "bob@example.com"].into_iter().zip(first_cards).enumerate() {
        let customer = s.create_customer(email, None).await.unwrap().id;
        w.customers.push(customer.clone());
        w.register(who, CARDS[card], true).await;
        // A condemned card is refused at registration; the customer then starts with a good one.
        if s.list_payment_methods(&customer).await.unwrap().is_empty() {
            w.register(who, "pm_card_visa", true).await;
        }
        let (sub, _) = s
            .create_subscription(NewSubscription {
                customer_id: customer.clone(),
                amount: usd(1900),
                interval: Interval::Week,
                interval_count: 2,
                description: "Pro".into(),
            })
            .await
            .unwrap();
        w.subscriptions.push(sub.id);
        s.issue_invoice(IssueInvoice {
            customer_id: customer.clone(),
            amount: usd(500 + 11_500 * who as i64),
            description: String::new(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap();
    }
    w
}

/// One case: the two customers' first cards and the steps.
type Case = ([usize; WHO], Vec<Op>);

/// How many random interleavings run: `RECOUP_PROPERTY_CASES`, 10,000 unless set.
fn cases() -> u32 {
    match std::env::var("RECOUP_PROPERTY_CASES") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("RECOUP_PROPERTY_CASES={v:?} is not a count")),
        Err(_) => 10_000,
    }
}

/// Each case is a fresh engine on the embedded store (redb, on its in-memory backend so
/// ten thousand databases cost no disk), two customers, their first cards, and up to 69
/// steps; every invariant is checked after every step. The cases are split between two
/// runners on two threads (each replays the saved failures first); the count run is
/// printed.
#[test]
fn no_interleaving_double_charges_breaks_a_network_rule_or_leaves_an_invalid_state() {
    use std::sync::atomic::{AtomicU32, Ordering};

    use proptest::test_runner::{Config, TestError, TestRunner};

    const RUNNERS: u32 = 2;
    let total = cases();
    let ran = AtomicU32::new(0);
    let started = std::time::Instant::now();
    let run = |cases: u32| -> Result<(), TestError<Case>> {
        let config = Config { cases, max_shrink_iters: 200, source_file: Some(file!()), ..Config::default() };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let strategy = ([0usize..CARDS.len(), 0usize..CARDS.len()], prop::collection::vec(op(), 1..70));
        TestRunner::new(config).run(&strategy, |(first_cards, ops)| {
            ran.fetch_add(1, Ordering::Relaxed);
            let result: Result<(), String> = rt.block_on(async {
                let mut w = world(first_cards).await;
                w.check().await?;
                for (i, op) in ops.iter().enumerate() {
                    w.apply(op).await;
                    w.check().await.map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
                }
                w.check_subscriptions_settle().await?;
                Ok(())
            });
            prop_assert!(result.is_ok(), "{}", result.unwrap_err());
            Ok(())
        })
    };
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let shards: Vec<_> = (0..RUNNERS)
            .map(|k| total / RUNNERS + u32::from(k < total % RUNNERS))
            .map(|cases| scope.spawn(move || run(cases)))
            .collect();
        shards.into_iter().map(|s| s.join().expect("a property runner panicked")).collect()
    });
    println!(
        "property cases: {total} asked, {} run (saved failures replayed, shrinking included) in {:.1} s",
        ran.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    for outcome in outcomes {
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}
