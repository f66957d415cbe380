//! The charge engine. One protocol for every kind of charge (initial, scheduled retry,
//! manual, customer, new card):
//!
//! 1. **Claim**: append a pending transaction to the invoice and a pending entry to the
//!    card's ledger, in one transaction conditioned on both versions (and on the card
//!    being unchanged). Only one claimant wins; the loser never calls the PSP.
//! 2. **Charge** the PSP with the transaction's idempotency key.
//! 3. **Settle**: record the answer, plan the next attempt, and write the events, again in
//!    one transaction. An unknown answer leaves the transaction pending; the invoice comes
//!    due for reconciliation, which asks the PSP by the same key (and, if the PSP never
//!    saw it, sends the identical request again — the key makes that safe).
//!
//! Together with the invoice's own rule that nothing else may touch it while an attempt
//! is pending, this makes a second successful charge of an invoice impossible.

use crate::domain::card::Fingerprint;
use crate::domain::card::Network;
use crate::domain::decline::{HardReason, RetryClass, mastercard_retry_after};
use crate::domain::dunning::{ChargePlan, ChargeRefusal, DueContext, DueDecision, SkipReason, decide_due, plan_charge};
use crate::domain::invoice::{AttemptOutcome, AttemptTrigger, Invoice, Transaction, TransactionStatus};
use crate::domain::ledger::{CardBlock, CardLedger, LedgerEntry, LedgerOutcome};
use crate::domain::{Customer, PaymentMethod, Subscription};
use crate::error::{Code, Error, Result};
use crate::ids::{CustomerId, InvoiceId, PaymentMethodId, SubscriptionId};
use crate::ports::gateway::ChargeRequest;
use crate::store::repo::{Entity, Tx, Versioned, from_item};
use crate::store::{Item, StoreError, keys};
use crate::time::Timestamp;

use super::{Decision, OPTIMISTIC_RETRIES, Services};

/// Which card to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardChoice {
    Default,
    Specific(PaymentMethodId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Paid,
    Declined,
    /// No answer from the PSP yet; reconciled by idempotency key. Never charged again
    /// blindly, never reported as failed.
    Pending,
}

#[derive(Debug, Clone)]
pub struct ChargeReport {
    pub invoice: Invoice,
    pub transaction: Transaction,
    pub outcome: ChargeOutcome,
    /// With a pending on-session attempt: what the cardholder must do to complete it.
    pub next_action: Option<NextAction>,
}

impl ChargeReport {
    /// How the invoice's first attempt went: the answer to a re-run of the request that
    /// issued it, which finds the invoice and must not start another attempt. No attempt
    /// yet (the first run stopped before charging) is `charge_scheduled`: the invoice was
    /// put on the schedule for its first attempt when it was issued.
    pub(crate) fn of_first_attempt(invoice: &Invoice) -> Result<ChargeReport> {
        let Some(first) = invoice.transactions().first() else {
            return Err(Error::new(
                Code::ChargeScheduled,
                "an earlier run of this request issued the invoice but did not start its charge; it is on the schedule and will be charged shortly",
            ));
        };
        let outcome = match first.status {
            TransactionStatus::Succeeded => ChargeOutcome::Paid,
            TransactionStatus::Failed => ChargeOutcome::Declined,
            TransactionStatus::Pending => ChargeOutcome::Pending,
        };
        // The client secret of an on-session attempt is not kept; an initial charge is
        // off-session anyway.
        Ok(ChargeReport { invoice: invoice.clone(), transaction: first.clone(), outcome, next_action: None })
    }
}

/// The cardholder's part of a payment the issuer wants authenticated (3-D Secure): the
/// customer's page hands `client_secret` to the PSP's script (Stripe.js
/// `handleNextAction`), which runs the challenge; the PSP then reports the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextAction {
    pub psp_charge_id: String,
    pub client_secret: String,
}

/// What processing a due invoice did.
#[derive(Debug, Clone, PartialEq)]
pub enum DueOutcome {
    /// The invoice is gone or no longer due (a duplicate or stale message).
    NotDue,
    Charged(ChargeOutcome),
    Reconciled(Option<ChargeOutcome>),
    Parked,
    Skipped {
        next: Option<Timestamp>,
        reason: SkipReason,
    },
}

/// The outcome of one new-card recovery charge.
#[derive(Debug, Clone)]
pub struct RecoveryAttempt {
    pub invoice_id: InvoiceId,
    pub outcome: std::result::Result<ChargeOutcome, Error>,
}

/// A committed claim, and what remains to do after it.
enum Claim {
    /// Call the PSP with this pending attempt, then settle it. `claimed` is the invoice and
    /// the card's ledger exactly as the claim wrote them, so the settle can write over them
    /// without reading them again.
    Charge { invoice: Invoice, transaction: Transaction, claimed: Box<Claimed> },
    /// Nothing to send (an expired card): the attempt is recorded.
    Recorded(ChargeReport),
}

