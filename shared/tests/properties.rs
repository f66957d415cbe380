//! Properties of the engine over random interleavings: scheduled retries, manual and
//! customer charges, new cards and default changes, races between workers, duplicate and
//! reordered event deliveries, renewals, clock jumps. After every step:
//!
//! * no invoice is ever charged successfully twice, in Recoup or at the PSP;
//! * no reattempt breaks a card network's limit;
//! * no automatic attempt hits a card that hard-declined the invoice until that card is
//!   registered again, and no expired card is ever sent to the PSP;
//! * every invoice and subscription is in a consistent state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::TimeDelta;
use proptest::prelude::*;
use recoup_shared::card::Fingerprint;
use recoup_shared::decline::{RetryClass, mastercard_retry_after};
use recoup_shared::domain::invoice::{AttemptOutcome, AttemptTrigger, CollectionMethod, TransactionStatus};
use recoup_shared::domain::subscription::Interval;
use recoup_shared::domain::{Invoice, InvoiceStatus, SubscriptionStatus};
use recoup_shared::ids::{CustomerId, InvoiceId, PaymentMethodId, SubscriptionId};
use recoup_shared::money::{Currency, Money};
use recoup_shared::policy::network_limits;
use recoup_shared::services::charging::CardChoice;
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::services::subscriptions::NewSubscription;
use recoup_shared::testkit::{TestApp, embedded_store, test_app};
use recoup_shared::time::{Clock, Timestamp};

/// Cards the customer may register: soft declines (Visa, Mastercard with an advice
/// code, or without), a good card, hard declines, an unanswered charge, a card that expires
/// at the end of January (the clock starts mid-January).
const CARDS: [&str; 9] = [
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
];

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
        card: usize,
        default: bool,
    },
    SetDefault {
        card: usize,
    },
    Issue {
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![(1i64..=3), (4i64..=80), (120i64..=480)].prop_map(|hours| Op::Advance { hours }),
        4 => (0usize..6).prop_map(|invoice| Op::ProcessDue { invoice }),
        6 => (0usize..6).prop_map(|invoice| Op::ManualCharge { invoice }),
        1 => (0usize..6).prop_map(|invoice| Op::CustomerPay { invoice }),
        2 => (0usize..CARDS.len(), any::<bool>()).prop_map(|(card, default)| Op::RegisterCard { card, default }),
        2 => (0usize..CARDS.len()).prop_map(|card| Op::SetDefault { card }),
        1 => (100i64..50_000).prop_map(|amount| Op::Issue { amount }),
        2 => (0usize..6).prop_map(|invoice| Op::Deliver { invoice }),
        2 => (0usize..6).prop_map(|invoice| Op::Race { invoice }),
        3 => Just(Op::Sweep),
        1 => (0usize..6).prop_map(|invoice| Op::MarkPaid { invoice }),
    ]
}

struct World {
    app: TestApp,
    customer: CustomerId,
    subscription: SubscriptionId,
    /// When each card (by fingerprint) was last registered.
    registrations: HashMap<Fingerprint, Vec<Timestamp>>,
    cards: Vec<PaymentMethodId>,
}

impl World {
    async fn invoices(&self) -> Vec<InvoiceId> {
        let listing = self.app.services.list_invoices(&self.customer, 100, None).await.unwrap();
        let mut ids: Vec<InvoiceId> = listing.items.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    }

    async fn pick(&self, i: usize) -> Option<InvoiceId> {
        let ids = self.invoices().await;
        (!ids.is_empty()).then(|| ids[i % ids.len()].clone())
    }

