//! The application context, and its wiring from the Lambda environment.

use std::sync::Arc;

use recoup_shared::domain::policy::{DunningPolicy, RetrySchedule};
use recoup_shared::domain::webhook::UrlPolicy;
use recoup_shared::ports::messaging::QueueSender;
use recoup_shared::ports::webhooks::WebhookTransport;
use recoup_shared::services::Services;
use recoup_shared::time::parse_duration;

/// Built once per process; borrowed by every invocation.
#[derive(Clone)]
pub struct App {
    pub services: Services,
    /// Where the schedulers put charge work (the charge queue).
    pub charge_queue: Option<Arc<dyn QueueSender>>,
    /// The signing secrets of the PSP's webhooks, when configured.
    pub psp_webhook_secrets: Option<Arc<dyn SecretSource>>,
    /// What the hosted card form needs to reach the PSP from the browser.
    pub card_form: CardForm,
    /// How merchant webhooks leave the system.
    pub webhooks: Webhooks,
    /// The billing portal's signing secret(s): links and sessions are signed with it.
    pub portal_secrets: Option<Arc<dyn SecretSource>>,
}

/// Merchant webhook delivery: which URLs are allowed, the client that posts, and the
/// dispatcher's queue (resends and retries are put on it).
#[derive(Clone)]
pub struct Webhooks {
    pub policy: UrlPolicy,
    pub transport: Arc<dyn WebhookTransport>,
    pub queue: Option<Arc<dyn QueueSender>>,
}

impl Webhooks {
    pub fn new(policy: UrlPolicy, queue: Option<Arc<dyn QueueSender>>) -> Self {
        Webhooks { policy, transport: Arc::new(crate::webhook_http::HttpTransport::new(policy)), queue }
    }
}

impl Default for Webhooks {
    /// A deployment's: https to public addresses, no queue.
    fn default() -> Self {
        Webhooks::new(UrlPolicy::PublicHttpsOnly, None)
    }
}

/// What the hosted card form needs: which PSP's form to show and how the browser reaches
/// it. Nothing here is secret (a publishable key is meant for browsers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardForm {
    /// `"sandbox"` or `"stripe"`.
    pub provider: &'static str,
    /// Stripe's publishable key (`pk_...`), for Stripe.js.
    pub publishable_key: Option<String>,
    /// Where Stripe.js is served from (`https://js.stripe.com/v3/`; localstripe serves a
    /// stand-in).
    pub stripe_js_url: String,
    /// The sandbox's card-details endpoint, where one runs (the local product).
    pub sandbox_tokenize_url: Option<String>,
}

/// Stripe.js, from where Stripe requires it be loaded.
pub const STRIPE_JS_URL: &str = "https://js.stripe.com/v3/";

/// Where Stripe.js comes from for an API base: Stripe's own for Stripe's API; a stand-in
/// (localstripe) serves it at `<api base>/js.stripe.com/v3/`.
pub fn stripe_js_url_for(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    if base == "https://api.stripe.com" { STRIPE_JS_URL.to_owned() } else { format!("{base}/js.stripe.com/v3/") }
}

impl Default for CardForm {
    fn default() -> Self {
        CardForm {
            provider: "sandbox",
            publishable_key: None,
            stripe_js_url: STRIPE_JS_URL.into(),
            sandbox_tokenize_url: None,
        }
    }
}

impl CardForm {
    pub fn of(settings: &Settings) -> Self {
        CardForm {
            provider: match settings.provider {
                Provider::Sandbox => "sandbox",
                Provider::Stripe(_) => "stripe",
            },
            publishable_key: settings.stripe_publishable_key.clone(),
            stripe_js_url: settings.stripe_js_url.clone(),
            sandbox_tokenize_url: None,
        }
    }
}

/// Secret values read on first use and kept for the life of the process.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The current values: several while a secret is being rolled.
    async fn values(&self) -> Result<Vec<String>, String>;
}

/// Billing portal links for emails, signed with the portal's secret: the owner's, good for
/// a week (an email is read later than a page is opened).
pub struct SignedPortalLinks {
    pub secrets: Arc<dyn SecretSource>,
    pub clock: Arc<dyn recoup_shared::time::Clock>,
    /// The portal's URL (`RECOUP_PORTAL_URL`); links go to `<it>/session?token=`.
    pub portal_url: String,
}