/// The invoice and ledger as a claim committed them (at their new versions).
struct Claimed {
    invoice: Versioned<Invoice>,
    ledger: Versioned<CardLedger>,
}

/// What processing a due invoice committed, and what remains to do after it.
enum DueStep {
    Done(DueOutcome),
    Reconcile,
    /// A committed claim, with the card's turn (released before the PSP is called).
    Claimed(Box<Claim>, Option<tokio::sync::OwnedMutexGuard<()>>),
}

fn refusal(r: ChargeRefusal) -> Error {
    match r {
        ChargeRefusal::Domain(e) => e.into(),
        ChargeRefusal::PaymentMethodUpdateRequired(error_type) => Error::new(Code::PaymentMethodUpdateRequired,
            "this card declined the payment for a reason retrying cannot fix; the customer must add a new card or register this one again",
        )
        .with("error_type", error_type.for_customer().as_str()),
        ChargeRefusal::CustomerAuthenticationRequired => Error::new(Code::CustomerAuthenticationRequired,
            "the issuer requires the cardholder to authenticate; the customer must pay from their billing page",
        ),
        ChargeRefusal::NetworkLimit(block) => Error::new(Code::NetworkRetryLimit,
            format!("not attempted: {}", block.rule.describe()),
        )
        .with("rule", serde_json::to_value(block.rule).unwrap_or_default())
        .with("retry_after", block.until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ChargeRefusal::SubscriptionCanceled => Error::new(Code::SubscriptionCanceled,
            "the invoice's subscription was canceled, so it is no longer collected automatically; the merchant may charge it by hand, mark it paid or void it",
        ),
    }
}

/// Hard declines that prove the card itself unusable (rather than this payment).
fn invalidates_card(class: Option<RetryClass>) -> bool {
    match class {
        Some(RetryClass::Hard { reason }) => match reason {
            HardReason::Expired
            | HardReason::InvalidDetails
            | HardReason::LostOrStolen
            | HardReason::DoNotTryAgain
            | HardReason::VisaCategory1
            | HardReason::MastercardAdvice => true,
            HardReason::Fraud | HardReason::NotSupported => false,
        },
        Some(RetryClass::Soft | RetryClass::NeedsCustomer) | None => false,
    }
}

fn outcome_of(txn: &Transaction) -> ChargeOutcome {
    match txn.status {
        TransactionStatus::Succeeded => ChargeOutcome::Paid,
        TransactionStatus::Failed => ChargeOutcome::Declined,
        TransactionStatus::Pending => ChargeOutcome::Pending,
    }
}

fn request_for(invoice: &Invoice, txn: &Transaction) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: txn.idempotency_key.clone(),
        psp_token: txn.card.psp_token.clone(),
        amount: invoice.amount,
        customer_id: invoice.customer_id.clone(),
        invoice_id: invoice.id.clone(),
        attempt: txn.number,
        off_session: !txn.trigger.on_session(),
        description: invoice.description.clone(),
    }
}

/// What a caller may know of an invoice's charge before reading anything: enough to name
/// every item the charge reads, so one batched read fetches the invoice with its customer,
/// subscription, card and the card's ledger. The retry scheduler puts it in the charge
/// message from the due invoice it found. A wrong or stale hint costs reads, never
/// correctness: what was read is checked against the invoice, and the claim is conditioned
/// on every version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChargeHint {
    pub customer_id: CustomerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    /// The card the charge will probably use: the invoice's last attempt's (dunning charges
    /// the default card again) or the customer's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardHint>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardHint {
    pub payment_method_id: PaymentMethodId,
    pub fingerprint: Fingerprint,
}

impl ChargeHint {
    /// What an invoice says of its next charge.
    pub fn of(invoice: &Invoice) -> ChargeHint {
        ChargeHint {
            customer_id: invoice.customer_id.clone(),
            subscription_id: invoice.subscription_id().cloned(),
            card: invoice.transactions().last().map(|t| CardHint {
                payment_method_id: t.card.payment_method_id.clone(),
                fingerprint: t.card.fingerprint.clone(),
            }),
        }
    }
}

/// What a charge reads besides the invoice.
struct ChargeContext {
    card: Option<Versioned<PaymentMethod>>,
    /// The card's ledger (a fresh one if the card was never charged); with the card.
    ledger: Option<Versioned<CardLedger>>,
    subscription: Option<Versioned<Subscription>>,
}

/// Where a charge's reads start. (Made once per round and consumed at once: its size does
/// not matter.)
#[allow(clippy::large_enum_variant)]
enum Start<'a> {
    /// The invoice, read already (and perhaps its customer).
    Known(Versioned<Invoice>, Option<Versioned<Customer>>),
    /// Only the invoice's id, and what the caller guesses of it.
    Id(&'a InvoiceId, Option<&'a ChargeHint>),
}

fn take<T: Entity>(items: &mut [Option<Item>], at: Option<usize>) -> Result<Option<Versioned<T>>> {
    match at.and_then(|i| items[i].take()) {
        Some(item) => Ok(Some(from_item(item)?)),
        None => Ok(None),
    }
}

