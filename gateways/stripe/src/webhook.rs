//! Stripe's webhook events, read into Recoup's [`PspNotice`]. Only the body is read here;
//! the signature is checked first, by [`crate::signature::verify`].

use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{Dispute, PspEvent, PspNotice};
use serde::Deserialize;

use crate::api::{self, PaymentIntent, PaymentMethod, SetupIntent};
use crate::gateway::{METADATA_KEY, outcome_of, verified_card};

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// Why a body is not a Stripe event.
#[derive(Debug, thiserror::Error)]
#[error("not a Stripe event: {0}")]
pub struct NotAnEvent(String);

/// Reads a (verified) webhook body. Types Recoup does not act on, and PaymentIntents it
/// did not create, come back with no event.
pub fn parse_notice(body: &[u8]) -> Result<PspNotice, NotAnEvent> {
    let event: Event = serde_json::from_slice(body).map_err(|e| NotAnEvent(e.to_string()))?;
    let payment = match event.kind.as_str() {
        "payment_intent.succeeded" | "payment_intent.payment_failed" | "payment_intent.requires_action" => {
            let pi: PaymentIntent =
                serde_json::from_value(event.data.object).map_err(|e| NotAnEvent(format!("data.object: {e}")))?;
            pi.metadata.get(METADATA_KEY).cloned().map(|key| PspEvent::Payment {
                idempotency_key: key,
                invoice_id: pi.metadata.get("recoup_invoice_id").and_then(|i| InvoiceId::parse(i)),
                // The service keeps an on-session attempt pending while the cardholder
                // authenticates (`needs_cardholder`).
                outcome: outcome_of(&pi, false),
                needs_cardholder: pi.status == "requires_action",
            })
        }
        "payment_method.automatically_updated" | "payment_method.updated" | "payment_method.detached" => {
            let pm: PaymentMethod =
                serde_json::from_value(event.data.object).map_err(|e| NotAnEvent(format!("data.object: {e}")))?;
            let customer = pm.metadata.get("recoup_customer_id").and_then(|c| CustomerId::parse(c));
            match (customer, event.kind.as_str()) {
                (Some(customer_id), "payment_method.detached") => {
                    Some(PspEvent::CardDetached { customer_id, psp_token: pm.id })
                }
                (Some(customer_id), _) => verified_card(&pm).map(|card| PspEvent::CardUpdated { customer_id, card }),
                (None, _) => None,
            }
        }
        "setup_intent.succeeded" | "setup_intent.setup_failed" => {
            let si: SetupIntent =
                serde_json::from_value(event.data.object).map_err(|e| NotAnEvent(format!("data.object: {e}")))?;
            let customer = si.metadata.get("recoup_customer_id").and_then(|c| CustomerId::parse(c));
            let from_form = si.metadata.get("recoup_card_form").is_some_and(|v| v == "true");
            match (event.kind.as_str(), customer, si.payment_method) {
                // Only setups begun by the card form: the others were registered (or
                // refused) in the request that made them.
                ("setup_intent.succeeded", Some(customer_id), Some(pm)) if from_form => {
                    Some(PspEvent::CardSetUp { customer_id, setup_id: si.id, psp_token: pm.id().to_owned() })
                }
                // A failed setup saved nothing; the card form showed the cardholder why.
                _ => None,
            }
        }
        "charge.dispute.created" => {
            let dispute: api::Dispute =
                serde_json::from_value(event.data.object).map_err(|e| NotAnEvent(format!("data.object: {e}")))?;
            let amount = Currency::parse(&dispute.currency).ok().and_then(|c| Money::new(dispute.amount, c).ok());
            match (dispute.payment_intent, amount) {
                (Some(payment_id), Some(amount)) => Some(PspEvent::Dispute(Dispute {
                    id: dispute.id,
                    payment_id,
                    amount,
                    reason: dispute.reason,
                    status: dispute.status,
                })),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(PspNotice { id: event.id, kind: event.kind, event: payment })
}

#[cfg(test)]
mod tests {
    use recoup_shared::domain::decline::ErrorType;
    use recoup_shared::domain::invoice::AttemptOutcome;
    use serde_json::json;

    use super::*;

    fn event(kind: &str, object: serde_json::Value) -> Vec<u8> {
        json!({"id": "evt_1", "object": "event", "type": kind, "created": 1_700_000_000, "data": {"object": object}})
            .to_string()
            .into_bytes()
    }

    fn pi(status: &str, extra: serde_json::Value) -> serde_json::Value {
        let invoice = InvoiceId::generate();
        let mut pi = json!({
            "id": "pi_1", "object": "payment_intent", "status": status, "amount": 1900, "currency": "usd",
            "metadata": {"recoup_idempotency_key": "key-1", "recoup_invoice_id": invoice.as_str()},
        });
        pi.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        pi
    }

    #[test]
    fn payment_intent_events_become_payment_outcomes() {
        let n = parse_notice(&event("payment_intent.succeeded", pi("succeeded", json!({})))).unwrap();
        let Some(PspEvent::Payment { idempotency_key, invoice_id, outcome, needs_cardholder }) = n.event else {
            panic!("{n:?}")
        };
        assert_eq!((idempotency_key.as_str(), needs_cardholder), ("key-1", false));
        assert!(invoice_id.is_some());
        assert_eq!(outcome, AttemptOutcome::Succeeded { charge_id: "pi_1".into() });

        let failed = pi(
            "requires_payment_method",
            json!({"last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}}),
        );
        let n = parse_notice(&event("payment_intent.payment_failed", failed)).unwrap();
        let Some(PspEvent::Payment { outcome: AttemptOutcome::Declined(d), .. }) = n.event else { panic!("{n:?}") };
        assert_eq!(d.error_type, ErrorType::PaymentMethodDeclined);

        let n = parse_notice(&event("payment_intent.requires_action", pi("requires_action", json!({})))).unwrap();
        assert!(matches!(n.event, Some(PspEvent::Payment { needs_cardholder: true, .. })));
    }

    #[test]
    fn card_updates_and_detachments_name_the_customer_from_the_cards_metadata() {
        let customer = CustomerId::generate();
        let pm = json!({"id": "pm_1", "object": "payment_method", "type": "card",
            "card": {"brand": "visa", "last4": "1111", "exp_month": 3, "exp_year": 2034, "fingerprint": "fpNEW"},
            "metadata": {"recoup_customer_id": customer.as_str()}});
        let n = parse_notice(&event("payment_method.automatically_updated", pm.clone())).unwrap();
        let Some(PspEvent::CardUpdated { customer_id, card }) = n.event else { panic!("{n:?}") };
        assert_eq!(customer_id, customer);
        assert_eq!((card.psp_token.as_str(), card.last4.as_str()), ("pm_1", "1111"));
        assert_eq!((card.expiry.month(), card.expiry.year()), (3, 2034));
        assert_eq!(card.fingerprint.as_str(), "stripe:fpNEW");
        assert!(matches!(
            parse_notice(&event("payment_method.detached", pm.clone())).unwrap().event,
            Some(PspEvent::CardDetached { psp_token, .. }) if psp_token == "pm_1"
        ));
        // A card Recoup never labelled is not Recoup's.
        let mut foreign = pm;
        foreign["metadata"] = json!({});
        assert_eq!(parse_notice(&event("payment_method.updated", foreign)).unwrap().event, None);
    }

    #[test]
    fn card_form_setups_and_disputes_are_read() {
        let customer = CustomerId::generate();
        let si = |meta: serde_json::Value| {
            json!({"id": "seti_1", "object": "setup_intent", "status": "succeeded", "customer": "cus_1",
                "payment_method": "pm_1", "metadata": meta})
        };
        let n = parse_notice(&event(
            "setup_intent.succeeded",
            si(json!({"recoup_customer_id": customer.as_str(), "recoup_card_form": "true"})),
        ))
        .unwrap();
        assert_eq!(
            n.event,
            Some(PspEvent::CardSetUp {
                customer_id: customer.clone(),
                setup_id: "seti_1".into(),
                psp_token: "pm_1".into()
            })
        );
        // A setup Recoup confirmed itself at registration is settled already.
        let own = si(json!({"recoup_customer_id": customer.as_str()}));
        assert_eq!(parse_notice(&event("setup_intent.succeeded", own)).unwrap().event, None);
        let failed = si(json!({"recoup_customer_id": customer.as_str(), "recoup_card_form": "true"}));
        assert_eq!(parse_notice(&event("setup_intent.setup_failed", failed)).unwrap().event, None);

        // Stripe's Dispute object, as its API reference shows it.
        let dispute = json!({"id": "dp_1", "object": "dispute", "amount": 1000, "currency": "usd",
            "charge": "ch_1", "payment_intent": "pi_1", "reason": "fraudulent", "status": "needs_response",
            "is_charge_refundable": false, "livemode": false, "metadata": {}});
        let n = parse_notice(&event("charge.dispute.created", dispute)).unwrap();
        let Some(PspEvent::Dispute(d)) = n.event else { panic!("{n:?}") };
        assert_eq!((d.id.as_str(), d.payment_id.as_str(), d.reason.as_str()), ("dp_1", "pi_1", "fraudulent"));
        assert_eq!(d.amount, Money::new(1000, Currency::parse("USD").unwrap()).unwrap());
    }

    #[test]
    fn other_types_and_foreign_payment_intents_are_not_recoups() {
        let n = parse_notice(&event("customer.created", json!({"id": "cus_1"}))).unwrap();
        assert_eq!((n.id.as_str(), n.kind.as_str(), n.event), ("evt_1", "customer.created", None));
        let foreign = json!({"id": "pi_2", "status": "succeeded", "metadata": {}});
        assert_eq!(parse_notice(&event("payment_intent.succeeded", foreign)).unwrap().event, None);
        assert!(parse_notice(b"{not json").is_err());
        assert!(parse_notice(br#"{"id": "evt_1"}"#).is_err());
    }
}
