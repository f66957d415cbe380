//! Bodies stored deflated on DynamoDB when that saves write units.
//!
//! DynamoDB bills a write by the kilobyte of the whole item (attribute names, keys, index
//! keys and body), twice inside a transaction. An invoice carries its attempts and each
//! attempt its card snapshot, so from its first attempt the item passes one kilobyte and
//! every claim and settle pays for two, or three. Its JSON repeats field names and the card
//! snapshot, and deflates to about half.
//!
//! The rule: an item whose body as a map would take it past one write unit is stored with
//! its body as raw DEFLATE of its JSON text (the binary attribute `deflated`) when that
//! makes the item cost fewer write units. Every other item keeps its body as a native map
//! (`data`), readable in the console. Reads take either, so items written before the rule
//! read as they were. The metered store applies the same rule to estimate units.

use super::{Item, StoreError};

/// DynamoDB's write unit.
pub const WRITE_UNIT_BYTES: usize = 1024;
/// The binary attribute holding a deflated body.
pub const DEFLATED: &str = "deflated";
/// miniz's default level: within a few bytes of its best on bodies this small.
const LEVEL: u8 = 6;
/// No body inflates past DynamoDB's item limit; a larger one is refused as corrupt.
const MAX_INFLATED_BYTES: usize = 400 * 1024;

/// An item's body as DynamoDB stores it.
#[derive(Debug)]
pub enum StoredBody<'a> {
    /// A native map, `data`.
    Map(std::borrow::Cow<'a, serde_json::Value>),
    /// Raw DEFLATE of the body's JSON text, `deflated`.
    Deflated(Vec<u8>),
}

/// How the item's body is stored: its JSON is built once, whichever form it takes.
pub fn stored_body(item: &Item) -> Result<StoredBody<'_>, StoreError> {
    let as_map = item.approximate_size();
    let json = item.body.json()?;
    if as_map <= WRITE_UNIT_BYTES {
        return Ok(StoredBody::Map(json));
    }
    Ok(match deflate_if_cheaper(item, &json, as_map)? {
        Some((deflated, _)) => StoredBody::Deflated(deflated),
        None => StoredBody::Map(json),
    })
}

