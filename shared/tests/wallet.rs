//! The wallet through the services, on both backends: refills charged by the charge
//! engine and credited once, debits that never overdraw, automatic refill and its back-off
//! on the dunning schedule. Time is a manual clock, the PSP is the sandbox.

use std::sync::Arc;

use recoup_shared::domain::InvoiceStatus;
use recoup_shared::domain::events::EventPayload;
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::wallet::{AutoRefill, EntryKind};
use recoup_shared::error::Code;
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome};
use recoup_shared::services::idempotency::RequestId;
use recoup_shared::services::wallet::Refill;
use recoup_shared::store::ItemStore;
use recoup_shared::testkit::TestApp;
use recoup_shared::time::Clock;

const MAX: i64 = 100_000;

fn sandboxed(store: Arc<dyn ItemStore>) -> TestApp {
    recoup_shared::testkit::test_app(store, |repo, clock| Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock)))
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}

fn usd_code() -> Currency {
    Currency::parse("USD").unwrap()
}

async fn customer_with_card(app: &TestApp, token: &str) -> CustomerId {
    let c = app.services.create_customer("ada@example.com", Some("Ada")).await.unwrap();
    app.services.register_payment_method(&c.id, token, true).await.unwrap();
    c.id
}

fn refill(customer: &CustomerId, amount: i64) -> Refill {
    Refill { customer_id: customer.clone(), amount: usd(amount), card: CardChoice::Default }
}

/// Runs the retry schedule for an invoice until it has no next attempt.
async fn run_schedule(app: &TestApp, invoice: &InvoiceId) {
    for _ in 0..50 {
        let inv = app.services.invoice(invoice).await.unwrap();
        let Some(at) = inv.next_attempt_at() else { break };
        app.clock.set(at.max(app.clock.now()));
        app.services.process_due(invoice).await.unwrap();
    }
}

pub async fn a_refill_is_charged_and_credited_once(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let done = s.refill_wallet(refill(&cus, 2500), MAX, None).await.unwrap();
    assert_eq!(done.charge.unwrap().unwrap().outcome, ChargeOutcome::Paid);
    assert_eq!(done.invoice.status(), InvoiceStatus::Paid);
    assert_eq!(done.wallet.balance(), 2500);
    assert!(done.wallet.refill_in_flight().is_none());
    // Charging the paid refill again changes nothing: it is credited once.
    let again = s
        .charge_invoice(&done.invoice.id, CardChoice::Default, recoup_shared::domain::invoice::AttemptTrigger::Manual)
        .await;
    assert_eq!(again.unwrap_err().code, Code::InvoiceAlreadyPaid);
    let entries = s.wallet_entries(&cus, usd_code(), 10, None).await.unwrap().items;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].number, entries[0].amount, entries[0].balance_after), (1, 2500, 2500));
    assert!(
        matches!(&entries[0].kind, EntryKind::Refill { invoice_id, automatic: false } if *invoice_id == done.invoice.id)
    );
    let kinds = app.published.kinds();
    assert!(kinds.contains(&"wallet.refilled"), "{kinds:?}");
}

pub async fn a_declined_refill_ends_owes_nothing_and_credits_nothing(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let done = s.refill_wallet(refill(&cus, 2500), MAX, None).await.unwrap();
    assert_eq!(done.charge.unwrap().unwrap().outcome, ChargeOutcome::Declined);
    assert_eq!(done.invoice.status(), InvoiceStatus::Void, "nothing is owed for a refill that did not happen");
    assert_eq!(done.wallet.balance(), 0);
    assert!(done.wallet.refill_in_flight().is_none(), "the refill ended");
    let failed = app.published.take().into_iter().find_map(|e| match e.payload {
        EventPayload::WalletRefillFailed { automatic, next_attempt_at, auto_refill_disabled, .. } => {
            Some((automatic, next_attempt_at, auto_refill_disabled))
        }
        _ => None,
    });
    assert_eq!(failed, Some((false, None, false)));
    // Another card, another try.
    let good = s.register_payment_method(&cus, "pm_card_mastercard", true).await.unwrap();
    assert!(good.recovery.is_empty(), "the voided refill is not outstanding");
    let done = s.refill_wallet(refill(&cus, 1000), MAX, None).await.unwrap();
    assert_eq!(done.wallet.balance(), 1000);
}

