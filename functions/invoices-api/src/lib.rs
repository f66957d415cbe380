//! The invoices API: the merchant creates customers and invoices, charges an invoice,
//! reconciles bank transfers and voids; customers see their invoices (team members too,
//! without card details) and the owner pays them.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{Call, Caller, Reply, Route, parse_money, path_id, route, serve};
use recoup_lambda::views::{self, Audience};
use recoup_shared::domain::invoice::{AttemptTrigger, CollectionMethod};
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, InvoiceId, PaymentMethodId};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome, ChargeReport};
use recoup_shared::services::invoices::IssueInvoice;
use serde::Deserialize;
use serde_json::{Value, json};

pub const ROUTES: &[Route] = &[
    route("POST", "/v1/customers"),
    route("GET", "/v1/customers"),
    route("GET", "/v1/customers/{id}"),
    route("POST", "/v1/invoices"),
    route("GET", "/v1/invoices"),
    route("GET", "/v1/invoices/{id}"),
    route("POST", "/v1/invoices/{id}/charge"),
    route("POST", "/v1/invoices/{id}/pay"),
    route("POST", "/v1/invoices/{id}/mark-paid"),
    route("POST", "/v1/invoices/{id}/void"),
];

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, ROUTES, req, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvoice {
    customer_id: String,
    amount: Value,
    currency: String,
    #[serde(default)]
    description: String,
    #[serde(default = "charge_automatically")]
    collection_method: CollectionMethod,
}

fn charge_automatically() -> CollectionMethod {
    CollectionMethod::ChargeAutomatically
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChargeWith {
    #[serde(default)]
    payment_method_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MarkPaid {
    #[serde(default)]
    reference: Option<String>,
}

fn customer_id(s: &str) -> Result<CustomerId, Error> {
    CustomerId::parse(s).ok_or_else(|| {
        Error::new(Code::InvalidRequest, "customer_id is not a customer id").with("field", "customer_id")
    })
}

fn card_choice(body: &ChargeWith) -> Result<CardChoice, Error> {
    match &body.payment_method_id {
        None => Ok(CardChoice::Default),
        Some(id) => {
            PaymentMethodId::parse(id).map(CardChoice::Specific).ok_or_else(|| Error::not_found("payment method"))
        }
    }
}

/// A charge's answer: paid (200), still pending at the PSP (202), or declined (402, with
/// the reason the caller may see and the invoice as it now stands).
fn charge_reply(report: &ChargeReport, audience: Audience) -> Result<Reply, Error> {
    let invoice = views::invoice(&report.invoice, audience);
    match report.outcome {
        ChargeOutcome::Paid => Ok(Reply::ok(invoice)),
        ChargeOutcome::Pending => Ok(Reply::accepted(invoice)),
        ChargeOutcome::Declined => {
            let error_type = report.transaction.error_type().map(|t| match audience {
                Audience::Merchant => t,
                Audience::Owner | Audience::Member => t.for_customer(),
            });
            let advice = error_type.map_or("the payment was declined", |t| t.customer_advice());
            Err(Error::new(Code::PaymentDeclined, advice)
                .with("error_type", json!(error_type))
                .with("invoice", invoice))
        }
    }
}

/// Loads an invoice the caller may see; another customer's is simply not found.
async fn visible_invoice(app: &App, call: &Call) -> Result<recoup_shared::domain::Invoice, Error> {
    let id = path_id(call, 0, "invoice", InvoiceId::parse)?;
    let inv = app.services.invoice(&id).await?.into_inner();
    match call.caller.customer() {
        Some(c) if *c != inv.customer_id => Err(Error::not_found("invoice")),
        Some(_) | None => Ok(inv),
    }
}

async fn dispatch(app: App, call: Call) -> Result<Reply, Error> {
    let s = &app.services;
    let audience = Audience::from(&call.caller);
    match (call.method, call.route) {
        ("POST", "/v1/customers") => {
            call.require_merchant()?;
            let body: NewCustomer = call.json()?;
            let c = s.create_customer(&body.email, body.name.as_deref()).await?;
            Ok(Reply::created(views::customer(&c)))
        }
        ("GET", "/v1/customers") => {
            call.require_merchant()?;
            let (limit, after) = call.page()?;
            let page = s.list_customers(limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(views::customer).collect(), page.next)))
        }
        ("GET", "/v1/customers/{id}") => {
            call.require_merchant()?;
            let id = path_id(&call, 0, "customer", CustomerId::parse)?;
            Ok(Reply::ok(views::customer(&s.customer(&id).await?.into_inner())))
        }
        ("POST", "/v1/invoices") => {
            call.require_merchant()?;
            let body: NewInvoice = call.json()?;
            let issued = s
                .issue_invoice(IssueInvoice {
                    customer_id: customer_id(&body.customer_id)?,
                    amount: parse_money(&body.amount, &body.currency)?,
                    description: body.description,
                    collection_method: body.collection_method,
                })
                .await?;
            let mut view = views::invoice(&issued.invoice, audience);
            view["charge"] = match &issued.charge {
                None => Value::Null,
                Some(Ok(report)) => json!({"outcome": views::charge_outcome(report.outcome)}),
                Some(Err(e)) => json!({"outcome": "not_attempted", "error": recoup_lambda::http::error_body(e)}),
            };
            Ok(Reply::created(view))
        }
        ("GET", "/v1/invoices") => {
            let customer = match &call.caller {
                Caller::Owner(c) | Caller::Member(c) => c.clone(),
                Caller::Merchant { .. } => customer_id(call.query("customer_id").unwrap_or(""))?,
            };
            let (limit, after) = call.page()?;
            let page = s.list_invoices(&customer, limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(|i| views::invoice(i, audience)).collect(), page.next)))
        }
        ("GET", "/v1/invoices/{id}") => Ok(Reply::ok(views::invoice(&visible_invoice(&app, &call).await?, audience))),
        ("POST", "/v1/invoices/{id}/charge") => {
            call.require_merchant()?;
            let id = path_id(&call, 0, "invoice", InvoiceId::parse)?;
            let body: ChargeWith = call.json()?;
            let report = s.charge_invoice(&id, card_choice(&body)?, AttemptTrigger::Manual).await?;
            charge_reply(&report, audience)
        }
        ("POST", "/v1/invoices/{id}/pay") => {
            call.require_owner()?;
            let inv = visible_invoice(&app, &call).await?;
            let body: ChargeWith = call.json()?;
            let report = s.charge_invoice(&inv.id, card_choice(&body)?, AttemptTrigger::Customer).await?;
            charge_reply(&report, audience)
        }
        ("POST", "/v1/invoices/{id}/mark-paid") => {
            call.require_merchant()?;
            let id = path_id(&call, 0, "invoice", InvoiceId::parse)?;
            let body: MarkPaid = call.json()?;
            let reference =
                body.reference.map(|r| r.trim().chars().take(200).collect::<String>()).filter(|r| !r.is_empty());
            Ok(Reply::ok(views::invoice(&s.mark_invoice_paid(&id, reference).await?, audience)))
        }
        ("POST", "/v1/invoices/{id}/void") => {
            call.require_merchant()?;
            let id = path_id(&call, 0, "invoice", InvoiceId::parse)?;
            Ok(Reply::ok(views::invoice(&s.void_invoice(&id).await?, audience)))
        }
        _ => Err(Error::not_found("route")),
    }
}
