//! The per-card attempt ledger: every charge sent for a card (by fingerprint), whatever it
//! was for — an invoice, a manual re-processing, later a wallet refill — so the networks'
//! reattempt limits hold across all of them.
//!
//! The ledger is also how removal knows a card has a charge in flight: an entry stays
//! `pending` until its outcome is recorded.
//!
//! It is one item per card, so it stays small however often the card is charged: a settled
//! entry is kept only while a network window can still count it (reattempts, 30 days at
//! most, and only on networks that limit them). The networks' own caps bound how many that
//! can be, so the item never nears the store's size limit.
//!
//! And it holds the card's block: a decline that says the card itself will never be
//! approved (lost, stolen, pick-up, Visa category 1, Mastercard advice 01/03/21, revoked
//! authorization) stops every charge on that card, for every customer who saved it, until
//! the provider reports it changed (a new expiry; a new number is a new card).

use serde::{Deserialize, Serialize};

use crate::domain::card::{CardExpiry, Fingerprint, Network};
use crate::domain::decline::{ErrorType, HardReason};
use crate::domain::policy::{LONGEST_NETWORK_WINDOW, NetworkRule, network_limits};
use crate::ids::{PaymentMethodId, TransactionId};
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

/// A never-retry decline that blocks the card (by fingerprint) for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardBlock {
    pub at: Timestamp,
    pub error_type: ErrorType,
    pub reason: HardReason,
    /// The expiry the card had when it was declined; the block holds while the card still
    /// has it. `None` when it was not known: then only a new number lifts it.
    pub expiry: Option<CardExpiry>,
}

impl CardBlock {
    /// Whether the block applies to the card as it is now.
    pub fn applies_to(&self, expiry: CardExpiry) -> bool {
        self.expiry.is_none_or(|e| e == expiry)
    }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block: Option<CardBlock>,
}

impl CardLedger {
    pub fn new(fingerprint: Fingerprint, network: Network) -> Self {
        CardLedger { fingerprint, network, entries: Vec::new(), retry_not_before: None, block: None }
    }

    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    pub fn retry_not_before(&self) -> Option<Timestamp> {
        self.retry_not_before
    }

    /// The block on this card, if it applies to the card with this expiry.
    pub fn block_for(&self, expiry: CardExpiry) -> Option<&CardBlock> {
        self.block.as_ref().filter(|b| b.applies_to(expiry))
    }

    /// Blocks the card after a never-retry decline. A later block replaces an earlier one.
    pub fn block(&mut self, block: CardBlock) {
        self.block = Some(block);
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
        if outcome != LedgerOutcome::Pending {
            self.prune(self.entries.iter().map(|e| e.at).max().unwrap_or_default());
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

    /// Drops settled entries no network limit can still count: first attempts, reattempts
    /// on a network without limits, and reattempts older than the longest window.
    fn prune(&mut self, now: Timestamp) {
        let horizon = now - LONGEST_NETWORK_WINDOW;
        let limited = !network_limits(self.network).is_empty();
        self.entries.retain(|e| e.outcome == LedgerOutcome::Pending || (limited && e.reattempt && e.at > horizon));
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

    /// A card charged thousands of times in a month keeps a small ledger item: only the
    /// reattempts a network can count stay, and the caps bound those.
    #[test]
    fn the_ledger_stays_small_however_often_the_card_is_charged() {
        let t0 = parse("2030-01-01T00:00:00Z");
        for network in [Network::Visa, Network::Mastercard, Network::Other] {
            let mut l = ledger(network);
            for i in 0..5_000 {
                let at = t0 + TimeDelta::minutes(8 * i);
                let reattempt = i % 2 == 1 && l.check(at, true).is_ok();
                let mut e = entry(at, reattempt);
                e.outcome = LedgerOutcome::Pending;
                let id = e.transaction_id.clone();
                l.record(e);
                let outcome = if i % 3 == 0 { LedgerOutcome::Approved } else { LedgerOutcome::Declined };
                l.settle(&id, outcome, None);
            }
            let max = network_limits(network).iter().map(|l| l.max_reattempts).max().unwrap_or(0);
            assert!(l.entries().len() <= max, "{network:?}: {} entries kept", l.entries().len());
            let size = serde_json::to_vec(&l).unwrap().len();
            assert!(size < 16 * 1024, "{network:?}: ledger item is {size} bytes");
        }
    }

    #[test]
    fn a_block_holds_for_the_same_expiry_and_lifts_for_a_new_one() {
        let t0 = parse("2030-01-01T00:00:00Z");
        let mut l = ledger(Network::Visa);
        let exp = CardExpiry::new(12, 2031).unwrap();
        assert!(l.block_for(exp).is_none());
        l.block(CardBlock {
            at: t0,
            error_type: ErrorType::PaymentMethodDeclined,
            reason: HardReason::LostOrStolen,
            expiry: Some(exp),
        });
        assert_eq!(l.block_for(exp).map(|b| b.reason), Some(HardReason::LostOrStolen));
        assert!(l.block_for(CardExpiry::new(12, 2034).unwrap()).is_none(), "the card updater's new expiry lifts it");
        let round = serde_json::from_value::<CardLedger>(serde_json::to_value(&l).unwrap()).unwrap();
        assert_eq!(round, l);
    }
}
