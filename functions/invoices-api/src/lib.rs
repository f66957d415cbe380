//! The invoices API: the merchant creates customers and invoices, charges an invoice,
//! reconciles bank transfers and voids; customers see their invoices (team members too,
//! without card details) and the owner pays them.

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::{
    Call, Caller, Endpoint, PathParams, Reply, Route, parse_money, route, routes_of, seconds_field, serve,
};
use recoup_lambda::views::{self, Audience};
use recoup_shared::domain::invoice::{AttemptTrigger, CollectionMethod};
use recoup_shared::domain::portal::{DEFAULT_LINK_TTL, MAX_LINK_TTL, PortalClaims, PortalRole, TokenKind, sign};
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, InvoiceId, PaymentMethodId};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome, ChargeReport};
use recoup_shared::services::invoices::IssueInvoice;
use serde::Deserialize;
use serde_json::{Value, json};

/// What a request asks for, with its path parameters typed.
enum Op {
    CreateCustomer,
    ListCustomers,
    GetCustomer(CustomerId),
    SetCollectionMethod(CustomerId),
    PortalSession,
    Issue,
    List,
    Get(InvoiceId),
    Charge(InvoiceId),
    Pay(InvoiceId),
    MarkPaid(InvoiceId),
    Void(InvoiceId),
}

fn invoice_id(p: &PathParams) -> Result<InvoiceId, Error> {
    p.id(0, "invoice", InvoiceId::parse)
}

const ENDPOINTS: [Endpoint<Op>; 12] = [
    Endpoint { route: route("POST", "/v1/customers"), op: |_| Ok(Op::CreateCustomer) },
    Endpoint { route: route("GET", "/v1/customers"), op: |_| Ok(Op::ListCustomers) },
    Endpoint {
        route: route("GET", "/v1/customers/{id}"),
        op: |p| Ok(Op::GetCustomer(p.id(0, "customer", CustomerId::parse)?)),
    },
    Endpoint {
        route: route("POST", "/v1/customers/{id}/collection-method"),
        op: |p| Ok(Op::SetCollectionMethod(p.id(0, "customer", CustomerId::parse)?)),
    },
    Endpoint { route: route("POST", "/v1/portal-sessions"), op: |_| Ok(Op::PortalSession) },
    Endpoint { route: route("POST", "/v1/invoices"), op: |_| Ok(Op::Issue) },
    Endpoint { route: route("GET", "/v1/invoices"), op: |_| Ok(Op::List) },
    Endpoint { route: route("GET", "/v1/invoices/{id}"), op: |p| Ok(Op::Get(invoice_id(p)?)) },
    Endpoint { route: route("POST", "/v1/invoices/{id}/charge"), op: |p| Ok(Op::Charge(invoice_id(p)?)) },
    Endpoint { route: route("POST", "/v1/invoices/{id}/pay"), op: |p| Ok(Op::Pay(invoice_id(p)?)) },
    Endpoint { route: route("POST", "/v1/invoices/{id}/mark-paid"), op: |p| Ok(Op::MarkPaid(invoice_id(p)?)) },
    Endpoint { route: route("POST", "/v1/invoices/{id}/void"), op: |p| Ok(Op::Void(invoice_id(p)?)) },
];

