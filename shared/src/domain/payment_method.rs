//! A saved card. Recoup keeps the PSP's token and the facts needed to show and retry the
//! card (brand, last four, expiry, fingerprint); never the card number. Card details are
//! never edited: a changed card is removed and added again.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::domain::card::{CardBrand, CardExpiry, Fingerprint, Funding, Network};
use crate::domain::decline::ErrorType;
use crate::ids::{CustomerId, PaymentMethodId};
use crate::time::Timestamp;

/// A card is `expiring` within this long of its expiry.
pub const EXPIRING_WITHIN: TimeDelta = TimeDelta::days(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethodStatus {
    Valid,
    Expiring,
    Expired,
    /// A charge proved the card unusable (invalid details, lost or stolen, closed).
    Invalid,
}

/// What the PSP told us about a verified card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCard {
    pub psp_token: String,
    pub brand: CardBrand,
    pub last4: String,
    pub expiry: CardExpiry,
    pub fingerprint: Fingerprint,
    /// Credit, debit or prepaid, when the PSP says.
    pub funding: Option<Funding>,
    /// The issuing country (ISO 3166-1 alpha-2), when the PSP says.
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub at: Timestamp,
    pub error_type: ErrorType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: PaymentMethodId,
    pub customer_id: CustomerId,
    /// The PSP's reusable token (`pm_...`). Not a secret, but never shown to members.
    pub psp_token: String,
    pub brand: CardBrand,
    pub last4: String,
    pub expiry: CardExpiry,
    pub fingerprint: Fingerprint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding: Option<Funding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub created_at: Timestamp,
    /// When the PSP last verified the card: registration, or the same card registered
    /// again. A hard decline older than this no longer blocks the card.
    pub verified_at: Timestamp,
    #[serde(default)]
    invalidated: Option<Invalidation>,
}

/// A card as an attempt used it, kept on the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSnapshot {
    pub payment_method_id: PaymentMethodId,
    /// The token the charge was sent with; a reconciling retry must send the same one.
    pub psp_token: String,
    pub brand: CardBrand,
    pub last4: String,
    pub fingerprint: Fingerprint,
    /// The expiry at the time of the attempt: a card-level block holds for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<CardExpiry>,
}

impl CardSnapshot {
    pub fn network(&self) -> Network {
        self.brand.network()
    }
}

impl PaymentMethod {
    pub fn new(customer_id: CustomerId, card: VerifiedCard, now: Timestamp) -> Self {
        PaymentMethod {
            id: PaymentMethodId::generate(),
            customer_id,
            psp_token: card.psp_token,
            brand: card.brand,
            last4: card.last4,
            expiry: card.expiry,
            fingerprint: card.fingerprint,
            funding: card.funding,
            country: card.country,
            created_at: now,
            verified_at: now,
            invalidated: None,
        }
    }

    /// The same card was registered again: take the fresh token and expiry, forget any
    /// earlier invalidation, and count it as re-verified now.
    pub fn reverify(&mut self, card: VerifiedCard, now: Timestamp) {
        self.psp_token = card.psp_token;
        self.expiry = card.expiry;
        self.last4 = card.last4;
        self.brand = card.brand;
        self.funding = card.funding.or(self.funding);
        self.country = card.country.or(self.country.take());
        self.verified_at = now;
        self.invalidated = None;
    }

    /// The issuer updated the card through the networks' account updater (a new expiry, or
    /// a new number: a new fingerprint): the saved card takes the new details and is valid
    /// again, as if registered anew.
    pub fn updated_by_issuer(&mut self, card: VerifiedCard, now: Timestamp) {
        self.fingerprint = card.fingerprint.clone();
        self.reverify(card, now);
    }

    pub fn status(&self, now: Timestamp) -> PaymentMethodStatus {
        if self.invalidated.is_some() {
            PaymentMethodStatus::Invalid
        } else if self.expiry.is_expired(now) {
            PaymentMethodStatus::Expired
        } else if self.expiry.lapses_at() - now <= EXPIRING_WITHIN {
            PaymentMethodStatus::Expiring
        } else {
            PaymentMethodStatus::Valid
        }
    }

    pub fn invalidation(&self) -> Option<&Invalidation> {
        self.invalidated.as_ref()
    }

    pub fn invalidate(&mut self, error_type: ErrorType, at: Timestamp) {
        self.invalidated = Some(Invalidation { at, error_type });
    }

    pub fn network(&self) -> Network {
        self.brand.network()
    }

