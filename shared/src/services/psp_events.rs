//! Settling what a PSP's webhooks report: asynchronous outcomes of charges Recoup made.
//! Each notice is processed at least once and idempotently (settling an attempt that is
//! already settled changes nothing), then remembered by its id so a redelivery is answered
//! at once. Notices can arrive in any order: an attempt settles once, except that an
//! approval reported after a recorded decline wins, because the PSP holds the money.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::domain::decline::ErrorType;
use crate::domain::events::EventPayload;
use crate::domain::invoice::{AttemptOutcome, LateSuccess, TransactionStatus};
use crate::domain::money::Money;
use crate::domain::payment_method::VerifiedCard;
use crate::error::{Error, Result};
use crate::ids::{CustomerId, InvoiceId};
use crate::ports::gateway::{Dispute, PspEvent, PspNotice};
use crate::services::charging::ChargeOutcome;
use crate::store::repo::{Entity, Tx, Versioned};
use crate::store::{Key, StoreError, keys};
use crate::time::Timestamp;

use super::{Decision, Services};

/// How long a notice id is remembered (the PSP retries for up to three days).
pub const REMEMBERED: TimeDelta = TimeDelta::days(30);

/// A notice already processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenNotice {
    id: String,
    kind: String,
    received_at: Timestamp,
}

impl Entity for SeenNotice {
    const KIND: &'static str = "psp_notice";
    fn key(&self) -> Key {
        keys::psp("NOTICE", &self.id)
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.received_at + REMEMBERED).timestamp())
    }
}

/// A dispute on one of Recoup's payments, as first reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DisputeRecord {
    id: String,
    invoice_id: InvoiceId,
    customer_id: CustomerId,
    charge_id: String,
    amount: Money,
    reason: String,
    status: String,
    received_at: Timestamp,
}

impl Entity for DisputeRecord {
    const KIND: &'static str = "dispute";
    fn key(&self) -> Key {
        keys::psp("DISPUTE", &self.id)
    }
}

/// What a notice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Processed before: nothing done.
    Duplicate,
    /// Not about anything Recoup acts on (another type, or a payment Recoup did not make).
    Ignored,
    /// The pending attempt is settled with this outcome.
    Attempt(ChargeOutcome),
    /// The attempt was settled already, the same way (or the cardholder is still at it).
    Unchanged,
    /// A recorded decline was in fact approved: the invoice is paid.
    LateApproval,
    /// A recorded decline was in fact approved, but the invoice was paid meanwhile (or
    /// void): the customer paid twice and a refund is due. Logged as an error.
    ChargedTwice,
    /// A saved card took the issuer's new details and is valid again; if it is the default,
    /// the customer's outstanding invoices were charged to it (this many).
    CardUpdated { charged: usize },
    /// A card detached at the PSP can no longer be charged: it is marked invalid.
    CardDetached,
    /// A card set up through the card form, which the form never registered, is saved.
    CardSaved,
    /// A dispute on one of Recoup's payments is recorded, with an `invoice.disputed` event.
    Disputed,
}

impl Settled {
    pub fn as_str(&self) -> &'static str {
        match self {
            Settled::Duplicate => "duplicate",
            Settled::Ignored => "ignored",
            Settled::Attempt(ChargeOutcome::Paid) => "paid",
            Settled::Attempt(ChargeOutcome::Declined) => "declined",
            Settled::Attempt(ChargeOutcome::Pending) => "pending",
            Settled::Unchanged => "unchanged",
            Settled::LateApproval => "late_approval",
            Settled::ChargedTwice => "charged_twice",
            Settled::CardUpdated { .. } => "card_updated",
            Settled::CardDetached => "card_detached",
            Settled::CardSaved => "card_saved",
            Settled::Disputed => "disputed",
        }
    }
}

impl Services {
    /// Settles a verified PSP notice, once.
    pub async fn settle_psp_notice(&self, notice: &PspNotice) -> Result<Settled> {
        if self.repo.load::<SeenNotice>(&keys::psp("NOTICE", &notice.id)).await?.is_some() {
            return Ok(Settled::Duplicate);
        }
        let settled = match &notice.event {
            None => Settled::Ignored,
            Some(PspEvent::Payment { idempotency_key, invoice_id, outcome, needs_cardholder }) => {
                self.settle_psp_payment(invoice_id.as_ref(), idempotency_key, outcome, *needs_cardholder).await?
            }
            Some(PspEvent::CardUpdated { customer_id, card }) => self.card_updated_by_issuer(customer_id, card).await?,
            Some(PspEvent::CardDetached { customer_id, psp_token }) => {
                self.card_detached_at_psp(customer_id, psp_token).await?
            }
            Some(PspEvent::CardSetUp { customer_id, setup_id, psp_token }) => {
                self.card_set_up_at_psp(customer_id, setup_id, psp_token).await?
            }
            Some(PspEvent::Dispute(dispute)) => self.dispute_opened(dispute).await?,
        };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(SeenNotice {
            id: notice.id.clone(),
            kind: notice.kind.clone(),
            received_at: self.now(),
        }))?;
        match self.repo.commit(tx).await {
            // Another delivery of the same notice got here first: same effect.
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(notice_id = %notice.id, kind = %notice.kind, settled = settled.as_str(), "PSP notice settled");
        Ok(settled)
    }

