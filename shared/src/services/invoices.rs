//! Invoices: issue (and charge at once when collected automatically), read, list, and
//! the merchant's reconciliation of bank transfers.

use crate::domain::invoice::{AttemptTrigger, CollectionMethod, NewInvoice};
use crate::domain::money::Money;
use crate::domain::{Invoice, SubscriptionStatus};
use crate::error::{Code, Error, Result};
use crate::ids::{CustomerId, InvoiceId};
use crate::store::repo::{Listing, Tx, Versioned};
use crate::store::{Cursor, StoreError};

use super::charging::{CardChoice, ChargeReport};
use super::idempotency::{Created, RequestId, created_something_else, mark_created};
use super::{Decision, Services, concurrent_update};

pub struct IssueInvoice {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub description: String,
    /// `None`: the customer's.
    pub collection_method: Option<CollectionMethod>,
}

/// A newly issued invoice and, when it was charged at once, how that went.
pub struct Issued {
    pub invoice: Invoice,
    pub charge: Option<std::result::Result<ChargeReport, Error>>,
}

impl Services {
    pub async fn issue_invoice(&self, req: IssueInvoice) -> Result<Issued> {
        self.issue_invoice_once(req, None).await
    }

    /// Issues the invoice once per `request` (a retry of an HTTP request whose first run
    /// committed but never recorded its answer): a re-run answers with the invoice the
    /// first run issued, as it now stands, and charges nothing.
    pub async fn issue_invoice_once(&self, req: IssueInvoice, request: Option<&RequestId>) -> Result<Issued> {
        if let Some(earlier) = self.created_by(request).await? {
            return self.issued_earlier(&earlier).await;
        }
        let customer = self.customer(&req.customer_id).await?;
        let now = self.now();
        let (mut invoice, created) = Invoice::issue(
            NewInvoice {
                customer_id: req.customer_id,
                amount: req.amount,
                description: req.description,
                collection_method: req.collection_method.unwrap_or(customer.collection_method),
                subscription: None,
            },
            now,
        )?;
        invoice.schedule_first_attempt(now);
        if invoice.collection_method == CollectionMethod::ChargeAutomatically {
            let (id, created_event) = (invoice.id.clone(), created.clone());
            let first = self
                .issue_and_charge(invoice.clone(), customer.clone(), |tx| {
                    tx.emit([created_event], now)?;
                    mark_created(tx, request, Created::Invoice(id), now)
                })
                .await?;
            if let Some((issued, charge)) = first {
                return Ok(self.answer_issued(issued, charge).await);
            }
        }
        let mut tx = Tx::new();
        tx.save(&Versioned::new(invoice.clone()))?;
        tx.emit([created], now)?;
        mark_created(&mut tx, request, Created::Invoice(invoice.id.clone()), now)?;
        let events = match self.repo.commit(tx).await {
            Ok(events) => events,
            // Only the request's mark can fail (the invoice and its event are new): another
            // run of the request committed first. Nothing of this run was written.
            Err(StoreError::ConditionFailed { .. }) => match self.created_by(request).await? {
                Some(earlier) => return self.issued_earlier(&earlier).await,
                None => return Err(concurrent_update("invoice")),
            },
            Err(e) => return Err(e.into()),
        };
        tracing::info!(invoice_id = %invoice.id, customer_id = %invoice.customer_id, amount = %invoice.amount, "invoice issued");
        match invoice.collection_method {
            CollectionMethod::SendInvoice => {
                self.publish(events).await;
                Ok(Issued { invoice, charge: None })
            }
            CollectionMethod::ChargeAutomatically => {
                // `invoice.created` goes to the bus while the charge starts: its outbox mark
                // shares a commit with the claim instead of delaying it.
                // It starts from the invoice as committed (version 1) and the customer read
                // above: neither is read again.
                let mut committed = Versioned::new(invoice.clone());
                committed.set_version(1);
                let (_, charge) = futures::join!(
                    self.publish(events),
                    self.charge_invoice_from(
                        &invoice.id,
                        CardChoice::Default,
                        AttemptTrigger::Initial,
                        Some((committed, customer)),
                    )
                );
                Ok(self.answer_issued(invoice, charge).await)
            }
        }
    }

    /// The answer to an issue whose invoice is committed: a success whatever its charge
    /// did (a failure would free the caller's idempotency key for a second invoice), with
    /// the invoice as the charge left it.
    async fn answer_issued(&self, invoice: Invoice, charge: Result<ChargeReport>) -> Issued {
        let invoice = match &charge {
            Ok(report) => report.invoice.clone(),
            Err(_) => match self.repo.invoice(&invoice.id).await {
                Ok(Some(current)) => current.into_inner(),
                Ok(None) | Err(_) => invoice,
            },
        };
        Issued { invoice, charge: Some(charge) }
    }

    /// The answer to a re-run of an issue: the invoice as it stands and, when it is
    /// collected automatically, how its first attempt went (never a new attempt: the first
    /// run made it, or the schedule will).
    async fn issued_earlier(&self, earlier: &Created) -> Result<Issued> {
        let id = match earlier {
            Created::Invoice(id) => id,
            Created::Customer(_) | Created::Subscription(_) | Created::WalletEntry(_) => return Err(created_something_else("invoice", earlier)),
        };
        let invoice = self.invoice(id).await?.into_inner();
        tracing::info!(invoice_id = %invoice.id, "invoice issue re-run: answered with the invoice already issued");
        let charge = match invoice.collection_method {
            CollectionMethod::SendInvoice => None,
            CollectionMethod::ChargeAutomatically => Some(ChargeReport::of_first_attempt(&invoice)),
        };
        Ok(Issued { invoice, charge })
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
            let (events, wallet) = self.wallet_follows(&mut inv, events, now).await?;
            let mut tx = Tx::new();
            tx.save(&inv)?;
            wallet.add_to(&mut tx)?;
            tx.emit(events, now)?;
            Ok(Decision::Commit(tx, inv.into_inner()))
        })
        .await
    }
}
