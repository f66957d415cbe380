//! AWS wiring: one SDK configuration per cold start, an EventBridge publisher and an SQS
//! sender. `AWS_ENDPOINT_URL` points everything at an emulator.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future};
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::{RetryConfig, TimeoutConfig};

use crate::domain::events::{EVENT_SOURCE, Event};
use crate::ports::messaging::{EventPublisher, PublishError, QueueError, QueueSender};

/// The SDK configuration from the environment Lambda gives a function:
/// * the region from `AWS_REGION` (or `AWS_DEFAULT_REGION`);
/// * credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`,
///   read when a request is signed;
/// * `AWS_ENDPOINT_URL`, when set, for every service (an emulator).
///
/// Nothing is read from disk and no network call is made: no profile files, no STS, no
/// instance metadata (what aws-config's default chain would try first). Retries are the
/// SDK's standard mode (3 attempts, exponential backoff with jitter), and a connection
/// must open within 3.1 s. HTTPS is rustls with ring, and the root certificates are
/// compiled in ([`compiled_in_roots`]).
pub async fn sdk_config() -> SdkConfig {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut config = base_config().credentials_provider(SharedCredentialsProvider::new(EnvironmentCredentials));
    config.set_region(env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).map(Region::new));
    config.set_endpoint_url(env("AWS_ENDPOINT_URL"));
    config.build()
}

/// A configuration pointed at an explicit endpoint (an emulator) with static dummy
/// credentials: for tests, benchmarks and local tooling.
pub async fn sdk_config_for_endpoint(endpoint: &str) -> SdkConfig {
    base_config()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "static")))
        .build()
}

fn base_config() -> aws_types::sdk_config::Builder {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(LazyHttps::default()))
        .retry_config(RetryConfig::standard())
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_millis(3100)).build())
}

/// The HTTPS client, made when the first request needs a connection: its trust store (a
/// hundred-odd root certificates) is built then, not before a function's first poll.
#[derive(Debug, Default)]
struct LazyHttps(OnceLock<SharedHttpClient>);

impl HttpClient for LazyHttps {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0
            .get_or_init(|| {
                let trust = compiled_in_roots()
                    .iter()
                    .fold(tls::TrustStore::empty(), |store, pem| store.with_pem_certificate(pem.as_bytes()));
                let tls_context = tls::TlsContext::builder()
                    .with_trust_store(trust)
                    .build()
                    .expect("a TLS context of the compiled-in PEM roots");
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                    .tls_context(tls_context)
                    .build_https()
            })
            .http_connector(settings, components)
    }
}

/// An SDK client made on first use, then kept. Making one costs about half a millisecond
/// (its endpoint resolver, retry and identity plumbing), which a function used to pay for
/// every client before its first poll, whether or not an invocation would call it.
/// Clones share the client.
pub struct LazyClient<C> {
    client: Arc<OnceLock<C>>,
    make: Option<(SdkConfig, MakeClient<C>)>,
}

/// How a client is made from the configuration (e.g. `aws_sdk_sqs::Client::new`).
pub type MakeClient<C> = fn(&SdkConfig) -> C;

impl<C> LazyClient<C> {
    /// A client made from `config` by `make` when first asked for.
    pub fn new(config: &SdkConfig, make: MakeClient<C>) -> Self {
        LazyClient { client: Arc::new(OnceLock::new()), make: Some((config.clone(), make)) }
    }

    /// A client made already.
    pub fn ready(client: C) -> Self {
        LazyClient { client: Arc::new(OnceLock::from(client)), make: None }
    }

    pub fn get(&self) -> &C {
        self.client.get_or_init(|| match &self.make {
            Some((config, make)) => make(config),
            None => unreachable!("a ready LazyClient holds its client"),
        })
    }
}

impl<C> Clone for LazyClient<C> {
    fn clone(&self) -> Self {
        LazyClient { client: self.client.clone(), make: self.make.clone() }
    }
}

/// Mozilla's root certificates (the `webpki-root-certs` crate), as PEM: the SDK's TLS
/// settings take PEM. Compiled into the binary, so no function reads `/etc/ssl` (which
/// cost a cold start several milliseconds and depends on the image).
pub fn compiled_in_roots() -> Vec<String> {
    use base64::Engine as _;
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let mut pem = String::with_capacity(b64.len() + b64.len() / 64 + 64);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            pem
        })
        .collect()
}

/// Credentials from the environment variables Lambda sets for the function's role.
#[derive(Debug)]
struct EnvironmentCredentials;

