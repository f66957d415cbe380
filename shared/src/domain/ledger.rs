//! The per-card attempt ledger: every charge sent for a card (by fingerprint), whatever it
//! was for — an invoice, a manual re-processing, later a wallet refill — so the networks'
//! reattempt limits hold across all of them.
//!
//! The ledger is also how removal knows a card has a charge in flight: an entry stays
//! `pending` until its outcome is recorded.

use serde::{Deserialize, Serialize};

use crate::card::{Fingerprint, Network};
use crate::ids::{PaymentMethodId, TransactionId};
use crate::policy::{LONGEST_NETWORK_WINDOW, NetworkRule, network_limits};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOutcome {
    Pending,
    Approved,
    Declined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: Timestamp,
    pub transaction_id: TransactionId,
    /// What the charge was for: an invoice id today.
    pub payment: String,
    pub payment_method_id: PaymentMethodId,
    /// A retry of a payment already declined on this card. Only these count towards the
    /// networks' limits.
    pub reattempt: bool,
    pub outcome: LedgerOutcome,
}

/// A network rule that forbids an attempt now, and when it will allow one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkBlock {
    pub rule: NetworkRule,
    pub until: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardLedger {
    pub fingerprint: Fingerprint,
    pub network: Network,
    entries: Vec<LedgerEntry>,
    /// Earliest retry the issuer allows (Mastercard advice codes 24-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_not_before: Option<Timestamp>,
}

impl CardLedger {
    pub fn new(fingerprint: Fingerprint, network: Network) -> Self {
        CardLedger { fingerprint, network, entries: Vec::new(), retry_not_before: None }
    }

    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    pub fn retry_not_before(&self) -> Option<Timestamp> {
        self.retry_not_before
    }

    /// Whether the networks allow an attempt at `now`. First attempts of a payment are
    /// never limited; reattempts are.
    pub fn check(&self, now: Timestamp, reattempt: bool) -> Result<(), NetworkBlock> {
        if !reattempt {
            return Ok(());
        }
        if let Some(nb) = self.retry_not_before
            && nb > now
        {
            return Err(NetworkBlock { rule: NetworkRule::MastercardAdviceDelay, until: nb });
        }
        for limit in network_limits(self.network) {
            let since = now - limit.window;
            let mut times: Vec<Timestamp> =
                self.entries.iter().filter(|e| e.reattempt && e.at > since).map(|e| e.at).collect();
            if times.len() >= limit.max_reattempts {
                times.sort();
                // The window frees a place when the oldest counted reattempts age out.
                let until = times[times.len() - limit.max_reattempts] + limit.window;
                return Err(NetworkBlock { rule: limit.rule, until });
            }
        }
        Ok(())
    }

    /// Reattempts counted by the strictest window now: for figures and checks.
    pub fn reattempts_within(&self, now: Timestamp, window: chrono::TimeDelta) -> usize {
        self.entries.iter().filter(|e| e.reattempt && e.at > now - window).count()
    }

    pub fn record(&mut self, entry: LedgerEntry) {
        self.prune(entry.at);
        self.entries.push(entry);
    }

    /// Records how a pending attempt ended, and any wait the issuer asked for.
    pub fn settle(
        &mut self,
        transaction_id: &TransactionId,
        outcome: LedgerOutcome,
        retry_not_before: Option<Timestamp>,
    ) {
        if let Some(e) = self.entries.iter_mut().find(|e| &e.transaction_id == transaction_id) {
            e.outcome = outcome;
        }
        match outcome {
            LedgerOutcome::Approved => self.retry_not_before = None,
            LedgerOutcome::Declined => {
                if let Some(nb) = retry_not_before {
                    self.retry_not_before = Some(self.retry_not_before.map_or(nb, |cur| cur.max(nb)));
                }
            }
            LedgerOutcome::Pending => {}
        }
    }

    pub fn has_pending_for(&self, payment_method_id: &PaymentMethodId) -> bool {
        self.entries.iter().any(|e| &e.payment_method_id == payment_method_id && e.outcome == LedgerOutcome::Pending)
    }

