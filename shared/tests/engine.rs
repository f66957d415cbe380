//! The charge engine and dunning, through the services, on both backends. Time is a manual
//! clock, the PSP is the sandbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::TimeDelta;
use recoup_shared::domain::InvoiceStatus;
use recoup_shared::domain::SubscriptionStatus;
use recoup_shared::domain::card::Funding;
use recoup_shared::domain::decline::ErrorType;
use recoup_shared::domain::invoice::AttemptOutcome;
use recoup_shared::domain::invoice::{AttemptTrigger, CollectionMethod, TransactionStatus};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::payment_method::VerifiedCard;
use recoup_shared::domain::subscription::{Interval, PaymentStatus, Subscription};
use recoup_shared::error::Error;
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{CardSetup, ChargeRequest, GatewayError, PaymentGateway};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome, ChargeReport, DueOutcome};
use recoup_shared::services::idempotency::RequestId;
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::services::subscriptions::NewSubscription;
use recoup_shared::store::{ItemStore, WriteOp};
use recoup_shared::testkit::{InterleavingStore, TestApp, puts};
use recoup_shared::time::Clock;

/// The engine over `store`, with the sandbox payment provider.
fn sandboxed(store: Arc<dyn recoup_shared::store::ItemStore>) -> TestApp {
    recoup_shared::testkit::test_app(store, |repo, clock| Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock)))
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}

async fn customer_with_card(app: &TestApp, token: &str) -> CustomerId {
    let c = app.services.create_customer("ada@example.com", Some("Ada")).await.unwrap();
    app.services.register_payment_method(&c.id, token, false).await.unwrap();
    c.id
}

async fn issue(app: &TestApp, customer: &CustomerId, amount: i64) -> recoup_shared::services::invoices::Issued {
    app.services
        .issue_invoice(IssueInvoice {
            customer_id: customer.clone(),
            amount: usd(amount),
            description: "Pro plan".into(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap()
}

/// A monthly 19.00 USD "Pro" subscription for the customer; payment 1 charged at once.
async fn monthly_pro_subscription(app: &TestApp, customer: &CustomerId) -> (Subscription, Result<ChargeReport, Error>) {
    app.services
        .create_subscription(NewSubscription {
            customer_id: customer.clone(),
            amount: usd(1900),
            interval: Interval::Month,
            interval_count: 1,
            description: "Pro".into(),
        })
        .await
        .unwrap()
}

/// Runs the due invoices at each scheduled time until nothing is scheduled.
async fn run_dunning(app: &TestApp, invoice: &InvoiceId) -> Vec<DueOutcome> {
    let mut outcomes = Vec::new();
    for _ in 0..50 {
        let inv = app.services.invoice(invoice).await.unwrap();
        let Some(at) = inv.next_attempt_at() else { break };
        app.clock.set(at.max(app.clock.now()));
        outcomes.push(app.services.process_due(invoice).await.unwrap());
    }
    outcomes
}

async fn succeeded_psp_charges(app: &TestApp, invoice: &InvoiceId) -> usize {
    let inv = app.services.invoice(invoice).await.unwrap();
    let mut n = 0;
    for t in inv.transactions() {
        if let Some(recoup_shared::domain::invoice::AttemptOutcome::Succeeded { .. }) =
            app.services.gateway.lookup(&t.idempotency_key).await.unwrap()
        {
            n += 1;
        }
    }
    n
}

pub async fn an_invoice_is_charged_at_once_to_the_default_card(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let issued = issue(&app, &cus, 2500).await;
    assert_eq!(issued.invoice.status(), InvoiceStatus::Paid);
    assert_eq!(issued.charge.unwrap().unwrap().outcome, ChargeOutcome::Paid);
    assert_eq!(app.published.kinds(), ["payment_method.attached", "invoice.created", "invoice.paid"]);
}

pub async fn a_decline_is_recorded_with_its_error_type_and_a_next_attempt(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let issued = issue(&app, &cus, 2500).await;
    let inv = issued.invoice;
    assert_eq!(inv.status(), InvoiceStatus::Open);
    let txn = &inv.transactions()[0];
    assert_eq!(txn.status, TransactionStatus::Failed);
    assert_eq!(txn.error_type(), Some(ErrorType::Declined));
    assert_eq!(inv.next_attempt_at(), Some(app.clock.now() + TimeDelta::days(1)));
    assert!(app.published.kinds().contains(&"invoice.payment_failed"));
}

/// Invariant 1: at most one successful charge per invoice, whatever races.
/// Registering a card pays the outstanding invoice; charges racing afterwards find it paid.
pub async fn charges_racing_a_paid_invoice_never_charge_it_again(store: Arc<dyn ItemStore>) {
    let app = Arc::new(sandboxed(store));
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    let inv = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(990),
            description: String::new(),
            collection_method: Some(CollectionMethod::SendInvoice),
        })
        .await
        .unwrap()
        .invoice;
    let reg = app.services.register_payment_method(&cus, "pm_card_visa", true).await.unwrap();
    assert_eq!(reg.recovery.len(), 1, "bank-transfer invoices are outstanding too");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        let id = inv.id.clone();
        tasks.push(tokio::spawn(async move {
            let trigger = if i % 2 == 0 { AttemptTrigger::Manual } else { AttemptTrigger::Customer };
            app.services.charge_invoice(&id, CardChoice::Default, trigger).await
        }));
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Paid);
    assert_eq!(stored.succeeded_transactions(), 1);
    assert_eq!(succeeded_psp_charges(&app, &inv.id).await, 1);
}

/// The same, with nothing charged before the race: many workers and manual charges start
/// together on an open invoice.
pub async fn racing_workers_and_merchants_never_double_charge(store: Arc<dyn ItemStore>) {
    let app = Arc::new(sandboxed(store));
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    let inv = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(990),
            description: String::new(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap()
        .invoice;
    assert_eq!(inv.status(), InvoiceStatus::Open, "no card yet");
    // Add the card without recovery racing us: write it through a second customer view.
    let card = app.services.gateway.verify("pm_card_visa", &cus).await.unwrap();
    let pm = recoup_shared::domain::PaymentMethod::new(cus.clone(), card, app.clock.now());
    let mut customer = app.services.customer(&cus).await.unwrap();
    customer.set_default_payment_method(Some(&pm));
    let mut tx = recoup_shared::store::repo::Tx::new();
    tx.save(&recoup_shared::store::repo::Versioned::new(pm)).unwrap();
    tx.save(&customer).unwrap();
    app.services.repo.commit(tx).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..10 {
        let app = app.clone();
        let id = inv.id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                app.services.process_due(&id).await.map(|_| ())
            } else {
                app.services.charge_invoice(&id, CardChoice::Default, AttemptTrigger::Manual).await.map(|_| ())
            }
        }));
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Paid);
    assert_eq!(stored.succeeded_transactions(), 1);
    assert_eq!(succeeded_psp_charges(&app, &inv.id).await, 1);
}

