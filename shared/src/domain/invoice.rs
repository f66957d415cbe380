//! An invoice and its transactions: `draft → open → paid | error | void`, one transaction
//! per collection attempt.
//!
//! An attempt is opened (`begin_attempt`) before the PSP is called and settled after. While
//! it is pending nothing else may charge, pay or void the invoice; that, with the store's
//! version check on every write, is what makes a second successful charge impossible.

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::payment_method::{CardSnapshot, PaymentMethod};
use crate::domain::decline::{Decline, ErrorType, HardReason, RetryClass, classify};
use crate::domain::events::{EventPayload, PaidWith};
use crate::domain::money::Money;
use crate::domain::policy::DunningPolicy;
use crate::ids::{CustomerId, InvoiceId, SubscriptionId, TransactionId};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Error,
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Error => "error",
            InvoiceStatus::Void => "void",
        }
    }

    /// Open and errored invoices are still owed.
    pub fn is_outstanding(self) -> bool {
        match self {
            InvoiceStatus::Open | InvoiceStatus::Error => true,
            InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Void => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    /// Charged to the customer's default card.
    ChargeAutomatically,
    /// Paid by bank transfer and reconciled by the merchant (mark paid).
    SendInvoice,
}

/// The billing period an invoice of a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionLink {
    pub subscription_id: SubscriptionId,
    /// Payment number N of the subscription (1 for the first period).
    pub payment_number: u32,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    /// Sent, or about to be sent, to the PSP; outcome not yet recorded.
    Pending,
    Succeeded,
    Failed,
}

/// What started an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptTrigger {
    /// Issued and charged at once.
    Initial,
    /// The retry schedule.
    Retry,
    /// The merchant's "charge invoice" or "process payment N".
    Manual,
    /// The customer paying on-session from the portal.
    Customer,
    /// A card was registered and outstanding invoices were charged.
    NewPaymentMethod,
}

impl AttemptTrigger {
    /// Whether the cardholder is present (on-session) for this attempt.
    pub fn on_session(self) -> bool {
        match self {
            AttemptTrigger::Customer => true,
            AttemptTrigger::Initial
            | AttemptTrigger::Retry
            | AttemptTrigger::Manual
            | AttemptTrigger::NewPaymentMethod => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: TransactionId,
    /// 1 for the first attempt on this invoice.
    pub number: u32,
    pub status: TransactionStatus,
    pub trigger: AttemptTrigger,
    pub card: CardSnapshot,
    /// Sent with the charge; the same key never yields two charges at the PSP, and an
    /// unanswered attempt is reconciled by it.
    pub idempotency_key: String,
    /// A retry of this invoice on a card that already declined it (counts towards the
    /// networks' reattempt limits).
    pub reattempt: bool,
    /// False when Recoup recorded the failure without calling the PSP (expired card).
    pub sent_to_psp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psp_charge_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_class: Option<RetryClass>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<Timestamp>,
}

impl Transaction {
    pub fn error_type(&self) -> Option<ErrorType> {
        self.decline.as_ref().map(|d| d.error_type)
    }
}

/// How the PSP answered a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded {
        charge_id: String,
    },
    Declined(Decline),
    /// The issuer wants the cardholder to authenticate (3-D Secure) and the cardholder is
    /// present: the attempt stays pending while they do it with the PSP's client secret.
    /// The PSP's webhook settles it (or reconciliation, once it has waited).
    RequiresAction {
        charge_id: String,
        client_secret: String,
    },
    /// No answer (timeout, connection lost): the charge may or may not exist. Never
    /// treated as a failure; reconciled later by idempotency key.
    Unknown,
}

/// What a late approval did to the invoice.
#[derive(Debug, Clone, PartialEq)]
pub enum LateSuccess {
    /// The invoice is paid now; these are its events.
    Paid(Vec<EventPayload>),
    /// The invoice was already paid (or void): the customer was charged twice.
    ChargedTwice,
}

