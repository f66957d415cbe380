//! Invoices: issue (and charge at once when collected automatically), read, list, and
//! the merchant's reconciliation of bank transfers.

use crate::domain::invoice::{AttemptTrigger, CollectionMethod, NewInvoice};
use crate::domain::money::Money;
use crate::domain::{Invoice, SubscriptionStatus};
use crate::error::{Code, Error, Result};
use crate::ids::{CustomerId, InvoiceId};
use crate::store::Cursor;
use crate::store::repo::{Listing, Tx, Versioned};

use super::charging::{CardChoice, ChargeReport};
use super::{Decision, Services};

pub struct IssueInvoice {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
    pub collection_method: CollectionMethod,
}

/// A newly issued invoice and, when it was charged at once, how that went.
pub struct Issued {
    pub invoice: Invoice,
    pub charge: Option<std::result::Result<ChargeReport, Error>>,
}

impl Services {
    pub async fn issue_invoice(&self, req: IssueInvoice) -> Result<Issued> {
        self.customer(&req.customer_id).await?;
        let now = self.now();
        let (mut invoice, created) = Invoice::issue(
            NewInvoice {
                customer_id: req.customer_id,
                amount: req.amount,
                description: req.description,
                collection_method: req.collection_method,
                subscription: None,
            },
            now,
        )?;
        invoice.schedule_first_attempt(now);
        let mut tx = Tx::new();
        tx.save(&Versioned::new(invoice.clone()))?;
        tx.emit([created], now)?;
        let events = self.repo.commit(tx).await?;
        tracing::info!(invoice_id = %invoice.id, customer_id = %invoice.customer_id, amount = %invoice.amount, "invoice issued");
        match invoice.collection_method {
            CollectionMethod::SendInvoice => {
                self.publish(events).await;
                Ok(Issued { invoice, charge: None })
            }
            CollectionMethod::ChargeAutomatically => {
                // `invoice.created` goes to the bus while the charge starts: its outbox mark
                // shares a commit with the claim instead of delaying it.
                let (_, charge) = futures::join!(
                    self.publish(events),
                    self.charge_invoice(&invoice.id, CardChoice::Default, AttemptTrigger::Initial)
                );
                // The invoice is committed: whatever happens now, the answer is a success
                // (a failure would free the caller's idempotency key for a second invoice).
                let invoice = match &charge {
                    Ok(report) => report.invoice.clone(),
                    Err(_) => match self.repo.invoice(&invoice.id).await {
                        Ok(Some(current)) => current.into_inner(),
                        Ok(None) | Err(_) => invoice,
                    },
                };
                Ok(Issued { invoice, charge: Some(charge) })
            }
        }
    }

    pub async fn invoice(&self, id: &InvoiceId) -> Result<Versioned<Invoice>> {
        self.repo.invoice(id).await?.ok_or_else(|| Error::not_found("invoice"))
    }

    pub async fn list_invoices(
        &self,
        customer: &CustomerId,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Invoice>> {
        self.customer(customer).await?;
        Ok(self.repo.customer_invoices(customer, limit, after).await?)
    }

    /// The merchant reconciles a bank transfer (or any payment made outside Recoup).
    pub async fn mark_invoice_paid(&self, id: &InvoiceId, reference: Option<String>) -> Result<Invoice> {
        self.change_invoice(id, |inv, now| inv.mark_paid(reference.clone(), now).map_err(Error::from)).await
    }

    /// Voids an invoice. A subscription's invoice may be voided once the subscription is
    /// canceled (it is no longer collected); before that the subscription owns it.
    pub async fn void_invoice(&self, id: &InvoiceId) -> Result<Invoice> {
        let canceled = match self.invoice(id).await?.subscription_id() {
            Some(sid) => self.repo.subscription(sid).await?.is_some_and(|s| s.status() == SubscriptionStatus::Canceled),
            None => false,
        };
        self.change_invoice(id, |inv, now| {
            if inv.subscription.is_some() && !canceled {
                return Err(Error::new(Code::SubscriptionInvoice,
                    "an invoice of a live subscription cannot be voided; cancel the subscription first, or re-activate it",
                ));
            }
            inv.void(now).map_err(Error::from)
        })
        .await
    }

    async fn change_invoice<F>(&self, id: &InvoiceId, change: F) -> Result<Invoice>
    where
        F: Fn(&mut Invoice, crate::time::Timestamp) -> Result<Vec<crate::domain::events::EventPayload>>,
    {
        let change = &change;
        self.optimistic("invoice", || async move {
            let mut inv = self.invoice(id).await?;
            let now = self.now();
            let events = change(&mut inv, now)?;
            let mut tx = Tx::new();
            tx.save(&inv)?;
            tx.emit(events, now)?;
            Ok(Decision::Commit(tx, inv.into_inner()))
        })
        .await
    }
}
