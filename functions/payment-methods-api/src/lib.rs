//! The payment-methods API: a customer's owner registers, lists, chooses the default of,
//! and removes their cards; the merchant may list a customer's cards (masked). Team
//! members are refused everything here.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Call, Caller, Reply, Route, path_id, route, serve};
use recoup_lambda::views;
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, PaymentMethodId};
use serde::Deserialize;
use serde_json::json;

pub const ROUTES: &[Route] = &[
    route("POST", "/v1/payment-methods"),
    route("GET", "/v1/payment-methods"),
    route("POST", "/v1/payment-methods/{id}/default"),
    route("DELETE", "/v1/payment-methods/{id}"),
];

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, ROUTES, req, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    /// The PSP's token for the card (`pm_...`), from its card form.
    payment_method: String,
    #[serde(default)]
    set_default: bool,
}

async fn dispatch(app: App, call: Call) -> Result<Reply, Error> {
    let s = &app.services;
    match (call.method, call.route) {
        ("POST", "/v1/payment-methods") => {
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
            let reg = s.register_payment_method(owner, token, body.set_default).await?;
            let mut view = views::payment_method(&reg.card);
            view["replaced"] = json!(reg.replaced);
            view["recovered_invoices"] = views::recovery(&reg.recovery);
            Ok(if reg.replaced { Reply::ok(view) } else { Reply::created(view) })
        }
        ("GET", "/v1/payment-methods") => {
            let customer = match &call.caller {
                Caller::Owner(c) => c.clone(),
                Caller::Merchant { .. } => call.query("customer_id").and_then(CustomerId::parse).ok_or_else(|| {
                    Error::new(Code::InvalidRequest, "customer_id is required").with("field", "customer_id")
                })?,
                Caller::Member(_) => return Err(Error::forbidden("team members cannot see payment methods")),
            };
            let cards = s.list_payment_methods(&customer).await?;
            Ok(Reply::ok(views::list(cards.iter().map(views::payment_method).collect(), None)))
        }
        ("POST", "/v1/payment-methods/{id}/default") => {
            let owner = call.require_owner()?;
            let id = path_id(&call, 0, "payment method", PaymentMethodId::parse)?;
            let card = s.set_default_payment_method(owner, &id).await?;
            Ok(Reply::ok(views::payment_method(&card)))
        }
        ("DELETE", "/v1/payment-methods/{id}") => {
            let owner = call.require_owner()?;
            let id = path_id(&call, 0, "payment method", PaymentMethodId::parse)?;
            s.remove_payment_method(owner, &id).await?;
            Ok(Reply::no_content())
        }
        _ => Err(Error::not_found("route")),
    }
}