impl EnvironmentCredentials {
    fn read() -> Result<Credentials, CredentialsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| CredentialsError::not_loaded(format!("{name} is not set"));
        let key = var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret = var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        Ok(Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment"))
    }
}

impl ProvideCredentials for EnvironmentCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Self::read())
    }
}

/// Publishes events to an EventBridge bus, ten per call (the API's batch limit).
pub struct EventBridgePublisher {
    client: LazyClient<aws_sdk_eventbridge::Client>,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgePublisher { client: LazyClient::ready(client), bus: bus.into() }
    }

    /// Its client made at the first publish.
    pub fn lazy(config: &SdkConfig, bus: impl Into<String>) -> Self {
        EventBridgePublisher { client: LazyClient::new(config, aws_sdk_eventbridge::Client::new), bus: bus.into() }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError> {
        let mut delivered = Vec::with_capacity(events.len());
        for chunk in events.chunks(10) {
            let mut req = self.client.get().put_events();
            for e in chunk {
                let detail = serde_json::to_string(e).map_err(|err| PublishError(err.to_string()))?;
                req = req.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(EVENT_SOURCE)
                        .detail_type(e.kind())
                        .detail(detail)
                        .resources(format!("recoup:event:{}", e.id))
                        .build(),
                );
            }
            let out = req.send().await.map_err(|err| PublishError(format!("{err:?}")))?;
            let entries = out.entries();
            for (i, _) in chunk.iter().enumerate() {
                let ok = entries.get(i).is_some_and(|r| r.error_code().is_none() && r.event_id().is_some());
                delivered.push(ok);
            }
        }
        Ok(delivered)
    }
}

/// Sends messages to one SQS queue, ten per call.
pub struct SqsSender {
    client: LazyClient<aws_sdk_sqs::Client>,
    queue_url: String,
}

impl SqsSender {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsSender { client: LazyClient::ready(client), queue_url: queue_url.into() }
    }

    /// Its client made at the first send.
    pub fn lazy(config: &SdkConfig, queue_url: impl Into<String>) -> Self {
        SqsSender { client: LazyClient::new(config, aws_sdk_sqs::Client::new), queue_url: queue_url.into() }
    }
}

#[async_trait]
impl QueueSender for SqsSender {
    async fn send(&self, bodies: &[String]) -> Result<(), QueueError> {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .get()
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError(format!("{e:?}")))?;
            if !out.failed().is_empty() {
                return Err(QueueError(format!("{} messages were not accepted", out.failed().len())));
            }
        }
        Ok(())
    }

    async fn send_delayed(&self, body: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        let seconds = delay.as_secs().min(crate::ports::messaging::MAX_DELAY_SECONDS) as i32;
        self.client
            .get()
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(seconds)
            .send()
            .await
            .map_err(|e| QueueError(format!("{e:?}")))?;
        Ok(())
    }
}

/// Shared handle type for the wiring in `main.rs`.
pub type SharedPublisher = Arc<dyn EventPublisher>;

/// Sends emails through Amazon SES v2 (`SendEmail` with the raw MIME message, so text and
/// HTML parts, `Reply-To` and the message id are exactly what the local `.eml` shows).
pub struct SesTransport {
    client: LazyClient<aws_sdk_sesv2::Client>,
}

impl SesTransport {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        SesTransport { client: LazyClient::ready(client) }
    }

    /// Its client made at the first email.
    pub fn lazy(config: &SdkConfig) -> Self {
        SesTransport { client: LazyClient::new(config, aws_sdk_sesv2::Client::new) }
    }
}

#[async_trait]
impl crate::ports::mailer::MailTransport for SesTransport {
    async fn deliver(
        &self,
        _email: &crate::ports::mailer::Email,
        sender: &crate::ports::mailer::Sender,
        mime: &[u8],
    ) -> Result<String, crate::ports::mailer::MailError> {
        use aws_sdk_sesv2::primitives::Blob;
        use aws_sdk_sesv2::types::{EmailContent, RawMessage};
        let fail = |e: String| crate::ports::mailer::MailError(e);
        let raw = RawMessage::builder().data(Blob::new(mime.to_vec())).build().map_err(|e| fail(e.to_string()))?;
        // The recipients are the message's own To header.
        let out = self
            .client
            .get()
            .send_email()
            .from_email_address(&sender.from)
            .set_configuration_set_name(sender.configuration_set.clone())
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await
            .map_err(|e| fail(format!("{e:?}")))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }
}
