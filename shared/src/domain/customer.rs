//! The paying customer of the merchant.

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::invoice::CollectionMethod;
use crate::ids::{CustomerId, PaymentMethodId, SubscriptionId};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    default_payment_method_id: Option<PaymentMethodId>,
    /// A customer has few subscriptions; keeping their ids here lets card removal check
    /// for a live subscription with one read.
    #[serde(default)]
    pub subscription_ids: Vec<SubscriptionId>,
    /// How the customer's invoices are collected unless an invoice says otherwise: charged
    /// to the default card, or paid by bank transfer (seed 000: "switch from invoice to
    /// credit card").
    #[serde(default = "charge_automatically")]
    pub collection_method: CollectionMethod,
    pub created_at: Timestamp,
}

fn charge_automatically() -> CollectionMethod {
    CollectionMethod::ChargeAutomatically
}

impl Customer {
    pub fn new(email: &str, name: Option<&str>, now: Timestamp) -> Result<Self, DomainError> {
        let email = email.trim();
        let at = email.find('@');
        let plausible = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && at.is_some_and(|i| i > 0 && i < email.len() - 1 && email[i + 1..].contains('.'));
        if !plausible {
            return Err(DomainError::invalid("email", "must be an email address like ada@example.com"));
        }
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.chars().count() > 200) {
            return Err(DomainError::invalid("name", "must be at most 200 characters"));
        }
        Ok(Customer {
            id: CustomerId::generate(),
            email: email.to_owned(),
            name: name.map(str::to_owned),
            default_payment_method_id: None,
            subscription_ids: Vec::new(),
            collection_method: CollectionMethod::ChargeAutomatically,
            created_at: now,
        })
    }

    pub fn default_payment_method_id(&self) -> Option<&PaymentMethodId> {
        self.default_payment_method_id.as_ref()
    }

    pub fn set_default_payment_method(&mut self, id: Option<PaymentMethodId>) {
        self.default_payment_method_id = id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    #[test]
    fn customers_need_a_plausible_email() {
        let now = parse("2030-01-01T00:00:00Z");
        assert!(Customer::new("ada@example.com", Some("Ada"), now).is_ok());
        for bad in ["", "ada", "@example.com", "ada@", "ada@example", "a da@example.com"] {
            assert!(Customer::new(bad, None, now).is_err(), "{bad}");
        }
    }
}
