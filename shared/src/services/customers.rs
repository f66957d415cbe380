//! Customers: created by the merchant, then owned by their own tokens.

use crate::domain::Customer;
use crate::domain::invoice::CollectionMethod;
use crate::error::{Code, Error, Result};
use crate::ids::CustomerId;
use crate::store::repo::{Listing, Tx, Versioned};
use crate::store::{Cursor, StoreError};

use super::charging::RecoveryAttempt;
use super::idempotency::{Created, RequestId, created_something_else, mark_created};
use super::{Decision, Services, concurrent_update};

impl Services {
    pub async fn create_customer(&self, email: &str, name: Option<&str>) -> Result<Customer> {
        self.create_customer_once(email, name, CollectionMethod::ChargeAutomatically, None).await
    }

    /// Creates the customer once per `request` (see [`Services::issue_invoice_once`]): a
    /// re-run answers with the customer the first run created.
    pub async fn create_customer_once(
        &self,
        email: &str,
        name: Option<&str>,
        collection_method: CollectionMethod,
        request: Option<&RequestId>,
    ) -> Result<Customer> {
        if let Some(earlier) = self.created_by(request).await? {
            return self.created_earlier(&earlier).await;
        }
        let now = self.now();
        let mut customer = Customer::new(email, name, now)?;
        customer.collection_method = collection_method;
        let mut tx = Tx::new();
        tx.save(&Versioned::new(customer.clone()))?;
        mark_created(&mut tx, request, Created::Customer(customer.id.clone()), now)?;
        match self.repo.commit(tx).await {
            Ok(_) => {}
            // Only the request's mark can fail (the customer is new): another run of the
            // request committed first.
            Err(StoreError::ConditionFailed { .. }) => {
                return match self.created_by(request).await? {
                    Some(earlier) => self.created_earlier(&earlier).await,
                    None => Err(concurrent_update("customer")),
                };
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(customer_id = %customer.id, "customer created");
        Ok(customer)
    }

    async fn created_earlier(&self, earlier: &Created) -> Result<Customer> {
        match earlier {
            Created::Customer(id) => Ok(self.customer(id).await?.into_inner()),
            Created::Invoice(_) | Created::Subscription(_) | Created::WalletEntry(_) => Err(created_something_else("customer", earlier)),
        }
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Versioned<Customer>> {
        self.repo.customer(id).await?.ok_or_else(|| Error::not_found("customer"))
    }

    pub async fn list_customers(&self, limit: usize, after: Option<Cursor>) -> Result<Listing<Customer>> {
        Ok(self.repo.customers(limit, after).await?)
    }

    /// Sets how the customer's invoices are collected. Switching to the card (seed 000:
    /// "switch from invoice to credit card") needs a default card: the bank-transfer
    /// invoices still owed become card invoices and are charged to it at once, and later
    /// invoices are charged automatically. Switching to bank transfer applies to invoices
    /// issued from then on.
    pub async fn set_collection_method(&self, id: &CustomerId, method: CollectionMethod) -> Result<Switched> {
        let current = self.customer(id).await?;
        let card = match method {
            CollectionMethod::ChargeAutomatically => {
                Some(current.default_payment_method_id().cloned().ok_or_else(|| {
                    Error::new(Code::NoPaymentMethod, "register a card first: switching to card payment charges it")
                })?)
            }
            CollectionMethod::SendInvoice => None,
        };
        if card.is_some() {
            // Each invoice in its own commit; the customer's own setting comes last, so a
            // switch cut short is finished by asking again.
            for owed in self.repo.outstanding_invoices(id).await? {
                let invoice_id = owed.id.clone();
                let invoice_id = &invoice_id;
                self.optimistic("invoice", || async move {
                    let Some(mut invoice) = self.repo.invoice(invoice_id).await? else {
                        return Ok(Decision::Answer(()));
                    };
                    if !invoice.collect_automatically(self.now()) {
                        return Ok(Decision::Answer(()));
                    }
                    let mut tx = Tx::new();
                    tx.save(&invoice)?;
                    Ok(Decision::Commit(tx, ()))
                })
                .await?;
            }
        }
        let customer = self
            .optimistic("customer", || async move {
                let mut customer = self.customer(id).await?;
                if customer.collection_method == method {
                    return Ok(Decision::Answer(customer.into_inner()));
                }
                customer.collection_method = method;
                let mut tx = Tx::new();
                tx.save(&customer)?;
                Ok(Decision::Commit(tx, customer.into_inner()))
            })
            .await?;
        tracing::info!(customer_id = %id, collection_method = ?method, "collection method set");
        let recovery = match &card {
            Some(card) => self.recover_outstanding(id, card).await?,
            None => Vec::new(),
        };
        Ok(Switched { customer, recovery })
    }
}

/// What setting a customer's collection method did.
pub struct Switched {
    pub customer: Customer,
    /// The invoices still owed, charged to the default card (switching to the card).
    pub recovery: Vec<RecoveryAttempt>,
}
