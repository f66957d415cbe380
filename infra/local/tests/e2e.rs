//! End to end through the local product: the real `recoup-local` binary, over HTTP, with
//! its embedded store, in-process bus and queues, schedules and dev clock.

mod support;

use serde_json::json;
use support::{Runner, files_under};

#[tokio::test]
async fn the_readme_walkthrough_charges_a_good_card_and_explains_a_decline() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;

    let token = r.tokenize("4242 4242 4242 4242").await;
    let pm = r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await;
    assert_eq!(pm.status, 201, "{}", pm.body);
    assert_eq!(pm.body["brand"], "visa");
    assert_eq!(pm.body["last4"], "4242");
    assert_eq!(pm.body["is_default"], true, "the first card becomes the default");
    assert_eq!(pm.body["status"], "valid");

    let inv = r
        .post(
            "/v1/invoices",
            &merchant,
            json!({"customer_id": cus, "amount": 2500, "currency": "usd", "description": "Pro plan"}),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    assert_eq!(inv.body["status"], "paid");
    assert_eq!(inv.body["transactions"][0]["status"], "succeeded");

    // A second customer whose card attaches but declines every charge.
    let (cus2, owner2, _) = r.customer(&merchant).await;
    let pm = r.post("/v1/payment-methods", &owner2, json!({"payment_method": "pm_card_chargeCustomerFail"})).await;
    assert_eq!(pm.status, 201);
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus2, "amount": 500, "currency": "jpy"})).await;
    assert_eq!(inv.body["status"], "open");
    assert_eq!(inv.body["amount"], 500);
    assert_eq!(inv.body["currency"], "JPY");
    assert_eq!(inv.body["transactions"][0]["error_type"], "declined");
    assert!(inv.body["next_attempt_at"].is_string(), "a retry is planned");
}

/// The local product answers a request while its events go to the bus; what looks at the
/// bus afterwards (the dev console, a tick) still sees every event of every request already
/// answered, published once.
#[tokio::test]
async fn an_answered_requests_events_are_on_the_bus_when_looked_for_and_published_once() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let mut invoices = Vec::new();
    for _ in 0..5 {
        let (cus, owner, _) = r.customer(&merchant).await;
        let pm = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
        assert_eq!(pm.status, 201, "{}", pm.body);
        let inv =
            r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 900, "currency": "eur"})).await;
        assert_eq!(inv.body["status"], "paid", "{}", inv.body);
        invoices.push(inv.body["id"].as_str().unwrap().to_owned());
    }
    // Looked for at once, with no tick: every invoice's creation and payment is there.
    let events = r.call("GET", "/v1/dev/events", None, None, None).await.body;
    let events = events["data"].as_array().unwrap();
    for id in &invoices {
        for kind in ["invoice.created", "invoice.paid"] {
            let n =
                events.iter().filter(|e| e["detail-type"] == kind && e["detail"]["data"]["invoice_id"] == *id).count();
            assert_eq!(n, 1, "{kind} for {id} once in {events:?}");
        }
    }
    // Nothing was left in the outbox for the relay to send again.
    let tick = r.tick().await;
    assert_eq!(tick["schedules"][0]["outbox_relay"]["published"], 0, "{tick}");
}

#[tokio::test]
async fn cards_stripe_refuses_to_attach_are_refused_at_registration() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (_, owner, _) = r.customer(&merchant).await;
    for (number, error_type) in [
        ("4000000000000002", "declined"),
        ("4000000000009995", "payment_method_declined"),
        ("4000000000000069", "payment_method_expired"),
        ("4000000000000127", "payment_method_invalid"),
        ("4000000000000119", "processing_error"),
        // Fraud is never named to the customer.
        ("4100000000000019", "declined"),
    ] {
        let token = r.tokenize(number).await;
        let reply = r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await;
        assert_eq!(reply.status, 402, "{number}: {}", reply.body);
        assert_eq!(reply.body["code"], "payment_method_verification_failed");
        assert_eq!(reply.body["error_type"], error_type, "{number}");
    }
    let list = r.get("/v1/payment-methods", &owner).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0, "nothing was saved");
    let bad = r
        .call(
            "POST",
            "/sandbox/v1/payment_methods",
            None,
            Some(json!({"card": {"number": "4242424242424241", "exp_month": 1, "exp_year": 2035, "cvc": "1"}})),
            None,
        )
        .await;
    assert_eq!(bad.body["code"], "incorrect_number");
}

