//! Stripe's webhook signature: the `Stripe-Signature` header is `t=<unix seconds>` and one
//! or more `v1=<hex HMAC-SHA256>` (several while an endpoint secret is being rolled), the
//! MAC taken with the endpoint's signing secret over `"<t>.<raw body>"`. The same scheme
//! signs Recoup's own webhooks to merchants.
//!
//! A payload is accepted when one `v1` matches one of the configured secrets (compared in
//! constant time) and `t` is within the tolerance of now, so a captured request cannot be
//! replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's own default tolerance.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed: it needs t= and at least one v1=")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches the payload")]
    NoMatch,
}

impl SignatureError {
    /// A stable code for the answer and the logs.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Stale => "signature_stale",
            SignatureError::NoMatch => "signature_mismatch",
        }
    }
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The header value signing `payload` at `timestamp` with `secret`.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, payload).finalize().into_bytes()))
}

/// Checks `header` against `payload`: one `v1` must match one of `secrets`, and `t` must be
/// within `tolerance_secs` of `now_unix`. Returns the signed timestamp.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[&str],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            // Only v1 is a live scheme; v0 (test-mode legacy) and unknown schemes are ignored.
            "v1" => candidates.push(unhex(v).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_unix - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        for candidate in &candidates {
            // `verify_slice` compares in constant time.
            if mac(secret, timestamp, payload).verify_slice(candidate).is_ok() {
                return Ok(timestamp);
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn headers_match_vectors_computed_independently() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(SECRET, b"<t>.<payload>",
        // hashlib.sha256).hexdigest())'
        let payload = br#"{"id":"evt_1"}"#;
        let header = "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";
        assert_eq!(sign(payload, SECRET, NOW), header);
        assert_eq!(verify(payload, Some(header), &[SECRET], NOW + 10, 300), Ok(NOW));
        assert_eq!(
            sign(b"{}", "whsec_abc", 1_614_556_800),
            "t=1614556800,v1=c11c66ac441149169e97e9843f7042147973ef74edb4d20eb107b414792ace37"
        );
    }

    #[test]
    fn any_of_several_signatures_and_any_of_several_secrets_may_match() {
        let payload = b"{}";
        let good = sign(payload, "whsec_new", NOW);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t={NOW},v1={},v1={v1},v0=deadbeef", "00".repeat(32));
        assert_eq!(verify(payload, Some(&header), &["whsec_old", "whsec_new"], NOW, 300), Ok(NOW));
        assert_eq!(verify(payload, Some(&header), &["whsec_old"], NOW, 300), Err(SignatureError::NoMatch));
    }

    #[test]
    fn missing_malformed_and_stale_headers_are_refused() {
        let payload = b"{}";
        assert_eq!(verify(payload, None, &[SECRET], NOW, 300), Err(SignatureError::Missing));
        for bad in ["", "t=1", "v1=00", "t=abc,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(verify(payload, Some(bad), &[SECRET], NOW, 300), Err(SignatureError::Malformed), "{bad}");
        }
        let old = sign(payload, SECRET, NOW - 301);
        assert_eq!(verify(payload, Some(&old), &[SECRET], NOW, 300), Err(SignatureError::Stale));
        let future = sign(payload, SECRET, NOW + 301);
        assert_eq!(verify(payload, Some(&future), &[SECRET], NOW, 300), Err(SignatureError::Stale));
    }

    proptest! {
        #[test]
        fn any_change_to_payload_timestamp_or_secret_is_refused(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            other in proptest::collection::vec(any::<u8>(), 0..256),
            secret in "[a-zA-Z0-9_]{1,40}",
            other_secret in "[a-zA-Z0-9_]{1,40}",
            shift in 1i64..250,
        ) {
            let header = sign(&payload, &secret, NOW);
            prop_assert_eq!(verify(&payload, Some(&header), &[secret.as_str()], NOW, 300), Ok(NOW));
            if other != payload {
                prop_assert_eq!(verify(&other, Some(&header), &[secret.as_str()], NOW, 300), Err(SignatureError::NoMatch));
            }
            if other_secret != secret {
                prop_assert_eq!(verify(&payload, Some(&header), &[other_secret.as_str()], NOW, 300), Err(SignatureError::NoMatch));
            }
            // The same MAC presented with another timestamp (inside the tolerance) fails.
            let v1 = header.split_once(",v1=").unwrap().1;
            let moved = format!("t={},v1={v1}", NOW + shift);
            prop_assert_eq!(verify(&payload, Some(&moved), &[secret.as_str()], NOW, 300), Err(SignatureError::NoMatch));
        }
    }
}
