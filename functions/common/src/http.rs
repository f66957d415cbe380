//! The HTTP edge every API function shares. It does, in order: route matching; the
//! caller, from the JWT claims API Gateway's authorizer put in the request context; the
//! card-number guard (a body or query holding a card number is refused and never logged);
//! `Idempotency-Key` handling for POSTs; then the function's handler; and finally the one
//! mapping from service errors to HTTP responses.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use recoup_shared::domain::card::contains_card_number;
use recoup_shared::error::{Code, Error, ErrorKind};
use recoup_shared::ids::CustomerId;
use recoup_shared::services::idempotency::{Begin, RequestId, sha256_hex};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::App;

/// One method and path pattern a function serves; `{name}` matches one path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

pub const fn route(method: &'static str, path: &'static str) -> Route {
    Route { method, path }
}

impl Route {
    /// `"POST /v1/invoices/{id}/charge"`: how a route is named in checks and logs.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters when `path` fits this route's pattern.
    pub fn params(&self, path: &str) -> Option<Vec<String>> {
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        if want.len() != got.len() {
            return None;
        }
        let mut params = Vec::new();
        for (w, g) in want.iter().zip(&got) {
            if w.starts_with('{') && w.ends_with('}') {
                if g.is_empty() {
                    return None;
                }
                params.push((*g).to_owned());
            } else if w != g {
                return None;
            }
        }
        Some(params)
    }
}

/// Who is calling, from the token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The customer's account owner: their own cards, invoices, payments.
    Owner(CustomerId),
    /// A team member of the customer: sees invoices, never payment methods.
    Member(CustomerId),
    /// The merchant's operators.
    Merchant { subject: String },
}

impl Caller {
    pub fn role(&self) -> &'static str {
        match self {
            Caller::Owner(_) => "owner",
            Caller::Member(_) => "member",
            Caller::Merchant { .. } => "merchant",
        }
    }

    pub fn customer(&self) -> Option<&CustomerId> {
        match self {
            Caller::Owner(c) | Caller::Member(c) => Some(c),
            Caller::Merchant { .. } => None,
        }
    }

    /// Idempotency keys are remembered per caller.
    fn scope(&self) -> String {
        match self {
            Caller::Owner(c) => format!("owner:{c}"),
            Caller::Member(c) => format!("member:{c}"),
            Caller::Merchant { subject } => format!("merchant:{subject}"),
        }
    }

    /// Builds the caller from JWT claims (as strings, the way API Gateway passes them).
    pub fn from_claims(claims: &HashMap<String, String>) -> Result<Caller, Error> {
        let unauthorized = |m: &str| Error::new(Code::Unauthorized, m);
        let customer = || {
            claims
                .get("customer_id")
                .and_then(|c| CustomerId::parse(c))
                .ok_or_else(|| unauthorized("the token's customer_id claim is missing or not a customer id"))
        };
        match claims.get("role").map(String::as_str) {
            Some("owner") => Ok(Caller::Owner(customer()?)),
            Some("member") => Ok(Caller::Member(customer()?)),
            Some("merchant") => Ok(Caller::Merchant { subject: claims.get("sub").cloned().unwrap_or_default() }),
            _ => Err(unauthorized("the token's role claim must be owner, member or merchant")),
        }
    }
}

fn caller_of(req: &Request) -> Result<Caller, Error> {
    let claims = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
        }
        _ => None,
    };
    match claims {
        Some(claims) => Caller::from_claims(claims),
        None => Err(Error::new(Code::Unauthorized, "a bearer token is required")),
    }
}

/// A matched request, as handlers see it.
pub struct Call {
    pub method: &'static str,
    pub route: &'static str,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
    pub caller: Caller,
    /// With an `Idempotency-Key`: the request, for creates to happen once per key. The
    /// claim alone cannot ensure it (a run that dies after its create committed but before
    /// its answer was stored leaves the key to a retry), so a create records what it made
    /// under this id in its own transaction, and a retry finds it.
    pub request: Option<RequestId>,
}