#[tokio::test]
async fn a_card_number_sent_to_the_api_is_refused_and_never_stored_or_logged() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    let pan = "4000056655665556";
    let reply = r.post("/v1/payment-methods", &owner, json!({"payment_method": pan})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["code"], "raw_card_data_refused");
    assert!(!reply.body.to_string().contains(pan));
    let reply = r
        .post(
            "/v1/invoices",
            &merchant,
            json!({"customer_id": cus, "amount": 100, "currency": "usd", "description": format!("card {pan}")}),
        )
        .await;
    assert_eq!(reply.body["code"], "raw_card_data_refused");
    let reply = r
        .call("GET", &format!("/v1/invoices?customer_id={cus}&note=4000-0566-5566-5556"), Some(&merchant), None, None)
        .await;
    assert_eq!(reply.body["code"], "raw_card_data_refused");
    // Tokenizing through the sandbox's card form is the one place the number may go.
    let token = r.tokenize(pan).await;
    let ok = r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await;
    assert_eq!(ok.status, 201);

    let data = r.stop().await;
    for (path, bytes) in files_under(&data) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(pan), "{} holds the card number", path.display());
        assert!(!text.contains("4000-0566-5566-5556"), "{} holds the card number", path.display());
    }
}

#[tokio::test]
async fn callers_see_only_their_own_data_and_members_never_see_cards() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, member) = r.customer(&merchant).await;
    let (_, stranger, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 1500, "currency": "eur"})).await;
    let inv_id = inv.body["id"].as_str().unwrap();

    assert_eq!(r.get("/v1/payment-methods", &member).await.status, 403);
    assert_eq!(r.post("/v1/payment-methods", &member, json!({"payment_method": "pm_card_visa"})).await.status, 403);
    let seen = r.get(&format!("/v1/invoices/{inv_id}"), &member).await;
    assert_eq!(seen.status, 200, "members see invoices");
    assert!(seen.body["transactions"][0].get("payment_method").is_none(), "but not the card: {}", seen.body);
    assert!(
        r.get(&format!("/v1/invoices/{inv_id}"), &owner).await.body["transactions"][0]["payment_method"]["last4"]
            == "4242"
    );
    assert_eq!(r.get(&format!("/v1/invoices/{inv_id}"), &stranger).await.status, 404);
    assert_eq!(r.get("/v1/invoices", &stranger).await.body["data"].as_array().unwrap().len(), 0);
    let masked = r.get(&format!("/v1/payment-methods?customer_id={cus}"), &merchant).await;
    assert_eq!(masked.status, 200);
    assert!(masked.body["data"][0].get("psp_token").is_none());
    assert_eq!(r.post("/v1/customers", &owner, json!({"email": "x@example.com"})).await.status, 403);

    let none = r.call("GET", "/v1/invoices", None, None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["code"], "unauthorized");
    let forged = r.call("GET", "/v1/invoices", Some(&format!("{owner}x")), None, None).await;
    assert_eq!(forged.status, 401);
}

