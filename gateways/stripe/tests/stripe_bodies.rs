//! What localstripe does not do, against Stripe's documented behaviour and response bodies
//! (API reference: Idempotent requests, Errors, Search PaymentIntents), served by a small
//! fake on 127.0.0.1: idempotent replays, lost answers and 429s, decline bodies carrying
//! network decline and advice codes, and the search that reconciliation uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use recoup_shared::domain::InvoiceStatus;
use recoup_shared::domain::card::Network;
use recoup_shared::domain::decline::{ErrorType, RetryClass, classify};
use recoup_shared::domain::invoice::{AttemptOutcome, CollectionMethod, TransactionStatus};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{ChargeRequest, PaymentGateway};
use recoup_shared::services::charging::ChargeOutcome;
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::store::repo::Repo;
use recoup_shared::testkit::{embedded_store, test_app};
use recoup_stripe::{ClientConfig, SecretKey, StripeClient, StripeGateway};
use serde_json::{Value, json};

/// How the fake answers `POST /v1/payment_intents`.
#[derive(Default)]
struct Script {
    /// Answer 503 to this many requests before looking at them (Stripe never saw them).
    unavailable_before: u32,
    /// Create the PaymentIntent, then answer 503 to this many requests (the answer is lost).
    lose_answers: u32,
    /// Answer 429 to this many requests first.
    rate_limited: u32,
    /// Decline every charge with this error body (402).
    decline: Option<Value>,
    /// On-session charges need 3-D Secure (status `requires_action`).
    three_d_secure: bool,
}

#[derive(Default)]
struct Fake {
    script: Script,
    /// Stored answers by idempotency key, replayed as Stripe does for 24 hours.
    by_key: HashMap<String, (u16, Value)>,
    intents: Vec<Value>,
    requests: u32,
}

type Shared = Arc<Mutex<Fake>>;

async fn customers() -> Json {
    Json(json!({"id": format!("cus_{}", rand_id()), "object": "customer"}))
}

struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn rand_id() -> String {
    CustomerId::generate().as_str().trim_start_matches("cus_").chars().take(14).collect()
}

async fn create_intent(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.requests += 1;
    if f.script.unavailable_before > 0 {
        f.script.unavailable_before -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
    }
    if f.script.rate_limited > 0 {
        f.script.rate_limited -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests hit the API too quickly."}})),
        )
            .into_response();
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).expect("every POST has a key").to_owned();
    let (status, body) = if let Some(stored) = f.by_key.get(&key) {
        stored.clone()
    } else {
        let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let metadata: serde_json::Map<String, Value> = form
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_owned(), json!(v))))
            .collect();
        let id = format!("pi_{}", rand_id());
        let mut pi = json!({
            "id": id, "object": "payment_intent", "amount": param("amount").parse::<i64>().unwrap(),
            "currency": param("currency"), "customer": param("customer"), "payment_method": param("payment_method"),
            "metadata": metadata, "client_secret": format!("{id}_secret_x"), "status": "succeeded",
            "latest_charge": format!("ch_{}", rand_id()), "last_payment_error": null, "next_action": null,
        });
        if f.script.three_d_secure && param("off_session").is_empty() {
            pi["status"] = json!("requires_action");
            pi["next_action"] =
                json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}});
        }
        let answer = match &f.script.decline {
            Some(error) => {
                let mut error = error.clone();
                pi["status"] = json!("requires_payment_method");
                pi["last_payment_error"] = error.clone();
                error["payment_intent"] = pi.clone();
                (402, json!({ "error": error }))
            }
            None => (200, pi.clone()),
        };
        f.intents.push(pi);
        f.by_key.insert(key, answer.clone());
        answer
    };
    if f.script.lose_answers > 0 {
        f.script.lose_answers -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
    }
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// `GET /v1/payment_intents/search?query=metadata['recoup_idempotency_key']:'<key>'`, in
/// the shape of Stripe's search result object.
async fn search(State(fake): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Json {
    let query = q.get("query").cloned().unwrap_or_default();
    let wanted = query
        .strip_prefix("metadata['recoup_idempotency_key']:'")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected query {query}"))
        .to_owned();
    let f = fake.lock().unwrap();
    let data: Vec<Value> =
        f.intents.iter().filter(|pi| pi["metadata"]["recoup_idempotency_key"] == wanted.as_str()).cloned().collect();
    Json(json!({
        "object": "search_result", "url": "/v1/payment_intents/search",
        "has_more": false, "next_page": null, "data": data,
    }))
}

async fn payment_method() -> Json {
    Json(json!({"id": "pm_1Abc", "object": "payment_method", "type": "card", "card": {
        "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2040,
        "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit", "country": "US"}}))
}

async fn fake_stripe(script: Script) -> (String, Shared) {
    let fake: Shared = Arc::new(Mutex::new(Fake { script, ..Fake::default() }));
    let app = Router::new()
        .route("/v1/customers", post(customers))
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/search", get(search))
        .route("/v1/setup_intents", post(|| async { Json(json!({"id": "seti_1", "object": "setup_intent", "status": "requires_payment_method"})) }))
        .route(
            "/v1/setup_intents/{id}/confirm",
            post(|| async { Json(json!({"id": "seti_1", "object": "setup_intent", "status": "succeeded", "payment_method": "pm_1Abc"})) }),
        )
        .route("/v1/payment_methods/{id}", get(payment_method).post(payment_method))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}

fn client(base: &str) -> StripeClient {
    let mut config = ClientConfig::new(base, SecretKey::new("sk_test_fake"));
    config.backoff = Duration::from_millis(10);
    StripeClient::new(config)
}

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
}