/// Invariant 3: an unanswered charge is never failed and never re-charged blindly.
pub async fn an_unanswered_charge_is_reconciled_by_its_idempotency_key(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_timeout").await;
    let issued = issue(&app, &cus, 1200).await;
    let inv = issued.invoice;
    assert_eq!(issued.charge.unwrap().unwrap().outcome, ChargeOutcome::Pending);
    assert_eq!(inv.status(), InvoiceStatus::Open);
    assert_eq!(inv.transactions()[0].status, TransactionStatus::Pending);
    // Before the reconcile time nothing happens; nobody else may charge meanwhile.
    assert_eq!(app.services.process_due(&inv.id).await.unwrap(), DueOutcome::NotDue);
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap_err();
    assert_eq!(err.code, "charge_in_progress");
    app.clock.advance(TimeDelta::minutes(11));
    let outcome = app.services.process_due(&inv.id).await.unwrap();
    assert_eq!(outcome, DueOutcome::Reconciled(Some(ChargeOutcome::Paid)));
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Paid);
    assert_eq!(stored.attempt_count(), 1, "the same attempt was settled, not a new one made");
    assert_eq!(succeeded_psp_charges(&app, &inv.id).await, 1);
}

/// Seed 002: retries as transactions, then error, then a new card pays it.
pub async fn soft_declines_are_retried_on_schedule_then_the_invoice_errors(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_51").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    let start = inv.created_at;
    let outcomes = run_dunning(&app, &inv.id).await;
    assert_eq!(outcomes.len(), 6);
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Error);
    assert_eq!(stored.attempt_count(), 7);
    let days: Vec<i64> = stored.transactions().iter().map(|t| (t.created_at - start).num_days()).collect();
    assert_eq!(days, [0, 1, 3, 5, 7, 10, 14]);
    assert!(stored.transactions().iter().all(|t| t.error_type() == Some(ErrorType::PaymentMethodDeclined)));
    let kinds = app.published.kinds();
    assert_eq!(kinds.iter().filter(|k| **k == "invoice.payment_failed").count(), 7);
    assert_eq!(kinds.last(), Some(&"invoice.errored"));

    // A new card charges what is outstanding at once.
    let reg = app.services.register_payment_method(&cus, "pm_card_mastercard", true).await.unwrap();
    assert_eq!(reg.recovery.len(), 1);
    assert_eq!(reg.recovery[0].outcome.as_ref().unwrap(), &ChargeOutcome::Paid);
    assert_eq!(app.services.invoice(&inv.id).await.unwrap().status(), InvoiceStatus::Paid);
}

pub async fn a_hard_decline_is_not_retried_on_the_same_card(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    // Suspected fraud (Visa 59): a hard decline of this payment, not of the card itself.
    let cus = customer_with_card(&app, "pm_sandbox_visa_59").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    let outcomes = run_dunning(&app, &inv.id).await;
    assert!(outcomes.iter().all(|o| matches!(o, DueOutcome::Skipped { .. })), "{outcomes:?}");
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.attempt_count(), 1, "only the first attempt reached the card");
    assert_eq!(stored.status(), InvoiceStatus::Error);
    // The merchant cannot force it on the same card either.
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap_err();
    assert_eq!(err.code, "payment_method_update_required");
    // Registering the same card again counts as updating it: it is tried at once.
    let reg = app.services.register_payment_method(&cus, "pm_sandbox_visa_59", false).await.unwrap();
    assert!(reg.replaced);
    assert_eq!(reg.recovery.len(), 1);
    assert_eq!(reg.recovery[0].outcome.as_ref().unwrap(), &ChargeOutcome::Declined);
}

/// A decline that condemns the card (pick-up) is not lifted by registering the same card
/// again: the issuer refuses its verification, and Recoup's block holds.
pub async fn a_condemned_card_registered_again_stays_blocked(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_04").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    assert_eq!(inv.attempt_count(), 1);
    let err = app.services.register_payment_method(&cus, "pm_sandbox_visa_04", false).await.unwrap_err();
    assert_eq!(err.code, "payment_method_verification_failed");
    let outcomes = run_dunning(&app, &inv.id).await;
    assert!(outcomes.iter().all(|o| matches!(o, DueOutcome::Skipped { .. })), "{outcomes:?}");
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!((stored.attempt_count(), stored.status()), (1, InvoiceStatus::Error));
}

/// The hosted card form's path: a setup bound to the customer, then the card registered
/// from it, with what the PSP says about the card (funding, issuing country).
pub async fn a_card_set_up_by_the_card_form_is_registered_only_by_its_customer(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let ada = app.services.create_customer("ada@example.com", None).await.unwrap();
    let eve = app.services.create_customer("eve@example.com", None).await.unwrap();
    let setup = app.services.begin_card_setup(&ada.id).await.unwrap();
    assert!(setup.client_secret.starts_with(&setup.id));
    let err = app.services.register_set_up_card(&eve.id, &setup.id, "pm_card_visa_debit", false).await.unwrap_err();
    assert_eq!(err.code, "invalid_setup_intent");
    let err =
        app.services.register_set_up_card(&ada.id, "seti_sbx_unknown", "pm_card_visa_debit", false).await.unwrap_err();
    assert_eq!(err.code, "invalid_setup_intent");
    assert!(app.services.list_payment_methods(&eve.id).await.unwrap().is_empty());
    let reg = app.services.register_set_up_card(&ada.id, &setup.id, "pm_card_visa_debit", false).await.unwrap();
    let card = &reg.card.method;
    assert_eq!(
        (card.last4.as_str(), card.funding, card.country.as_deref()),
        ("5556", Some(Funding::Debit), Some("US"))
    );
    assert!(reg.card.is_default);
    // A declined card is refused through the form as through the API.
    let err =
        app.services.register_set_up_card(&ada.id, &setup.id, "pm_card_visa_chargeDeclined", false).await.unwrap_err();
    assert_eq!(err.code, "payment_method_verification_failed");
}

pub async fn an_expired_default_card_is_never_sent_to_the_psp(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    // Expires at the end of February 2030; the clock starts mid-January.
    let cus = customer_with_card(&app, "pm_sandbox_visa_51_exp0230").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    app.clock.advance(TimeDelta::days(60));
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap();
    assert_eq!(err.outcome, ChargeOutcome::Declined);
    assert!(!err.transaction.sent_to_psp);
    assert_eq!(err.transaction.error_type(), Some(ErrorType::PaymentMethodExpired));
    assert!(app.services.gateway.lookup(&err.transaction.idempotency_key).await.unwrap().is_none());
}

pub async fn mastercard_advice_24_delays_the_next_try_by_an_hour(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_mastercard_51_advice24").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    app.clock.advance(TimeDelta::minutes(30));
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap_err();
    assert_eq!(err.code, "network_retry_limit");
    assert_eq!(err.details["rule"], "mastercard_advice_delay");
    app.clock.advance(TimeDelta::minutes(31));
    let report = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Declined);
    assert!(report.transaction.reattempt);
}

