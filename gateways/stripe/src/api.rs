//! A thin typed client for the handful of Stripe endpoints Recoup calls, and the parts of
//! Stripe's objects it reads.
//!
//! Every POST carries an `Idempotency-Key`, so a request that got no answer (timeout,
//! dropped connection, 429, 5xx) is sent again with the same key, a bounded number of
//! times with exponential backoff, well inside a Lambda's time. Whatever still has no
//! answer is reported as such, never as a failure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Stripe's API version this adapter reads. Pinned, so an account's default version cannot
/// change the shape of what comes back.
pub const API_VERSION: &str = "2024-06-20";

/// The secret API key. Never printed: its `Debug` is redacted, and it is never logged.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(key: impl Into<String>) -> Self {
        SecretKey(key.into())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// How a call ended when it did not return the object.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Stripe answered with an error object: a definite answer.
    Api { status: u16, error: ApiError },
    /// No definite answer after the retries: the request may or may not have taken effect.
    NoAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api { status, error } => write!(
                f,
                "Stripe answered {status}: {} ({})",
                error.message.as_deref().unwrap_or("no message"),
                error.code.as_deref().unwrap_or("no code")
            ),
            CallError::NoAnswer(why) => write!(f, "no answer from Stripe: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.stripe.com`, or a local fake.
    pub api_base: String,
    pub secret_key: SecretKey,
    /// Per request.
    pub timeout: Duration,
    /// Tries per call, the first included.
    pub max_tries: u32,
    /// The first backoff; doubled after each try.
    pub backoff: Duration,
}

impl ClientConfig {
    pub fn new(api_base: impl Into<String>, secret_key: SecretKey) -> Self {
        ClientConfig {
            api_base: api_base.into().trim_end_matches('/').to_owned(),
            secret_key,
            timeout: Duration::from_secs(8),
            max_tries: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl StripeClient {
    pub fn new(config: ClientConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("recoup/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        StripeClient { http, config }
    }

    /// POSTs a form to `path` with an idempotency key.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.config.api_base);
        self.send(|| self.http.post(&url).form(form).header("Idempotency-Key", idempotency_key)).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, CallError> {
        let url = format!("{}{path}", self.config.api_base);
        self.send(|| self.http.get(&url).query(query)).await
    }

    async fn send<T: DeserializeOwned>(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<T, CallError> {
        let mut last = String::new();
        for attempt in 1..=self.config.max_tries.max(1) {
            if attempt > 1 {
                let backoff = self.config.backoff * 2u32.pow(attempt - 2);
                tokio::time::sleep(backoff + jitter(backoff)).await;
            }
            let sent =
                build().bearer_auth(&self.config.secret_key.0).header("Stripe-Version", API_VERSION).send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    // Timeouts and connection failures: the request may have reached
                    // Stripe; the same key makes sending it again safe.
                    last = without_url(&e);
                    continue;
                }
            };
            let status = response.status().as_u16();
            let should_retry =
                response.headers().get("Stripe-Should-Retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("reading the answer: {}", without_url(&e));
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return serde_json::from_slice(&body)
                    .map_err(|e| CallError::NoAnswer(format!("an answer Recoup cannot read: {e}")));
            }
            let error = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.error).unwrap_or_default();
            let transient = status == 429 || status >= 500;
            if should_retry.unwrap_or(transient) && attempt < self.config.max_tries {
                last = format!("status {status}");
                continue;
            }
            if transient && should_retry != Some(false) {
                return Err(CallError::NoAnswer(format!("status {status} after {attempt} tries")));
            }
            return Err(CallError::Api { status, error });
        }
        Err(CallError::NoAnswer(last))
    }
}

/// reqwest errors name the URL; the URL can carry a query (search by metadata), so only the
/// kind of failure is kept.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    };
    kind.to_owned()
}

fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// Stripe's error object (`card_error`, `invalid_request_error`, `idempotency_error`...).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    /// The card network's own response code, when Stripe has it.
    #[serde(default)]
    pub network_decline_code: Option<String>,
    /// The network's advice (Mastercard's Merchant Advice Code).
    #[serde(default)]
    pub network_advice_code: Option<String>,
    /// Stripe's own advice (`do_not_try_again`, `try_again_later`, `confirm_card_data`).
    #[serde(default)]
    pub advice_code: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<Box<PaymentIntent>>,
}

/// An id, or the object when it was expanded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T: HasId> Expandable<T> {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(o) => o.id(),
        }
    }
}

pub trait HasId {
    fn id(&self) -> &str;
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Customer {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<Box<ApiError>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub next_action: Option<serde_json::Value>,
}

impl HasId for PaymentIntent {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SetupIntent {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub payment_method: Option<Expandable<PaymentMethod>>,
    #[serde(default)]
    pub last_setup_error: Option<Box<ApiError>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    #[serde(default)]
    pub card: Option<Card>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl HasId for PaymentMethod {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Card {
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub funding: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

/// A dispute (chargeback) on a payment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub status: String,
}

/// A page of a list or search result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
}
