//! The billing portal through the local product: a merchant's signed link opens a session
//! cookie, and the page shows the customer's bills, cards and subscriptions; forged,
//! altered and expired links get a 401 page; a member sees no cards.

mod support;

use serde_json::json;
use support::Runner;

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn get(r: &Runner, path: &str, cookie: Option<&str>) -> Page {
    let mut req = browser().get(format!("{}{path}", r.base));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Page { status, headers, body: resp.text().await.unwrap() }
}

/// Opens a portal link as a browser would; answers the session cookie (`name=value`).
async fn open(r: &Runner, url: &str) -> String {
    let path = url.split_once("/portal").map(|(_, rest)| format!("/portal{rest}")).unwrap();
    let page = get(r, &path, None).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.headers["location"], "/portal");
    let set = page.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/portal"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

async fn link(r: &Runner, merchant: &str, body: serde_json::Value) -> String {
    let reply = r.post("/v1/portal-sessions", merchant, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["object"], "portal_session");
    reply.body["url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_portal_link_opens_the_customers_billing_page() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    let token = r.tokenize("4242424242424242").await;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": token})).await;
    let paid = r
        .post(
            "/v1/invoices",
            &merchant,
            json!({"customer_id": cus, "amount": 2500, "currency": "usd", "description": "Pro plan"}),
        )
        .await;
    assert_eq!(paid.body["status"], "paid");
    // A second card that declines everything, made the default: the next bill fails.
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_chargeCustomerFail", "set_default": true}))
        .await;
    let failed = r
        .post(
            "/v1/invoices",
            &merchant,
            json!({"customer_id": cus, "amount": 500, "currency": "jpy", "description": "Add-on"}),
        )
        .await;
    assert_eq!(failed.body["status"], "open");

    // The payment-failed email links the billing page with a signed link of its own.
    r.tick().await;
    let emails = r.call("GET", "/v1/dev/emails", None, None, None).await.body;
    let failed_email = emails["data"].as_array().unwrap().iter().find(|e| e["template"] == "payment_failed").cloned();
    let body = failed_email.expect("a payment_failed email")["body"].as_str().unwrap().to_owned();
    let emailed = body.split_whitespace().find(|w| w.contains("/portal/session?token=")).expect("a portal link");
    let from_email = open(&r, emailed).await;
    assert_eq!(get(&r, "/portal", Some(&from_email)).await.status, 200);

    let url = link(&r, &merchant, json!({"customer_id": cus})).await;
    assert!(url.starts_with("http://127.0.0.1:8080/portal/session?token="), "{url}");
    let cookie = open(&r, &url).await;
    let page = get(&r, "/portal", Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'") && !csp.contains("script-src"), "no script at all: {csp}");
    assert!(page.body.contains("Billing &amp; Plans") && page.body.contains("ada@example.com"));
    assert!(page.body.contains("$25.00") && page.body.contains(">Paid<"), "the paid bill");
    assert!(page.body.contains("¥500") && page.body.contains(">Payment failed<"), "the failed bill");
    assert!(page.body.contains("visa ending 4242"), "the owner sees the cards");
    assert!(!page.body.contains("<script"), "no script");

    // A member's link: bills only.
    let member = open(&r, &link(&r, &merchant, json!({"customer_id": cus, "role": "member"})).await).await;
    let page = get(&r, "/portal", Some(&member)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("$25.00") && !page.body.contains("ending 4242"), "no cards for members");
}

#[tokio::test]
async fn forged_altered_expired_and_missing_links_get_a_401_page() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, _, _) = r.customer(&merchant).await;
    let (other, _, _) = r.customer(&merchant).await;
    let url = link(&r, &merchant, json!({"customer_id": cus, "expires_in": 60})).await;
    let token = url.split("token=").nth(1).unwrap().to_owned();

    for bad in ["", "nonsense", "abc.def"] {
        let page = get(&r, &format!("/portal/session?token={bad}"), None).await;
        assert_eq!(page.status, 401, "{bad}");
        assert!(page.body.contains("This link is not valid"));
    }
    // Another customer's id with this link's signature.
    let other_url = link(&r, &merchant, json!({"customer_id": other})).await;
    let (other_payload, _) = other_url.split("token=").nth(1).unwrap().split_once('.').unwrap();
    let (_, tag) = token.split_once('.').unwrap();
    assert_eq!(get(&r, &format!("/portal/session?token={other_payload}.{tag}"), None).await.status, 401);
    // No session, or a made-up one.
    assert_eq!(get(&r, "/portal", None).await.status, 401);
    assert_eq!(get(&r, "/portal", Some("recoup_portal=made.up")).await.status, 401);
    // Expired: a link of a minute, two minutes later (links expire by the product's clock).
    r.advance(0, 2).await;
    let page = get(&r, &format!("/portal/session?token={token}"), None).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("expired"), "{}", page.body);

    for (body, field) in [
        (json!({"customer_id": cus, "expires_in": 10}), "expires_in"),
        (json!({"customer_id": cus, "expires_in": 999_999_999}), "expires_in"),
        (json!({"customer_id": cus, "role": "admin"}), ""),
    ] {
        let reply = r.post("/v1/portal-sessions", &merchant, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        if !field.is_empty() {
            assert_eq!(reply.body["field"], field);
        }
    }
    let owner = Runner::token("owner", Some(&cus));
    assert_eq!(r.post("/v1/portal-sessions", &owner, json!({"customer_id": cus})).await.status, 403);
    assert_eq!(
        r.post("/v1/portal-sessions", &merchant, json!({"customer_id": "cus_00000000000000000000000000"})).await.status,
        404
    );
}
