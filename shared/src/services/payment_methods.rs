//! Saved cards: register (verify with the PSP, then charge what is outstanding), list,
//! choose the default, remove under the removal rules.

use crate::domain::events::EventPayload;
use crate::domain::payment_method::VerifiedCard;
use crate::domain::payment_method::{RemovalContext, check_removal};
use crate::domain::{PaymentMethod, PaymentMethodStatus};
use crate::error::{Code, Error, Result};
use crate::ids::{CustomerId, PaymentMethodId};
use crate::ports::gateway::{CardSetup, GatewayError};
use crate::store::repo::{Tx, Versioned};

use super::charging::RecoveryAttempt;
use super::{Decision, Services};

/// A saved card as a caller sees it.
#[derive(Debug, Clone)]
pub struct SavedCard {
    pub method: PaymentMethod,
    pub is_default: bool,
    pub status: PaymentMethodStatus,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub card: SavedCard,
    /// The same card (fingerprint) was saved already and has been refreshed.
    pub replaced: bool,
    /// Outstanding invoices charged with the new card, oldest first.
    pub recovery: Vec<RecoveryAttempt>,
}

fn gateway_error(e: GatewayError) -> Error {
    match e {
        GatewayError::Declined(d) => Error::new(
            Code::PaymentMethodVerificationFailed,
            format!("the card could not be verified: {}", d.error_type.for_customer().customer_advice()),
        )
        .with("error_type", d.error_type.for_customer().as_str()),
        GatewayError::InvalidToken => {
            Error::new(Code::InvalidPaymentMethod, "the payment provider does not know this payment method token")
                .with("field", "payment_method")
        }
        GatewayError::SetupMismatch(why) => {
            Error::new(Code::InvalidSetupIntent, format!("the card setup cannot register this card: {why}"))
                .with("field", "setup_intent")
        }
        GatewayError::Unavailable(cause) => Error::unavailable(cause),
    }
}

impl Services {
    /// Registers a tokenized card for the customer. The first card becomes the default.
    /// Registering a card, even one already saved, charges every outstanding invoice.
    pub async fn register_payment_method(
        &self,
        customer_id: &CustomerId,
        psp_token: &str,
        set_default: bool,
    ) -> Result<Registration> {
        // The customer must exist before anything is sent to the PSP.
        self.customer(customer_id).await?;
        let verified = self.gateway.verify(psp_token, customer_id).await.map_err(gateway_error)?;
        self.save_verified_card(customer_id, verified, set_default).await
    }

    /// Begins a card setup for the PSP's card form: the browser confirms it with the PSP
    /// (card details and 3-D Secure never pass through Recoup), then registers the card
    /// with [`Services::register_set_up_card`].
    pub async fn begin_card_setup(&self, customer_id: &CustomerId) -> Result<CardSetup> {
        self.customer(customer_id).await?;
        self.gateway.begin_setup(customer_id).await.map_err(gateway_error)
    }

    /// Registers the card a setup from [`Services::begin_card_setup`] saved. The PSP's
    /// verification happened in the setup; nothing is sent to the card again.
    pub async fn register_set_up_card(
        &self,
        customer_id: &CustomerId,
        setup_id: &str,
        psp_token: &str,
        set_default: bool,
    ) -> Result<Registration> {
        self.customer(customer_id).await?;
        let verified = self.gateway.verify_setup(setup_id, psp_token, customer_id).await.map_err(gateway_error)?;
        self.save_verified_card(customer_id, verified, set_default).await
    }

    /// Saves a card the PSP verified: refreshes the same card (by fingerprint) if saved
    /// already, makes it the default if asked or if it is the first, then charges what is
    /// outstanding.
    async fn save_verified_card(
        &self,
        customer_id: &CustomerId,
        verified: VerifiedCard,
        set_default: bool,
    ) -> Result<Registration> {
        // A card condemned by a never-retry decline stays blocked when registered again; only
        // a changed card (a new expiry from the provider) lifts the block.
        if let Some(ledger) = self.repo.ledger(&verified.fingerprint).await?
            && let Some(block) = ledger.block_for(verified.expiry)
        {
            tracing::info!(customer_id = %customer_id, reason = ?block.reason, "blocked card refused at registration");
            return Err(gateway_error(GatewayError::Declined(crate::domain::decline::Decline::new(
                block.error_type,
                "the card was declined for a reason that does not change until the card does",
            ))));
        }
        let verified = &verified;
        let (card, is_default, replaced) = self
            .optimistic("customer's cards", || async move {
                let now = self.now();
                let mut customer = self.customer(customer_id).await?;
                let existing = self
                    .repo
                    .payment_methods(customer_id)
                    .await?
                    .into_iter()
                    .find(|pm| pm.fingerprint == verified.fingerprint);
                let replaced = existing.is_some();
                let card = match existing {
                    Some(mut pm) => {
                        pm.reverify(verified.clone(), now);
                        pm
                    }
                    None => Versioned::new(PaymentMethod::new(customer_id.clone(), verified.clone(), now)),
                };
                let becomes_default = set_default || customer.default_payment_method_id().is_none();
                let mut tx = Tx::new();
                tx.save(&card)?;
                if becomes_default && customer.default_card() != Some((&card.id, &card.fingerprint)) {
                    customer.set_default_payment_method(Some(&card));
                    tx.save(&customer)?;
                } else {
                    tx.check(&customer);
                }
                tx.emit(
                    [EventPayload::PaymentMethodAttached {
                        payment_method_id: card.id.clone(),
                        customer_id: customer_id.clone(),
                        brand: card.brand,
                        last4: card.last4.clone(),
                        replaced,
                    }],
                    now,
                )?;
                let is_default = customer.default_payment_method_id() == Some(&card.id);
                Ok(Decision::Commit(tx, (card.into_inner(), is_default, replaced)))
            })
            .await?;
        tracing::info!(customer_id = %customer_id, payment_method_id = %card.id, replaced, "card registered");
        let recovery = self.recover_outstanding(customer_id, &card.id).await?;
        let status = card.status(self.now());
        Ok(Registration { card: SavedCard { method: card, is_default, status }, replaced, recovery })
    }