#[tokio::test]
async fn removal_rules_are_enforced_over_http() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    let first = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second =
        r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_mastercard"})).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let del = r.call("DELETE", &format!("/v1/payment-methods/{first}"), Some(&owner), None, None).await;
    assert_eq!((del.status, del.body["code"].as_str()), (409, Some("default_payment_method")));
    let sub = r
        .post(
            "/v1/subscriptions",
            &merchant,
            json!({"customer_id": cus, "amount": 1900, "currency": "usd", "interval": "month"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    assert_eq!(r.call("DELETE", &format!("/v1/payment-methods/{second}"), Some(&owner), None, None).await.status, 204);
    let del = r.call("DELETE", &format!("/v1/payment-methods/{first}"), Some(&owner), None, None).await;
    assert_eq!((del.status, del.body["code"].as_str()), (409, Some("last_payment_method_with_active_subscription")));
    let set = r.post(&format!("/v1/payment-methods/{first}/default"), &owner, json!({})).await;
    assert_eq!(set.body["is_default"], true);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_a_different_request() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
    let body = json!({"customer_id": cus, "amount": 4200, "currency": "usd"});
    let first = r.call("POST", "/v1/invoices", Some(&merchant), Some(body.clone()), Some("order-42")).await;
    let again = r.call("POST", "/v1/invoices", Some(&merchant), Some(body.clone()), Some("order-42")).await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(again.headers.get("idempotency-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let list = r.get(&format!("/v1/invoices?customer_id={cus}"), &merchant).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "one invoice, charged once");
    let other = r
        .call(
            "POST",
            "/v1/invoices",
            Some(&merchant),
            Some(json!({"customer_id": cus, "amount": 1, "currency": "usd"})),
            Some("order-42"),
        )
        .await;
    assert_eq!(other.status, 422);
    assert_eq!(other.body["code"], "idempotency_key_reused");
}

/// Rewinds an idempotency record to a lapsed in-progress claim: what a process killed
/// after its request committed, but before the answer was stored, leaves behind.
async fn lose_the_completion(data_dir: &std::path::Path, scope: &str, key: &str) {
    use recoup_shared::services::idempotency::{IdempotencyRecord, IdempotencyState, sha256_hex};
    use recoup_shared::store::embedded::EmbeddedStore;
    use recoup_shared::store::keys;
    use recoup_shared::store::repo::{Repo, Tx};

    let store = EmbeddedStore::open(data_dir.join("recoup.redb")).expect("the store opens once the server stopped");
    let repo = Repo::new(std::sync::Arc::new(store));
    let id = sha256_hex(&[scope.as_bytes(), key.as_bytes()]);
    let mut record =
        repo.load::<IdempotencyRecord>(&keys::idempotency(&id)).await.unwrap().expect("the key's record is stored");
    assert!(matches!(record.state, IdempotencyState::Completed { .. }));
    record.state = IdempotencyState::InProgress { lease_until: record.created_at };
    let mut tx = Tx::new();
    tx.save(&record).unwrap();
    repo.commit(tx).await.unwrap();
}

/// The crash test's duplicate: the first run of a keyed POST issued and charged the
/// invoice (and started the subscription), then the process died before the answer was
/// stored. The retry, once the lease lapsed, runs the request again and must find what the
/// first run made instead of making and charging it again.
#[tokio::test]
async fn a_retry_after_a_lost_completion_creates_and_charges_nothing_again() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
    let invoice = json!({"customer_id": cus, "amount": 4200, "currency": "usd"});
    let subscription = json!({"customer_id": cus, "amount": 1900, "currency": "usd", "interval": "month"});
    let first = r.call("POST", "/v1/invoices", Some(&merchant), Some(invoice.clone()), Some("order-7")).await;
    assert_eq!((first.status, first.body["status"].as_str()), (201, Some("paid")), "{}", first.body);
    let started = r.call("POST", "/v1/subscriptions", Some(&merchant), Some(subscription.clone()), Some("sub-7")).await;
    assert_eq!(started.status, 201, "{}", started.body);

    let data_dir = r.stop().await;
    // `recoup-local token --role merchant` signs subject `dev`; the edge scopes keys by it.
    lose_the_completion(&data_dir, "merchant:dev", "order-7").await;
    lose_the_completion(&data_dir, "merchant:dev", "sub-7").await;
    let r = Runner::start_in(data_dir).await;

    let again = r.call("POST", "/v1/invoices", Some(&merchant), Some(invoice), Some("order-7")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(again.headers.get("idempotency-replayed").is_none(), "the request ran again");
    assert_eq!(again.body["id"], first.body["id"], "the invoice the first run issued");
    assert_eq!(again.body["status"], "paid");
    assert_eq!(again.body["charge"]["outcome"], "paid");
    assert_eq!(again.body["transactions"].as_array().unwrap().len(), 1, "charged once");

    let restarted = r.call("POST", "/v1/subscriptions", Some(&merchant), Some(subscription), Some("sub-7")).await;
    assert_eq!(restarted.status, 201, "{}", restarted.body);
    assert_eq!(restarted.body["id"], started.body["id"], "the subscription the first run started");
    assert_eq!(restarted.body["first_payment"], started.body["first_payment"]);

    let invoices = r.get(&format!("/v1/invoices?customer_id={cus}"), &merchant).await;
    assert_eq!(invoices.body["data"].as_array().unwrap().len(), 2, "one invoice per request: {}", invoices.body);
    for inv in invoices.body["data"].as_array().unwrap() {
        assert_eq!(inv["transactions"].as_array().unwrap().len(), 1, "one charge per invoice: {inv}");
    }
    let subs = r.get("/v1/subscriptions", &merchant).await;
    assert_eq!(subs.body["data"].as_array().unwrap().len(), 1, "{}", subs.body);
    // And the stored answer now replays.
    let replayed = r
        .call(
            "POST",
            "/v1/invoices",
            Some(&merchant),
            Some(json!({"customer_id": cus, "amount": 4200, "currency": "usd"})),
            Some("order-7"),
        )
        .await;
    assert_eq!(replayed.headers.get("idempotency-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(replayed.body["id"], first.body["id"]);
}

#[tokio::test]
async fn bad_input_gets_a_stable_code_and_nothing_is_written() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, _, _) = r.customer(&merchant).await;
    for (body, code) in [
        (json!({"customer_id": cus, "amount": 10.5, "currency": "usd"}), "invalid_amount"),
        (json!({"customer_id": cus, "amount": 0, "currency": "usd"}), "invalid_amount"),
        (json!({"customer_id": cus, "amount": 100, "currency": "zzz"}), "invalid_currency"),
        (json!({"customer_id": cus, "amount": 100, "currency": "usd", "colour": "red"}), "invalid_request"),
        (json!({"customer_id": "nobody", "amount": 100, "currency": "usd"}), "invalid_request"),
    ] {
        let reply = r.post("/v1/invoices", &merchant, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.body);
        assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let list = r.get(&format!("/v1/invoices?customer_id={cus}"), &merchant).await;
    assert!(list.body["data"].as_array().unwrap().is_empty());
    let nobody = r.get("/v1/invoices?customer_id=cus_00000000000000000000000000", &merchant).await;
    assert_eq!((nobody.status, nobody.body["code"].as_str()), (404, Some("not_found")));
    let unknown = r.get("/v1/invoices/in_doesnotexist", &merchant).await;
    assert_eq!((unknown.status, unknown.body["code"].as_str()), (404, Some("not_found")));
    // A known path with another method: 405, and `Allow` names the methods it has.
    let wrong = r.call("DELETE", "/v1/invoices", Some(&merchant), None, None).await;
    assert_eq!((wrong.status, wrong.body["code"].as_str()), (405, Some("method_not_allowed")));
    let allow = wrong.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
}

#[tokio::test]
async fn data_survives_a_restart_of_the_local_product() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 990, "currency": "gbp"})).await;
    r.advance(3, 0).await;
    let data = r.stop().await;
    let r = Runner::start_in(data).await;
    let again = r.get(&format!("/v1/invoices/{}", inv.body["id"].as_str().unwrap()), &owner).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "paid");
    let clock = r.call("GET", "/v1/dev/clock", None, None, None).await;
    assert!(clock.body["offset_seconds"].as_i64().unwrap() >= 3 * 86_400, "the dev clock keeps its place");
}

