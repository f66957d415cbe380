//! The payment-provider adapters a build contains, wired from the settings.
//!
//! Each provider is a cargo feature of this crate (and of every function crate): a Lambda
//! built for real money (`--no-default-features --features lambda,stripe`) does not contain
//! the sandbox, which is the only Recoup code that reads card numbers. Asking a build for a
//! provider it does not contain is a configuration error at start.

use std::sync::Arc;

use async_trait::async_trait;
use recoup_shared::domain::invoice::AttemptOutcome;
use recoup_shared::domain::payment_method::VerifiedCard;
use recoup_shared::ids::{CustomerId, InvoiceId};
use recoup_shared::ports::gateway::{CardSetup, ChargeRequest, GatewayError, PaymentGateway};
#[cfg(feature = "sandbox")]
use recoup_shared::store::repo::Repo;
#[cfg(feature = "sandbox")]
use recoup_shared::time::Clock;
use tokio::sync::OnceCell;

#[cfg(any(not(feature = "sandbox"), all(feature = "aws", not(feature = "stripe"))))]
use crate::app::ConfigError;

/// The deterministic sandbox provider over Recoup's own table.
#[cfg(feature = "sandbox")]
pub fn sandbox(repo: Repo, clock: Arc<dyn Clock>) -> Result<Arc<dyn PaymentGateway>, crate::app::ConfigError> {
    Ok(Arc::new(recoup_sandbox::SandboxGateway::new(repo, clock)))
}

#[cfg(not(feature = "sandbox"))]
pub fn sandbox<R, C>(_repo: R, _clock: C) -> Result<Arc<dyn PaymentGateway>, ConfigError> {
    Err(ConfigError(
        "RECOUP_PAYMENT_PROVIDER=sandbox, but this build leaves the sandbox out (built without the `sandbox` feature)"
            .into(),
    ))
}

/// Stripe, with the secret key read from AWS Secrets Manager on first use (not at cold
/// start: functions that never charge never fetch it) and kept in memory.
#[cfg(all(feature = "aws", feature = "stripe"))]
pub fn stripe(
    config: &aws_types::SdkConfig,
    settings: &crate::app::StripeSettings,
    repo: recoup_shared::store::repo::Repo,
) -> Result<Arc<dyn PaymentGateway>, crate::app::ConfigError> {
    let secret = Arc::new(SecretsManagerSecret::new(config, settings.api_key_secret_arn.clone()));
    let api_base = settings.api_base.clone();
    Ok(Arc::new(LazyGateway::new("stripe", move || {
        let (secret, api_base, repo) = (secret.clone(), api_base.clone(), repo.clone());
        async move {
            use crate::app::SecretSource;
            let values =
                secret.values().await.map_err(|e| GatewayError::Unavailable(format!("the Stripe key: {e}")))?;
            let key = values.into_iter().next().unwrap_or_default();
            let client = recoup_stripe::StripeClient::new(recoup_stripe::ClientConfig::new(
                api_base,
                recoup_stripe::SecretKey::new(key),
            ));
            Ok(Arc::new(recoup_stripe::StripeGateway::new(client, repo)) as Arc<dyn PaymentGateway>)
        }
    })))
}

#[cfg(all(feature = "aws", not(feature = "stripe")))]
pub fn stripe<A, S, R>(_config: A, _settings: S, _repo: R) -> Result<Arc<dyn PaymentGateway>, ConfigError> {
    Err(ConfigError(
        "RECOUP_PAYMENT_PROVIDER=stripe, but this build leaves Stripe out (built without the `stripe` feature)".into(),
    ))
}

/// A Secrets Manager secret, read on first use and kept.
#[cfg(feature = "aws")]
pub struct SecretsManagerSecret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    cache: OnceCell<Vec<String>>,
}

#[cfg(feature = "aws")]
impl SecretsManagerSecret {
    pub fn new(config: &aws_types::SdkConfig, arn: String) -> Self {
        SecretsManagerSecret { client: aws_sdk_secretsmanager::Client::new(config), arn, cache: OnceCell::new() }
    }
}

