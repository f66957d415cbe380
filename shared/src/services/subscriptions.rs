//! Subscriptions: start (invoice and charge payment 1), renew at period end, follow their
//! invoices (the subscription updater), the merchant's re-activate / cancel / pause /
//! resume, and the Recurring-API view of payments with "process payment N".

use crate::domain::events::EventPayload;
use crate::domain::invoice::{AttemptTrigger, CollectionMethod, NewInvoice};
use crate::domain::money::Money;
use crate::domain::subscription::{Interval, PaymentStatus, Plan, payment_status};
use crate::domain::{Invoice, InvoiceStatus, Subscription, SubscriptionStatus};
use crate::error::{Code, Error, Result};
use crate::ids::{CustomerId, InvoiceId, SubscriptionId};
use crate::store::Cursor;
use crate::store::repo::{Listing, Tx, Versioned};
use crate::time::Timestamp;

use super::charging::{CardChoice, ChargeReport};
use super::idempotency::{Created, RequestId, created_something_else, mark_created};
use super::{Decision, Services};

/// What one round of starting a subscription found or wrote.
enum Start {
    New(Box<Subscription>, InvoiceId),
    /// Another run of the request started it.
    Earlier(Created),
}

pub struct NewSubscription {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub interval: Interval,
    pub interval_count: u32,
    pub description: String,
}

/// One payment of a subscription, numbered from 1.
#[derive(Debug, Clone)]
pub struct PaymentView {
    pub number: u32,
    pub status: PaymentStatus,
    /// `None` for the upcoming payment that has no invoice yet.
    pub invoice_id: Option<InvoiceId>,
    pub amount: Money,
    /// When the payment is or was due (its period's start).
    pub due_at: Timestamp,
    /// When it was last attempted or paid; `None` while waiting.
    pub date_processed: Option<Timestamp>,
    /// As recorded; the API shows customers `fraud` as a generic decline.
    pub error_type: Option<crate::domain::decline::ErrorType>,
    pub attempt_count: u32,
}

impl Services {
    /// Starts a subscription billed to the customer's default card; payment 1 is invoiced
    /// and charged at once.
    pub async fn create_subscription(
        &self,
        req: NewSubscription,
    ) -> Result<(Subscription, std::result::Result<ChargeReport, Error>)> {
        self.create_subscription_once(req, None).await
    }

    /// Starts the subscription once per `request` (see [`Services::issue_invoice_once`]): a
    /// re-run answers with the subscription the first run started and how its payment 1
    /// went, and charges nothing.
    pub async fn create_subscription_once(
        &self,
        req: NewSubscription,
        request: Option<&RequestId>,
    ) -> Result<(Subscription, std::result::Result<ChargeReport, Error>)> {
        let plan = Plan::new(req.amount, req.interval, req.interval_count, req.description.trim().to_owned())?;
        let req = &req;
        let plan = &plan;
        let started = self
            .optimistic("customer", || async move {
                // Read in every round: a round that lost its commit to another run of the
                // request (on the mark) finds what that run started.
                if let Some(earlier) = self.created_by(request).await? {
                    return Ok(Decision::Answer(Start::Earlier(earlier)));
                }
                let mut customer = self.customer(&req.customer_id).await?;
                if customer.default_payment_method_id().is_none() {
                    return Err(Error::new(
                        Code::NoPaymentMethod,
                        "the customer has no default card; a subscription is billed to it, so they must add one first",
                    ));
                }
                let now = self.now();
                let (mut sub, link) = Subscription::start(req.customer_id.clone(), plan.clone(), now);
                let (mut invoice, created) = Invoice::issue(
                    NewInvoice {
                        customer_id: req.customer_id.clone(),
                        amount: plan.amount,
                        description: format!("{} (payment 1)", plan.description).trim().to_owned(),
                        collection_method: CollectionMethod::ChargeAutomatically,
                        subscription: Some(link),
                    },
                    now,
                )?;
                invoice.schedule_first_attempt(now);
                sub.attach_invoice(1, invoice.id.clone());
                customer.subscription_ids.push(sub.id.clone());
                let mut tx = Tx::new();
                tx.save(&Versioned::new(sub.clone()))?;
                tx.save(&Versioned::new(invoice.clone()))?;
                tx.save(&customer)?;
                tx.emit(
                    [
                        EventPayload::SubscriptionCreated {
                            subscription_id: sub.id.clone(),
                            customer_id: sub.customer_id.clone(),
                        },
                        created,
                    ],
                    now,
                )?;
                mark_created(&mut tx, request, Created::Subscription(sub.id.clone()), now)?;
                Ok(Decision::Commit(tx, Start::New(Box::new(sub), invoice.id)))
            })
            .await?;
        let (sub, invoice_id) = match started {
            Start::New(sub, invoice_id) => (*sub, invoice_id),
            Start::Earlier(earlier) => return self.started_earlier(&earlier).await,
        };
        tracing::info!(subscription_id = %sub.id, customer_id = %sub.customer_id, "subscription started");
        let charge = self.charge_invoice(&invoice_id, CardChoice::Default, AttemptTrigger::Initial).await;
        // Committed: answer with what was written if it cannot be read back, so the
        // caller's idempotency key is not freed for a second subscription.
        let sub = match self.repo.subscription(&sub.id).await {
            Ok(Some(current)) => current.into_inner(),
            Ok(None) | Err(_) => sub,
        };
        Ok((sub, charge))
    }

