//! The scheduled sweeps. Each reads a sparse schedule index (a query per shard, never a
//! scan) and hands work to the charge queue; the charge worker re-reads and re-decides, so
//! a message sent twice does nothing the second time.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::InvoiceId;

use super::Services;
use super::charging::ChargeHint;
use crate::ports::messaging::QueueSender;

/// The body of a charge-queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeMessage {
    pub invoice_id: InvoiceId,
    /// What the invoice said when it was found due, so the worker reads everything in one
    /// batch. Absent in messages from before it was sent, and then the worker reads the
    /// invoice first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<ChargeHint>,
}

impl ChargeMessage {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

async fn enqueue(queue: &dyn QueueSender, messages: impl IntoIterator<Item = ChargeMessage>) -> Result<()> {
    let bodies: Vec<String> = messages.into_iter().map(|m| m.encode()).collect();
    queue.send(&bodies).await.map_err(Error::unavailable)
}

impl Services {
    /// Enqueues every invoice due for an attempt or a reconciliation. Returns how many.
    pub async fn sweep_due(&self, queue: &dyn QueueSender, limit: usize) -> Result<usize> {
        let due = self.repo.due_invoice_entities(self.now(), limit).await?;
        let count = due.len();
        enqueue(
            queue,
            due.iter().map(|inv| ChargeMessage { invoice_id: inv.id.clone(), hint: Some(ChargeHint::of(inv)) }),
        )
        .await?;
        if count > 0 {
            tracing::info!(count, "due invoices enqueued");
        }
        Ok(count)
    }

    /// Renews every subscription whose period ended and enqueues the new invoices.
    pub async fn sweep_renewals(&self, queue: &dyn QueueSender, limit: usize) -> Result<usize> {
        let ids = self.renew_due(limit).await?;
        enqueue(queue, ids.iter().map(|id| ChargeMessage { invoice_id: id.clone(), hint: None })).await?;
        Ok(ids.len())
    }
}
