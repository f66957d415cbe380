//! The JSON the API returns. What a caller sees depends on who they are: customers see
//! `fraud` as a generic decline and no network details; team members see no card details
//! at all; only the merchant sees decline and network codes.

use recoup_shared::domain::invoice::Transaction;
use recoup_shared::domain::money::Money;
use recoup_shared::domain::{Customer, Invoice, Subscription};
use recoup_shared::services::charging::{ChargeOutcome, RecoveryAttempt};
use recoup_shared::services::payment_methods::SavedCard;
use recoup_shared::services::subscriptions::PaymentView;
use recoup_shared::store::Cursor;
use recoup_shared::time::Timestamp;
use serde_json::{Map, Value, json};

use crate::http::{Caller, error_body};

/// How much of a payment a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Merchant,
    Owner,
    Member,
}

impl From<&Caller> for Audience {
    fn from(c: &Caller) -> Self {
        match c {
            Caller::Merchant { .. } => Audience::Merchant,
            Caller::Owner(_) => Audience::Owner,
            Caller::Member(_) => Audience::Member,
        }
    }
}

pub fn time(t: Timestamp) -> Value {
    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn opt_time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, time)
}

fn money_fields(m: &mut Map<String, Value>, money: &Money) {
    m.insert("amount".into(), json!(money.amount()));
    m.insert("currency".into(), json!(money.currency().code()));
}

pub fn list(data: Vec<Value>, next: Option<Cursor>) -> Value {
    json!({"object": "list", "data": data, "next_cursor": next.map(|c| c.encode())})
}

pub fn customer(c: &Customer) -> Value {
    json!({
        "id": c.id,
        "object": "customer",
        "email": c.email,
        "name": c.name,
        "default_payment_method_id": c.default_payment_method_id(),
        "subscription_ids": c.subscription_ids,
        "collection_method": c.collection_method,
        "created_at": time(c.created_at),
    })
}

pub fn payment_method(card: &SavedCard) -> Value {
    let pm = &card.method;
    json!({
        "id": pm.id,
        "object": "payment_method",
        "customer_id": pm.customer_id,
        "type": "card",
        "brand": pm.brand,
        "last4": pm.last4,
        "exp_month": pm.expiry.month(),
        "exp_year": pm.expiry.year(),
        "funding": pm.funding,
        "country": pm.country,
        "status": card.status,
        "is_default": card.is_default,
        "created_at": time(pm.created_at),
    })
}

pub fn transaction(t: &Transaction, audience: Audience) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(t.id));
    m.insert("object".into(), json!("transaction"));
    m.insert("attempt".into(), json!(t.number));
    m.insert("status".into(), json!(t.status));
    m.insert("trigger".into(), json!(t.trigger));
    let error_type = t.error_type().map(|e| error_type_for(e, audience));
    m.insert("error_type".into(), json!(error_type));
    m.insert("created_at".into(), time(t.created_at));
    m.insert("settled_at".into(), opt_time(t.settled_at));
    match audience {
        Audience::Member => {}
        Audience::Owner | Audience::Merchant => {
            m.insert(
                "payment_method".into(),
                json!({"id": t.card.payment_method_id, "brand": t.card.brand, "last4": t.card.last4}),
            );
        }
    }
    if audience == Audience::Merchant {
        m.insert("reattempt".into(), json!(t.reattempt));
        m.insert("sent_to_psp".into(), json!(t.sent_to_psp));
        m.insert("psp_charge_id".into(), json!(t.psp_charge_id));
        if let Some(d) = &t.decline {
            m.insert(
                "decline".into(),
                json!({
                    "decline_code": d.decline_code,
                    "network_decline_code": d.network_decline_code,
                    "advice_code": d.advice_code,
                    "message": d.message,
                    "retry": t.retry_class,
                }),
            );
        }
    }
    Value::Object(m)
}

