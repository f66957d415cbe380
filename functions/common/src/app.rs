//! The application context, and its wiring from the Lambda environment.

use std::sync::Arc;

use recoup_shared::domain::policy::{DunningPolicy, RetrySchedule};
use recoup_shared::services::Services;
use recoup_shared::services::ports::QueueSender;
use recoup_shared::time::parse_duration;

/// Built once per process; borrowed by every invocation.
#[derive(Clone)]
pub struct App {
    pub services: Services,
    /// Where the schedulers put charge work (the charge queue).
    pub charge_queue: Option<Arc<dyn QueueSender>>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Which payment provider adapter to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Sandbox,
}

/// Settings read from the environment (see `template.yaml` for the values in AWS).
#[derive(Debug, Clone)]
pub struct Settings {
    pub table: String,
    pub event_bus: String,
    pub charge_queue_url: Option<String>,
    pub policy: DunningPolicy,
    pub portal_url: String,
    pub provider: Provider,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
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
        let provider = match get("RECOUP_PAYMENT_PROVIDER").as_deref().unwrap_or("sandbox") {
            "sandbox" => Provider::Sandbox,
            other => {
                return Err(ConfigError(format!(
                    "RECOUP_PAYMENT_PROVIDER={other:?}: only \"sandbox\" is available in this release"
                )));
            }
        };
        Ok(Settings {
            table: required("RECOUP_TABLE")?,
            event_bus: required("RECOUP_EVENT_BUS")?,
            charge_queue_url: get("RECOUP_CHARGE_QUEUE_URL"),
            policy: DunningPolicy { schedule, reconcile_after },
            portal_url: get("RECOUP_PORTAL_URL").unwrap_or_else(|| "http://127.0.0.1:8080/portal".into()),
            provider,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(var)
    }
}

/// Wires the AWS adapters: DynamoDB store, EventBridge publisher, SQS charge queue.
#[cfg(feature = "aws")]
pub async fn from_env() -> Result<App, ConfigError> {
    use recoup_shared::aws::{EventBridgePublisher, SqsSender, sdk_config};
    use recoup_shared::gateway::PaymentGateway;
    use recoup_shared::gateway::sandbox::SandboxGateway;
    use recoup_shared::mail::StoreMailer;
    use recoup_shared::store::ItemStore;
    use recoup_shared::store::dynamodb::DynamoStore;
    use recoup_shared::store::repo::Repo;
    use recoup_shared::time::{Clock, SystemClock};

    let settings = Settings::from_env()?;
    let config = sdk_config().await;
    let store: Arc<dyn ItemStore> = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), &settings.table));
    let repo = Repo::new(store);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gateway: Arc<dyn PaymentGateway> = match settings.provider {
        Provider::Sandbox => Arc::new(SandboxGateway::new(repo.clone(), clock.clone())),
    };
    let charge_queue = settings
        .charge_queue_url
        .clone()
        .map(|url| Arc::new(SqsSender::new(aws_sdk_sqs::Client::new(&config), url)) as Arc<dyn QueueSender>);
    let services = Services {
        repo: repo.clone(),
        gateway,
        clock,
        publisher: Arc::new(EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&config), &settings.event_bus)),
        mailer: Arc::new(StoreMailer::new(repo)),
        policy: settings.policy,
        portal_url: settings.portal_url,
    };
    Ok(App { services, charge_queue })
}

/// JSON logs for CloudWatch (the runtime's subscriber honours `AWS_LAMBDA_LOG_LEVEL`).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
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
            ("RECOUP_PAYMENT_PROVIDER", "stripe"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("sandbox"));
    }
}