fn request(key: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.to_owned(),
        psp_token: "pm_1Abc".into(),
        amount: usd(1900),
        customer_id: CustomerId::generate(),
        invoice_id: InvoiceId::generate(),
        attempt: 1,
        off_session: true,
        description: "Pro".into(),
    }
}

/// Stripe's documented card_error for an insufficient-funds decline on a Mastercard, with
/// the network's own response code and Merchant Advice Code.
fn mastercard_insufficient_funds() -> Value {
    json!({
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "charge": "ch_3MmlLrLkdIwHu7ix0snN0B15",
        "network_decline_code": "51",
        "network_advice_code": "24",
        "advice_code": "try_again_later",
        "request_log_url": "https://dashboard.stripe.com/test/logs/req_xyz"
    })
}

#[tokio::test]
async fn the_same_key_sent_twice_is_one_payment_intent() {
    let (base, fake) = fake_stripe(Script::default()).await;
    let g = StripeGateway::new(client(&base), Repo::new(embedded_store()));
    let req = request("inv_1:1");
    let a = g.charge(&req).await;
    let b = g.charge(&req).await;
    assert!(matches!(a, AttemptOutcome::Succeeded { .. }));
    assert_eq!(a, b);
    assert_eq!(fake.lock().unwrap().intents.len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_with_the_same_key_inside_the_call() {
    let (base, fake) = fake_stripe(Script { rate_limited: 2, ..Script::default() }).await;
    let g = StripeGateway::new(client(&base), Repo::new(embedded_store()));
    assert!(matches!(g.charge(&request("k")).await, AttemptOutcome::Succeeded { .. }));
    let f = fake.lock().unwrap();
    assert_eq!((f.requests, f.intents.len()), (3, 1));
}

#[tokio::test]
async fn network_decline_and_advice_codes_reach_the_retry_rules() {
    let (base, _) = fake_stripe(Script { decline: Some(mastercard_insufficient_funds()), ..Script::default() }).await;
    let g = StripeGateway::new(client(&base), Repo::new(embedded_store()));
    let AttemptOutcome::Declined(d) = g.charge(&request("k")).await else { panic!("not declined") };
    assert_eq!(d.error_type, ErrorType::PaymentMethodDeclined);
    assert_eq!(d.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(d.network_decline_code.as_deref(), Some("51"));
    assert_eq!(d.advice_code.as_deref(), Some("24"));
    // Mastercard's advice 24 ("retry after 1 hour") governs the next try.
    assert_eq!(classify(&d, Network::Mastercard), RetryClass::Soft);
    assert!(recoup_shared::domain::decline::mastercard_retry_after("24").is_some());
}

#[tokio::test]
async fn stripes_documented_error_bodies_map_onto_the_taxonomy() {
    use recoup_stripe::api::ApiError;
    let parse = |v: Value| serde_json::from_value::<ApiError>(v).unwrap();
    let fraud = parse(
        json!({"type": "card_error", "code": "card_declined", "decline_code": "fraudulent", "message": "Your card was declined."}),
    );
    assert_eq!(recoup_stripe::decline_of(&fraud).error_type, ErrorType::Fraud);
    let expired = parse(
        json!({"type": "card_error", "code": "expired_card", "param": "exp_month", "message": "Your card has expired."}),
    );
    assert_eq!(recoup_stripe::decline_of(&expired).error_type, ErrorType::PaymentMethodExpired);
    let auth = parse(
        json!({"type": "card_error", "code": "authentication_required", "decline_code": "authentication_required"}),
    );
    assert_eq!(recoup_stripe::decline_of(&auth).error_type, ErrorType::AuthenticationRequired);
    let visa_do_not_honor = parse(
        json!({"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor", "network_decline_code": "05"}),
    );
    let d = recoup_stripe::decline_of(&visa_do_not_honor);
    assert_eq!((d.error_type, d.network_decline_code.as_deref()), (ErrorType::Declined, Some("05")));
    // A decline code Recoup does not know takes its meaning from the network's code.
    let unknown = parse(
        json!({"type": "card_error", "code": "card_declined", "decline_code": "brand_new_code", "network_decline_code": "54"}),
    );
    assert_eq!(recoup_stripe::decline_of(&unknown).error_type, ErrorType::PaymentMethodExpired);
}

/// The answer is lost after Stripe created the PaymentIntent: the attempt stays pending,
/// reconciliation finds the PaymentIntent by its metadata and the invoice is paid, with one
/// charge at Stripe.
#[tokio::test]
async fn an_answer_lost_after_the_charge_is_reconciled_without_charging_twice() {
    let (base, fake) = fake_stripe(Script { lose_answers: 3, ..Script::default() }).await;
    let app = test_app(embedded_store(), |repo, _| Arc::new(StripeGateway::new(client(&base), repo)));
    let issued = customer_with_invoice(&app, CollectionMethod::ChargeAutomatically).await;
    let report = issued.charge.expect("charged at once").unwrap();
    assert_eq!(report.outcome, ChargeOutcome::Pending);
    assert_eq!(report.transaction.status, TransactionStatus::Pending);

    let settled = app.services.reconcile(&issued.invoice.id).await.unwrap().unwrap();
    assert_eq!(settled.outcome, ChargeOutcome::Paid);
    assert_eq!(app.services.invoice(&issued.invoice.id).await.unwrap().status(), InvoiceStatus::Paid);
    assert_eq!(fake.lock().unwrap().intents.len(), 1, "one charge at Stripe");
}

/// Stripe never saw the request: search finds nothing, the identical request goes again
/// with the same key, and the invoice is paid once.
#[tokio::test]
async fn a_request_stripe_never_saw_is_sent_again_with_the_same_key() {
    let (base, fake) = fake_stripe(Script { unavailable_before: 3, ..Script::default() }).await;
    let app = test_app(embedded_store(), |repo, _| Arc::new(StripeGateway::new(client(&base), repo)));
    let issued = customer_with_invoice(&app, CollectionMethod::ChargeAutomatically).await;
    assert_eq!(issued.charge.unwrap().unwrap().outcome, ChargeOutcome::Pending);
    assert!(fake.lock().unwrap().intents.is_empty());
    let settled = app.services.reconcile(&issued.invoice.id).await.unwrap().unwrap();
    assert_eq!(settled.outcome, ChargeOutcome::Paid);
    let f = fake.lock().unwrap();
    assert_eq!(f.intents.len(), 1);
    let inv_key = &f.intents[0]["metadata"]["recoup_idempotency_key"];
    assert_eq!(inv_key, settled.transaction.idempotency_key.as_str());
}

/// A customer with the fake's card and a 19.00 USD invoice, issued (and, when charged
/// automatically, charged at once).
async fn customer_with_invoice(
    app: &recoup_shared::testkit::TestApp,
    method: CollectionMethod,
) -> recoup_shared::services::invoices::Issued {
    let cus = app.services.create_customer("ada@example.com", None).await.unwrap();
    seed_card(app, &cus.id).await;
    app.services
        .issue_invoice(IssueInvoice {
            customer_id: cus.id.clone(),
            amount: usd(1900),
            description: "Pro".into(),
            collection_method: Some(method),
        })
        .await
        .unwrap()
}

/// Registers `pm_1Abc` through the fake's SetupIntent and PaymentMethod endpoints.
async fn seed_card(app: &recoup_shared::testkit::TestApp, customer: &CustomerId) {
    app.services.register_payment_method(customer, "pm_1Abc", true).await.unwrap();
}

/// 3-D Secure when the customer pays: the answer carries the client secret and the attempt
/// stays pending (Stripe's `requires_action` webhook changes nothing); Stripe's webhook
/// then settles it once: paid, or failed with `authentication_required`.
#[tokio::test]
async fn a_customer_payment_needing_3d_secure_is_settled_by_stripes_webhook() {
    use recoup_shared::domain::invoice::AttemptTrigger;
    use recoup_shared::services::charging::CardChoice;
    use recoup_shared::services::psp_events::Settled;
    use recoup_stripe::webhook::parse_notice;

    for passes in [true, false] {
        let (base, fake) = fake_stripe(Script { three_d_secure: true, ..Script::default() }).await;
        let app = test_app(embedded_store(), |repo, _| Arc::new(StripeGateway::new(client(&base), repo)));
        let issued = customer_with_invoice(&app, CollectionMethod::SendInvoice).await;
        let invoice = issued.invoice.id;
        let report =
            app.services.charge_invoice(&invoice, CardChoice::Default, AttemptTrigger::Customer).await.unwrap();
        assert_eq!(report.outcome, ChargeOutcome::Pending);
        let action = report.next_action.expect("the client secret is handed back");
        assert!(action.client_secret.starts_with(&action.psp_charge_id));
        let key = report.transaction.idempotency_key.clone();

        let event = |id: &str, kind: &str, status: &str, error: Value| {
            let body = json!({"id": id, "object": "event", "type": kind, "data": {"object": {
                "id": action.psp_charge_id, "object": "payment_intent", "status": status,
                "client_secret": action.client_secret, "last_payment_error": error,
                "metadata": {"recoup_idempotency_key": key, "recoup_invoice_id": invoice.as_str()}}}});
            parse_notice(body.to_string().as_bytes()).unwrap()
        };
        let waiting = event("evt_wait", "payment_intent.requires_action", "requires_action", Value::Null);
        assert_eq!(app.services.settle_psp_notice(&waiting).await.unwrap(), Settled::Unchanged);
        assert_eq!(
            app.services.invoice(&invoice).await.unwrap().pending_transaction().map(|t| &t.idempotency_key),
            Some(&key)
        );

        let done = if passes {
            event("evt_done", "payment_intent.succeeded", "succeeded", Value::Null)
        } else {
            event(
                "evt_done",
                "payment_intent.payment_failed",
                "requires_payment_method",
                json!({"type": "invalid_request_error", "code": "payment_intent_authentication_failure",
                       "message": "The provided PaymentMethod has failed authentication."}),
            )
        };
        let settled = app.services.settle_psp_notice(&done).await.unwrap();
        let inv = app.services.invoice(&invoice).await.unwrap();
        if passes {
            assert_eq!(settled, Settled::Attempt(ChargeOutcome::Paid));
            assert_eq!(inv.status(), InvoiceStatus::Paid);
        } else {
            assert_eq!(settled, Settled::Attempt(ChargeOutcome::Declined));
            assert_eq!(inv.status(), InvoiceStatus::Open);
            assert_eq!(inv.transactions()[0].error_type(), Some(ErrorType::AuthenticationRequired));
        }
        assert_eq!(app.services.settle_psp_notice(&done).await.unwrap(), Settled::Duplicate);
        assert_eq!(fake.lock().unwrap().intents.len(), 1);
    }
}
