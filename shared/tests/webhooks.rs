//! Webhook delivery through the services, with a transport that records what it is asked
//! to send: one delivery per event and endpoint however often the event arrives, one
//! request per attempt however often its message arrives, and what an attempt leaves for
//! the next.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeDelta;
use recoup_shared::domain::events::{Event, EventPayload};
use recoup_shared::domain::webhook::{AttemptOutcome, DeliveryStatus, UrlPolicy};
use recoup_shared::ids::{CustomerId, PaymentMethodId};
use recoup_shared::ports::webhooks::{WebhookRequest, WebhookTransport};
use recoup_shared::services::webhooks::{AttemptResult, NewEndpoint};
use recoup_shared::store::repo::Tx;
use recoup_shared::testkit::{TestApp, embedded_store_in_memory};

/// Answers `status` to everything and keeps every request.
struct Recorder {
    status: u16,
    requests: Mutex<Vec<WebhookRequest>>,
}

#[async_trait]
impl WebhookTransport for Recorder {
    async fn post(&self, request: &WebhookRequest) -> AttemptOutcome {
        self.requests.lock().unwrap().push(request.clone());
        AttemptOutcome::Answered { status: self.status }
    }
}

fn app() -> TestApp {
    recoup_shared::testkit::test_app(embedded_store_in_memory(), |repo, clock| {
        Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock))
    })
}

/// An event as the bus would carry it, recorded in the outbox (deliveries read it there).
async fn event(app: &TestApp) -> Event {
    let payload = EventPayload::PaymentMethodRemoved {
        payment_method_id: PaymentMethodId::generate(),
        customer_id: CustomerId::generate(),
    };
    let mut tx = Tx::new();
    tx.emit([payload], app.services.now()).unwrap();
    let events = app.services.repo.commit(tx).await.unwrap();
    events.into_iter().next().unwrap()
}

#[tokio::test]
async fn an_event_delivered_twice_makes_one_delivery_and_a_message_delivered_twice_one_request() {
    let app = app();
    let s = &app.services;
    let new = NewEndpoint {
        url: "https://hooks.example.com/recoup".into(),
        enabled_events: vec!["payment_method.removed".into()],
        description: None,
    };
    let endpoint = s.create_webhook_endpoint(new, UrlPolicy::PublicHttpsOnly).await.unwrap();
    app.clock.advance(TimeDelta::seconds(1));
    let e = event(&app).await;

    let planned = s.plan_deliveries(&e).await.unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(s.plan_deliveries(&e).await.unwrap(), vec![planned[0].clone()], "not attempted yet: planned again");

    let failing = Recorder { status: 503, requests: Mutex::new(Vec::new()) };
    let next = match s.attempt_delivery(&planned[0], &failing).await.unwrap() {
        AttemptResult::Later { message, at } => {
            assert_eq!(message.attempt, 2);
            let wait = at - app.services.now();
            assert!(wait >= TimeDelta::seconds(48) && wait <= TimeDelta::seconds(72), "{wait}");
            message
        }
        AttemptResult::Done => panic!("a 503 is retried"),
    };
    // The same message again (SQS redelivers), and the event again: nothing is sent.
    assert_eq!(s.attempt_delivery(&planned[0], &failing).await.unwrap(), AttemptResult::Done);
    assert!(s.plan_deliveries(&e).await.unwrap().is_empty(), "attempted: not planned again");
    assert_eq!(failing.requests.lock().unwrap().len(), 1);
    // The next attempt's message, early: it waits.
    assert!(matches!(s.attempt_delivery(&next, &failing).await.unwrap(), AttemptResult::Later { .. }));
    assert_eq!(failing.requests.lock().unwrap().len(), 1);

    app.clock.advance(TimeDelta::minutes(2));
    let ok = Recorder { status: 200, requests: Mutex::new(Vec::new()) };
    assert_eq!(s.attempt_delivery(&next, &ok).await.unwrap(), AttemptResult::Done);
    let sent = ok.requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].event_id, e.id.to_string());
    assert_eq!(failing.requests.lock().unwrap()[0].body, sent[0].body, "the same body every attempt");
    let log = s.webhook_deliveries(&endpoint.id, 10, None).await.unwrap().items;
    assert_eq!((log[0].status, log[0].attempts, log[0].last_response_code), (DeliveryStatus::Delivered, 2, Some(200)));
}

#[tokio::test]
async fn an_endpoint_created_after_an_event_or_not_asking_for_it_gets_no_delivery() {
    let app = app();
    let s = &app.services;
    let e = event(&app).await;
    app.clock.advance(TimeDelta::seconds(1));
    for events in [vec!["*".to_owned()], vec!["invoice.paid".to_owned()]] {
        let new = NewEndpoint { url: "https://hooks.example.com/x".into(), enabled_events: events, description: None };
        s.create_webhook_endpoint(new, UrlPolicy::PublicHttpsOnly).await.unwrap();
    }
    assert!(s.plan_deliveries(&e).await.unwrap().is_empty());
}
