//! Money as integer minor units of an ISO 4217 currency.
//!
//! Amounts are never floats: `1050 USD` is ten dollars fifty, `500 JPY` is five hundred
//! yen (JPY has no minor unit), `1500 KWD` is one dinar and five hundred fils.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest amount one invoice may carry, in minor units. Card networks and PSPs cap a
/// single charge at eight digits (Stripe: 99,999,999 of the minor unit).
pub const MAX_AMOUNT: i64 = 99_999_999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a supported three-letter ISO 4217 code, got {0:?}")]
    UnknownCurrency(String),
    #[error("amount must be a whole number of minor units between 1 and {MAX_AMOUNT}, got {0}")]
    OutOfRange(i64),
}

/// A supported ISO 4217 currency. Stored and sent as its upper-case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Currencies Recoup accepts, with the number of digits after the decimal point.
/// Zero- and three-decimal currencies are the ones that break float-and-cents code.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GNF", 0),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MGA", 0),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RON", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("ZAR", 2),
];

impl Currency {
    /// Parses a code in upper or lower case (`"usd"` and `"USD"` are the same currency);
    /// nothing else (`"uSd"`, `" USD"`) is a code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let upper = code.to_ascii_uppercase();
        let one_case = code == upper || code == code.to_ascii_lowercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| one_case && *c == upper)
            .map(|(c, exponent)| {
                let b = c.as_bytes();
                Currency { code: [b[0], b[1], b[2]], exponent: *exponent }
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    pub fn code(&self) -> &str {
        // Codes come from the ASCII table above.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Digits after the decimal point: 0 for JPY, 2 for USD, 3 for KWD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A positive amount in minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, MoneyError> {
        if !(1..=MAX_AMOUNT).contains(&amount) {
            return Err(MoneyError::OutOfRange(amount));
        }
        Ok(Money { amount, currency })
    }

    /// Amount in minor units (cents for USD, yen for JPY).
    pub fn amount(&self) -> i64 {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }
}

/// Human form for emails and logs: `10.50 USD`, `500 JPY`, `1.500 KWD`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = u32::from(self.currency.exponent);
        if exp == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let unit = 10_i64.pow(exp);
        write!(f, "{}.{:0width$} {}", self.amount / unit, self.amount % unit, self.currency, width = exp as usize)
    }
}

/// The symbols people read before an amount, for the currencies that have one everyone
/// knows; the others are written after the number as their code (`1,250.00 SEK`).
const SYMBOLS: &[(&str, &str)] = &[
    ("USD", "$"),
    ("EUR", "€"),
    ("GBP", "£"),
    ("JPY", "¥"),
    ("CNY", "CN¥"),
    ("INR", "₹"),
    ("KRW", "₩"),
    ("AUD", "A$"),
    ("CAD", "CA$"),
    ("NZD", "NZ$"),
    ("HKD", "HK$"),
    ("SGD", "S$"),
    ("MXN", "MX$"),
    ("BRL", "R$"),
    ("ILS", "₪"),
    ("VND", "₫"),
    ("PHP", "₱"),
    ("TWD", "NT$"),
];

impl Money {
    /// The amount as a customer reads it: `$25.00`, `¥500`, `€1,234.50`, `1,250.000 KWD`.
    /// Digits are grouped by thousands; the minor unit follows the currency's exponent.
    pub fn for_people(&self) -> String {
        amount_for_people(self.amount, self.currency)
    }
}

