//! The local product: every Recoup function's handler in one process, over the embedded
//! store and a payment provider (the sandbox, or Stripe's API: a test-mode account or
//! localstripe), with an in-process bus and queues routed like EventBridge
//! and SQS, the schedules on a tick, and a dev clock that can jump ahead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeDelta;
use recoup_lambda::App;
use recoup_lambda::app::CardForm;
use recoup_sandbox::SandboxGateway;
use recoup_shared::domain::policy::DunningPolicy;
use recoup_shared::mail::{EmlDirectory, StoreMailer};
use recoup_shared::ports::gateway::PaymentGateway;
use recoup_shared::services::Services;
use recoup_shared::store::ItemStore;
use recoup_shared::store::embedded::EmbeddedStore;
use recoup_shared::store::repo::Repo;
use recoup_shared::time::{Clock, OffsetClock};
use serde_json::{Value, json};

pub mod jwt;
pub mod plumbing;
pub mod server;

use plumbing::{LocalBus, Queues, scheduled_event};

pub struct Options {
    pub data_dir: PathBuf,
    pub jwt_secret: String,
    pub policy: DunningPolicy,
    pub portal_url: String,
    /// The merchant's address, for the emails Recoup sends the merchant.
    pub merchant_email: Option<String>,
    pub provider: LocalProvider,
    /// The signing secret(s) of Stripe's webhooks to `/v1/webhooks/stripe`.
    pub stripe_webhook_secrets: Option<Vec<String>>,
}

/// The PSP the local product charges through.
#[derive(Clone)]
pub enum LocalProvider {
    /// The sandbox, with its card form at `/sandbox/v1/payment_methods`.
    Sandbox,
    /// Stripe's API at `api_base` (`https://api.stripe.com` with a test-mode key, or
    /// localstripe). Locally the key is an option; deployed, it lives in Secrets Manager.
    /// The card form loads Stripe.js from `js_url` with `publishable_key`.
    Stripe { api_base: String, api_key: recoup_stripe::SecretKey, publishable_key: Option<String>, js_url: String },
}

pub struct Local {
    pub app: App,
    pub clock: Arc<OffsetClock>,
    pub queues: Arc<Queues>,
    pub bus: Arc<LocalBus>,
    pub mailer: Arc<StoreMailer>,
    /// The sandbox's card form, when the sandbox is the provider.
    pub sandbox: Option<Arc<SandboxGateway>>,
    pub jwt_secret: String,
    data_dir: PathBuf,
    /// One schedule run at a time, as one EventBridge rule invokes one function.
    schedules: tokio::sync::Mutex<()>,
    /// One write of the dev clock's offset file at a time.
    clock_file: std::sync::Mutex<()>,
}

