//! The port through which merchant webhooks leave the system. Adapter:
//! `recoup_lambda::webhook_http::HttpTransport` (an HTTPS client that checks every address
//! it connects to against the endpoint URL policy).

use async_trait::async_trait;

use crate::domain::webhook::AttemptOutcome;

/// One signed POST to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub url: String,
    /// The event's JSON, exactly as signed.
    pub body: Vec<u8>,
    /// The `Recoup-Signature` header.
    pub signature: String,
    /// The event's id, also sent as `Recoup-Event-Id` (what receivers dedupe on).
    pub event_id: String,
}

#[async_trait]
pub trait WebhookTransport: Send + Sync {
    /// Makes the request within the delivery timeout and reads at most a capped part of
    /// the answer. Never fails: what went wrong is the outcome.
    async fn post(&self, request: &WebhookRequest) -> AttemptOutcome;
}