pub const ROUTES: &[Route] = &routes_of(&ENDPOINTS);

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, &ENDPOINTS, req, dispatch).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    email: String,
    #[serde(default)]
    name: Option<String>,
    /// How the customer's invoices are collected (default: charged to the card).
    #[serde(default)]
    collection_method: Option<CollectionMethod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPortalSession {
    customer_id: String,
    /// `owner` (default) or `member` (bills only).
    #[serde(default)]
    role: Option<PortalRole>,
    /// Seconds the link stays valid (default an hour, at most a week).
    #[serde(default)]
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCollectionMethod {
    collection_method: CollectionMethod,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvoice {
    customer_id: String,
    amount: Value,
    currency: String,
    #[serde(default)]
    description: String,
    /// Default: the customer's.
    #[serde(default)]
    collection_method: Option<CollectionMethod>,
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

/// A charge's answer: paid (200), still pending at the PSP (202; with `next_action` when
/// the cardholder must authenticate), or declined (402, with the reason the caller may see
/// and the invoice as it now stands).
fn charge_reply(report: &ChargeReport, audience: Audience) -> Result<Reply, Error> {
    let mut invoice = views::invoice(&report.invoice, audience);
    match report.outcome {
        ChargeOutcome::Paid => Ok(Reply::ok(invoice)),
        ChargeOutcome::Pending => {
            if let Some(action) = &report.next_action {
                invoice["next_action"] = views::next_action(action);
            }
            Ok(Reply::accepted(invoice))
        }
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
async fn visible_invoice(app: &App, call: &Call, id: &InvoiceId) -> Result<recoup_shared::domain::Invoice, Error> {
    let inv = app.services.invoice(id).await?.into_inner();
    match call.caller.customer() {
        Some(c) if *c != inv.customer_id => Err(Error::not_found("invoice")),
        Some(_) | None => Ok(inv),
    }
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    let s = &app.services;
    let audience = Audience::from(&call.caller);
    match op {
        Op::CreateCustomer => {
            call.require_merchant()?;
            let body: NewCustomer = call.json()?;
            let method = body.collection_method.unwrap_or(CollectionMethod::ChargeAutomatically);
            let c = s.create_customer_once(&body.email, body.name.as_deref(), method, call.request.as_ref()).await?;
            Ok(Reply::created(views::customer(&c)))
        }
        Op::ListCustomers => {
            call.require_merchant()?;
            let (limit, after) = call.page()?;
            let page = s.list_customers(limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(views::customer).collect(), page.next)))
        }
        Op::GetCustomer(id) => {
            call.require_merchant()?;
            Ok(Reply::ok(views::customer(&s.customer(&id).await?.into_inner())))
        }
        Op::SetCollectionMethod(id) => {
            let body: SetCollectionMethod = call.json()?;
            match &call.caller {
                Caller::Merchant { .. } => {}
                // The customer's owner may switch to paying by card ("Switch to credit
                // card"), not away from it.
                Caller::Owner(own) if *own == id && body.collection_method == CollectionMethod::ChargeAutomatically => {
                }
                Caller::Owner(own) if *own != id => return Err(Error::not_found("customer")),
                Caller::Owner(_) => {
                    return Err(Error::forbidden("only the merchant moves a customer to bank transfer"));
                }
                Caller::Member(_) => return Err(Error::forbidden("team members cannot change how the account pays")),
            }
            let switched = s.set_collection_method(&id, body.collection_method).await?;
            let mut view = views::customer(&switched.customer);
            view["recovered_invoices"] = views::recovery(&switched.recovery);
            Ok(Reply::ok(view))
        }
        Op::PortalSession => {
            call.require_merchant()?;
            let body: NewPortalSession = call.json()?;
            let range = (chrono::TimeDelta::seconds(60), MAX_LINK_TTL);
            let ttl = seconds_field(body.expires_in.as_ref(), "expires_in", range, DEFAULT_LINK_TTL)?;
            let customer = s.customer(&customer_id(&body.customer_id)?).await?;
            let secrets = match &app.portal_secrets {
                Some(source) => source.values().await.map_err(Error::unavailable)?,
                None => return Err(Error::internal("RECOUP_PORTAL_SECRET_ARN is not set")),
            };
            let secret = secrets.first().ok_or_else(|| Error::internal("the portal signing secret is empty"))?;
            let role = body.role.unwrap_or(PortalRole::Owner);
            let expires_at = s.now() + ttl;
            let claims = PortalClaims::new(TokenKind::Link, customer.id.clone(), role, expires_at);
            let url = format!("{}/session?token={}", s.portal_url.trim_end_matches('/'), sign(secret, &claims));
            Ok(Reply::created(json!({
                "object": "portal_session",
                "customer_id": customer.id,
                "role": role,
                "url": url,
                "expires_at": views::time(expires_at),
            })))
        }
        Op::Issue => {
            call.require_merchant()?;
            let body: NewInvoice = call.json()?;
            let issued = s
                .issue_invoice_once(
                    IssueInvoice {
                        customer_id: customer_id(&body.customer_id)?,
                        amount: parse_money(&body.amount, &body.currency)?,
                        description: body.description,
                        collection_method: body.collection_method,
                    },
                    call.request.as_ref(),
                )
                .await?;
            let mut view = views::invoice(&issued.invoice, audience);
            view["charge"] = match &issued.charge {
                None => Value::Null,
                Some(Ok(report)) => json!({"outcome": views::charge_outcome(report.outcome)}),
                Some(Err(e)) => json!({"outcome": "not_attempted", "error": recoup_lambda::http::error_body(e)}),
            };
            Ok(Reply::created(view))
        }
        Op::List => {
            let customer = match &call.caller {
                // A customer reads its own invoices; a customer_id it sends is still checked.
                Caller::Owner(c) | Caller::Member(c) => {
                    call.query("customer_id").map(customer_id).transpose()?;
                    c.clone()
                }
                Caller::Merchant { .. } => customer_id(call.query("customer_id").unwrap_or(""))?,
            };
            let (limit, after) = call.page()?;
            let page = s.list_invoices(&customer, limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(|i| views::invoice(i, audience)).collect(), page.next)))
        }
        Op::Get(id) => Ok(Reply::ok(views::invoice(&visible_invoice(&app, &call, &id).await?, audience))),
        Op::Charge(id) => {
            call.require_merchant()?;
            let body: ChargeWith = call.json()?;
            let report = s.charge_invoice(&id, card_choice(&body)?, AttemptTrigger::Manual).await?;
            charge_reply(&report, audience)
        }
        Op::Pay(id) => {
            call.require_owner()?;
            let inv = visible_invoice(&app, &call, &id).await?;
            let body: ChargeWith = call.json()?;
            let report = s.charge_invoice(&inv.id, card_choice(&body)?, AttemptTrigger::Customer).await?;
            charge_reply(&report, audience)
        }
        Op::MarkPaid(id) => {
            call.require_merchant()?;
            let body: MarkPaid = call.json()?;
            let reference =
                body.reference.map(|r| r.trim().chars().take(200).collect::<String>()).filter(|r| !r.is_empty());
            Ok(Reply::ok(views::invoice(&s.mark_invoice_paid(&id, reference).await?, audience)))
        }
        Op::Void(id) => {
            call.require_merchant()?;
            Ok(Reply::ok(views::invoice(&s.void_invoice(&id).await?, audience)))
        }
    }
}
