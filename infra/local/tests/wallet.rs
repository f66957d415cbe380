//! The wallet API through the local product: who may do what, refills charged to a card
//! and credited once, declines and bad input answered with stable codes, debits that never
//! overdraw, and an automatic refill started by a debit.

mod support;

use serde_json::json;
use support::Runner;

#[tokio::test]
async fn the_wallet_api_refills_debits_and_refills_automatically() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, member) = r.customer(&merchant).await;
    let card = r.tokenize("4242424242424242").await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": card})).await;

    // Bad input: stable codes, nothing written.
    for (body, code) in [
        (json!({"amount": 0, "currency": "usd"}), "invalid_amount"),
        (json!({"amount": -5, "currency": "usd"}), "invalid_amount"),
        (json!({"amount": 10.5, "currency": "usd"}), "invalid_amount"),
        (json!({"amount": 100_001, "currency": "usd"}), "invalid_amount"),
        (json!({"amount": 500, "currency": "xxx"}), "invalid_currency"),
        (json!({"amount": 500, "currency": "usd", "card": "4242424242424242"}), "raw_card_data_refused"),
    ] {
        let reply = r.post("/v1/wallet/refills", &owner, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.body["code"], code, "{body}: {}", reply.body);
    }
    assert_eq!(r.get("/v1/wallet", &owner).await.body["data"], json!([]));

    // Only the owner refills; a member sees no wallet.
    let refused = r.post("/v1/wallet/refills", &merchant, json!({"amount": 500, "currency": "usd"})).await;
    assert_eq!(refused.status, 403);
    assert_eq!(r.get("/v1/wallet", &member).await.status, 403);

    // A refill is charged and credited; a retry with its key charges nothing more.
    let key = Some("refill-1");
    let first = r.call("POST", "/v1/wallet/refills", Some(&owner), Some(json!({"amount": 2500, "currency": "usd"})), key).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["status"], "succeeded");
    assert_eq!(first.body["wallet"]["balance"], 2500);
    assert_eq!(first.body["invoice"]["status"], "paid");
    let again = r.call("POST", "/v1/wallet/refills", Some(&owner), Some(json!({"amount": 2500, "currency": "usd"})), key).await;
    assert_eq!(again.body["invoice_id"], first.body["invoice_id"]);
    let wallets = r.get(&format!("/v1/wallet?customer_id={cus}"), &merchant).await;
    assert_eq!(wallets.body["data"][0]["balance"], 2500);

    // A declining card: 402 with the customer's advice; nothing credited, nothing owed.
    let bad = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_chargeCustomerFail"})).await;
    let declined = r
        .post(
            "/v1/wallet/refills",
            &owner,
            json!({"amount": 1000, "currency": "usd", "payment_method": bad.body["id"]}),
        )
        .await;
    assert_eq!(declined.status, 402, "{}", declined.body);
    assert_eq!(declined.body["code"], "payment_declined");
    assert_eq!(declined.body["refill"]["invoice"]["status"], "void");
    assert_eq!(declined.body["refill"]["wallet"]["balance"], 2500);

    // Debits: the merchant's, never past zero.
    let debit = |amount: i64| json!({"customer_id": cus, "amount": amount, "currency": "usd", "description": "API calls"});
    assert_eq!(r.post("/v1/wallet/debits", &owner, debit(100)).await.status, 403);
    let short = r.post("/v1/wallet/debits", &merchant, debit(2501)).await;
    assert_eq!((short.status, short.body["code"].as_str()), (409, Some("insufficient_balance")), "{}", short.body);

    // Automatic refill: a debit under the threshold refills from the default card.
    let set = r
        .post("/v1/wallet/auto-refill", &owner, json!({"currency": "usd", "enabled": true, "threshold": 1000, "amount": 5000}))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let bad_settings = r
        .post("/v1/wallet/auto-refill", &owner, json!({"currency": "usd", "enabled": true, "threshold": 5000, "amount": 1000}))
        .await;
    assert_eq!(bad_settings.body["code"], "invalid_request");
    let d = r.post("/v1/wallet/debits", &merchant, debit(2000)).await;
    assert_eq!(d.status, 201, "{}", d.body);
    assert_eq!(d.body["balance_after"], 500);
    assert!(d.body["auto_refill_invoice_id"].is_string(), "{}", d.body);
    let entries = r.get("/v1/wallet/entries?currency=usd", &owner).await.body;
    let amounts: Vec<i64> = entries["data"].as_array().unwrap().iter().map(|e| e["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [5000, -2000, 2500], "newest first");
    assert_eq!(entries["data"][0]["balance_after"], 5500);
    r.tick().await;
    let kinds = r.event_types().await;
    for k in ["wallet.refilled", "wallet.refill_failed", "wallet.low_balance"] {
        assert!(kinds.iter().any(|e| e == k), "{k} in {kinds:?}");
    }
}