#[cfg(feature = "aws")]
#[async_trait]
impl crate::app::SecretSource for SecretsManagerSecret {
    async fn values(&self) -> Result<Vec<String>, String> {
        self.cache
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_secret_value()
                    .secret_id(&self.arn)
                    .send()
                    .await
                    .map_err(|e| format!("reading a secret from Secrets Manager: {e}"))?;
                let values = crate::app::split_secrets(out.secret_string().unwrap_or_default());
                if values.is_empty() { Err("the secret has no string value".to_owned()) } else { Ok(values) }
            })
            .await
            .cloned()
    }
}

type Init = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Arc<dyn PaymentGateway>, GatewayError>> + Send>>
        + Send
        + Sync,
>;

/// A gateway built on first use; a failed build is tried again on the next use.
pub struct LazyGateway {
    name: &'static str,
    cell: OnceCell<Arc<dyn PaymentGateway>>,
    init: Init,
}

impl LazyGateway {
    pub fn new<F, Fut>(name: &'static str, init: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn PaymentGateway>, GatewayError>> + Send + 'static,
    {
        LazyGateway { name, cell: OnceCell::new(), init: Box::new(move || Box::pin(init())) }
    }

    async fn get(&self) -> Result<&Arc<dyn PaymentGateway>, GatewayError> {
        self.cell.get_or_try_init(|| (self.init)()).await
    }
}

#[async_trait]
impl PaymentGateway for LazyGateway {
    async fn verify(&self, psp_token: &str, customer: &CustomerId) -> Result<VerifiedCard, GatewayError> {
        self.get().await?.verify(psp_token, customer).await
    }

    async fn begin_setup(&self, customer: &CustomerId) -> Result<CardSetup, GatewayError> {
        self.get().await?.begin_setup(customer).await
    }

    async fn verify_setup(
        &self,
        setup_id: &str,
        psp_token: &str,
        customer: &CustomerId,
    ) -> Result<VerifiedCard, GatewayError> {
        self.get().await?.verify_setup(setup_id, psp_token, customer).await
    }

    async fn charge(&self, request: &ChargeRequest) -> AttemptOutcome {
        match self.get().await {
            Ok(g) => g.charge(request).await,
            // Nothing was sent: the attempt stays pending and is reconciled by its key.
            Err(e) => {
                tracing::error!(provider = self.name, error = %e, "the payment provider could not be set up");
                AttemptOutcome::Unknown
            }
        }
    }

    async fn detach(&self, psp_token: &str) -> Result<(), GatewayError> {
        self.get().await?.detach(psp_token).await
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        self.get().await?.lookup(idempotency_key).await
    }

    async fn payment_outcome(&self, payment_id: &str) -> Result<Option<AttemptOutcome>, GatewayError> {
        self.get().await?.payment_outcome(payment_id).await
    }

    async fn payment_owner(&self, payment_id: &str) -> Result<Option<(InvoiceId, CustomerId)>, GatewayError> {
        self.get().await?.payment_owner(payment_id).await
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

#[cfg(all(test, feature = "sandbox"))]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_lazy_gateway_is_built_once_on_first_use_and_retried_after_a_failure() {
        let builds = Arc::new(AtomicU32::new(0));
        let b = builds.clone();
        let lazy = LazyGateway::new("test", move || {
            let n = b.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err(GatewayError::Unavailable("secret not readable yet".into()));
                }
                let store = recoup_shared::testkit::embedded_store();
                let repo = Repo::new(store);
                let clock: Arc<dyn Clock> = Arc::new(recoup_shared::time::ManualClock::at_default_start());
                sandbox(repo, clock).map_err(|e| GatewayError::Unavailable(e.to_string()))
            }
        });
        assert_eq!(builds.load(Ordering::SeqCst), 0, "nothing is built before first use");
        assert!(lazy.lookup("k").await.is_err());
        assert_eq!(lazy.lookup("k").await, Ok(None));
        assert_eq!(lazy.lookup("k").await, Ok(None));
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }
}
