//! Customers: created by the merchant, then owned by their own tokens.

use crate::domain::Customer;
use crate::error::{Error, Result};
use crate::ids::CustomerId;
use crate::store::repo::{Listing, Tx, Versioned};
use crate::store::{Cursor, StoreError};

use super::idempotency::{Created, RequestId, created_something_else, mark_created};
use super::{Services, concurrent_update};

impl Services {
    pub async fn create_customer(&self, email: &str, name: Option<&str>) -> Result<Customer> {
        self.create_customer_once(email, name, None).await
    }

    /// Creates the customer once per `request` (see [`Services::issue_invoice_once`]): a
    /// re-run answers with the customer the first run created.
    pub async fn create_customer_once(
        &self,
        email: &str,
        name: Option<&str>,
        request: Option<&RequestId>,
    ) -> Result<Customer> {
        if let Some(earlier) = self.created_by(request).await? {
            return self.created_earlier(&earlier).await;
        }
        let now = self.now();
        let customer = Customer::new(email, name, now)?;
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
            Created::Invoice(_) | Created::Subscription(_) => Err(created_something_else("customer", earlier)),
        }
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Versioned<Customer>> {
        self.repo.customer(id).await?.ok_or_else(|| Error::not_found("customer"))
    }

    pub async fn list_customers(&self, limit: usize, after: Option<Cursor>) -> Result<Listing<Customer>> {
        Ok(self.repo.customers(limit, after).await?)
    }
}