/// Seed 002, the whole story: declines retried as transactions on schedule, the invoice
/// errors and the subscription with it, the customer is emailed; a new card pays it and
/// the subscription is active again.
#[tokio::test]
async fn a_failed_subscription_payment_goes_through_dunning_and_is_recovered_by_a_new_card() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_sandbox_visa_51"})).await;
    let sub = r.post("/v1/subscriptions", &merchant, json!({"customer_id": cus, "amount": 4900, "currency": "usd", "interval": "month", "description": "Team plan"})).await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    assert_eq!(sub.body["first_payment"]["outcome"], "declined");
    let sub_id = sub.body["id"].as_str().unwrap().to_owned();
    let inv_id = sub.body["first_payment"]["invoice_id"].as_str().unwrap().to_owned();

    // Walk the dunning schedule: days 1, 3, 5, 7, 10 and 14.
    for days in [1, 2, 2, 2, 3, 4] {
        r.advance(days, 1).await;
    }
    let inv = r.get(&format!("/v1/invoices/{inv_id}"), &merchant).await;
    assert_eq!(inv.body["status"], "error");
    assert_eq!(inv.body["attempt_count"], 7);
    let txns = inv.body["transactions"].as_array().unwrap();
    assert!(txns.iter().all(|t| t["status"] == "failed" && t["error_type"] == "payment_method_declined"));
    assert!(txns.iter().skip(1).all(|t| t["trigger"] == "retry"));
    let sub = r.get(&format!("/v1/subscriptions/{sub_id}"), &merchant).await;
    assert_eq!(sub.body["status"], "errored");
    assert_eq!(sub.body["has_failed_payments"], 1);
    assert!(sub.body["next_renewal_at"].is_null(), "errored subscriptions are not invoiced");
    let kinds = r.event_types().await;
    for k in ["invoice.payment_failed", "invoice.errored", "subscription.errored"] {
        assert!(kinds.iter().any(|e| e == k), "{k} in {kinds:?}");
    }
    let emails = r.call("GET", "/v1/dev/emails", None, None, None).await.body;
    let emails = emails["data"].as_array().unwrap();
    assert!(
        emails
            .iter()
            .any(|e| e["subject"].as_str().unwrap().contains("unpaid")
                && e["body"].as_str().unwrap().contains("/portal"))
    );
    // Each email is also an .eml file a mail client opens: headers, text and HTML.
    let errored = emails.iter().find(|e| e["template"] == "invoice_errored").expect("the invoice_errored email");
    assert_eq!(errored["status"], "sent", "{errored}");
    let eml = std::fs::read_to_string(r.data_dir.join("emails").join(errored["message_id"].as_str().unwrap())).unwrap();
    assert!(eml.contains(&format!("Subject: {}\r\n", errored["subject"].as_str().unwrap())), "{eml}");
    assert!(eml.contains("To: ada@example.com\r\n") && eml.contains("Content-Type: text/html; charset=utf-8"));

    // The customer registers a new card, still inside the period: paid at once, active.
    let pm = r
        .post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_mastercard", "set_default": true}))
        .await;
    assert_eq!(pm.body["recovered_invoices"][0]["invoice_id"], inv_id);
    assert_eq!(pm.body["recovered_invoices"][0]["outcome"], "paid");
    r.tick().await;
    let inv = r.get(&format!("/v1/invoices/{inv_id}"), &owner).await;
    assert_eq!(inv.body["status"], "paid");
    assert_eq!(inv.body["transactions"][7]["trigger"], "new_payment_method");
    let sub = r.get(&format!("/v1/subscriptions/{sub_id}"), &merchant).await;
    assert_eq!(sub.body["status"], "active");
    assert_eq!(sub.body["has_failed_payments"], 0);
    let kinds = r.event_types().await;
    assert!(kinds.iter().any(|k| k == "subscription.activated"), "{kinds:?}");
    assert_eq!(r.call("GET", "/v1/dev/queues", None, None, None).await.body["data"][0]["dead_letters"], json!([]));
}

