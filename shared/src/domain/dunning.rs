//! What to do with an invoice that came due, or that someone asked to charge now.
//!
//! The rules, in order: an unanswered attempt is reconciled before anything else; a paused,
//! errored or canceled subscription is not collected; a card that hard-declined this
//! invoice (or needs its holder to authenticate) is not tried again automatically until it
//! is verified again; a card blocked by a never-retry decline (for any customer) is not
//! charged at all; an expired card is never sent to the PSP; the card networks' limits hold
//! across every charge on the card.
//!
//! A canceled subscription's invoices are no longer collected automatically: not by the
//! schedule, not when a card is registered. The merchant may still charge one by hand,
//! mark it paid or void it, and the customer may pay it on-session.

use super::DomainError;
use super::invoice::{AttemptTrigger, Invoice, InvoiceStatus};
use super::ledger::{CardLedger, NetworkBlock};
use super::payment_method::{PaymentMethod, PaymentMethodStatus};
use super::subscription::SubscriptionStatus;
use crate::domain::decline::{ErrorType, RetryClass};
use crate::domain::policy::DunningPolicy;
use crate::ids::TransactionId;
use crate::time::Timestamp;

/// Why an automatic attempt was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NoPaymentMethod,
    /// The card declined this invoice for a reason retrying cannot fix.
    CardBlocked(ErrorType),
    NetworkLimit(NetworkBlock),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueDecision {
    /// Not due (a duplicate or stale message): nothing to do.
    NotDue,
    /// An attempt never got its answer: ask the PSP by idempotency key.
    Reconcile(TransactionId),
    /// Its subscription is not being collected: take it off the schedule.
    Park,
    /// Charge the card now.
    Attempt,
    /// The card has expired: record the attempt as failed without calling the PSP.
    RecordExpired,
    /// Not this time. `next: None` ends automatic collection (the invoice errors).
    Skip { next: Option<Timestamp>, reason: SkipReason },
}

pub struct DueContext<'a> {
    pub invoice: &'a Invoice,
    /// The card automatic collection would use: the customer's default.
    pub card: Option<&'a PaymentMethod>,
    pub ledger: Option<&'a CardLedger>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub policy: &'a DunningPolicy,
    pub now: Timestamp,
}

pub fn decide_due(ctx: &DueContext<'_>) -> DueDecision {
    let inv = ctx.invoice;
    let now = ctx.now;
    match inv.next_attempt_at() {
        Some(at) if at <= now => {}
        Some(_) | None => return DueDecision::NotDue,
    }
    if let Some(pending) = inv.pending_transaction() {
        return DueDecision::Reconcile(pending.id.clone());
    }
    match inv.status() {
        InvoiceStatus::Open => {}
        InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Error | InvoiceStatus::Void => {
            return DueDecision::NotDue;
        }
    }
    match ctx.subscription_status {
        None | Some(SubscriptionStatus::Active) => {}
        Some(SubscriptionStatus::Paused | SubscriptionStatus::Errored | SubscriptionStatus::Canceled) => {
            return DueDecision::Park;
        }
    }
    // An invoice never attempted (no card yet) runs on the same clock from its issue.
    let first = inv.first_failed_at().unwrap_or(inv.created_at);
    let skip = |reason: SkipReason, not_before: Option<Timestamp>| DueDecision::Skip {
        next: ctx.policy.schedule.next_slot(first, now, not_before),
        reason,
    };
    let Some(card) = ctx.card else {
        return skip(SkipReason::NoPaymentMethod, None);
    };
    if let Some(blocking) = inv.blocking_decline(card) {
        return skip(SkipReason::CardBlocked(blocking.error_type().unwrap_or(ErrorType::Unknown)), None);
    }
    if let Some(block) = ctx.ledger.and_then(|l| l.block_for(card.expiry)) {
        return skip(SkipReason::CardBlocked(block.error_type), None);
    }
    match card.status(now) {
        PaymentMethodStatus::Expired => return DueDecision::RecordExpired,
        PaymentMethodStatus::Invalid => {
            let error_type = card.invalidation().map_or(ErrorType::PaymentMethodInvalid, |i| i.error_type);
            return skip(SkipReason::CardBlocked(error_type), None);
        }
        PaymentMethodStatus::Valid | PaymentMethodStatus::Expiring => {}
    }
    let reattempt = inv.is_reattempt_on(&card.snapshot());
    if let Some(ledger) = ctx.ledger
        && let Err(block) = ledger.check(now, reattempt)
    {
        return skip(SkipReason::NetworkLimit(block), Some(block.until));
    }
    DueDecision::Attempt
}

