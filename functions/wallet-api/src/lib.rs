//! The wallet API: a customer's prepaid balances and their ledger, refills charged to a
//! card, the merchant's usage debits, and automatic refill settings.
//!
//! - The owner refills (`POST /v1/wallet/refills`) and sees and configures their wallets.
//! - The merchant debits (`POST /v1/wallet/debits`), and sees and configures any
//!   customer's wallets (`customer_id`).
//! - Team members see no wallet (seed 001: the owner manages payments).

use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::app::wallet_max_refill;
use recoup_lambda::http::{Call, Caller, Endpoint, Reply, Route, parse_money, route, routes_of, serve};
use recoup_lambda::views::{self, Audience};
use recoup_shared::domain::money::Currency;
use recoup_shared::domain::wallet::{AutoRefill, EntryKind, Wallet, WalletEntry};
use recoup_shared::error::{Code, Error};
use recoup_shared::ids::{CustomerId, PaymentMethodId};
use recoup_shared::services::charging::{CardChoice, ChargeOutcome};
use recoup_shared::services::wallet::Refill;
use serde::Deserialize;
use serde_json::{Value, json};

enum Op {
    Wallets,
    Entries,
    Refill,
    Debit,
    AutoRefill,
}

const ENDPOINTS: [Endpoint<Op>; 5] = [
    Endpoint { route: route("GET", "/v1/wallet"), op: |_| Ok(Op::Wallets) },
    Endpoint { route: route("GET", "/v1/wallet/entries"), op: |_| Ok(Op::Entries) },
    Endpoint { route: route("POST", "/v1/wallet/refills"), op: |_| Ok(Op::Refill) },
    Endpoint { route: route("POST", "/v1/wallet/debits"), op: |_| Ok(Op::Debit) },
    Endpoint { route: route("POST", "/v1/wallet/auto-refill"), op: |_| Ok(Op::AutoRefill) },
];

pub const ROUTES: &[Route] = &routes_of(&ENDPOINTS);

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(app, &ENDPOINTS, req, dispatch).await
}

fn customer_id(s: &str) -> Result<CustomerId, Error> {
    CustomerId::parse(s).ok_or_else(|| {
        Error::new(Code::InvalidRequest, "customer_id is not a customer id").with("field", "customer_id")
    })
}

/// Whose wallet: the owner's own, or, for the merchant, `customer_id` (required).
fn whose(call: &Call, sent: Option<&str>) -> Result<CustomerId, Error> {
    match &call.caller {
        Caller::Owner(c) => match sent {
            Some(s) if customer_id(s)? != *c => Err(Error::not_found("customer")),
            Some(_) | None => Ok(c.clone()),
        },
        Caller::Merchant { .. } => customer_id(
            sent.ok_or_else(|| Error::new(Code::InvalidRequest, "customer_id is required").with("field", "customer_id"))?,
        ),
        Caller::Member(_) => Err(Error::forbidden("team members cannot see or use the wallet")),
    }
}

fn currency(code: &str) -> Result<Currency, Error> {
    Currency::parse(code).map_err(|_| {
        Error::new(Code::InvalidCurrency, format!("{code:?} is not a supported ISO 4217 currency"))
            .with("field", "currency")
    })
}

pub fn wallet_view(w: &Wallet) -> Value {
    json!({
        "object": "wallet",
        "customer_id": w.customer_id,
        "currency": w.currency.code(),
        "balance": w.balance(),
        "auto_refill": w.auto_refill.map(|a| json!({
            "enabled": a.enabled,
            "threshold": a.threshold,
            "amount": a.amount,
            "disabled_at": a.disabled_at.map(views::time),
        })),
        "refill_in_progress": w.refill_in_flight(),
        "updated_at": views::time(w.updated_at),
    })
}