pub async fn visa_caps_reattempts_of_one_card_across_invoices(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_51").await;
    let mut invoices = Vec::new();
    for _ in 0..4 {
        invoices.push(issue(&app, &cus, 1000).await.invoice.id);
    }
    // Each invoice may be retried by hand; across them the card gets 15 reattempts a month.
    let mut reattempts = 0;
    let mut refused = None;
    'outer: for round in 0..10 {
        for id in &invoices {
            app.clock.advance(TimeDelta::minutes(5));
            match app.services.charge_invoice(id, CardChoice::Default, AttemptTrigger::Manual).await {
                Ok(r) => {
                    assert!(r.transaction.reattempt);
                    reattempts += 1;
                }
                Err(e) => {
                    refused = Some((round, e));
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(reattempts, 15);
    let (_, err) = refused.expect("the sixteenth reattempt is refused");
    assert_eq!(err.code, "network_retry_limit");
    assert_eq!(err.details["rule"], "visa_reattempts30_days");
}

pub async fn removal_rules_hold(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    let first = app.services.register_payment_method(&cus, "pm_card_visa", false).await.unwrap().card;
    assert!(first.is_default, "the first card becomes the default");
    let second = app.services.register_payment_method(&cus, "pm_card_mastercard", false).await.unwrap().card;
    assert!(!second.is_default);
    let err = app.services.remove_payment_method(&cus, &first.method.id).await.unwrap_err();
    assert_eq!(err.code, "default_payment_method");
    let (_sub, _first_charge) = monthly_pro_subscription(&app, &cus).await;
    app.services.remove_payment_method(&cus, &second.method.id).await.unwrap();
    let err = app.services.remove_payment_method(&cus, &first.method.id).await.unwrap_err();
    assert_eq!(err.code, "last_payment_method_with_active_subscription");
}

pub async fn a_card_with_a_pending_charge_cannot_be_removed(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    app.services.register_payment_method(&cus, "pm_card_visa", false).await.unwrap();
    let slow = app.services.register_payment_method(&cus, "pm_sandbox_visa_timeout", false).await.unwrap().card;
    let inv = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(500),
            description: String::new(),
            collection_method: Some(CollectionMethod::SendInvoice),
        })
        .await
        .unwrap()
        .invoice;
    let report = app
        .services
        .charge_invoice(&inv.id, CardChoice::Specific(slow.method.id.clone()), AttemptTrigger::Customer)
        .await
        .unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Pending);
    let err = app.services.remove_payment_method(&cus, &slow.method.id).await.unwrap_err();
    assert_eq!(err.code, "pending_transactions");
    app.clock.advance(TimeDelta::minutes(11));
    app.services.process_due(&inv.id).await.unwrap();
    app.services.remove_payment_method(&cus, &slow.method.id).await.unwrap();
}

/// Seed 002 for subscriptions: errored after the last attempt, active again when the
/// errored invoice is paid inside the period.
pub async fn a_subscription_errors_with_its_invoice_and_comes_back_when_paid(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_51").await;
    let (sub, first) = monthly_pro_subscription(&app, &cus).await;
    let inv = first.unwrap().invoice;
    run_dunning(&app, &inv.id).await;
    app.services.follow_invoice(&inv.id).await.unwrap();
    let stored = app.services.subscription(&sub.id).await.unwrap();
    assert_eq!(stored.status(), SubscriptionStatus::Errored);
    assert_eq!(stored.failed_payment_count(), 1);
    let failing = app.services.list_subscriptions(true, 10, None).await.unwrap();
    assert_eq!(failing.items.iter().map(|s| &s.id).collect::<Vec<_>>(), [&sub.id]);
    // Not renewed while errored.
    app.clock.advance(TimeDelta::days(20));
    assert!(app.services.renew_due(10).await.unwrap().is_empty());
    let payments = app.services.subscription_payments(&stored).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Declined);

    // Still inside the period (day 14 + 20 > 31? the period is Jan 15 - Feb 15): pay now.
    app.clock.set(inv.created_at + TimeDelta::days(25));
    let reg = app.services.register_payment_method(&cus, "pm_card_visa", true).await.unwrap();
    assert_eq!(reg.recovery[0].outcome.as_ref().unwrap(), &ChargeOutcome::Paid);
    let emitted = app.services.follow_invoice(&inv.id).await.unwrap();
    assert_eq!(emitted, ["subscription.activated"]);
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Active);
    // A duplicate delivery changes nothing.
    assert!(app.services.follow_invoice(&inv.id).await.unwrap().is_empty());
    // Renewal at the period's end.
    app.clock.set(inv.subscription.as_ref().unwrap().period_end);
    assert_eq!(app.services.renew_due(10).await.unwrap().len(), 1);
}

/// Seed 003: process payment N refuses approved and waiting payments, and failed ones
/// until the card changes.
pub async fn process_payment_n_follows_the_recurring_api_rules(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_54").await;
    let (sub, _) = monthly_pro_subscription(&app, &cus).await;
    let payments =
        app.services.subscription_payments(&app.services.subscription(&sub.id).await.unwrap()).await.unwrap();
    assert_eq!(payments[0].status, PaymentStatus::Failed, "expired card: a hard decline");
    assert_eq!(payments[1].status, PaymentStatus::Waiting);
    assert_eq!(payments[1].date_processed, None);
    let err = app.services.process_payment(&sub.id, 1).await.unwrap_err();
    assert_eq!(err.code, "payment_method_update_required");
    let err = app.services.process_payment(&sub.id, 2).await.unwrap_err();
    assert_eq!(err.code, "payment_waiting", "payment 2 is queued for the next period");
    let err = app.services.process_payment(&sub.id, 3).await.unwrap_err();
    assert_eq!(err.code, "not_found");
    // A new default card: now it may be processed, and it is approved. (Registering it
    // would charge the payment at once, so the card is saved directly.)
    let card = recoup_shared::domain::PaymentMethod::new(
        cus.clone(),
        app.services.gateway.verify("pm_card_visa", &cus).await.unwrap(),
        app.clock.now(),
    );
    let mut tx = recoup_shared::store::repo::Tx::new();
    tx.save(&recoup_shared::store::repo::Versioned::new(card.clone())).unwrap();
    app.services.repo.commit(tx).await.unwrap();
    app.services.set_default_payment_method(&cus, &card.id).await.unwrap();
    let report = app.services.process_payment(&sub.id, 1).await.unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Paid);
    let err = app.services.process_payment(&sub.id, 1).await.unwrap_err();
    assert_eq!(err.code, "payment_already_approved");
}

/// No card at all: nothing is sent, and the invoice errors when the schedule runs out.
pub async fn an_invoice_without_a_card_errors_when_the_schedule_runs_out(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    let inv = issue(&app, &cus, 4900).await.invoice;
    assert_eq!(inv.status(), InvoiceStatus::Open);
    let outcomes = run_dunning(&app, &inv.id).await;
    assert!(!outcomes.is_empty());
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Error);
    assert_eq!(stored.attempt_count(), 0);
    assert_eq!(stored.errored_at(), Some(inv.created_at + TimeDelta::days(14)));
}

/// Authentication required: the merchant cannot force it, the customer can pay on-session.
pub async fn an_authentication_decline_waits_for_the_customer(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_1a").await;
    let inv = issue(&app, &cus, 4900).await.invoice;
    assert_eq!(inv.transactions()[0].error_type(), Some(ErrorType::AuthenticationRequired));
    let outcomes = run_dunning(&app, &inv.id).await;
    assert!(outcomes.iter().all(|o| matches!(o, DueOutcome::Skipped { .. })), "no automatic retries: {outcomes:?}");
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.unwrap_err();
    assert_eq!(err.code, "customer_authentication_required");
    let paid = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Customer).await.unwrap();
    assert_eq!(paid.outcome, ChargeOutcome::Paid);
}

/// A bank-transfer invoice paid by card on request is not put on the dunning schedule.
pub async fn a_bank_transfer_invoice_is_never_dunned(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap().id;
    let inv = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(90_000),
            description: String::new(),
            collection_method: Some(CollectionMethod::SendInvoice),
        })
        .await
        .unwrap()
        .invoice;
    assert_eq!(inv.next_attempt_at(), None);
    let reg = app.services.register_payment_method(&cus, "pm_card_chargeCustomerFail", false).await.unwrap();
    assert_eq!(reg.recovery[0].outcome.as_ref().unwrap(), &ChargeOutcome::Declined);
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.status(), InvoiceStatus::Open);
    assert_eq!(stored.next_attempt_at(), None, "no automatic retries for bank transfers");
}