    /// The answer to a re-run of a start: the subscription as it stands and how its payment
    /// 1 went (never a new attempt: the first run made it, or the schedule will).
    async fn started_earlier(
        &self,
        earlier: &Created,
    ) -> Result<(Subscription, std::result::Result<ChargeReport, Error>)> {
        let id = match earlier {
            Created::Subscription(id) => id,
            Created::Customer(_) | Created::Invoice(_) | Created::WalletEntry(_) => {
                return Err(created_something_else("subscription", earlier));
            }
        };
        let sub = self.subscription(id).await?.into_inner();
        tracing::info!(subscription_id = %sub.id, "subscription start re-run: answered with the subscription already started");
        let first =
            sub.payment(1).ok_or_else(|| Error::internal(format!("subscription {} has no payment 1", sub.id)))?;
        let invoice = self.invoice(&first.invoice_id).await?;
        Ok((sub, ChargeReport::of_first_attempt(&invoice)))
    }

    pub async fn subscription(&self, id: &SubscriptionId) -> Result<Versioned<Subscription>> {
        self.repo.subscription(id).await?.ok_or_else(|| Error::not_found("subscription"))
    }

    pub async fn list_subscriptions(
        &self,
        failing_only: bool,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<Subscription>> {
        Ok(self.repo.subscriptions(failing_only, limit, after).await?)
    }

    /// Payments 1..n with their status, plus the upcoming one while the subscription is
    /// active.
    pub async fn subscription_payments(&self, sub: &Subscription) -> Result<Vec<PaymentView>> {
        let mut out = Vec::with_capacity(sub.payments().len() + 1);
        for p in sub.payments() {
            let inv = self.invoice(&p.invoice_id).await?;
            let status = payment_status(&inv);
            let last = inv.last_transaction();
            let date_processed = match status {
                PaymentStatus::Approved => inv.paid_at(),
                PaymentStatus::Declined | PaymentStatus::Failed => last.and_then(|t| t.settled_at),
                PaymentStatus::Waiting => None,
            };
            out.push(PaymentView {
                number: p.number,
                status,
                invoice_id: Some(inv.id.clone()),
                amount: inv.amount,
                due_at: inv.subscription.as_ref().map_or(inv.created_at, |l| l.period_start),
                date_processed,
                error_type: match status {
                    PaymentStatus::Declined | PaymentStatus::Failed => last.and_then(|t| t.error_type()),
                    PaymentStatus::Approved | PaymentStatus::Waiting => None,
                },
                attempt_count: inv.attempt_count(),
            });
        }
        if let Some(at) = sub.next_renewal_at() {
            out.push(PaymentView {
                number: sub.payments().iter().map(|p| p.number).max().unwrap_or(0) + 1,
                status: PaymentStatus::Waiting,
                invoice_id: None,
                amount: sub.plan.amount,
                due_at: at,
                date_processed: None,
                error_type: None,
                attempt_count: 0,
            });
        }
        Ok(out)
    }

    async fn change_subscription<F>(&self, id: &SubscriptionId, change: F) -> Result<Subscription>
    where
        F: Fn(&mut Subscription, Timestamp) -> std::result::Result<Vec<EventPayload>, crate::domain::DomainError>,
    {
        let change = &change;
        self.optimistic("subscription", || async move {
            let mut sub = self.subscription(id).await?;
            let now = self.now();
            let events = change(&mut sub, now)?;
            let mut tx = Tx::new();
            tx.save(&sub)?;
            self.unpark_invoices(&sub, &mut tx, now).await?;
            tx.emit(events, now)?;
            Ok(Decision::Commit(tx, sub.into_inner()))
        })
        .await
    }

    /// The merchant re-activates an errored subscription. Its unpaid invoices stay unpaid.
    pub async fn reactivate_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.change_subscription(id, |s, now| s.reactivate(now)).await
    }

