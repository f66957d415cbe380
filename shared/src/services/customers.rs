//! Customers: created by the merchant, then owned by their own tokens.

use crate::domain::Customer;
use crate::error::{Error, Result};
use crate::ids::CustomerId;
use crate::store::Cursor;
use crate::store::repo::{Listing, Tx, Versioned};

use super::Services;

impl Services {
    pub async fn create_customer(&self, email: &str, name: Option<&str>) -> Result<Customer> {
        let customer = Customer::new(email, name, self.now())?;
        let mut tx = Tx::new();
        tx.save(&Versioned::new(customer.clone()))?;
        self.repo.commit(tx).await?;
        tracing::info!(customer_id = %customer.id, "customer created");
        Ok(customer)
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Versioned<Customer>> {
        self.repo.customer(id).await?.ok_or_else(|| Error::not_found("customer"))
    }

    pub async fn list_customers(&self, limit: usize, after: Option<Cursor>) -> Result<Listing<Customer>> {
        Ok(self.repo.customers(limit, after).await?)
    }
}