/// Seed 003: find subscriptions with failed payments, read payment numbers, process N.
#[tokio::test]
async fn the_recurring_api_procedure_finds_and_reprocesses_failed_payments() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_sandbox_visa_51_recover1"})).await;
    let sub = r
        .post(
            "/v1/subscriptions",
            &merchant,
            json!({"customer_id": cus, "amount": 1200, "currency": "eur", "interval": "week"}),
        )
        .await;
    let sub_id = sub.body["id"].as_str().unwrap().to_owned();
    // The subscription learns of the failed payment from the bus.
    r.tick().await;

    let failing = r.get("/v1/subscriptions?has_failed_payments=true", &merchant).await;
    let ids: Vec<&str> = failing.body["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&sub_id.as_str()), "{ids:?}");
    let detail = r.get(&format!("/v1/subscriptions/{sub_id}?include_sub_objects=true"), &merchant).await;
    let payments = detail.body["payments"].as_array().unwrap();
    assert_eq!(payments[0]["payment_number"], 1);
    assert_eq!(payments[0]["status"], "declined");
    assert!(payments[0]["date_processed"].is_string());
    assert_eq!(payments[1]["payment_number"], 2);
    assert_eq!(payments[1]["status"], "waiting");
    assert!(payments[1]["date_processed"].is_null());

    let waiting = r.post(&format!("/v1/subscriptions/{sub_id}/payments/2/process"), &merchant, json!({})).await;
    assert_eq!((waiting.status, waiting.body["code"].as_str()), (409, Some("payment_waiting")));
    let processed = r.post(&format!("/v1/subscriptions/{sub_id}/payments/1/process"), &merchant, json!({})).await;
    assert_eq!(processed.status, 200, "{}", processed.body);
    assert_eq!(processed.body["status"], "approved");
    let again = r.post(&format!("/v1/subscriptions/{sub_id}/payments/1/process"), &merchant, json!({})).await;
    assert_eq!((again.status, again.body["code"].as_str()), (409, Some("payment_already_approved")));
    r.tick().await;
    let failing = r.get("/v1/subscriptions?has_failed_payments=true", &merchant).await;
    assert!(failing.body["data"].as_array().unwrap().iter().all(|s| s["id"] != sub_id.as_str()));
}