    pub async fn list_payment_methods(&self, customer_id: &CustomerId) -> Result<Vec<SavedCard>> {
        let customer = self.customer(customer_id).await?;
        let now = self.now();
        Ok(self
            .repo
            .payment_methods(customer_id)
            .await?
            .into_iter()
            .map(|pm| {
                let is_default = customer.default_payment_method_id() == Some(&pm.id);
                let status = pm.status(now);
                SavedCard { method: pm.into_inner(), is_default, status }
            })
            .collect())
    }

    pub async fn set_default_payment_method(
        &self,
        customer_id: &CustomerId,
        id: &PaymentMethodId,
    ) -> Result<SavedCard> {
        let card = self
            .optimistic("customer's cards", || async move {
                let mut customer = self.customer(customer_id).await?;
                let card = self
                    .repo
                    .payment_method(customer_id, id)
                    .await?
                    .ok_or_else(|| Error::not_found("payment method"))?;
                let mut tx = Tx::new();
                if customer.default_card() != Some((&card.id, &card.fingerprint)) {
                    customer.set_default_payment_method(Some(&card));
                    tx.save(&customer)?;
                    tx.check(&card);
                }
                Ok(Decision::Commit(tx, card.into_inner()))
            })
            .await?;
        tracing::info!(customer_id = %customer_id, payment_method_id = %id, "default card set");
        let status = card.status(self.now());
        Ok(SavedCard { method: card, is_default: true, status })
    }

    /// Removes a card, under the removal rules. The card's ledger and the customer are
    /// checked in the same transaction, so a charge starting on the card or a subscription
    /// starting for the customer meanwhile makes the removal retry and re-decide.
    pub async fn remove_payment_method(&self, customer_id: &CustomerId, id: &PaymentMethodId) -> Result<()> {
        let removed = self
            .optimistic("customer's cards", || async move {
                let mut customer = self.customer(customer_id).await?;
                let cards = self.repo.payment_methods(customer_id).await?;
                let Some(target) = cards.iter().find(|c| &c.id == id).cloned() else {
                    return Err(Error::not_found("payment method"));
                };
                let mut live = false;
                for sid in &customer.subscription_ids {
                    if let Some(sub) = self.repo.subscription(sid).await?
                        && sub.status().bills_again()
                    {
                        live = true;
                    }
                }
                let ledger = self.repo.ledger(&target.fingerprint).await?;
                let is_default = customer.default_payment_method_id() == Some(&target.id);
                check_removal(RemovalContext {
                    is_default,
                    other_methods: cards.len() - 1,
                    has_live_subscription: live,
                    has_pending_transaction: ledger.as_ref().is_some_and(|l| l.has_pending_for(&target.id)),
                })
                .map_err(|r| Error::from(crate::domain::DomainError::from(r)))?;

                let now = self.now();
                let mut tx = Tx::new();
                tx.delete(&target);
                match &ledger {
                    Some(l) => {
                        tx.check(l);
                    }
                    None => {
                        tx.check(&Versioned::new(crate::domain::CardLedger::new(
                            target.fingerprint.clone(),
                            target.network(),
                        )));
                    }
                }
                if is_default {
                    customer.set_default_payment_method(None);
                    tx.save(&customer)?;
                } else {
                    tx.check(&customer);
                }
                tx.emit(
                    [EventPayload::PaymentMethodRemoved {
                        payment_method_id: target.id.clone(),
                        customer_id: customer_id.clone(),
                    }],
                    now,
                )?;
                Ok(Decision::Commit(tx, target.into_inner()))
            })
            .await?;
        tracing::info!(customer_id = %customer_id, payment_method_id = %id, "card removed");
        // The card is gone from Recoup, so nothing here charges it again; detaching it at
        // the PSP as well keeps it from being charged from anywhere else. A failure is
        // logged for the operator and does not undo the removal.
        if let Err(e) = self.gateway.detach(&removed.psp_token).await {
            tracing::warn!(customer_id = %customer_id, payment_method_id = %id, error = %e, "card removed, but the PSP could not detach it");
        }
        Ok(())
    }
}