    pub fn snapshot(&self) -> CardSnapshot {
        CardSnapshot {
            payment_method_id: self.id.clone(),
            psp_token: self.psp_token.clone(),
            brand: self.brand,
            last4: self.last4.clone(),
            fingerprint: self.fingerprint.clone(),
            expiry: Some(self.expiry),
        }
    }
}

/// Why a card cannot be removed now. Each maps to an API code of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemovalRefused {
    #[error("this is the only payment method and a subscription still bills it; add another card first")]
    LastPaymentMethodWithActiveSubscription,
    #[error("this is the default payment method; set another card as default first")]
    DefaultPaymentMethod,
    #[error("a payment on this card is still pending; try again when it completes")]
    PendingTransactions,
}

/// The facts removal depends on.
#[derive(Debug, Clone, Copy)]
pub struct RemovalContext {
    pub is_default: bool,
    pub other_methods: usize,
    pub has_live_subscription: bool,
    pub has_pending_transaction: bool,
}

/// The seed's removal rules: not while a charge is pending; not the only method while a
/// subscription is live; not the default while other cards exist.
pub fn check_removal(ctx: RemovalContext) -> Result<(), RemovalRefused> {
    if ctx.has_pending_transaction {
        return Err(RemovalRefused::PendingTransactions);
    }
    if ctx.other_methods == 0 && ctx.has_live_subscription {
        return Err(RemovalRefused::LastPaymentMethodWithActiveSubscription);
    }
    if ctx.is_default && ctx.other_methods > 0 {
        return Err(RemovalRefused::DefaultPaymentMethod);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    fn card(exp: CardExpiry) -> PaymentMethod {
        PaymentMethod::new(
            CustomerId::generate(),
            VerifiedCard {
                psp_token: "pm_card_visa".into(),
                brand: CardBrand::Visa,
                last4: "4242".into(),
                expiry: exp,
                fingerprint: Fingerprint::new("fp"),
                funding: None,
                country: None,
            },
            parse("2030-01-01T00:00:00Z"),
        )
    }

    #[test]
    fn status_follows_the_expiry_date_and_invalidation() {
        let pm = card(CardExpiry::new(6, 2030).unwrap());
        assert_eq!(pm.status(parse("2030-01-01T00:00:00Z")), PaymentMethodStatus::Valid);
        assert_eq!(pm.status(parse("2030-06-10T00:00:00Z")), PaymentMethodStatus::Expiring);
        assert_eq!(pm.status(parse("2030-07-01T00:00:00Z")), PaymentMethodStatus::Expired);
        let mut pm = pm;
        pm.invalidate(ErrorType::PaymentMethodInvalid, parse("2030-01-02T00:00:00Z"));
        assert_eq!(pm.status(parse("2030-01-03T00:00:00Z")), PaymentMethodStatus::Invalid);
    }

    #[test]
    fn reverifying_the_same_card_clears_invalidation() {
        let mut pm = card(CardExpiry::new(6, 2030).unwrap());
        pm.invalidate(ErrorType::PaymentMethodInvalid, parse("2030-01-02T00:00:00Z"));
        let fresh = VerifiedCard {
            psp_token: "pm_new".into(),
            brand: CardBrand::Visa,
            last4: "4242".into(),
            expiry: CardExpiry::new(6, 2033).unwrap(),
            fingerprint: Fingerprint::new("fp"),
            funding: None,
            country: None,
        };
        pm.reverify(fresh, parse("2030-01-05T00:00:00Z"));
        assert_eq!(pm.status(parse("2030-01-06T00:00:00Z")), PaymentMethodStatus::Valid);
        assert_eq!(pm.verified_at, parse("2030-01-05T00:00:00Z"));
    }

    fn ctx(is_default: bool, other_methods: usize, live: bool, pending: bool) -> RemovalContext {
        RemovalContext { is_default, other_methods, has_live_subscription: live, has_pending_transaction: pending }
    }

    #[test]
    fn the_only_card_cannot_go_while_a_subscription_is_live() {
        assert_eq!(
            check_removal(ctx(true, 0, true, false)),
            Err(RemovalRefused::LastPaymentMethodWithActiveSubscription)
        );
        assert_eq!(check_removal(ctx(true, 0, false, false)), Ok(()));
    }

    #[test]
    fn the_default_cannot_go_while_other_cards_exist() {
        assert_eq!(check_removal(ctx(true, 1, true, false)), Err(RemovalRefused::DefaultPaymentMethod));
        assert_eq!(check_removal(ctx(false, 1, true, false)), Ok(()));
    }

    #[test]
    fn a_card_with_a_pending_charge_cannot_go() {
        assert_eq!(check_removal(ctx(false, 3, false, true)), Err(RemovalRefused::PendingTransactions));
    }
}
