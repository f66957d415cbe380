//! Time: timestamps, and the clock adapters of the clock port ([`crate::ports::clock`],
//! re-exported here). Production reads the system clock; tests and the local product's
//! dev clock move time by hand, so a 30-day dunning cycle runs in milliseconds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

pub type Timestamp = DateTime<Utc>;

pub use crate::ports::clock::Clock;

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now().trunc_subsecs(3)
    }
}

/// A clock that stands still until moved. For tests and simulations.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Mutex::new(start.trunc_subsecs(3)))
    }

    /// A fixed, readable start: 2030-01-15T09:00:00Z.
    pub fn at_default_start() -> Self {
        Self::new(parse("2030-01-15T09:00:00Z"))
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to.trunc_subsecs(3);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wall-clock time plus an offset that only grows: the local product's dev clock, so a
/// demo can jump days ahead while the server keeps running.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn advance(&self, by: TimeDelta) {
        self.offset_ms.fetch_add(by.num_milliseconds().max(0), Ordering::SeqCst);
    }

    pub fn offset(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        SystemClock.now() + self.offset()
    }
}

/// Fixed-width, lexicographically ordered form used inside index sort keys.
/// (`2030-01-25T09:00:00.000Z`; written by hand: index keys are built on every write, and
/// chrono's formatter was a measurable share of a simulated month.)
pub fn sortable(t: Timestamp) -> String {
    use chrono::{Datelike, Timelike};
    let Ok(year) = u32::try_from(t.year()) else { return t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string() };
    if year > 9999 {
        return t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    }
    fn digits(out: &mut String, n: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + ((n / 10u32.pow(place)) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(24);
    digits(&mut out, year, 4);
    for (separator, n, width) in [
        ('-', t.month(), 2),
        ('-', t.day(), 2),
        ('T', t.hour(), 2),
        (':', t.minute(), 2),
        (':', t.second(), 2),
        ('.', t.timestamp_subsec_millis().min(999), 3),
    ] {
        out.push(separator);
        digits(&mut out, n, width);
    }
    out.push('Z');
    out
}

/// Parses RFC 3339; panics on malformed input, so only for literals in code and tests.
pub fn parse(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s).expect("valid RFC 3339 literal").with_timezone(&Utc)
}

/// Parses a duration written as a number and a unit: `30m`, `12h`, `3d`, `2w`.
pub fn parse_duration(s: &str) -> Option<TimeDelta> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    match unit {
        "s" => TimeDelta::try_seconds(n),
        "m" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        "w" => TimeDelta::try_weeks(n),
        _ => None,
    }
}

/// The inverse of [`parse_duration`], choosing the largest whole unit up to days.
pub fn format_duration(d: TimeDelta) -> String {
    let s = d.num_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_timestamps_order_like_the_times_they_name() {
        let a = parse("2030-01-15T09:00:00Z");
        let b = a + TimeDelta::milliseconds(5);
        let c = a + TimeDelta::days(400);
        assert!(sortable(a) < sortable(b));
        assert!(sortable(b) < sortable(c));
        assert_eq!(sortable(a), "2030-01-15T09:00:00.000Z");
    }

    #[test]
    fn the_sortable_form_is_chronos_own() {
        let mut t = parse("1999-12-31T23:59:59.999Z");
        for step in 0..2000 {
            assert_eq!(sortable(t), t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            t += TimeDelta::milliseconds(7_919_123 * step + 1);
        }
    }

    #[test]
    fn durations_round_trip_through_their_short_form() {
        for s in ["30m", "12h", "3d", "14d", "45s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(parse_duration("7d"), Some(TimeDelta::days(7)));
        assert_eq!(parse_duration("7"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("3y"), None);
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_default_start();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(TimeDelta::days(30));
        assert_eq!(clock.now() - t0, TimeDelta::days(30));
    }
}