pub struct NewInvoice {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
    pub collection_method: CollectionMethod,
    pub subscription: Option<SubscriptionLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: InvoiceId,
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
    pub collection_method: CollectionMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionLink>,
    status: InvoiceStatus,
    #[serde(default)]
    transactions: Vec<Transaction>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paid_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errored_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voided_at: Option<Timestamp>,
    /// Start of dunning: retry slots are offsets from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_failed_at: Option<Timestamp>,
    /// When the engine next looks at this invoice: a retry slot, or the time to reconcile
    /// a pending attempt. Drives the sparse "due" index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<Timestamp>,
    /// The merchant's reference for a bank transfer marked as paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    out_of_band_reference: Option<String>,
    /// A refill of the customer's wallet: paid, it credits the wallet (in the same
    /// transaction); failed, it tells the wallet (see `domain::wallet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_refill: Option<crate::domain::wallet::RefillKind>,
}

pub const MAX_DESCRIPTION_CHARS: usize = 500;

impl Invoice {
    /// Issues an invoice: it is `open` and owed from now.
    pub fn issue(new: NewInvoice, now: Timestamp) -> Result<(Invoice, EventPayload), DomainError> {
        let description = new.description.trim().to_owned();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(DomainError::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let invoice = Invoice {
            id: InvoiceId::generate(),
            customer_id: new.customer_id,
            amount: new.amount,
            description,
            collection_method: new.collection_method,
            subscription: new.subscription,
            status: InvoiceStatus::Open,
            transactions: Vec::new(),
            created_at: now,
            paid_at: None,
            errored_at: None,
            voided_at: None,
            first_failed_at: None,
            next_attempt_at: None,
            out_of_band_reference: None,
            wallet_refill: None,
        };
        let event = EventPayload::InvoiceCreated {
            invoice_id: invoice.id.clone(),
            customer_id: invoice.customer_id.clone(),
            subscription_id: invoice.subscription_id().cloned(),
            amount: invoice.amount,
        };
        Ok((invoice, event))
    }

    pub fn status(&self) -> InvoiceStatus {
        self.status
    }

    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    pub fn subscription_id(&self) -> Option<&SubscriptionId> {
        self.subscription.as_ref().map(|s| &s.subscription_id)
    }

    pub fn paid_at(&self) -> Option<Timestamp> {
        self.paid_at
    }

    pub fn errored_at(&self) -> Option<Timestamp> {
        self.errored_at
    }

    pub fn voided_at(&self) -> Option<Timestamp> {
        self.voided_at
    }

    pub fn first_failed_at(&self) -> Option<Timestamp> {
        self.first_failed_at
    }

    pub fn next_attempt_at(&self) -> Option<Timestamp> {
        self.next_attempt_at
    }

    pub fn out_of_band_reference(&self) -> Option<&str> {
        self.out_of_band_reference.as_deref()
    }

    pub fn attempt_count(&self) -> u32 {
        self.transactions.len() as u32
    }

    pub fn pending_transaction(&self) -> Option<&Transaction> {
        self.transactions.iter().find(|t| t.status == TransactionStatus::Pending)
    }

    pub fn last_transaction(&self) -> Option<&Transaction> {
        self.transactions.last()
    }

    pub fn succeeded_transactions(&self) -> usize {
        self.transactions.iter().filter(|t| t.status == TransactionStatus::Succeeded).count()
    }

    /// A retry on this card of a payment it already declined.
    pub fn is_reattempt_on(&self, card: &CardSnapshot) -> bool {
        self.transactions
            .iter()
            .any(|t| t.status == TransactionStatus::Failed && t.sent_to_psp && t.card.fingerprint == card.fingerprint)
    }

    /// The decline that stops automatic attempts on this card, if any: a hard decline or
    /// one that needs the customer, on this card, since it was last verified.
    pub fn blocking_decline(&self, card: &PaymentMethod) -> Option<&Transaction> {
        self.transactions.iter().rev().find(|t| {
            t.status == TransactionStatus::Failed
                && t.card.fingerprint == card.fingerprint
                && t.created_at >= card.verified_at
                && matches!(t.retry_class, Some(RetryClass::Hard { .. } | RetryClass::NeedsCustomer))
        })
    }

    fn ensure_chargeable(&self) -> Result<(), DomainError> {
        match self.status {
            InvoiceStatus::Open | InvoiceStatus::Error => {}
            InvoiceStatus::Paid => return Err(DomainError::InvoiceAlreadyPaid),
            InvoiceStatus::Draft | InvoiceStatus::Void => {
                return Err(DomainError::InvoiceNotChargeable(self.status.as_str()));
            }
        }
        if self.pending_transaction().is_some() {
            return Err(DomainError::ChargeInProgress);
        }
        Ok(())
    }

    fn new_transaction(&self, card: &CardSnapshot, trigger: AttemptTrigger, now: Timestamp) -> Transaction {
        let number = self.attempt_count() + 1;
        Transaction {
            id: TransactionId::generate(),
            number,
            status: TransactionStatus::Pending,
            trigger,
            card: card.clone(),
            idempotency_key: format!("{}-attempt-{number}", self.id),
            reattempt: self.is_reattempt_on(card),
            sent_to_psp: true,
            psp_charge_id: None,
            decline: None,
            retry_class: None,
            created_at: now,
            settled_at: None,
        }
    }

    /// Opens an attempt before the PSP is called. Until it is settled the invoice comes
    /// due again at `reconcile_at`, so an attempt whose worker died is reconciled.
    pub fn begin_attempt(
        &mut self,
        card: &CardSnapshot,
        trigger: AttemptTrigger,
        now: Timestamp,
        reconcile_at: Timestamp,
    ) -> Result<Transaction, DomainError> {
        self.ensure_chargeable()?;
        let txn = self.new_transaction(card, trigger, now);
        self.transactions.push(txn.clone());
        self.next_attempt_at = Some(reconcile_at);
        Ok(txn)
    }

    /// Records an attempt on an expired card as failed without calling the PSP.
    pub fn record_expired_card(
        &mut self,
        card: &CardSnapshot,
        trigger: AttemptTrigger,
        policy: &DunningPolicy,
        now: Timestamp,
    ) -> Result<(Transaction, Vec<EventPayload>), DomainError> {
        self.ensure_chargeable()?;
        let mut txn = self.new_transaction(card, trigger, now);
        txn.reattempt = false;
        txn.sent_to_psp = false;
        txn.status = TransactionStatus::Failed;
        txn.decline = Some(Decline::new(
            ErrorType::PaymentMethodExpired,
            "the card had expired; it was not sent to the payment provider",
        ));
        txn.retry_class = Some(RetryClass::Hard { reason: HardReason::Expired });
        txn.settled_at = Some(now);
        self.transactions.push(txn.clone());
        let events = self.after_failure(self.transactions.len() - 1, policy, None, now);
        Ok((txn, events))
    }

    /// Records the PSP's answer to the pending attempt `txn_id`.
    pub fn settle(
        &mut self,
        txn_id: &TransactionId,
        outcome: AttemptOutcome,
        policy: &DunningPolicy,
        retry_not_before: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Vec<EventPayload>, DomainError> {
        let idx = self
            .transactions
            .iter()
            .position(|t| &t.id == txn_id && t.status == TransactionStatus::Pending)
            .ok_or_else(|| DomainError::TransactionNotPending(txn_id.clone()))?;
        match self.status {
            InvoiceStatus::Open | InvoiceStatus::Error => {}
            InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Void => {
                // begin_attempt, mark_paid and void all refuse while an attempt is pending.
                return Err(DomainError::InvoiceNotChargeable(self.status.as_str()));
            }
        }
        match outcome {
            AttemptOutcome::Unknown => {
                self.next_attempt_at = Some(now + policy.reconcile_after);
                Ok(Vec::new())
            }
            AttemptOutcome::RequiresAction { charge_id, .. } => {
                self.transactions[idx].psp_charge_id = Some(charge_id);
                self.next_attempt_at = Some(now + policy.reconcile_after);
                Ok(Vec::new())
            }
            AttemptOutcome::Succeeded { charge_id } => {
                let txn = &mut self.transactions[idx];
                txn.status = TransactionStatus::Succeeded;
                txn.psp_charge_id = Some(charge_id);
                txn.settled_at = Some(now);
                self.status = InvoiceStatus::Paid;
                self.paid_at = Some(now);
                self.next_attempt_at = None;
                Ok(vec![self.paid_event(PaidWith::Card, now)])
            }
            AttemptOutcome::Declined(decline) => {
                let txn = &mut self.transactions[idx];
                txn.retry_class = Some(classify(&decline, txn.card.network()));
                txn.decline = Some(decline);
                txn.status = TransactionStatus::Failed;
                txn.settled_at = Some(now);
                Ok(self.after_failure(idx, policy, retry_not_before, now))
            }
        }
    }

    /// Plans the next attempt after a failure, or ends automatic collection.
    fn after_failure(
        &mut self,
        idx: usize,
        policy: &DunningPolicy,
        retry_not_before: Option<Timestamp>,
        now: Timestamp,
    ) -> Vec<EventPayload> {
        let first = *self.first_failed_at.get_or_insert(now);
        let next = match (self.status, self.collection_method) {
            // A bank-transfer invoice someone tried to pay by card is not dunned: it stays
            // open for the merchant to reconcile or for another try by hand.
            (InvoiceStatus::Open, CollectionMethod::SendInvoice) => None,
            (InvoiceStatus::Open, CollectionMethod::ChargeAutomatically) => {
                policy.schedule.next_slot(first, now, retry_not_before)
            }
            // An errored invoice has no automatic attempts left; this was a manual one.
            (InvoiceStatus::Error | InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Void, _) => None,
        };
        self.next_attempt_at = next;
        let txn = &self.transactions[idx];
        let mut events = vec![EventPayload::InvoicePaymentFailed {
            invoice_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id().cloned(),
            transaction_id: txn.id.clone(),
            amount: self.amount,
            attempt_count: self.attempt_count(),
            next_attempt_at: next,
            error_type: txn.error_type().unwrap_or(ErrorType::Unknown),
            retry: txn.retry_class.unwrap_or(RetryClass::Soft),
        }];
        if next.is_none()
            && self.status == InvoiceStatus::Open
            && self.collection_method == CollectionMethod::ChargeAutomatically
        {
            events.extend(self.error_out(now));
        }
        events
    }

    fn error_out(&mut self, now: Timestamp) -> Option<EventPayload> {
        self.status = InvoiceStatus::Error;
        self.errored_at = Some(now);
        self.next_attempt_at = None;
        Some(EventPayload::InvoiceErrored {
            invoice_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id().cloned(),
            amount: self.amount,
            attempt_count: self.attempt_count(),
            error_type: self.last_transaction().and_then(Transaction::error_type),
        })
    }

    /// Moves the next automatic look to `next` (a later retry slot) or, with `None`, ends
    /// automatic collection: the invoice goes to `error`.
    pub fn reschedule(&mut self, next: Option<Timestamp>, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match (self.status, next) {
            (InvoiceStatus::Open, Some(at)) => {
                self.next_attempt_at = Some(at);
                Ok(Vec::new())
            }
            (InvoiceStatus::Open, None) => Ok(self.error_out(now).into_iter().collect()),
            (InvoiceStatus::Error, _) => {
                self.next_attempt_at = None;
                Ok(Vec::new())
            }
            (InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Void, _) => {
                Err(DomainError::InvalidTransition {
                    entity: "invoice",
                    state: self.status.as_str(),
                    action: "reschedule",
                })
            }
        }
    }

    /// Puts a new, automatically collected invoice on the schedule for its first attempt,
    /// so that it is charged even if the process that issued it dies before charging.
    pub fn schedule_first_attempt(&mut self, at: Timestamp) {
        if self.status == InvoiceStatus::Open
            && self.transactions.is_empty()
            && self.collection_method == CollectionMethod::ChargeAutomatically
        {
            self.next_attempt_at = Some(at);
        }
    }

    /// A bank-transfer invoice still owed becomes one charged to the card (its customer
    /// switched to card payment): from now on it is collected, and dunned, like any other.
    /// Answers whether it changed.
    pub fn collect_automatically(&mut self, now: Timestamp) -> bool {
        if self.collection_method == CollectionMethod::ChargeAutomatically || !self.status.is_outstanding() {
            return false;
        }
        self.collection_method = CollectionMethod::ChargeAutomatically;
        if self.status == InvoiceStatus::Open && self.pending_transaction().is_none() {
            self.next_attempt_at = Some(now);
        }
        true
    }

    /// Takes the invoice off the schedule while its subscription is paused.
    pub fn park(&mut self) {
        if self.pending_transaction().is_none() {
            self.next_attempt_at = None;
        }
    }

    /// Puts a parked, open invoice back on the schedule.
    pub fn unpark(&mut self, now: Timestamp) {
        if self.status == InvoiceStatus::Open && self.next_attempt_at.is_none() {
            self.next_attempt_at = Some(now);
        }
    }

    /// The PSP reports that an attempt recorded as declined was in fact approved (its
    /// webhook arrived after a decline was recorded, e.g. the cardholder completed 3-D
    /// Secure). The PSP holds the money, so the record follows it: the attempt succeeded,
    /// and an open or errored invoice is paid. An invoice already paid by another attempt,
    /// or void, was charged twice: the attempt is recorded as succeeded and
    /// [`LateSuccess::ChargedTwice`] says a refund is due.
    pub fn record_late_success(
        &mut self,
        txn_id: &TransactionId,
        charge_id: String,
        now: Timestamp,
    ) -> Result<LateSuccess, DomainError> {
        let idx = self
            .transactions
            .iter()
            .position(|t| &t.id == txn_id && t.status == TransactionStatus::Failed)
            .ok_or_else(|| DomainError::TransactionNotPending(txn_id.clone()))?;
        let txn = &mut self.transactions[idx];
        txn.status = TransactionStatus::Succeeded;
        txn.psp_charge_id = Some(charge_id);
        txn.settled_at = Some(now);
        match self.status {
            InvoiceStatus::Open | InvoiceStatus::Error => {
                self.status = InvoiceStatus::Paid;
                self.paid_at = Some(now);
                self.next_attempt_at = None;
                Ok(LateSuccess::Paid(vec![self.paid_event(PaidWith::Card, now)]))
            }
            InvoiceStatus::Paid | InvoiceStatus::Void | InvoiceStatus::Draft => Ok(LateSuccess::ChargedTwice),
        }
    }

    /// A bank transfer (or other payment outside Recoup) reconciled by the merchant.
    pub fn mark_paid(&mut self, reference: Option<String>, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        self.ensure_chargeable()?;
        self.status = InvoiceStatus::Paid;
        self.paid_at = Some(now);
        self.next_attempt_at = None;
        self.out_of_band_reference = reference;
        Ok(vec![self.paid_event(PaidWith::OutOfBand, now)])
    }

    pub fn void(&mut self, now: Timestamp) -> Result<Vec<EventPayload>, DomainError> {
        match self.status {
            InvoiceStatus::Draft | InvoiceStatus::Open | InvoiceStatus::Error => {}
            InvoiceStatus::Paid | InvoiceStatus::Void => {
                return Err(DomainError::InvalidTransition {
                    entity: "invoice",
                    state: self.status.as_str(),
                    action: "void",
                });
            }
        }
        if self.pending_transaction().is_some() {
            return Err(DomainError::ChargeInProgress);
        }
        self.status = InvoiceStatus::Void;
        self.voided_at = Some(now);
        self.next_attempt_at = None;
        Ok(vec![EventPayload::InvoiceVoided {
            invoice_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id().cloned(),
        }])
    }

    fn paid_event(&self, paid_with: PaidWith, now: Timestamp) -> EventPayload {
        EventPayload::InvoicePaid {
            invoice_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            subscription_id: self.subscription_id().cloned(),
            amount: self.amount,
            paid_at: now,
            paid_with,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::card::{CardBrand, CardExpiry, Fingerprint};
    use crate::domain::money::Currency;
    use crate::domain::payment_method::VerifiedCard;
    use crate::ids::PaymentMethodId;
    use crate::time::parse;

    fn t0() -> Timestamp {
        parse("2030-01-01T00:00:00Z")
    }

    fn invoice() -> Invoice {
        Invoice::issue(
            NewInvoice {
                customer_id: CustomerId::generate(),
                amount: Money::new(2500, Currency::parse("EUR").unwrap()).unwrap(),
                description: "Pro plan".into(),
                collection_method: CollectionMethod::ChargeAutomatically,
                subscription: None,
            },
            t0(),
        )
        .unwrap()
        .0
    }

    fn card(fp: &str) -> CardSnapshot {
        CardSnapshot {
            payment_method_id: PaymentMethodId::generate(),
            psp_token: "pm_card_visa".into(),
            brand: CardBrand::Visa,
            last4: "4242".into(),
            fingerprint: Fingerprint::new(fp),
            expiry: None,
        }
    }

    fn nsf() -> AttemptOutcome {
        AttemptOutcome::Declined(
            Decline::new(ErrorType::PaymentMethodDeclined, "insufficient funds")
                .with_decline_code("insufficient_funds"),
        )
    }

    fn attempt(inv: &mut Invoice, c: &CardSnapshot, outcome: AttemptOutcome, now: Timestamp) -> Vec<EventPayload> {
        let policy = DunningPolicy::default();
        let txn = inv.begin_attempt(c, AttemptTrigger::Retry, now, now + policy.reconcile_after).unwrap();
        inv.settle(&txn.id, outcome, &policy, None, now).unwrap()
    }

    #[test]
    fn a_successful_attempt_pays_the_invoice_once() {
        let mut inv = invoice();
        let events = attempt(&mut inv, &card("a"), AttemptOutcome::Succeeded { charge_id: "ch_1".into() }, t0());
        assert_eq!(inv.status(), InvoiceStatus::Paid);
        assert!(matches!(events[..], [EventPayload::InvoicePaid { .. }]));
        let err = inv.begin_attempt(&card("a"), AttemptTrigger::Manual, t0(), t0()).unwrap_err();
        assert_eq!(err, DomainError::InvoiceAlreadyPaid);
    }

    /// Stored, an invoice leaves out what it does not have (every write of it is billed by
    /// the kilobyte), and an invoice stored with explicit nulls, as before 2026-12-07,
    /// reads the same.
    #[test]
    fn an_invoice_is_stored_without_nulls_and_reads_back_with_or_without_them() {
        let mut inv = invoice();
        attempt(&mut inv, &card("a"), nsf(), t0());
        inv.begin_attempt(&card("a"), AttemptTrigger::Retry, t0(), t0()).unwrap();
        let stored = serde_json::to_value(&inv).unwrap();
        assert!(!stored.to_string().contains("null"), "{stored}");
        assert_eq!(serde_json::from_value::<Invoice>(stored.clone()).unwrap(), inv);

        let mut with_nulls = stored;
        for field in ["paid_at", "errored_at", "voided_at", "out_of_band_reference", "subscription"] {
            with_nulls[field] = serde_json::Value::Null;
        }
        for field in ["psp_charge_id", "decline", "retry_class", "settled_at"] {
            with_nulls["transactions"][1][field] = serde_json::Value::Null;
        }
        assert_eq!(serde_json::from_value::<Invoice>(with_nulls).unwrap(), inv);
    }

    #[test]
    fn a_second_attempt_cannot_start_while_one_is_pending() {
        let mut inv = invoice();
        inv.begin_attempt(&card("a"), AttemptTrigger::Initial, t0(), t0()).unwrap();
        let err = inv.begin_attempt(&card("a"), AttemptTrigger::Manual, t0(), t0()).unwrap_err();
        assert_eq!(err, DomainError::ChargeInProgress);
        assert_eq!(inv.mark_paid(None, t0()).unwrap_err(), DomainError::ChargeInProgress);
        assert_eq!(inv.void(t0()).unwrap_err(), DomainError::ChargeInProgress);
    }

    #[test]
    fn a_soft_decline_schedules_the_next_slot_and_reports_it() {
        let mut inv = invoice();
        let events = attempt(&mut inv, &card("a"), nsf(), t0());
        assert_eq!(inv.status(), InvoiceStatus::Open);
        assert_eq!(inv.next_attempt_at(), Some(t0() + TimeDelta::days(1)));
        match &events[..] {
            [EventPayload::InvoicePaymentFailed { attempt_count, next_attempt_at, error_type, .. }] => {
                assert_eq!(*attempt_count, 1);
                assert_eq!(*next_attempt_at, Some(t0() + TimeDelta::days(1)));
                assert_eq!(*error_type, ErrorType::PaymentMethodDeclined);
            }
            other => panic!("unexpected events {other:?}"),
        }
    }

    #[test]
    fn the_last_failed_attempt_errors_the_invoice() {
        let mut inv = invoice();
        let c = card("a");
        attempt(&mut inv, &c, nsf(), t0());
        let mut last = Vec::new();
        while let Some(at) = inv.next_attempt_at() {
            last = attempt(&mut inv, &c, nsf(), at);
        }
        assert_eq!(inv.status(), InvoiceStatus::Error);
        assert_eq!(inv.attempt_count(), 7);
        assert!(matches!(
            last[..],
            [
                EventPayload::InvoicePaymentFailed { next_attempt_at: None, .. },
                EventPayload::InvoiceErrored { attempt_count: 7, .. }
            ]
        ));
        assert!(inv.transactions().iter().skip(1).all(|t| t.reattempt));
    }

    #[test]
    fn an_errored_invoice_can_still_be_paid_by_a_manual_attempt() {
        let mut inv = invoice();
        let c = card("a");
        attempt(&mut inv, &c, nsf(), t0());
        inv.reschedule(None, t0()).unwrap();
        assert_eq!(inv.status(), InvoiceStatus::Error);
        attempt(&mut inv, &card("b"), AttemptOutcome::Succeeded { charge_id: "ch".into() }, t0());
        assert_eq!(inv.status(), InvoiceStatus::Paid);
    }

    #[test]
    fn an_approval_reported_after_a_recorded_decline_pays_the_invoice() {
        let mut inv = invoice();
        attempt(&mut inv, &card("a"), nsf(), t0());
        let declined = inv.last_transaction().unwrap().id.clone();
        assert!(inv.next_attempt_at().is_some(), "a retry was planned");
        let later = t0() + TimeDelta::minutes(5);
        let done = inv.record_late_success(&declined, "pi_late".into(), later).unwrap();
        assert!(matches!(done, LateSuccess::Paid(ref e) if matches!(e[..], [EventPayload::InvoicePaid { .. }])));
        assert_eq!(inv.status(), InvoiceStatus::Paid);
        assert_eq!(inv.next_attempt_at(), None, "no retry of a paid invoice");
        assert_eq!(inv.last_transaction().unwrap().psp_charge_id.as_deref(), Some("pi_late"));
        // Only a recorded decline can turn out approved.
        assert!(inv.record_late_success(&declined, "pi_late".into(), later).is_err());
    }

    #[test]
    fn a_late_approval_on_an_invoice_paid_meanwhile_is_a_double_charge() {
        let mut inv = invoice();
        attempt(&mut inv, &card("a"), nsf(), t0());
        let declined = inv.last_transaction().unwrap().id.clone();
        attempt(&mut inv, &card("b"), AttemptOutcome::Succeeded { charge_id: "pi_2".into() }, t0());
        assert_eq!(inv.record_late_success(&declined, "pi_1".into(), t0()).unwrap(), LateSuccess::ChargedTwice);
        assert_eq!(inv.succeeded_transactions(), 2);
        assert_eq!(inv.status(), InvoiceStatus::Paid);
    }

    #[test]
    fn an_unknown_outcome_leaves_the_attempt_pending_and_comes_back_to_reconcile() {
        let mut inv = invoice();
        let policy = DunningPolicy::default();
        let txn = inv.begin_attempt(&card("a"), AttemptTrigger::Initial, t0(), t0()).unwrap();
        let events = inv.settle(&txn.id, AttemptOutcome::Unknown, &policy, None, t0()).unwrap();
        assert!(events.is_empty());
        assert_eq!(inv.status(), InvoiceStatus::Open);
        assert_eq!(inv.pending_transaction().map(|t| &t.id), Some(&txn.id));
        assert_eq!(inv.next_attempt_at(), Some(t0() + policy.reconcile_after));
        // Later the PSP says it succeeded.
        inv.settle(&txn.id, AttemptOutcome::Succeeded { charge_id: "ch".into() }, &policy, None, t0()).unwrap();
        assert_eq!(inv.status(), InvoiceStatus::Paid);
        assert_eq!(inv.succeeded_transactions(), 1);
    }

    #[test]
    fn a_hard_decline_blocks_the_card_until_it_is_verified_again() {
        let mut inv = invoice();
        let mut pm = PaymentMethod::new(
            inv.customer_id.clone(),
            VerifiedCard {
                psp_token: "pm_x".into(),
                brand: CardBrand::Visa,
                last4: "0069".into(),
                expiry: CardExpiry::new(1, 2035).unwrap(),
                fingerprint: Fingerprint::new("a"),
                funding: None,
                country: None,
            },
            t0() - TimeDelta::days(10),
        );
        let expired = AttemptOutcome::Declined(Decline::new(ErrorType::PaymentMethodExpired, "expired"));
        attempt(&mut inv, &pm.snapshot(), expired, t0());
        assert!(inv.blocking_decline(&pm).is_some());
        pm.verified_at = t0() + TimeDelta::hours(1);
        assert!(inv.blocking_decline(&pm).is_none());
    }

    #[test]
    fn an_expired_card_is_recorded_without_calling_the_psp() {
        let mut inv = invoice();
        let (txn, events) =
            inv.record_expired_card(&card("a"), AttemptTrigger::Retry, &DunningPolicy::default(), t0()).unwrap();
        assert!(!txn.sent_to_psp);
        assert_eq!(txn.error_type(), Some(ErrorType::PaymentMethodExpired));
        assert!(matches!(events[..], [EventPayload::InvoicePaymentFailed { .. }]));
        assert!(!inv.is_reattempt_on(&card("a")));
    }

    #[test]
    fn paid_and_void_invoices_refuse_every_further_change() {
        let mut inv = invoice();
        inv.mark_paid(Some("wire 42".into()), t0()).unwrap();
        assert_eq!(inv.mark_paid(None, t0()).unwrap_err(), DomainError::InvoiceAlreadyPaid);
        assert!(matches!(inv.void(t0()), Err(DomainError::InvalidTransition { .. })));
        let mut inv = invoice();
        inv.void(t0()).unwrap();
        assert_eq!(
            inv.begin_attempt(&card("a"), AttemptTrigger::Manual, t0(), t0()).unwrap_err(),
            DomainError::InvoiceNotChargeable("void")
        );
    }
}
