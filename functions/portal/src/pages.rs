//! The billing portal's pages, server-rendered, no script: a signed link from
//! `POST /v1/portal-sessions` (or an email) opens a session held in a cookie, and
//! `GET /portal` shows the customer's bills, cards (the owner only: seed 001) and
//! subscriptions, with a banner and the fix when a subscription is errored.
//!
//! - `GET /portal/session?token=<link>`: verifies the link (signature, expiry), sets the
//!   session cookie (`HttpOnly; Secure; SameSite=Lax`, path `/portal`) and redirects to
//!   `/portal`, so the link's token leaves the address bar.
//! - `GET /portal`: the page for the session's customer; without a valid session, a 401
//!   page.
//!
//! - `POST /portal/payment-methods/{id}/default`, `POST /portal/payment-methods/{id}/remove`,
//!   `POST /portal/invoices/{id}/pay` ("Pay now", with the default card): the owner's
//!   forms, each with the session's CSRF token; then back to `/portal` with a notice
//!   (the removal rule's reason, or the decline as the customer may read it).
//!
//! Every page has a strict Content-Security-Policy: no script at all, its one style by
//! nonce, forms to itself only, and no framing.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_shared::domain::decline::ErrorType;
use recoup_shared::domain::invoice::AttemptTrigger;
use recoup_shared::domain::portal::{PortalClaims, PortalRole, SESSION_TTL, TokenKind, csrf_token, sign, verify};
use recoup_shared::domain::{InvoiceStatus, PaymentMethodStatus};
use recoup_shared::error::Error;
use recoup_shared::ids::{InvoiceId, PaymentMethodId};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome};
use serde_json::{Value, json};

pub const COOKIE: &str = "recoup_portal";

fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

fn html(status: u16, body: String, nonce: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", csp(nonce))
        .header("cache-control", "no-store")
        .header("referrer-policy", "no-referrer")
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

/// The 401 page, saying why in words a customer understands.
pub fn denied(reason: &str) -> Response<Body> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    html(401, crate::html::denied(reason, &nonce), &nonce)
}