/// Why a charge asked for by a person was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeRefusal {
    Domain(DomainError),
    /// The card hard-declined this invoice: a new or re-registered card is needed.
    PaymentMethodUpdateRequired(ErrorType),
    /// The issuer wants the cardholder to authenticate: only the customer can pay now.
    CustomerAuthenticationRequired,
    NetworkLimit(NetworkBlock),
    /// The invoice's subscription was canceled: it is not collected automatically.
    SubscriptionCanceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargePlan {
    Attempt,
    RecordExpired,
}

/// Whether a charge with this trigger collects a canceled subscription's invoice: only a
/// person's deliberate act does (the merchant's manual charge, the customer paying).
fn collects_after_cancel(trigger: AttemptTrigger) -> bool {
    match trigger {
        AttemptTrigger::Manual | AttemptTrigger::Customer => true,
        AttemptTrigger::Initial | AttemptTrigger::Retry | AttemptTrigger::NewPaymentMethod => false,
    }
}

/// Checks a manual charge, a customer payment or a new-card recovery attempt.
pub fn plan_charge(
    invoice: &Invoice,
    card: &PaymentMethod,
    ledger: Option<&CardLedger>,
    subscription: Option<SubscriptionStatus>,
    trigger: AttemptTrigger,
    now: Timestamp,
) -> Result<ChargePlan, ChargeRefusal> {
    match invoice.status() {
        InvoiceStatus::Open | InvoiceStatus::Error => {}
        InvoiceStatus::Paid => return Err(ChargeRefusal::Domain(DomainError::InvoiceAlreadyPaid)),
        InvoiceStatus::Draft | InvoiceStatus::Void => {
            return Err(ChargeRefusal::Domain(DomainError::InvoiceNotChargeable(invoice.status().as_str())));
        }
    }
    if invoice.pending_transaction().is_some() {
        return Err(ChargeRefusal::Domain(DomainError::ChargeInProgress));
    }
    match subscription {
        Some(SubscriptionStatus::Canceled) if !collects_after_cancel(trigger) => {
            return Err(ChargeRefusal::SubscriptionCanceled);
        }
        Some(
            SubscriptionStatus::Canceled
            | SubscriptionStatus::Active
            | SubscriptionStatus::Errored
            | SubscriptionStatus::Paused,
        )
        | None => {}
    }
    if let Some(block) = ledger.and_then(|l| l.block_for(card.expiry)) {
        return Err(ChargeRefusal::PaymentMethodUpdateRequired(block.error_type));
    }
    if let Some(blocking) = invoice.blocking_decline(card) {
        match blocking.retry_class {
            Some(RetryClass::NeedsCustomer) if trigger.on_session() => {}
            Some(RetryClass::NeedsCustomer) => return Err(ChargeRefusal::CustomerAuthenticationRequired),
            Some(RetryClass::Hard { .. } | RetryClass::Soft) | None => {
                return Err(ChargeRefusal::PaymentMethodUpdateRequired(
                    blocking.error_type().unwrap_or(ErrorType::Unknown),
                ));
            }
        }
    }
    match card.status(now) {
        PaymentMethodStatus::Expired => return Ok(ChargePlan::RecordExpired),
        PaymentMethodStatus::Invalid => {
            let error_type = card.invalidation().map_or(ErrorType::PaymentMethodInvalid, |i| i.error_type);
            return Err(ChargeRefusal::PaymentMethodUpdateRequired(error_type));
        }
        PaymentMethodStatus::Valid | PaymentMethodStatus::Expiring => {}
    }
    let reattempt = invoice.is_reattempt_on(&card.snapshot());
    if let Some(ledger) = ledger {
        ledger.check(now, reattempt).map_err(ChargeRefusal::NetworkLimit)?;
    }
    Ok(ChargePlan::Attempt)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::card::{CardBrand, CardExpiry, Fingerprint, Network};
    use crate::domain::decline::Decline;
    use crate::domain::invoice::{AttemptOutcome, CollectionMethod, NewInvoice};
    use crate::domain::ledger::{LedgerEntry, LedgerOutcome};
    use crate::domain::money::{Currency, Money};
    use crate::domain::payment_method::VerifiedCard;
    use crate::domain::policy::NetworkRule;
    use crate::ids::CustomerId;
    use crate::time::parse;

    fn t0() -> Timestamp {
        parse("2030-01-01T00:00:00Z")
    }

    fn pm(brand: CardBrand, exp: CardExpiry) -> PaymentMethod {
        PaymentMethod::new(
            CustomerId::generate(),
            VerifiedCard {
                psp_token: "pm_x".into(),
                brand,
                last4: "0000".into(),
                expiry: exp,
                fingerprint: Fingerprint::new("fp"),
                funding: None,
                country: None,
            },
            t0() - TimeDelta::days(100),
        )
    }

    /// An open 10.00 USD invoice of the card's customer, issued at `t0`.
    fn open_invoice(card: &PaymentMethod) -> Invoice {
        Invoice::issue(
            NewInvoice {
                customer_id: card.customer_id.clone(),
                amount: Money::new(1000, Currency::parse("USD").unwrap()).unwrap(),
                description: String::new(),
                collection_method: CollectionMethod::ChargeAutomatically,
                subscription: None,
            },
            t0(),
        )
        .unwrap()
        .0
    }

    fn failed_invoice(card: &PaymentMethod, decline: Decline) -> Invoice {
        let mut inv = open_invoice(card);
        let policy = DunningPolicy::default();
        let txn = inv.begin_attempt(&card.snapshot(), AttemptTrigger::Initial, t0(), t0()).unwrap();
        inv.settle(&txn.id, AttemptOutcome::Declined(decline), &policy, None, t0()).unwrap();
        inv
    }

    fn ctx<'a>(
        inv: &'a Invoice,
        card: Option<&'a PaymentMethod>,
        ledger: Option<&'a CardLedger>,
        policy: &'a DunningPolicy,
        now: Timestamp,
    ) -> DueContext<'a> {
        DueContext { invoice: inv, card, ledger, subscription_status: None, policy, now }
    }

    fn nsf() -> Decline {
        Decline::new(ErrorType::PaymentMethodDeclined, "nsf").with_decline_code("insufficient_funds")
    }

    #[test]
    fn a_soft_declined_invoice_is_attempted_when_its_slot_comes() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, nsf());
        let policy = DunningPolicy::default();
        assert_eq!(decide_due(&ctx(&inv, Some(&card), None, &policy, t0())), DueDecision::NotDue);
        let slot = inv.next_attempt_at().unwrap();
        assert_eq!(decide_due(&ctx(&inv, Some(&card), None, &policy, slot)), DueDecision::Attempt);
    }

    #[test]
    fn a_hard_declined_card_is_skipped_but_a_new_default_card_is_tried() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, Decline::new(ErrorType::PaymentMethodInvalid, "cvc"));
        let policy = DunningPolicy::default();
        let slot = inv.next_attempt_at().unwrap();
        match decide_due(&ctx(&inv, Some(&card), None, &policy, slot)) {
            DueDecision::Skip {
                next: Some(next),
                reason: SkipReason::CardBlocked(ErrorType::PaymentMethodInvalid),
            } => {
                assert!(next > slot)
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut other = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        other.fingerprint = Fingerprint::new("another card");
        assert_eq!(decide_due(&ctx(&inv, Some(&other), None, &policy, slot)), DueDecision::Attempt);
    }

    #[test]
    fn an_expired_default_card_is_recorded_not_sent() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2029).unwrap());
        let inv = failed_invoice(&card, nsf());
        let policy = DunningPolicy::default();
        let slot = inv.next_attempt_at().unwrap();
        assert_eq!(decide_due(&ctx(&inv, Some(&card), None, &policy, slot)), DueDecision::RecordExpired);
    }

    #[test]
    fn the_network_limit_moves_the_attempt_to_the_first_slot_it_allows() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, nsf());
        let policy = DunningPolicy::default();
        let slot = inv.next_attempt_at().unwrap();
        let mut ledger = CardLedger::new(card.fingerprint.clone(), Network::Visa);
        for i in 0..15 {
            ledger.record(LedgerEntry {
                at: slot - TimeDelta::hours(20) + TimeDelta::minutes(i),
                transaction_id: crate::ids::TransactionId::generate(),
                payment: "in_other".into(),
                payment_method_id: card.id.clone(),
                reattempt: true,
                outcome: LedgerOutcome::Declined,
            });
        }
        match decide_due(&ctx(&inv, Some(&card), Some(&ledger), &policy, slot)) {
            DueDecision::Skip { next, reason: SkipReason::NetworkLimit(block) } => {
                assert_eq!(block.rule, NetworkRule::VisaReattempts30Days);
                // Every remaining slot is inside the window: automatic collection ends.
                assert_eq!(next, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_pending_attempt_is_reconciled_before_anything_else() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let mut inv = open_invoice(&card);
        let txn =
            inv.begin_attempt(&card.snapshot(), AttemptTrigger::Initial, t0(), t0() + TimeDelta::minutes(10)).unwrap();
        let policy = DunningPolicy::default();
        let later = t0() + TimeDelta::minutes(11);
        assert_eq!(decide_due(&ctx(&inv, Some(&card), None, &policy, later)), DueDecision::Reconcile(txn.id));
    }

    #[test]
    fn invoices_of_paused_or_errored_subscriptions_are_parked() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, nsf());
        let policy = DunningPolicy::default();
        let slot = inv.next_attempt_at().unwrap();
        for status in [SubscriptionStatus::Paused, SubscriptionStatus::Errored, SubscriptionStatus::Canceled] {
            let mut c = ctx(&inv, Some(&card), None, &policy, slot);
            c.subscription_status = Some(status);
            assert_eq!(decide_due(&c), DueDecision::Park);
        }
    }

    #[test]
    fn manual_charges_respect_hard_declines_and_authentication() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, Decline::new(ErrorType::PaymentMethodExpired, "expired"));
        assert_eq!(
            plan_charge(&inv, &card, None, None, AttemptTrigger::Manual, t0()),
            Err(ChargeRefusal::PaymentMethodUpdateRequired(ErrorType::PaymentMethodExpired))
        );
        let inv = failed_invoice(&card, Decline::new(ErrorType::AuthenticationRequired, "3ds"));
        assert_eq!(
            plan_charge(&inv, &card, None, None, AttemptTrigger::Manual, t0()),
            Err(ChargeRefusal::CustomerAuthenticationRequired)
        );
        assert_eq!(plan_charge(&inv, &card, None, None, AttemptTrigger::Customer, t0()), Ok(ChargePlan::Attempt));
    }

    #[test]
    fn a_blocked_card_is_not_charged_even_for_a_first_attempt_until_its_expiry_changes() {
        use crate::domain::decline::HardReason;
        use crate::domain::ledger::CardBlock;
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let mut inv = open_invoice(&card);
        inv.schedule_first_attempt(t0());
        let mut ledger = CardLedger::new(card.fingerprint.clone(), Network::Visa);
        ledger.block(CardBlock {
            at: t0(),
            error_type: ErrorType::PaymentMethodDeclined,
            reason: HardReason::VisaCategory1,
            expiry: Some(card.expiry),
        });
        let policy = DunningPolicy::default();
        assert!(matches!(
            decide_due(&ctx(&inv, Some(&card), Some(&ledger), &policy, t0())),
            DueDecision::Skip { reason: SkipReason::CardBlocked(ErrorType::PaymentMethodDeclined), .. }
        ));
        for trigger in [AttemptTrigger::Initial, AttemptTrigger::Manual, AttemptTrigger::Customer] {
            assert_eq!(
                plan_charge(&inv, &card, Some(&ledger), None, trigger, t0()),
                Err(ChargeRefusal::PaymentMethodUpdateRequired(ErrorType::PaymentMethodDeclined))
            );
        }
        let mut renewed = card.clone();
        renewed.expiry = CardExpiry::new(12, 2038).unwrap();
        assert_eq!(decide_due(&ctx(&inv, Some(&renewed), Some(&ledger), &policy, t0())), DueDecision::Attempt);
    }

    #[test]
    fn a_canceled_subscriptions_invoice_is_collected_only_by_a_persons_act() {
        let card = pm(CardBrand::Visa, CardExpiry::new(12, 2035).unwrap());
        let inv = failed_invoice(&card, nsf());
        let canceled = Some(SubscriptionStatus::Canceled);
        for trigger in [AttemptTrigger::Initial, AttemptTrigger::Retry, AttemptTrigger::NewPaymentMethod] {
            assert_eq!(
                plan_charge(&inv, &card, None, canceled, trigger, t0()),
                Err(ChargeRefusal::SubscriptionCanceled),
                "{trigger:?}"
            );
        }
        for trigger in [AttemptTrigger::Manual, AttemptTrigger::Customer] {
            assert_eq!(plan_charge(&inv, &card, None, canceled, trigger, t0()), Ok(ChargePlan::Attempt), "{trigger:?}");
        }
    }
}