/// The engine's store with a hand on it: another actor's work, or a failure, at an exact
/// point of a use case.
fn interleaved(store: Arc<dyn ItemStore>) -> (TestApp, Arc<InterleavingStore>) {
    let store = InterleavingStore::new(store);
    (sandboxed(store.clone()), store)
}

/// A subscription whose payment 1 (card `token`) has been dunned until the invoice errored;
/// the updater has not run yet.
async fn errored_first_payment(app: &TestApp, token: &str) -> (CustomerId, Subscription, InvoiceId) {
    let cus = customer_with_card(app, token).await;
    let (sub, first) = monthly_pro_subscription(app, &cus).await;
    let inv = first.unwrap().invoice.id;
    run_dunning(app, &inv).await;
    assert_eq!(app.services.invoice(&inv).await.unwrap().status(), InvoiceStatus::Error);
    (cus, sub, inv)
}

/// A monthly subscription whose payment 1 was declined, paused, with the clock at the
/// payment's next attempt.
async fn paused_with_a_declined_payment_due(app: &TestApp) -> (Subscription, recoup_shared::domain::Invoice) {
    let cus = customer_with_card(app, "pm_sandbox_visa_51").await;
    let (sub, first) = monthly_pro_subscription(app, &cus).await;
    let inv = first.unwrap().invoice;
    app.services.pause_subscription(&sub.id).await.unwrap();
    app.clock.set(inv.next_attempt_at().unwrap());
    (sub, inv)
}

/// Review bug 1: an updater that read an invoice while it was `error` must not apply that
/// stale view after the invoice was paid.
pub async fn a_stale_updater_cannot_error_a_subscription_whose_invoice_was_paid(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let (_, sub, inv) = errored_first_payment(&app, "pm_sandbox_visa_51").await;
    // Updater U1 has read the errored invoice and is about to commit; meanwhile the merchant
    // reconciles a bank transfer for it and updater U2 runs on the new state.
    let s = app.services.clone();
    let paid = inv.clone();
    store.before_write(puts("subscription"), async move {
        s.mark_invoice_paid(&paid, Some("wire-42".into())).await.unwrap();
        s.follow_invoice(&paid).await.unwrap();
    });
    app.services.follow_invoice(&inv).await.unwrap();
    assert!(store.fired());
    let stored = app.services.subscription(&sub.id).await.unwrap();
    assert_eq!(app.services.invoice(&inv).await.unwrap().status(), InvoiceStatus::Paid);
    assert_eq!(stored.status(), SubscriptionStatus::Active, "the stale error was applied");
    assert_eq!(stored.failed_payment_count(), 0);
    // A late delivery of the old event changes nothing either.
    assert!(app.services.follow_invoice(&inv).await.unwrap().is_empty());
}

/// A write that puts an invoice whose latest attempt has this status: `pending` is a
/// claim, `succeeded` a settle.
fn puts_invoice_with_attempt(status: &'static str) -> impl Fn(&[WriteOp]) -> bool + Send + Sync + 'static {
    move |ops| {
        ops.iter().any(|op| match op {
            WriteOp::Put { item, .. } if item.entity == "invoice" => item.body.json().is_ok_and(|b| {
                b["transactions"].as_array().and_then(|t| t.last()).is_some_and(|t| t["status"] == status)
            }),
            _ => false,
        })
    }
}

/// DynamoDB cancels a transaction that meets another on one of its items
/// (`TransactionConflict`; on a wallet, racing refills do it). Nothing was written, so the
/// claim and the settle each read and decide again: the charge is answered paid, once,
/// instead of failing (after the PSP took the money, for the settle).
pub async fn a_claim_or_settle_canceled_by_a_collision_is_tried_again(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    for status in ["pending", "succeeded"] {
        store.collide_write(puts_invoice_with_attempt(status));
        let issued = issue(&app, &cus, 2500).await;
        assert!(store.fired(), "the {status} write collided");
        let report = issued.charge.expect("charged at once").expect("a collision is not the caller's answer");
        assert_eq!(report.outcome, ChargeOutcome::Paid, "{status}");
        let stored = app.services.invoice(&issued.invoice.id).await.unwrap();
        assert_eq!(stored.status(), InvoiceStatus::Paid, "{status}");
        assert_eq!(stored.attempt_count(), 1, "one attempt, whatever collided ({status})");
        assert_eq!(stored.succeeded_transactions(), 1);
    }
}

/// Review bug 2: a worker parking an invoice of a paused subscription while the merchant
/// resumes it must not leave the invoice off the schedule.
pub async fn parking_cannot_lose_an_invoice_to_a_concurrent_resume(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let (sub, inv) = paused_with_a_declined_payment_due(&app).await;
    let s = app.services.clone();
    let sid = sub.id.clone();
    store.before_write(puts("invoice"), async move {
        s.resume_subscription(&sid).await.unwrap();
    });
    app.services.process_due(&inv.id).await.unwrap();
    assert!(store.fired());
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Active);
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert!(
        stored.next_attempt_at().is_some() || stored.pending_transaction().is_some(),
        "an open invoice of an active subscription has no next attempt"
    );
}

/// Review bug 2, second half: a resume whose write fails changes nothing, and retrying it
/// puts the parked invoices back on the schedule.
pub async fn a_failed_resume_can_be_retried_and_unparks(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let (sub, inv) = paused_with_a_declined_payment_due(&app).await;
    assert_eq!(app.services.process_due(&inv.id).await.unwrap(), DueOutcome::Parked);
    store.fail_write(puts("invoice"));
    assert!(app.services.resume_subscription(&sub.id).await.is_err());
    assert!(store.fired());
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Paused);
    app.services.resume_subscription(&sub.id).await.unwrap();
    assert_eq!(app.services.invoice(&inv.id).await.unwrap().next_attempt_at(), Some(app.clock.now()));
}

/// Review bug 3: a canceled subscription's invoice is not collected when a card is
/// registered, nor by the schedule; the merchant may void it.
pub async fn a_canceled_subscriptions_invoice_is_not_collected_automatically(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_51_idcan").await;
    let (sub, first) = monthly_pro_subscription(&app, &cus).await;
    let inv = first.unwrap().invoice;
    app.services.cancel_subscription(&sub.id).await.unwrap();
    app.clock.advance(TimeDelta::days(1));
    let reg = app.services.register_payment_method(&cus, "pm_card_mastercard", true).await.unwrap();
    assert!(reg.recovery.is_empty(), "recovered a canceled subscription's invoice: {:?}", reg.recovery);
    assert_eq!(app.services.process_due(&inv.id).await.unwrap(), DueOutcome::Parked);
    let stored = app.services.invoice(&inv.id).await.unwrap();
    assert_eq!((stored.status(), stored.attempt_count()), (InvoiceStatus::Open, 1));
    let err = app.services.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Retry).await.unwrap_err();
    assert_eq!(err.code, "subscription_canceled");
    assert_eq!(app.services.void_invoice(&inv.id).await.unwrap().status(), InvoiceStatus::Void);
}

