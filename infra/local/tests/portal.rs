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
    // Relative, so it stays under whatever the browser's address starts with (a stage).
    assert_eq!(page.headers["location"], "../portal");
    let set = page.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(set.contains(attr), "{set}");
    }
    // No Path: the browser scopes the cookie to the folder of the address it used.
    assert!(!set.contains("Path="), "{set}");
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
    // Each attempt, with the reason the customer may read.
    assert!(page.body.contains("<summary>Attempts (1)</summary>") && page.body.contains(": Did not go through. "), "the attempts");
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

/// The session's CSRF token, as the page's forms carry it.
fn csrf(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + r#"name="csrf" value=""#.len();
    page[at..at + 64].to_owned()
}

async fn post_form(r: &Runner, path: &str, cookie: &str, form: &str) -> Page {
    let resp = browser()
        .post(format!("{}{path}", r.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Page { status, headers, body: resp.text().await.unwrap() }
}

/// Follows a form's redirect and answers the notice the page shows.
async fn notice(r: &Runner, reply: &Page, cookie: &str) -> String {
    assert_eq!(reply.status, 303, "{}", reply.body);
    // Relative to the form's address: up to the API's root, then the page.
    let location = reply.headers["location"].to_str().unwrap().to_owned();
    let page_path = location.trim_start_matches("../");
    assert!(page_path.starts_with("portal?notice="), "{location}");
    let page = get(r, &format!("/{page_path}"), Some(cookie)).await;
    let at = page.body.find(r#"role="status">"#).expect("a notice") + r#"role="status">"#.len();
    page.body[at..].split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_owner_sets_the_default_card_removes_cards_under_the_rules_and_pays_a_failed_bill_once() {
    let r = Runner::start().await;
    let merchant = Runner::token("merchant", None);
    let (cus, owner, _) = r.customer(&merchant).await;
    let good = r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_visa"})).await.body;
    r.post("/v1/payment-methods", &owner, json!({"payment_method": "pm_card_chargeCustomerFail", "set_default": true}))
        .await;
    let inv = r.post("/v1/invoices", &merchant, json!({"customer_id": cus, "amount": 4200, "currency": "eur"})).await;
    assert_eq!(inv.body["status"], "open");
    let inv_id = inv.body["id"].as_str().unwrap().to_owned();

    let cookie = open(&r, &link(&r, &merchant, json!({"customer_id": cus})).await).await;
    let page = get(&r, "/portal", Some(&cookie)).await.body;
    assert!(page.contains("€42.00") && page.contains(">Payment failed<") && page.contains("Pay now"));
    let token = csrf(&page);

    // Forms need the session's CSRF token, and the owner's session.
    let forged = post_form(&r, &format!("/portal/invoices/{inv_id}/pay"), &cookie, "csrf=0").await;
    assert_eq!(forged.status, 403);
    let member = open(&r, &link(&r, &merchant, json!({"customer_id": cus, "role": "member"})).await).await;
    let by_member = post_form(&r, &format!("/portal/invoices/{inv_id}/pay"), &member, &format!("csrf={token}")).await;
    assert_eq!(by_member.status, 403, "another session's token, and a member's session");

    // "Pay now" with the declining default card: the decline, as the customer may read it.
    let declined = post_form(&r, &format!("/portal/invoices/{inv_id}/pay"), &cookie, &format!("csrf={token}")).await;
    assert!(notice(&r, &declined, &cookie).await.starts_with("The payment did not go through."));

    // The default card cannot be removed while another card exists: the rule's reason.
    let default_id = r.get("/v1/payment-methods", &owner).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["is_default"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused =
        post_form(&r, &format!("/portal/payment-methods/{default_id}/remove"), &cookie, &format!("csrf={token}")).await;
    assert!(notice(&r, &refused, &cookie).await.contains("default card cannot be removed"));

    // The good card made the default; then two clicks on "Pay now" at once: one charge.
    let good_id = good["id"].as_str().unwrap();
    let set =
        post_form(&r, &format!("/portal/payment-methods/{good_id}/default"), &cookie, &format!("csrf={token}")).await;
    assert_eq!(notice(&r, &set, &cookie).await, "Your default card has been changed.");
    let pay = format!("/portal/invoices/{inv_id}/pay");
    let form = format!("csrf={token}");
    let (a, b) = tokio::join!(post_form(&r, &pay, &cookie, &form), post_form(&r, &pay, &cookie, &form));
    let notices = [notice(&r, &a, &cookie).await, notice(&r, &b, &cookie).await];
    assert!(notices.iter().any(|n| n == "Thank you: the bill is paid."), "{notices:?}");
    let paid = r.get(&format!("/v1/invoices/{inv_id}"), &owner).await.body;
    assert_eq!(paid["status"], "paid");
    let succeeded = paid["transactions"].as_array().unwrap().iter().filter(|t| t["status"] == "succeeded").count();
    assert_eq!(succeeded, 1, "one charge for two clicks: {paid}");
    let page = get(&r, "/portal", Some(&cookie)).await.body;
    assert!(page.contains(">Paid<") && !page.contains("Pay now"));

    // Now the declining card is not the default: it can be removed.
    let removed =
        post_form(&r, &format!("/portal/payment-methods/{default_id}/remove"), &cookie, &format!("csrf={token}")).await;
    assert_eq!(notice(&r, &removed, &cookie).await, "The card has been removed.");
}