pub fn entry_view(e: &WalletEntry) -> Value {
    let mut v = json!({
        "object": "wallet_entry",
        "number": e.number,
        "currency": e.currency.code(),
        "amount": e.amount,
        "balance_after": e.balance_after,
        "created_at": views::time(e.at),
    });
    match &e.kind {
        EntryKind::Refill { invoice_id, automatic } => {
            v["type"] = json!("refill");
            v["invoice_id"] = json!(invoice_id);
            v["automatic"] = json!(automatic);
        }
        EntryKind::Debit { description } => {
            v["type"] = json!("debit");
            v["description"] = json!(description);
        }
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefillBody {
    amount: Value,
    currency: String,
    /// Default: the customer's default card.
    #[serde(default)]
    payment_method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DebitBody {
    customer_id: String,
    amount: Value,
    currency: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoRefillBody {
    #[serde(default)]
    customer_id: Option<String>,
    currency: String,
    enabled: bool,
    threshold: Value,
    amount: Value,
}

fn minor_units(v: &Value, field: &'static str) -> Result<i64, Error> {
    v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
        Error::new(Code::InvalidAmount, format!("{field} must be a whole number of minor units, 0 or more"))
            .with("field", field)
    })
}

async fn dispatch(app: App, call: Call, op: Op) -> Result<Reply, Error> {
    let s = &app.services;
    match op {
        Op::Wallets => {
            let customer = whose(&call, call.query("customer_id"))?;
            let wallets = s.wallets(&customer).await?;
            Ok(Reply::ok(views::list(wallets.iter().map(wallet_view).collect(), None)))
        }
        Op::Entries => {
            let customer = whose(&call, call.query("customer_id"))?;
            let code = call.query("currency").ok_or_else(|| {
                Error::new(Code::InvalidRequest, "currency is required").with("field", "currency")
            })?;
            let (limit, after) = call.page()?;
            let page = s.wallet_entries(&customer, currency(code)?, limit, after).await?;
            Ok(Reply::ok(views::list(page.items.iter().map(entry_view).collect(), page.next)))
        }
        Op::Refill => {
            let owner = call.require_owner().map_err(|_| match &call.caller {
                Caller::Member(_) => Error::forbidden("team members cannot see or use the wallet"),
                Caller::Owner(_) | Caller::Merchant { .. } => Error::forbidden("a refill is the customer's own"),
            })?;
            let body: RefillBody = call.json()?;
            let amount = parse_money(&body.amount, &body.currency)?;
            let card = match body.payment_method.as_deref() {
                None => CardChoice::Default,
                Some(id) => CardChoice::Specific(PaymentMethodId::parse(id).ok_or_else(|| {
                    Error::not_found("payment method").with("field", "payment_method")
                })?),
            };
            let refilled = s
                .refill_wallet(Refill { customer_id: owner.clone(), amount, card }, wallet_max_refill(), call.request.as_ref())
                .await?;
            let mut view = json!({
                "object": "wallet_refill",
                "invoice_id": refilled.invoice.id,
                "amount": amount.amount(),
                "currency": amount.currency().code(),
                "invoice": views::invoice(&refilled.invoice, Audience::Owner),
                "wallet": wallet_view(&refilled.wallet),
            });
            match refilled.charge {
                // A re-run of the request: the refill as it stands.
                None => {
                    view["status"] = json!(refill_status(&refilled.invoice));
                    Ok(Reply::ok(view))
                }
                Some(Err(e)) => Err(e),
                Some(Ok(report)) => match report.outcome {
                    ChargeOutcome::Paid => {
                        view["status"] = json!("succeeded");
                        Ok(Reply::created(view))
                    }
                    ChargeOutcome::Pending => {
                        view["status"] = json!("pending");
                        if let Some(action) = &report.next_action {
                            view["next_action"] = views::next_action(action);
                        }
                        Ok(Reply::accepted(view))
                    }
                    ChargeOutcome::Declined => {
                        let error_type = report.transaction.error_type().map(|t| t.for_customer());
                        let advice = error_type.map_or("the payment was declined", |t| t.customer_advice());
                        view["status"] = json!("failed");
                        Err(Error::new(Code::PaymentDeclined, advice)
                            .with("error_type", json!(error_type))
                            .with("refill", view))
                    }
                },
            }
        }
        Op::Debit => {
            call.require_merchant()?;
            let body: DebitBody = call.json()?;
            let customer = customer_id(&body.customer_id)?;
            let amount = parse_money(&body.amount, &body.currency)?;
            let debited = s.debit_wallet(&customer, amount, &body.description, call.request.as_ref()).await?;
            let mut view = entry_view(&debited.entry);
            view["wallet"] = wallet_view(&debited.wallet);
            view["auto_refill_invoice_id"] = json!(debited.refill.as_ref().map(|i| &i.id));
            Ok(Reply::created(view))
        }
        Op::AutoRefill => {
            let body: AutoRefillBody = call.json()?;
            let customer = whose(&call, body.customer_id.as_deref())?;
            let currency = currency(&body.currency)?;
            let settings = AutoRefill {
                enabled: body.enabled,
                threshold: minor_units(&body.threshold, "threshold")?,
                amount: minor_units(&body.amount, "amount")?,
                disabled_at: None,
            };
            let wallet = s.configure_auto_refill(&customer, currency, settings, wallet_max_refill()).await?;
            Ok(Reply::ok(wallet_view(&wallet)))
        }
    }
}

/// A refill's state from its invoice: paid, failed (voided after a decline), or still
/// being collected.
pub fn refill_status(inv: &recoup_shared::domain::Invoice) -> &'static str {
    use recoup_shared::domain::InvoiceStatus;
    match inv.status() {
        InvoiceStatus::Paid => "succeeded",
        InvoiceStatus::Void | InvoiceStatus::Error => "failed",
        InvoiceStatus::Open | InvoiceStatus::Draft => "pending",
    }
}
