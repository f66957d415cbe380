//! The local HTTP server. `/v1/...` API routes go through what API Gateway does in AWS —
//! JWT validation, then an HTTP API v2 event handed to the function that owns the route —
//! so handlers cannot tell the difference. `/sandbox/...` is the sandbox PSP's card form;
//! `/v1/dev/...` is the local-only console (clock, schedules, emails, webhooks, events, queues).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::TimeDelta;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, aws_lambda_events::apigw::ApiGatewayV2httpRequest};
use recoup_functions::{Authorizer, HttpHandler, Trigger};
use recoup_lambda::http::Route;
use recoup_shared::time::Clock;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Local, jwt};

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": message}))).into_response()
}

pub fn router(local: Arc<Local>) -> Router {
    Router::new()
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/sandbox/v1/payment_methods", post(tokenize))
        .route("/v1/dev/clock", get(clock))
        .route("/v1/dev/clock/advance", post(advance))
        .route("/v1/dev/tick", post(tick))
        .route("/v1/dev/emails", get(emails))
        .route("/v1/dev/webhooks", get(webhooks))
        .route("/v1/dev/events", get(events))
        .route("/v1/dev/queues", get(queues))
        .fallback(api)
        .with_state(local)
}

/// The route an API Gateway would match, the function it belongs to and who authorizes it.
fn find_route(method: &str, path: &str) -> Option<(HttpHandler, Route, Vec<String>, Authorizer)> {
    let mut found = None;
    for (function, r) in recoup_functions::http_routes() {
        let Trigger::Http { handler, authorizer, .. } = function.trigger else { continue };
        if let Some(params) = r.params(path) {
            if r.method == method {
                return Some((handler, r, params, authorizer));
            }
            // Same path, other method: the function answers 405 itself.
            found.get_or_insert((handler, r, params, authorizer));
        }
    }
    found
}

/// An HTTP request as it reached the local server.
struct Incoming<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

/// The HTTP API v2 event API Gateway would send for this request.
fn api_gateway_event(
    req: Incoming<'_>,
    route: Route,
    params: Vec<String>,
    claims: HashMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let Incoming { method, uri, headers, body } = req;
    let mut hdrs = serde_json::Map::new();
    for (name, value) in headers {
        let v = value.to_str().unwrap_or_default().to_owned();
        hdrs.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|e| *e = json!(format!("{},{v}", e.as_str().unwrap_or_default())))
            .or_insert(json!(v));
    }
    let raw_query = uri.query().unwrap_or("").to_owned();
    let mut query = serde_json::Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        query
            .entry(k.to_owned())
            .and_modify(|e| *e = json!(format!("{},{v}", e.as_str().unwrap_or_default())))
            .or_insert(json!(v));
    }
    let names = route.path.split('/').filter(|s| s.starts_with('{')).map(|s| s.trim_matches(['{', '}']));
    let path_params: serde_json::Map<String, Value> =
        names.zip(params).map(|(n, v)| (n.to_owned(), json!(v))).collect();
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(s) => (json!(s), false),
        Err(_) => {
            use base64::Engine;
            (json!(base64::engine::general_purpose::STANDARD.encode(body)), true)
        }
    };
    let route_key = format!("{} {}", route.method, route.path);
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": hdrs,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": if path_params.is_empty() { Value::Null } else { Value::Object(path_params) },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
            // Routes without the authorizer carry no claims (API Gateway sets none).
            "authorizer": if claims.is_empty() { Value::Null } else { json!({"jwt": {"claims": claims, "scopes": null}}) },
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

async fn api(State(local): State<Arc<Local>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Some((handler, route, params, authorizer)) = find_route(method.as_str(), uri.path()) else {
        return problem(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    let claims = match authorizer {
        // The function checks its caller itself (a PSP's signature).
        Authorizer::None => HashMap::new(),
        // What the JWT authorizer does before any function runs.
        Authorizer::Jwt => {
            let token = headers
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
            let Some(token) = token else {
                return problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send a bearer token: Authorization: Bearer <jwt>",
                );
            };
            // Tokens expire by wall-clock time, not by the dev clock.
            match jwt::verify(&local.jwt_secret, token) {
                Ok(c) => c,
                Err(e) => return problem(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string()),
            }
        }
    };
    let incoming = Incoming { method: &method, uri: &uri, headers: &headers, body: &body };
    let event = api_gateway_event(incoming, route, params, claims, local.clock.now());
    let request: lambda_http::Request = match serde_json::from_value::<ApiGatewayV2httpRequest>(event) {
        Ok(e) => LambdaRequest::ApiGatewayV2(e).into(),
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("request could not be represented: {e}"),
            );
        }
    };
    let response = handler(&local.app, request).await;
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    let mut out = Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    out
}

