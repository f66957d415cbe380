//! Stripe's webhooks: `POST /v1/webhooks/stripe`, on the HTTP API without the JWT
//! authorizer (Stripe signs instead). In order: the `Stripe-Signature` is checked against
//! the configured signing secret(s) — a bad one is `400 invalid_signature` and nothing is
//! read or written; the body is read as a Stripe event; the services settle it once (a
//! redelivery is answered at once). `200` tells Stripe to stop; a `5xx` (store or secret
//! unavailable) makes it deliver again later. Bodies are never logged.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Route, body_bytes, error_response, route};
use recoup_shared::error::{Code, Error, ErrorKind};
use recoup_stripe::signature::{DEFAULT_TOLERANCE_SECS, verify};
use recoup_stripe::webhook::parse_notice;
use serde_json::json;

pub const ROUTES: &[Route] = &[route("POST", "/v1/webhooks/stripe")];

fn ok(result: &str) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::Text(json!({"received": true, "result": result}).to_string()))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    if req.method() != http::Method::POST {
        let mut r = error_response(&Error::new(Code::MethodNotAllowed, "send POST"));
        r.headers_mut().insert("allow", http::HeaderValue::from_static("POST"));
        return r;
    }
    let Some(source) = &app.psp_webhook_secrets else {
        return error_response(&Error::new(
            Code::ServiceUnavailable,
            "Stripe webhooks are not configured here (no signing secret: RECOUP_STRIPE_WEBHOOK_SECRET_ARN)",
        ));
    };
    let secrets = match source.values().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the webhook signing secret is unavailable");
            return error_response(&Error::new(Code::ServiceUnavailable, "the signing secret is unavailable; retry"));
        }
    };
    let body = body_bytes(&req);
    let header = req.headers().get("stripe-signature").and_then(|v| v.to_str().ok());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    // Wall-clock time: a signature's age is real time, whatever a dev clock says.
    if let Err(e) = verify(&body, header, &secrets, chrono::Utc::now().timestamp(), DEFAULT_TOLERANCE_SECS) {
        tracing::warn!(reason = e.code(), "a webhook with a bad signature was refused");
        return error_response(&Error::new(Code::InvalidSignature, e.to_string()).with("reason", e.code()));
    }
    let notice = match parse_notice(&body) {
        Ok(n) => n,
        Err(e) => return error_response(&Error::new(Code::InvalidRequest, e.to_string())),
    };
    match app.services.settle_psp_notice(&notice).await {
        Ok(settled) => ok(settled.as_str()),
        // The store is down: Stripe delivers again later.
        Err(e)
            if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal) || e.code == Code::ConcurrentUpdate =>
        {
            error_response(&e)
        }
        // Anything else would fail the same way on every redelivery: acknowledge it, and
        // leave it in the logs for a person.
        Err(e) => {
            tracing::error!(notice_id = %notice.id, kind = %notice.kind, code = %e.code, error = %e.message, "a webhook could not be settled");
            ok("rejected")
        }
    }
}

#[cfg(test)]
mod tests;