#[tokio::test]
async fn a_hard_failed_payment_needs_a_card_update_before_it_can_be_processed() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_sandbox_visa_14"})).await;
    let sub = r
        .post(
            "/v1/subscriptions",
            &merchant,
            json!({"customer_id": cus, "amount": 1200, "currency": "usd", "interval": "month"}),
        )
        .await;
    let sub_id = sub.body["id"].as_str().unwrap().to_owned();
    let detail = r.get(&format!("/v1/subscriptions/{sub_id}?include_sub_objects=true"), &merchant).await;
    assert_eq!(detail.body["payments"][0]["status"], "failed");
    let refused = r.post(&format!("/v1/subscriptions/{sub_id}/payments/1/process"), &merchant, json!({})).await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("payment_method_update_required")));
    // No automatic retry hits the card either.
    r.advance(15, 0).await;
    let inv_id = detail.body["payments"][0]["invoice_id"].as_str().unwrap().to_owned();
    let inv = r.get(&format!("/v1/invoices/{inv_id}"), &merchant).await;
    assert_eq!(inv.body["attempt_count"], 1);
    assert_eq!(inv.body["status"], "error");
    // The merchant may re-activate the subscription; the invoice stays unpaid.
    let re = r.post(&format!("/v1/subscriptions/{sub_id}/reactivate"), &merchant, json!({})).await;
    assert_eq!(re.body["status"], "active");
    assert_eq!(r.get(&format!("/v1/invoices/{inv_id}"), &merchant).await.body["status"], "error");
    let cancel = r.post(&format!("/v1/subscriptions/{sub_id}/cancel"), &merchant, json!({})).await;
    assert_eq!(cancel.body["status"], "canceled");
    let twice = r.post(&format!("/v1/subscriptions/{sub_id}/cancel"), &merchant, json!({})).await;
    assert_eq!((twice.status, twice.body["code"].as_str()), (409, Some("invalid_state_transition")));
}

#[tokio::test]
async fn an_unanswered_charge_stays_pending_then_is_reconciled_not_recharged() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_sandbox_visa_timeout"})).await;
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 700, "currency": "usd"})).await;
    assert_eq!(inv.body["status"], "open");
    assert_eq!(inv.body["transactions"][0]["status"], "pending");
    assert_eq!(inv.body["charge"]["outcome"], "pending");
    let id = inv.body["id"].as_str().unwrap().to_owned();
    let busy = r.post(&format!("/v1/invoices/{id}/charge"), &merchant, json!({})).await;
    assert_eq!((busy.status, busy.body["code"].as_str()), (409, Some("charge_in_progress")));
    r.advance(0, 11).await;
    let inv = r.get(&format!("/v1/invoices/{id}"), &merchant).await;
    assert_eq!(inv.body["status"], "paid");
    assert_eq!(inv.body["attempt_count"], 1, "settled by idempotency key, not charged again");
}

#[tokio::test]
async fn mastercard_advice_codes_and_bank_transfers_work_over_http() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_sandbox_mastercard_51_advice24"})).await;
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 5000, "currency": "usd"})).await;
    let id = inv.body["id"].as_str().unwrap().to_owned();
    let early = r.post(&format!("/v1/invoices/{id}/charge"), &merchant, json!({})).await;
    assert_eq!((early.status, early.body["code"].as_str()), (409, Some("network_retry_limit")));
    assert_eq!(early.body["rule"], "mastercard_advice_delay");
    assert!(early.body["retry_after"].is_string());
    r.advance(0, 61).await;
    let later = r.post(&format!("/v1/invoices/{id}/charge"), &merchant, json!({})).await;
    assert_eq!(later.status, 402, "{}", later.body);
    assert_eq!(later.body["code"], "payment_declined");
    // The merchant reconciles a bank transfer instead.
    let paid = r.post(&format!("/v1/invoices/{id}/mark-paid"), &merchant, json!({"reference": "wire 2030-118"})).await;
    assert_eq!(paid.body["status"], "paid");
    let bank = r
        .post(
            "/v1/invoices",
            &merchant,
            json!({"customer_id": cus, "amount": 90000, "currency": "usd", "collection_method": "send_invoice"}),
        )
        .await;
    assert_eq!(bank.body["status"], "open");
    assert_eq!(bank.body["attempt_count"], 0, "bank-transfer invoices are not charged");
}

