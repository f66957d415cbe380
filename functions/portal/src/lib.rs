//! The customer's pages, on the HTTP API without the JWT authorizer (a browser navigates
//! to them): the billing portal (`GET /portal`, entered through a signed link at
//! `GET /portal/session`: see [`pages`]) and the hosted card form, `GET /portal/card-form`.
//!
//! The card form is what a merchant's app opens (or frames) for a customer's owner to add
//! a card, with the owner's bearer token in the URL's fragment
//! (`/portal/card-form#token=...`), which the browser never sends to a server. The page
//! then:
//! 1. begins a card setup: `POST /v1/payment-methods/setup-intents`;
//! 2. with Stripe, mounts Stripe Elements and confirms the SetupIntent with its client
//!    secret (`stripe.confirmCardSetup`): the card number and any 3-D Secure challenge go
//!    from the browser to Stripe only; with the sandbox, it posts the card details to the
//!    sandbox's own card endpoint where one runs, else offers the sandbox's test cards;
//! 3. registers the card: `POST /v1/payment-methods` with the `pm_...` and the setup's id,
//!    and says which card was saved (and tells a framing page, by `postMessage`).
//!
//! The page is the same for every customer; it holds no secret. A strict
//! Content-Security-Policy allows the page's own script (by nonce), the API on the same
//! origin, and Stripe.js; nothing else.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::app::CardForm;
use recoup_lambda::http::{Route, error_response, route, route_path};
use recoup_shared::error::{Code, Error};
use serde_json::json;

mod html;
pub mod pages;

pub const ROUTES: &[Route] = &[
    route("GET", "/portal/card-form"),
    route("GET", "/portal"),
    route("GET", "/portal/session"),
    route("POST", "/portal/payment-methods/{id}/default"),
    route("POST", "/portal/payment-methods/{id}/remove"),
    route("POST", "/portal/invoices/{id}/pay"),
    route("GET", "/portal/invoices/{id}/authenticate"),
    route("POST", "/portal/invoices/{id}/reconcile"),
    route("POST", "/portal/wallet/refill"),
    route("POST", "/portal/wallet/auto-refill"),
    route("POST", SESSION_SETUP),
    route("POST", SESSION_REGISTER),
];

/// The card form's calls in a billing-page session (JSON; the cookie and the CSRF token in
/// `x-recoup-csrf`), the session's counterparts of `POST /v1/payment-methods/setup-intents`
/// and `POST /v1/payment-methods`.
pub const SESSION_SETUP: &str = "/portal/card-form/setup-intents";
pub const SESSION_REGISTER: &str = "/portal/card-form/payment-methods";

const PAGE: &str = include_str!("card_form.html");
const SCRIPT: &str = include_str!("card_form.js");

/// The origin (`scheme://host[:port]`) of a URL, for the Content-Security-Policy.
fn origin(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")? + 3;
    let host_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    (host_end > scheme_end).then(|| &url[..host_end])
}

/// The page's Content-Security-Policy: its own script and style by nonce, the API on the
/// same origin, and, with Stripe, Stripe.js and the frames and API it uses.
pub fn content_security_policy(form: &CardForm, nonce: &str) -> String {
    let stripe = match form.provider {
        "stripe" => origin(&form.stripe_js_url),
        _ => None,
    };
    let (script, frame, connect) = match stripe {
        Some("https://js.stripe.com") => (
            " https://js.stripe.com".to_owned(),
            " https://js.stripe.com https://hooks.stripe.com".to_owned(),
            " https://api.stripe.com".to_owned(),
        ),
        // A stand-in (localstripe) serves Stripe.js and Stripe's API from one origin.
        Some(o) => (format!(" {o}"), format!(" {o}"), format!(" {o}")),
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'{script}; style-src 'nonce-{nonce}'; \
         connect-src 'self'{connect}; frame-src{frame_or_none}; img-src 'self' data:; \
         form-action 'none'; base-uri 'none'",
        frame_or_none = if frame.is_empty() { " 'none'".to_owned() } else { frame },
    )
}