    pub async fn cancel_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.change_subscription(id, |s, now| s.cancel(now)).await
    }

    pub async fn pause_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.change_subscription(id, |s, now| s.pause(now)).await
    }

    /// Resumes a paused subscription: `active`, or `errored` if a payment errored meanwhile.
    pub async fn resume_subscription(&self, id: &SubscriptionId) -> Result<Subscription> {
        self.change_subscription(id, |s, now| s.resume(now)).await
    }

    /// When `sub` is (becoming) active, adds to `tx` the open invoices taken off the
    /// schedule while it was not, put back on it; and a version check on every other open
    /// invoice, so that a worker parking one of them meanwhile (it read the subscription
    /// before this change) makes this commit fail and re-read. Together with the worker's
    /// own check of the subscription's version, no open invoice of an active subscription
    /// is left without a next attempt.
    async fn unpark_invoices(&self, sub: &Subscription, tx: &mut Tx, now: Timestamp) -> Result<()> {
        match sub.status() {
            SubscriptionStatus::Active => {}
            SubscriptionStatus::Errored | SubscriptionStatus::Paused | SubscriptionStatus::Canceled => return Ok(()),
        }
        for p in sub.payments() {
            let mut inv = self.invoice(&p.invoice_id).await?;
            if inv.status() != InvoiceStatus::Open {
                continue;
            }
            if inv.next_attempt_at().is_none() && inv.pending_transaction().is_none() {
                inv.unpark(now);
                tx.save(&inv)?;
            } else {
                tx.check(&inv);
            }
        }
        Ok(())
    }

    /// The Recurring API's "process a subscription payment": runs payment `number` now.
    pub async fn process_payment(&self, id: &SubscriptionId, number: u32) -> Result<ChargeReport> {
        let sub = self.subscription(id).await?;
        let upcoming = sub.payments().iter().map(|p| p.number).max().unwrap_or(0) + 1;
        let Some(payment) = sub.payment(number) else {
            if number == upcoming && sub.next_renewal_at().is_some() {
                return Err(Error::new(
                    Code::PaymentWaiting,
                    "this payment is queued for a future date; it cannot be processed by hand",
                )
                .with("payment_number", number));
            }
            return Err(Error::not_found("payment").with("payment_number", number));
        };
        let inv = self.invoice(&payment.invoice_id).await?;
        match payment_status(&inv) {
            PaymentStatus::Approved => {
                return Err(Error::new(
                    Code::PaymentAlreadyApproved,
                    "this payment was approved; there is nothing to process",
                )
                .with("payment_number", number));
            }
            // Not queued and not in progress (taken off the schedule while the subscription
            // was not collected): processing it by hand is what the merchant asks for.
            PaymentStatus::Waiting if inv.next_attempt_at().is_none() && inv.pending_transaction().is_none() => {}
            PaymentStatus::Waiting => {
                return Err(Error::new(
                    Code::PaymentWaiting,
                    "this payment is queued or in progress; it cannot be processed by hand",
                )
                .with("payment_number", number));
            }
            // A failed (hard) payment is refused by the charge plan unless the card changed.
            PaymentStatus::Declined | PaymentStatus::Failed => {}
        }
        self.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await
    }

    /// Starts the next period of every subscription due for renewal. Returns the invoices
    /// issued; each is already on the schedule, due now.
    pub async fn renew_due(&self, limit: usize) -> Result<Vec<InvoiceId>> {
        let now = self.now();
        let mut issued = Vec::new();
        for id in self.repo.due_renewals(now, limit).await? {
            let id = &id;
            let renewal = self
                .optimistic("subscription", || async move {
                    let Some(mut sub) = self.repo.subscription(id).await? else { return Ok(Decision::Answer(None)) };
                    let Some(link) = sub.renew(now) else { return Ok(Decision::Answer(None)) };
                    let (mut invoice, created) = Invoice::issue(
                        NewInvoice {
                            customer_id: sub.customer_id.clone(),
                            amount: sub.plan.amount,
                            description: format!("{} (payment {})", sub.plan.description, link.payment_number)
                                .trim()
                                .to_owned(),
                            collection_method: CollectionMethod::ChargeAutomatically,
                            subscription: Some(link.clone()),
                        },
                        now,
                    )?;
                    invoice.schedule_first_attempt(now);
                    sub.attach_invoice(link.payment_number, invoice.id.clone());
                    let renewed = sub.renewed_event(&link, &invoice.id);
                    let mut tx = Tx::new();
                    tx.save(&sub)?;
                    tx.save(&Versioned::new(invoice.clone()))?;
                    tx.emit([created, renewed], now)?;
                    Ok(Decision::Commit(tx, Some((invoice.id, link.payment_number))))
                })
                .await;
            match renewal {
                Ok(Some((invoice_id, payment))) => {
                    tracing::info!(subscription_id = %id, invoice_id = %invoice_id, payment, "renewed");
                    issued.push(invoice_id);
                }
                Ok(None) => {}
                // Renewed by a concurrent sweep, most likely; the next sweep looks again.
                Err(e) if e.kind == crate::error::ErrorKind::Conflict => {
                    tracing::warn!(subscription_id = %id, error = %e, "renewal kept racing; left for the next sweep");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(issued)
    }

    /// The subscription updater: brings the subscription of an invoice in line with the
    /// invoice as it is now. Returns the events it emitted (none when nothing changed).
    /// The commit is conditioned on the invoice's version too, so a decision taken on an
    /// invoice that changed meanwhile (paid while this ran) is taken again on the new one.
    pub async fn follow_invoice(&self, invoice_id: &InvoiceId) -> Result<Vec<&'static str>> {
        let kinds = self
            .optimistic("subscription", || async move {
                let Some(inv) = self.repo.invoice(invoice_id).await? else { return Ok(Decision::Answer(Vec::new())) };
                let Some(sid) = inv.subscription_id().cloned() else { return Ok(Decision::Answer(Vec::new())) };
                let Some(mut sub) = self.repo.subscription(&sid).await? else {
                    return Ok(Decision::Answer(Vec::new()));
                };
                let before = (*sub).clone();
                let now = self.now();
                let events = sub.observe_invoice(&inv, now);
                if *sub == before {
                    return Ok(Decision::Answer(Vec::new()));
                }
                let kinds: Vec<&'static str> = events.iter().map(EventPayload::kind).collect();
                let mut tx = Tx::new();
                tx.save(&sub)?;
                tx.check(&inv);
                // Only a payment re-activates here, and the paid invoice is not open, so it
                // is not among the invoices unparked.
                if before.status() != SubscriptionStatus::Active {
                    self.unpark_invoices(&sub, &mut tx, now).await?;
                }
                tx.emit(events, now)?;
                Ok(Decision::Commit(tx, kinds))
            })
            .await?;
        if !kinds.is_empty() {
            tracing::info!(invoice_id = %invoice_id, events = ?kinds, "subscription updated");
        }
        Ok(kinds)
    }
}