    /// Drops settled entries no network window can still count.
    fn prune(&mut self, now: Timestamp) {
        let horizon = now - LONGEST_NETWORK_WINDOW;
        self.entries.retain(|e| e.outcome == LedgerOutcome::Pending || e.at > horizon);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::time::parse;

    fn entry(at: Timestamp, reattempt: bool) -> LedgerEntry {
        LedgerEntry {
            at,
            transaction_id: TransactionId::generate(),
            payment: "in_x".into(),
            payment_method_id: PaymentMethodId::generate(),
            reattempt,
            outcome: LedgerOutcome::Declined,
        }
    }

    fn ledger(network: Network) -> CardLedger {
        CardLedger::new(Fingerprint::new("fp"), network)
    }

    #[test]
    fn visa_allows_fifteen_reattempts_in_thirty_days_and_says_when_the_sixteenth_may_go() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Visa);
        for i in 0..15 {
            assert!(l.check(t0 + TimeDelta::hours(i), true).is_ok(), "reattempt {i}");
            l.record(entry(t0 + TimeDelta::hours(i), true));
        }
        let now = t0 + TimeDelta::days(2);
        let block = l.check(now, true).unwrap_err();
        assert_eq!(block.rule, NetworkRule::VisaReattempts30Days);
        assert_eq!(block.until, t0 + TimeDelta::days(30));
        assert!(l.check(block.until, true).is_ok());
    }

    #[test]
    fn first_attempts_are_never_limited() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Visa);
        for i in 0..40 {
            l.record(entry(t0 + TimeDelta::minutes(i), true));
        }
        assert!(l.check(t0 + TimeDelta::hours(1), false).is_ok());
    }

    #[test]
    fn mastercard_allows_ten_reattempts_a_day_and_thirty_five_a_month() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Mastercard);
        for i in 0..10 {
            l.record(entry(t0 + TimeDelta::minutes(i), true));
        }
        let block = l.check(t0 + TimeDelta::hours(1), true).unwrap_err();
        assert_eq!(block.rule, NetworkRule::MastercardReattempts24Hours);
        assert_eq!(block.until, t0 + TimeDelta::hours(24));

        let mut l = ledger(Network::Mastercard);
        for day in 0..35 {
            l.record(entry(t0 + TimeDelta::hours(20 * day), true));
        }
        let now = t0 + TimeDelta::hours(20 * 35);
        let block = l.check(now, true).unwrap_err();
        assert_eq!(block.rule, NetworkRule::MastercardReattempts30Days);
    }

    #[test]
    fn other_networks_have_no_published_limit() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Other);
        for i in 0..50 {
            l.record(entry(t0 + TimeDelta::minutes(i), true));
        }
        assert!(l.check(t0 + TimeDelta::hours(1), true).is_ok());
    }

    #[test]
    fn an_advice_delay_holds_reattempts_until_it_passes_and_an_approval_clears_it() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Mastercard);
        let e = entry(t0, false);
        let id = e.transaction_id.clone();
        l.record(e);
        l.settle(&id, LedgerOutcome::Declined, Some(t0 + TimeDelta::hours(1)));
        let block = l.check(t0 + TimeDelta::minutes(30), true).unwrap_err();
        assert_eq!(block.rule, NetworkRule::MastercardAdviceDelay);
        assert!(l.check(t0 + TimeDelta::hours(1), true).is_ok());
        l.settle(&id, LedgerOutcome::Approved, None);
        assert_eq!(l.retry_not_before(), None);
    }

    #[test]
    fn pending_entries_mark_the_card_busy_and_survive_pruning() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Visa);
        let mut e = entry(t0, false);
        e.outcome = LedgerOutcome::Pending;
        let pm = e.payment_method_id.clone();
        l.record(e);
        l.record(entry(t0 + TimeDelta::days(45), false));
        assert!(l.has_pending_for(&pm));
        assert_eq!(l.entries().len(), 2);
    }
}
