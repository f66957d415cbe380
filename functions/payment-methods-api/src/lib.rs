//! The payment-methods API: a customer's owner registers, lists, chooses the default of,
//! and removes their cards; the merchant may list a customer's cards (masked). Team
//! members are refused everything here.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Call, Caller, Endpoint, PathParams, Reply, Route, route, routes_of, serve};
use recoup_lambda::views;
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, PaymentMethodId};
use serde::Deserialize;
use serde_json::json;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    /// The PSP's token for the card (`pm_...`), from its card form.
    payment_method: String,
    #[serde(default)]
    set_default: bool,
    /// The card setup the card form confirmed (`seti_...`, from
    /// `POST /v1/payment-methods/setup-intents`): the PSP verified the card there, so it
    /// is not verified again.
    #[serde(default)]
    setup_intent: Option<String>,
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    let s = &app.services;
    match op {
        Op::BeginSetup => {
            let owner = call.require_owner()?;
            let setup = s.begin_card_setup(owner).await?;
            Ok(Reply::created(json!({
                "id": setup.id,
                "object": "setup_intent",
                "customer_id": owner,
                "client_secret": setup.client_secret,
                "provider": app.card_form.provider,
                "publishable_key": app.card_form.publishable_key,
            })))
        }
        Op::Register => {
            let owner = call.require_owner()?;
            let body: Register = call.json()?;
            let token = body.payment_method.trim();
            if !token.starts_with("pm_") || token.len() > 255 {
                return Err(Error::new(
                    Code::InvalidPaymentMethod,
                    "payment_method must be a payment method token (pm_...) from the payment provider",
                )
                .with("field", "payment_method"));
            }
            if body.setup_intent.as_deref().is_some_and(|s| s.trim().is_empty() || s.len() > 255) {
                return Err(Error::new(Code::InvalidSetupIntent, "setup_intent must be a card setup id (seti_...)")
                    .with("field", "setup_intent"));
            }
            let reg = match body.setup_intent.as_deref().map(str::trim) {
                Some(setup) => s.register_set_up_card(owner, setup, token, body.set_default).await?,
                None => s.register_payment_method(owner, token, body.set_default).await?,
            };
            let mut view = views::payment_method(&reg.card);
            view["replaced"] = json!(reg.replaced);
            view["recovered_invoices"] = views::recovery(&reg.recovery);
            Ok(if reg.replaced { Reply::ok(view) } else { Reply::created(view) })
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
