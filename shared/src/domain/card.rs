//! Facts about a card that Recoup may hold (brand, last four digits, expiry, the PSP's
//! fingerprint) and the guard that keeps full card numbers out of the system.

use std::fmt;

use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// How the card is funded, as the issuer reports it through the PSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Funding {
    Credit,
    Debit,
    Prepaid,
    Unknown,
}

impl Funding {
    /// Stripe's `card.funding`; anything else is `Unknown`.
    pub fn parse(s: &str) -> Funding {
        match s.to_ascii_lowercase().as_str() {
            "credit" => Funding::Credit,
            "debit" => Funding::Debit,
            "prepaid" => Funding::Prepaid,
            _ => Funding::Unknown,
        }
    }
}

/// An ISO 3166-1 alpha-2 country code (the card's issuing country), upper case. Anything
/// else the PSP reports is dropped rather than stored.
pub fn country_code(s: &str) -> Option<String> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())).then(|| s.to_ascii_uppercase())
}

/// Card brand as the PSP reports it. The brand decides which network's retry rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Diners,
    Jcb,
    Unionpay,
    Unknown,
}

impl CardBrand {
    /// A brand as payment providers spell it (Stripe's `card.brand`); anything else is
    /// `Unknown`.
    pub fn parse(s: &str) -> CardBrand {
        match s.to_ascii_lowercase().as_str() {
            "visa" => CardBrand::Visa,
            "mastercard" => CardBrand::Mastercard,
            "amex" | "american express" => CardBrand::Amex,
            "discover" => CardBrand::Discover,
            "diners" | "diners club" => CardBrand::Diners,
            "jcb" => CardBrand::Jcb,
            "unionpay" => CardBrand::Unionpay,
            _ => CardBrand::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "visa",
            CardBrand::Mastercard => "mastercard",
            CardBrand::Amex => "amex",
            CardBrand::Discover => "discover",
            CardBrand::Diners => "diners",
            CardBrand::Jcb => "jcb",
            CardBrand::Unionpay => "unionpay",
            CardBrand::Unknown => "unknown",
        }
    }

    /// The card network whose rules govern retries on this card.
    pub fn network(self) -> Network {
        match self {
            CardBrand::Visa => Network::Visa,
            CardBrand::Mastercard => Network::Mastercard,
            CardBrand::Amex
            | CardBrand::Discover
            | CardBrand::Diners
            | CardBrand::Jcb
            | CardBrand::Unionpay
            | CardBrand::Unknown => Network::Other,
        }
    }
}

/// The networks with published excessive-retry rules, and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Visa,
    Mastercard,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("card expiry must be a month 1-12 and a four-digit year")]
pub struct InvalidExpiry;

/// The month and year printed on the card. A card is good through the last moment of its
/// expiry month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardExpiry {
    month: u8,
    year: u16,
}

impl CardExpiry {
    pub fn new(month: u8, year: u16) -> Result<Self, InvalidExpiry> {
        if (1..=12).contains(&month) && (2000..=2199).contains(&year) {
            Ok(CardExpiry { month, year })
        } else {
            Err(InvalidExpiry)
        }
    }

    pub fn month(&self) -> u8 {
        self.month
    }

    pub fn year(&self) -> u16 {
        self.year
    }

    /// The first instant the card is no longer valid: the start of the following month.
    pub fn lapses_at(&self) -> Timestamp {
        let (y, m) = if self.month == 12 {
            (i32::from(self.year) + 1, 1)
        } else {
            (i32::from(self.year), u32::from(self.month) + 1)
        };
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.lapses_at()
    }

    /// The expiry `months` months after `now`'s month, for default test cards.
    pub fn months_after(now: Timestamp, months: u32) -> Self {
        let total = now.year() as u32 * 12 + now.month0() + months;
        CardExpiry { month: (total % 12 + 1) as u8, year: (total / 12) as u16 }
    }
}

impl fmt::Display for CardExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{}", self.month, self.year)
    }
}

/// The PSP's stable identifier of a card number: the same card registered twice, or by two
/// customers, has one fingerprint. Network retry limits are counted per fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn new(s: impl Into<String>) -> Self {
        Fingerprint(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// True when `text` holds something that looks like a full card number: 13 to 19 digits,
/// written together or in groups joined by single spaces or dashes, starting with a
/// card-network digit (2-6) and passing the Luhn check. Used to refuse such input, never
/// to log it.
pub fn contains_card_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // One run: digit groups joined by single separators.
        let mut groups: Vec<&[u8]> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(&bytes[start..j]);
            let joined = j + 1 < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'-') && bytes[j + 1].is_ascii_digit();
            if !joined {
                break;
            }
            j += 1;
        }
        // Any sequence of whole groups may be the number (a card followed by a CVC, say).
        for first in 0..groups.len() {
            let mut digits: Vec<u8> = Vec::with_capacity(19);
            for group in &groups[first..] {
                digits.extend_from_slice(group);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && (b'2'..=b'6').contains(&digits[0]) && luhn_valid(&digits) {
                    return true;
                }
            }
        }
        i = j.max(i + 1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    #[test]
    fn stripe_test_card_numbers_are_detected_in_any_usual_spelling() {
        for s in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "card: 4000000000000002.",
            "{\"number\":\"5555555555554444\"}",
            "378282246310005",
            "{\"n\": 4242424242424242}",
            "4242 4242 4242 4242 123",
        ] {
            assert!(contains_card_number(s), "{s}");
        }
    }

    #[test]
    fn ordinary_numbers_are_not_mistaken_for_card_numbers() {
        for s in [
            "amount 99999999",
            "4242424242424241", // fails Luhn
            "1234567890123452", // Luhn-valid but no card network starts with 1
            "12345",
            "2030-01-15T09:00:00.000Z",
            "pm_card_visa",
        ] {
            assert!(!contains_card_number(s), "{s}");
        }
    }

    #[test]
    fn a_card_is_valid_through_the_end_of_its_expiry_month() {
        let exp = CardExpiry::new(2, 2030).unwrap();
        assert!(!exp.is_expired(parse("2030-02-28T23:59:59Z")));
        assert!(exp.is_expired(parse("2030-03-01T00:00:00Z")));
        let dec = CardExpiry::new(12, 2030).unwrap();
        assert_eq!(dec.lapses_at(), parse("2031-01-01T00:00:00Z"));
    }

    #[test]
    fn invalid_expiries_are_refused() {
        assert!(CardExpiry::new(0, 2030).is_err());
        assert!(CardExpiry::new(13, 2030).is_err());
        assert!(CardExpiry::new(1, 30).is_err());
    }

    #[test]
    fn months_after_wraps_years() {
        let e = CardExpiry::months_after(parse("2030-11-15T00:00:00Z"), 3);
        assert_eq!((e.month(), e.year()), (2, 2031));
    }
}
