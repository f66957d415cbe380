//! Merchant webhooks end to end: the real `recoup-local` delivers to a real HTTP receiver
//! on 127.0.0.1 that answers as receivers do in the wild (fails a few times, is gone,
//! hangs, streams without end), and the dev clock drives the back-off.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::Runner;

/// What the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    signature: String,
    event_id_header: String,
    body: Value,
    raw: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<HashMap<String, Vec<Hit>>>>,
}

impl Receiver {
    /// Serves on a free port of 127.0.0.1; answers its base URL.
    async fn start() -> (Receiver, String) {
        let rx = Receiver::default();
        let app = axum::Router::new().route("/{behaviour}", post(receive)).with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, format!("http://{addr}"))
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits.lock().unwrap().get(path).cloned().unwrap_or_default()
    }

    /// Waits (in real time) until `path` has had `n` requests.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Hit> {
        for _ in 0..200 {
            let hits = self.hits(path);
            if hits.len() >= n {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} had {} requests, not {n}", self.hits(path).len());
    }
}

async fn receive(
    State(rx): State<Receiver>,
    Path(behaviour): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let hit = Hit {
        signature: header("recoup-signature"),
        event_id_header: header("recoup-event-id"),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw: raw.to_vec(),
    };
    let seen = {
        let mut hits = rx.hits.lock().unwrap();
        let list = hits.entry(behaviour.clone()).or_default();
        list.push(hit);
        list.len()
    };
    match behaviour.as_str() {
        "ok" => StatusCode::OK.into_response(),
        // Fails twice, then takes it.
        "flaky" if seen <= 2 => (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response(),
        "flaky" => StatusCode::NO_CONTENT.into_response(),
        "gone" => StatusCode::GONE.into_response(),
        // Never answers within an attempt's five seconds.
        "slow" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
        // Slow, but inside the five seconds.
        "sluggish" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            StatusCode::OK.into_response()
        }
        // A 200 whose body never ends.
        "endless" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            Response::new(Body::from_stream(stream))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Checks `Recoup-Signature` as a receiver would, with its own HMAC.
fn signed_with(hit: &Hit, secret: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in hit.signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => v1.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.raw);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    v1.contains(&expected)
}

async fn endpoint(r: &Runner, merchant: &str, url: String, events: Value) -> (String, String) {
    let reply = r.post("/v1/webhook-endpoints", merchant, json!({"url": url, "enabled_events": events})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    (reply.body["id"].as_str().unwrap().to_owned(), reply.body["secret"].as_str().unwrap().to_owned())
}

/// A customer with a good card and one paid invoice; answers the invoice id.
async fn paid_invoice(r: &Runner, merchant: &str) -> String {
    let (cus, owner, _) = r.customer(merchant).await;
    let token = r.tokenize("4242424242424242").await;
    assert_eq!(r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await.status, 201);
    let inv = r.post("/v1/invoices", merchant, json!({"customer_id": cus, "amount": 2500, "currency": "usd"})).await;
    assert_eq!(inv.body["status"], "paid", "{}", inv.body);
    inv.body["id"].as_str().unwrap().to_owned()
}

async fn deliveries(r: &Runner, merchant: &str, endpoint: &str) -> Vec<Value> {
    let reply = r.get(&format!("/v1/webhook-endpoints/{endpoint}/deliveries"), merchant).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// Waits (in real time) until attempt `n` of the endpoint's latest delivery has been
/// recorded, then a moment more: the dispatcher puts the next attempt on its queue just
/// after recording this one, and a test that moves the clock first would move it past a
/// message not sent yet.
async fn recorded(r: &Runner, merchant: &str, endpoint: &str, n: u64) -> Value {
    for _ in 0..200 {
        let log = deliveries(r, merchant, endpoint).await;
        if let Some(d) = log.first()
            && d["attempts"] == n
            && (d["status"] != "pending" || d["next_attempt_at"].is_string())
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("attempt {n} to {endpoint} was never recorded: {:?}", deliveries(r, merchant, endpoint).await);
}

#[tokio::test]
async fn endpoints_are_checked_and_their_secret_is_shown_once() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (_, owner, _) = r.customer(&merchant).await;
    for (body, code) in [
        (json!({"url": "http://hooks.example.com/x", "enabled_events": ["*"]}), "url_not_https"),
        (json!({"url": "https://169.254.169.254/latest", "enabled_events": ["*"]}), "url_forbidden_address"),
        (json!({"url": "https://10.1.2.3/hook", "enabled_events": ["*"]}), "url_forbidden_address"),
        (json!({"url": "https://[fd00:ec2::254]/hook", "enabled_events": ["*"]}), "url_forbidden_address"),
        (json!({"url": "not a url", "enabled_events": ["*"]}), "invalid_url"),
        (json!({"url": "https://hooks.example.com/x", "enabled_events": ["invoice.exploded"]}), "invalid_event_type"),
        (json!({"url": "https://hooks.example.com/x", "enabled_events": ["*", "invoice.paid"]}), "invalid_event_type"),
        (json!({"url": "https://hooks.example.com/x", "enabled_events": []}), "invalid_event_type"),
    ] {
        let reply = r.post("/v1/webhook-endpoints", &merchant, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.body);
    }
    assert_eq!(r.get("/v1/webhook-endpoints", &merchant).await.body["data"], json!([]), "nothing was saved");
    assert_eq!(r.post("/v1/webhook-endpoints", &owner, json!({})).await.status, 403, "customers cannot");

    let created = r
        .post(
            "/v1/webhook-endpoints",
            &merchant,
            json!({"url": "https://hooks.example.com/recoup", "enabled_events": ["invoice.paid"], "description": "billing"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 40);
    let id = created.body["id"].as_str().unwrap();
    let read = r.get(&format!("/v1/webhook-endpoints/{id}"), &merchant).await;
    assert_eq!(read.body["status"], "enabled");
    assert_eq!(read.body["description"], "billing");
    assert!(read.body.get("secret").is_none(), "the secret is shown once: {}", read.body);
    assert!(!r.get("/v1/webhook-endpoints", &merchant).await.body.to_string().contains(secret));

    let rolled = r.post(&format!("/v1/webhook-endpoints/{id}/roll-secret"), &merchant, json!({})).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_ne!(rolled.body["secret"].as_str().unwrap(), secret);

    let disabled = r.post(&format!("/v1/webhook-endpoints/{id}/disable"), &merchant, json!({})).await;
    assert_eq!(disabled.body["status"], "disabled");
    let enabled = r.post(&format!("/v1/webhook-endpoints/{id}/enable"), &merchant, json!({})).await;
    assert_eq!(enabled.body["status"], "enabled");
    assert_eq!(r.call("DELETE", &format!("/v1/webhook-endpoints/{id}"), Some(&merchant), None, None).await.status, 204);
    assert_eq!(r.get(&format!("/v1/webhook-endpoints/{id}"), &merchant).await.status, 404);
}

#[tokio::test]
async fn deliveries_are_signed_retried_on_the_back_off_and_logged_with_a_stable_id() {
    let (rx, base) = Receiver::start().await;
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (_ok, ok_secret) = endpoint(&r, &merchant, format!("{base}/ok"), json!(["invoice.paid"])).await;
    let (flaky, flaky_secret) = endpoint(&r, &merchant, format!("{base}/flaky"), json!(["invoice.paid"])).await;

    let invoice = paid_invoice(&r, &merchant).await;

    let hit = rx.wait_for("ok", 1).await.remove(0);
    assert!(signed_with(&hit, &ok_secret), "signature {:?}", hit.signature);
    assert!(!signed_with(&hit, &flaky_secret));
    assert_eq!(hit.body["type"], "invoice.paid", "only the types it asked for");
    assert_eq!(hit.body["object"], "event");
    assert_eq!(hit.body["data"]["object"]["invoice_id"], invoice.as_str());
    assert_eq!(hit.body["data"]["object"]["amount"]["amount"], 2500, "{}", hit.body);
    assert!(hit.body["created"].is_i64() && hit.body["api_version"].is_string());
    let event_id = hit.body["id"].as_str().unwrap().to_owned();
    assert!(event_id.starts_with("evt_"));
    assert_eq!(hit.event_id_header, event_id);

    // The flaky receiver failed the first attempt; the next is a minute out.
    rx.wait_for("flaky", 1).await;
    recorded(&r, &merchant, &flaky, 1).await;
    let log = deliveries(&r, &merchant, &flaky).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "pending", "{}", log[0]);
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["last_response_code"], 500);
    let now = r.call("GET", "/v1/dev/clock", None, None, None).await.body["now"].as_str().unwrap().to_owned();
    let next = log[0]["next_attempt_at"].as_str().unwrap();
    let wait =
        chrono::DateTime::parse_from_rfc3339(next).unwrap() - chrono::DateTime::parse_from_rfc3339(&now).unwrap();
    assert!((40..=75).contains(&wait.num_seconds()), "first retry in about a minute, not {wait}");

    // Nothing more happens until the clock gets there.
    r.tick().await;
    assert_eq!(rx.hits("flaky").len(), 1);
    r.advance(0, 2).await;
    rx.wait_for("flaky", 2).await;
    assert_eq!(recorded(&r, &merchant, &flaky, 2).await["status"], "pending", "the second attempt");
    r.advance(0, 3).await;
    assert_eq!(rx.hits("flaky").len(), 2, "the third waits about five minutes");
    r.advance(0, 4).await;
    let hits = rx.wait_for("flaky", 3).await;
    assert_eq!(hits.len(), 3, "the third attempt");
    recorded(&r, &merchant, &flaky, 3).await;
    let log = deliveries(&r, &merchant, &flaky).await;
    assert_eq!(log[0]["status"], "delivered", "{}", log[0]);
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["last_response_code"], 204);
    assert!(log[0]["next_attempt_at"].is_null());
    // Every attempt carries the same event id (receivers dedupe on it), freshly signed.
    assert!(hits.iter().all(|h| h.body["id"] == event_id.as_str() && signed_with(h, &flaky_secret)));
    r.advance(1, 0).await;
    assert_eq!(rx.hits("flaky").len(), 3, "a delivered event is not sent again");

    // Sent again on request, with the same id.
    let resent = r.post(&format!("/v1/events/{event_id}/resend"), &merchant, json!({})).await;
    assert_eq!(resent.status, 202, "{}", resent.body);
    let hits = rx.wait_for("ok", 2).await;
    assert_eq!(hits[1].body["id"], event_id.as_str());
    let missing = r.post("/v1/events/evt_00000000000000000000000000/resend", &merchant, json!({})).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
}

#[tokio::test]
async fn a_failing_endpoint_gives_up_after_three_days_and_is_disabled_after_five() {
    let (rx, base) = Receiver::start().await;
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (gone, _) = endpoint(&r, &merchant, format!("{base}/gone"), json!(["invoice.paid"])).await;

    paid_invoice(&r, &merchant).await;
    rx.wait_for("gone", 1).await;
    for _ in 0..8 {
        r.advance(0, 12 * 60).await;
    }
    let attempts = rx.hits("gone").len();
    // Attempts at 0, 1 min... then one per half-day step of the clock, for three days.
    assert!((6..=10).contains(&attempts), "{attempts} attempts over four days");
    let log = deliveries(&r, &merchant, &gone).await;
    assert_eq!(log[0]["status"], "failed", "{}", log[0]);
    assert_eq!(log[0]["last_response_code"], 410);
    // The dev console shows the endpoint with its deliveries, never its secret.
    let console = r.call("GET", "/v1/dev/webhooks", None, None, None).await.body;
    assert_eq!(console["data"][0]["id"], gone.as_str());
    assert_eq!(console["data"][0]["deliveries"][0]["status"], "failed");
    assert!(console["data"][0].get("secret").is_none());
    assert!(r.event_types().await.contains(&"webhook_endpoint.delivery_failed".to_owned()));
    let read = r.get(&format!("/v1/webhook-endpoints/{gone}"), &merchant).await;
    assert_eq!(read.body["status"], "enabled", "failing for four days: still enabled");

    // A later event keeps failing past the fifth day: the endpoint is disabled.
    paid_invoice(&r, &merchant).await;
    rx.wait_for("gone", attempts + 1).await;
    for _ in 0..4 {
        r.advance(0, 12 * 60).await;
    }
    let read = r.get(&format!("/v1/webhook-endpoints/{gone}"), &merchant).await;
    assert_eq!(read.body["status"], "disabled_failing", "{}", read.body);
    assert!(r.event_types().await.contains(&"webhook_endpoint.disabled".to_owned()));
    // The merchant is told, at its own address.
    let emails = r.call("GET", "/v1/dev/emails", None, None, None).await.body;
    let told =
        emails["data"].as_array().unwrap().iter().find(|e| e["template"] == "webhook_endpoint_disabled").cloned();
    let told = told.expect("an email to the merchant");
    assert_eq!(told["to"], "merchant@recoup.localhost");
    assert!(told["body"].as_str().unwrap().contains(&gone), "{told}");
    let log = deliveries(&r, &merchant, &gone).await;
    assert_eq!(log[0]["status"], "failed", "its pending delivery ends: {}", log[0]);

    // A disabled endpoint receives nothing new.
    let before = rx.hits("gone").len();
    paid_invoice(&r, &merchant).await;
    r.tick().await;
    assert_eq!(rx.hits("gone").len(), before);
    assert_eq!(deliveries(&r, &merchant, &gone).await.len(), 2, "no delivery was even planned");
}

#[tokio::test]
async fn a_receiver_that_hangs_or_never_stops_answering_does_not_stall_delivery() {
    let (rx, base) = Receiver::start().await;
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (slow, _) = endpoint(&r, &merchant, format!("{base}/slow"), json!(["invoice.paid"])).await;
    let (endless, _) = endpoint(&r, &merchant, format!("{base}/endless"), json!(["invoice.paid"])).await;
    let (sluggish, _) = endpoint(&r, &merchant, format!("{base}/sluggish"), json!(["invoice.paid"])).await;
    endpoint(&r, &merchant, format!("{base}/ok"), json!(["invoice.paid"])).await;

    paid_invoice(&r, &merchant).await;
    rx.wait_for("ok", 1).await;
    rx.wait_for("slow", 1).await;
    // The hanging receiver sleeps a minute; its attempt ends after five seconds.
    let mut slow_log = Value::Null;
    for _ in 0..150 {
        slow_log = deliveries(&r, &merchant, &slow).await[0].clone();
        if slow_log["attempts"] == 1 && slow_log["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow_log["status"], "pending", "{slow_log}");
    assert!(slow_log["last_error"].as_str().unwrap().contains("timed out"), "{slow_log}");
    // The endless body: its status was read, a capped part of the body, and it counts.
    let log = deliveries(&r, &merchant, &endless).await;
    assert_eq!(log[0]["status"], "delivered", "{}", log[0]);
    assert_eq!(log[0]["last_response_code"], 200);
    // Two seconds is slow but in time.
    let log = deliveries(&r, &merchant, &sluggish).await;
    assert_eq!(log[0]["status"], "delivered", "{}", log[0]);
}

#[tokio::test]
async fn a_resend_of_a_delivery_waiting_to_retry_makes_its_attempt_now_and_only_once() {
    let (rx, base) = Receiver::start().await;
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (gone, _) = endpoint(&r, &merchant, format!("{base}/gone"), json!(["invoice.paid"])).await;
    paid_invoice(&r, &merchant).await;
    let event_id = rx.wait_for("gone", 1).await[0].body["id"].as_str().unwrap().to_owned();
    recorded(&r, &merchant, &gone, 1).await;

    // Waiting about a minute for attempt 2; the resend makes it now.
    let resent =
        r.post(&format!("/v1/events/{event_id}/resend"), &merchant, json!({"webhook_endpoint_id": gone})).await;
    assert_eq!(resent.status, 202, "{}", resent.body);
    assert_eq!(resent.body["webhook_endpoint_ids"], json!([gone]));
    rx.wait_for("gone", 2).await;
    recorded(&r, &merchant, &gone, 2).await;
    // The message scheduled for attempt 2 comes due and finds it made; attempt 3 waits
    // about five minutes.
    r.advance(0, 2).await;
    assert_eq!(rx.hits("gone").len(), 2);
    r.advance(0, 5).await;
    rx.wait_for("gone", 3).await;

    let bad = r.post(&format!("/v1/events/{event_id}/resend"), &merchant, json!({"webhook_endpoint_id": "nope"})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}