#[derive(Deserialize)]
struct CardForm {
    card: CardDetails,
}

#[derive(Deserialize)]
struct CardDetails {
    number: String,
    exp_month: u8,
    exp_year: u16,
    #[serde(default)]
    cvc: String,
}

/// The sandbox PSP's card form: card details in, token out. Nothing here is logged.
async fn tokenize(State(local): State<Arc<Local>>, body: Bytes) -> Response {
    let Ok(form) = serde_json::from_slice::<CardForm>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            r#"send {"card": {"number": "...", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}"#,
        );
    };
    let Some(sandbox) = &local.sandbox else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "the sandbox card form is off: this recoup-local charges through Stripe (use Stripe.js or a pm_ test token)",
        );
    };
    let d = form.card;
    match sandbox.tokenize(&d.number, d.exp_month, d.exp_year, &d.cvc).await {
        Ok(Ok(card)) => axum::Json(json!({
            "id": card.token,
            "object": "payment_method",
            "type": "card",
            "card": {"brand": card.brand, "last4": card.last4, "exp_month": card.expiry.month(), "exp_year": card.expiry.year(), "fingerprint": card.fingerprint},
        }))
        .into_response(),
        Ok(Err(e)) => problem(StatusCode::PAYMENT_REQUIRED, e.code, e.message),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", &e.to_string()),
    }
}

async fn clock(State(local): State<Arc<Local>>) -> Response {
    axum::Json(json!({
        "now": recoup_lambda::views::time(local.clock.now()),
        "offset_seconds": local.clock.offset().num_seconds(),
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Advance {
    #[serde(default)]
    days: i64,
    #[serde(default)]
    hours: i64,
    #[serde(default)]
    minutes: i64,
    #[serde(default)]
    seconds: i64,
}

/// Moves the dev clock forward, then runs everything that came due.
async fn advance(State(local): State<Arc<Local>>, body: Bytes) -> Response {
    let by: Advance = if body.is_empty() {
        Advance::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                return problem(StatusCode::BAD_REQUEST, "invalid_request", &format!("{e}; send e.g. {{\"days\": 1}}"));
            }
        }
    };
    let total = TimeDelta::days(by.days)
        + TimeDelta::hours(by.hours)
        + TimeDelta::minutes(by.minutes)
        + TimeDelta::seconds(by.seconds);
    if total < TimeDelta::zero() || total > TimeDelta::days(3650) {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the clock moves forward only, by at most ten years",
        );
    }
    if let Err(e) = local.advance_clock(total) {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", &e.to_string());
    }
    axum::Json(local.tick().await).into_response()
}

async fn tick(State(local): State<Arc<Local>>) -> Response {
    axum::Json(local.tick().await).into_response()
}

/// Every webhook endpoint (never its secrets) with its 50 latest deliveries.
async fn webhooks(State(local): State<Arc<Local>>) -> Response {
    local.caught_up().await;
    let services = &local.app.services;
    let endpoints = match services.webhook_endpoints().await {
        Ok(e) => e,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", &e.message),
    };
    let mut data = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        let deliveries = match services.webhook_deliveries(&endpoint.id, 50, None).await {
            Ok(page) => page.items.iter().map(webhooks_api::delivery_view).collect::<Vec<_>>(),
            Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", &e.message),
        };
        let mut view = webhooks_api::endpoint_view(endpoint);
        view["deliveries"] = json!(deliveries);
        data.push(view);
    }
    axum::Json(json!({ "data": data })).into_response()
}

async fn emails(State(local): State<Arc<Local>>) -> Response {
    local.caught_up().await;
    match local.mailer.recent(100).await {
        Ok(list) => axum::Json(json!({"data": list})).into_response(),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", &e.to_string()),
    }
}

async fn events(State(local): State<Arc<Local>>) -> Response {
    local.caught_up().await;
    axum::Json(json!({"data": local.bus.recent()})).into_response()
}

async fn queues(State(local): State<Arc<Local>>) -> Response {
    local.caught_up().await;
    axum::Json(json!({"data": local.queues.all().iter().map(|q| q.depth()).collect::<Vec<_>>()})).into_response()
}
