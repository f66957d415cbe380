//! Typed identifiers: a short prefix that says what the id names, then 26 characters of
//! Crockford base32 from a UUIDv7, so ids sort by creation time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// 128 bits as 26 base32 characters (the first carries only 3 bits).
fn encode_u128(mut v: u128) -> String {
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

fn valid_body(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| CROCKFORD.contains(&b))
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, encode_u128(uuid::Uuid::now_v7().as_u128())))
            }

            /// Accepts only ids of this kind; anything else is `None` (callers answer 404).
            pub fn parse(s: &str) -> Option<Self> {
                s.strip_prefix($prefix).filter(|b| valid_body(b)).map(|_| $name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!("not a {} id: {s:?}", stringify!($name)))
                })
            }
        }
    };
}

typed_id!(
    /// A customer of the merchant (the payer).
    CustomerId, "cus_");
typed_id!(
    /// A saved card; the PSP's token is kept beside it, never used as our id.
    PaymentMethodId, "pmt_");
typed_id!(InvoiceId, "in_");
typed_id!(
    /// One attempt to collect an invoice.
    TransactionId, "txn_");
typed_id!(SubscriptionId, "sub_");
typed_id!(EventId, "evt_");
typed_id!(
    /// A merchant's webhook endpoint.
    WebhookEndpointId, "we_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_carry_their_prefix() {
        let id = InvoiceId::generate();
        assert!(id.as_str().starts_with("in_"));
        assert_eq!(InvoiceId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_of_another_kind_or_malformed_are_refused() {
        let cus = CustomerId::generate();
        assert_eq!(InvoiceId::parse(cus.as_str()), None);
        assert_eq!(InvoiceId::parse("in_../../etc"), None);
        assert_eq!(InvoiceId::parse("in_"), None);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::generate();
        assert!(a < b);
    }
}