pub async fn refills_are_bounded_and_once_per_request(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_visa").await;
    assert_eq!(s.refill_wallet(refill(&cus, MAX + 1), MAX, None).await.err().unwrap().code, Code::InvalidAmount);
    let request = RequestId::new("refill-once");
    let first = s.refill_wallet(refill(&cus, 700), MAX, Some(&request)).await.unwrap();
    let second = s.refill_wallet(refill(&cus, 700), MAX, Some(&request)).await.unwrap();
    assert!(second.charge.is_none(), "a re-run charges nothing");
    assert_eq!(second.invoice.id, first.invoice.id);
    assert_eq!(s.wallet(&cus, usd_code()).await.unwrap().balance(), 700);
}

pub async fn racing_refills_charge_once_at_a_time(store: Arc<dyn ItemStore>) {
    let app = Arc::new(sandboxed(store));
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let app = app.clone();
        let cus = cus.clone();
        tasks.push(tokio::spawn(async move { app.services.refill_wallet(refill(&cus, 500), MAX, None).await }));
    }
    let mut paid = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(done) if done.invoice.status() == InvoiceStatus::Paid => paid += 1,
            Ok(done) => panic!(
                "a refill neither paid nor refused: invoice {:?}, charge {:?}",
                done.invoice.status(),
                done.charge.map(|c| c.map(|r| r.outcome))
            ),
            Err(e) => assert!(
                matches!(e.code, Code::RefillInProgress | Code::ConcurrentUpdate),
                "only a refill in progress refuses another: {e}"
            ),
        }
    }
    let wallet = app.services.wallet(&cus, usd_code()).await.unwrap();
    assert!(paid >= 1);
    assert_eq!(wallet.balance(), 500 * paid, "every paid refill credited once, no other");
    assert_eq!(wallet.entry_count(), paid as u64);
}

pub async fn a_debit_never_overdraws(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let e = s.debit_wallet(&cus, usd(1), "before any refill", None).await.err().unwrap();
    assert_eq!(e.code, Code::InsufficientBalance);
    s.refill_wallet(refill(&cus, 1000), MAX, None).await.unwrap();
    let d = s.debit_wallet(&cus, usd(400), "4,000 API calls", None).await.unwrap();
    assert_eq!((d.entry.amount, d.entry.balance_after, d.wallet.balance()), (-400, 600, 600));
    assert_eq!(s.debit_wallet(&cus, usd(601), "too much", None).await.err().unwrap().code, Code::InsufficientBalance);
    // Once per request.
    let request = RequestId::new("debit-once");
    let a = s.debit_wallet(&cus, usd(100), "once", Some(&request)).await.unwrap();
    let b = s.debit_wallet(&cus, usd(100), "once", Some(&request)).await.unwrap();
    assert_eq!(a.entry.number, b.entry.number);
    assert_eq!(s.wallet(&cus, usd_code()).await.unwrap().balance(), 500);
}