impl Call {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The body as `T`. Unknown fields are refused, so a misspelt field is an error, not
    /// silently ignored.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &self.body };
        serde_json::from_slice(body)
            .map_err(|e| Error::new(Code::InvalidRequest, format!("the request body is not valid: {e}")))
    }

    pub fn require_merchant(&self) -> Result<(), Error> {
        match self.caller {
            Caller::Merchant { .. } => Ok(()),
            Caller::Owner(_) | Caller::Member(_) => Err(Error::forbidden("only the merchant may do this")),
        }
    }

    /// The paying customer's owner; members and the merchant may not.
    pub fn require_owner(&self) -> Result<&CustomerId, Error> {
        match &self.caller {
            Caller::Owner(c) => Ok(c),
            Caller::Member(_) => Err(Error::forbidden("team members cannot see or use payment methods")),
            Caller::Merchant { .. } => Err(Error::forbidden("this action is the customer's own")),
        }
    }

    /// The page size (`limit`, 1-100, default 20) and cursor (`starting_after`).
    pub fn page(&self) -> Result<(usize, Option<recoup_shared::store::Cursor>), Error> {
        let limit = match self.query("limit") {
            None => 20,
            Some(l) => l.parse::<usize>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| {
                Error::new(Code::InvalidRequest, "limit must be a whole number from 1 to 100").with("field", "limit")
            })?,
        };
        let cursor =
            match self.query("starting_after") {
                None => None,
                Some(c) => Some(recoup_shared::store::Cursor::decode(c).ok_or_else(|| {
                    Error::new(Code::InvalidCursor, "starting_after is not a cursor this API returned")
                })?),
            };
        Ok((limit, cursor))
    }
}

/// Parses an amount in minor units and a currency. The amount must be a JSON integer:
/// `10.5` is refused with a message, never rounded.
pub fn parse_money(amount: &Value, currency: &str) -> Result<recoup_shared::domain::money::Money, Error> {
    let currency = recoup_shared::domain::money::Currency::parse(currency)?;
    let minor = amount.as_i64().filter(|_| amount.is_i64() || amount.is_u64()).ok_or_else(|| {
        Error::new(Code::InvalidAmount,
            format!(
                "amount must be a whole number of the currency's minor unit (for {currency}: 1050 means {}), not {amount}",
                recoup_shared::domain::money::Money::new(1050, currency).map_or_else(|_| "1050".to_owned(), |m| m.to_string())
            ),
        )
        .with("field", "amount")
    })?;
    Ok(recoup_shared::domain::money::Money::new(minor, currency)?)
}

/// An optional duration given in whole seconds (JSON may write 3600 as `3600.0`), between
/// `min` and `max`; absent or `null` is `default`.
pub fn seconds_field(
    value: Option<&Value>,
    field: &str,
    (min, max): (chrono::TimeDelta, chrono::TimeDelta),
    default: chrono::TimeDelta,
) -> Result<chrono::TimeDelta, Error> {
    let v = match value {
        None | Some(Value::Null) => return Ok(default),
        Some(v) => v,
    };
    let whole = v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e12).map(|f| f as i64);
    v.as_i64().or(whole).and_then(chrono::TimeDelta::try_seconds).filter(|t| *t >= min && *t <= max).ok_or_else(|| {
        Error::new(
            Code::InvalidRequest,
            format!("{field} must be a whole number of seconds from {} to {}", min.num_seconds(), max.num_seconds()),
        )
        .with("field", field)
    })
}

/// A successful response.
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply { status: 200, body: Some(body) }
    }
    pub fn created(body: Value) -> Self {
        Reply { status: 201, body: Some(body) }
    }
    pub fn accepted(body: Value) -> Self {
        Reply { status: 202, body: Some(body) }
    }
    pub fn no_content() -> Self {
        Reply { status: 204, body: None }
    }
}

/// The one mapping from errors to HTTP. Clients get the code and message; causes were
/// logged where they happened.
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::BadRequest => 400,
        ErrorKind::Unauthorized => 401,
        ErrorKind::PaymentRequired => 402,
        ErrorKind::Forbidden => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
        ErrorKind::MethodNotAllowed => 405,
        ErrorKind::Unprocessable => 422,
        ErrorKind::Internal => 500,
        ErrorKind::Unavailable => 503,
    }
}

