//! The dunning policy as data: when failed payments are retried, and the card networks'
//! excessive-retry limits. See `docs/retry-policy.md` for why the defaults are what they
//! are.

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;

use crate::domain::card::Network;
use crate::time::{Timestamp, format_duration, parse_duration};

/// The default schedule: retries 1, 3, 5, 7, 10 and 14 days after the first failure.
pub const DEFAULT_SCHEDULE: &str = "1d,3d,5d,7d,10d,14d";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("retry schedule entry {0:?} is not a duration like 12h or 3d")]
    BadEntry(String),
    #[error("retry schedule offsets must be positive and strictly increasing")]
    NotIncreasing,
    #[error("a retry schedule holds 1 to 20 retries within 60 days")]
    OutOfBounds,
}

/// Retry times as offsets from the first failed attempt of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    offsets: Vec<TimeDelta>,
}

impl RetrySchedule {
    pub fn new(offsets: Vec<TimeDelta>) -> Result<Self, PolicyError> {
        if offsets.is_empty() || offsets.len() > 20 {
            return Err(PolicyError::OutOfBounds);
        }
        if offsets[0] <= TimeDelta::zero() || offsets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PolicyError::NotIncreasing);
        }
        if *offsets.last().unwrap_or(&TimeDelta::zero()) > TimeDelta::days(60) {
            return Err(PolicyError::OutOfBounds);
        }
        Ok(RetrySchedule { offsets })
    }

    pub fn offsets(&self) -> &[TimeDelta] {
        &self.offsets
    }

    /// Every attempt an invoice may get automatically: the first plus one per retry.
    pub fn max_attempts(&self) -> usize {
        self.offsets.len() + 1
    }

    /// The earliest slot strictly after `after` and not before `not_before`. Slots that
    /// passed while nothing ran are skipped, never made up in a burst.
    pub fn next_slot(
        &self,
        first_failed_at: Timestamp,
        after: Timestamp,
        not_before: Option<Timestamp>,
    ) -> Option<Timestamp> {
        self.offsets
            .iter()
            .map(|o| first_failed_at + *o)
            .find(|slot| *slot > after && not_before.is_none_or(|nb| *slot >= nb))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_SCHEDULE.parse().expect("the default schedule is valid")
    }
}

impl FromStr for RetrySchedule {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let offsets = s
            .split(',')
            .map(|part| parse_duration(part).ok_or_else(|| PolicyError::BadEntry(part.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        RetrySchedule::new(offsets)
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.offsets.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Everything the engine needs to decide when to try again.
#[derive(Debug, Clone)]
pub struct DunningPolicy {
    pub schedule: RetrySchedule,
    /// How long an attempt may stay without an answer before it is reconciled with the
    /// PSP by its idempotency key.
    pub reconcile_after: TimeDelta,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        DunningPolicy { schedule: RetrySchedule::default(), reconcile_after: TimeDelta::minutes(10) }
    }
}

/// A published card-network limit on retrying declined payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimit {
    pub rule: NetworkRule,
    pub window: TimeDelta,
    pub max_reattempts: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkRule {
    /// Visa: at most 15 reattempts of a card in 30 days.
    VisaReattempts30Days,
    /// Mastercard: at most 10 reattempts of a card in 24 hours.
    MastercardReattempts24Hours,
    /// Mastercard: at most 35 reattempts of a card in 30 days.
    MastercardReattempts30Days,
    /// Mastercard Merchant Advice Code 24-30: wait before retrying.
    MastercardAdviceDelay,
}

impl NetworkRule {
    pub fn describe(self) -> &'static str {
        match self {
            NetworkRule::VisaReattempts30Days => "Visa allows at most 15 reattempts of a card in 30 days",
            NetworkRule::MastercardReattempts24Hours => "Mastercard allows at most 10 reattempts of a card in 24 hours",
            NetworkRule::MastercardReattempts30Days => "Mastercard allows at most 35 reattempts of a card in 30 days",
            NetworkRule::MastercardAdviceDelay => "the issuer's Mastercard advice code asks to wait before retrying",
        }
    }
}

const VISA_LIMITS: [NetworkLimit; 1] =
    [NetworkLimit { rule: NetworkRule::VisaReattempts30Days, window: TimeDelta::days(30), max_reattempts: 15 }];

const MASTERCARD_LIMITS: [NetworkLimit; 2] = [
    NetworkLimit { rule: NetworkRule::MastercardReattempts24Hours, window: TimeDelta::hours(24), max_reattempts: 10 },
    NetworkLimit { rule: NetworkRule::MastercardReattempts30Days, window: TimeDelta::days(30), max_reattempts: 35 },
];

pub fn network_limits(network: Network) -> &'static [NetworkLimit] {
    match network {
        Network::Visa => &VISA_LIMITS,
        Network::Mastercard => &MASTERCARD_LIMITS,
        Network::Other => &[],
    }
}

/// The longest window any network counts reattempts over.
pub const LONGEST_NETWORK_WINDOW: TimeDelta = TimeDelta::days(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    #[test]
    fn the_default_schedule_is_seven_attempts_in_fourteen_days() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 7);
        assert_eq!(*s.offsets().last().unwrap(), TimeDelta::days(14));
        assert_eq!(s.to_string(), DEFAULT_SCHEDULE);
    }

    #[test]
    fn schedules_must_be_increasing_and_bounded() {
        assert_eq!("3d,1d".parse::<RetrySchedule>(), Err(PolicyError::NotIncreasing));
        assert_eq!("1d,1d".parse::<RetrySchedule>(), Err(PolicyError::NotIncreasing));
        assert_eq!("90d".parse::<RetrySchedule>(), Err(PolicyError::OutOfBounds));
        assert!(matches!("1x".parse::<RetrySchedule>(), Err(PolicyError::BadEntry(_))));
        assert!("12h,2d".parse::<RetrySchedule>().is_ok());
    }

    #[test]
    fn the_next_slot_skips_slots_that_passed_instead_of_bursting() {
        let s = RetrySchedule::default();
        let t0 = parse("2030-01-01T00:00:00Z");
        assert_eq!(s.next_slot(t0, t0, None), Some(t0 + TimeDelta::days(1)));
        // The system was down from day 2 to day 6: the next slot is day 7.
        assert_eq!(s.next_slot(t0, t0 + TimeDelta::days(6), None), Some(t0 + TimeDelta::days(7)));
        assert_eq!(s.next_slot(t0, t0 + TimeDelta::days(14), None), None);
    }

    #[test]
    fn the_next_slot_respects_an_earliest_time() {
        let s = RetrySchedule::default();
        let t0 = parse("2030-01-01T00:00:00Z");
        let nb = t0 + TimeDelta::days(4);
        assert_eq!(s.next_slot(t0, t0, Some(nb)), Some(t0 + TimeDelta::days(5)));
        assert_eq!(s.next_slot(t0, t0, Some(t0 + TimeDelta::days(20))), None);
    }
}
