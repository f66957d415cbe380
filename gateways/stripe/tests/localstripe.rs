//! The Stripe adapter against localstripe, a stateful fake of Stripe's API that `make test`
//! starts on 127.0.0.1 (RECOUP_TEST_STRIPE_ENDPOINT). Covered here: what localstripe does
//! as Stripe does — customers, SetupIntents that decline at attach or need 3-D Secure,
//! PaymentIntents that succeed or decline on 4000000000000341, metadata, detach, and
//! webhooks signed with the configured secret — and the engine's own scenarios over it.
//! What localstripe lacks (idempotent replays, search, advice codes) is covered by
//! `stripe_bodies.rs`.

use std::sync::Arc;

use recoup_shared::domain::decline::ErrorType;
use recoup_shared::domain::invoice::{AttemptOutcome, CollectionMethod};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::{InvoiceStatus, SubscriptionStatus};
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{ChargeRequest, GatewayError, PaymentGateway};
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::services::subscriptions::NewSubscription;
use recoup_shared::store::repo::Repo;
use recoup_shared::testkit::{TestApp, embedded_store, test_app};
use recoup_shared::time::Clock;
use recoup_stripe::{ClientConfig, SecretKey, StripeClient, StripeGateway};
use serde_json::Value;

const KEY: &str = "sk_test_recoup_localstripe";

fn endpoint() -> String {
    std::env::var("RECOUP_TEST_STRIPE_ENDPOINT").unwrap_or_else(|_| {
        panic!("RECOUP_TEST_STRIPE_ENDPOINT is not set: run the tests with `make test`, which starts localstripe")
    })
}

fn client() -> StripeClient {
    StripeClient::new(ClientConfig::new(endpoint(), SecretKey::new(KEY)))
}

fn gateway() -> StripeGateway {
    StripeGateway::new(client(), Repo::new(embedded_store()))
}

fn customer() -> CustomerId {
    CustomerId::generate()
}

