//! How a customer gets into the billing portal, as Stripe's billing portal sessions work:
//! the merchant asks for a link for one customer (`POST /v1/portal-sessions`), the link
//! carries a signed, expiring token, and opening it starts a session held in a cookie that
//! is itself a signed, expiring token. Nothing is stored: the signature is the proof.
//!
//! A token is `<base64url(JSON claims)>.<hex HMAC-SHA256 of the first part>`, under the
//! portal's signing secret (several while it is rolled: any of them verifies, the first
//! signs). A link and a session are different kinds, so one is never taken for the other.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::CustomerId;
use crate::time::Timestamp;

/// How long a portal link is good for unless the merchant says.
pub const DEFAULT_LINK_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// The longest a link may live (an email's link): a week.
pub const MAX_LINK_TTL: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// How long a session lasts after the link is opened.
pub const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(2);

/// Who is in the portal: the account's owner sees everything, a team member the bills only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortalRole {
    Owner,
    Member,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Link,
    Session,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalClaims {
    pub kind: TokenKind,
    pub customer_id: CustomerId,
    pub role: PortalRole,
    /// Unix seconds.
    pub exp: i64,
    /// A random id per token: a session's CSRF tokens are bound to it.
    pub nonce: String,
}

impl PortalClaims {
    pub fn new(kind: TokenKind, customer_id: CustomerId, role: PortalRole, expires_at: Timestamp) -> Self {
        PortalClaims {
            kind,
            customer_id,
            role,
            exp: expires_at.timestamp(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is not one Recoup made")]
    Forged,
    #[error("the link has expired")]
    Expired,
    #[error("not a portal link")]
    WrongKind,
}

fn mac(secret: &str, payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac
}

/// The token for `claims`, signed with `secret`.
pub fn sign(secret: &str, claims: &PortalClaims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let tag: String = mac(secret, &payload).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{payload}.{tag}")
}

/// The claims of a token of `kind` signed by any of `secrets` and not expired at `now`.
/// The signature is checked in constant time before anything in the payload is read.
pub fn verify(secrets: &[String], token: &str, kind: TokenKind, now: Timestamp) -> Result<PortalClaims, TokenError> {
    let (payload, tag) = token.split_once('.').ok_or(TokenError::Forged)?;
    if tag.len() != 64 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Forged);
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&tag[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| TokenError::Forged)?;
    if !secrets.iter().any(|s| mac(s, payload).verify_slice(&tag).is_ok()) {
        return Err(TokenError::Forged);
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Forged)?;
    let claims: PortalClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Forged)?;
    if claims.kind != kind {
        return Err(TokenError::WrongKind);
    }
    if claims.exp <= now.timestamp() {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The CSRF token of a session's forms: bound to the session's nonce and the secret.
pub fn csrf_token(secret: &str, session: &PortalClaims) -> String {
    mac(secret, &format!("csrf.{}", session.nonce)).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_only_as_a_link() {
        let secrets = vec!["s3cret".to_owned()];
        let cus = CustomerId::generate();
        let claims = PortalClaims::new(TokenKind::Link, cus.clone(), PortalRole::Owner, t0() + DEFAULT_LINK_TTL);
        let token = sign("s3cret", &claims);
        assert_eq!(verify(&secrets, &token, TokenKind::Link, t0()).unwrap(), claims);
        assert_eq!(verify(&secrets, &token, TokenKind::Session, t0()), Err(TokenError::WrongKind));
        assert_eq!(verify(&secrets, &token, TokenKind::Link, t0() + DEFAULT_LINK_TTL), Err(TokenError::Expired));
        // Rolled: the old secret still verifies beside the new.
        assert!(verify(&["new".to_owned(), "s3cret".to_owned()], &token, TokenKind::Link, t0()).is_ok());
    }

    #[test]
    fn a_forged_or_altered_token_is_refused() {
        let secrets = vec!["s3cret".to_owned()];
        let claims =
            PortalClaims::new(TokenKind::Link, CustomerId::generate(), PortalRole::Member, t0() + MAX_LINK_TTL);
        let token = sign("s3cret", &claims);
        assert_eq!(verify(&secrets, &sign("other", &claims), TokenKind::Link, t0()), Err(TokenError::Forged));
        // Another customer's id in the payload, with the old signature.
        let (_, tag) = token.split_once('.').unwrap();
        let other = PortalClaims { customer_id: CustomerId::generate(), ..claims.clone() };
        let other_payload = sign("s3cret", &other);
        let (payload, _) = other_payload.split_once('.').unwrap();
        assert_eq!(verify(&secrets, &format!("{payload}.{tag}"), TokenKind::Link, t0()), Err(TokenError::Forged));
        for junk in ["", "abc", "abc.def", "x.zz", &format!("{token}0")] {
            assert_eq!(verify(&secrets, junk, TokenKind::Link, t0()), Err(TokenError::Forged), "{junk}");
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        let a = PortalClaims::new(TokenKind::Session, CustomerId::generate(), PortalRole::Owner, t0());
        let b = PortalClaims::new(TokenKind::Session, a.customer_id.clone(), PortalRole::Owner, t0());
        assert_ne!(csrf_token("s", &a), csrf_token("s", &b));
        assert_eq!(csrf_token("s", &a), csrf_token("s", &a));
    }
}
