//! HS256 JSON Web Tokens for the local product. In AWS the HTTP API's JWT authorizer
//! validates tokens from the merchant's identity provider; locally this module mints and
//! validates tokens signed with a development secret, and hands the same claims to the
//! handlers. The checks are `jsonwebtoken`'s: the algorithm (HS256 only), the signature,
//! `iss`, `aud`, `exp` and `nbf`, with no clock leeway.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};

pub const DEFAULT_SECRET: &str = "recoup-local-development-secret";
pub const ISSUER: &str = "recoup-local";
pub const AUDIENCE: &str = "recoup";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT with exp, iss and aud")]
    Malformed,
    #[error("the token's algorithm must be HS256")]
    Algorithm,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was not issued by this API's issuer")]
    Issuer,
    #[error("the token was not issued for this API")]
    Audience,
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => JwtError::Algorithm,
            ErrorKind::InvalidSignature => JwtError::Signature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidIssuer => JwtError::Issuer,
            ErrorKind::InvalidAudience => JwtError::Audience,
            _ => JwtError::Malformed,
        }
    }
}

/// Signs `claims` (adding `iss`, `aud`, `iat`, `nbf`, `exp`).
pub fn mint(secret: &str, mut claims: Map<String, Value>, now: i64, ttl_seconds: i64) -> String {
    claims.insert("iss".into(), json!(ISSUER));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl_seconds));
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("a JSON object of claims always encodes")
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = 0;
    v
}

/// Verifies the token against the wall clock and returns its claims as API Gateway passes
/// them to a function: every value as a string.
pub fn verify(secret: &str, token: &str) -> Result<HashMap<String, String>, JwtError> {
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation())?;
    Ok(data
        .claims
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
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("role".into(), json!("owner"));
        m.insert("customer_id".into(), json!("cus_x"));
        m
    }

    /// A token with these claims as given (no defaults added), signed with `secret`.
    fn signed(secret: &str, alg: Algorithm, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_and_yields_string_claims() {
        let t = mint("s", claims(), now(), 60);
        let c = verify("s", &t).unwrap();
        assert_eq!(c["role"], "owner");
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["exp"].parse::<i64>().unwrap() - c["iat"].parse::<i64>().unwrap(), 60);
    }

    #[test]
    fn tampered_expired_early_or_foreign_tokens_are_refused() {
        let t = mint("s", claims(), now(), 60);
        assert_eq!(verify("other", &t), Err(JwtError::Signature));
        assert_eq!(verify("s", &mint("s", claims(), now() - 3_600, 60)), Err(JwtError::Expired));
        assert_eq!(verify("s", &mint("s", claims(), now() + 3_600, 60)), Err(JwtError::NotYetValid));
        let mut forged = t.clone();
        forged.push('x');
        assert!(verify("s", &forged).is_err());
        assert_eq!(verify("s", "abc"), Err(JwtError::Malformed));
    }

    #[test]
    fn a_foreign_issuer_or_audience_is_refused() {
        let exp = now() + 60;
        let foreign = signed("s", Algorithm::HS256, json!({"iss": "someone-else", "aud": AUDIENCE, "exp": exp}));
        assert_eq!(verify("s", &foreign), Err(JwtError::Issuer));
        let other_api = signed("s", Algorithm::HS256, json!({"iss": ISSUER, "aud": "another-api", "exp": exp}));
        assert_eq!(verify("s", &other_api), Err(JwtError::Audience));
        let no_issuer = signed("s", Algorithm::HS256, json!({"aud": AUDIENCE, "exp": exp}));
        assert_eq!(verify("s", &no_issuer), Err(JwtError::Malformed));
        let no_expiry = signed("s", Algorithm::HS256, json!({"iss": ISSUER, "aud": AUDIENCE}));
        assert_eq!(verify("s", &no_expiry), Err(JwtError::Malformed));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let exp = now() + 60;
        let hs512 = signed("s", Algorithm::HS512, json!({"iss": ISSUER, "aud": AUDIENCE, "exp": exp}));
        assert_eq!(verify("s", &hs512), Err(JwtError::Algorithm));
        // `alg: none` with the signature stripped.
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(json!({"iss": ISSUER, "aud": AUDIENCE, "exp": exp}).to_string());
        assert!(verify("s", &format!("{header}.{body}.")).is_err());
    }
}