    async fn settle_psp_payment(
        &self,
        invoice_id: Option<&InvoiceId>,
        key: &str,
        outcome: &AttemptOutcome,
        needs_cardholder: bool,
    ) -> Result<Settled> {
        let Some(invoice_id) = invoice_id else {
            tracing::info!(idempotency_key = key, "a payment notice without an invoice: not one of Recoup's charges");
            return Ok(Settled::Ignored);
        };
        let Some(inv) = self.repo.invoice(invoice_id).await? else {
            tracing::warn!(invoice_id = %invoice_id, "a payment notice for an unknown invoice; ignored");
            return Ok(Settled::Ignored);
        };
        let Some(txn) = inv.transactions().iter().find(|t| t.idempotency_key == key).cloned() else {
            tracing::warn!(invoice_id = %invoice_id, idempotency_key = key, "a payment notice for an unknown attempt; ignored");
            return Ok(Settled::Ignored);
        };
        match (txn.status, outcome) {
            // The cardholder may still authenticate on-session; off-session it is a decline.
            (TransactionStatus::Pending, _) if needs_cardholder && txn.trigger.on_session() => Ok(Settled::Unchanged),
            (TransactionStatus::Pending, AttemptOutcome::Unknown | AttemptOutcome::RequiresAction { .. }) => {
                Ok(Settled::Unchanged)
            }
            (TransactionStatus::Pending, _) => {
                let report = self.settle(&inv.id, &txn, outcome.clone()).await?;
                Ok(Settled::Attempt(report.outcome))
            }
            (TransactionStatus::Failed, AttemptOutcome::Succeeded { charge_id }) => {
                self.late_approval(&inv.id, &txn.id, charge_id).await
            }
            (TransactionStatus::Succeeded | TransactionStatus::Failed, _) => Ok(Settled::Unchanged),
        }
    }

    /// The issuer's account updater changed a saved card (new expiry or number): the card
    /// takes the new details and is valid again, unless a never-retry decline blocks the
    /// card it now is. A default card then collects what is outstanding, as a new card does.
    async fn card_updated_by_issuer(&self, customer_id: &CustomerId, card: &VerifiedCard) -> Result<Settled> {
        if let Some(ledger) = self.repo.ledger(&card.fingerprint).await?
            && ledger.block_for(card.expiry).is_some()
        {
            tracing::info!(customer_id = %customer_id, "an updated card is still blocked; left as it is");
            return Ok(Settled::Unchanged);
        }
        let updated = self
            .optimistic("customer's cards", || async move {
                let customer = self.customer(customer_id).await?;
                let Some(mut pm) =
                    self.repo.payment_methods(customer_id).await?.into_iter().find(|pm| pm.psp_token == card.psp_token)
                else {
                    return Ok(Decision::Answer(None));
                };
                if pm.expiry == card.expiry
                    && pm.fingerprint == card.fingerprint
                    && pm.last4 == card.last4
                    && pm.invalidation().is_none()
                {
                    return Ok(Decision::Answer(None));
                }
                let now = self.now();
                pm.updated_by_issuer(card.clone(), now);
                let mut tx = Tx::new();
                tx.save(&pm)?;
                tx.check(&customer);
                tx.emit(
                    [EventPayload::PaymentMethodAttached {
                        payment_method_id: pm.id.clone(),
                        customer_id: customer_id.clone(),
                        brand: pm.brand,
                        last4: pm.last4.clone(),
                        replaced: true,
                    }],
                    now,
                )?;
                let is_default = customer.default_payment_method_id() == Some(&pm.id);
                Ok(Decision::Commit(tx, Some((pm.id.clone(), is_default))))
            })
            .await?;
        let Some((pm, is_default)) = updated else { return Ok(Settled::Unchanged) };
        tracing::info!(customer_id = %customer_id, payment_method_id = %pm, "card updated by the issuer");
        let charged = if is_default { self.recover_outstanding(customer_id, &pm).await?.len() } else { 0 };
        Ok(Settled::CardUpdated { charged })
    }