/// `recoup-local` with Stripe as the PSP (localstripe, started by `make test`): the same
/// walkthrough, with the card registered through a SetupIntent and charged through a
/// PaymentIntent; the sandbox's card form is off and the key never reaches the log.
#[tokio::test]
async fn the_local_product_charges_through_stripe_when_told_to() {
    let stripe = std::env::var("RECOUP_TEST_STRIPE_ENDPOINT")
        .expect("RECOUP_TEST_STRIPE_ENDPOINT is not set: run the tests with `make test`, which starts localstripe");
    let key = "sk_test_local_product_e2e_0123456789";
    let dir = std::env::temp_dir().join(format!("recoup-e2e-stripe-{}", support::uuid_like()));
    let whsec = format!("whsec_e2e_{}", support::uuid_like());
    let r = Runner::start_with(
        dir,
        &[
            ("RECOUP_PAYMENT_PROVIDER", "stripe"),
            ("RECOUP_STRIPE_API_BASE", &stripe),
            ("RECOUP_STRIPE_API_KEY", key),
            ("RECOUP_STRIPE_WEBHOOK_SECRET", &whsec),
        ],
    )
    .await;
    // Stripe (localstripe) sends its signed webhooks to the product's receiver.
    let hook = reqwest::Client::new()
        .post(format!("{stripe}/_config/webhooks/e2e-{}", support::uuid_like()))
        .form(&[("url", format!("{}/v1/webhooks/stripe", r.base)), ("secret", whsec.clone())])
        .send()
        .await
        .unwrap();
    assert!(hook.status().is_success());
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    let pm = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await;
    assert_eq!(pm.status, 201, "{}", pm.body);
    assert_eq!((pm.body["brand"].as_str(), pm.body["last4"].as_str()), (Some("visa"), Some("4242")));
    let declined =
        r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa_chargeDeclined"})).await;
    assert_eq!(declined.status, 402, "{}", declined.body);
    let unknown = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_nosuchcard"})).await;
    assert_eq!(unknown.status / 100, 4, "{}", unknown.body);
    assert_eq!(unknown.body["code"], "invalid_payment_method", "{}", unknown.body);

    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 2500, "currency": "usd"})).await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    assert_eq!(inv.body["status"], "paid");
    let pi = inv.body["transactions"][0]["psp_charge_id"].as_str().unwrap_or_default().to_owned();

    // The PaymentIntent's webhook arrives signed and is verified and settled (the attempt
    // was settled by the charge's answer already: nothing changes).
    let log = r.data_dir.join("server.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|l| {
            l.contains("PSP notice settled") && l.contains("payment_intent.succeeded") && l.contains("unchanged")
        }) {
            break;
        }
        assert!(!text.contains("bad signature"), "localstripe's signature was refused");
        assert!(std::time::Instant::now() < deadline, "no verified webhook for {pi} within 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Unsigned, the same route refuses and writes nothing.
    let forged = r
        .call(
            "POST",
            "/v1/webhooks/stripe",
            None,
            Some(json!({"id": "evt_forged", "type": "payment_intent.succeeded", "data": {"object": {}}})),
            None,
        )
        .await;
    assert_eq!((forged.status, forged.body["code"].as_str()), (400, Some("invalid_signature")));

    let form = r
        .call(
            "POST",
            "/sandbox/v1/payment_methods",
            None,
            Some(json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}})),
            None,
        )
        .await;
    assert_eq!(form.status, 404);
    let dir = r.stop().await;
    for (file, bytes) in files_under(&dir) {
        assert!(!String::from_utf8_lossy(&bytes).contains(key), "the Stripe key is in {}", file.display());
    }
}

