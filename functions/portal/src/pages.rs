//! The billing portal's pages, server-rendered, no script: a signed link from
//! `POST /v1/portal-sessions` (or an email) opens a session held in a cookie, and
//! `GET /portal` shows the customer's bills, cards (the owner only: seed 001) and
//! subscriptions, with a banner and the fix when a subscription is errored.
//!
//! - `GET /portal/session?token=<link>`: verifies the link (signature, expiry), sets the
//!   session cookie (`HttpOnly; Secure; SameSite=Lax`; no `Path`, so the browser scopes it
//!   to the `portal` folder of whatever address it used) and redirects to the page, so the
//!   link's token leaves the address bar. Every link, form and redirect is relative: the
//!   pages work behind a named API Gateway stage (`/prod/portal`), a custom domain, or
//!   locally, without knowing which.
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
use recoup_lambda::app::wallet_max_refill;
use recoup_shared::domain::invoice::{AttemptTrigger, Transaction};
use recoup_shared::domain::money::{Currency, Money, amount_for_people, parse_for_people};
use recoup_shared::domain::wallet::AutoRefill;
use recoup_shared::services::idempotency::RequestId;
use recoup_shared::services::wallet;
use recoup_shared::domain::portal::{PortalClaims, PortalRole, SESSION_TTL, TokenKind, csrf_token, sign, verify};
use recoup_shared::domain::{Invoice, InvoiceStatus, PaymentMethodStatus, TransactionStatus};
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, InvoiceId, PaymentMethodId};
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
pub async fn open_session(app: &App, req: &Request, base: &str) -> Response<Body> {
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
        .header("location", format!("{base}portal"))
        .header(
            "set-cookie",
            format!(
                "{COOKIE}={value}; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
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
fn notice_text(code: &str, reason: Option<&str>, currency: Option<Currency>) -> String {
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
        "refilled" => "Your wallet has been refilled.".into(),
        "refill_pending" => "Your bank has not answered yet; the balance will grow once it does.".into(),
        "refill_declined" => {
            let advice = reason
                .and_then(|r| ErrorType::ALL.into_iter().find(|t| t.as_str() == r))
                .unwrap_or(ErrorType::Declined)
                .for_customer()
                .customer_advice();
            format!("The refill did not go through. {advice}")
        }
        "refill_failed" => "The refill did not go through.".into(),
        "refill_in_progress" => "A refill is already in progress: wait for it to finish.".into(),
        "invalid_amount" => "Enter an amount greater than zero, like 25.00.".into(),
        "invalid_currency" => "That currency is not one we can charge in.".into(),
        "above_maximum" => {
            let max = currency.map_or_else(|| wallet_max_refill().to_string(), |c| amount_for_people(wallet_max_refill(), c));
            format!("A single refill can be at most {max}.")
        }
        "auto_refill_saved" => "Your automatic refill settings are saved.".into(),
        "invalid_auto_refill" => {
            "Automatic refill needs a threshold of 0 or more and a larger refill amount, within the refill limit.".into()
        }
        "customer_authentication_required" => {
            "Your bank asks you to confirm this payment: press Pay now to do it here.".into()
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

/// Whether `sent` is the session's CSRF token, compared in constant time.
fn csrf_matches(secret: &str, session: &PortalClaims, sent: &str) -> bool {
    let expected = csrf_token(secret, session);
    sent.len() == expected.len() && sent.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `GET /portal/card-form` from the billing page: with an owner's session, the CSRF token
/// the form's calls carry; with none, `None` (the form then wants a bearer token); with a
/// member's, a refusal (seed 001: the owner only adds cards).
pub async fn card_form_session(app: &App, req: &Request) -> Result<Option<String>, Response<Body>> {
    if cookie(req, COOKIE).is_none() {
        return Ok(None);
    }
    let (session, secrets) = session_and_secrets(app, req).await?;
    match session.role {
        PortalRole::Owner => Ok(Some(csrf_token(&secrets[0], &session))),
        PortalRole::Member => Err(refused("Only the account's owner manages payments.")),
    }
}

/// What a script on a portal page asks for in the owner's session (JSON; the CSRF token in
/// `x-recoup-csrf`).
pub enum Call<'a> {
    /// The card form: begin a card setup.
    BeginSetup,
    /// The card form: register the card it tokenized.
    Register,
    /// After 3-D Secure on the authentication page: record what the bank decided.
    Reconcile { invoice: &'a str, base: &'a str },
}

/// The owner's session for a script's call: the cookie, and the CSRF token in its header.
async fn owner_session_for_call(app: &App, req: &Request) -> Result<PortalClaims, Error> {
    let secrets = match &app.portal_secrets {
        Some(source) => source.values().await.map_err(Error::unavailable)?,
        None => Vec::new(),
    };
    let session = cookie(req, COOKIE)
        .zip(secrets.first())
        .and_then(|(value, _)| verify(&secrets, value, TokenKind::Session, app.services.now()).ok())
        .ok_or_else(|| Error::new(Code::Unauthorized, "the billing-page session has ended: open the page again"))?;
    let sent = req.headers().get("x-recoup-csrf").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !csrf_matches(&secrets[0], &session, sent) {
        return Err(Error::forbidden("the page has expired: reload it and try again"));
    }
    if session.role != PortalRole::Owner {
        return Err(Error::forbidden("team members cannot see or use payment methods"));
    }
    Ok(session)
}

/// A script's call in an owner's session. JSON in and out, like the API the card form's
/// calls stand for.
pub async fn json_call(app: &App, req: &Request, call: Call<'_>) -> Response<Body> {
    let answer = async {
        let session = owner_session_for_call(app, req).await?;
        let owner = &session.customer_id;
        match call {
            Call::BeginSetup => Ok::<_, Error>((201, recoup_lambda::cards::begin_setup(app, owner).await?)),
            Call::Register => {
                let body: &[u8] = req.body().as_ref();
                let body = serde_json::from_slice(body)
                    .map_err(|e| Error::new(Code::InvalidRequest, format!("the request body is not valid: {e}")))?;
                let (view, replaced) = recoup_lambda::cards::register(app, owner, body).await?;
                Ok((if replaced { 200 } else { 201 }, view))
            }
            Call::Reconcile { invoice, base } => {
                let inv = owned_invoice(app, owner, invoice).await?;
                let notice = match app.services.settle_after_authentication(&inv.id).await? {
                    Some(report) => match (report.outcome, inv.wallet_refill.is_some()) {
                        (ChargeOutcome::Paid, false) => "paid".to_owned(),
                        (ChargeOutcome::Paid, true) => "refilled".to_owned(),
                        (ChargeOutcome::Declined, false) => declined(&report.transaction, "declined"),
                        (ChargeOutcome::Declined, true) => declined(&report.transaction, "refill_declined"),
                        (ChargeOutcome::Pending, false) => "pending".to_owned(),
                        (ChargeOutcome::Pending, true) => "refill_pending".to_owned(),
                    },
                    // Settled already (the PSP's webhook came first): as it stands.
                    None => match inv.status() {
                        InvoiceStatus::Paid if inv.wallet_refill.is_some() => "refilled".to_owned(),
                        InvoiceStatus::Paid => "paid".to_owned(),
                        InvoiceStatus::Open | InvoiceStatus::Error | InvoiceStatus::Void | InvoiceStatus::Draft => {
                            "pending".to_owned()
                        }
                    },
                };
                Ok((200, json!({"location": format!("{base}portal?notice={notice}")})))
            }
        }
    };
    match answer.await {
        Ok((status, view)) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(Body::Text(view.to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty)),
        Err(e) => {
            e.log_at_edge("portal");
            recoup_lambda::http::error_response(&e)
        }
    }
}

/// The session's customer's invoice `id`; another customer's is simply not found.
async fn owned_invoice(app: &App, owner: &CustomerId, id: &str) -> Result<Invoice, Error> {
    let id = InvoiceId::parse(id).ok_or_else(|| Error::not_found("invoice"))?;
    match app.services.invoice(&id).await {
        Ok(inv) if inv.customer_id == *owner => Ok(inv.into_inner()),
        Ok(_) => Err(Error::not_found("invoice")),
        Err(e) => Err(e),
    }
}

/// `GET /portal/invoices/{id}/authenticate#cs=<client secret>`: the one page with the
/// PSP's script, where the cardholder completes 3-D Secure for a payment they started
/// ("Pay now", a refill). The client secret rides in the fragment, never sent to a server.
pub async fn authenticate_page(app: &App, req: &Request, invoice: &str, base: &str) -> Response<Body> {
    let (session, secrets) = match session_and_secrets(app, req).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    if session.role != PortalRole::Owner {
        return refused("Only the account's owner manages payments.");
    }
    let inv = match owned_invoice(app, &session.customer_id, invoice).await {
        Ok(inv) => inv,
        Err(_) => return see_other(&format!("{base}portal?notice=not_found")),
    };
    if inv.pending_transaction().is_none() || app.card_form.provider != "stripe" {
        return see_other(&format!("{base}portal"));
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let config = json!({
        "publishable_key": app.card_form.publishable_key,
        "csrf": csrf_token(&secrets[0], &session),
        "reconcile_url": format!("{base}portal/invoices/{}/reconcile", inv.id),
        "back_url": format!("{base}portal"),
    });
    let body = crate::html::authenticate(&inv.amount.for_people(), &config, &app.card_form.stripe_js_url, &nonce);
    let mut r = html(200, body, &nonce);
    r.headers_mut().insert(
        "content-security-policy",
        http::HeaderValue::from_str(&crate::content_security_policy(&app.card_form, &nonce))
            .unwrap_or_else(|_| http::HeaderValue::from_static("default-src 'none'")),
    );
    r
}

/// `POST /portal/...`: an owner's form. Checks the session and its CSRF token, acts, and
/// goes back to the page with a notice.
pub async fn action(app: &App, req: &Request, path: &str, base: &str) -> Response<Body> {
    let (session, secrets) = match session_and_secrets(app, req).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let body: &[u8] = req.body().as_ref();
    if !csrf_matches(&secrets[0], &session, &form_field(body, "csrf").unwrap_or_default()) {
        return refused("This form has expired: reload the page and try again.");
    }
    if session.role != PortalRole::Owner {
        return refused("Only the account's owner manages payments.");
    }
    let s = &app.services;
    let customer = &session.customer_id;
    let back = |notice: &str| see_other(&format!("{base}portal?notice={notice}"));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let outcome: Result<Pending, Error> = match parts.as_slice() {
        ["portal", "payment-methods", id, verb @ ("default" | "remove")] => {
            let Some(card) = PaymentMethodId::parse(id) else { return back("not_found") };
            if *verb == "default" {
                s.set_default_payment_method(customer, &card).await.map(|_| Pending::done("default_set"))
            } else {
                s.remove_payment_method(customer, &card).await.map(|()| Pending::done("removed"))
            }
        }
        ["portal", "invoices", id, "pay"] => {
            let Some(invoice) = InvoiceId::parse(id) else { return back("not_found") };
            match s.invoice(&invoice).await {
                Ok(inv) if inv.customer_id == *customer => s
                    .charge_invoice(&invoice, CardChoice::Default, AttemptTrigger::Customer)
                    .await
                    .map(|report| {
                        Pending::Done(match (report.outcome, &report.next_action) {
                            (ChargeOutcome::Paid, _) => "paid".to_owned(),
                            (ChargeOutcome::Pending, Some(action)) => authenticate(&invoice, &action.client_secret),
                            (ChargeOutcome::Pending, None) => "pending".to_owned(),
                            (ChargeOutcome::Declined, _) => declined(&report.transaction, "declined"),
                        })
                    }),
                Ok(_) | Err(_) => return back("not_found"),
            }
        }
        ["portal", "wallet", "refill"] => refill(customer, body),
        ["portal", "wallet", "auto-refill"] => auto_refill(app, customer, body).await,
        _ => return denied("No such page"),
    };
    let outcome = match outcome {
        Ok(Pending::Refill(refill)) => wallet_refill(app, refill).await,
        Ok(Pending::Done(code)) => Ok(code),
        Err(e) => Err(e),
    };
    let notice = match outcome {
        Ok(code) => code,
        Err(e) => {
            e.log_at_edge("portal");
            e.code.as_str().to_owned()
        }
    };
    // The bank asks the cardholder: to the page that lets them answer, the client secret
    // in the fragment.
    if let Some((invoice, secret)) = notice.strip_prefix(AUTHENTICATE).and_then(|rest| rest.split_once('#')) {
        return see_other(&format!("{base}portal/invoices/{invoice}/authenticate#cs={secret}"));
    }
    back(&notice)
}

/// An action's result: a notice code, or a refill to run (after the form was read).
enum Pending {
    Done(String),
    Refill(Refill),
}

impl Pending {
    fn done(code: &str) -> Self {
        Pending::Done(code.to_owned())
    }
}

/// A refill the form asked for, checked: what the service runs, once per page (the
/// page's refill key).
struct Refill {
    refill: wallet::Refill,
    request: Option<RequestId>,
}

const AUTHENTICATE: &str = "authenticate:";

/// The outcome "the cardholder must authenticate `invoice`'s payment with this secret".
fn authenticate(invoice: &InvoiceId, client_secret: &str) -> String {
    format!("{AUTHENTICATE}{invoice}#{client_secret}")
}

fn declined(txn: &Transaction, code: &str) -> String {
    let reason = txn.error_type().unwrap_or(ErrorType::Declined);
    format!("{code}&reason={}", reason.for_customer().as_str())
}

/// `POST /portal/wallet/refill`: `amount` as people type it, `currency`, the card
/// (`payment_method`, empty for the default) and the page's `key`.
fn refill(customer: &CustomerId, body: &[u8]) -> Result<Pending, Error> {
    let code = form_field(body, "currency").unwrap_or_default();
    let Ok(currency) = Currency::parse(code.trim()) else { return Ok(Pending::done("invalid_currency")) };
    let amount = form_field(body, "amount").unwrap_or_default();
    let Some(amount) = parse_for_people(&amount, currency).and_then(|n| Money::new(n, currency).ok()) else {
        return Ok(Pending::done("invalid_amount"));
    };
    if amount.amount() > wallet_max_refill() {
        return Ok(Pending::Done(format!("above_maximum&currency={}", currency.code())));
    }
    let card = match form_field(body, "payment_method").as_deref().map(str::trim) {
        None | Some("") => CardChoice::Default,
        Some(id) => match PaymentMethodId::parse(id) {
            Some(id) => CardChoice::Specific(id),
            None => return Ok(Pending::done("not_found")),
        },
    };
    let request = form_field(body, "key")
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .map(|k| RequestId::new(&format!("portal-refill:{customer}:{k}")));
    Ok(Pending::Refill(Refill { refill: wallet::Refill { customer_id: customer.clone(), amount, card }, request }))
}

async fn wallet_refill(app: &App, r: Refill) -> Result<String, Error> {
    let refilled = app.services.refill_wallet(r.refill, wallet_max_refill(), r.request.as_ref()).await?;
    Ok(match refilled.charge {
        Some(Ok(report)) => match (report.outcome, &report.next_action) {
            (ChargeOutcome::Paid, _) => "refilled".to_owned(),
            (ChargeOutcome::Pending, Some(action)) => authenticate(&report.invoice.id, &action.client_secret),
            (ChargeOutcome::Pending, None) => "refill_pending".to_owned(),
            (ChargeOutcome::Declined, _) => declined(&report.transaction, "refill_declined"),
        },
        Some(Err(e)) => return Err(e),
        // The same page sent twice: the first refill, as it stands.
        None => match refilled.invoice.status() {
            InvoiceStatus::Paid => "refilled".to_owned(),
            InvoiceStatus::Open | InvoiceStatus::Draft => "refill_pending".to_owned(),
            InvoiceStatus::Void | InvoiceStatus::Error => match refilled.invoice.last_transaction() {
                Some(t) => declined(t, "refill_declined"),
                None => "refill_failed".to_owned(),
            },
        },
    })
}

/// `POST /portal/wallet/auto-refill`: `enabled` (a checkbox), `threshold` and `amount` as
/// people type them, `currency`.
async fn auto_refill(app: &App, customer: &CustomerId, body: &[u8]) -> Result<Pending, Error> {
    let code = form_field(body, "currency").unwrap_or_default();
    let Ok(currency) = Currency::parse(code.trim()) else { return Ok(Pending::done("invalid_currency")) };
    let field = |name| form_field(body, name).and_then(|v| parse_for_people(&v, currency));
    let (Some(threshold), Some(amount)) = (field("threshold"), field("amount")) else {
        return Ok(Pending::done("invalid_auto_refill"));
    };
    let settings = AutoRefill { enabled: form_field(body, "enabled").is_some(), threshold, amount, disabled_at: None };
    match app.services.configure_auto_refill(customer, currency, settings, wallet_max_refill()).await {
        Ok(_) => Ok(Pending::done("auto_refill_saved")),
        Err(e) if e.code == Code::InvalidRequest => Ok(Pending::done("invalid_auto_refill")),
        Err(e) => Err(e),
    }
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

/// Minor units as a person types them (`2500` USD is `25.00`).
fn major_units(amount: i64, currency: Currency) -> String {
    let exp = u32::from(currency.exponent());
    if exp == 0 {
        return amount.to_string();
    }
    let unit = 10_i64.pow(exp);
    format!("{}.{:0width$}", amount / unit, amount % unit, width = exp as usize)
}

/// What the page shows for the session's customer.
async fn page_values(app: &App, session: &PortalClaims, secret: &str) -> Result<Value, Error> {
    let s = &app.services;
    let customer = s.customer(&session.customer_id).await?;
    let invoices = s.list_invoices(&customer.id, 50, None).await?.items;
    let invoices_currency = invoices.first().map(|i| i.amount.currency().code().to_owned());
    let owner = session.role == PortalRole::Owner;
    let invoices: Vec<Value> = invoices
        .iter()
        // A declined wallet refill owes nothing: it is not a bill.
        .filter(|inv| !(inv.wallet_refill.is_some() && inv.status() == InvoiceStatus::Void))
        .map(|inv| {
            let last = inv.last_transaction();
            let failed = last.is_some_and(|t| t.error_type().is_some());
            let (status, class) = status_label(inv.status(), failed);
            let reason = match inv.status() {
                InvoiceStatus::Open | InvoiceStatus::Error => last.and_then(|t| t.error_type()).map(|e| {
                    if owner {
                        e.for_customer().customer_advice()
                    } else {
                        "The payment did not go through. Ask your account's owner to pay it or update the card."
                    }
                }),
                InvoiceStatus::Paid | InvoiceStatus::Void | InvoiceStatus::Draft => None,
            };
            let payable = matches!(inv.status(), InvoiceStatus::Open | InvoiceStatus::Error);
            // Every attempt, with what the customer may read about it (no card details: a
            // member sees this too).
            let attempts: Vec<Value> = inv
                .transactions()
                .iter()
                .map(|t| {
                    let (result, reason) = match t.status {
                        TransactionStatus::Succeeded => ("Paid", None),
                        TransactionStatus::Pending => ("Waiting for the bank", None),
                        TransactionStatus::Failed => (
                            "Did not go through",
                            t.error_type().map(|e| e.for_customer().customer_advice()),
                        ),
                    };
                    json!({"date": t.created_at.format("%Y-%m-%d %H:%M UTC").to_string(), "result": result, "reason": reason})
                })
                .collect();
            json!({
                "id": inv.id,
                "payable": payable,
                "date": inv.created_at.format("%Y-%m-%d").to_string(),
                "description": inv.description,
                "amount": inv.amount.for_people(),
                "status": status,
                "status_class": class,
                "reason": reason,
                "attempts": attempts,
            })
        })
        .collect();
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
    let wallets: Vec<Value> = if owner {
        s.wallets(&customer.id)
            .await?
            .iter()
            .map(|w| {
                json!({
                    "currency": w.currency.code(),
                    "balance": amount_for_people(w.balance(), w.currency),
                    "refill_in_progress": w.refill_in_flight().is_some(),
                    "auto_refill": w.auto_refill.map(|a| json!({
                        "enabled": a.enabled,
                        "threshold": major_units(a.threshold, w.currency),
                        "amount": major_units(a.amount, w.currency),
                        "disabled": a.disabled_at.is_some(),
                    })),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    // The currency a refill is in unless the customer picks another: their wallet's, else
    // their bills'.
    let currency = wallets
        .first()
        .and_then(|w| w["currency"].as_str().map(str::to_owned))
        .or_else(|| invoices_currency.clone())
        .unwrap_or_else(|| "USD".to_owned());
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
        "wallets": wallets,
        "currency": currency,
        // Sent back with a refill: a second submission of the same page (a double click)
        // is the same refill, charged once.
        "refill_key": uuid::Uuid::new_v4().simple().to_string(),
        "subscriptions": subscriptions,
    }))
}

/// `GET /portal`.
pub async fn portal(app: &App, req: &Request, base: &str) -> Response<Body> {
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
    values["base"] = json!(base);
    let query = req.uri().query().unwrap_or("");
    if let Some(code) = query_param(query, "notice") {
        let currency = query_param(query, "currency").and_then(|c| Currency::parse(c).ok());
        values["notice"] = json!(notice_text(code, query_param(query, "reason"), currency));
    }
    html(200, crate::html::portal(&values, &nonce), &nonce)
}