async fn secrets(app: &App) -> Result<Vec<String>, Response<Body>> {
    let Some(source) = &app.portal_secrets else {
        tracing::error!("the portal has no signing secret (RECOUP_PORTAL_SECRET_ARN)");
        return Err(denied("The billing page is not available right now"));
    };
    match source.values().await {
        Ok(values) if !values.is_empty() => Ok(values),
        Ok(_) | Err(_) => {
            tracing::error!("the portal's signing secret could not be read");
            Err(denied("The billing page is not available right now"))
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|header| header.split(';').map(str::trim).find_map(|c| c.strip_prefix(name)?.strip_prefix('=')))
}

/// `GET /portal/session?token=`: a valid link starts a session.
pub async fn open_session(app: &App, req: &Request) -> Response<Body> {
    let secrets = match secrets(app).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let token = req.uri().query().and_then(|q| query_param(q, "token")).unwrap_or("");
    let now = app.services.now();
    let link = match verify(&secrets, token, TokenKind::Link, now) {
        Ok(claims) => claims,
        Err(e) => return denied(&e.to_string()),
    };
    let session = PortalClaims::new(TokenKind::Session, link.customer_id, link.role, now + SESSION_TTL);
    let value = sign(&secrets[0], &session);
    Response::builder()
        .status(303)
        .header("location", "/portal")
        .header(
            "set-cookie",
            format!(
                "{COOKIE}={value}; Path=/portal; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
                SESSION_TTL.num_seconds()
            ),
        )
        .header("cache-control", "no-store")
        .header("referrer-policy", "no-referrer")
        .body(Body::Empty)
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

async fn session_and_secrets(app: &App, req: &Request) -> Result<(PortalClaims, Vec<String>), Response<Body>> {
    let secrets = secrets(app).await?;
    let value = cookie(req, COOKIE).ok_or_else(|| denied("You are not signed in to the billing page"))?;
    let claims = verify(&secrets, value, TokenKind::Session, app.services.now())
        .map_err(|_| denied("Your session has ended"))?;
    Ok((claims, secrets))
}

/// What a notice code (after an action) says to the customer.
fn notice_text(code: &str, reason: Option<&str>) -> String {
    match code {
        "default_set" => "Your default card has been changed.".into(),
        "removed" => "The card has been removed.".into(),
        "paid" => "Thank you: the bill is paid.".into(),
        "pending" => "Your bank has not answered yet; the bill will show Paid once it does.".into(),
        "declined" => {
            let advice = reason
                .and_then(|r| ErrorType::ALL.into_iter().find(|t| t.as_str() == r))
                .unwrap_or(ErrorType::Declined)
                .for_customer()
                .customer_advice();
            format!("The payment did not go through. {advice}")
        }
        "default_payment_method" => {
            "Your default card cannot be removed while you have other cards: make another card the default first."
                .into()
        }
        "last_payment_method_with_active_subscription" => {
            "Your only card cannot be removed while a subscription will bill again: add another card first.".into()
        }
        "pending_transactions" => "This card has a payment in progress: try again once it has completed.".into(),
        "invoice_already_paid" => "This bill is already paid.".into(),
        "charge_in_progress" => "A payment of this bill is already in progress.".into(),
        "no_payment_method" => "Add a card first.".into(),
        "payment_method_update_required" => "This card cannot pay this bill: add another card.".into(),
        "network_retry_limit" => "Your card cannot be tried again just now: try later or add another card.".into(),
        "customer_authentication_required" => {
            "Your bank asks you to confirm this payment, which this page cannot do yet: contact us.".into()
        }
        _ => "That did not work. Try again, or contact us.".into(),
    }
}

fn see_other(location: &str) -> Response<Body> {
    Response::builder()
        .status(303)
        .header("location", location)
        .header("cache-control", "no-store")
        .body(Body::Empty)
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn refused(message: &str) -> Response<Body> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    html(403, crate::html::refused(message, &nonce), &nonce)
}

/// `POST /portal/...`: an owner's form. Checks the session and its CSRF token, acts, and
/// goes back to the page with a notice.
pub async fn action(app: &App, req: &Request) -> Response<Body> {
    let (session, secrets) = match session_and_secrets(app, req).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let body: &[u8] = req.body().as_ref();
    let sent = form_field(body, "csrf").unwrap_or_default();
    let expected = csrf_token(&secrets[0], &session);
    let csrf_ok =
        sent.len() == expected.len() && sent.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !csrf_ok {
        return refused("This form has expired: reload the page and try again.");
    }
    if session.role != PortalRole::Owner {
        return refused("Only the account's owner manages payments.");
    }
    let s = &app.services;
    let customer = &session.customer_id;
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let outcome: Result<String, Error> = match parts.as_slice() {
        ["portal", "payment-methods", id, verb @ ("default" | "remove")] => {
            let Some(card) = PaymentMethodId::parse(id) else { return see_other("/portal?notice=not_found") };
            if *verb == "default" {
                s.set_default_payment_method(customer, &card).await.map(|_| "default_set".to_owned())
            } else {
                s.remove_payment_method(customer, &card).await.map(|()| "removed".to_owned())
            }
        }
        ["portal", "invoices", id, "pay"] => {
            let Some(invoice) = InvoiceId::parse(id) else { return see_other("/portal?notice=not_found") };
            match s.invoice(&invoice).await {
                Ok(inv) if inv.customer_id == *customer => s
                    .charge_invoice(&invoice, CardChoice::Default, AttemptTrigger::Customer)
                    .await
                    .map(|report| match report.outcome {
                        ChargeOutcome::Paid => "paid".to_owned(),
                        ChargeOutcome::Pending => "pending".to_owned(),
                        ChargeOutcome::Declined => {
                            let reason = report.transaction.error_type().unwrap_or(ErrorType::Declined);
                            format!("declined&reason={}", reason.for_customer().as_str())
                        }
                    }),
                Ok(_) | Err(_) => return see_other("/portal?notice=not_found"),
            }
        }
        _ => return denied("No such page"),
    };
    let notice = match outcome {
        Ok(code) => code,
        Err(e) => {
            e.log_at_edge("portal");
            e.code.as_str().to_owned()
        }
    };
    see_other(&format!("/portal?notice={notice}"))
}

fn status_label(status: InvoiceStatus, failed: bool) -> (&'static str, &'static str) {
    match status {
        InvoiceStatus::Paid => ("Paid", "paid"),
        InvoiceStatus::Error => ("Error", "error"),
        InvoiceStatus::Open if failed => ("Payment failed", "payment_failed"),
        InvoiceStatus::Open | InvoiceStatus::Draft => ("Open", "open"),
        InvoiceStatus::Void => ("Void", "void"),
    }
}

fn card_label(status: PaymentMethodStatus) -> &'static str {
    match status {
        PaymentMethodStatus::Valid => "Valid",
        PaymentMethodStatus::Expiring => "Expiring soon",
        PaymentMethodStatus::Expired => "Expired",
        PaymentMethodStatus::Invalid => "Unusable",
    }
}

/// What the page shows for the session's customer.
async fn page_values(app: &App, session: &PortalClaims, secret: &str) -> Result<Value, Error> {
    let s = &app.services;
    let customer = s.customer(&session.customer_id).await?;
    let invoices = s.list_invoices(&customer.id, 50, None).await?.items;
    let invoices: Vec<Value> = invoices
        .iter()
        .map(|inv| {
            let last = inv.last_transaction();
            let failed = last.is_some_and(|t| t.error_type().is_some());
            let (status, class) = status_label(inv.status(), failed);
            let reason = match inv.status() {
                InvoiceStatus::Open | InvoiceStatus::Error => {
                    last.and_then(|t| t.error_type()).map(|e| e.for_customer().customer_advice())
                }
                InvoiceStatus::Paid | InvoiceStatus::Void | InvoiceStatus::Draft => None,
            };
            let payable = matches!(inv.status(), InvoiceStatus::Open | InvoiceStatus::Error);
            json!({
                "id": inv.id,
                "payable": payable,
                "date": inv.created_at.format("%Y-%m-%d").to_string(),
                "description": inv.description,
                "amount": inv.amount.for_people(),
                "status": status,
                "status_class": class,
                "reason": reason,
            })
        })
        .collect();
    let owner = session.role == PortalRole::Owner;
    let cards: Vec<Value> = if owner {
        s.list_payment_methods(&customer.id)
            .await?
            .iter()
            .map(|c| {
                json!({
                    "id": c.method.id,
                    "brand": c.method.brand.as_str(),
                    "last4": c.method.last4,
                    "expiry": format!("{:02}/{}", c.method.expiry.month(), c.method.expiry.year()),
                    "is_default": c.is_default,
                    "status": serde_json::to_value(c.status).unwrap_or_default(),
                    "status_label": card_label(c.status),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut subscriptions = Vec::new();
    for id in &customer.subscription_ids {
        let sub = s.subscription(id).await?;
        subscriptions.push(json!({
            "description": sub.plan.description,
            "status": sub.status().as_str(),
            "renews": sub.current_period().1.format("%Y-%m-%d").to_string(),
        }));
    }
    Ok(json!({
        "email": customer.email,
        "csrf": csrf_token(secret, session),
        "owner": owner,
        "invoices": invoices,
        "cards": cards,
        "subscriptions": subscriptions,
    }))
}

/// `GET /portal`.
pub async fn portal(app: &App, req: &Request) -> Response<Body> {
    let (session, secrets) = match session_and_secrets(app, req).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut values = match page_values(app, &session, &secrets[0]).await {
        Ok(v) => v,
        Err(e) => {
            e.log_at_edge("portal");
            return denied("The billing page is not available right now");
        }
    };
    let query = req.uri().query().unwrap_or("");
    if let Some(code) = query_param(query, "notice") {
        values["notice"] = json!(notice_text(code, query_param(query, "reason")));
    }
    html(200, crate::html::portal(&values, &nonce), &nonce)
}