/// What Stripe.js does in the customer's browser: the card number goes to Stripe, which
/// returns a `pm_` id. (Test code only; Recoup never sends a card number anywhere.)
async fn card_form(number: &str) -> String {
    let http = reqwest::Client::new();
    let pm: Value = http
        .post(format!("{}/v1/payment_methods", endpoint()))
        .basic_auth(KEY, Some(""))
        .form(&[
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2031"),
            ("card[cvc]", "123"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pm["id"].as_str().unwrap_or_else(|| panic!("{pm}")).to_owned()
}

async fn get(path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", endpoint()))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}

fn request(customer: &CustomerId, token: &str, key: &str, off_session: bool) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.to_owned(),
        psp_token: token.to_owned(),
        amount: usd(1900),
        customer_id: customer.clone(),
        invoice_id: InvoiceId::generate(),
        attempt: 1,
        off_session,
        description: "Pro".into(),
    }
}

#[tokio::test]
async fn a_card_is_verified_by_a_setup_intent_and_stripes_details_are_kept() {
    let g = gateway();
    let cus = customer();
    let card = g.verify("pm_card_visa", &cus).await.unwrap();
    // Stripe turns the test token into a PaymentMethod of its own: that id is what is kept.
    assert!(card.psp_token.starts_with("pm_") && card.psp_token != "pm_card_visa", "{}", card.psp_token);
    assert_eq!(card.brand.as_str(), "visa");
    assert_eq!(card.last4, "4242");
    assert_eq!((card.expiry.month(), card.expiry.year()), (12, 2030));
    assert!(card.fingerprint.as_str().starts_with("stripe:"));
    // Labelled with its Recoup customer, so Stripe's events about the card can be placed.
    let pm = get(&format!("/v1/payment_methods/{}", card.psp_token)).await;
    assert_eq!(pm["metadata"]["recoup_customer_id"], cus.as_str());

    // One Stripe customer per Recoup customer, created on first need and then reused.
    g.verify("pm_card_visa", &cus).await.unwrap();
    let customers = get("/v1/customers?limit=100").await;
    let ours = customers["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["recoup_customer_id"] == cus.as_str())
        .count();
    assert_eq!(ours, 1);
}

#[tokio::test]
async fn a_card_declined_at_setup_is_not_saved_and_an_unknown_token_is_refused() {
    let g = gateway();
    let cus = customer();
    let declined = card_form("4000000000009995").await;
    match g.verify(&declined, &cus).await {
        Err(GatewayError::Declined(d)) => assert_eq!(d.decline_code.as_deref(), Some("card_declined")),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.verify("pm_doesnotexist", &cus).await, Err(GatewayError::InvalidToken));
}

#[tokio::test]
async fn a_card_that_needs_3d_secure_at_setup_asks_for_the_cardholder() {
    let g = gateway();
    let token = card_form("4000002760003184").await;
    match g.verify(&token, &customer()).await {
        Err(GatewayError::Declined(d)) => assert_eq!(d.error_type, ErrorType::AuthenticationRequired),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_off_session_charge_is_a_confirmed_payment_intent_carrying_the_attempt() {
    let g = gateway();
    let cus = customer();
    let card = g.verify("pm_card_visa", &cus).await.unwrap();
    let req = request(&cus, &card.psp_token, "inv_1:attempt:1", true);
    let AttemptOutcome::Succeeded { charge_id } = g.charge(&req).await else { panic!("not charged") };
    assert!(charge_id.starts_with("pi_"), "{charge_id}");
    let pi = get(&format!("/v1/payment_intents/{charge_id}")).await;
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 1900);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["metadata"]["recoup_idempotency_key"], "inv_1:attempt:1");
    assert_eq!(pi["metadata"]["recoup_invoice_id"], req.invoice_id.as_str());
    assert_eq!(pi["metadata"]["recoup_attempt"], "1");
}

#[tokio::test]
async fn a_card_that_declines_at_charge_is_saved_and_then_declined() {
    let g = gateway();
    let cus = customer();
    let card = g.verify(&card_form("4000000000000341").await, &cus).await.unwrap();
    match g.charge(&request(&cus, &card.psp_token, "k-0341", true)).await {
        AttemptOutcome::Declined(d) => {
            assert_eq!(d.error_type, ErrorType::Declined);
            assert_eq!(d.decline_code.as_deref(), Some("card_declined"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_removed_card_is_detached_at_stripe() {
    let g = gateway();
    let cus = customer();
    let card = g.verify("pm_card_visa", &cus).await.unwrap();
    g.detach(&card.psp_token).await.unwrap();
    let pm = get(&format!("/v1/payment_methods/{}", card.psp_token)).await;
    assert_eq!(pm["customer"], Value::Null);
    // Detaching what Stripe no longer has is not an error.
    g.detach("pm_gone").await.unwrap();
}

#[tokio::test]
async fn stripe_webhooks_arrive_signed_with_the_configured_secret() {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Bytes)>();
    let app = axum::Router::new().route(
        "/stripe",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let sig = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let _ = tx.send((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret = format!("whsec_{}", uuid_like());
    let hook = format!("recoup-{}", uuid_like());
    let configured = reqwest::Client::new()
        .post(format!("{}/_config/webhooks/{hook}", endpoint()))
        .form(&[
            ("url", format!("http://{addr}/stripe")),
            ("secret", secret.clone()),
            ("events[]", "payment_intent.succeeded".into()),
        ])
        .send()
        .await
        .unwrap();
    assert!(configured.status().is_success());

    let g = gateway();
    let cus = customer();
    let card = g.verify("pm_card_visa", &cus).await.unwrap();
    let key = format!("k-{}", uuid_like());
    let AttemptOutcome::Succeeded { charge_id } = g.charge(&request(&cus, &card.psp_token, &key, true)).await else {
        panic!("not charged")
    };
    // Other tests' charges notify this endpoint too: wait for this one's.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (sig, body) = tokio::time::timeout_at(deadline, rx.recv()).await.expect("webhook arrived").unwrap();
        let event: Value = serde_json::from_slice(&body).unwrap();
        if event["data"]["object"]["id"] != charge_id.as_str() {
            continue;
        }
        assert_eq!(event["type"], "payment_intent.succeeded");
        assert_eq!(event["data"]["object"]["metadata"]["recoup_idempotency_key"], key.as_str());
        let now = chrono::Utc::now().timestamp();
        recoup_stripe::signature::verify(&body, Some(&sig), &[&secret], now, 300).expect("signed with our secret");
        assert!(recoup_stripe::signature::verify(&body, Some(&sig), &["whsec_other"], now, 300).is_err());
        break;
    }
}

fn uuid_like() -> String {
    CustomerId::generate().as_str().trim_start_matches("cus_").to_owned()
}

// The engine's scenarios, with Stripe (localstripe) as the PSP.

fn on_localstripe() -> TestApp {
    test_app(embedded_store(), |repo, _clock| Arc::new(StripeGateway::new(client(), repo)))
}

async fn customer_with_card(app: &TestApp, token: &str) -> CustomerId {
    let c = app.services.create_customer("ada@example.com", Some("Ada")).await.unwrap();
    app.services.register_payment_method(&c.id, token, false).await.unwrap();
    c.id
}

#[tokio::test]
async fn engine_an_invoice_is_paid_through_stripe() {
    let app = on_localstripe();
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let issued = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus,
            amount: usd(2500),
            description: "Pro".into(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap();
    let inv = app.services.invoice(&issued.invoice.id).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Paid);
    let pi_id = inv.transactions()[0].psp_charge_id.clone().unwrap();
    assert_eq!(get(&format!("/v1/payment_intents/{pi_id}")).await["amount"], 2500);
}

#[tokio::test]
async fn engine_a_card_declined_at_setup_is_refused_at_registration() {
    let app = on_localstripe();
    let c = app.services.create_customer("ada@example.com", None).await.unwrap();
    let err = app.services.register_payment_method(&c.id, "pm_card_visa_chargeDeclined", false).await.unwrap_err();
    assert_eq!(err.code.as_str(), "payment_method_verification_failed", "{err:?}");
    assert!(app.services.repo.payment_methods(&c.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn engine_a_failing_card_runs_the_dunning_to_errored_and_a_new_card_recovers() {
    let app = on_localstripe();
    let cus = customer_with_card(&app, "pm_card_chargeCustomerFail").await;
    let (sub, first) = app
        .services
        .create_subscription(NewSubscription {
            customer_id: cus.clone(),
            amount: usd(1900),
            interval: recoup_shared::domain::subscription::Interval::Month,
            interval_count: 1,
            description: "Pro".into(),
        })
        .await
        .unwrap();
    let first = first.unwrap().invoice;
    let invoice = first.id.clone();
    for _ in 0..20 {
        let inv = app.services.invoice(&invoice).await.unwrap();
        let Some(at) = inv.next_attempt_at() else { break };
        app.clock.set(at.max(app.clock.now()));
        app.services.process_due(&invoice).await.unwrap();
    }
    let inv = app.services.invoice(&invoice).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Error);
    assert!(inv.transactions().len() >= 4, "the whole retry schedule ran: {}", inv.transactions().len());
    app.services.follow_invoice(&invoice).await.unwrap();
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Errored);

    // Inside the period, a new default card recovers the errored invoice.
    app.clock.set(first.created_at + chrono::TimeDelta::days(25));
    app.services.register_payment_method(&cus, "pm_card_visa", true).await.unwrap();
    let inv = app.services.invoice(&invoice).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Paid);
    app.services.follow_invoice(&invoice).await.unwrap();
    assert_eq!(app.services.subscription(&sub.id).await.unwrap().status(), SubscriptionStatus::Active);
}

/// What the customer's browser does with the client secret (Stripe.js runs the challenge);
/// localstripe's test hook stands in for the cardholder passing or failing it.
async fn authenticate(pi: &str, client_secret: &str, success: bool) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/payment_intents/{pi}/_authenticate", endpoint()))
        .basic_auth(KEY, Some(""))
        .form(&[("client_secret", client_secret), ("success", if success { "true" } else { "false" })])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn payment_intent(id: &str) -> recoup_stripe::api::PaymentIntent {
    serde_json::from_value(get(&format!("/v1/payment_intents/{id}")).await).unwrap()
}

#[tokio::test]
async fn an_on_session_payment_that_needs_3d_secure_hands_back_the_client_secret() {
    let g = gateway();
    let cus = customer();
    g.verify("pm_card_visa", &cus).await.unwrap(); // creates the Stripe customer
    let card = card_form("4000002760003184").await;

    // The cardholder passes the challenge: the PaymentIntent succeeds.
    let AttemptOutcome::RequiresAction { charge_id, client_secret } =
        g.charge(&request(&cus, &card, "3ds-pass", false)).await
    else {
        panic!("no action asked for")
    };
    assert!(client_secret.starts_with(&charge_id), "{client_secret}");
    authenticate(&charge_id, &client_secret, true).await;
    let pi = payment_intent(&charge_id).await;
    assert_eq!(recoup_stripe::outcome_of(&pi, true), AttemptOutcome::Succeeded { charge_id: charge_id.clone() });
    // The portal reads the payment by its id once the cardholder has answered.
    assert_eq!(g.payment_outcome(&charge_id).await.unwrap(), Some(AttemptOutcome::Succeeded { charge_id: charge_id.clone() }));
    assert_eq!(g.payment_outcome("pi_unknown0000").await.unwrap(), None);

    // The cardholder fails it: a decline the customer must act on.
    let AttemptOutcome::RequiresAction { charge_id, client_secret } =
        g.charge(&request(&cus, &card, "3ds-fail", false)).await
    else {
        panic!("no action asked for")
    };
    authenticate(&charge_id, &client_secret, false).await;
    match recoup_stripe::outcome_of(&payment_intent(&charge_id).await, true) {
        AttemptOutcome::Declined(d) => assert_eq!(d.error_type, ErrorType::AuthenticationRequired),
        other => panic!("{other:?}"),
    }
    assert!(matches!(g.payment_outcome(&charge_id).await.unwrap(), Some(AttemptOutcome::Declined(_))));

    // Off-session the same card cannot be charged without the cardholder.
    match g.charge(&request(&cus, &card, "3ds-off", true)).await {
        AttemptOutcome::Declined(d) => assert_eq!(d.error_type, ErrorType::AuthenticationRequired),
        other => panic!("{other:?}"),
    }
}

/// What Stripe.js's `confirmCardSetup` does in the cardholder's browser: the card details
/// go to Stripe with the SetupIntent's client secret. Returns the SetupIntent as confirmed.
async fn confirm_in_browser(client_secret: &str, number: &str) -> Value {
    let seti = client_secret.split("_secret_").next().unwrap();
    reqwest::Client::new()
        .post(format!("{}/v1/setup_intents/{seti}/confirm", endpoint()))
        .json(&serde_json::json!({
            "key": "pk_test_recoup",
            "client_secret": client_secret,
            "use_stripe_sdk": true,
            "payment_method_data": {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_card_forms_setup_intent_is_confirmed_in_the_browser_and_then_registered_as_it_stands() {
    let g = gateway();
    let cus = customer();
    let setup = g.begin_setup(&cus).await.unwrap();
    assert!(setup.id.starts_with("seti_") && setup.client_secret.starts_with(&format!("{}_secret_", setup.id)));
    let si = get(&format!("/v1/setup_intents/{}", setup.id)).await;
    assert_eq!(si["usage"], "off_session");
    assert_eq!(si["metadata"]["recoup_customer_id"], cus.as_str());

    // Not confirmed yet: nothing to register.
    let early = g.verify_setup(&setup.id, "pm_anything", &cus).await;
    assert!(matches!(early, Err(GatewayError::SetupMismatch(_))), "{early:?}");

    let confirmed = confirm_in_browser(&setup.client_secret, "4242424242424242").await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    let pm = confirmed["payment_method"].as_str().unwrap().to_owned();
    let card = g.verify_setup(&setup.id, &pm, &cus).await.unwrap();
    assert_eq!((card.psp_token.as_str(), card.last4.as_str(), card.brand.as_str()), (pm.as_str(), "4242", "visa"));
    assert_eq!((card.expiry.month(), card.expiry.year()), (12, 2031));

    // Another customer cannot register it, nor can a card the setup did not save.
    let other = g.verify_setup(&setup.id, &pm, &customer()).await;
    assert!(matches!(other, Err(GatewayError::SetupMismatch(_))), "{other:?}");
    let swapped = g.verify_setup(&setup.id, "pm_card_visa", &cus).await;
    assert!(matches!(swapped, Err(GatewayError::SetupMismatch(_))), "{swapped:?}");
    let unknown = g.verify_setup("seti_doesnotexist", &pm, &cus).await;
    assert!(matches!(unknown, Err(GatewayError::SetupMismatch(_))), "{unknown:?}");
}

#[tokio::test]
async fn a_payment_is_traced_back_to_its_invoice_and_customer() {
    let g = gateway();
    let cus = customer();
    let card = g.verify("pm_card_visa", &cus).await.unwrap();
    let req = request(&cus, &card.psp_token, "trace-1", true);
    let AttemptOutcome::Succeeded { charge_id } = g.charge(&req).await else { panic!("not charged") };
    assert_eq!(g.payment_owner(&charge_id).await.unwrap(), Some((req.invoice_id.clone(), cus)));
    assert_eq!(g.payment_owner("pi_notrecoups").await.unwrap(), None);
    assert_eq!(g.payment_owner("ch_other").await.unwrap(), None);
}

#[tokio::test]
async fn engine_the_card_form_saves_a_card_once_whether_the_browser_or_the_webhook_comes_first() {
    use recoup_shared::ports::gateway::{PspEvent, PspNotice};
    use recoup_shared::services::psp_events::Settled;

    let app = on_localstripe();
    let c = app.services.create_customer("ada@example.com", None).await.unwrap();
    let setup = app.services.begin_card_setup(&c.id).await.unwrap();
    let confirmed = confirm_in_browser(&setup.client_secret, "4242424242424242").await;
    let pm = confirmed["payment_method"].as_str().unwrap().to_owned();

    // The browser closed before it registered the card: Stripe's webhook saves it.
    let notice = |id: &str| PspNotice {
        id: id.into(),
        kind: "setup_intent.succeeded".into(),
        event: Some(PspEvent::CardSetUp {
            customer_id: c.id.clone(),
            setup_id: setup.id.clone(),
            psp_token: pm.clone(),
        }),
    };
    assert_eq!(app.services.settle_psp_notice(&notice("evt_setup_1")).await.unwrap(), Settled::CardSaved);
    let cards = app.services.list_payment_methods(&c.id).await.unwrap();
    assert_eq!(cards.len(), 1);
    assert!(cards[0].is_default, "the first card is the default");
    // The browser comes back after all: the same card, refreshed, not a second one.
    let reg = app.services.register_set_up_card(&c.id, &setup.id, &pm, false).await.unwrap();
    assert!(reg.replaced);
    assert_eq!(app.services.settle_psp_notice(&notice("evt_setup_2")).await.unwrap(), Settled::Unchanged);
    assert_eq!(app.services.list_payment_methods(&c.id).await.unwrap().len(), 1);

    // Someone else's setup id gets nothing registered.
    let intruder = app.services.create_customer("eve@example.com", None).await.unwrap();
    let err = app.services.register_set_up_card(&intruder.id, &setup.id, &pm, false).await.unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_setup_intent", "{err:?}");
    assert!(app.services.list_payment_methods(&intruder.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn engine_a_dispute_on_a_paid_invoice_is_recorded_once_with_an_event() {
    use recoup_shared::ports::gateway::{Dispute, PspEvent, PspNotice};
    use recoup_shared::services::psp_events::Settled;

    let app = on_localstripe();
    let cus = customer_with_card(&app, "pm_card_visa").await;
    let issued = app
        .services
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(2500),
            description: "Pro".into(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap();
    let inv = app.services.invoice(&issued.invoice.id).await.unwrap();
    let pi = inv.transactions()[0].psp_charge_id.clone().unwrap();
    let notice = |id: &str, payment: &str| PspNotice {
        id: id.into(),
        kind: "charge.dispute.created".into(),
        event: Some(PspEvent::Dispute(Dispute {
            id: "dp_1".into(),
            payment_id: payment.into(),
            amount: usd(2500),
            reason: "fraudulent".into(),
            status: "needs_response".into(),
        })),
    };
    assert_eq!(app.services.settle_psp_notice(&notice("evt_dp_1", &pi)).await.unwrap(), Settled::Disputed);
    assert_eq!(app.published.kinds().iter().filter(|k| **k == "invoice.disputed").count(), 1);
    // Redelivered, or reported again under another event id: recorded once.
    assert_eq!(app.services.settle_psp_notice(&notice("evt_dp_1", &pi)).await.unwrap(), Settled::Duplicate);
    assert_eq!(app.services.settle_psp_notice(&notice("evt_dp_2", &pi)).await.unwrap(), Settled::Unchanged);
    assert_eq!(app.published.kinds().iter().filter(|k| **k == "invoice.disputed").count(), 1);
    // The invoice stays paid: the dispute is answered at the PSP.
    assert_eq!(app.services.invoice(&inv.id).await.unwrap().status(), InvoiceStatus::Paid);
    // A dispute on someone else's payment is not Recoup's.
    assert_eq!(app.services.settle_psp_notice(&notice("evt_dp_3", "pi_foreign")).await.unwrap(), Settled::Ignored);
}