pub fn error_body(e: &Error) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), json!(e.code.as_str()));
    body.insert("message".into(), json!(e.message));
    for (k, v) in &e.details {
        body.insert(k.clone(), v.clone());
    }
    Value::Object(body)
}

fn respond(status: u16, body: Option<&Value>, extra: &[(&str, &str)]) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    let body = body.map_or(Body::Empty, |b| Body::Text(b.to_string()));
    builder.body(body).unwrap_or_else(|_| Response::new(Body::Empty))
}

/// The HTTP answer for an error: the edge, so the one place a 5xx's cause is logged.
pub fn error_response(e: &Error) -> Response<Body> {
    e.log_at_edge("http");
    respond(status_of(e.kind), Some(&error_body(e)), &[])
}

pub fn body_bytes(req: &Request) -> Vec<u8> {
    match req.body() {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.as_bytes().to_vec(),
        Body::Binary(b) => b.clone(),
        _ => Vec::new(),
    }
}

/// Whether a failed request leaves its `Idempotency-Key` free for a retry instead of
/// replaying the failure: server-side failures, and a conflict that ran out of retries (its
/// work was never committed). The use cases answer successfully once their work is
/// committed, so a failure here means nothing was done.
fn forgets_key(e: &Error) -> bool {
    status_of(e.kind) >= 500 || e.code == Code::ConcurrentUpdate
}

fn valid_idempotency_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The path parameters of a matched route, in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParams(Vec<String>);

impl PathParams {
    /// Parameter `i` as an id; one that cannot be an id names nothing: `404 not_found`.
    pub fn id<T>(&self, i: usize, what: &str, parse: fn(&str) -> Option<T>) -> Result<T, Error> {
        self.0.get(i).and_then(|p| parse(p)).ok_or_else(|| Error::not_found(what))
    }

    /// Parameter `i` as a number; one that is not names nothing: `404 not_found`.
    pub fn number<T: std::str::FromStr>(&self, i: usize, what: &str) -> Result<T, Error> {
        self.0.get(i).and_then(|p| p.parse().ok()).ok_or_else(|| Error::not_found(what))
    }
}

/// A route declared with the operation it stands for: `op` turns the path parameters into
/// the function's typed operation, so a handler matches on operations, never on strings.
pub struct Endpoint<Op: 'static> {
    pub route: Route,
    pub op: fn(&PathParams) -> Result<Op, Error>,
}

/// The routes of `endpoints`, for the function registry.
pub const fn routes_of<Op, const N: usize>(endpoints: &[Endpoint<Op>; N]) -> [Route; N] {
    let mut out = [route("", ""); N];
    let mut i = 0;
    while i < N {
        out[i] = endpoints[i].route;
        i += 1;
    }
    out
}

/// The path routes are matched on. A named API Gateway stage (`prod`) prefixes `rawPath`
/// with `/prod`; routes never include it.
pub fn route_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let raw = if raw.is_empty() { req.uri().path() } else { raw };
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.as_deref(),
        _ => None,
    };
    match stage {
        Some(stage) if stage != "$default" => {
            let prefix = format!("/{stage}");
            match raw.strip_prefix(&prefix) {
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                Some(_) | None => raw.to_owned(),
            }
        }
        Some(_) | None => raw.to_owned(),
    }
}

