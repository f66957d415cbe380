//! Helpers for the test crates: stores on both backends, and `Services` over a payment
//! gateway of the caller's choice (the engine's scenarios use the sandbox crate's).

use std::sync::Arc;

use crate::domain::events::Event;
use crate::domain::policy::DunningPolicy;
use crate::mail::StoreMailer;
use crate::ports::gateway::PaymentGateway;
use crate::ports::messaging::{EventPublisher, PublishError};
use crate::services::Services;
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

/// A fresh embedded store on redb's in-memory backend (nothing on disk).
#[cfg(feature = "embedded")]
pub fn embedded_store_in_memory() -> Arc<dyn ItemStore> {
    Arc::new(crate::store::embedded::EmbeddedStore::in_memory().expect("open in-memory embedded store"))
}

/// A DynamoDB store on the emulator, in `table` (created if missing).
#[cfg(feature = "aws")]
pub async fn dynamo_store(table: &str) -> crate::store::dynamodb::DynamoStore {
    let store = dynamo_store_unmade(table).await;
    store.ensure_table().await.expect("create table on the emulator");
    store
}

/// A DynamoDB store on the emulator, in `table`, without creating it.
#[cfg(feature = "aws")]
pub async fn dynamo_store_unmade(table: &str) -> crate::store::dynamodb::DynamoStore {
    let config = crate::aws::sdk_config_for_endpoint(&moto_endpoint()).await;
    crate::store::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table)
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

/// Services over `store` with a manual clock and a recording publisher.
pub struct TestApp {
    pub services: Services,
    pub clock: Arc<ManualClock>,
    pub published: Arc<RecordingPublisher>,
}

/// `gateway` builds the PSP adapter over the same store and clock.
pub fn test_app(
    store: Arc<dyn ItemStore>,
    gateway: impl FnOnce(Repo, Arc<dyn Clock>) -> Arc<dyn PaymentGateway>,
) -> TestApp {
    let repo = Repo::new(store);
    let clock = Arc::new(ManualClock::at_default_start());
    let published = Arc::new(RecordingPublisher::default());
    let gateway = gateway(repo.clone(), clock.clone() as Arc<dyn Clock>);
    let services = Services {
        repo: repo.clone(),
        gateway,
        clock: clock.clone(),
        publisher: published.clone(),
        mailer: Arc::new(StoreMailer::new(repo)),
        policy: DunningPolicy::default(),
        portal_url: "https://billing.example.com/portal".into(),
        merchant_email: None,
        portal_links: None,
        card_turns: Default::default(),
        publishing: Default::default(),
    };
    TestApp { services, clock, published }
}

type Hook = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
type WritePredicate = Box<dyn Fn(&[crate::store::WriteOp]) -> bool + Send + Sync>;

enum Interference {
    /// Run another actor's work just before the write.
    RunBefore(Hook),
    /// The write fails as if the store were unreachable; nothing is written.
    Fail,
    /// The write is canceled by a concurrent transaction; nothing is written.
    Collide,
    /// The write succeeds, then the store is unreachable until [`InterleavingStore::restore`].
    DownAfter,
}

/// A store wrapper that puts another actor's work, or a failure, at an exact point of a use
/// case: at the first write that matches a predicate. It turns a race that a review found by
/// reading the code into a test that fails the same way every time.
pub struct InterleavingStore {
    inner: Arc<dyn ItemStore>,
    armed: std::sync::Mutex<Option<(WritePredicate, Interference)>>,
    down: std::sync::atomic::AtomicBool,
    fired: std::sync::atomic::AtomicBool,
}

/// Matches a write that puts an item of this kind (`invoice`, `subscription`, ...).
pub fn puts(kind: &'static str) -> impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static {
    move |ops| ops.iter().any(|op| matches!(op, crate::store::WriteOp::Put { item, .. } if item.entity == kind))
}

impl InterleavingStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Arc<Self> {
        Arc::new(InterleavingStore {
            inner,
            armed: std::sync::Mutex::new(None),
            down: std::sync::atomic::AtomicBool::new(false),
            fired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn arm(&self, when: impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static, what: Interference) {
        self.fired.store(false, std::sync::atomic::Ordering::SeqCst);
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((Box::new(when), what));
    }

    /// Runs `hook` (with this store working normally) just before the first matching write.
    pub fn before_write(
        &self,
        when: impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static,
        hook: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.arm(when, Interference::RunBefore(Box::pin(hook)));
    }

    /// Cancels the first matching write as DynamoDB cancels a transaction that collided
    /// with another on one of its items (`TransactionConflict`): nothing is written.
    pub fn collide_write(&self, when: impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static) {
        self.arm(when, Interference::Collide);
    }

    /// Fails the first matching write.
    pub fn fail_write(&self, when: impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static) {
        self.arm(when, Interference::Fail);
    }

    /// Lets the first matching write through, then fails everything until `restore`.
    pub fn down_after_write(&self, when: impl Fn(&[crate::store::WriteOp]) -> bool + Send + Sync + 'static) {
        self.arm(when, Interference::DownAfter);
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the armed interference happened.
    pub fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check_up(&self) -> Result<(), crate::store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::store::StoreError::Unavailable("the test took the store down".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ItemStore for InterleavingStore {
    async fn get(&self, key: &crate::store::Key) -> Result<Option<crate::store::Item>, crate::store::StoreError> {
        self.check_up()?;
        self.inner.get(key).await
    }

    async fn query(&self, query: &crate::store::Query) -> Result<crate::store::Page, crate::store::StoreError> {
        self.check_up()?;
        self.inner.query(query).await
    }

    async fn write(&self, ops: Vec<crate::store::WriteOp>) -> Result<(), crate::store::StoreError> {
        self.check_up()?;
        let triggered = {
            let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            match armed.as_ref() {
                Some((when, _)) if when(&ops) => armed.take().map(|(_, what)| what),
                Some(_) | None => None,
            }
        };
        let Some(what) = triggered else { return self.inner.write(ops).await };
        self.fired.store(true, std::sync::atomic::Ordering::SeqCst);
        match what {
            Interference::RunBefore(hook) => {
                hook.await;
                self.inner.write(ops).await
            }
            Interference::Fail => Err(crate::store::StoreError::Unavailable("the test failed this write".into())),
            Interference::Collide => Err(crate::store::StoreError::Contention(
                "transaction canceled: [\"TransactionConflict\"] (the test collided this write)".into(),
            )),
            Interference::DownAfter => {
                let result = self.inner.write(ops).await;
                self.down.store(true, std::sync::atomic::Ordering::SeqCst);
                result
            }
        }
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