/// Who the card form works for: the owner of a billing-page session (cookie and CSRF
/// token), or whoever holds an owner's bearer token in the fragment.
pub enum FormAuth {
    Bearer,
    Session { csrf: String },
}

/// The page for this configuration, with its nonce. `base` leads from the page up to the
/// API's root (see [`to_root`]).
pub fn render(form: &CardForm, nonce: &str, base: &str, auth: &FormAuth) -> String {
    let (setup_url, register_url, csrf, back) = match auth {
        FormAuth::Bearer => {
            (format!("{base}v1/payment-methods/setup-intents"), format!("{base}v1/payment-methods"), None, String::new())
        }
        FormAuth::Session { csrf } => (
            format!("{base}{}", SESSION_SETUP.trim_start_matches('/')),
            format!("{base}{}", SESSION_REGISTER.trim_start_matches('/')),
            Some(csrf.as_str()),
            format!(r#"<p><a id="back" href="{}portal">Back to your billing page</a></p>"#, html_attr(base)),
        ),
    };
    let config = json!({
        "provider": form.provider,
        "publishable_key": form.publishable_key,
        "sandbox_tokenize_url": form.sandbox_tokenize_url,
        "setup_url": setup_url,
        "register_url": register_url,
        "csrf": csrf,
    });
    // JSON inside <script>: no `<` may close the element early.
    let config = config.to_string().replace('<', "\\u003c");
    let stripe_js = match form.provider {
        "stripe" => format!(r#"<script nonce="{nonce}" src="{}"></script>"#, html_attr(&form.stripe_js_url)),
        _ => String::new(),
    };
    PAGE.replace("{{nonce}}", nonce)
        .replace("{{config}}", &config)
        .replace("{{stripe_js}}", &stripe_js)
        .replace("{{back}}", &back)
        .replace("{{script}}", SCRIPT)
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The relative path from a page at `route_path` (`/portal/wallet/refill`) up to the API's
/// root (`../../`), which links and redirects start with.
pub fn to_root(route_path: &str) -> String {
    "../".repeat(route_path.matches('/').count().saturating_sub(1))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    // Routes never carry an API Gateway stage (or a custom domain's mapping); what the
    // browser is given does. Every link, form and redirect is relative, so it lands under
    // whatever the browser's address starts with.
    let path = route_path(&req);
    let base = to_root(&path);
    let path = path.trim_end_matches('/');
    if path == SESSION_SETUP || path == SESSION_REGISTER {
        if req.method() != http::Method::POST {
            let mut r = error_response(&Error::new(Code::MethodNotAllowed, "send POST"));
            r.headers_mut().insert("allow", http::HeaderValue::from_static("POST"));
            return r;
        }
        let call = if path == SESSION_SETUP { pages::Call::BeginSetup } else { pages::Call::Register };
        return pages::json_call(app, &req, call).await;
    }
    // 3-D Secure for a payment the owner started here: its page, then its answer recorded.
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["portal", "invoices", invoice, step @ ("authenticate" | "reconcile")] = segments.as_slice() {
        let (allowed, method) = if *step == "authenticate" { ("GET, HEAD", http::Method::GET) } else { ("POST", http::Method::POST) };
        if req.method() != method && !(method == http::Method::GET && req.method() == http::Method::HEAD) {
            let mut r = error_response(&Error::new(Code::MethodNotAllowed, format!("send {allowed}")));
            r.headers_mut().insert("allow", http::HeaderValue::from_static(allowed));
            return r;
        }
        return if *step == "authenticate" {
            pages::authenticate_page(app, &req, invoice, &base).await
        } else {
            pages::json_call(app, &req, pages::Call::Reconcile { invoice, base: &base }).await
        };
    }
    if path.starts_with("/portal/payment-methods/")
        || path.starts_with("/portal/invoices/")
        || path.starts_with("/portal/wallet/")
    {
        if req.method() != http::Method::POST {
            let mut r = error_response(&Error::new(Code::MethodNotAllowed, "send POST"));
            r.headers_mut().insert("allow", http::HeaderValue::from_static("POST"));
            return r;
        }
        return pages::action(app, &req, path, &base).await;
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut r = error_response(&Error::new(Code::MethodNotAllowed, "send GET"));
        r.headers_mut().insert("allow", http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/portal" => return pages::portal(app, &req, &base).await,
        "/portal/session" => return pages::open_session(app, &req, &base).await,
        _ => {}
    }
    // From the billing page the form works in the session; a member's session may not add cards.
    let auth = match pages::card_form_session(app, &req).await {
        Ok(Some(csrf)) => FormAuth::Session { csrf },
        Ok(None) => FormAuth::Bearer,
        Err(page) => return page,
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = render(&app.card_form, &nonce, &base, &auth);
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", content_security_policy(&app.card_form, &nonce))
        .header("cache-control", "no-store")
        .header("referrer-policy", "no-referrer")
        .header("x-content-type-options", "nosniff")
        .body(Body::Text(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(js: &str) -> CardForm {
        CardForm {
            provider: "stripe",
            publishable_key: Some("pk_test_1".into()),
            stripe_js_url: js.into(),
            sandbox_tokenize_url: None,
        }
    }

    #[test]
    fn the_policy_allows_stripe_and_the_pages_own_nonce_only() {
        let csp = content_security_policy(&stripe("https://js.stripe.com/v3/"), "n1");
        assert!(csp.contains("script-src 'nonce-n1' https://js.stripe.com;"), "{csp}");
        assert!(csp.contains("frame-src https://js.stripe.com https://hooks.stripe.com;"), "{csp}");
        assert!(csp.contains("connect-src 'self' https://api.stripe.com;"), "{csp}");
        assert!(csp.starts_with("default-src 'none';") && !csp.contains("unsafe"), "{csp}");

        let local = content_security_policy(&stripe("http://127.0.0.1:8420/js.stripe.com/v3/"), "n2");
        assert!(local.contains("script-src 'nonce-n2' http://127.0.0.1:8420;"), "{local}");

        let sandbox = content_security_policy(&CardForm::default(), "n3");
        assert!(sandbox.contains("script-src 'nonce-n3';") && sandbox.contains("frame-src 'none';"), "{sandbox}");
    }

    #[test]
    fn links_climb_from_the_page_to_the_apis_root() {
        assert_eq!(to_root("/portal"), "");
        assert_eq!(to_root("/portal/"), "../");
        assert_eq!(to_root("/portal/session"), "../");
        assert_eq!(to_root("/portal/wallet/refill"), "../../");
        assert_eq!(to_root("/portal/invoices/in_1/pay"), "../../../");
    }

    #[test]
    fn the_page_carries_its_configuration_and_loads_stripe_js_only_for_stripe() {
        let page = render(&stripe("https://js.stripe.com/v3/"), "n1", "", &FormAuth::Bearer);
        assert!(page.contains(r#"<script nonce="n1" src="https://js.stripe.com/v3/"></script>"#));
        assert!(page.contains(r#""publishable_key":"pk_test_1""#));
        assert!(!page.contains("{{"), "every placeholder is filled");
        let sandbox = render(&CardForm::default(), "n2", "../", &FormAuth::Session { csrf: "c1".into() });
        assert!(!sandbox.contains("js.stripe.com"));
        assert!(sandbox.contains(r#""provider":"sandbox""#));
        assert!(page.contains(r#""setup_url":"v1/payment-methods/setup-intents""#) && page.contains(r#""csrf":null"#));
        // In a session: the portal's own calls, the CSRF token, a way back, all relative.
        assert!(sandbox.contains(r#""setup_url":"../portal/card-form/setup-intents""#), "{sandbox}");
        assert!(sandbox.contains(r#""csrf":"c1""#) && sandbox.contains(r#"href="../portal""#));
        // Configuration cannot close the script element it sits in.
        let hostile =
            CardForm { publishable_key: Some("</script><script>x()".into()), ..stripe("https://js.stripe.com/v3/") };
        assert!(!render(&hostile, "n", "", &FormAuth::Bearer).contains("</script><script>x()"));
    }
}
