//! The subscriptions API: the merchant starts subscriptions, finds those with failed
//! payments, re-processes payment N, and re-activates, pauses, resumes or cancels them.
//! Customers may read their own subscriptions.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Call, Caller, Endpoint, PathParams, Reply, Route, parse_money, route, routes_of, serve};
use recoup_lambda::views::{self, Audience};
use recoup_shared::domain::Subscription;
use recoup_shared::domain::subscription::Interval;
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, SubscriptionId};
use recoup_shared::services::charging::ChargeOutcome;
use recoup_shared::services::subscriptions::NewSubscription;
use serde::Deserialize;
use serde_json::{Value, json};

/// What a request asks for, with its path parameters typed.
enum Op {
    Create,
    List,
    Get(SubscriptionId),
    Change(SubscriptionId, Change),
    ProcessPayment(SubscriptionId, u32),
}

/// The merchant's state changes.
enum Change {
    Reactivate,
    Cancel,
    Pause,
    Resume,
}

fn id(p: &PathParams) -> Result<SubscriptionId, Error> {
    p.id(0, "subscription", SubscriptionId::parse)
}

const ENDPOINTS: [Endpoint<Op>; 8] = [
    Endpoint { route: route("POST", "/v1/subscriptions"), op: |_| Ok(Op::Create) },
    Endpoint { route: route("GET", "/v1/subscriptions"), op: |_| Ok(Op::List) },
    Endpoint { route: route("GET", "/v1/subscriptions/{id}"), op: |p| Ok(Op::Get(id(p)?)) },
    Endpoint {
        route: route("POST", "/v1/subscriptions/{id}/reactivate"),
        op: |p| Ok(Op::Change(id(p)?, Change::Reactivate)),
    },
    Endpoint { route: route("POST", "/v1/subscriptions/{id}/cancel"), op: |p| Ok(Op::Change(id(p)?, Change::Cancel)) },
    Endpoint { route: route("POST", "/v1/subscriptions/{id}/pause"), op: |p| Ok(Op::Change(id(p)?, Change::Pause)) },
    Endpoint { route: route("POST", "/v1/subscriptions/{id}/resume"), op: |p| Ok(Op::Change(id(p)?, Change::Resume)) },
    Endpoint {
        route: route("POST", "/v1/subscriptions/{id}/payments/{number}/process"),
        op: |p| Ok(Op::ProcessPayment(id(p)?, p.number(1, "payment")?)),
    },
];

pub const ROUTES: &[Route] = &routes_of(&ENDPOINTS);

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, &ENDPOINTS, req, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSub {
    customer_id: String,
    amount: Value,
    currency: String,
    interval: Interval,
    #[serde(default = "one")]
    interval_count: u32,
    #[serde(default)]
    description: String,
}

fn one() -> u32 {
    1
}

fn flag(call: &Call, name: &str) -> Result<bool, Error> {
    match call.query(name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Error::new(Code::InvalidRequest, format!("{name} must be true or false")).with("field", name)),
    }
}

async fn visible(app: &App, call: &Call, id: &SubscriptionId) -> Result<Subscription, Error> {
    let sub = app.services.subscription(id).await?.into_inner();
    match call.caller.customer() {
        Some(c) if *c != sub.customer_id => Err(Error::not_found("subscription")),
        Some(_) | None => Ok(sub),
    }
}

async fn render(app: &App, call: &Call, sub: &Subscription, with_payments: bool) -> Result<Value, Error> {
    let payments = if with_payments { Some(app.services.subscription_payments(sub).await?) } else { None };
    Ok(views::subscription(sub, payments.as_deref(), Audience::from(&call.caller)))
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    let s = &app.services;
    match op {
        Op::Create => {
            call.require_merchant()?;
            let body: NewSub = call.json()?;
            let customer_id = CustomerId::parse(&body.customer_id).ok_or_else(|| {
                Error::new(Code::InvalidRequest, "customer_id is not a customer id").with("field", "customer_id")
            })?;
            let (sub, first) = s
                .create_subscription_once(
                    NewSubscription {
                        customer_id,
                        amount: parse_money(&body.amount, &body.currency)?,
                        interval: body.interval,
                        interval_count: body.interval_count,
                        description: body.description,
                    },
                    call.request.as_ref(),
                )
                .await?;
            let mut view = render(&app, &call, &sub, true).await?;
            view["first_payment"] = match &first {
                Ok(r) => json!({"outcome": views::charge_outcome(r.outcome), "invoice_id": r.invoice.id}),
                Err(e) => json!({"outcome": "not_attempted", "error": recoup_lambda::http::error_body(e)}),
            };
            Ok(Reply::created(view))
        }
        Op::List => {
            let failing = flag(&call, "has_failed_payments")?;
            let with_payments = flag(&call, "include_sub_objects")?;
            match &call.caller {
                Caller::Merchant { .. } => {
                    let (limit, after) = call.page()?;
                    let page = s.list_subscriptions(failing, limit, after).await?;
                    let mut data = Vec::with_capacity(page.items.len());
                    for sub in &page.items {
                        data.push(render(&app, &call, sub, with_payments).await?);
                    }
                    Ok(Reply::ok(views::list(data, page.next)))
                }
                Caller::Owner(c) | Caller::Member(c) => {
                    // A customer's own list is one page; its parameters are still checked.
                    call.page()?;
                    let customer = s.customer(c).await?;
                    let mut data = Vec::new();
                    for id in &customer.subscription_ids {
                        let sub = s.subscription(id).await?;
                        if !failing || sub.failed_payment_count() > 0 {
                            data.push(render(&app, &call, &sub, with_payments).await?);
                        }
                    }
                    Ok(Reply::ok(views::list(data, None)))
                }
            }
        }
        Op::Get(id) => {
            let sub = visible(&app, &call, &id).await?;
            Ok(Reply::ok(render(&app, &call, &sub, flag(&call, "include_sub_objects")?).await?))
        }
        Op::Change(id, change) => {
            call.require_merchant()?;
            let sub = match change {
                Change::Reactivate => s.reactivate_subscription(&id).await?,
                Change::Cancel => s.cancel_subscription(&id).await?,
                Change::Pause => s.pause_subscription(&id).await?,
                Change::Resume => s.resume_subscription(&id).await?,
            };
            Ok(Reply::ok(render(&app, &call, &sub, false).await?))
        }
        Op::ProcessPayment(id, number) => {
            call.require_merchant()?;
            let report = s.process_payment(&id, number).await?;
            let sub = s.subscription(&id).await?;
            let payments = s.subscription_payments(&sub).await?;
            let payment = payments
                .iter()
                .find(|p| p.number == number)
                .map(|p| views::payment(p, Audience::Merchant))
                .unwrap_or(Value::Null);
            match report.outcome {
                ChargeOutcome::Paid => Ok(Reply::ok(payment)),
                ChargeOutcome::Pending => Ok(Reply::accepted(payment)),
                ChargeOutcome::Declined => {
                    let error_type = report.transaction.error_type();
                    Err(Error::new(
                        Code::PaymentDeclined,
                        error_type.map_or("the payment was declined", |t| t.customer_advice()),
                    )
                    .with("error_type", json!(error_type))
                    .with("payment", payment))
                }
            }
        }
    }
}