    async fn register(&mut self, token: &str, default: bool) {
        if let Ok(reg) = self.app.services.register_payment_method(&self.customer, token, default).await {
            let pm = reg.card.method;
            self.registrations.entry(pm.fingerprint.clone()).or_default().push(pm.verified_at);
            if !self.cards.contains(&pm.id) {
                self.cards.push(pm.id);
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
            Op::RegisterCard { card, default } => self.register(CARDS[*card], *default).await,
            Op::Issue { amount } => {
                let _ = s
                    .issue_invoice(IssueInvoice {
                        customer_id: self.customer.clone(),
                        amount: Money::new(*amount, Currency::parse("USD").unwrap()).unwrap(),
                        description: String::new(),
                        collection_method: CollectionMethod::ChargeAutomatically,
                    })
                    .await;
            }
            Op::SetDefault { card } => {
                if !self.cards.is_empty() {
                    let id = self.cards[*card % self.cards.len()].clone();
                    let _ = s.set_default_payment_method(&self.customer, &id).await;
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
        }
    }

    async fn check(&self) -> Result<(), String> {
        let s = &self.app.services;
        let mut fingerprints = BTreeMap::new();
        for id in self.invoices().await {
            let inv = s.invoice(&id).await.unwrap().into_inner();
            check_invoice(&inv)?;
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
            self.check_no_blocked_retries(&inv)?;
            self.check_no_expired_card_sent(&inv).await?;
        }
        self.check_advice_delays().await?;
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
    async fn check_advice_delays(&self) -> Result<(), String> {
        let mut all = Vec::new();
        for id in self.invoices().await {
            all.extend(self.app.services.invoice(&id).await.unwrap().into_inner().transactions().to_vec());
        }
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
                    .get(&t.card.fingerprint)
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
                self.app.services.repo.payment_method(&self.customer, &t.card.payment_method_id).await.unwrap()
                && pm.fingerprint == t.card.fingerprint
                && pm.verified_at <= t.created_at
                && pm.expiry.is_expired(t.created_at)
            {
                return Err(format!("invoice {} sent an expired card to the PSP", inv.id));
            }
        }
        Ok(())
    }

    /// After every event has been delivered, the subscription agrees with its invoices.
    async fn check_subscription_settles(&self) -> Result<(), String> {
        let s = &self.app.services;
        for id in self.invoices().await {
            s.follow_invoice(&id).await.map_err(|e| e.to_string())?;
        }
        let sub = s.subscription(&self.subscription).await.unwrap();
        let mut any_error = false;
        for p in sub.payments() {
            any_error |= s.invoice(&p.invoice_id).await.unwrap().status() == InvoiceStatus::Error;
        }
        if any_error && sub.status() != SubscriptionStatus::Errored {
            return Err(format!("an invoice is in error but the subscription is {:?}", sub.status()));
        }
        Ok(())
    }
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

async fn world(first_card: usize) -> World {
    let app = test_app(embedded_store());
    let s = app.services.clone();
    let customer = s.create_customer("ada@example.com", None).await.unwrap().id;
    let mut w = World {
        app,
        customer: customer.clone(),
        subscription: SubscriptionId::generate(),
        registrations: HashMap::new(),
        cards: Vec::new(),
    };
    w.register(CARDS[first_card], true).await;
    let usd = |n| Money::new(n, Currency::parse("USD").unwrap()).unwrap();
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
    w.subscription = sub.id;
    for amount in [500, 12_000] {
        s.issue_invoice(IssueInvoice {
            customer_id: customer.clone(),
            amount: usd(amount),
            description: String::new(),
            collection_method: CollectionMethod::ChargeAutomatically,
        })
        .await
        .unwrap();
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, .. ProptestConfig::default() })]

    #[test]
    fn no_interleaving_double_charges_breaks_a_network_rule_or_leaves_an_invalid_state(
        first_card in 0usize..CARDS.len(),
        ops in prop::collection::vec(op(), 1..70),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let result: Result<(), String> = rt.block_on(async {
            let mut w = world(first_card).await;
            w.check().await?;
            for (i, op) in ops.iter().enumerate() {
                w.apply(op).await;
                w.check().await.map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
            }
            w.check_subscription_settles().await?;
            let _ = Arc::clone(&w.app.clock).now();
            Ok(())
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
