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
//! Every page has a strict Content-Security-Policy: no script at all, its one style by
//! nonce, forms to itself only, and no framing.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_shared::domain::portal::{PortalClaims, PortalRole, SESSION_TTL, TokenKind, sign, verify};
use recoup_shared::domain::{InvoiceStatus, PaymentMethodStatus};
use recoup_shared::error::Error;
use serde_json::{Value, json};

pub const COOKIE: &str = "recoup_portal";

const PAGE: &str = include_str!("portal.html");
const DENIED: &str = include_str!("denied.html");

fn environment() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.add_template("portal.html", PAGE).expect("the portal page parses");
        env.add_template("denied.html", DENIED).expect("the denied page parses");
        env
    })
}

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
    let body = environment()
        .get_template("denied.html")
        .and_then(|t| t.render(json!({ "reason": reason })))
        .unwrap_or_else(|_| "This link is not valid.".to_owned());
    html(401, body, &nonce)
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

/// The session a request carries, or the page that says why there is none.
async fn session(app: &App, req: &Request) -> Result<PortalClaims, Response<Body>> {
    let secrets = secrets(app).await?;
    let value = cookie(req, COOKIE).ok_or_else(|| denied("You are not signed in to the billing page"))?;
    verify(&secrets, value, TokenKind::Session, app.services.now()).map_err(|_| denied("Your session has ended"))
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
async fn page_values(app: &App, session: &PortalClaims) -> Result<Value, Error> {
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
            json!({
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
        "owner": owner,
        "invoices": invoices,
        "cards": cards,
        "subscriptions": subscriptions,
    }))
}

/// `GET /portal`.
pub async fn portal(app: &App, req: &Request) -> Response<Body> {
    let session = match session(app, req).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut values = match page_values(app, &session).await {
        Ok(v) => v,
        Err(e) => {
            e.log_at_edge("portal");
            return denied("The billing page is not available right now");
        }
    };
    values["nonce"] = json!(nonce);
    match environment().get_template("portal.html").and_then(|t| t.render(&values)) {
        Ok(body) => html(200, body, &nonce),
        Err(e) => {
            tracing::error!(error = %e, "the portal page did not render");
            denied("The billing page is not available right now")
        }
    }
}