/// The local portal's signing key: derived from the JWT secret, never the secret itself.
fn portal_secret(jwt_secret: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(jwt_secret.as_bytes()).expect("any key length");
    mac.update(b"recoup portal links and sessions");
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn offset_file(dir: &Path) -> PathBuf {
    dir.join("clock-offset-ms")
}

impl Local {
    /// Opens (or creates) the data directory. Data and the dev clock survive restarts.
    /// The queues are in the same store as the data: what was queued before a crash is
    /// delivered after it.
    pub async fn open(options: Options) -> Result<Arc<Local>, String> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
        let store: Arc<dyn ItemStore> =
            Arc::new(EmbeddedStore::open(options.data_dir.join("recoup.redb")).map_err(|e| e.to_string())?);
        let repo = Repo::new(store.clone());
        let clock = Arc::new(OffsetClock::default());
        if let Ok(saved) = std::fs::read_to_string(offset_file(&options.data_dir))
            && let Ok(ms) = saved.trim().parse::<i64>()
        {
            clock.advance(TimeDelta::milliseconds(ms));
        }
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let queues = Arc::new(Queues::open(store, dyn_clock.clone()).await.map_err(|e| format!("the queues: {e}"))?);
        let bus = Arc::new(LocalBus::new(queues.clone(), dyn_clock.clone()));
        let card_form = match &options.provider {
            LocalProvider::Sandbox => CardForm {
                provider: "sandbox",
                sandbox_tokenize_url: Some("/sandbox/v1/payment_methods".into()),
                ..CardForm::default()
            },
            LocalProvider::Stripe { publishable_key, js_url, .. } => CardForm {
                provider: "stripe",
                publishable_key: publishable_key.clone(),
                stripe_js_url: js_url.clone(),
                sandbox_tokenize_url: None,
            },
        };
        let (gateway, sandbox): (Arc<dyn PaymentGateway>, _) = match options.provider {
            LocalProvider::Sandbox => {
                let sandbox = Arc::new(SandboxGateway::new(repo.clone(), dyn_clock.clone()));
                (sandbox.clone(), Some(sandbox))
            }
            LocalProvider::Stripe { api_base, api_key, .. } => {
                let client = recoup_stripe::StripeClient::new(recoup_stripe::ClientConfig::new(api_base, api_key));
                (Arc::new(recoup_stripe::StripeGateway::new(client, repo.clone())), None)
            }
        };
        // Each email is also written as an `.eml` file (a mail client opens it).
        let mailer = Arc::new(StoreMailer::sending(
            repo.clone(),
            Arc::new(EmlDirectory::new(options.data_dir.join("emails"))),
            recoup_shared::mail::Sender {
                from: "Recoup Billing <billing@recoup.localhost>".into(),
                reply_to: None,
                configuration_set: None,
            },
        ));
        let services = Services {
            repo,
            gateway,
            clock: dyn_clock,
            publisher: bus.clone(),
            mailer: mailer.clone(),
            policy: options.policy,
            portal_url: options.portal_url,
            merchant_email: options.merchant_email,
            portal_links: None,
            card_turns: Default::default(),
            // A long-running process: a request does not wait for the bus and the outbox mark.
            publishing: recoup_shared::services::outbox::Publishing::Background(Default::default()),
        };
        let psp_webhook_secrets = options.stripe_webhook_secrets.map(|secrets| {
            Arc::new(recoup_lambda::app::FixedSecrets(secrets)) as Arc<dyn recoup_lambda::app::SecretSource>
        });
        // The local product delivers to receivers on this machine too (plain http allowed).
        let webhooks = recoup_lambda::app::Webhooks::new(
            recoup_shared::domain::webhook::UrlPolicy::AllowLoopback,
            Some(queues.webhooks.clone() as Arc<dyn recoup_shared::ports::messaging::QueueSender>),
        );
        // Portal links and sessions are signed with a key derived from the JWT secret.
        let portal_secrets = Some(Arc::new(recoup_lambda::app::FixedSecrets(vec![portal_secret(&options.jwt_secret)]))
            as Arc<dyn recoup_lambda::app::SecretSource>);
        // Emails carry a signed link to the customer's billing page.
        let mut services = services;
        services.portal_links = portal_secrets.clone().map(|secrets| {
            Arc::new(recoup_lambda::app::SignedPortalLinks {
                secrets,
                clock: services.clock.clone(),
                portal_url: services.portal_url.clone(),
            }) as Arc<dyn recoup_shared::ports::portal::PortalLinks>
        });
        let app = App {
            services,
            charge_queue: Some(queues.charge.clone()),
            psp_webhook_secrets,
            card_form,
            webhooks,
            portal_secrets,
        };
        Ok(Arc::new(Local {
            app,
            clock,
            queues,
            bus,
            mailer,
            sandbox,
            jwt_secret: options.jwt_secret,
            data_dir: options.data_dir,
            schedules: tokio::sync::Mutex::new(()),
            clock_file: std::sync::Mutex::new(()),
        }))
    }

    /// Moves the dev clock forward (never back) and remembers it across restarts. The
    /// offset is written to a temporary file that then replaces the old one, so a crash
    /// mid-write leaves the old offset, never an empty file (which would read as no offset
    /// and set the clock back); one advance at a time, so the file ends at the latest.
    pub fn advance_clock(&self, by: TimeDelta) -> std::io::Result<()> {
        let _one_at_a_time = self.clock_file.lock().unwrap_or_else(|e| e.into_inner());
        self.clock.advance(by);
        let path = offset_file(&self.data_dir);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.clock.offset().num_milliseconds().to_string())?;
        std::fs::rename(&tmp, &path)
    }

    /// Waits until the events of every request answered before this call are on the bus
    /// (requests answer while their events are published; see `Publishing`). Whatever looks
    /// at the bus's output (a queue drain, the relay, the dev console) calls this first, so
    /// it sees what it would have seen had every request waited.
    pub async fn caught_up(&self) {
        recoup_shared::services::outbox::caught_up(&self.app.services).await;
    }

    /// Runs each scheduled function once, as its EventBridge schedule would.
    pub async fn run_schedules(&self) -> Value {
        let _one_at_a_time = self.schedules.lock().await;
        let mut runs = serde_json::Map::new();
        for (function, _rate, handle) in recoup_functions::schedules() {
            // What the requests and the schedules before this one committed is published
            // first: the relay would otherwise publish it again.
            self.caught_up().await;
            let event = scheduled_event(&function.logical_id(), self.clock.as_ref());
            let result = handle(&self.app, event).await.unwrap_or_else(|e| {
                e.log_at_edge("schedule");
                json!({"error": e.code})
            });
            runs.insert(function.name.replace('-', "_"), result);
        }
        Value::Object(runs)
    }

    /// Delivers queued messages until every queue is idle (or a bound is reached).
    pub async fn drain(&self) -> usize {
        let mut delivered = 0;
        for _ in 0..1_000 {
            // What the last round's consumers committed is queued before this one looks.
            self.caught_up().await;
            let mut round = 0;
            for q in self.queues.all() {
                round += self.queues.deliver(&self.app, q).await;
            }
            delivered += round;
            if round == 0 {
                break;
            }
        }
        delivered
    }

    /// Schedules, then every consequence: what one tick of the product does.
    pub async fn tick(&self) -> Value {
        let mut runs = Vec::new();
        let mut delivered = 0;
        // Work can beget work (a renewal's charge, its events): repeat until quiet.
        for _ in 0..10 {
            let run = self.run_schedules().await;
            let n = self.drain().await;
            delivered += n;
            let quiet = n == 0
                && run["retry_scheduler"]["enqueued"] == json!(0)
                && run["renewal_scheduler"]["renewed"] == json!(0);
            runs.push(run);
            if quiet {
                break;
            }
        }
        json!({"now": recoup_lambda::views::time(self.clock.now()), "schedules": runs, "messages_delivered": delivered})
    }
}
