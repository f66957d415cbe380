//! HS256 JSON Web Tokens for the local product. In AWS the HTTP API's JWT authorizer
//! validates tokens from the merchant's identity provider; locally this module mints and
//! validates tokens signed with a development secret, and hands the same claims to the
//! handlers.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

pub const DEFAULT_SECRET: &str = "recoup-local-development-secret";
pub const ISSUER: &str = "recoup-local";
pub const AUDIENCE: &str = "recoup";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm must be HS256")]
    Algorithm,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was not issued for this API")]
    Audience,
}

fn mac(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length")
}

/// Signs `claims` (adding `iss`, `aud`, `iat`, `exp`).
pub fn mint(secret: &str, mut claims: Map<String, Value>, now: i64, ttl_seconds: i64) -> String {
    claims.insert("iss".into(), json!(ISSUER));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl_seconds));
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies the token and returns its claims as API Gateway passes them to a function:
/// every value as a string.
pub fn verify(secret: &str, token: &str, now: i64) -> Result<std::collections::HashMap<String, String>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?)
        .map_err(|_| JwtError::Malformed)?;
    if header.get("alg") != Some(&json!("HS256")) {
        return Err(JwtError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(secret);
    m.update(format!("{h}.{p}").as_bytes());
    m.verify_slice(&signature).map_err(|_| JwtError::Signature)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now => {}
        _ => return Err(JwtError::Expired),
    }
    if claims.get("aud") != Some(&json!(AUDIENCE)) {
        return Err(JwtError::Audience);
    }
    Ok(claims
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("role".into(), json!("owner"));
        m.insert("customer_id".into(), json!("cus_x"));
        m
    }

    #[test]
    fn a_minted_token_verifies_and_yields_string_claims() {
        let t = mint("s", claims(), 1_000, 60);
        let c = verify("s", &t, 1_010).unwrap();
        assert_eq!(c["role"], "owner");
        assert_eq!(c["exp"], "1060");
    }

    #[test]
    fn tampered_expired_or_foreign_tokens_are_refused() {
        let t = mint("s", claims(), 1_000, 60);
        assert_eq!(verify("other", &t, 1_010), Err(JwtError::Signature));
        assert_eq!(verify("s", &t, 2_000), Err(JwtError::Expired));
        let mut forged = t.clone();
        forged.push('x');
        assert!(verify("s", &forged, 1_010).is_err());
        assert_eq!(verify("s", "abc", 1_010), Err(JwtError::Malformed));
    }
}