impl Services {
    /// Reads the invoice and what charging it needs in as few round trips as it can: one
    /// batched read of the invoice (unless held), the customer (whose default card it is),
    /// the subscription, and the card with its ledger. Those are named from the hint, or
    /// from what the caller holds (the invoice's last attempt, the customer's default
    /// card). Without a hint or the invoice, the invoice is read first. A wrong guess costs
    /// one more read: the card with its ledger when the customer names the default card's
    /// fingerprint, else each alone. `None`: there is no such invoice.
    ///
    /// `eventually`: the batched read may be eventually consistent (half the read cost on
    /// DynamoDB). Only for a first look whose every consequence is a write conditioned on
    /// what was read: a stale read then costs a lost round, which reads strongly.
    async fn charge_context(
        &self,
        start: Start<'_>,
        choice: &CardChoice,
        eventually: bool,
    ) -> Result<Option<(Versioned<Invoice>, ChargeContext)>> {
        let (held, known_customer, hint, to_read) = match start {
            Start::Known(inv, customer) => {
                let hint = ChargeHint::of(&inv);
                (Some(inv), customer, hint, None)
            }
            Start::Id(id, Some(hint)) => (None, None, hint.clone(), Some(id)),
            Start::Id(id, None) => match self.repo.invoice(id).await? {
                Some(inv) => {
                    let hint = ChargeHint::of(&inv);
                    (Some(inv), None, hint, None)
                }
                None => return Ok(None),
            },
        };
        let known_customer = known_customer.filter(|c| c.id == hint.customer_id);
        // The card to name in advance, with its fingerprint when known.
        let default_card = known_customer
            .as_ref()
            .and_then(|c| c.default_card())
            .map(|(id, fp)| CardHint { payment_method_id: id.clone(), fingerprint: fp.clone() })
            .or(hint.card);
        let (guess, guessed_fingerprint): (Option<&PaymentMethodId>, Option<&Fingerprint>) = match choice {
            CardChoice::Specific(id) => {
                (Some(id), default_card.as_ref().filter(|c| &c.payment_method_id == id).map(|c| &c.fingerprint))
            }
            CardChoice::Default => {
                (default_card.as_ref().map(|c| &c.payment_method_id), default_card.as_ref().map(|c| &c.fingerprint))
            }
        };
        let mut keys = Vec::with_capacity(5);
        let mut slot = |key| {
            keys.push(key);
            Some(keys.len() - 1)
        };
        let invoice_at = to_read.and_then(|id| slot(keys::invoice(id)));
        let customer_at = match choice {
            CardChoice::Default if known_customer.is_none() => slot(keys::customer(&hint.customer_id)),
            CardChoice::Default | CardChoice::Specific(_) => None,
        };
        let subscription_at = hint.subscription_id.as_ref().and_then(|id| slot(keys::subscription(id)));
        let card_at = guess.and_then(|id| slot(keys::payment_method(&hint.customer_id, id)));
        let ledger_at = guessed_fingerprint.and_then(|fp| slot(keys::card_ledger(fp)));
        let store = self.repo.store();
        let mut items = match (keys.is_empty(), eventually) {
            (true, _) => Vec::new(),
            (false, true) => store.get_many_eventually(&keys).await?,
            (false, false) => store.get_many(&keys).await?,
        };

        let inv: Versioned<Invoice> = match held {
            Some(inv) => inv,
            None => match take(&mut items, invoice_at)? {
                Some(inv) => inv,
                None => return Ok(None),
            },
        };
        // A hint about another customer or subscription named the wrong items: read the
        // invoice's own.
        let right_customer = inv.customer_id == hint.customer_id;
        let customer: Option<Versioned<Customer>> = match (known_customer, choice) {
            (_, CardChoice::Specific(_)) => None,
            (Some(known), CardChoice::Default) if right_customer => Some(known),
            (None, CardChoice::Default) if right_customer => take(&mut items, customer_at)?,
            (_, CardChoice::Default) => self.repo.customer(&inv.customer_id).await?,
        };
        let subscription = match inv.subscription_id() {
            None => None,
            Some(id) if hint.subscription_id.as_ref() == Some(id) => take(&mut items, subscription_at)?,
            Some(id) => self.repo.subscription(id).await?,
        };
        let guessed_card: Option<Versioned<PaymentMethod>> =
            if right_customer { take(&mut items, card_at)? } else { None };
        let guessed_ledger: Option<Versioned<CardLedger>> = take(&mut items, ledger_at)?;
        let wanted = match choice {
            CardChoice::Specific(id) => Some(id),
            CardChoice::Default => {
                customer.as_ref().ok_or_else(|| Error::not_found("customer"))?.default_payment_method_id()
            }
        };
        // A card not guessed is read now; with its ledger in the same batch when the
        // customer names the default card's fingerprint.
        let mut late_ledger: Option<(Fingerprint, Option<Versioned<CardLedger>>)> = None;
        let card = match wanted {
            None => None,
            Some(id) if right_customer && Some(id) == guess => guessed_card,
            Some(id) => match customer.as_ref().and_then(|c| c.default_card()).filter(|(default, _)| *default == id) {
                Some((_, fingerprint)) => {
                    let keys = [keys::payment_method(&inv.customer_id, id), keys::card_ledger(fingerprint)];
                    let mut items = store.get_many(&keys).await?;
                    late_ledger = Some((fingerprint.clone(), take(&mut items, Some(1))?));
                    take(&mut items, Some(0))?
                }
                None => self.repo.payment_method(&inv.customer_id, id).await?,
            },
        };
        let ledger = match &card {
            None => None,
            Some(c) if ledger_at.is_some() && guessed_fingerprint == Some(&c.fingerprint) => Some(guessed_ledger),
            Some(c) => match late_ledger {
                Some((fingerprint, ledger)) if fingerprint == c.fingerprint => Some(ledger),
                _ => Some(self.repo.ledger(&c.fingerprint).await?),
            },
        }
        .zip(card.as_ref())
        .map(|(l, c)| l.unwrap_or_else(|| Versioned::new(CardLedger::new(c.fingerprint.clone(), c.network()))));
        Ok(Some((inv, ChargeContext { card, ledger, subscription })))
    }

