//! The webhook-endpoints API, for the merchant: register endpoints (the signing secret is
//! shown once), list, read, disable and enable them, roll their secret, read their
//! delivery log, and send an event again. Customers and members are refused everything.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Call, Endpoint, PathParams, Reply, Route, route, routes_of, seconds_field, serve};
use recoup_lambda::views;
use recoup_shared::domain::webhook::{DEFAULT_ROLL_WINDOW, Delivery, MAX_ROLL_WINDOW, WebhookEndpoint};
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{EventId, WebhookEndpointId};
use recoup_shared::services::webhooks::{AttemptMessage, NewEndpoint};
use serde::Deserialize;
use serde_json::{Value, json};

enum Op {
    Create,
    List,
    Get(WebhookEndpointId),
    Delete(WebhookEndpointId),
    Enable(WebhookEndpointId, bool),
    RollSecret(WebhookEndpointId),
    Deliveries(WebhookEndpointId),
    Resend(EventId),
}

fn id(p: &PathParams) -> Result<WebhookEndpointId, Error> {
    p.id(0, "webhook endpoint", WebhookEndpointId::parse)
}

const ENDPOINTS: [Endpoint<Op>; 9] = [
    Endpoint { route: route("POST", "/v1/webhook-endpoints"), op: |_| Ok(Op::Create) },
    Endpoint { route: route("GET", "/v1/webhook-endpoints"), op: |_| Ok(Op::List) },
    Endpoint { route: route("GET", "/v1/webhook-endpoints/{id}"), op: |p| Ok(Op::Get(id(p)?)) },
    Endpoint { route: route("DELETE", "/v1/webhook-endpoints/{id}"), op: |p| Ok(Op::Delete(id(p)?)) },
    Endpoint { route: route("POST", "/v1/webhook-endpoints/{id}/disable"), op: |p| Ok(Op::Enable(id(p)?, false)) },
    Endpoint { route: route("POST", "/v1/webhook-endpoints/{id}/enable"), op: |p| Ok(Op::Enable(id(p)?, true)) },
    Endpoint { route: route("POST", "/v1/webhook-endpoints/{id}/roll-secret"), op: |p| Ok(Op::RollSecret(id(p)?)) },
    Endpoint { route: route("GET", "/v1/webhook-endpoints/{id}/deliveries"), op: |p| Ok(Op::Deliveries(id(p)?)) },
    Endpoint {
        route: route("POST", "/v1/events/{id}/resend"),
        op: |p| Ok(Op::Resend(p.id(0, "event", EventId::parse)?)),
    },
];

pub const ROUTES: &[Route] = &routes_of(&ENDPOINTS);

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, &ENDPOINTS, req, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    url: String,
    enabled_events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Roll {
    /// Seconds the current secret keeps signing beside the new one (default a day). A
    /// whole number, which JSON may also write as `3600.0`.
    #[serde(default)]
    expire_current_in: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    /// Only to this endpoint (default: every enabled endpoint that wants the event).
    #[serde(default)]
    webhook_endpoint_id: Option<String>,
}

/// An endpoint as the API shows it: never its secrets.
pub fn endpoint_view(e: &WebhookEndpoint) -> Value {
    json!({
        "id": e.id,
        "object": "webhook_endpoint",
        "url": e.url,
        "enabled_events": e.enabled_events,
        "description": e.description,
        "status": e.status.as_str(),
        "failing_since": e.failing_since.map(views::time),
        "created_at": views::time(e.created_at),
    })
}

pub fn delivery_view(d: &Delivery) -> Value {
    json!({
        "object": "webhook_delivery",
        "webhook_endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "last_response_code": d.last_response_code,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at.map(views::time),
        "first_attempt_at": d.first_attempt_at.map(views::time),
        "created_at": views::time(d.created_at),
        "updated_at": views::time(d.updated_at),
    })
}

/// Puts attempts on the dispatcher's queue.
async fn enqueue(app: &App, attempts: &[AttemptMessage]) -> Result<(), Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let queue = app.webhooks.queue.as_deref().ok_or_else(|| Error::internal("RECOUP_WEBHOOKS_QUEUE_URL is not set"))?;
    let bodies: Vec<String> = attempts.iter().map(AttemptMessage::encode).collect();
    queue.send(&bodies).await.map_err(Error::unavailable)
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    call.require_merchant()?;
    let s = &app.services;
    match op {
        Op::Create => {
            let body: Create = call.json()?;
            let new = NewEndpoint { url: body.url, enabled_events: body.enabled_events, description: body.description };
            let endpoint = s.create_webhook_endpoint(new, app.webhooks.policy).await?;
            let mut view = endpoint_view(&endpoint);
            // Shown once: never readable again.
            view["secret"] = json!(endpoint.secrets[0].secret);
            Ok(Reply::created(view))
        }
        Op::List => {
            let all = s.webhook_endpoints().await?;
            Ok(Reply::ok(views::list(all.iter().map(endpoint_view).collect(), None)))
        }
        Op::Get(id) => Ok(Reply::ok(endpoint_view(&*s.webhook_endpoint(&id).await?))),
        Op::Delete(id) => {
            s.delete_webhook_endpoint(&id).await?;
            Ok(Reply::no_content())
        }
        Op::Enable(id, enabled) => Ok(Reply::ok(endpoint_view(&s.set_webhook_endpoint_enabled(&id, enabled).await?))),
        Op::RollSecret(id) => {
            let body: Roll = call.json()?;
            let range = (chrono::TimeDelta::zero(), MAX_ROLL_WINDOW);
            let window =
                seconds_field(body.expire_current_in.as_ref(), "expire_current_in", range, DEFAULT_ROLL_WINDOW)?;
            let (endpoint, secret) = s.roll_webhook_secret(&id, window).await?;
            let mut view = endpoint_view(&endpoint);
            view["secret"] = json!(secret);
            Ok(Reply::ok(view))
        }
        Op::Deliveries(id) => {
            let (limit, after) = call.page()?;
            let page = s.webhook_deliveries(&id, limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(delivery_view).collect(), page.next)))
        }
        Op::Resend(event) => {
            let body: Resend = call.json()?;
            let only = match body.webhook_endpoint_id.as_deref() {
                None => None,
                Some(raw) => Some(WebhookEndpointId::parse(raw).ok_or_else(|| {
                    Error::new(Code::InvalidRequest, "webhook_endpoint_id is not a webhook endpoint id")
                        .with("field", "webhook_endpoint_id")
                })?),
            };
            let attempts = s.resend_event(&event, only.as_ref()).await?;
            enqueue(&app, &attempts).await?;
            let endpoints: Vec<&WebhookEndpointId> = attempts.iter().map(|a| &a.endpoint_id).collect();
            Ok(Reply::accepted(
                json!({ "object": "event_resend", "event_id": event, "webhook_endpoint_ids": endpoints }),
            ))
        }
    }
}
