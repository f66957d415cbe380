//! The customer's wallet (seed 000): a prepaid balance per currency, in minor units, kept
//! as a ledger of entries that are written once and never edited, each with the balance
//! after it.
//!
//! - A **refill** is an invoice charged to a card through the charge engine (the network
//!   rules, idempotency and decline classification are the engine's). Paid, it credits
//!   the wallet in the same transaction that records the payment, so exactly once.
//! - A **debit** (the merchant's usage charge) is refused when the balance is short: the
//!   balance is never negative.
//! - **Automatic refill** (`{enabled, threshold, amount}`): a debit that leaves the
//!   balance under the threshold starts a refill from the default card. Its declines are
//!   retried on the dunning schedule, within the card networks' rules, like any
//!   automatically collected invoice; when that schedule ends, automatic refill is turned
//!   off and the customer is told. One refill at a time: a wallet records the refill in
//!   flight and starts no other until it ends.

use serde::{Deserialize, Serialize};

use super::decline::ErrorType;
use super::events::EventPayload;
use super::money::{Currency, Money};
use crate::ids::{CustomerId, InvoiceId};
use crate::time::Timestamp;

/// What started a refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefillKind {
    /// The customer asked (on the billing page, or through the API): declines end it.
    Manual,
    /// A debit took the balance under the threshold: declines are retried on the dunning
    /// schedule.
    Automatic,
}

/// Automatic refill settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRefill {
    pub enabled: bool,
    /// Under this balance (minor units), a refill starts.
    pub threshold: i64,
    /// What a refill adds (minor units).
    pub amount: i64,
    /// When Recoup turned it off after a refill failed for good.
    #[serde(default)]
    pub disabled_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("the wallet holds {balance} and this debit is {amount} (minor units of {currency})")]
    InsufficientBalance { balance: i64, amount: i64, currency: String },
    #[error("a refill of this wallet is already in progress ({0}); try again once it has ended")]
    RefillInProgress(InvoiceId),
    #[error("{0}")]
    InvalidSettings(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub customer_id: CustomerId,
    pub currency: Currency,
    balance: i64,
    /// Entries written so far; the next one is number `entries + 1`.
    entries: u64,
    #[serde(default)]
    pub auto_refill: Option<AutoRefill>,
    /// The refill invoice being collected, if any.
    #[serde(default)]
    refill_in_flight: Option<InvoiceId>,
    pub updated_at: Timestamp,
}

/// Why an entry moved the balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    Refill { invoice_id: InvoiceId, automatic: bool },
    Debit { description: String },
}

/// One line of the ledger: written once, never edited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletEntry {
    pub customer_id: CustomerId,
    pub currency: Currency,
    /// 1, 2, 3...: the order of the wallet's entries.
    pub number: u64,
    /// Signed minor units: a credit is positive, a debit negative.
    pub amount: i64,
    pub balance_after: i64,
    #[serde(flatten)]
    pub kind: EntryKind,
    pub at: Timestamp,
}

/// What a debit did beyond the entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Debited {
    pub entry: WalletEntry,
    pub events: Vec<EventPayload>,
    /// The automatic refill to start now (its amount), if one is due.
    pub refill: Option<Money>,
}

pub const MAX_DEBIT_DESCRIPTION_CHARS: usize = 500;

impl Wallet {
    pub fn new(customer_id: CustomerId, currency: Currency, now: Timestamp) -> Self {
        Wallet { customer_id, currency, balance: 0, entries: 0, auto_refill: None, refill_in_flight: None, updated_at: now }
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }

    pub fn entry_count(&self) -> u64 {
        self.entries
    }

    pub fn refill_in_flight(&self) -> Option<&InvoiceId> {
        self.refill_in_flight.as_ref()
    }

    fn entry(&mut self, amount: i64, kind: EntryKind, now: Timestamp) -> WalletEntry {
        self.entries += 1;
        self.balance += amount;
        self.updated_at = now;
        WalletEntry {
            customer_id: self.customer_id.clone(),
            currency: self.currency,
            number: self.entries,
            amount,
            balance_after: self.balance,
            kind,
            at: now,
        }
    }

    /// Records that `invoice` now refills this wallet; refused while another refill is
    /// being collected.
    pub fn begin_refill(&mut self, invoice: &InvoiceId, now: Timestamp) -> Result<(), WalletError> {
        match &self.refill_in_flight {
            Some(other) if other != invoice => Err(WalletError::RefillInProgress(other.clone())),
            Some(_) | None => {
                self.refill_in_flight = Some(invoice.clone());
                self.updated_at = now;
                Ok(())
            }
        }
    }

