//! AWS wiring: one SDK configuration per cold start, an EventBridge publisher and an SQS
//! sender. `AWS_ENDPOINT_URL` (read by the SDK itself) points everything at an emulator.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_http_client::tls;

use crate::domain::events::{EVENT_SOURCE, Event};
use crate::ports::messaging::{EventPublisher, PublishError, QueueError, QueueSender};

/// Loads the SDK configuration from the environment (region, credentials, endpoint), with
/// a rustls + ring HTTPS client: no cmake-built crypto in the Lambda binaries.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client).load().await
}

/// A configuration pointed at an explicit endpoint (an emulator) with static dummy
/// credentials: for tests, benchmarks and local tooling.
pub async fn sdk_config_for_endpoint(endpoint: &str) -> aws_config::SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "static"))
        .load()
        .await
}

/// Publishes events to an EventBridge bus, ten per call (the API's batch limit).
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgePublisher { client, bus: bus.into() }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError> {
        let mut delivered = Vec::with_capacity(events.len());
        for chunk in events.chunks(10) {
            let mut req = self.client.put_events();
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
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsSender {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        SqsSender { client, queue_url: queue_url.into() }
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
}

/// Shared handle type for the wiring in `main.rs`.
pub type SharedPublisher = Arc<dyn EventPublisher>;