#[async_trait::async_trait]
impl recoup_shared::ports::portal::PortalLinks for SignedPortalLinks {
    async fn link_for(&self, customer: &recoup_shared::ids::CustomerId) -> Option<String> {
        use recoup_shared::domain::portal::{MAX_LINK_TTL, PortalClaims, PortalRole, TokenKind, sign};
        let secrets = match self.secrets.values().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the portal signing secret could not be read; emails link the plain portal URL");
                return None;
            }
        };
        let secret = secrets.first()?;
        let claims =
            PortalClaims::new(TokenKind::Link, customer.clone(), PortalRole::Owner, self.clock.now() + MAX_LINK_TTL);
        Some(format!("{}/session?token={}", self.portal_url.trim_end_matches('/'), sign(secret, &claims)))
    }
}

/// Secrets given at start (the local product).
pub struct FixedSecrets(pub Vec<String>);

#[async_trait::async_trait]
impl SecretSource for FixedSecrets {
    async fn values(&self) -> Result<Vec<String>, String> {
        Ok(self.0.clone())
    }
}

/// A secret's value holds one or more secrets, separated by commas or whitespace (both the
/// new and the old while a signing secret is rolled).
pub fn split_secrets(value: &str) -> Vec<String> {
    value.split([',', ' ', '\n', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Which payment provider adapter to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Sandbox,
    Stripe(StripeSettings),
}

/// Where Stripe is and where its secret API key is kept. The key itself is never a
/// setting: it is read from AWS Secrets Manager on first use and kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSettings {
    pub api_base: String,
    pub api_key_secret_arn: String,
}

/// Settings read from the environment (see `template.yaml` for the values in AWS).
#[derive(Debug, Clone)]
pub struct Settings {
    pub table: String,
    pub event_bus: String,
    pub charge_queue_url: Option<String>,
    /// The webhook dispatcher's queue, where resends and retries go.
    pub webhooks_queue_url: Option<String>,
    pub policy: DunningPolicy,
    pub portal_url: String,
    pub provider: Provider,
    /// The Secrets Manager secret holding the PSP webhooks' signing secret(s).
    pub stripe_webhook_secret_arn: Option<String>,
    /// Stripe's publishable key, for the hosted card form (not a secret).
    pub stripe_publishable_key: Option<String>,
    pub stripe_js_url: String,
    /// The Secrets Manager secret that signs billing portal links and sessions.
    pub portal_secret_arn: Option<String>,
    /// The merchant's own address (RECOUP_MERCHANT_EMAIL).
    pub merchant_email: Option<String>,
    /// Who customer emails come from; without it emails are recorded, not sent.
    pub email_sender: Option<recoup_shared::mail::Sender>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// `get` reads one variable; an empty value counts as unset (CloudFormation sets an
    /// optional parameter left blank as "").
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str| get(name).ok_or_else(|| ConfigError(format!("{name} must be set")));
        let schedule: RetrySchedule = match get("RECOUP_RETRY_SCHEDULE") {
            Some(s) => s.parse().map_err(|e| ConfigError(format!("RECOUP_RETRY_SCHEDULE: {e}")))?,
            None => RetrySchedule::default(),
        };
        let reconcile_after = match get("RECOUP_RECONCILE_AFTER") {
            Some(s) => parse_duration(&s).filter(|d| *d >= chrono::TimeDelta::seconds(30)).ok_or_else(|| {
                ConfigError(format!("RECOUP_RECONCILE_AFTER: {s:?} is not a duration of at least 30s, like 10m"))
            })?,
            None => DunningPolicy::default().reconcile_after,
        };
        // Read whatever the provider, so a deployment sets it in one place for every function.
        let stripe_key_arn = get("RECOUP_STRIPE_API_KEY_SECRET_ARN");
        let provider = match get("RECOUP_PAYMENT_PROVIDER").as_deref().unwrap_or("sandbox") {
            "sandbox" => Provider::Sandbox,
            "stripe" => Provider::Stripe(StripeSettings {
                api_base: get("RECOUP_STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into()),
                api_key_secret_arn: stripe_key_arn
                    .ok_or_else(|| ConfigError("RECOUP_STRIPE_API_KEY_SECRET_ARN must be set for Stripe".into()))?,
            }),
            other => {
                return Err(ConfigError(format!(
                    "RECOUP_PAYMENT_PROVIDER={other:?}: the providers are \"sandbox\" and \"stripe\""
                )));
            }
        };
        let stripe_js_url = match &provider {
            Provider::Stripe(stripe) => stripe_js_url_for(&stripe.api_base),
            Provider::Sandbox => STRIPE_JS_URL.into(),
        };
        let (reply_to, configuration_set) = (get("RECOUP_EMAIL_REPLY_TO"), get("RECOUP_EMAIL_CONFIGURATION_SET"));
        let email_sender =
            get("RECOUP_EMAIL_FROM").map(|from| recoup_shared::mail::Sender { from, reply_to, configuration_set });
        Ok(Settings {
            table: required("RECOUP_TABLE")?,
            event_bus: required("RECOUP_EVENT_BUS")?,
            charge_queue_url: get("RECOUP_CHARGE_QUEUE_URL"),
            webhooks_queue_url: get("RECOUP_WEBHOOKS_QUEUE_URL"),
            policy: DunningPolicy { schedule, reconcile_after },
            portal_url: get("RECOUP_PORTAL_URL").unwrap_or_else(|| "http://127.0.0.1:8080/portal".into()),
            provider,
            stripe_webhook_secret_arn: get("RECOUP_STRIPE_WEBHOOK_SECRET_ARN"),
            stripe_publishable_key: get("RECOUP_STRIPE_PUBLISHABLE_KEY"),
            stripe_js_url,
            email_sender,
            merchant_email: get("RECOUP_MERCHANT_EMAIL"),
            portal_secret_arn: get("RECOUP_PORTAL_SECRET_ARN"),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(var)
    }
}

/// Wires the AWS adapters, and emails sent through SES from the configured sender (the
/// functions that email call this; the others record nothing to send).
#[cfg(feature = "aws")]
pub async fn from_env_sending_email() -> Result<App, ConfigError> {
    use recoup_shared::aws::{SesTransport, sdk_config};
    use recoup_shared::mail::StoreMailer;

    let mut app = from_env().await?;
    // Emails carry a signed link to the customer's billing page.
    if let Some(secrets) = app.portal_secrets.clone() {
        app.services.portal_links = Some(Arc::new(SignedPortalLinks {
            secrets,
            clock: app.services.clock.clone(),
            portal_url: app.services.portal_url.clone(),
        }));
    }
    match Settings::from_env()?.email_sender {
        Some(sender) => {
            let transport = Arc::new(SesTransport::lazy(&sdk_config().await));
            app.services.mailer = Arc::new(StoreMailer::sending(app.services.repo.clone(), transport, sender));
        }
        None => tracing::warn!("RECOUP_EMAIL_FROM is not set: customer emails are recorded, not sent"),
    }
    Ok(app)
}

/// Wires the AWS adapters: DynamoDB store, EventBridge publisher, SQS charge queue.
#[cfg(feature = "aws")]
pub async fn from_env() -> Result<App, ConfigError> {
    use recoup_shared::aws::{EventBridgePublisher, SqsSender, sdk_config};
    use recoup_shared::mail::StoreMailer;
    use recoup_shared::ports::gateway::PaymentGateway;
    use recoup_shared::store::ItemStore;
    use recoup_shared::store::dynamodb::DynamoStore;
    use recoup_shared::store::repo::Repo;
    use recoup_shared::time::{Clock, SystemClock};

    let settings = Settings::from_env()?;
    let card_form = CardForm::of(&settings);
    let config = sdk_config().await;
    // The clients are made at their first call, not before the first poll.
    let store: Arc<dyn ItemStore> = Arc::new(DynamoStore::lazy(&config, &settings.table));
    let repo = Repo::new(store);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gateway: Arc<dyn PaymentGateway> = match &settings.provider {
        Provider::Sandbox => crate::provider::sandbox(repo.clone(), clock.clone())?,
        Provider::Stripe(stripe) => crate::provider::stripe(&config, stripe, repo.clone())?,
    };
    let charge_queue =
        settings.charge_queue_url.clone().map(|url| Arc::new(SqsSender::lazy(&config, url)) as Arc<dyn QueueSender>);
    let services = Services {
        repo: repo.clone(),
        gateway,
        clock,
        publisher: Arc::new(EventBridgePublisher::lazy(&config, &settings.event_bus)),
        mailer: Arc::new(StoreMailer::new(repo)),
        policy: settings.policy,
        portal_url: settings.portal_url,
        merchant_email: settings.merchant_email,
        portal_links: None,
        card_turns: Default::default(),
        // A Lambda publishes before it answers: once it has, its runtime may be frozen.
        publishing: recoup_shared::services::outbox::Publishing::Inline,
    };
    let psp_webhook_secrets = settings
        .stripe_webhook_secret_arn
        .clone()
        .map(|arn| Arc::new(crate::provider::SecretsManagerSecret::new(&config, arn)) as Arc<dyn SecretSource>);
    let webhooks_queue =
        settings.webhooks_queue_url.clone().map(|url| Arc::new(SqsSender::lazy(&config, url)) as Arc<dyn QueueSender>);
    let webhooks = Webhooks::new(UrlPolicy::PublicHttpsOnly, webhooks_queue);
    let portal_secrets = settings
        .portal_secret_arn
        .clone()
        .map(|arn| Arc::new(crate::provider::SecretsManagerSecret::new(&config, arn)) as Arc<dyn SecretSource>);
    Ok(App { services, charge_queue, psp_webhook_secrets, card_form, webhooks, portal_secrets })
}

/// Logs for CloudWatch, as Lambda's logging controls ask: JSON lines when
/// `AWS_LAMBDA_LOG_FORMAT` is `JSON` (the template sets it), and the level of
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO. Only a plain level is understood
/// (`debug`, `warn`...), not per-module directives: a directive filter would bring a regex
/// engine into every binary.
pub fn init_tracing() {
    use tracing_subscriber::filter::LevelFilter;

    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt().with_target(false).without_time().with_max_level(level);
    // A second call (tests) finds a subscriber installed and leaves it.
    let _ = if json { logs.json().try_init() } else { logs.try_init() };
}

/// The largest wallet refill a customer may ask for, and the largest automatic refill
/// amount or threshold, in minor units of the wallet's currency:
/// `RECOUP_WALLET_MAX_REFILL`, 100000 unless set (1,000.00 USD, or 100,000 JPY).
pub fn wallet_max_refill() -> i64 {
    static MAX: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        var("RECOUP_WALLET_MAX_REFILL").and_then(|v| v.trim().parse::<i64>().ok()).filter(|n| *n >= 1).unwrap_or(100_000)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn settings_need_a_table_and_a_bus_and_default_the_rest() {
        let s = Settings::from_lookup(lookup(&[("RECOUP_TABLE", "t"), ("RECOUP_EVENT_BUS", "b")])).unwrap();
        assert_eq!(s.policy.schedule, RetrySchedule::default());
        assert_eq!(s.provider, Provider::Sandbox);
        assert!(Settings::from_lookup(lookup(&[("RECOUP_TABLE", "t")])).is_err());
    }

    #[test]
    fn stripe_needs_the_arn_of_its_secret_key_never_the_key() {
        let base = [("RECOUP_TABLE", "t"), ("RECOUP_EVENT_BUS", "b"), ("RECOUP_PAYMENT_PROVIDER", "stripe")];
        let err = Settings::from_lookup(lookup(&base)).unwrap_err();
        assert!(err.to_string().contains("RECOUP_STRIPE_API_KEY_SECRET_ARN"), "{err}");
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:recoup/stripe-AbCdEf";
        let mut with_arn = base.to_vec();
        with_arn.push(("RECOUP_STRIPE_API_KEY_SECRET_ARN", arn));
        let s = Settings::from_lookup(lookup(&with_arn)).unwrap();
        assert_eq!(
            s.provider,
            Provider::Stripe(StripeSettings {
                api_base: "https://api.stripe.com".into(),
                api_key_secret_arn: arn.into()
            })
        );
    }

    #[test]
    fn a_bad_schedule_or_provider_is_a_clear_configuration_error() {
        let err = Settings::from_lookup(lookup(&[
            ("RECOUP_TABLE", "t"),
            ("RECOUP_EVENT_BUS", "b"),
            ("RECOUP_RETRY_SCHEDULE", "3d,1d"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("RECOUP_RETRY_SCHEDULE"));
        let err = Settings::from_lookup(lookup(&[
            ("RECOUP_TABLE", "t"),
            ("RECOUP_EVENT_BUS", "b"),
            ("RECOUP_PAYMENT_PROVIDER", "adyen"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("stripe"));
    }
}