/// The rule's other side: the merchant may still charge such an invoice by hand, and an
/// attempt already under way at the cancel is reconciled to its end by its key.
pub async fn a_canceled_subscriptions_invoice_is_charged_only_deliberately(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_timeout_idcan").await;
    let (sub, first) = monthly_pro_subscription(&app, &cus).await;
    let first = first.unwrap();
    assert_eq!(first.outcome, ChargeOutcome::Pending);
    app.services.cancel_subscription(&sub.id).await.unwrap();
    app.clock.set(first.invoice.next_attempt_at().unwrap());
    let outcome = app.services.process_due(&first.invoice.id).await.unwrap();
    assert_eq!(outcome, DueOutcome::Reconciled(Some(ChargeOutcome::Paid)));
    assert_eq!(succeeded_psp_charges(&app, &first.invoice.id).await, 1);

    let other = app.services.create_customer("bob@example.com", None).await.unwrap().id;
    app.services.register_payment_method(&other, "pm_sandbox_visa_51_idbob", false).await.unwrap();
    let (sub, first) = monthly_pro_subscription(&app, &other).await;
    let inv = first.unwrap().invoice.id;
    app.services.cancel_subscription(&sub.id).await.unwrap();
    app.services.register_payment_method(&other, "pm_card_visa", true).await.unwrap();
    let report = app.services.charge_invoice(&inv, CardChoice::Default, AttemptTrigger::Manual).await.unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Paid);
}

/// Review bug 4: a payment that errored while the subscription was paused still stands
/// when it is resumed.
pub async fn resuming_past_a_payment_that_errored_while_paused_lands_in_errored(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_sandbox_visa_51").await;
    let (sub, first) = monthly_pro_subscription(&app, &cus).await;
    let inv = first.unwrap().invoice.id;
    app.services.pause_subscription(&sub.id).await.unwrap();
    app.clock.advance(TimeDelta::days(15));
    let report = app.services.charge_invoice(&inv, CardChoice::Default, AttemptTrigger::Manual).await.unwrap();
    assert_eq!(report.invoice.status(), InvoiceStatus::Error);
    app.services.follow_invoice(&inv).await.unwrap();
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Paused);
    let resumed = app.services.resume_subscription(&sub.id).await.unwrap();
    assert_eq!(resumed.status(), SubscriptionStatus::Errored);
    assert_eq!(resumed.failed_payment_count(), 1);
    assert_eq!(app.published.kinds().last(), Some(&"subscription.errored"));
}

/// Review bug 5: a pick-up decline blocks the card for every customer who saved it, until
/// the provider reports a changed card.
pub async fn a_never_retry_decline_blocks_the_card_for_every_customer(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let a = customer_with_card(&app, "pm_sandbox_visa_04_idshared").await;
    let b = customer_with_card(&app, "pm_sandbox_visa_04_idshared").await;
    let declined = issue(&app, &a, 2500).await.invoice;
    let t = &declined.transactions()[0];
    assert_eq!((t.status, t.sent_to_psp), (TransactionStatus::Failed, true));

    let issued = issue(&app, &b, 1500).await;
    let err = issued.charge.unwrap().unwrap_err();
    assert_eq!(err.code, "payment_method_update_required");
    assert_eq!(issued.invoice.attempt_count(), 0, "the blocked card was sent to the PSP for another customer");
    // Not by the schedule either: the invoice waits for another card.
    let outcomes = run_dunning(&app, &issued.invoice.id).await;
    assert!(outcomes.iter().all(|o| !matches!(o, DueOutcome::Charged(_))), "{outcomes:?}");
    assert_eq!(app.services.invoice(&issued.invoice.id).await.unwrap().attempt_count(), 0);

    // Registering the same card again does not lift the block: the issuer refuses it.
    let err = app.services.register_payment_method(&b, "pm_sandbox_visa_04_idshared", true).await.unwrap_err();
    assert_eq!(err.code, "payment_method_verification_failed");
    // The card updater's new expiry does.
    let reg = app.services.register_payment_method(&b, "pm_sandbox_visa_04_idshared_exp1240", true).await.unwrap();
    assert!(reg.replaced, "the same card (fingerprint), with a new expiry");
}

/// Review, suspected: when the PSP was called but its answer could not be recorded, the
/// caller hears `pending` (reconciled later), not that nothing was attempted.
pub async fn an_answer_that_cannot_be_recorded_is_reported_pending_and_reconciled(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    // The claim (here the invoice's creation too) commits; then the store is unreachable.
    store.down_after_write(puts_invoice_with_attempt("pending"));
    let issued = issue(&app, &cus, 2500).await;
    assert!(store.fired());
    assert_eq!(issued.charge.unwrap().unwrap().outcome, ChargeOutcome::Pending);
    store.restore();
    let inv = app.services.invoice(&issued.invoice.id).await.unwrap();
    app.clock.set(inv.next_attempt_at().unwrap());
    let outcome = app.services.process_due(&inv.id).await.unwrap();
    assert_eq!(outcome, DueOutcome::Reconciled(Some(ChargeOutcome::Paid)));
    assert_eq!(succeeded_psp_charges(&app, &inv.id).await, 1);
}

/// Review, suspected: an invoice committed before the store failed is answered as
/// created, so the caller's idempotency key is not freed for a second invoice. With a
/// default card the invoice is committed with its first attempt claimed, and that attempt
/// is reconciled; without one, it waits on the schedule.
pub async fn an_invoice_committed_before_the_store_failed_is_answered_as_created(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let with_card = customer_with_card(&app, "pm_card_visa").await;
    let without_card = app.services.create_customer("bo@example.com", None).await.unwrap().id;
    for cus in [with_card, without_card] {
        store.down_after_write(puts("invoice"));
        let issued = app.services.issue_invoice(pro_invoice(&cus, CollectionMethod::ChargeAutomatically)).await;
        store.restore();
        let issued = issued.expect("the invoice was committed: the request succeeded");
        let stored = app.services.invoice(&issued.invoice.id).await.unwrap();
        match stored.pending_transaction() {
            Some(_) => {
                assert_eq!(issued.charge.unwrap().unwrap().outcome, ChargeOutcome::Pending);
                app.clock.set(stored.next_attempt_at().unwrap());
                let outcome = app.services.process_due(&stored.id).await.unwrap();
                assert_eq!(outcome, DueOutcome::Reconciled(Some(ChargeOutcome::Paid)));
            }
            None => {
                assert!(issued.charge.unwrap().is_err());
                assert_eq!(stored.next_attempt_at(), Some(stored.created_at), "charged by the schedule instead");
            }
        }
    }
}