/// A decimal amount as people type it (`25`, `25.5`, `25.50`, `1,234.50`; `500` yen) in
/// minor units of `currency`: `None` unless it is a plain non-negative number with no
/// more decimals than the currency has. No float is involved.
pub fn parse_for_people(text: &str, currency: Currency) -> Option<i64> {
    let text: String = text.trim().chars().filter(|c| *c != ',').collect();
    let exp = u32::from(currency.exponent);
    let (major, minor) = match text.split_once('.') {
        Some((m, f)) => (m, f),
        None => (text.as_str(), ""),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if major.is_empty() || !digits(major) || !digits(minor) || minor.len() > exp as usize || major.len() > 15 {
        return None;
    }
    let unit = 10_i64.pow(exp);
    let minor_units = if minor.is_empty() { 0 } else { minor.parse::<i64>().ok()? * 10_i64.pow(exp - minor.len() as u32) };
    major.parse::<i64>().ok()?.checked_mul(unit)?.checked_add(minor_units)
}

/// [`Money::for_people`] for any amount, zero and negative ones included (a balance).
pub fn amount_for_people(amount: i64, currency: Currency) -> String {
    {
        let exp = u32::from(currency.exponent);
        let unit = 10_i64.pow(exp);
        let (major, minor) = (amount.abs() / unit, amount.abs() % unit);
        let digits = major.to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(d);
        }
        let number = if exp == 0 { grouped } else { format!("{grouped}.{minor:0width$}", width = exp as usize) };
        let sign = if amount < 0 { "-" } else { "" };
        match SYMBOLS.iter().find(|(code, _)| *code == currency.code()) {
            Some((_, symbol)) => format!("{sign}{symbol}{number}"),
            None => format!("{sign}{number} {}", currency.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_people_type_become_minor_units_without_floats() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(parse_for_people("25", usd), Some(2500));
        assert_eq!(parse_for_people(" 25.5 ", usd), Some(2550));
        assert_eq!(parse_for_people("1,234.56", usd), Some(123_456));
        assert_eq!(parse_for_people("0.1", usd), Some(10));
        assert_eq!(parse_for_people("500", jpy), Some(500));
        for bad in ["", "-5", "2.555", "1e3", "abc", ".5", "5.", "99999999999999999"] {
            assert_eq!(parse_for_people(bad, usd), if bad == "5." { Some(500) } else { None }, "{bad:?}");
        }
        assert_eq!(parse_for_people("5.5", jpy), None, "yen has no decimals");
        assert_eq!(amount_for_people(0, usd), "$0.00");
    }

    #[test]
    fn amounts_for_people_follow_the_currency() {
        let m = |amount, code| Money::new(amount, Currency::parse(code).unwrap()).unwrap().for_people();
        assert_eq!(m(500, "JPY"), "¥500");
        assert_eq!(m(2500, "USD"), "$25.00");
        assert_eq!(m(123_450, "EUR"), "€1,234.50");
        assert_eq!(m(99_999_999, "USD"), "$999,999.99");
        assert_eq!(m(1_250_000, "KWD"), "1,250.000 KWD");
        assert_eq!(m(125_000, "SEK"), "1,250.00 SEK");
        assert_eq!(m(5, "GBP"), "£0.05");
    }

    #[test]
    fn currency_codes_are_case_insensitive_and_normalised_to_upper_case() {
        let c = Currency::parse("usd").unwrap();
        assert_eq!(c.code(), "USD");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"USD\"");
    }

    #[test]
    fn unknown_currencies_are_refused() {
        assert!(matches!(Currency::parse("XYZ"), Err(MoneyError::UnknownCurrency(_))));
        assert!(Currency::parse("").is_err());
        assert_eq!(Currency::parse("usd").unwrap(), Currency::parse("USD").unwrap());
        assert!(Currency::parse("uSd").is_err() && Currency::parse(" USD").is_err());
    }

    #[test]
    fn zero_decimal_currencies_display_without_a_fraction() {
        let jpy = Money::new(500, Currency::parse("JPY").unwrap()).unwrap();
        assert_eq!(jpy.to_string(), "500 JPY");
        let usd = Money::new(1050, Currency::parse("USD").unwrap()).unwrap();
        assert_eq!(usd.to_string(), "10.50 USD");
        let kwd = Money::new(1500, Currency::parse("KWD").unwrap()).unwrap();
        assert_eq!(kwd.to_string(), "1.500 KWD");
    }

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        let usd = Currency::parse("USD").unwrap();
        assert!(Money::new(0, usd).is_err());
        assert!(Money::new(-5, usd).is_err());
        assert!(Money::new(MAX_AMOUNT + 1, usd).is_err());
        assert!(Money::new(MAX_AMOUNT, usd).is_ok());
    }

    #[test]
    fn fractional_amounts_do_not_deserialize() {
        let err = serde_json::from_str::<Money>(r#"{"amount": 10.5, "currency": "USD"}"#);
        assert!(err.is_err());
    }
}