pub async fn a_debit_under_the_threshold_refills_automatically(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_visa").await;
    s.refill_wallet(refill(&cus, 1000), MAX, None).await.unwrap();
    let settings = AutoRefill { enabled: true, threshold: 500, amount: 2000, disabled_at: None };
    s.configure_auto_refill(&cus, usd_code(), settings, MAX).await.unwrap();
    app.published.take();
    let d = s.debit_wallet(&cus, usd(600), "usage", None).await.unwrap();
    let refill = d.refill.expect("an automatic refill started");
    assert_eq!(s.invoice(&refill.id).await.unwrap().status(), InvoiceStatus::Paid);
    let wallet = s.wallet(&cus, usd_code()).await.unwrap();
    assert_eq!(wallet.balance(), 400 + 2000);
    let kinds = app.published.kinds();
    assert!(kinds.contains(&"wallet.low_balance") && kinds.contains(&"wallet.refilled"), "{kinds:?}");
    let entries = s.wallet_entries(&cus, usd_code(), 10, None).await.unwrap().items;
    assert!(matches!(entries[0].kind, EntryKind::Refill { automatic: true, .. }));
}

pub async fn a_declining_automatic_refill_backs_off_then_turns_itself_off(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus = customer_with_card(&app, "pm_card_visa").await;
    s.refill_wallet(refill(&cus, 1000), MAX, None).await.unwrap();
    s.configure_auto_refill(
        &cus,
        usd_code(),
        AutoRefill { enabled: true, threshold: 500, amount: 2000, disabled_at: None },
        MAX,
    )
    .await
    .unwrap();
    // The card now declines every charge (a soft decline: retried on schedule).
    s.register_payment_method(&cus, "pm_sandbox_visa_51", true).await.unwrap();
    app.published.take();
    let refill = s.debit_wallet(&cus, usd(600), "usage", None).await.unwrap().refill.unwrap();
    let inv = s.invoice(&refill.id).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Open);
    assert!(inv.next_attempt_at().is_some(), "retried on the dunning schedule");
    // No second refill while this one is collected.
    let more = s.debit_wallet(&cus, usd(100), "usage", None).await.unwrap();
    assert!(more.refill.is_none());
    assert_eq!(more.wallet.refill_in_flight(), Some(&refill.id));

    run_schedule(&app, &refill.id).await;
    let inv = s.invoice(&refill.id).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Void, "the schedule ended; nothing is owed");
    assert!(inv.attempt_count() > 1);
    let wallet = s.wallet(&cus, usd_code()).await.unwrap();
    assert_eq!(wallet.balance(), 300, "never credited");
    assert!(wallet.refill_in_flight().is_none());
    let auto = wallet.auto_refill.unwrap();
    assert!(!auto.enabled && auto.disabled_at.is_some());
    let failed: Vec<(Option<_>, bool)> = app
        .published
        .take()
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::WalletRefillFailed { next_attempt_at, auto_refill_disabled, .. } => {
                Some((next_attempt_at, auto_refill_disabled))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len() as u32, inv.attempt_count());
    assert!(failed[..failed.len() - 1].iter().all(|(next, off)| next.is_some() && !off));
    assert_eq!(failed.last(), Some(&(None, true)));
    // Turned off: the next debit under the threshold starts nothing.
    assert!(s.debit_wallet(&cus, usd(100), "usage", None).await.unwrap().refill.is_none());
}

macro_rules! wallet_suite {
    ($make:expr) => {
        wallet_suite!(@tests $make;
            a_refill_is_charged_and_credited_once,
            a_declined_refill_ends_owes_nothing_and_credits_nothing,
            refills_are_bounded_and_once_per_request,
            racing_refills_charge_once_at_a_time,
            a_debit_never_overdraws,
            a_debit_under_the_threshold_refills_automatically,
            a_declining_automatic_refill_backs_off_then_turns_itself_off,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name($make.await).await;
            }
        )*
    };
}

mod embedded {
    wallet_suite!(async { recoup_shared::testkit::embedded_store() });
}

mod dynamodb {
    use std::sync::Arc;

    use recoup_shared::store::ItemStore;

    async fn store() -> Arc<dyn ItemStore> {
        let table = format!("wallet-{}", uuid::Uuid::new_v4().simple());
        Arc::new(recoup_shared::testkit::dynamo_store(&table).await)
    }

    wallet_suite!(store());
}