/// The hosted card form's path as its page script drives it: the page is served with its
/// policy; a setup is begun for the owner; the card details go to the sandbox's card
/// endpoint (the PSP), never to the API; the card is registered with the setup's id.
#[tokio::test]
async fn the_hosted_card_form_is_served_and_its_setup_registers_a_card() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (customer, owner, member) = r.customer(&merchant).await;

    let page = r.call("GET", "/portal/card-form", None, None, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'; script-src 'nonce-"), "{csp}");
    let html = page.body.as_str().unwrap();
    assert!(
        html.contains(r#""sandbox_tokenize_url":"/sandbox/v1/payment_methods""#),
        "the page posts card details to the sandbox"
    );
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
    assert!(html.contains(&format!(r#"<script nonce="{nonce}">"#)), "the page's script carries the policy's nonce");

    assert_eq!(r.post("/v1/payment-methods/setup-intents", &member, json!({})).await.status, 403);
    let setup = r.post("/v1/payment-methods/setup-intents", &owner, json!({})).await;
    assert_eq!(setup.status, 201, "{}", setup.body);
    assert_eq!(setup.body["provider"], "sandbox");
    assert_eq!(setup.body["customer_id"], customer.as_str());
    let setup_id = setup.body["id"].as_str().unwrap();

    let token = r.tokenize("4000056655665556").await;
    let saved = r
        .post(
            "/v1/payment-methods",
            &owner,
            json!({"payment_method": token, "setup_intent": setup_id, "set_default": true}),
        )
        .await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    assert_eq!((saved.body["last4"].as_str(), saved.body["funding"].as_str()), (Some("5556"), Some("debit")));
    assert_eq!(saved.body["country"], "US");

    // Another customer's owner cannot use this setup.
    let (_, other_owner, _) = r.customer(&merchant).await;
    let stolen =
        r.post("/v1/payment-methods", &other_owner, json!({"payment_method": token, "setup_intent": setup_id})).await;
    assert_eq!((stolen.status, stolen.body["code"].as_str()), (400, Some("invalid_setup_intent")), "{}", stolen.body);

    // `setup-intents` is a resource of its own, not a payment method id.
    let wrong = r.call("DELETE", "/v1/payment-methods/setup-intents", Some(&owner), None, None).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.headers["allow"], "POST");
}

/// Seed 000 from the API: a bank-transfer customer's owner switches to the card; the
/// merchant may switch either way; members and other customers may not.
#[tokio::test]
async fn a_bank_transfer_customer_switches_to_the_card_through_the_api() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let created = r
        .post("/v1/customers", &merchant, json!({"email": "ops@example.com", "collection_method": "send_invoice"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["collection_method"], "send_invoice");
    let cus = created.body["id"].as_str().unwrap().to_owned();
    let owner = Runner::token("owner", Some(&cus));
    let member = Runner::token("member", Some(&cus));
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 7700, "currency": "usd"})).await;
    assert_eq!(inv.body["collection_method"], "send_invoice", "the customer's method: {}", inv.body);
    assert!(inv.body["charge"].is_null());

    let path = format!("/v1/customers/{cus}/collection-method");
    let to_card = json!({"collection_method": "charge_automatically"});
    let no_card = r.post(&path, &owner, to_card.clone()).await;
    assert_eq!((no_card.status, no_card.body["code"].as_str()), (409, Some("no_payment_method")), "{}", no_card.body);
    assert_eq!(r.post(&path, &member, to_card.clone()).await.status, 403);
    let (_, other_owner, _) = r.customer(&merchant).await;
    assert_eq!(r.post(&path, &other_owner, to_card.clone()).await.status, 404);
    let back = r.post(&path, &owner, json!({"collection_method": "send_invoice"})).await;
    assert_eq!(back.status, 403, "only the merchant moves a customer to bank transfer");

    let token = r.tokenize("4242424242424242").await;
    let pm = r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await;
    assert_eq!(pm.status, 201);
    let switched = r.post(&path, &owner, to_card).await;
    assert_eq!(switched.status, 200, "{}", switched.body);
    assert_eq!(switched.body["collection_method"], "charge_automatically");
    let paid = r.get(&format!("/v1/invoices/{}", inv.body["id"].as_str().unwrap()), &owner).await;
    assert_eq!(paid.body["status"], "paid", "saving the card charged what was owed: {}", paid.body);
    let next = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 500, "currency": "usd"})).await;
    assert_eq!(next.body["collection_method"], "charge_automatically");
    assert_eq!(next.body["status"], "paid");
    let merchant_back = r.post(&path, &merchant, json!({"collection_method": "send_invoice"})).await;
    assert_eq!(merchant_back.body["collection_method"], "send_invoice");
}
