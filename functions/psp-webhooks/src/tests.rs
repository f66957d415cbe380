//! The receiver over the engine (embedded store, sandbox PSP for the attempts), with
//! Stripe-shaped event bodies signed as Stripe signs them.

use std::sync::Arc;

use recoup_lambda::app::FixedSecrets;
use recoup_shared::domain::InvoiceStatus;
use recoup_shared::domain::invoice::{CollectionMethod, TransactionStatus};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::ids::InvoiceId;
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::testkit::{embedded_store, test_app};
use recoup_stripe::signature::sign;
use serde_json::{Value, json};

use super::*;

const SECRET: &str = "whsec_receiver_test";

fn app_with(secrets: Option<&[&str]>) -> App {
    let t = test_app(embedded_store(), |repo, clock| Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock)));
    App {
        services: t.services,
        charge_queue: None,
        psp_webhook_secrets: secrets.map(|s| {
            Arc::new(FixedSecrets(s.iter().map(|x| (*x).to_owned()).collect()))
                as Arc<dyn recoup_lambda::app::SecretSource>
        }),
        card_form: Default::default(),
        webhooks: Default::default(),
        portal_secrets: None,
    }
}

fn request(method: &str, body: &str, signature: Option<&str>) -> Request {
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), json!("application/json"));
    if let Some(s) = signature {
        headers.insert("stripe-signature".into(), json!(s));
    }
    let event = json!({
        "version": "2.0", "routeKey": "POST /v1/webhooks/stripe", "rawPath": "/v1/webhooks/stripe",
        "rawQueryString": "", "headers": headers, "isBase64Encoded": false, "body": body,
        "requestContext": {"stage": "$default", "timeEpoch": 0, "http": {"method": method, "path": "/v1/webhooks/stripe"}},
    });
    let event: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
    lambda_http::request::LambdaRequest::ApiGatewayV2(event).into()
}

fn signed(body: &str) -> String {
    sign(body.as_bytes(), SECRET, chrono::Utc::now().timestamp())
}

async fn deliver(app: &App, body: &str) -> (u16, Value) {
    let r = handle(app, request("POST", body, Some(&signed(body)))).await;
    (r.status().as_u16(), body_json(r))
}

fn body_json(r: Response<Body>) -> Value {
    match r.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        _ => Value::Null,
    }
}

fn payment_event(event_id: &str, kind: &str, key: &str, invoice: &InvoiceId, status: &str) -> String {
    let mut pi = json!({
        "id": "pi_3Recoup", "object": "payment_intent", "status": status, "amount": 1900, "currency": "usd",
        "metadata": {"recoup_idempotency_key": key, "recoup_invoice_id": invoice.as_str()},
    });
    if status == "requires_payment_method" {
        pi["last_payment_error"] =
            json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"});
    }
    json!({"id": event_id, "object": "event", "type": kind, "created": 1_700_000_000, "data": {"object": pi}})
        .to_string()
}

/// A 19.00 USD invoice, charged automatically.
fn pro_invoice(customer: &recoup_shared::ids::CustomerId) -> IssueInvoice {
    IssueInvoice {
        customer_id: customer.clone(),
        amount: Money::new(1900, Currency::parse("USD").unwrap()).unwrap(),
        description: "Pro".into(),
        collection_method: Some(CollectionMethod::ChargeAutomatically),
    }
}

/// An invoice whose first attempt got no answer (the sandbox's lost-response card): it is
/// pending, waiting for the PSP's word.
async fn pending_invoice(app: &App) -> (InvoiceId, String) {
    let s = &app.services;
    let c = s.create_customer("ada@example.com", None).await.unwrap();
    s.register_payment_method(&c.id, "pm_sandbox_visa_timeout", true).await.unwrap();
    let issued = s.issue_invoice(pro_invoice(&c.id)).await.unwrap();
    let txn = issued.invoice.pending_transaction().expect("pending").clone();
    (issued.invoice.id, txn.idempotency_key)
}