pub fn invoice(inv: &Invoice, audience: Audience) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(inv.id));
    m.insert("object".into(), json!("invoice"));
    m.insert("customer_id".into(), json!(inv.customer_id));
    m.insert("status".into(), json!(inv.status()));
    money_fields(&mut m, &inv.amount);
    m.insert("description".into(), json!(inv.description));
    m.insert("collection_method".into(), json!(inv.collection_method));
    m.insert("subscription_id".into(), json!(inv.subscription_id()));
    m.insert("payment_number".into(), json!(inv.subscription.as_ref().map(|l| l.payment_number)));
    m.insert("period_start".into(), opt_time(inv.subscription.as_ref().map(|l| l.period_start)));
    m.insert("period_end".into(), opt_time(inv.subscription.as_ref().map(|l| l.period_end)));
    m.insert("attempt_count".into(), json!(inv.attempt_count()));
    m.insert("next_attempt_at".into(), opt_time(inv.next_attempt_at().filter(|_| inv.pending_transaction().is_none())));
    m.insert("created_at".into(), time(inv.created_at));
    m.insert("paid_at".into(), opt_time(inv.paid_at()));
    m.insert("errored_at".into(), opt_time(inv.errored_at()));
    m.insert("voided_at".into(), opt_time(inv.voided_at()));
    if audience == Audience::Merchant {
        m.insert("out_of_band_reference".into(), json!(inv.out_of_band_reference()));
    }
    m.insert(
        "transactions".into(),
        Value::Array(inv.transactions().iter().map(|t| transaction(t, audience)).collect()),
    );
    Value::Object(m)
}

/// What the customer's page does to complete a payment the issuer wants authenticated:
/// hand `client_secret` to Stripe.js (`stripe.handleNextAction({clientSecret})`).
pub fn next_action(action: &recoup_shared::services::charging::NextAction) -> Value {
    json!({
        "type": "authenticate",
        "psp_charge_id": action.psp_charge_id,
        "client_secret": action.client_secret,
    })
}

pub fn charge_outcome(o: ChargeOutcome) -> &'static str {
    match o {
        ChargeOutcome::Paid => "paid",
        ChargeOutcome::Declined => "declined",
        ChargeOutcome::Pending => "pending",
    }
}

pub fn recovery(attempts: &[RecoveryAttempt]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| match &a.outcome {
                Ok(o) => json!({"invoice_id": a.invoice_id, "outcome": charge_outcome(*o)}),
                Err(e) => json!({"invoice_id": a.invoice_id, "outcome": "not_attempted", "error": error_body(e)}),
            })
            .collect(),
    )
}

fn error_type_for(
    t: recoup_shared::domain::decline::ErrorType,
    audience: Audience,
) -> recoup_shared::domain::decline::ErrorType {
    match audience {
        Audience::Merchant => t,
        Audience::Owner | Audience::Member => t.for_customer(),
    }
}

pub fn payment(p: &PaymentView, audience: Audience) -> Value {
    json!({
        "object": "subscription_payment",
        "payment_number": p.number,
        "status": p.status,
        "invoice_id": p.invoice_id,
        "amount": p.amount.amount(),
        "currency": p.amount.currency().code(),
        "due_at": time(p.due_at),
        "date_processed": opt_time(p.date_processed),
        "error_type": p.error_type.map(|t| error_type_for(t, audience)),
        "attempt_count": p.attempt_count,
    })
}

pub fn subscription(s: &Subscription, payments: Option<&[PaymentView]>, audience: Audience) -> Value {
    let (start, end) = s.current_period();
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("object".into(), json!("subscription"));
    m.insert("customer_id".into(), json!(s.customer_id));
    m.insert("status".into(), json!(s.status()));
    money_fields(&mut m, &s.plan.amount);
    m.insert("interval".into(), json!(s.plan.interval));
    m.insert("interval_count".into(), json!(s.plan.interval_count));
    m.insert("description".into(), json!(s.plan.description));
    m.insert("current_period_start".into(), time(start));
    m.insert("current_period_end".into(), time(end));
    m.insert("next_renewal_at".into(), opt_time(s.next_renewal_at()));
    m.insert("has_failed_payments".into(), json!(s.failed_payment_count()));
    m.insert("created_at".into(), time(s.created_at));
    m.insert("errored_at".into(), opt_time(s.errored_at()));
    m.insert("paused_at".into(), opt_time(s.paused_at()));
    m.insert("canceled_at".into(), opt_time(s.canceled_at()));
    if let Some(ps) = payments {
        m.insert("payments".into(), Value::Array(ps.iter().map(|p| payment(p, audience)).collect()));
    }
    Value::Object(m)
}
