//! Merchant webhooks: managing endpoints, and delivering events to them.
//!
//! Delivery runs in the `webhook-dispatcher` function: an event from the bus becomes one
//! [`Delivery`] per endpoint that wants it (created once, whatever the redeliveries), and
//! each attempt is claimed in the store before its request goes out, so two workers
//! never make the same attempt (unless one died mid-attempt: then it is made again after
//! [`ATTEMPT_LEASE`], at least once). What follows an attempt is written with its outcome:
//! delivered, the next attempt's time, or failed with a `webhook_endpoint.delivery_failed`
//! event. The caller puts the next attempt on the queue (see [`AttemptResult`]).

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::events::{Event, EventPayload};
use crate::domain::webhook::{
    API_VERSION, Delivery, DeliveryStatus, EndpointStatus, MAX_DESCRIPTION_LEN, MAX_ROLL_WINDOW, Next, UrlError,
    UrlPolicy, WebhookEndpoint, check_event_types, check_url, signature_header,
};
use crate::error::{Code, Error, Result};
use crate::ids::{EventId, WebhookEndpointId};
use crate::ports::webhooks::{WebhookRequest, WebhookTransport};
use crate::store::Cursor;
use crate::store::StoreError;
use crate::store::repo::{Listing, Tx, Versioned};
use crate::time::Timestamp;

use super::{Decision, Services};

/// The body of a webhook-queue message that asks for one attempt of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptMessage {
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    /// Which attempt (1 for the first): a message for an attempt already made is dropped.
    pub attempt: u32,
}

impl AttemptMessage {
    pub fn encode(&self) -> String {
        json!({ "webhook_attempt": self }).to_string()
    }

    /// The attempt a queue message asks for, if it is one (else it is a bus event).
    pub fn decode(body: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Wrapper {
            webhook_attempt: AttemptMessage,
        }
        serde_json::from_str::<Wrapper>(body).ok().map(|w| w.webhook_attempt)
    }
}

/// What an attempt request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// Nothing more to do for this message.
    Done,
    /// Put `message` on the queue to arrive at `at` (the next attempt, or this one if it
    /// was asked for early).
    Later { message: AttemptMessage, at: Timestamp },
}

/// What a merchant asks for when registering an endpoint.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    pub url: String,
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
}

fn url_error(e: UrlError) -> Error {
    let code = match e {
        UrlError::Invalid(_) => Code::InvalidUrl,
        UrlError::NotHttps => Code::UrlNotHttps,
        UrlError::ForbiddenAddress(_) => Code::UrlForbiddenAddress,
    };
    Error::new(code, e.to_string()).with("field", "url")
}

/// The JSON a receiver gets: the event, with `data.object` holding what it is about.
pub fn webhook_body(event: &Event) -> Value {
    let data = serde_json::to_value(&event.payload).ok().and_then(|mut v| v.get_mut("data").map(Value::take));
    json!({
        "id": event.id,
        "object": "event",
        "type": event.kind(),
        "api_version": API_VERSION,
        "created": event.occurred_at.timestamp(),
        "data": { "object": data.unwrap_or(Value::Null) },
    })
}

