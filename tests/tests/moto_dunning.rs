//! The dunning engine on the AWS side, on the emulator: DynamoDB for state, EventBridge
//! rules routing events to SQS queues with dead-letter queues, and the real function
//! handlers consuming them.

use chrono::TimeDelta;
use recoup_lambda::routing;
use recoup_shared::domain::invoice::CollectionMethod;
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::subscription::Interval;
use recoup_shared::domain::{InvoiceStatus, SubscriptionStatus};
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::services::subscriptions::NewSubscription;
use recoup_shared::testkit::moto_endpoint;
use recoup_shared::time::Clock;
use recoup_tests::aws_topology::Topology;

fn usd(n: i64) -> Money {
    Money::new(n, Currency::parse("USD").unwrap()).unwrap()
}

/// Seed 002 end to end on the AWS adapters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declining_subscription_errors_through_the_bus_and_a_new_card_brings_it_back() {
    let t = Topology::create(&moto_endpoint()).await;
    let s = &t.app.services;
    let cus = s.create_customer("ada@example.com", None).await.unwrap().id;
    s.register_payment_method(&cus, "pm_sandbox_visa_51", false).await.unwrap();
    let (sub, first) = s
        .create_subscription(NewSubscription {
            customer_id: cus.clone(),
            amount: usd(4900),
            interval: Interval::Month,
            interval_count: 1,
            description: "Team".into(),
        })
        .await
        .unwrap();
    let invoice_id = first.unwrap().invoice.id;
    t.pump().await;

    // Each retry slot: the schedule finds the invoice, the charge queue carries it, the
    // worker charges, the bus tells the subscription updater and the notifier.
    for _ in 0..10 {
        let inv = s.invoice(&invoice_id).await.unwrap();
        let Some(at) = inv.next_attempt_at() else { break };
        t.clock.set(at);
        t.tick().await;
    }
    let inv = s.invoice(&invoice_id).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Error);
    assert_eq!(inv.attempt_count(), 7);
    let stored = s.subscription(&sub.id).await.unwrap();
    assert_eq!(stored.status(), SubscriptionStatus::Errored, "the updater got invoice.errored from the bus");
    let kinds = t.delivered_event_types().await;
    assert_eq!(kinds.iter().filter(|k| *k == "invoice.payment_failed").count(), 7, "{kinds:?}");
    assert!(kinds.contains(&"invoice.errored".to_owned()));
    assert!(kinds.contains(&"subscription.errored".to_owned()));
    let emails = recoup_shared::mail::StoreMailer::new(s.repo.clone()).recent(10).await.unwrap();
    assert!(emails.iter().any(|e| e.subject.contains("unpaid")), "{emails:?}");

    // A new card, inside the period: paid at once, and the subscription is active again.
    t.clock.advance(TimeDelta::days(1));
    let reg = s.register_payment_method(&cus, "pm_card_visa", true).await.unwrap();
    assert_eq!(reg.recovery.len(), 1);
    t.pump().await;
    assert_eq!(s.invoice(&invoice_id).await.unwrap().status(), InvoiceStatus::Paid);
    assert_eq!(s.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Active);
    assert!(t.delivered_event_types().await.contains(&"subscription.activated".to_owned()));
}