    /// The refill invoice was paid: credits the wallet. Called in the transaction that
    /// records the payment, so once per invoice.
    pub fn credit_refill(
        &mut self,
        invoice: &InvoiceId,
        paid: Money,
        kind: RefillKind,
        now: Timestamp,
    ) -> (WalletEntry, Vec<EventPayload>) {
        if self.refill_in_flight.as_ref() == Some(invoice) {
            self.refill_in_flight = None;
        }
        let automatic = kind == RefillKind::Automatic;
        if automatic && let Some(auto) = &mut self.auto_refill {
            auto.disabled_at = None;
        }
        let entry =
            self.entry(paid.amount(), EntryKind::Refill { invoice_id: invoice.clone(), automatic }, now);
        let event = EventPayload::WalletRefilled {
            customer_id: self.customer_id.clone(),
            invoice_id: invoice.clone(),
            amount: paid,
            balance: self.balance,
            automatic,
        };
        (entry, vec![event])
    }

    /// A refill attempt failed. `final_failure` when no attempt will follow (a manual
    /// refill's decline, or the end of an automatic refill's schedule): the refill ends,
    /// and an automatic one turns automatic refill off.
    pub fn refill_failed(
        &mut self,
        invoice: &InvoiceId,
        amount: Money,
        kind: RefillKind,
        error_type: Option<ErrorType>,
        next_attempt_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Vec<EventPayload> {
        let final_failure = next_attempt_at.is_none();
        let mut disabled = false;
        if final_failure {
            if self.refill_in_flight.as_ref() == Some(invoice) {
                self.refill_in_flight = None;
            }
            if kind == RefillKind::Automatic
                && let Some(auto) = &mut self.auto_refill
                && auto.enabled
            {
                auto.enabled = false;
                auto.disabled_at = Some(now);
                disabled = true;
            }
        }
        self.updated_at = now;
        vec![EventPayload::WalletRefillFailed {
            customer_id: self.customer_id.clone(),
            invoice_id: invoice.clone(),
            amount,
            automatic: kind == RefillKind::Automatic,
            error_type,
            next_attempt_at,
            auto_refill_disabled: disabled,
        }]
    }

    /// The refill invoice ended without payment or decline (the merchant voided it).
    pub fn refill_ended(&mut self, invoice: &InvoiceId, now: Timestamp) {
        if self.refill_in_flight.as_ref() == Some(invoice) {
            self.refill_in_flight = None;
            self.updated_at = now;
        }
    }

    /// Debits usage. Refused when the balance is short. A balance that falls under the
    /// automatic refill's threshold reports `wallet.low_balance` and, with automatic
    /// refill on and no refill in flight, asks for a refill.
    pub fn debit(&mut self, amount: Money, description: &str, now: Timestamp) -> Result<Debited, WalletError> {
        if amount.amount() > self.balance {
            return Err(WalletError::InsufficientBalance {
                balance: self.balance,
                amount: amount.amount(),
                currency: self.currency.code().to_owned(),
            });
        }
        let before = self.balance;
        let entry = self.entry(-amount.amount(), EntryKind::Debit { description: description.to_owned() }, now);
        let mut events = Vec::new();
        let mut refill = None;
        if let Some(auto) = self.auto_refill
            && before >= auto.threshold
            && self.balance < auto.threshold
        {
            events.push(EventPayload::WalletLowBalance {
                customer_id: self.customer_id.clone(),
                currency: self.currency,
                balance: self.balance,
                threshold: auto.threshold,
            });
        }
        if let Some(auto) = self.auto_refill
            && auto.enabled
            && self.balance < auto.threshold
            && self.refill_in_flight.is_none()
        {
            refill = Money::new(auto.amount, self.currency).ok();
        }
        Ok(Debited { entry, events, refill })
    }

    /// Sets automatic refill. The refill must lift the balance back over the threshold
    /// from zero (`amount > threshold`), and both are within `max_refill`.
    pub fn configure(&mut self, settings: AutoRefill, max_refill: i64, now: Timestamp) -> Result<(), WalletError> {
        if settings.threshold < 0 || settings.threshold > max_refill {
            return Err(WalletError::InvalidSettings(format!(
                "threshold must be from 0 to {max_refill} (minor units)"
            )));
        }
        if settings.amount < 1 || settings.amount > max_refill {
            return Err(WalletError::InvalidSettings(format!("amount must be from 1 to {max_refill} (minor units)")));
        }
        if settings.amount <= settings.threshold {
            return Err(WalletError::InvalidSettings(
                "amount must be more than threshold, so that a refill lifts the balance over it".into(),
            ));
        }
        self.auto_refill = Some(AutoRefill { disabled_at: None, ..settings });
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    fn usd(n: i64) -> Money {
        Money::new(n, Currency::parse("USD").unwrap()).unwrap()
    }

    fn wallet() -> Wallet {
        Wallet::new(CustomerId::generate(), Currency::parse("USD").unwrap(), parse("2030-01-01T00:00:00Z"))
    }

    #[test]
    fn entries_carry_running_balances_and_a_debit_never_overdraws() {
        let now = parse("2030-01-01T00:00:00Z");
        let mut w = wallet();
        let inv = InvoiceId::generate();
        w.begin_refill(&inv, now).unwrap();
        let (e1, events) = w.credit_refill(&inv, usd(1000), RefillKind::Manual, now);
        assert_eq!((e1.number, e1.amount, e1.balance_after), (1, 1000, 1000));
        assert!(matches!(events[0], EventPayload::WalletRefilled { balance: 1000, .. }));
        assert!(w.refill_in_flight().is_none());
        let d = w.debit(usd(300), "api calls", now).unwrap();
        assert_eq!((d.entry.number, d.entry.amount, d.entry.balance_after), (2, -300, 700));
        let err = w.debit(usd(701), "more", now).unwrap_err();
        assert!(matches!(err, WalletError::InsufficientBalance { balance: 700, amount: 701, .. }));
        assert_eq!((w.balance(), w.entry_count()), (700, 2), "a refused debit writes nothing");
        assert_eq!(w.debit(usd(700), "all of it", now).unwrap().entry.balance_after, 0);
    }

    #[test]
    fn one_refill_at_a_time() {
        let now = parse("2030-01-01T00:00:00Z");
        let mut w = wallet();
        let (a, b) = (InvoiceId::generate(), InvoiceId::generate());
        w.begin_refill(&a, now).unwrap();
        assert_eq!(w.begin_refill(&b, now), Err(WalletError::RefillInProgress(a.clone())));
        w.refill_failed(&a, usd(500), RefillKind::Manual, Some(ErrorType::Declined), None, now);
        w.begin_refill(&b, now).unwrap();
    }

    #[test]
    fn crossing_the_threshold_reports_low_balance_and_asks_for_one_refill() {
        let now = parse("2030-01-01T00:00:00Z");
        let mut w = wallet();
        w.configure(AutoRefill { enabled: true, threshold: 500, amount: 2000, disabled_at: None }, 100_000, now)
            .unwrap();
        let inv = InvoiceId::generate();
        w.begin_refill(&inv, now).unwrap();
        w.credit_refill(&inv, usd(1000), RefillKind::Manual, now);
        let above = w.debit(usd(400), "a", now).unwrap();
        assert!(above.events.is_empty() && above.refill.is_none(), "600 is not under 500");
        let under = w.debit(usd(200), "b", now).unwrap();
        assert!(matches!(under.events[..], [EventPayload::WalletLowBalance { balance: 400, threshold: 500, .. }]));
        assert_eq!(under.refill, Some(usd(2000)));
        let refill = InvoiceId::generate();
        w.begin_refill(&refill, now).unwrap();
        let again = w.debit(usd(100), "c", now).unwrap();
        assert!(again.events.is_empty(), "low balance is reported when it is crossed, not on every debit");
        assert!(again.refill.is_none(), "a refill is in flight");
    }

    #[test]
    fn an_automatic_refill_that_fails_for_good_turns_automatic_refill_off() {
        let now = parse("2030-01-01T00:00:00Z");
        let mut w = wallet();
        w.configure(AutoRefill { enabled: true, threshold: 500, amount: 2000, disabled_at: None }, 100_000, now)
            .unwrap();
        let inv = InvoiceId::generate();
        w.begin_refill(&inv, now).unwrap();
        let soon = parse("2030-01-02T00:00:00Z");
        let events = w.refill_failed(&inv, usd(2000), RefillKind::Automatic, None, Some(soon), now);
        assert!(matches!(events[0], EventPayload::WalletRefillFailed { auto_refill_disabled: false, .. }));
        assert_eq!(w.refill_in_flight(), Some(&inv), "retried on the schedule: still in flight");
        let events = w.refill_failed(&inv, usd(2000), RefillKind::Automatic, None, None, soon);
        assert!(matches!(events[0], EventPayload::WalletRefillFailed { auto_refill_disabled: true, .. }));
        assert!(w.refill_in_flight().is_none());
        assert!(!w.auto_refill.unwrap().enabled && w.auto_refill.unwrap().disabled_at == Some(soon));
    }

    #[test]
    fn settings_must_make_sense() {
        let now = parse("2030-01-01T00:00:00Z");
        let mut w = wallet();
        let s = |threshold, amount| AutoRefill { enabled: true, threshold, amount, disabled_at: None };
        assert!(w.configure(s(500, 500), 100_000, now).is_err());
        assert!(w.configure(s(-1, 500), 100_000, now).is_err());
        assert!(w.configure(s(0, 100_001), 100_000, now).is_err());
        assert!(w.configure(s(0, 1), 100_000, now).is_ok());
    }
}
