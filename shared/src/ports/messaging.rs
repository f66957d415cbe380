//! Ports for the event bus and work queues. Adapters: EventBridge and SQS in AWS, an
//! in-process bus and queues in the local product.

use async_trait::async_trait;

use crate::domain::events::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event publishing failed: {0}")]
pub struct PublishError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue send failed: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes the events; the result says, per event, whether the bus accepted it.
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError>;
}

#[async_trait]
pub trait QueueSender: Send + Sync {
    async fn send(&self, bodies: &[String]) -> Result<(), QueueError>;

    /// Sends one message that no consumer sees before `delay` has passed. SQS holds a
    /// message back at most [`MAX_DELAY_SECONDS`]; a longer wait is the sender's to split.
    async fn send_delayed(&self, body: &str, delay: std::time::Duration) -> Result<(), QueueError>;
}

/// The longest delay SQS gives one message (15 minutes).
pub const MAX_DELAY_SECONDS: u64 = 900;
