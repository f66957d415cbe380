//! The scheduled sweeps. Each reads a sparse schedule index (a query per shard, never a
//! scan) and hands work to the charge queue; the charge worker re-reads and re-decides, so
//! a message sent twice does nothing the second time.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::InvoiceId;

use super::Services;
use crate::ports::messaging::QueueSender;

/// The body of a charge-queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeMessage {
    pub invoice_id: InvoiceId,
}

impl ChargeMessage {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

async fn enqueue(queue: &dyn QueueSender, ids: &[InvoiceId]) -> Result<()> {
    let bodies: Vec<String> = ids.iter().map(|id| ChargeMessage { invoice_id: id.clone() }.encode()).collect();
    queue.send(&bodies).await.map_err(Error::unavailable)
}

impl Services {
    /// Enqueues every invoice due for an attempt or a reconciliation. Returns how many.
    pub async fn sweep_due(&self, queue: &dyn QueueSender, limit: usize) -> Result<usize> {
        let ids = self.repo.due_invoices(self.now(), limit).await?;
        enqueue(queue, &ids).await?;
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "due invoices enqueued");
        }
        Ok(ids.len())
    }

    /// Renews every subscription whose period ended and enqueues the new invoices.
    pub async fn sweep_renewals(&self, queue: &dyn QueueSender, limit: usize) -> Result<usize> {
        let ids = self.renew_due(limit).await?;
        enqueue(queue, &ids).await?;
        Ok(ids.len())
    }
}