#[tokio::test]
async fn a_signed_success_settles_the_pending_attempt_once() {
    let app = app_with(Some(&[SECRET]));
    let (invoice, key) = pending_invoice(&app).await;
    let body = payment_event("evt_1", "payment_intent.succeeded", &key, &invoice, "succeeded");
    assert_eq!(deliver(&app, &body).await, (200, json!({"received": true, "result": "paid"})));
    let inv = app.services.invoice(&invoice).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Paid);
    assert_eq!(inv.transactions()[0].psp_charge_id.as_deref(), Some("pi_3Recoup"));

    // Stripe delivers again: answered at once, nothing changes.
    assert_eq!(deliver(&app, &body).await.1["result"], "duplicate");
    // A failure for the same payment arriving late (another event) changes nothing.
    let late = payment_event("evt_2", "payment_intent.payment_failed", &key, &invoice, "requires_payment_method");
    assert_eq!(deliver(&app, &late).await.1["result"], "unchanged");
    assert_eq!(app.services.invoice(&invoice).await.unwrap().status(), InvoiceStatus::Paid);
    assert_eq!(app.services.invoice(&invoice).await.unwrap().succeeded_transactions(), 1);
}

#[tokio::test]
async fn a_signed_failure_settles_the_attempt_as_declined_with_its_reason() {
    let app = app_with(Some(&[SECRET]));
    let (invoice, key) = pending_invoice(&app).await;
    let body = payment_event("evt_f", "payment_intent.payment_failed", &key, &invoice, "requires_payment_method");
    assert_eq!(deliver(&app, &body).await.1["result"], "declined");
    let inv = app.services.invoice(&invoice).await.unwrap();
    let txn = &inv.transactions()[0];
    assert_eq!(txn.status, TransactionStatus::Failed);
    assert_eq!(txn.decline.as_ref().unwrap().decline_code.as_deref(), Some("insufficient_funds"));
    assert!(inv.next_attempt_at().is_some(), "the retry schedule goes on");

    // Out of order: the approval arrives after the failure was recorded. Stripe holds the
    // money, so the invoice is paid.
    let approved = payment_event("evt_s", "payment_intent.succeeded", &key, &invoice, "succeeded");
    assert_eq!(deliver(&app, &approved).await.1["result"], "late_approval");
    let inv = app.services.invoice(&invoice).await.unwrap();
    assert_eq!(inv.status(), InvoiceStatus::Paid);
    assert_eq!(inv.next_attempt_at(), None);
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_recorded() {
    let app = app_with(Some(&[SECRET]));
    let (invoice, key) = pending_invoice(&app).await;
    let body = payment_event("evt_x", "payment_intent.succeeded", &key, &invoice, "succeeded");
    let now = chrono::Utc::now().timestamp();
    for header in [
        None,
        Some("garbage".to_owned()),
        Some(sign(body.as_bytes(), "whsec_someone_else", now)),
        Some(sign(body.as_bytes(), SECRET, now - 3600)),
        Some(sign(b"{\"id\":\"evt_other\"}", SECRET, now)),
    ] {
        let r = handle(&app, request("POST", &body, header.as_deref())).await;
        assert_eq!(r.status().as_u16(), 400, "{header:?}");
        assert_eq!(body_json(r)["code"], "invalid_signature");
    }
    assert_eq!(app.services.invoice(&invoice).await.unwrap().status(), InvoiceStatus::Open);
    // Correctly signed, the same event is not a duplicate: the refusals wrote nothing.
    assert_eq!(deliver(&app, &body).await.1["result"], "paid");
}

#[tokio::test]
async fn rolled_secrets_both_verify() {
    let app = app_with(Some(&["whsec_old", SECRET]));
    let body = json!({"id": "evt_r", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}).to_string();
    assert_eq!(deliver(&app, &body).await, (200, json!({"received": true, "result": "ignored"})));
}

#[tokio::test]
async fn unknown_types_foreign_payments_and_unknown_invoices_are_acknowledged() {
    let app = app_with(Some(&[SECRET]));
    let other = json!({"id": "evt_o", "type": "invoice.finalized", "data": {"object": {"id": "in_1"}}}).to_string();
    assert_eq!(deliver(&app, &other).await.1["result"], "ignored");
    let foreign = json!({"id": "evt_p", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_1", "status": "succeeded", "metadata": {}}}})
    .to_string();
    assert_eq!(deliver(&app, &foreign).await, (200, json!({"received": true, "result": "ignored"})));
    let unknown = payment_event("evt_u", "payment_intent.succeeded", "k", &InvoiceId::generate(), "succeeded");
    assert_eq!(deliver(&app, &unknown).await, (200, json!({"received": true, "result": "ignored"})));
}

#[tokio::test]
async fn malformed_bodies_wrong_methods_and_a_missing_secret_get_clear_answers() {
    let app = app_with(Some(&[SECRET]));
    let (status, body) = deliver(&app, "{not json").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")));
    let r = handle(&app, request("GET", "", None)).await;
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let unconfigured = app_with(None);
    let (status, body) = deliver(&unconfigured, "{}").await;
    assert_eq!((status, body["code"].as_str()), (503, Some("service_unavailable")));
}

fn card_event(event_id: &str, kind: &str, customer: &recoup_shared::ids::CustomerId, token: &str) -> String {
    json!({"id": event_id, "object": "event", "type": kind, "created": 1_700_000_000, "data": {"object": {
        "id": token, "object": "payment_method", "type": "card",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2035, "fingerprint": "reissued"},
        "metadata": {"recoup_customer_id": customer.as_str()}}}})
    .to_string()
}

/// Seed 001's expired default card, fixed by the issuer: the account updater's new details
/// make the card valid again and the invoice it could not pay is paid at once.
#[tokio::test]
async fn a_card_the_issuer_updated_is_valid_again_and_collects_what_is_outstanding() {
    let app = app_with(Some(&[SECRET]));
    let s = &app.services;
    let c = s.create_customer("ada@example.com", None).await.unwrap();
    // Declined as expired (network code 54: the card is invalidated); approved once reissued.
    let token = "pm_sandbox_visa_54_recover1_idreissue";
    s.register_payment_method(&c.id, token, true).await.unwrap();
    let issued = s.issue_invoice(pro_invoice(&c.id)).await.unwrap();
    assert_ne!(s.invoice(&issued.invoice.id).await.unwrap().status(), InvoiceStatus::Paid);
    let card = s.repo.payment_methods(&c.id).await.unwrap().remove(0);
    assert!(card.invalidation().is_some(), "the expired-card decline invalidated the card");

    let (status, body) =
        deliver(&app, &card_event("evt_upd", "payment_method.automatically_updated", &c.id, token)).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("card_updated")));
    let card = s.repo.payment_methods(&c.id).await.unwrap().remove(0);
    assert!(card.invalidation().is_none());
    assert_eq!((card.expiry.month(), card.expiry.year()), (12, 2035));
    assert_eq!(s.invoice(&issued.invoice.id).await.unwrap().status(), InvoiceStatus::Paid);

    // The same details again change nothing.
    let again = deliver(&app, &card_event("evt_upd2", "payment_method.updated", &c.id, token)).await;
    assert_eq!(again.1["result"], "unchanged");
}

#[tokio::test]
async fn a_card_detached_at_the_psp_is_no_longer_charged() {
    let app = app_with(Some(&[SECRET]));
    let s = &app.services;
    let c = s.create_customer("ada@example.com", None).await.unwrap();
    s.register_payment_method(&c.id, "pm_card_visa", true).await.unwrap();
    let token = s.repo.payment_methods(&c.id).await.unwrap()[0].psp_token.clone();
    let (status, body) = deliver(&app, &card_event("evt_det", "payment_method.detached", &c.id, &token)).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("card_detached")));
    let card = s.repo.payment_methods(&c.id).await.unwrap().remove(0);
    assert!(card.invalidation().is_some());
    let err = s.issue_invoice(pro_invoice(&c.id)).await.unwrap().charge.expect("attempted").unwrap_err();
    assert_eq!(err.code, Code::PaymentMethodUpdateRequired, "{err:?}");
}