/// The sandbox, counting the charges sent to it.
struct CountingGateway {
    inner: recoup_sandbox::SandboxGateway,
    charges: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl PaymentGateway for CountingGateway {
    async fn verify(&self, psp_token: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError> {
        self.inner.verify(psp_token, customer).await
    }
    async fn begin_setup(&self, customer: &CustomerId) -> Result<CardSetup, GatewayError> {
        self.inner.begin_setup(customer).await
    }
    async fn verify_setup(
        &self,
        setup_id: &str,
        psp_token: &str,
        customer: &CustomerId,
    ) -> Result<VerifiedCard, GatewayError> {
        self.inner.verify_setup(setup_id, psp_token, customer).await
    }
    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome {
        self.charges.fetch_add(1, Ordering::SeqCst);
        self.inner.charge(request).await
    }
    async fn detach(&self, psp_token: &str) -> Result<(), GatewayError> {
        self.inner.detach(psp_token).await
    }
    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        self.inner.lookup(idempotency_key).await
    }
    async fn payment_owner(&self, payment_id: &str) -> Result<Option<(InvoiceId, CustomerId)>, GatewayError> {
        self.inner.payment_owner(payment_id).await
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// The engine over the sandbox, with the number of charges sent to it.
fn counted(store: Arc<dyn ItemStore>) -> (TestApp, Arc<AtomicUsize>) {
    let charges = Arc::new(AtomicUsize::new(0));
    let count = charges.clone();
    let app = recoup_shared::testkit::test_app(store, |repo, clock| {
        Arc::new(CountingGateway { inner: recoup_sandbox::SandboxGateway::new(repo, clock), charges: count })
    });
    (app, charges)
}

fn pro_invoice(customer: &CustomerId, collection_method: CollectionMethod) -> IssueInvoice {
    IssueInvoice {
        customer_id: customer.clone(),
        amount: usd(2500),
        description: "Pro".into(),
        collection_method: Some(collection_method),
    }
}

/// Issues the Pro invoice as a run of `request`.
async fn issue_as(
    app: &TestApp,
    customer: &CustomerId,
    collection_method: CollectionMethod,
    request: &RequestId,
) -> Result<recoup_shared::services::invoices::Issued, Error> {
    app.services.issue_invoice_once(pro_invoice(customer, collection_method), Some(request)).await
}

/// A retried request whose first run issued and charged the invoice, then died before its
/// answer was stored (its idempotency key's lease lapsed): the re-run answers with that
/// invoice, paid, and neither issues nor charges another.
pub async fn a_rerun_issue_answers_with_the_invoice_the_first_run_issued(store: Arc<dyn ItemStore>) {
    let (app, charges) = counted(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let request = RequestId::new("issue-once");
    let first = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await.unwrap();
    assert_eq!(first.invoice.status(), InvoiceStatus::Paid);
    let again = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await.unwrap();
    assert_eq!(again.invoice.id, first.invoice.id);
    assert_eq!(again.invoice.status(), InvoiceStatus::Paid);
    assert_eq!(again.charge.unwrap().unwrap().outcome, ChargeOutcome::Paid);
    assert_eq!(charges.load(Ordering::SeqCst), 1, "one charge at the PSP");
    assert_eq!(app.services.list_invoices(&cus, 10, None).await.unwrap().items.len(), 1, "one invoice");
    assert_eq!(app.services.invoice(&first.invoice.id).await.unwrap().transactions().len(), 1);
    assert_eq!(app.published.kinds().iter().filter(|k| **k == "invoice.created").count(), 1);
    // Another request is another invoice.
    let other =
        issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &RequestId::new("issue-twice")).await.unwrap();
    assert_ne!(other.invoice.id, first.invoice.id);
    assert_eq!(charges.load(Ordering::SeqCst), 2);
}

/// The same after a declined first charge: the re-run reports the decline and starts no
/// extra attempt (the schedule owns the retries).
pub async fn a_rerun_issue_does_not_attempt_a_declined_invoice_again(store: Arc<dyn ItemStore>) {
    let (app, charges) = counted(store);
    let cus = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let request = RequestId::new("issue-declined");
    let first = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await.unwrap();
    assert_eq!(first.invoice.status(), InvoiceStatus::Open);
    let again = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await.unwrap();
    assert_eq!(again.invoice.id, first.invoice.id);
    assert_eq!(again.charge.unwrap().unwrap().outcome, ChargeOutcome::Declined);
    assert_eq!(again.invoice.transactions().len(), 1, "no extra attempt");
    assert_eq!(charges.load(Ordering::SeqCst), 1);
    assert_eq!(app.services.list_invoices(&cus, 10, None).await.unwrap().items.len(), 1);
}

/// A first run that died after committing the invoice but before charging it (its
/// customer had no default card yet, so no attempt was claimed with it): the re-run leaves
/// the charge to the schedule (`charge_scheduled`), and a bank-transfer invoice is found
/// the same way.
pub async fn a_rerun_issue_leaves_an_uncharged_invoice_to_the_schedule(store: Arc<dyn ItemStore>) {
    let (app, store) = interleaved(store);
    let cus = app.services.create_customer("bo@example.com", None).await.unwrap().id;
    let request = RequestId::new("issue-uncharged");
    store.down_after_write(puts("invoice"));
    let first = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await;
    store.restore();
    let first = first.expect("committed");
    let again = issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await.unwrap();
    assert_eq!(again.invoice.id, first.invoice.id);
    assert_eq!(again.charge.unwrap().unwrap_err().code, "charge_scheduled");
    assert!(again.invoice.transactions().is_empty(), "no attempt started by the re-run");
    assert_eq!(again.invoice.next_attempt_at(), Some(again.invoice.created_at), "the schedule charges it");

    let transfer = RequestId::new("issue-transfer");
    let first = issue_as(&app, &cus, CollectionMethod::SendInvoice, &transfer).await.unwrap();
    let again = issue_as(&app, &cus, CollectionMethod::SendInvoice, &transfer).await.unwrap();
    assert_eq!(again.invoice.id, first.invoice.id);
    assert!(again.charge.is_none());
    assert_eq!(app.services.list_invoices(&cus, 10, None).await.unwrap().items.len(), 2);
}

/// Starting a subscription: the re-run answers with the subscription and its payment 1 as
/// the first run left them; one subscription, one invoice, one charge.
pub async fn a_rerun_start_answers_with_the_subscription_the_first_run_started(store: Arc<dyn ItemStore>) {
    let (app, charges) = counted(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let request = RequestId::new("start-once");
    let new = || NewSubscription {
        customer_id: cus.clone(),
        amount: usd(1900),
        interval: Interval::Month,
        interval_count: 1,
        description: "Pro".into(),
    };
    let (sub, first) = app.services.create_subscription_once(new(), Some(&request)).await.unwrap();
    let first = first.unwrap();
    let (again, again_first) = app.services.create_subscription_once(new(), Some(&request)).await.unwrap();
    assert_eq!(again.id, sub.id);
    let again_first = again_first.unwrap();
    assert_eq!(again_first.outcome, ChargeOutcome::Paid);
    assert_eq!(again_first.invoice.id, first.invoice.id);
    assert_eq!(charges.load(Ordering::SeqCst), 1, "one charge at the PSP");
    assert_eq!(app.services.list_subscriptions(false, 10, None).await.unwrap().items.len(), 1);
    assert_eq!(app.services.list_invoices(&cus, 10, None).await.unwrap().items.len(), 1);
    assert_eq!(app.services.customer(&cus).await.unwrap().subscription_ids, vec![sub.id]);
}

/// Creating a customer: the re-run answers with the customer the first run created.
pub async fn a_rerun_create_answers_with_the_customer_the_first_run_created(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let request = RequestId::new("create-once");
    let first = app
        .services
        .create_customer_once("ada@example.com", Some("Ada"), CollectionMethod::ChargeAutomatically, Some(&request))
        .await
        .unwrap();
    let again = app
        .services
        .create_customer_once("ada@example.com", Some("Ada"), CollectionMethod::ChargeAutomatically, Some(&request))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(app.services.list_customers(10, None).await.unwrap().items.len(), 1);
    // Past the retention the key is a new request, as its idempotency record is.
    app.clock.advance(TimeDelta::hours(24));
    let later = app
        .services
        .create_customer_once("ada@example.com", Some("Ada"), CollectionMethod::ChargeAutomatically, Some(&request))
        .await
        .unwrap();
    assert_ne!(later.id, first.id);
    assert_eq!(app.services.list_customers(10, None).await.unwrap().items.len(), 2);
}

/// Two runs of one request racing (a retry taking over a lapsed lease while the first
/// run is still going): one invoice, one charge.
pub async fn racing_runs_of_one_request_issue_one_invoice(store: Arc<dyn ItemStore>) {
    let (app, charges) = counted(store);
    let app = Arc::new(app);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let app = app.clone();
        let cus = cus.clone();
        tasks.push(tokio::spawn(async move {
            let request = RequestId::new("issue-raced");
            issue_as(&app, &cus, CollectionMethod::ChargeAutomatically, &request).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().invoice.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every run answers with the one invoice");
    assert_eq!(app.services.list_invoices(&cus, 10, None).await.unwrap().items.len(), 1);
    assert_eq!(charges.load(Ordering::SeqCst), 1);
}

/// Review, suspected: "process payment N" on an invoice taken off the schedule before its
/// first attempt processes it, instead of calling it queued.
pub async fn process_payment_n_runs_a_parked_payment_never_attempted(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let (sub, first) = monthly_pro_subscription(&app, &cus).await;
    app.clock.set(first.unwrap().invoice.subscription.unwrap().period_end);
    let renewed = app.services.renew_due(10).await.unwrap();
    app.services.pause_subscription(&sub.id).await.unwrap();
    assert_eq!(app.services.process_due(&renewed[0]).await.unwrap(), DueOutcome::Parked);
    let report = app.services.process_payment(&sub.id, 2).await.unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Paid);
}

/// Seed 000: a customer paying by bank transfer switches to the card. What it owes is
/// charged at once; what comes later is charged automatically.
pub async fn a_bank_transfer_customer_switches_to_the_card_and_what_it_owes_is_charged(store: Arc<dyn ItemStore>) {
    let app = sandboxed(store);
    let s = &app.services;
    let cus =
        s.create_customer_once("ada@example.com", Some("Ada"), CollectionMethod::SendInvoice, None).await.unwrap();
    let owed = |amount| IssueInvoice {
        customer_id: cus.id.clone(),
        amount: usd(amount),
        description: "Usage".into(),
        collection_method: None,
    };
    let first = s.issue_invoice(owed(1200)).await.unwrap();
    assert_eq!(first.invoice.collection_method, CollectionMethod::SendInvoice, "the customer's method");
    assert!(first.charge.is_none());
    let second = s.issue_invoice(owed(3400)).await.unwrap().invoice;

    let refused = s.set_collection_method(&cus.id, CollectionMethod::ChargeAutomatically).await.err().unwrap();
    assert_eq!(refused.code, recoup_shared::error::Code::NoPaymentMethod);
    assert_eq!(s.customer(&cus.id).await.unwrap().collection_method, CollectionMethod::SendInvoice);

    // Saving a card tries what is owed (seed 000); this card declines, so both invoices
    // are still owed, and as bank-transfer invoices they are not dunned.
    s.register_payment_method(&cus.id, "pm_card_chargeCustomerFail", true).await.unwrap();
    assert_eq!(s.invoice(&first.invoice.id).await.unwrap().next_attempt_at(), None);
    let switched = s.set_collection_method(&cus.id, CollectionMethod::ChargeAutomatically).await.unwrap();
    assert_eq!(switched.customer.collection_method, CollectionMethod::ChargeAutomatically);
    assert_eq!(switched.recovery.len(), 1, "charged at once, stopping at the first decline");
    for id in [&first.invoice.id, &second.id] {
        let inv = s.invoice(id).await.unwrap();
        assert_eq!(inv.collection_method, CollectionMethod::ChargeAutomatically, "{id}");
        assert_eq!(inv.status(), InvoiceStatus::Open, "{id}");
        assert!(inv.next_attempt_at().is_some(), "{id}: collected automatically now");
    }
    // A good card pays both.
    s.register_payment_method(&cus.id, "pm_card_visa", true).await.unwrap();
    for id in [&first.invoice.id, &second.id] {
        assert_eq!(s.invoice(id).await.unwrap().status(), InvoiceStatus::Paid, "{id}");
    }
    // From now on, charged automatically.
    let later = s.issue_invoice(owed(900)).await.unwrap();
    assert_eq!(later.invoice.collection_method, CollectionMethod::ChargeAutomatically);
    assert_eq!(later.invoice.status(), InvoiceStatus::Paid);
    // Switching again changes nothing; back to bank transfer applies to later invoices.
    assert!(s.set_collection_method(&cus.id, CollectionMethod::ChargeAutomatically).await.unwrap().recovery.is_empty());
    s.set_collection_method(&cus.id, CollectionMethod::SendInvoice).await.unwrap();
    assert_eq!(s.issue_invoice(owed(100)).await.unwrap().invoice.collection_method, CollectionMethod::SendInvoice);
}

/// Collects what the retry scheduler sends to the charge queue.
#[derive(Default)]
struct CapturedQueue(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl recoup_shared::ports::messaging::QueueSender for CapturedQueue {
    async fn send(&self, bodies: &[String]) -> Result<(), recoup_shared::ports::messaging::QueueError> {
        self.0.lock().unwrap().extend(bodies.iter().cloned());
        Ok(())
    }

    async fn send_delayed(
        &self,
        body: &str,
        _delay: std::time::Duration,
    ) -> Result<(), recoup_shared::ports::messaging::QueueError> {
        self.0.lock().unwrap().push(body.to_owned());
        Ok(())
    }
}

/// The engine over `store`, metered; the sandbox keeps its own books in a store of its
/// own, as a real PSP would, so the metrics are Recoup's calls only.
fn metered_app(store: Arc<dyn ItemStore>) -> (TestApp, Arc<recoup_shared::store::metered::StoreMetrics>) {
    let metered = recoup_shared::store::metered::Metered::new(store);
    let metrics = metered.metrics();
    let psp = recoup_shared::store::repo::Repo::new(recoup_shared::testkit::embedded_store());
    let app = recoup_shared::testkit::test_app(Arc::new(metered), |_, clock| {
        Arc::new(recoup_sandbox::SandboxGateway::new(psp, clock))
    });
    (app, metrics)
}

/// An invoice issued and charged at once: the customer, then its default card and the
/// card's ledger in one batch; the invoice is created in the commit that claims its first
/// attempt; then the settle. Four store calls in sequence, two of them writes.
async fn an_invoice_issued_and_charged_at_once_is_created_with_its_claim(store: Arc<dyn ItemStore>) {
    let (app, metrics) = metered_app(store);
    let unique = uuid::Uuid::new_v4().simple().to_string();
    for (token, outcome) in [
        (format!("pm_sandbox_visa_ok_id{unique}"), ChargeOutcome::Paid),
        (format!("pm_sandbox_visa_51_id{unique}"), ChargeOutcome::Declined),
    ] {
        let cus = customer_with_card(&app, &token).await;
        let before = metrics.snapshot();
        let issued = issue(&app, &cus, 1000).await;
        let used = metrics.snapshot().since(&before);
        assert_eq!(issued.charge.unwrap().unwrap().outcome, outcome);
        assert_eq!(used.get_requests, 2, "the customer, then card and ledger: {used:?}");
        assert_eq!(used.query_requests, 0, "{used:?}");
        assert_eq!(used.write_requests, 2, "the invoice with its claim, and the settle: {used:?}");
        // The claim writes the invoice, its created event and the ledger, and checks the
        // card; the settle writes invoice, ledger and one event. Each item fits one write
        // unit (the invoice deflated), two inside a transaction.
        assert!(used.write_units <= 14.0, "at most 14 write units: {used:?}");
        let stored = app.services.invoice(&issued.invoice.id).await.unwrap();
        assert_eq!(stored.attempt_count(), 1);
    }
    assert_eq!(app.published.kinds().iter().filter(|k| **k == "invoice.created").count(), 2);
}

/// A scheduled retry as the deployed functions run it (the retry scheduler's message, then
/// the charge worker) makes three sequential store calls: one batched read of the invoice,
/// customer, card and ledger, one claim, one settle. The outbox's marks after publishing
/// are counted apart. Approved and declined alike, at 2 read units (the first look is
/// eventually consistent); and again for an invoice whose customer changed the default card
/// after the last attempt, which costs one more batched read of what the hint could not name.
async fn a_scheduled_retry_makes_three_store_calls(store: Arc<dyn ItemStore>) {
    use recoup_shared::services::scheduler::ChargeMessage;

    let (app, metrics) = metered_app(store);
    // Short: the sandbox's tokens carry it, and a token is stored in every attempt.
    let unique = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let recovering = customer_with_card(&app, &format!("pm_sandbox_visa_51_recover1_id{unique}")).await;
    let declining = customer_with_card(&app, &format!("pm_sandbox_visa_51_id{unique}")).await;
    // The third customer has a second card, and makes it the default after the first
    // attempt declined on the first.
    let switching = customer_with_card(&app, &format!("pm_sandbox_visa_51_recover1_idsw{unique}")).await;
    let new_card =
        app.services.register_payment_method(&switching, "pm_card_mastercard", false).await.unwrap().card.method.id;
    let paid = issue(&app, &recovering, 1000).await.invoice;
    let declined = issue(&app, &declining, 1000).await.invoice;
    let switched = issue(&app, &switching, 1000).await.invoice;
    for inv in [&paid, &declined, &switched] {
        assert_eq!(inv.status(), InvoiceStatus::Open, "the first attempt declined");
    }
    app.services.set_default_payment_method(&switching, &new_card).await.unwrap();

    let mut latest = app.clock.now();
    for inv in [&paid, &declined, &switched] {
        latest = latest.max(app.services.invoice(&inv.id).await.unwrap().next_attempt_at().unwrap());
    }
    app.clock.set(latest);
    let queue = CapturedQueue::default();
    app.services.sweep_due(&queue, 100).await.unwrap();
    let messages: Vec<ChargeMessage> =
        queue.0.lock().unwrap().iter().map(|b| serde_json::from_str(b).unwrap()).collect();

    let mut seen = 0;
    for message in &messages {
        let hint = message.hint.as_ref().expect("the scheduler says what the invoice said");
        let before = metrics.snapshot();
        let outcome = app.services.process_due_hinted(&message.invoice_id, Some(hint)).await.unwrap();
        let used = metrics.snapshot().since(&before);
        let (expected_outcome, gets) = if message.invoice_id == paid.id {
            (DueOutcome::Charged(ChargeOutcome::Paid), 1)
        } else if message.invoice_id == declined.id {
            (DueOutcome::Charged(ChargeOutcome::Declined), 1)
        } else {
            // The hint named the old card: the new default and its ledger are read after,
            // together (the customer names the default card's fingerprint).
            (DueOutcome::Charged(ChargeOutcome::Paid), 2)
        };
        assert_eq!(outcome, expected_outcome, "{}", message.invoice_id);
        assert_eq!(used.get_requests, gets, "reads of {}: {used:?}", message.invoice_id);
        assert_eq!(used.query_requests, 0, "{used:?}");
        assert_eq!(used.write_requests, 2, "a claim and a settle: {used:?}");
        if gets == 1 {
            // Invoice, customer, card and ledger, each under 4 KB, read eventually
            // consistently: half a unit each.
            assert_eq!(used.items_read, 4, "{used:?}");
            assert!(used.read_units <= 2.0, "at most 2 read units: {used:?}");
            // The design's floor: claim and settle write the invoice and the ledger, and
            // the claim checks the card and the settle writes one event; each item fits
            // one write unit (the invoice, with its two attempts, deflated), two inside a
            // transaction.
            assert!(used.write_units <= 12.0, "at most 12 write units: {used:?}");
        }
        assert!(used.mark_requests >= 1, "the settle's events were published and marked: {used:?}");
        seen += 1;
    }
    assert_eq!(seen, 3, "every due invoice was sent: {messages:?}");
    assert_eq!(app.services.invoice(&paid.id).await.unwrap().status(), InvoiceStatus::Paid);
    let s = app.services.invoice(&switched.id).await.unwrap();
    assert_eq!(s.status(), InvoiceStatus::Paid);
    assert_eq!(s.transactions().last().unwrap().card.payment_method_id, new_card, "the new default was charged");
}

macro_rules! engine_suite {
    ($make:expr) => {
        engine_suite!(@tests $make;
            an_invoice_is_charged_at_once_to_the_default_card,
            a_decline_is_recorded_with_its_error_type_and_a_next_attempt,
            charges_racing_a_paid_invoice_never_charge_it_again,
            racing_workers_and_merchants_never_double_charge,
            an_unanswered_charge_is_reconciled_by_its_idempotency_key,
            soft_declines_are_retried_on_schedule_then_the_invoice_errors,
            a_hard_decline_is_not_retried_on_the_same_card,
            a_condemned_card_registered_again_stays_blocked,
            a_card_set_up_by_the_card_form_is_registered_only_by_its_customer,
            an_expired_default_card_is_never_sent_to_the_psp,
            mastercard_advice_24_delays_the_next_try_by_an_hour,
            visa_caps_reattempts_of_one_card_across_invoices,
            removal_rules_hold,
            a_card_with_a_pending_charge_cannot_be_removed,
            a_subscription_errors_with_its_invoice_and_comes_back_when_paid,
            process_payment_n_follows_the_recurring_api_rules,
            an_invoice_without_a_card_errors_when_the_schedule_runs_out,
            an_authentication_decline_waits_for_the_customer,
            a_bank_transfer_invoice_is_never_dunned,
            a_stale_updater_cannot_error_a_subscription_whose_invoice_was_paid,
            parking_cannot_lose_an_invoice_to_a_concurrent_resume,
            a_failed_resume_can_be_retried_and_unparks,
            a_canceled_subscriptions_invoice_is_not_collected_automatically,
            a_canceled_subscriptions_invoice_is_charged_only_deliberately,
            resuming_past_a_payment_that_errored_while_paused_lands_in_errored,
            a_never_retry_decline_blocks_the_card_for_every_customer,
            an_answer_that_cannot_be_recorded_is_reported_pending_and_reconciled,
            an_invoice_committed_before_the_store_failed_is_answered_as_created,
            process_payment_n_runs_a_parked_payment_never_attempted,
            a_rerun_issue_answers_with_the_invoice_the_first_run_issued,
            a_rerun_issue_does_not_attempt_a_declined_invoice_again,
            a_rerun_issue_leaves_an_uncharged_invoice_to_the_schedule,
            a_rerun_start_answers_with_the_subscription_the_first_run_started,
            a_rerun_create_answers_with_the_customer_the_first_run_created,
            racing_runs_of_one_request_issue_one_invoice,
            a_bank_transfer_customer_switches_to_the_card_and_what_it_owes_is_charged,
            a_scheduled_retry_makes_three_store_calls,
            an_invoice_issued_and_charged_at_once_is_created_with_its_claim,
            a_claim_or_settle_canceled_by_a_collision_is_tried_again,
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
    engine_suite!(async { recoup_shared::testkit::embedded_store() });
}

mod dynamodb {
    use std::sync::Arc;

    use recoup_shared::store::ItemStore;

    /// A table per test: card ledgers are per card, and tests share test cards.
    async fn store() -> Arc<dyn ItemStore> {
        let table = format!("engine-{}", uuid::Uuid::new_v4().simple());
        Arc::new(recoup_shared::testkit::dynamo_store(&table).await)
    }

    engine_suite!(store());
}
