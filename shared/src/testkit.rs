//! Helpers for the test crates: stores on both backends, and a sandboxed `Services`.

use std::sync::Arc;

use crate::events::Event;
use crate::mail::StoreMailer;
use crate::policy::DunningPolicy;
use crate::services::Services;
use crate::services::ports::{EventPublisher, PublishError};
use crate::store::ItemStore;
use crate::store::repo::Repo;
use crate::time::{Clock, ManualClock};

/// The emulator the test command started (`moto_server` on 127.0.0.1).
pub fn moto_endpoint() -> String {
    std::env::var("RECOUP_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("RECOUP_TEST_AWS_ENDPOINT is not set: run the tests with `make test`, which starts moto_server")
    })
}

/// A fresh embedded store in a temporary directory.
#[cfg(feature = "embedded")]
pub fn embedded_store() -> Arc<dyn ItemStore> {
    let dir = std::env::temp_dir().join(format!("recoup-test-{}", uuid::Uuid::new_v4().simple()));
    Arc::new(crate::store::embedded::EmbeddedStore::open(dir.join("recoup.redb")).expect("open embedded store"))
}

/// A DynamoDB store on the emulator, in `table` (created if missing).
#[cfg(feature = "aws")]
pub async fn dynamo_store(table: &str) -> crate::store::dynamodb::DynamoStore {
    let config = crate::aws::sdk_config_for_endpoint(&moto_endpoint()).await;
    let store = crate::store::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    store.ensure_table().await.expect("create table on the emulator");
    store
}

/// Collects published events, for assertions.
#[derive(Default)]
pub struct RecordingPublisher {
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl RecordingPublisher {
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).iter().map(Event::kind).collect()
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait::async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).extend(events.iter().cloned());
        Ok(vec![true; events.len()])
    }
}

/// Services over `store` with the sandbox PSP, a manual clock and a recording publisher.
pub struct TestApp {
    pub services: Services,
    pub clock: Arc<ManualClock>,
    pub published: Arc<RecordingPublisher>,
}

pub fn test_app(store: Arc<dyn ItemStore>) -> TestApp {
    let repo = Repo::new(store);
    let clock = Arc::new(ManualClock::at_default_start());
    let published = Arc::new(RecordingPublisher::default());
    let gateway = Arc::new(crate::gateway::sandbox::SandboxGateway::new(repo.clone(), clock.clone() as Arc<dyn Clock>));
    let services = Services {
        repo: repo.clone(),
        gateway,
        clock: clock.clone(),
        publisher: published.clone(),
        mailer: Arc::new(StoreMailer::new(repo)),
        policy: DunningPolicy::default(),
        portal_url: "https://billing.example.com/portal".into(),
    };
    TestApp { services, clock, published }
}