/// A deflated body back as JSON.
pub fn inflate(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(bytes, MAX_INFLATED_BYTES)
        .map_err(|e| StoreError::Corrupt(format!("a deflated body that does not inflate: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("a deflated body that is not JSON: {e}")))
}

/// Approximate size in bytes of the item as DynamoDB stores it (deflated or not). An item
/// within one unit is sized without building its JSON.
pub fn stored_size(item: &Item) -> Result<usize, StoreError> {
    let as_map = item.approximate_size();
    if as_map <= WRITE_UNIT_BYTES {
        return Ok(as_map);
    }
    let json = item.body.json()?;
    Ok(deflate_if_cheaper(item, &json, as_map)?.map_or(as_map, |(_, size)| size))
}

/// The body deflated and the item's size so stored, when that costs fewer write units
/// than `as_map` bytes.
fn deflate_if_cheaper(
    item: &Item,
    json: &serde_json::Value,
    as_map: usize,
) -> Result<Option<(Vec<u8>, usize)>, StoreError> {
    let text =
        serde_json::to_vec(json).map_err(|e| StoreError::Invalid(format!("a body that does not serialize: {e}")))?;
    let deflated = miniz_oxide::deflate::compress_to_vec(&text, LEVEL);
    let as_deflated = item.approximate_envelope_size() + DEFLATED.len() + deflated.len();
    Ok((write_units(as_deflated) < write_units(as_map)).then_some((deflated, as_deflated)))
}

fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IndexKey, IndexKeys, Key};

    fn item(body: serde_json::Value) -> Item {
        Item {
            key: Key::new("INV#in_01m990hcafew8r21t29nsvbfd3", "INVOICE"),
            entity: "invoice".into(),
            version: 3,
            indexes: IndexKeys::default().with(
                crate::store::Index::Gsi1,
                Some(IndexKey::new(
                    "CUS#cus_01m990hca7eqe968psewsk3rp1#INV",
                    "20300115T090000Z#in_01m990hcafew8r21t29nsvbfd3",
                )),
            ),
            expires_at: None,
            body: body.into(),
        }
    }

    /// An invoice-like body with `attempts` attempts on one card.
    fn with_attempts(attempts: usize) -> serde_json::Value {
        let attempt = |n: usize| {
            serde_json::json!({
                "card": {"brand": "visa", "expiry": {"month": 1, "year": 2032}, "fingerprint": "fp_e05256d85a4a3c9d",
                         "last4": "4242", "payment_method_id": "pmt_01m990hca8e0vvbzxpf7d81av3",
                         "psp_token": "pm_1QFhKz2eZvKYlo2CWm8xPq3T"},
                "created_at": "2030-01-15T09:00:00Z", "decline": null, "id": format!("txn_01m990hcafew8r21t29r3fkj{n:02}"),
                "idempotency_key": format!("in_01m990hcafew8r21t29nsvbfd3-attempt-{n}"), "number": n,
                "psp_charge_id": null, "reattempt": n > 1, "retry_class": null, "sent_to_psp": true,
                "settled_at": null, "status": "pending", "trigger": "initial"
            })
        };
        serde_json::json!({
            "amount": {"amount": 1000, "currency": "USD"}, "customer_id": "cus_01m990hca7eqe968psewsk3rp1",
            "description": "Pro plan", "status": "open", "transactions": (1..=attempts).map(attempt).collect::<Vec<_>>()
        })
    }

    #[test]
    fn an_item_within_one_write_unit_keeps_its_body_as_a_map() {
        let small = item(with_attempts(0));
        assert!(small.approximate_size() <= WRITE_UNIT_BYTES);
        assert!(matches!(stored_body(&small).unwrap(), StoredBody::Map(_)));
        assert_eq!(stored_size(&small).unwrap(), small.approximate_size());
    }

    #[test]
    fn a_body_past_one_write_unit_is_deflated_when_that_saves_units_and_reads_back_whole() {
        for attempts in 2..=4 {
            let big = item(with_attempts(attempts));
            assert!(big.approximate_size() > WRITE_UNIT_BYTES, "{attempts} attempts");
            let StoredBody::Deflated(deflated) = stored_body(&big).unwrap() else { panic!("deflating saves a unit") };
            let stored = stored_size(&big).unwrap();
            assert!(
                write_units(stored) < write_units(big.approximate_size()),
                "{attempts} attempts: {stored} bytes stored, {} as a map",
                big.approximate_size()
            );
            assert_eq!(inflate(&deflated).unwrap(), with_attempts(attempts));
        }
        // Two attempts on one card fit one unit deflated, keys and all.
        assert!(stored_size(&item(with_attempts(2))).unwrap() <= WRITE_UNIT_BYTES);
    }

    #[test]
    fn a_body_that_does_not_deflate_below_a_unit_boundary_stays_a_map() {
        // Random text does not deflate: no unit is saved, so the item stays readable.
        let noise: String = (0..1500).map(|_| fastrand::alphanumeric()).collect();
        let item = item(serde_json::json!({ "noise": noise }));
        assert!(matches!(stored_body(&item).unwrap(), StoredBody::Map(_)));
        assert_eq!(stored_size(&item).unwrap(), item.approximate_size());
    }

    #[test]
    fn bytes_that_are_not_a_deflated_json_body_are_corrupt_not_a_panic() {
        assert!(matches!(inflate(b"not deflate at all"), Err(StoreError::Corrupt(_))));
        let not_json = miniz_oxide::deflate::compress_to_vec(b"{not json", LEVEL);
        assert!(matches!(inflate(&not_json), Err(StoreError::Corrupt(_))));
        // A bomb: a megabyte of zeros deflates to a few hundred bytes and is refused.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![b' '; 1024 * 1024], LEVEL);
        assert!(matches!(inflate(&bomb), Err(StoreError::Corrupt(_))));
    }
}