    /// The card's turn in this process; if it had to wait, the ledger read before is stale
    /// and is read again.
    async fn card_turn(
        &self,
        card: &PaymentMethod,
        ledger: &mut Versioned<CardLedger>,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        let (turn, waited) = self.card_turns.turn(&card.fingerprint).await;
        if waited {
            *ledger = self.ledger_for(card).await?;
        }
        Ok(turn)
    }

    async fn ledger_for(&self, card: &PaymentMethod) -> Result<Versioned<CardLedger>> {
        Ok(self
            .repo
            .ledger(&card.fingerprint)
            .await?
            .unwrap_or_else(|| Versioned::new(CardLedger::new(card.fingerprint.clone(), card.network()))))
    }

    /// Charges an invoice now, on request (merchant, customer, initial, new card).
    pub async fn charge_invoice(
        &self,
        invoice_id: &InvoiceId,
        choice: CardChoice,
        trigger: AttemptTrigger,
    ) -> Result<ChargeReport> {
        self.charge_invoice_from(invoice_id, choice, trigger, None).await
    }

    /// [`Services::charge_invoice`], its first round starting from an invoice and customer
    /// the caller holds (just issued: neither is read again). A claim is conditioned on the
    /// invoice's version, so if either was stale the claim fails and the next round reads.
    /// Later rounds read everything in one batch, named from the first round's invoice.
    pub(crate) async fn charge_invoice_from(
        &self,
        invoice_id: &InvoiceId,
        choice: CardChoice,
        trigger: AttemptTrigger,
        known: Option<(Versioned<Invoice>, Versioned<Customer>)>,
    ) -> Result<ChargeReport> {
        let choice = &choice;
        let known = &std::sync::Mutex::new(known);
        let hint = &std::sync::Mutex::new(None::<ChargeHint>);
        let (claim, turn) = self
            .optimistic("invoice", || async move {
                let first_round = known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                let held_hint = hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let start = match first_round {
                    Some((inv, customer)) if inv.id == *invoice_id => Start::Known(inv, Some(customer)),
                    _ => Start::Id(invoice_id, held_hint.as_ref()),
                };
                let (inv, ChargeContext { card, ledger, subscription: sub }) =
                    self.charge_context(start, choice, false).await?.ok_or_else(|| Error::not_found("invoice"))?;
                *hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ChargeHint::of(&inv));
                let (Some(card), Some(mut ledger)) = (card, ledger) else {
                    return Err(match choice {
                        CardChoice::Default => Error::new(
                            Code::NoPaymentMethod,
                            "the customer has no default card; they must add one first",
                        ),
                        CardChoice::Specific(_) => Error::not_found("payment method"),
                    });
                };
                let turn = self.card_turn(&card, &mut ledger).await?;
                let status = sub.as_ref().map(|s| s.status());
                let (tx, claim) =
                    match plan_charge(&inv, &card, Some(&ledger), status, trigger, self.now()).map_err(refusal)? {
                        ChargePlan::Attempt => self.claim(inv, &card, ledger, sub.as_ref(), trigger)?,
                        ChargePlan::RecordExpired => self.record_expired(inv, &card, trigger).await?,
                    };
                Ok(Decision::Commit(tx, (claim, turn)))
            })
            .await?;
        // The card's turn ends with the claim's commit, before the PSP is called.
        drop(turn);
        self.complete(claim).await
    }

    /// Issues an invoice and claims its first attempt in one commit, with `also`'s writes
    /// (its `invoice.created` event, the request's mark): the invoice is new, so nothing
    /// else can hold it, and a separate create would cost a commit of its own. Then charges
    /// it, publishing the commit's events meanwhile.
    ///
    /// Answers `None` with nothing written when the first attempt cannot be claimed here
    /// (no default card, an expired one, a refusal, or a commit whose conditions failed):
    /// the caller then issues the invoice alone and charges it the usual way, which reads
    /// again and explains any refusal.
    pub(crate) async fn issue_and_charge(
        &self,
        invoice: Invoice,
        customer: Versioned<Customer>,
        also: impl FnOnce(&mut Tx) -> Result<()>,
    ) -> Result<Option<(Invoice, Result<ChargeReport>)>> {
        let trigger = AttemptTrigger::Initial;
        let start = Start::Known(Versioned::new(invoice), Some(customer));
        let Some((inv, ChargeContext { card, ledger, subscription })) =
            self.charge_context(start, &CardChoice::Default, false).await?
        else {
            return Ok(None);
        };
        let (Some(card), Some(mut ledger), None) = (card, ledger, subscription) else { return Ok(None) };
        let turn = self.card_turn(&card, &mut ledger).await?;
        match plan_charge(&inv, &card, Some(&ledger), None, trigger, self.now()) {
            Ok(ChargePlan::Attempt) => {}
            Ok(ChargePlan::RecordExpired) | Err(_) => return Ok(None),
        }
        let (mut tx, claim) = self.claim(inv, &card, ledger, None, trigger)?;
        also(&mut tx)?;
        let events = match self.repo.commit(tx).await {
            Ok(events) => events,
            Err(StoreError::ConditionFailed { .. } | StoreError::Contention(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The card's turn ends with the claim's commit, before the PSP is called.
        drop(turn);
        let issued = match &claim {
            Claim::Charge { invoice, .. } => invoice.clone(),
            Claim::Recorded(report) => report.invoice.clone(),
        };
        tracing::info!(invoice_id = %issued.id, customer_id = %issued.customer_id, amount = %issued.amount, "invoice issued");
        let (_, charge) = futures::join!(self.publish(events), self.complete(claim));
        Ok(Some((issued, charge)))
    }

    /// Claims an attempt: a pending transaction on the invoice and a pending entry on the
    /// card's ledger, conditioned on both versions, on the card being unchanged, and on the
    /// subscription too (when the invoice has one), so a charge decided before a cancel or
    /// pause does not start after it.
    fn claim(
        &self,
        mut inv: Versioned<Invoice>,
        card: &Versioned<PaymentMethod>,
        mut ledger: Versioned<CardLedger>,
        subscription: Option<&Versioned<Subscription>>,
        trigger: AttemptTrigger,
    ) -> Result<(Tx, Claim)> {
        let now = self.now();
        let txn = inv.begin_attempt(&card.snapshot(), trigger, now, now + self.policy.reconcile_after)?;
        ledger.record(LedgerEntry {
            at: now,
            transaction_id: txn.id.clone(),
            payment: inv.id.to_string(),
            payment_method_id: card.id.clone(),
            reattempt: txn.reattempt,
            outcome: LedgerOutcome::Pending,
        });
        let mut tx = Tx::new();
        tx.save(&inv)?;
        tx.save(&ledger)?;
        tx.check(card);
        if let Some(sub) = subscription {
            tx.check(sub);
        }
        // What the store holds once this commits: the same values, one version on.
        let invoice: Invoice = (*inv).clone();
        let (inv_version, ledger_version) = (inv.version() + 1, ledger.version() + 1);
        let mut inv = inv;
        inv.set_version(inv_version);
        ledger.set_version(ledger_version);
        let claimed = Box::new(Claimed { invoice: inv, ledger });
        Ok((tx, Claim::Charge { invoice, transaction: txn, claimed }))
    }

    /// An expired card: the attempt is recorded as failed without calling the PSP.
    async fn record_expired(
        &self,
        mut inv: Versioned<Invoice>,
        card: &PaymentMethod,
        trigger: AttemptTrigger,
    ) -> Result<(Tx, Claim)> {
        let now = self.now();
        let (txn, events) = inv.record_expired_card(&card.snapshot(), trigger, &self.policy, now)?;
        let (events, wallet) = self.wallet_follows(&mut inv, events, now).await?;
        let mut tx = Tx::new();
        tx.save(&inv)?;
        wallet.add_to(&mut tx)?;
        tx.emit(events, now)?;
        let report = ChargeReport {
            invoice: inv.into_inner(),
            transaction: txn,
            outcome: ChargeOutcome::Declined,
            next_action: None,
        };
        Ok((tx, Claim::Recorded(report)))
    }

    /// After a committed claim: charge the PSP with the attempt's key and settle.
    async fn complete(&self, claim: Claim) -> Result<ChargeReport> {
        let (invoice, txn, claimed) = match claim {
            Claim::Recorded(report) => {
                tracing::info!(invoice_id = %report.invoice.id, card = %report.transaction.card.payment_method_id, "expired card: attempt recorded without calling the PSP");
                return Ok(report);
            }
            Claim::Charge { invoice, transaction, claimed } => (invoice, transaction, claimed),
        };
        tracing::info!(
            invoice_id = %invoice.id, transaction_id = %txn.id, attempt = txn.number,
            reattempt = txn.reattempt, trigger = ?txn.trigger, card = %txn.card.payment_method_id, "charging"
        );
        let outcome = self.gateway.charge(&request_for(&invoice, &txn)).await;
        match self.settle_from(&invoice.id, &txn, outcome, Some(*claimed)).await {
            Ok(report) => Ok(report),
            // The PSP was called but its answer could not be recorded: the attempt stays
            // pending and is reconciled by its key. Reporting an error here would tell the
            // caller nothing was attempted.
            Err(e) => {
                tracing::warn!(invoice_id = %invoice.id, transaction_id = %txn.id, error = %e, "could not record the PSP's answer; left for reconciliation");
                Ok(ChargeReport { invoice, transaction: txn, outcome: ChargeOutcome::Pending, next_action: None })
            }
        }
    }

    /// Records the PSP's answer. Retries on contention (twice as long as other use cases:
    /// an answer once received is recorded unless the store itself is down, and then
    /// reconciliation finds it later).
    pub(crate) async fn settle(
        &self,
        invoice_id: &InvoiceId,
        claimed: &Transaction,
        outcome: AttemptOutcome,
    ) -> Result<ChargeReport> {
        self.settle_from(invoice_id, claimed, outcome, None).await
    }

    /// Settles starting from the claim's own writes when they are known: the first round
    /// reads nothing, and only if someone wrote the invoice or the ledger since (the
    /// version conditions fail) does a round read them afresh.
    async fn settle_from(
        &self,
        invoice_id: &InvoiceId,
        claimed: &Transaction,
        outcome: AttemptOutcome,
        known: Option<Claimed>,
    ) -> Result<ChargeReport> {
        let outcome = &outcome;
        let known = &std::sync::Mutex::new(known);
        let turn = self.card_turns.lock(&claimed.card.fingerprint).await;
        let report = self
            .optimistic_tries(OPTIMISTIC_RETRIES * 2, "invoice", || async move {
                let held = known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                let (mut inv, held_ledger) = match held {
                    Some(Claimed { invoice, ledger }) => (invoice, Some(ledger)),
                    None => (
                        self.repo
                            .invoice(invoice_id)
                            .await?
                            .ok_or_else(|| Error::internal("settling a missing invoice"))?,
                        None,
                    ),
                };
                let Some(current) = inv.transactions().iter().find(|t| t.id == claimed.id).cloned() else {
                    return Err(Error::internal("settling an unknown transaction"));
                };
                if current.status != TransactionStatus::Pending {
                    // Settled already (by reconciliation racing us): report what is recorded.
                    let outcome = outcome_of(&current);
                    return Ok(Decision::Answer(ChargeReport {
                        invoice: inv.into_inner(),
                        transaction: current,
                        outcome,
                        next_action: None,
                    }));
                }
                let now = self.now();
                let retry_not_before = match (outcome, current.card.network()) {
                    (AttemptOutcome::Declined(d), Network::Mastercard) => {
                        d.advice_code.as_deref().and_then(mastercard_retry_after).map(|wait| now + wait)
                    }
                    _ => None,
                };
                let events = inv.settle(&current.id, outcome.clone(), &self.policy, retry_not_before, now)?;
                let settled =
                    inv.transactions().iter().find(|t| t.id == current.id).cloned().unwrap_or(current.clone());

                let mut ledger = match held_ledger {
                    Some(l) => l,
                    None => self.repo.ledger(&current.card.fingerprint).await?.unwrap_or_else(|| {
                        Versioned::new(CardLedger::new(current.card.fingerprint.clone(), current.card.network()))
                    }),
                };
                let ledger_outcome = match outcome {
                    AttemptOutcome::Succeeded { .. } => LedgerOutcome::Approved,
                    AttemptOutcome::Declined(_) => LedgerOutcome::Declined,
                    AttemptOutcome::RequiresAction { .. } | AttemptOutcome::Unknown => LedgerOutcome::Pending,
                };
                ledger.settle(&current.id, ledger_outcome, retry_not_before);
                // A decline that condemns the card blocks it for every customer who saved it.
                if let (AttemptOutcome::Declined(d), Some(RetryClass::Hard { reason })) = (outcome, settled.retry_class)
                    && reason.blocks_card()
                {
                    ledger.block(CardBlock { at: now, error_type: d.error_type, reason, expiry: current.card.expiry });
                }

                let mut card_update = None;
                if let AttemptOutcome::Declined(d) = outcome
                    && invalidates_card(settled.retry_class)
                    && let Some(mut pm) =
                        self.repo.payment_method(&inv.customer_id, &current.card.payment_method_id).await?
                    && pm.fingerprint == current.card.fingerprint
                    && pm.verified_at <= current.created_at
                {
                    pm.invalidate(d.error_type, now);
                    card_update = Some(pm);
                }

                let (events, wallet) = self.wallet_follows(&mut inv, events, now).await?;
                let mut tx = Tx::new();
                tx.save(&inv)?;
                tx.save(&ledger)?;
                if let Some(pm) = &card_update {
                    tx.save(pm)?;
                }
                wallet.add_to(&mut tx)?;
                tx.emit(events, now)?;
                let report_outcome = outcome_of(&settled);
                let next_action = match outcome {
                    AttemptOutcome::RequiresAction { charge_id, client_secret } => {
                        Some(NextAction { psp_charge_id: charge_id.clone(), client_secret: client_secret.clone() })
                    }
                    AttemptOutcome::Succeeded { .. } | AttemptOutcome::Declined(_) | AttemptOutcome::Unknown => None,
                };
                let report = ChargeReport {
                    invoice: inv.into_inner(),
                    transaction: settled,
                    outcome: report_outcome,
                    next_action,
                };
                Ok(Decision::Commit(tx, report))
            })
            .await?;
        drop(turn);
        tracing::info!(
            invoice_id = %report.invoice.id, transaction_id = %report.transaction.id, outcome = ?report.outcome,
            error_type = ?report.transaction.error_type(), next_attempt_at = ?report.invoice.next_attempt_at(), "attempt settled"
        );
        Ok(report)
    }

    /// Settles an attempt that never got its answer: asks the PSP by idempotency key, and
    /// if the PSP never saw the request, sends the identical request again.
    pub async fn reconcile(&self, invoice_id: &InvoiceId) -> Result<Option<ChargeReport>> {
        let Some(inv) = self.repo.invoice(invoice_id).await? else { return Ok(None) };
        let Some(txn) = inv.pending_transaction().cloned() else { return Ok(None) };
        let outcome = match self.gateway.lookup(&txn.idempotency_key).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => self.gateway.charge(&request_for(&inv, &txn)).await,
            Err(e) => {
                tracing::warn!(invoice_id = %inv.id, error = %e, "reconciliation lookup failed");
                AttemptOutcome::Unknown
            }
        };
        tracing::info!(invoice_id = %inv.id, transaction_id = %txn.id, "reconciling an unanswered attempt");
        self.settle(&inv.id, &txn, outcome).await.map(Some)
    }

    /// After the cardholder answered 3-D Secure for the invoice's pending attempt: reads
    /// that payment directly (its charge id was recorded when the PSP asked for the
    /// cardholder) and records its outcome; without one, reconciles by idempotency key.
    pub async fn settle_after_authentication(&self, invoice_id: &InvoiceId) -> Result<Option<ChargeReport>> {
        let Some(inv) = self.repo.invoice(invoice_id).await? else { return Ok(None) };
        let Some(txn) = inv.pending_transaction().cloned() else { return Ok(None) };
        if let Some(payment) = &txn.psp_charge_id {
            match self.gateway.payment_outcome(payment).await {
                Ok(Some(outcome)) => return self.settle(&inv.id, &txn, outcome).await.map(Some),
                Ok(None) => {}
                Err(e) => tracing::warn!(invoice_id = %inv.id, error = %e, "the payment could not be read; reconciling"),
            }
        }
        self.reconcile(invoice_id).await
    }

    /// The charge worker's job: look at an invoice that came due and do what the policy
    /// says. Safe to run twice for the same message.
    pub async fn process_due(&self, invoice_id: &InvoiceId) -> Result<DueOutcome> {
        self.process_due_hinted(invoice_id, None).await
    }

    /// [`Services::process_due`] with what the scheduler knew of the invoice, so that one
    /// batched read fetches the invoice and everything its charge needs.
    pub async fn process_due_hinted(&self, invoice_id: &InvoiceId, hint: Option<&ChargeHint>) -> Result<DueOutcome> {
        let hint = &std::sync::Mutex::new(hint.cloned());
        // The first round's look may be eventually consistent: everything it can lead to
        // is a write conditioned on the versions read, a not-due answer the next sweep
        // revisits, or a reconciliation that reads again.
        let first_round = &std::sync::atomic::AtomicBool::new(true);
        let step = self
            .optimistic("invoice", || async move {
                let eventually = first_round.swap(false, std::sync::atomic::Ordering::Relaxed);
                let held_hint = hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let now = self.now();
                let start = match &held_hint {
                    Some(hint) => Start::Id(invoice_id, Some(hint)),
                    // Nothing to name the rest by: the invoice alone first, and nothing
                    // more if it is not due (a duplicate message).
                    None => match self.repo.invoice(invoice_id).await? {
                        Some(inv) if inv.next_attempt_at().is_some_and(|at| at <= now) => Start::Known(inv, None),
                        Some(_) | None => return Ok(Decision::Answer(DueStep::Done(DueOutcome::NotDue))),
                    },
                };
                let Some((mut inv, ChargeContext { card, mut ledger, subscription: sub })) =
                    self.charge_context(start, &CardChoice::Default, eventually).await?
                else {
                    return Ok(Decision::Answer(DueStep::Done(DueOutcome::NotDue)));
                };
                *hint.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ChargeHint::of(&inv));
                if inv.next_attempt_at().is_none_or(|at| at > now) {
                    return Ok(Decision::Answer(DueStep::Done(DueOutcome::NotDue)));
                }
                let turn = match (&card, &mut ledger) {
                    (Some(c), Some(l)) => Some(self.card_turn(c, l).await?),
                    _ => None,
                };
                let decision = decide_due(&DueContext {
                    invoice: &inv,
                    card: card.as_deref(),
                    ledger: ledger.as_deref(),
                    subscription_status: sub.as_ref().map(|s| s.status()),
                    policy: &self.policy,
                    now,
                });
                let trigger = if inv.attempt_count() == 0 { AttemptTrigger::Initial } else { AttemptTrigger::Retry };
                Ok(match decision {
                    DueDecision::NotDue => Decision::Answer(DueStep::Done(DueOutcome::NotDue)),
                    DueDecision::Reconcile(_) => Decision::Answer(DueStep::Reconcile),
                    DueDecision::Park => {
                        inv.park();
                        let mut tx = Tx::new();
                        tx.save(&inv)?;
                        // Parked only if the subscription is still as read: one resumed or
                        // re-activated meanwhile has put its invoices back on the schedule.
                        if let Some(sub) = &sub {
                            tx.check(sub);
                        }
                        Decision::Commit(tx, DueStep::Done(DueOutcome::Parked))
                    }
                    DueDecision::Attempt => {
                        let (Some(card), Some(ledger)) = (card, ledger) else {
                            return Err(Error::internal("attempt decided without a card"));
                        };
                        let (tx, claim) = self.claim(inv, &card, ledger, sub.as_ref(), trigger)?;
                        Decision::Commit(tx, DueStep::Claimed(Box::new(claim), turn))
                    }
                    DueDecision::RecordExpired => {
                        let Some(card) = card else { return Err(Error::internal("expiry decided without a card")) };
                        let (tx, claim) = self.record_expired(inv, &card, trigger).await?;
                        Decision::Commit(tx, DueStep::Claimed(Box::new(claim), turn))
                    }
                    DueDecision::Skip { next, reason } => {
                        let events = inv.reschedule(next, now)?;
                        let (events, wallet) = self.wallet_follows(&mut inv, events, now).await?;
                        let mut tx = Tx::new();
                        tx.save(&inv)?;
                        wallet.add_to(&mut tx)?;
                        tx.emit(events, now)?;
                        Decision::Commit(tx, DueStep::Done(DueOutcome::Skipped { next, reason }))
                    }
                })
            })
            .await?;
        match step {
            DueStep::Done(outcome) => {
                if let DueOutcome::Skipped { next, reason } = &outcome {
                    tracing::info!(invoice_id = %invoice_id, ?reason, ?next, "automatic attempt skipped");
                }
                Ok(outcome)
            }
            DueStep::Reconcile => Ok(DueOutcome::Reconciled(self.reconcile(invoice_id).await?.map(|r| r.outcome))),
            DueStep::Claimed(claim, turn) => {
                // The card's turn ends with the claim's commit, before the PSP is called.
                drop(turn);
                Ok(DueOutcome::Charged(self.complete(*claim).await?.outcome))
            }
        }
    }

    /// A card was registered: charge every outstanding invoice with it at once, oldest
    /// first, stopping at the first that does not get paid (a declining card is not
    /// hammered with the rest).
    pub async fn recover_outstanding(
        &self,
        customer: &CustomerId,
        card: &PaymentMethodId,
    ) -> Result<Vec<RecoveryAttempt>> {
        let outstanding = self.repo.outstanding_invoices(customer).await?;
        let mut results = Vec::new();
        for inv in outstanding {
            let result = self
                .charge_invoice(&inv.id, CardChoice::Specific(card.clone()), AttemptTrigger::NewPaymentMethod)
                .await;
            // Not collected automatically any more: not attempted, and not a reason to stop.
            if matches!(&result, Err(e) if e.code == Code::SubscriptionCanceled) {
                continue;
            }
            let stop = match &result {
                Ok(r) => r.outcome != ChargeOutcome::Paid,
                // Another charge of it is running, or it was paid meanwhile: go on.
                Err(e) => {
                    !matches!(e.code, Code::ChargeInProgress | Code::InvoiceAlreadyPaid | Code::InvoiceNotChargeable)
                }
            };
            results.push(RecoveryAttempt { invoice_id: inv.id.clone(), outcome: result.map(|r| r.outcome) });
            if stop {
                break;
            }
        }
        Ok(results)
    }
}

impl From<ChargeRefusal> for Error {
    fn from(r: ChargeRefusal) -> Self {
        refusal(r)
    }
}
