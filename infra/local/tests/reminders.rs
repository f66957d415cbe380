//! Card-expiry reminders on the local product, driven by its dev clock: a card that
//! expires at the end of next month is reminded once (event and email), and an expired
//! default card of an active subscription is reported.

mod support;

use chrono::{Datelike, TimeDelta};
use serde_json::{Value, json};
use support::Runner;

async fn now(r: &Runner) -> chrono::DateTime<chrono::Utc> {
    let clock = r.call("GET", "/v1/dev/clock", None, None, None).await.body;
    clock["now"].as_str().unwrap().parse().unwrap()
}

async fn card(r: &Runner, owner: &str, number: &str, month: u32, year: i32) -> Value {
    let token = r
        .call(
            "POST",
            "/sandbox/v1/payment_methods",
            None,
            Some(json!({"card": {"number": number, "exp_month": month, "exp_year": year, "cvc": "123"}})),
            None,
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.body);
    let pm = r.post("/v1/payment-methods", owner, json!({"payment_method": token.body["id"]})).await;
    assert_eq!(pm.status, 201, "{}", pm.body);
    pm.body
}

async fn emails_of(r: &Runner, template: &str) -> Vec<Value> {
    let all = r.call("GET", "/v1/dev/emails", None, None, None).await.body;
    all["data"].as_array().unwrap().iter().filter(|e| e["template"] == template).cloned().collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

#[tokio::test]
async fn a_card_expiring_next_month_is_reminded_once_and_an_expired_default_card_is_reported() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let today = now(&r).await;
    let next = today.with_day(1).unwrap() + TimeDelta::days(40);
    let (month, year) = (next.month(), next.year());

    let (cus, owner, _) = r.customer(&merchant).await;
    let expiring = card(&r, &owner, "4242424242424242", month, year).await;
    let sub = r
        .post(
            "/v1/subscriptions",
            &merchant,
            json!({"customer_id": cus, "amount": 1500, "currency": "eur", "interval": "month"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    // Another customer's card that expires years later: no reminder.
    let (_, other_owner, _) = r.customer(&merchant).await;
    card(&r, &other_owner, "5555555555554444", 12, year + 3).await;

    r.tick().await;
    let kinds = r.event_types().await;
    assert_eq!(count(&kinds, "payment_method.expiring"), 1, "{kinds:?}");
    let reminders = emails_of(&r, "card_expiring").await;
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0]["subject"], "Your Visa card ending 4242 expires soon");
    let body = reminders[0]["body"].as_str().unwrap();
    assert!(body.contains(&format!("{month:02}/{year}")) && body.contains("/portal"), "{body}");
    assert!(r.data_dir.join("emails").join(reminders[0]["message_id"].as_str().unwrap()).exists());

    // The next sweeps find the reminder made.
    r.tick().await;
    r.advance(1, 0).await;
    assert_eq!(count(&r.event_types().await, "payment_method.expiring"), 1);
    assert_eq!(emails_of(&r, "card_expiring").await.len(), 1);

    // Past the card's month: the default card of an active subscription has expired.
    let lapsed = chrono::NaiveDate::from_ymd_opt(year, month, 1).unwrap() + chrono::Months::new(1);
    let days = (lapsed - today.date_naive()).num_days() + 1;
    r.advance(days, 0).await;
    let card_view = r.get("/v1/payment-methods", &owner).await.body["data"][0].clone();
    assert_eq!(card_view["id"], expiring["id"]);
    assert_eq!(card_view["status"], "expired", "{card_view}");
    let kinds = r.event_types().await;
    assert_eq!(count(&kinds, "payment_method.expired"), 1, "{kinds:?}");
    r.tick().await;
    assert_eq!(count(&r.event_types().await, "payment_method.expired"), 1, "reported once");
}