/// Invariant 4: a message no handler can process is reported failed every time, and the
/// queue's redrive policy moves it to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_ends_in_the_dead_letter_queue_and_good_ones_are_not_held_back() {
    let t = Topology::create(&moto_endpoint()).await;
    let s = &t.app.services;
    let cus = s.create_customer("ada@example.com", None).await.unwrap().id;
    let issued = s
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(1000),
            description: String::new(),
            collection_method: Some(CollectionMethod::SendInvoice),
        })
        .await
        .unwrap();
    let charge = &t.queues[routing::CHARGE_QUEUE];
    t.sqs.send_message().queue_url(charge).message_body("{not json").send().await.unwrap();
    t.sqs
        .send_message()
        .queue_url(charge)
        .message_body(format!(r#"{{"invoice_id":"{}"}}"#, issued.invoice.id))
        .send()
        .await
        .unwrap();
    for _ in 0..(routing::MAX_RECEIVE_COUNT + 2) {
        t.pump().await;
    }
    let dlq = &t.dead_letters[routing::CHARGE_QUEUE];
    let dead = t.sqs.receive_message().queue_url(dlq).max_number_of_messages(10).send().await.unwrap();
    let bodies: Vec<&str> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["{not json"], "only the poison message is dead-lettered");
    let left = t.sqs.receive_message().queue_url(charge).max_number_of_messages(10).send().await.unwrap();
    assert!(left.messages().is_empty(), "the good message was processed and deleted");
}

/// Invariant 2: no state change without its event. An event that could not be published
/// (the bus was down) is in the outbox, and the relay publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_left_in_the_outbox_are_published_by_the_relay() {
    let t = Topology::create(&moto_endpoint()).await;
    let mut s = t.app.services.clone();
    // Writers that cannot reach the bus.
    s.publisher = std::sync::Arc::new(recoup_shared::aws::EventBridgePublisher::new(t.events.clone(), "no-such-bus"));
    let cus = s.create_customer("ada@example.com", None).await.unwrap().id;
    s.register_payment_method(&cus, "pm_card_visa", false).await.unwrap();
    let issued = s
        .issue_invoice(IssueInvoice {
            customer_id: cus,
            amount: usd(1234),
            description: String::new(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap();
    assert_eq!(issued.invoice.status(), InvoiceStatus::Paid);
    assert!(t.delivered_event_types().await.is_empty(), "nothing reached the real bus");
    let pending = s.repo.unpublished_events(100).await.unwrap();
    assert_eq!(pending.len(), 3, "attached, created, paid");
    outbox_relay::handle(&t.app, t.scheduled_event()).await.unwrap();
    let mut kinds = t.delivered_event_types().await;
    kinds.sort();
    assert_eq!(kinds, ["invoice.created", "invoice.paid", "payment_method.attached"]);
    assert!(s.repo.unpublished_events(100).await.unwrap().is_empty());
    // A second relay run publishes nothing again.
    outbox_relay::handle(&t.app, t.scheduled_event()).await.unwrap();
    assert!(t.delivered_event_types().await.is_empty());
    let _ = t.clock.now();
}

/// The renewal schedule bills active subscriptions at period end and skips the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_bill_active_subscriptions_only() {
    let t = Topology::create(&moto_endpoint()).await;
    let s = &t.app.services;
    let cus = s.create_customer("ada@example.com", None).await.unwrap().id;
    s.register_payment_method(&cus, "pm_card_visa", false).await.unwrap();
    let new = |d: &str| NewSubscription {
        customer_id: cus.clone(),
        amount: usd(900),
        interval: Interval::Week,
        interval_count: 1,
        description: d.into(),
    };
    let (active, _) = s.create_subscription(new("active")).await.unwrap();
    let (paused, _) = s.create_subscription(new("paused")).await.unwrap();
    let (canceled, _) = s.create_subscription(new("canceled")).await.unwrap();
    s.pause_subscription(&paused.id).await.unwrap();
    s.cancel_subscription(&canceled.id).await.unwrap();
    t.clock.advance(TimeDelta::days(7));
    t.tick().await;
    let active = s.subscription(&active.id).await.unwrap();
    assert_eq!(active.payments().len(), 2, "renewed once");
    let second = s.invoice(&active.payment(2).unwrap().invoice_id).await.unwrap();
    assert_eq!(second.status(), InvoiceStatus::Paid, "and charged through the charge queue");
    assert_eq!(s.subscription(&paused.id).await.unwrap().payments().len(), 1);
    assert_eq!(s.subscription(&canceled.id).await.unwrap().payments().len(), 1);
}