    /// A card detached at the PSP (from its dashboard, say) cannot be charged any more:
    /// it is marked invalid, so nothing is attempted on it and the customer is asked for
    /// another. A card Recoup removed itself is gone already.
    async fn card_detached_at_psp(&self, customer_id: &CustomerId, psp_token: &str) -> Result<Settled> {
        self.optimistic("customer's cards", || async move {
            let Some(mut pm) =
                self.repo.payment_methods(customer_id).await?.into_iter().find(|pm| pm.psp_token == psp_token)
            else {
                return Ok(Decision::Answer(Settled::Unchanged));
            };
            if pm.invalidation().is_some() {
                return Ok(Decision::Answer(Settled::Unchanged));
            }
            pm.invalidate(ErrorType::PaymentMethodInvalid, self.now());
            let mut tx = Tx::new();
            tx.save(&pm)?;
            Ok(Decision::Commit(tx, Settled::CardDetached))
        })
        .await
    }

    /// A setup from the card form succeeded at the PSP. The form registers the card as soon
    /// as the cardholder confirms; this covers a browser that never came back. A card saved
    /// already is left as it is; a card the registration rules refuse stays unsaved.
    async fn card_set_up_at_psp(&self, customer_id: &CustomerId, setup_id: &str, psp_token: &str) -> Result<Settled> {
        if self.repo.customer(customer_id).await?.is_none() {
            tracing::warn!(customer_id = %customer_id, "a card setup for an unknown customer; ignored");
            return Ok(Settled::Ignored);
        }
        if self.repo.payment_methods(customer_id).await?.iter().any(|pm| pm.psp_token == psp_token) {
            return Ok(Settled::Unchanged);
        }
        match self.register_set_up_card(customer_id, setup_id, psp_token, false).await {
            Ok(_) => Ok(Settled::CardSaved),
            Err(e) if e.code == crate::error::Code::ServiceUnavailable => Err(e),
            Err(e) => {
                tracing::info!(customer_id = %customer_id, code = e.code.as_str(), "a card set up at the PSP was not saved");
                Ok(Settled::Unchanged)
            }
        }
    }

    /// A cardholder disputed a payment. One of Recoup's (the PSP knows its invoice) is
    /// recorded once, with an `invoice.disputed` event; the invoice stays paid.
    async fn dispute_opened(&self, dispute: &Dispute) -> Result<Settled> {
        let owner =
            self.gateway.payment_owner(&dispute.payment_id).await.map_err(|e| Error::unavailable(e.to_string()))?;
        let Some((invoice_id, customer_id)) = owner else {
            tracing::info!(dispute_id = %dispute.id, "a dispute on a payment Recoup did not make; ignored");
            return Ok(Settled::Ignored);
        };
        let now = self.now();
        let record = DisputeRecord {
            id: dispute.id.clone(),
            invoice_id: invoice_id.clone(),
            customer_id: customer_id.clone(),
            charge_id: dispute.payment_id.clone(),
            amount: dispute.amount,
            reason: dispute.reason.clone(),
            status: dispute.status.clone(),
            received_at: now,
        };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(record))?;
        tx.emit(
            [EventPayload::InvoiceDisputed {
                invoice_id: invoice_id.clone(),
                customer_id,
                dispute_id: dispute.id.clone(),
                charge_id: dispute.payment_id.clone(),
                amount: dispute.amount,
                reason: dispute.reason.clone(),
            }],
            now,
        )?;
        match self.repo.commit(tx).await {
            Ok(events) => {
                self.publish(events).await;
                tracing::warn!(invoice_id = %invoice_id, dispute_id = %dispute.id, reason = %dispute.reason, "a payment was disputed");
                Ok(Settled::Disputed)
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(Settled::Unchanged),
            Err(e) => Err(e.into()),
        }
    }

    async fn late_approval(
        &self,
        invoice_id: &InvoiceId,
        txn_id: &crate::ids::TransactionId,
        charge_id: &str,
    ) -> Result<Settled> {
        self.optimistic("invoice", || async move {
            let mut inv =
                self.repo.invoice(invoice_id).await?.ok_or_else(|| Error::internal("a late approval's invoice vanished"))?;
            if inv.transactions().iter().any(|t| &t.id == txn_id && t.status == TransactionStatus::Succeeded) {
                return Ok(Decision::Answer(Settled::Unchanged));
            }
            let now = self.now();
            let mut tx = Tx::new();
            let settled = match inv.record_late_success(txn_id, charge_id.to_owned(), now)? {
                LateSuccess::Paid(events) => {
                    // A late-approved refill credits its wallet (a voided one was refunded
                    // for: see ChargedTwice).
                    let (events, wallet) = self.wallet_follows(&mut inv, events, now).await?;
                    wallet.add_to(&mut tx)?;
                    tx.emit(events, now)?;
                    Settled::LateApproval
                }
                LateSuccess::ChargedTwice => {
                    tracing::error!(invoice_id = %invoice_id, transaction_id = %txn_id, charge_id, "the PSP approved an attempt on an invoice already paid or void: the customer paid twice; refund the charge");
                    Settled::ChargedTwice
                }
            };
            tx.save(&inv)?;
            Ok(Decision::Commit(tx, settled))
        })
        .await
    }
}
