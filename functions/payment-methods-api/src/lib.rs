//! The payment-methods API: a customer's owner registers, lists, chooses the default of,
//! and removes their cards; the merchant may list a customer's cards (masked). Team
//! members are refused everything here.

use lambda_http::{Body, Request, Response};
use recoup_lambda::{App, cards};
use recoup_lambda::http::{Call, Caller, Endpoint, PathParams, Reply, Route, route, routes_of, serve};
use recoup_lambda::views;
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, PaymentMethodId};

/// What a request asks for, with its path parameters typed.
enum Op {
    BeginSetup,
    Register,
    List,
    SetDefault(PaymentMethodId),
    Remove(PaymentMethodId),
}

fn id(p: &PathParams) -> Result<PaymentMethodId, Error> {
    p.id(0, "payment method", PaymentMethodId::parse)
}

const ENDPOINTS: [Endpoint<Op>; 5] = [
    Endpoint { route: route("POST", "/v1/payment-methods/setup-intents"), op: |_| Ok(Op::BeginSetup) },
    Endpoint { route: route("POST", "/v1/payment-methods"), op: |_| Ok(Op::Register) },
    Endpoint { route: route("GET", "/v1/payment-methods"), op: |_| Ok(Op::List) },
    Endpoint { route: route("POST", "/v1/payment-methods/{id}/default"), op: |p| Ok(Op::SetDefault(id(p)?)) },
    Endpoint { route: route("DELETE", "/v1/payment-methods/{id}"), op: |p| Ok(Op::Remove(id(p)?)) },
];

pub const ROUTES: &[Route] = &routes_of(&ENDPOINTS);

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, &ENDPOINTS, req, dispatch).await
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    let s = &app.services;
    match op {
        Op::BeginSetup => Ok(Reply::created(cards::begin_setup(&app, call.require_owner()?).await?)),
        Op::Register => {
            let owner = call.require_owner()?;
            let (view, replaced) = cards::register(&app, owner, call.json()?).await?;
            Ok(if replaced { Reply::ok(view) } else { Reply::created(view) })
        }
        Op::List => {
            let customer = match &call.caller {
                Caller::Owner(c) => {
                    // The owner's own cards; a customer_id it sends is still checked.
                    if call.query("customer_id").is_some_and(|q| CustomerId::parse(q).is_none()) {
                        return Err(Error::new(Code::InvalidRequest, "customer_id is not a customer id")
                            .with("field", "customer_id"));
                    }
                    c.clone()
                }
                Caller::Merchant { .. } => call.query("customer_id").and_then(CustomerId::parse).ok_or_else(|| {
                    Error::new(Code::InvalidRequest, "customer_id is required").with("field", "customer_id")
                })?,
                Caller::Member(_) => return Err(Error::forbidden("team members cannot see payment methods")),
            };
            let cards = s.list_payment_methods(&customer).await?;
            Ok(Reply::ok(views::list(cards.iter().map(views::payment_method).collect(), None)))
        }
        Op::SetDefault(id) => {
            let owner = call.require_owner()?;
            let card = s.set_default_payment_method(owner, &id).await?;
            Ok(Reply::ok(views::payment_method(&card)))
        }
        Op::Remove(id) => {
            let owner = call.require_owner()?;
            s.remove_payment_method(owner, &id).await?;
            Ok(Reply::no_content())
        }
    }
}
