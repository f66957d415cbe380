//! The paying customer of the merchant.

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::card::Fingerprint;
use super::invoice::CollectionMethod;
use super::payment_method::PaymentMethod;
use crate::ids::{CustomerId, PaymentMethodId, SubscriptionId};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    default_payment_method_id: Option<PaymentMethodId>,
    /// The default card's fingerprint, kept beside its id so a charge can name the card's
    /// ledger before reading anything (one batched read). Absent on customers saved before
    /// it was kept; a charge then reads the card first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_card_fingerprint: Option<Fingerprint>,
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
            default_card_fingerprint: None,
            subscription_ids: Vec::new(),
            collection_method: CollectionMethod::ChargeAutomatically,
            created_at: now,
        })
    }

    pub fn default_payment_method_id(&self) -> Option<&PaymentMethodId> {
        self.default_payment_method_id.as_ref()
    }

    /// The default card's id and fingerprint, when both are known.
    pub fn default_card(&self) -> Option<(&PaymentMethodId, &Fingerprint)> {
        self.default_payment_method_id.as_ref().zip(self.default_card_fingerprint.as_ref())
    }

    /// Makes `card` the default (or leaves the customer without one).
    pub fn set_default_payment_method(&mut self, card: Option<&PaymentMethod>) {
        self.default_payment_method_id = card.map(|c| c.id.clone());
        self.default_card_fingerprint = card.map(|c| c.fingerprint.clone());
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