/// Serves one request for a function with `endpoints`, calling `dispatch` with the
/// operation of the matched one.
pub async fn serve<Op, F, Fut>(
    app: &App,
    endpoints: &'static [Endpoint<Op>],
    req: Request,
    dispatch: F,
) -> Response<Body>
where
    F: FnOnce(App, Call, Op) -> Fut,
    Fut: Future<Output = Result<Reply, Error>>,
{
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = route_path(&req);

    // The path's resource is the most specific route template it matches (fewest
    // parameters): `/v1/payment-methods/setup-intents` is not a payment method `{id}`. A
    // known resource with another method is 405 with `Allow` (RFC 9110 §15.5.6).
    let candidates: Vec<(&Endpoint<Op>, Vec<String>)> =
        endpoints.iter().filter_map(|e| e.route.params(&path).map(|p| (e, p))).collect();
    let fewest = candidates.iter().map(|(_, p)| p.len()).min();
    let mut allowed: Vec<&str> = Vec::new();
    let mut matched = None;
    for (endpoint, params) in candidates.into_iter().filter(|(_, p)| Some(p.len()) == fewest) {
        let r = &endpoint.route;
        if r.method == method {
            matched = Some((endpoint, params));
            break;
        }
        if !allowed.contains(&r.method) {
            allowed.push(r.method);
        }
    }
    let Some((endpoint, params)) = matched else {
        if allowed.is_empty() {
            return error_response(&Error::not_found("route").with("path", path.clone()));
        }
        let e = Error::new(Code::MethodNotAllowed, format!("{method} is not allowed on {path}"))
            .with("allowed", allowed.clone());
        return respond(status_of(e.kind), Some(&error_body(&e)), &[("allow", &allowed.join(", "))]);
    };

    let route = endpoint.route;
    let caller = match caller_of(&req) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let body = body_bytes(&req);
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    // The raw query and its decoded pairs: `4242+4242+...` or `%20` separators decode to spaces.
    let in_query = req
        .query_string_parameters_ref()
        .is_some_and(|q| q.iter().any(|(k, v)| contains_card_number(k) || contains_card_number(v)));
    if contains_card_number(&String::from_utf8_lossy(&body)) || contains_card_number(&raw_query) || in_query {
        // The request is dropped here: its body is not parsed, stored or logged.
        tracing::warn!(route = route.path, role = caller.role(), "refused a request carrying a card number");
        let e = Error::new(
            Code::RawCardDataRefused,
            "card numbers are never accepted by this API; tokenize the card with the payment provider's form and send the token",
        );
        return error_response(&e);
    }
    let op = match (endpoint.op)(&PathParams(params)) {
        Ok(op) => op,
        Err(e) => return error_response(&e),
    };
    let query: HashMap<String, String> = req
        .query_string_parameters_ref()
        .map(|q| q.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default();

    // Idempotency keys make POST retries safe.
    let mut claim = None;
    if method == "POST"
        && let Some(key) = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok())
    {
        if !valid_idempotency_key(key) {
            return error_response(&Error::new(
                Code::InvalidIdempotencyKey,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        let request_hash = sha256_hex(&[method.as_bytes(), path.as_bytes(), raw_query.as_bytes(), &body]);
        match app.services.idempotency_begin(&caller.scope(), key, &request_hash).await {
            Ok(Begin::Proceed(record)) => claim = Some(record),
            Ok(Begin::Replay { status, body }) => {
                let value: Option<Value> = serde_json::from_str(&body).ok();
                return respond(status, value.as_ref(), &[("idempotency-replayed", "true")]);
            }
            Ok(Begin::Mismatch) => {
                return error_response(&Error::new(
                    Code::IdempotencyKeyReused,
                    "this Idempotency-Key was used with a different request",
                ));
            }
            Ok(Begin::InProgress) => {
                return error_response(&Error::new(
                    Code::IdempotencyKeyInProgress,
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                ));
            }
            Err(e) => return error_response(&e),
        }
    }

    let role = caller.role();
    let customer = caller.customer().map(ToString::to_string);
    let request = claim.as_ref().map(|record| record.request_id());
    let call = Call { method: route.method, route: route.path, query, body, caller, request };
    let (status, body, retryable) = match dispatch(app.clone(), call, op).await {
        Ok(reply) => (reply.status, reply.body, false),
        Err(e) => (status_of(e.kind), Some(error_body(&e)), forgets_key(&e)),
    };
    if let Some(record) = claim {
        let outcome = if retryable {
            app.services.idempotency_release(record).await
        } else {
            let stored = body.as_ref().map_or(String::new(), Value::to_string);
            app.services.idempotency_complete(record, status, stored).await
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not record the idempotent response");
        }
    }
    tracing::info!(
        method = %method, route = route.path, status, role, customer = customer.as_deref().unwrap_or("-"),
        elapsed_ms = started.elapsed().as_millis() as u64, "request"
    );
    respond(status, body.as_ref(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments_and_capture_parameters() {
        let r = route("POST", "/v1/invoices/{id}/charge");
        assert_eq!(r.params("/v1/invoices/in_123/charge"), Some(vec!["in_123".to_owned()]));
        assert_eq!(r.params("/v1/invoices/in_123"), None);
        assert_eq!(r.params("/v1/invoices//charge"), None);
        assert_eq!(route("GET", "/v1/invoices").params("/v1/invoices/"), Some(vec![]));
    }

    #[test]
    fn callers_come_from_role_and_customer_claims() {
        let cus = CustomerId::generate();
        let claims = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(
            Caller::from_claims(&claims(&[("role", "owner"), ("customer_id", cus.as_str())])),
            Ok(Caller::Owner(cus.clone()))
        );
        assert!(Caller::from_claims(&claims(&[("role", "owner")])).is_err());
        assert!(Caller::from_claims(&claims(&[("role", "admin")])).is_err());
        assert_eq!(
            Caller::from_claims(&claims(&[("role", "merchant"), ("sub", "ops")])),
            Ok(Caller::Merchant { subject: "ops".into() })
        );
    }

    #[test]
    fn amounts_must_be_integers_of_minor_units() {
        assert_eq!(parse_money(&json!(1050), "usd").unwrap().amount(), 1050);
        assert_eq!(parse_money(&json!(500), "JPY").unwrap().to_string(), "500 JPY");
        let e = parse_money(&json!(10.5), "usd").unwrap_err();
        assert_eq!(e.code, "invalid_amount");
        assert!(e.message.contains("1050 means 10.50 USD"), "{}", e.message);
        assert_eq!(parse_money(&json!("1050"), "usd").unwrap_err().code, "invalid_amount");
        assert_eq!(parse_money(&json!(0), "usd").unwrap_err().code, "invalid_amount");
        assert_eq!(parse_money(&json!(100), "xxx").unwrap_err().code, "invalid_currency");
    }

    fn request(raw_path: &str, stage: &str) -> Request {
        let event = json!({
            "version": "2.0", "routeKey": "POST /v1/customers", "rawPath": raw_path, "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {"stage": stage, "timeEpoch": 0, "http": {"method": "POST", "path": raw_path}},
        });
        let event: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
            serde_json::from_value(event).unwrap();
        lambda_http::request::LambdaRequest::ApiGatewayV2(event).into()
    }

    #[test]
    fn an_internal_cause_is_never_part_of_the_answer() {
        let e = Error::internal("redb: table PK#CUS#cus_123 corrupted at page 7");
        assert_eq!(e.cause.as_deref(), Some("redb: table PK#CUS#cus_123 corrupted at page 7"));
        let r = error_response(&e);
        assert_eq!(r.status(), 500);
        let Body::Text(body) = r.body() else { panic!("a JSON body") };
        assert!(!body.contains("redb") && !body.contains("cus_123"), "{body}");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["code"], "internal_error");
    }

    #[test]
    fn a_named_stage_is_not_part_of_the_route_path() {
        assert_eq!(route_path(&request("/prod/v1/customers", "prod")), "/v1/customers");
        assert_eq!(route_path(&request("/v1/customers", "$default")), "/v1/customers");
        assert_eq!(route_path(&request("/production/v1/x", "prod")), "/production/v1/x");
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(valid_idempotency_key("order-42_retry"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key("has space"));
        assert!(!valid_idempotency_key(&"k".repeat(256)));
    }

    /// A retryable failure frees the key; a decision (a refusal, a decline) is replayed.
    #[test]
    fn only_failures_that_committed_nothing_free_the_idempotency_key() {
        assert!(forgets_key(&Error::unavailable("store down")));
        assert!(forgets_key(&Error::internal("bug")));
        assert!(forgets_key(&Error::new(Code::ConcurrentUpdate, "kept changing")));
        assert!(!forgets_key(&Error::new(Code::ChargeInProgress, "pending")));
        assert!(!forgets_key(&Error::new(Code::InvalidAmount, "no")));
    }
}
