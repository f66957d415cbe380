//! A subscription: `active → errored → active | canceled`, and `paused`.
//!
//! Errored means inactive: not renewed, not collected. The subscription learns about its
//! invoices by re-reading them (`observe_invoice`), so events arriving twice or out of
//! order cannot roll its state back.

use std::collections::BTreeSet;

use chrono::{Months, TimeDelta};
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::invoice::{Invoice, InvoiceStatus, SubscriptionLink, TransactionStatus};
use crate::domain::decline::RetryClass;
use crate::domain::events::{ActivationReason, EventPayload};
use crate::domain::money::Money;
use crate::ids::{CustomerId, InvoiceId, SubscriptionId};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    /// A payment ended in error: not invoiced, not collected, until paid or re-activated.
    Errored,
    Paused,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Errored => "errored",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Canceled => "canceled",
        }
    }

    /// Whether it will bill again without the merchant acting: a card is still needed.
    pub fn bills_again(self) -> bool {
        match self {
            SubscriptionStatus::Active | SubscriptionStatus::Paused => true,
            SubscriptionStatus::Errored | SubscriptionStatus::Canceled => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub amount: Money,
    pub interval: Interval,
    pub interval_count: u32,
    pub description: String,
}

impl Plan {
    pub fn new(
        amount: Money,
        interval: Interval,
        interval_count: u32,
        description: String,
    ) -> Result<Self, DomainError> {
        let max = match interval {
            Interval::Day => 365,
            Interval::Week => 52,
            Interval::Month => 12,
            Interval::Year => 1,
        };
        if !(1..=max).contains(&interval_count) {
            return Err(DomainError::invalid(
                "interval_count",
                format!("must be between 1 and {max} for this interval (at most a year)"),
            ));
        }
        Ok(Plan { amount, interval, interval_count, description })
    }

    /// `start` plus `n` billing intervals.
    fn advance(&self, start: Timestamp, n: u32) -> Timestamp {
        let steps = self.interval_count * n;
        match self.interval {
            Interval::Day => start + TimeDelta::days(i64::from(steps)),
            Interval::Week => start + TimeDelta::weeks(i64::from(steps)),
            Interval::Month => start.checked_add_months(Months::new(steps)).unwrap_or(start),
            Interval::Year => start.checked_add_months(Months::new(steps * 12)).unwrap_or(start),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    pub number: u32,
    pub invoice_id: InvoiceId,
}

/// The Recurring-API view of one payment of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Approved,
    /// Attempted and failed for a soft reason; may be processed again.
    Declined,
    /// Attempted and failed for a hard reason; the card must be updated first.
    Failed,
    /// Queued for a future date (or not attempted yet).
    Waiting,
}

/// The payment status an invoice of a subscription stands for.
pub fn payment_status(invoice: &Invoice) -> PaymentStatus {
    match invoice.status() {
        InvoiceStatus::Paid => PaymentStatus::Approved,
        InvoiceStatus::Draft => PaymentStatus::Waiting,
        // Voiding a subscription's invoice is refused; shown as failed should one exist.
        InvoiceStatus::Void => PaymentStatus::Failed,
        InvoiceStatus::Open | InvoiceStatus::Error => match invoice.last_transaction() {
            None => PaymentStatus::Waiting,
            Some(t) => match t.status {
                TransactionStatus::Pending => PaymentStatus::Waiting,
                TransactionStatus::Succeeded => PaymentStatus::Approved,
                TransactionStatus::Failed => match t.retry_class {
                    Some(RetryClass::Hard { .. }) => PaymentStatus::Failed,
                    Some(RetryClass::Soft | RetryClass::NeedsCustomer) | None => PaymentStatus::Declined,
                },
            },
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub customer_id: CustomerId,
    pub plan: Plan,
    status: SubscriptionStatus,
    pub created_at: Timestamp,
    /// Periods are counted from this anchor so monthly billing does not drift
    /// (Jan 31 → Feb 28 → Mar 31, not Mar 28).
    anchor: Timestamp,
    /// The payment number whose period starts at `anchor`.
    anchor_payment: u32,
    current_period_start: Timestamp,
    current_period_end: Timestamp,
    payments: Vec<PaymentRef>,
    /// Invoices whose last attempt failed and that are still owed.
    #[serde(default)]
    failing_invoices: BTreeSet<InvoiceId>,
    /// Errored invoices that keep the subscription errored.
    #[serde(default)]
    errored_invoices: BTreeSet<InvoiceId>,
    /// Errored invoices the merchant chose to live with by re-activating by hand.
    #[serde(default)]
    forgiven_invoices: BTreeSet<InvoiceId>,
    #[serde(default)]
    errored_at: Option<Timestamp>,
    #[serde(default)]
    paused_at: Option<Timestamp>,
    #[serde(default)]
    canceled_at: Option<Timestamp>,
}

impl Subscription {
    /// Starts a subscription now, with payment 1 due at once.
    pub fn start(customer_id: CustomerId, plan: Plan, now: Timestamp) -> (Subscription, SubscriptionLink) {
        let end = plan.advance(now, 1);
        let sub = Subscription {
            id: SubscriptionId::generate(),
            customer_id,
            plan,
            status: SubscriptionStatus::Active,
            created_at: now,
            anchor: now,
            anchor_payment: 1,
            current_period_start: now,
            current_period_end: end,
            payments: Vec::new(),
            failing_invoices: BTreeSet::new(),
            errored_invoices: BTreeSet::new(),
            forgiven_invoices: BTreeSet::new(),
            errored_at: None,
            paused_at: None,
            canceled_at: None,
        };
        let link =
            SubscriptionLink { subscription_id: sub.id.clone(), payment_number: 1, period_start: now, period_end: end };
        (sub, link)
    }

    pub fn status(&self) -> SubscriptionStatus {
        self.status
    }

    pub fn current_period(&self) -> (Timestamp, Timestamp) {
        (self.current_period_start, self.current_period_end)
    }

    pub fn payments(&self) -> &[PaymentRef] {
        &self.payments
    }

    pub fn payment(&self, number: u32) -> Option<&PaymentRef> {
        self.payments.iter().find(|p| p.number == number)
    }

    pub fn failed_payment_count(&self) -> usize {
        self.failing_invoices.len()
    }

    pub fn errored_at(&self) -> Option<Timestamp> {
        self.errored_at
    }

    /// Errored invoices that keep it errored (not those the merchant re-activated past).
    pub fn errored_invoices(&self) -> impl Iterator<Item = &InvoiceId> {
        self.errored_invoices.iter()
    }

    /// Whether the merchant re-activated past this errored invoice.
    pub fn is_forgiven(&self, invoice: &InvoiceId) -> bool {
        self.forgiven_invoices.contains(invoice)
    }

    pub fn canceled_at(&self) -> Option<Timestamp> {
        self.canceled_at
    }

    pub fn paused_at(&self) -> Option<Timestamp> {
        self.paused_at
    }

    /// Records the invoice created for payment `number`.
    pub fn attach_invoice(&mut self, number: u32, invoice_id: InvoiceId) {
        if self.payment(number).is_none() {
            self.payments.push(PaymentRef { number, invoice_id });
        }
    }

    fn last_payment_number(&self) -> u32 {
        self.payments.iter().map(|p| p.number).max().unwrap_or(0)
    }

    /// When the next renewal is due; only active subscriptions renew.
    pub fn next_renewal_at(&self) -> Option<Timestamp> {
        match self.status {
            SubscriptionStatus::Active => Some(self.current_period_end),
            SubscriptionStatus::Errored | SubscriptionStatus::Paused | SubscriptionStatus::Canceled => None,
        }
    }

    /// Starts the next period if it is due, returning the link for its invoice.
    pub fn renew(&mut self, now: Timestamp) -> Option<SubscriptionLink> {
        let due = self.next_renewal_at().is_some_and(|at| at <= now);
        if !due {
            return None;
        }
        let number = self.last_payment_number() + 1;
        let start = self.plan.advance(self.anchor, number - self.anchor_payment);
        let end = self.plan.advance(self.anchor, number + 1 - self.anchor_payment);
        self.current_period_start = start;
        self.current_period_end = end;
        let link = SubscriptionLink {
            subscription_id: self.id.clone(),
            payment_number: number,
            period_start: start,
            period_end: end,
        };
        Some(link)
    }

    /// The event for a renewal whose invoice has been issued.
    pub fn renewed_event(&self, link: &SubscriptionLink, invoice_id: &InvoiceId) -> EventPayload {
        EventPayload::SubscriptionRenewed {
            subscription_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            invoice_id: invoice_id.clone(),
            payment_number: link.payment_number,
        }
    }

    /// Learns the current state of one of its invoices. Idempotent and order-free: the
    /// decision rests on the invoice as it is now, not on the event that prompted it.
    pub fn observe_invoice(&mut self, invoice: &Invoice, now: Timestamp) -> Vec<EventPayload> {
        if !self.payments.iter().any(|p| p.invoice_id == invoice.id) {
            return Vec::new();
        }
        let failing = invoice.status().is_outstanding()
            && invoice.last_transaction().is_some_and(|t| t.status == TransactionStatus::Failed);
        if failing {
            self.failing_invoices.insert(invoice.id.clone());
        } else {
            self.failing_invoices.remove(&invoice.id);
        }
        let mut events = Vec::new();
        match invoice.status() {
            InvoiceStatus::Error => {
                if self.forgiven_invoices.contains(&invoice.id) {
                    return events;
                }
                self.errored_invoices.insert(invoice.id.clone());
                match self.status {
                    SubscriptionStatus::Active => {
                        self.status = SubscriptionStatus::Errored;
                        self.errored_at = Some(now);
                        events.push(EventPayload::SubscriptionErrored {
                            subscription_id: self.id.clone(),
                            customer_id: self.customer_id.clone(),
                            invoice_id: invoice.id.clone(),
                        });
                    }
                    SubscriptionStatus::Errored | SubscriptionStatus::Paused | SubscriptionStatus::Canceled => {}
                }
            }
            InvoiceStatus::Paid => {
                self.errored_invoices.remove(&invoice.id);
                self.forgiven_invoices.remove(&invoice.id);
                let paid_in_period = invoice.paid_at().is_some_and(|at| at < self.current_period_end);
                match self.status {
                    SubscriptionStatus::Errored if self.errored_invoices.is_empty() && paid_in_period => {
                        self.status = SubscriptionStatus::Active;
                        self.errored_at = None;
                        events.push(EventPayload::SubscriptionActivated {
                            subscription_id: self.id.clone(),
                            customer_id: self.customer_id.clone(),
                            reason: ActivationReason::Payment,
                        });
                    }
                    SubscriptionStatus::Active
                    | SubscriptionStatus::Errored
                    | SubscriptionStatus::Paused
                    | SubscriptionStatus::Canceled => {}
                }
            }
            InvoiceStatus::Void => {
                self.errored_invoices.remove(&invoice.id);
            }
            InvoiceStatus::Draft | InvoiceStatus::Open => {}
        }
        events
    }

    fn refuse(&self, action: &'static str) -> DomainError {
        DomainError::InvalidTransition { entity: "subscription", state: self.status.as_str(), action }
    }

    /// Starts billing again from now when the period ran out while it was stopped.
    fn reanchor_if_lapsed(&mut self, now: Timestamp) {
        if self.current_period_end <= now {
            self.anchor = now;
            self.anchor_payment = self.last_payment_number() + 1;
            self.current_period_end = now;
        }
    }

    /// The merchant re-activates an errored subscription; its errored invoices stay unpaid.
    pub fn reactivate(&mut self, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match self.status {
            SubscriptionStatus::Errored => {}
            SubscriptionStatus::Active | SubscriptionStatus::Paused | SubscriptionStatus::Canceled => {
                return Err(self.refuse("reactivate"));
            }
        }
        self.forgiven_invoices.extend(std::mem::take(&mut self.errored_invoices));
        self.status = SubscriptionStatus::Active;
        self.errored_at = None;
        self.reanchor_if_lapsed(now);
        Ok(vec![EventPayload::SubscriptionActivated {
            subscription_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            reason: ActivationReason::Manual,
        }])
    }

    pub fn cancel(&mut self, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match self.status {
            SubscriptionStatus::Active | SubscriptionStatus::Errored | SubscriptionStatus::Paused => {}
            SubscriptionStatus::Canceled => return Err(self.refuse("cancel")),
        }
        self.status = SubscriptionStatus::Canceled;
        self.canceled_at = Some(now);
        Ok(vec![EventPayload::SubscriptionCanceled {
            subscription_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
        }])
    }

    pub fn pause(&mut self, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match self.status {
            SubscriptionStatus::Active => {}
            SubscriptionStatus::Errored | SubscriptionStatus::Paused | SubscriptionStatus::Canceled => {
                return Err(self.refuse("pause"));
            }
        }
        self.status = SubscriptionStatus::Paused;
        self.paused_at = Some(now);
        Ok(vec![EventPayload::SubscriptionPaused {
            subscription_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
        }])
    }

    pub fn resume(&mut self, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match self.status {
            SubscriptionStatus::Paused => {}
            SubscriptionStatus::Active | SubscriptionStatus::Errored | SubscriptionStatus::Canceled => {
                return Err(self.refuse("resume"));
            }
        }
        self.paused_at = None;
        // A payment that errored while it was paused still stands: it resumes errored, as it
        // would have become had it not been paused.
        if let Some(errored) = self.errored_invoices.iter().next().cloned() {
            self.status = SubscriptionStatus::Errored;
            self.errored_at = Some(now);
            return Ok(vec![EventPayload::SubscriptionErrored {
                subscription_id: self.id.clone(),
                customer_id: self.customer_id.clone(),
                invoice_id: errored,
            }]);
        }
        self.status = SubscriptionStatus::Active;
        self.reanchor_if_lapsed(now);
        Ok(vec![EventPayload::SubscriptionActivated {
            subscription_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            reason: ActivationReason::Resumed,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::card::{CardBrand, Fingerprint};
    use crate::domain::decline::{Decline, ErrorType};
    use crate::domain::invoice::{AttemptOutcome, AttemptTrigger, CollectionMethod, NewInvoice};
    use crate::domain::money::Currency;
    use crate::domain::payment_method::CardSnapshot;
    use crate::domain::policy::DunningPolicy;
    use crate::ids::PaymentMethodId;
    use crate::time::parse;

    fn plan(interval: Interval) -> Plan {
        Plan::new(Money::new(1900, Currency::parse("USD").unwrap()).unwrap(), interval, 1, "Pro".into()).unwrap()
    }

    fn invoice_for(sub: &mut Subscription, link: SubscriptionLink, now: Timestamp) -> Invoice {
        let (inv, _) = Invoice::issue(
            NewInvoice {
                customer_id: sub.customer_id.clone(),
                amount: sub.plan.amount,
                description: "Pro".into(),
                collection_method: CollectionMethod::ChargeAutomatically,
                subscription: Some(link.clone()),
            },
            now,
        )
        .unwrap();
        sub.attach_invoice(link.payment_number, inv.id.clone());
        inv
    }

    fn card() -> CardSnapshot {
        CardSnapshot {
            payment_method_id: PaymentMethodId::generate(),
            psp_token: "pm_card_visa".into(),
            brand: CardBrand::Visa,
            last4: "4242".into(),
            fingerprint: Fingerprint::new("fp"),
            expiry: None,
        }
    }

    fn fail_until_error(inv: &mut Invoice, mut now: Timestamp) -> Timestamp {
        let policy = DunningPolicy::default();
        loop {
            let txn = inv.begin_attempt(&card(), AttemptTrigger::Retry, now, now).unwrap();
            let d = Decline::new(ErrorType::PaymentMethodDeclined, "nsf");
            inv.settle(&txn.id, AttemptOutcome::Declined(d), &policy, None, now).unwrap();
            match inv.next_attempt_at() {
                Some(at) => now = at,
                None => return now,
            }
        }
    }

    #[test]
    fn monthly_periods_are_anchored_and_do_not_drift() {
        let t0 = parse("2030-01-31T10:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        assert_eq!(link.period_end, parse("2030-02-28T10:00:00Z"));
        sub.attach_invoice(1, InvoiceId::generate());
        let l2 = sub.renew(parse("2030-02-28T10:00:00Z")).unwrap();
        sub.attach_invoice(2, InvoiceId::generate());
        assert_eq!(l2.payment_number, 2);
        assert_eq!(l2.period_end, parse("2030-03-31T10:00:00Z"));
    }

    #[test]
    fn renewal_happens_only_when_due_and_only_while_active() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, _) = Subscription::start(CustomerId::generate(), plan(Interval::Week), t0);
        sub.attach_invoice(1, InvoiceId::generate());
        assert!(sub.renew(t0 + TimeDelta::days(6)).is_none());
        sub.pause(t0).unwrap();
        assert!(sub.renew(t0 + TimeDelta::days(8)).is_none());
        assert_eq!(sub.next_renewal_at(), None);
    }

    #[test]
    fn an_errored_invoice_errors_the_subscription_and_paying_it_in_period_reactivates_it() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        let end = fail_until_error(&mut inv, t0);
        let events = sub.observe_invoice(&inv, end);
        assert_eq!(sub.status(), SubscriptionStatus::Errored);
        assert!(matches!(events[..], [EventPayload::SubscriptionErrored { .. }]));
        assert_eq!(sub.failed_payment_count(), 1);
        assert_eq!(sub.next_renewal_at(), None);
        // The same event delivered again changes nothing.
        assert!(sub.observe_invoice(&inv, end).is_empty());

        inv.mark_paid(None, end + TimeDelta::days(1)).unwrap();
        let events = sub.observe_invoice(&inv, end + TimeDelta::days(1));
        assert_eq!(sub.status(), SubscriptionStatus::Active);
        assert!(matches!(events[..], [EventPayload::SubscriptionActivated { reason: ActivationReason::Payment, .. }]));
        assert_eq!(sub.failed_payment_count(), 0);
    }

    #[test]
    fn paying_after_the_period_ended_does_not_reactivate() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Week), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        let end = fail_until_error(&mut inv, t0);
        sub.observe_invoice(&inv, end);
        inv.mark_paid(None, t0 + TimeDelta::days(20)).unwrap();
        assert!(sub.observe_invoice(&inv, t0 + TimeDelta::days(20)).is_empty());
        assert_eq!(sub.status(), SubscriptionStatus::Errored);
    }

    #[test]
    fn a_late_errored_event_does_not_undo_a_manual_reactivation() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        let end = fail_until_error(&mut inv, t0);
        sub.observe_invoice(&inv, end);
        sub.reactivate(end).unwrap();
        assert_eq!(sub.status(), SubscriptionStatus::Active);
        assert!(sub.observe_invoice(&inv, end).is_empty());
        assert_eq!(sub.status(), SubscriptionStatus::Active);
        assert_eq!(sub.failed_payment_count(), 1, "the invoice stays unpaid");
    }

    #[test]
    fn reactivating_after_the_period_lapsed_bills_the_next_period_from_now() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        let end = fail_until_error(&mut inv, t0);
        sub.observe_invoice(&inv, end);
        let later = t0 + TimeDelta::days(45);
        sub.reactivate(later).unwrap();
        let l2 = sub.renew(later).unwrap();
        assert_eq!(l2.payment_number, 2);
        assert_eq!(l2.period_start, later);
        assert_eq!(l2.period_end, later.checked_add_months(Months::new(1)).unwrap());
    }

    #[test]
    fn transitions_refuse_states_they_do_not_start_from() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, _) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        assert!(matches!(sub.reactivate(t0), Err(DomainError::InvalidTransition { .. })));
        assert!(matches!(sub.resume(t0), Err(DomainError::InvalidTransition { .. })));
        sub.cancel(t0).unwrap();
        assert!(matches!(sub.cancel(t0), Err(DomainError::InvalidTransition { .. })));
        assert!(matches!(sub.pause(t0), Err(DomainError::InvalidTransition { .. })));
    }

    #[test]
    fn payment_statuses_follow_the_invoice() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        assert_eq!(payment_status(&inv), PaymentStatus::Waiting);
        let policy = DunningPolicy::default();
        let txn = inv.begin_attempt(&card(), AttemptTrigger::Initial, t0, t0).unwrap();
        assert_eq!(payment_status(&inv), PaymentStatus::Waiting);
        let d = Decline::new(ErrorType::PaymentMethodDeclined, "nsf");
        inv.settle(&txn.id, AttemptOutcome::Declined(d), &policy, None, t0).unwrap();
        assert_eq!(payment_status(&inv), PaymentStatus::Declined);
        let txn = inv.begin_attempt(&card(), AttemptTrigger::Retry, t0, t0).unwrap();
        let d = Decline::new(ErrorType::PaymentMethodExpired, "expired");
        inv.settle(&txn.id, AttemptOutcome::Declined(d), &policy, None, t0).unwrap();
        assert_eq!(payment_status(&inv), PaymentStatus::Failed);
    }

    #[test]
    fn resuming_after_a_payment_errored_while_paused_lands_in_errored() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let (mut sub, link) = Subscription::start(CustomerId::generate(), plan(Interval::Month), t0);
        let mut inv = invoice_for(&mut sub, link, t0);
        sub.pause(t0).unwrap();
        let end = fail_until_error(&mut inv, t0);
        assert!(sub.observe_invoice(&inv, end).is_empty());
        assert_eq!(sub.status(), SubscriptionStatus::Paused);
        let events = sub.resume(end).unwrap();
        assert_eq!(sub.status(), SubscriptionStatus::Errored);
        assert!(matches!(&events[..], [EventPayload::SubscriptionErrored { invoice_id, .. }] if *invoice_id == inv.id));
        assert_eq!(sub.next_renewal_at(), None);
        // Paid later inside the period, it comes back as usual.
        inv.mark_paid(None, end).unwrap();
        sub.observe_invoice(&inv, end);
        assert_eq!(sub.status(), SubscriptionStatus::Active);
    }
}