impl Services {
    pub async fn create_webhook_endpoint(&self, new: NewEndpoint, policy: UrlPolicy) -> Result<WebhookEndpoint> {
        let url = check_url(&new.url, policy).map_err(url_error)?;
        let events = check_event_types(&new.enabled_events)
            .map_err(|m| Error::new(Code::InvalidEventType, m).with("field", "enabled_events"))?;
        let description = new.description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(Error::new(
                Code::InvalidRequest,
                format!("description is over {MAX_DESCRIPTION_LEN} characters"),
            )
            .with("field", "description"));
        }
        let endpoint = WebhookEndpoint::new(url.to_string(), events, description, self.now());
        let mut tx = Tx::new();
        tx.save(&Versioned::new(endpoint.clone()))?;
        self.repo.commit(tx).await?;
        tracing::info!(webhook_endpoint_id = %endpoint.id, url = %endpoint.url, "webhook endpoint created");
        Ok(endpoint)
    }

    pub async fn webhook_endpoint(&self, id: &WebhookEndpointId) -> Result<Versioned<WebhookEndpoint>> {
        self.repo.webhook_endpoint(id).await?.ok_or_else(|| Error::not_found("webhook endpoint"))
    }

    pub async fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        Ok(self.repo.webhook_endpoints().await?.into_iter().map(Versioned::into_inner).collect())
    }

    /// Deletes the endpoint; its pending deliveries fail when next due.
    pub async fn delete_webhook_endpoint(&self, id: &WebhookEndpointId) -> Result<()> {
        self.optimistic("webhook endpoint", || async move {
            let endpoint = self.webhook_endpoint(id).await?;
            let mut tx = Tx::new();
            tx.delete(&endpoint);
            Ok(Decision::Commit(tx, ()))
        })
        .await
    }

    /// Enables or disables the endpoint (a disabled endpoint gets no new deliveries, and
    /// its pending ones fail when next due).
    pub async fn set_webhook_endpoint_enabled(&self, id: &WebhookEndpointId, enabled: bool) -> Result<WebhookEndpoint> {
        self.optimistic("webhook endpoint", || async move {
            let mut endpoint = self.webhook_endpoint(id).await?;
            let status = if enabled { EndpointStatus::Enabled } else { EndpointStatus::Disabled };
            if endpoint.status == status {
                return Ok(Decision::Answer(endpoint.into_inner()));
            }
            endpoint.status = status;
            if enabled {
                endpoint.failing_since = None;
            }
            let mut tx = Tx::new();
            tx.save(&endpoint)?;
            Ok(Decision::Commit(tx, endpoint.into_inner()))
        })
        .await
    }

    /// Starts signing with a new secret; the old one keeps signing for `window`. Answers
    /// the endpoint and the new secret (shown once).
    pub async fn roll_webhook_secret(
        &self,
        id: &WebhookEndpointId,
        window: TimeDelta,
    ) -> Result<(WebhookEndpoint, String)> {
        if window < TimeDelta::zero() || window > MAX_ROLL_WINDOW {
            return Err(Error::new(Code::InvalidRequest, "expire_current_in must be 0 to 604800 seconds (a week)")
                .with("field", "expire_current_in"));
        }
        self.optimistic("webhook endpoint", || async move {
            let mut endpoint = self.webhook_endpoint(id).await?;
            let secret = endpoint.roll_secret(window, self.now());
            let mut tx = Tx::new();
            tx.save(&endpoint)?;
            Ok(Decision::Commit(tx, (endpoint.into_inner(), secret)))
        })
        .await
    }

    pub async fn webhook_deliveries(
        &self,
        id: &WebhookEndpointId,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Delivery>> {
        self.webhook_endpoint(id).await?;
        Ok(self.repo.webhook_deliveries(id, limit, after).await?)
    }

    /// The deliveries an event calls for, one per enabled endpoint that wants it and
    /// existed when it happened, each recorded once: an event delivered to the dispatcher
    /// twice makes no second delivery. Answers the first attempts to make.
    pub async fn plan_deliveries(&self, event: &Event) -> Result<Vec<AttemptMessage>> {
        let now = self.now();
        let mut out = Vec::new();
        for endpoint in self.repo.webhook_endpoints().await? {
            if !endpoint.wants(event.kind()) || endpoint.created_at > event.occurred_at {
                continue;
            }
            let delivery = Delivery::new(endpoint.id.clone(), event.id.clone(), event.kind(), now);
            let mut tx = Tx::new();
            tx.save(&Versioned::new(delivery))?;
            match self.repo.commit(tx).await {
                Ok(_) => {}
                // Planned before: attempt it only if no attempt ever began (the run that
                // planned it died first).
                Err(StoreError::ConditionFailed { .. }) => {
                    let existing = self.repo.webhook_delivery(&endpoint.id, &event.id).await?;
                    if !existing.is_some_and(|d| d.status == DeliveryStatus::Pending && d.attempts == 0) {
                        continue;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            out.push(AttemptMessage { endpoint_id: endpoint.id.clone(), event_id: event.id.clone(), attempt: 1 });
        }
        Ok(out)
    }

    /// Sends an event again, to one endpoint or to every enabled endpoint that wants it.
    /// Answers the attempts to make.
    pub async fn resend_event(
        &self,
        event_id: &EventId,
        only: Option<&WebhookEndpointId>,
    ) -> Result<Vec<AttemptMessage>> {
        let record = self.repo.event(event_id).await?.ok_or_else(|| Error::not_found("event"))?;
        let event = &record.event;
        let endpoints = match only {
            Some(id) => vec![self.webhook_endpoint(id).await?.into_inner()],
            None => self.webhook_endpoints().await?,
        };
        let mut out = Vec::new();
        for endpoint in endpoints.iter().filter(|e| e.wants(event.kind()) || only.is_some()) {
            if endpoint.status != EndpointStatus::Enabled {
                return Err(Error::new(Code::WebhookEndpointDisabled, "the endpoint is disabled; enable it first")
                    .with("webhook_endpoint_id", endpoint.id.as_str()));
            }
            let message = self
                .optimistic("webhook delivery", || async move {
                    let now = self.now();
                    let mut delivery = match self.repo.webhook_delivery(&endpoint.id, event_id).await? {
                        Some(d) => d,
                        None => Versioned::new(Delivery::new(endpoint.id.clone(), event_id.clone(), event.kind(), now)),
                    };
                    match (delivery.status, delivery.attempting_since) {
                        // An attempt is running: it is on its way.
                        (DeliveryStatus::Pending, Some(_)) => return Ok(Decision::Answer(None)),
                        // Waiting for its next attempt (or for the message of a resend whose
                        // enqueue failed): that attempt is made now. A message already on the
                        // queue for it finds it made, and does nothing.
                        (DeliveryStatus::Pending, None) => delivery.next_attempt_at = Some(now),
                        (DeliveryStatus::Delivered | DeliveryStatus::Failed, _) => delivery.resend(now),
                    }
                    let message = AttemptMessage {
                        endpoint_id: endpoint.id.clone(),
                        event_id: event_id.clone(),
                        attempt: delivery.attempts + 1,
                    };
                    let mut tx = Tx::new();
                    tx.save(&delivery)?;
                    Ok(Decision::Commit(tx, Some(message)))
                })
                .await?;
            out.extend(message);
        }
        Ok(out)
    }

    /// Makes the attempt a message asks for, if it is still due, and records what came of
    /// it. `transport` enforces the URL policy on the addresses it connects to.
    pub async fn attempt_delivery(
        &self,
        message: &AttemptMessage,
        transport: &dyn WebhookTransport,
    ) -> Result<AttemptResult> {
        let now = self.now();
        let Some(mut delivery) = self.repo.webhook_delivery(&message.endpoint_id, &message.event_id).await? else {
            return Ok(AttemptResult::Done);
        };
        let n = match delivery.next(message.attempt, now) {
            Next::Nothing => return Ok(AttemptResult::Done),
            Next::Wait { until } => return Ok(AttemptResult::Later { message: message.clone(), at: until }),
            Next::Attempt { n } => n,
        };
        let endpoint = self.repo.webhook_endpoint(&message.endpoint_id).await?;
        let record = self.repo.event(&message.event_id).await?;
        let (endpoint, event) = match (endpoint, record) {
            (Some(e), Some(r)) if e.status == EndpointStatus::Enabled => (e, r.into_inner().event),
            (endpoint, record) => {
                let why = match (&endpoint, &record) {
                    (None, _) => "the endpoint was deleted",
                    (Some(_), None) => "the event is no longer kept",
                    (Some(_), Some(_)) => "the endpoint is disabled",
                };
                delivery.abandon(why, now);
                let mut tx = Tx::new();
                tx.save(&delivery)?;
                self.commit_quietly(tx).await?;
                return Ok(AttemptResult::Done);
            }
        };

        // The claim: nobody else makes this attempt while it runs.
        delivery.begin(n, now);
        let mut tx = Tx::new();
        tx.save(&delivery)?;
        match self.repo.commit(tx).await {
            Ok(_) => delivery.set_version(delivery.version() + 1),
            Err(StoreError::ConditionFailed { .. }) => return Ok(AttemptResult::Done),
            Err(e) => return Err(e.into()),
        }

        let body = webhook_body(&event).to_string().into_bytes();
        let sent_at = self.now();
        let request = WebhookRequest {
            url: endpoint.url.clone(),
            signature: signature_header(&endpoint.live_secrets(sent_at), sent_at.timestamp(), &body),
            body,
            event_id: event.id.to_string(),
        };
        let outcome = transport.post(&request).await;
        let done = self.now();
        delivery.finish(&outcome, done, fastrand::f64());
        tracing::info!(
            webhook_endpoint_id = %endpoint.id, event_id = %event.id, attempt = n,
            status = delivery.status.as_str(), response = ?delivery.last_response_code, error = ?delivery.last_error,
            "webhook attempt"
        );
        let mut tx = Tx::new();
        tx.save(&delivery)?;
        let about_webhooks = event.kind().starts_with("webhook_endpoint.");
        if delivery.status == DeliveryStatus::Failed && !about_webhooks {
            tx.emit(
                [EventPayload::WebhookDeliveryFailed {
                    webhook_endpoint_id: endpoint.id.clone(),
                    event_id: event.id.clone(),
                    event_type: event.kind().to_owned(),
                    attempts: delivery.attempts,
                    last_response_code: delivery.last_response_code,
                }],
                done,
            )?;
        }
        self.commit_quietly(tx).await?;
        self.record_endpoint_health(&endpoint.id, outcome.delivered()).await?;
        Ok(match (delivery.status, delivery.next_attempt_at) {
            (DeliveryStatus::Pending, Some(at)) => {
                AttemptResult::Later { message: AttemptMessage { attempt: n + 1, ..message.clone() }, at }
            }
            _ => AttemptResult::Done,
        })
    }

    /// Commits; a lost race means another worker took the delivery over, which is fine.
    async fn commit_quietly(&self, tx: Tx) -> Result<()> {
        match self.repo.commit(tx).await {
            Ok(events) => {
                self.publish(events).await;
                Ok(())
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps `failing_since`, and disables an endpoint that has failed for too long. Writes
    /// only when something changes.
    async fn record_endpoint_health(&self, id: &WebhookEndpointId, delivered: bool) -> Result<()> {
        self.optimistic("webhook endpoint", || async move {
            let Some(mut endpoint) = self.repo.webhook_endpoint(id).await? else { return Ok(Decision::Answer(())) };
            let mut tx = Tx::new();
            if delivered {
                if endpoint.failing_since.is_none() {
                    return Ok(Decision::Answer(()));
                }
                endpoint.record_success();
            } else {
                let was = endpoint.failing_since;
                if endpoint.record_failure(self.now()) {
                    tracing::warn!(webhook_endpoint_id = %endpoint.id, "webhook endpoint failing for days: disabled");
                    tx.emit(
                        [EventPayload::WebhookEndpointDisabled {
                            webhook_endpoint_id: endpoint.id.clone(),
                            url: endpoint.url.clone(),
                        }],
                        self.now(),
                    )?;
                } else if was.is_some() {
                    return Ok(Decision::Answer(()));
                }
            }
            tx.save(&endpoint)?;
            Ok(Decision::Commit(tx, ()))
        })
        .await
    }
}
