//! The customer's wallet (see `domain::wallet`): balances, the ledger, refills charged
//! through the charge engine, the merchant's debits, and automatic refill.

use crate::domain::Invoice;
use crate::domain::events::EventPayload;
use crate::domain::invoice::{AttemptTrigger, CollectionMethod, NewInvoice};
use crate::domain::money::{Currency, Money};
use crate::domain::wallet::{AutoRefill, RefillKind, Wallet, WalletEntry, WalletError};
use crate::error::{Code, Error, Result};
use crate::ids::CustomerId;
use crate::store::repo::{Listing, Tx, Versioned};
use crate::store::Cursor;
use crate::time::Timestamp;

use super::charging::{CardChoice, ChargeReport};
use super::idempotency::{Created, RequestId, created_something_else, mark_created};
use super::{Decision, Services};

/// What a refill invoice says on the customer's bills.
pub const REFILL_DESCRIPTION: &str = "Wallet refill";

impl From<WalletError> for Error {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::InsufficientBalance { balance, .. } => {
                Error::new(Code::InsufficientBalance, e.to_string()).with("balance", balance.to_string())
            }
            WalletError::RefillInProgress(_) => Error::new(Code::RefillInProgress, e.to_string()),
            WalletError::InvalidSettings(_) => Error::new(Code::InvalidRequest, e.to_string()),
        }
    }
}

/// A refill the customer asked for.
pub struct Refill {
    pub customer_id: CustomerId,
    pub amount: Money,
    /// The card to charge: the default unless the customer chose another.
    pub card: CardChoice,
}

/// A refill and how its charge went (`None` when a re-run of the request found it).
pub struct Refilled {
    pub invoice: Invoice,
    pub charge: Option<std::result::Result<ChargeReport, Error>>,
    pub wallet: Wallet,
}

/// A debit, the wallet after it, and the automatic refill it started, if any.
pub struct Debited {
    pub entry: WalletEntry,
    pub wallet: Wallet,
    pub refill: Option<Invoice>,
}

/// What an invoice's change does to the wallet it refills: writes to add to the same
/// transaction.
#[derive(Default)]
pub(crate) struct WalletWrites {
    wallet: Option<Versioned<Wallet>>,
    entry: Option<WalletEntry>,
}

impl WalletWrites {
    pub(crate) fn add_to(&self, tx: &mut Tx) -> Result<()> {
        if let Some(w) = &self.wallet {
            tx.save(w)?;
        }
        if let Some(e) = &self.entry {
            tx.save(&Versioned::new(e.clone()))?;
        }
        Ok(())
    }
}

impl Services {
    async fn wallet_or_new(&self, customer: &CustomerId, currency: Currency) -> Result<Versioned<Wallet>> {
        Ok(self
            .repo
            .wallet(customer, currency.code())
            .await?
            .unwrap_or_else(|| Versioned::new(Wallet::new(customer.clone(), currency, self.now()))))
    }

    /// The customer's wallet in `currency` (empty if never used).
    pub async fn wallet(&self, customer: &CustomerId, currency: Currency) -> Result<Wallet> {
        self.customer(customer).await?;
        Ok(self.wallet_or_new(customer, currency).await?.into_inner())
    }

    /// Every wallet the customer has used, one per currency.
    pub async fn wallets(&self, customer: &CustomerId) -> Result<Vec<Wallet>> {
        self.customer(customer).await?;
        Ok(self.repo.wallets(customer).await?.into_iter().map(Versioned::into_inner).collect())
    }

    pub async fn wallet_entries(
        &self,
        customer: &CustomerId,
        currency: Currency,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Listing<WalletEntry>> {
        self.customer(customer).await?;
        Ok(self.repo.wallet_entries(customer, currency.code(), limit, after).await?)
    }

    /// A refill: an invoice for the amount, charged now to the chosen card through the
    /// charge engine; paid, it credits the wallet (in the settle's transaction). One refill
    /// at a time per wallet (`refill_in_progress`). Once per `request`: a re-run answers
    /// with the refill the first run started, and charges nothing.
    pub async fn refill_wallet(&self, req: Refill, max_refill: i64, request: Option<&RequestId>) -> Result<Refilled> {
        if req.amount.amount() > max_refill {
            return Err(Error::new(
                Code::InvalidAmount,
                format!(
                    "a refill is at most {} ({max_refill} minor units)",
                    crate::domain::money::amount_for_people(max_refill, req.amount.currency())
                ),
            )
            .with("field", "amount")
            .with("maximum", max_refill));
        }
        if let Some(earlier) = self.created_by(request).await? {
            return self.refilled_earlier(&earlier).await;
        }
        self.customer(&req.customer_id).await?;
        let invoice = self
            .start_refill(&req.customer_id, req.amount, RefillKind::Manual, |tx, inv, now| {
                mark_created(tx, request, Created::Invoice(inv.id.clone()), now)
            })
            .await;
        let invoice = match invoice {
            Ok(inv) => inv,
            // Only the request's mark can have failed on a new wallet's refill race: a
            // re-run of the request committed first.
            Err(e) if e.code == Code::ConcurrentUpdate && request.is_some() => {
                match self.created_by(request).await? {
                    Some(earlier) => return self.refilled_earlier(&earlier).await,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        tracing::info!(invoice_id = %invoice.id, customer_id = %invoice.customer_id, amount = %invoice.amount, "wallet refill started");
        let charge = self.charge_invoice(&invoice.id, req.card, AttemptTrigger::Customer).await;
        let invoice = match &charge {
            Ok(report) => report.invoice.clone(),
            Err(_) => self.invoice(&invoice.id).await.map(Versioned::into_inner).unwrap_or(invoice),
        };
        let wallet = self.wallet(&invoice.customer_id, invoice.amount.currency()).await?;
        Ok(Refilled { invoice, charge: Some(charge), wallet })
    }

    /// The answer to a re-run of a refill: the refill the first run started, as it stands.
    async fn refilled_earlier(&self, earlier: &Created) -> Result<Refilled> {
        let Created::Invoice(id) = earlier else { return Err(created_something_else("refill", earlier)) };
        let invoice = self.invoice(id).await?.into_inner();
        let wallet = self.wallet(&invoice.customer_id, invoice.amount.currency()).await?;
        Ok(Refilled { charge: None, invoice, wallet })
    }

    /// Issues a refill invoice and records it in flight on the wallet, in one transaction
    /// (with `extra`'s writes). It is put on the schedule for its first attempt, so a
    /// process that dies before charging leaves it to the retry scheduler (the default
    /// card, then).
    async fn start_refill(
        &self,
        customer: &CustomerId,
        amount: Money,
        kind: RefillKind,
        extra: impl Fn(&mut Tx, &Invoice, Timestamp) -> Result<()>,
    ) -> Result<Invoice> {
        let extra = &extra;
        self.optimistic("wallet", || async move {
            let mut wallet = self.wallet_or_new(customer, amount.currency()).await?;
            let now = self.now();
            let (invoice, created) = refill_invoice(&mut wallet, amount, kind, now)?;
            let mut tx = Tx::new();
            tx.save(&wallet)?;
            tx.save(&Versioned::new(invoice.clone()))?;
            tx.emit([created], now)?;
            extra(&mut tx, &invoice, now)?;
            Ok(Decision::Commit(tx, invoice))
        })
        .await
    }

    /// The merchant's usage debit. Refused when the balance is short. Once per `request`.
    /// When it takes the balance under the automatic refill threshold, the refill starts in
    /// the same transaction and is charged to the default card right after.
    pub async fn debit_wallet(
        &self,
        customer: &CustomerId,
        amount: Money,
        description: &str,
        request: Option<&RequestId>,
    ) -> Result<Debited> {
        let description = description.trim();
        if description.chars().count() > crate::domain::wallet::MAX_DEBIT_DESCRIPTION_CHARS {
            return Err(Error::new(Code::InvalidRequest, "description must be at most 500 characters")
                .with("field", "description"));
        }
        if let Some(earlier) = self.created_by(request).await? {
            return self.debited_earlier(customer, &earlier).await;
        }
        self.customer(customer).await?;
        let result = self
            .optimistic("wallet", || async move {
                let Some(mut wallet) = self.repo.wallet(customer, amount.currency().code()).await? else {
                    return Err(WalletError::InsufficientBalance {
                        balance: 0,
                        amount: amount.amount(),
                        currency: amount.currency().code().to_owned(),
                    }
                    .into());
                };
                let now = self.now();
                let debited = wallet.debit(amount, description, now)?;
                let mut tx = Tx::new();
                let mut refill = None;
                if let Some(refill_amount) = debited.refill {
                    let (invoice, created) = refill_invoice(&mut wallet, refill_amount, RefillKind::Automatic, now)?;
                    tx.save(&Versioned::new(invoice.clone()))?;
                    tx.emit([created], now)?;
                    refill = Some(invoice);
                }
                tx.save(&wallet)?;
                tx.save(&Versioned::new(debited.entry.clone()))?;
                tx.emit(debited.events, now)?;
                let mark = format!("{}:{}", wallet.currency.code(), debited.entry.number);
                mark_created(&mut tx, request, Created::WalletEntry(mark), now)?;
                Ok(Decision::Commit(tx, Debited { entry: debited.entry, wallet: wallet.into_inner(), refill }))
            })
            .await;
        let debited = match result {
            Ok(d) => d,
            Err(e) if e.code == Code::ConcurrentUpdate && request.is_some() => match self.created_by(request).await? {
                Some(earlier) => return self.debited_earlier(customer, &earlier).await,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if let Some(invoice) = &debited.refill {
            tracing::info!(invoice_id = %invoice.id, customer_id = %customer, "automatic wallet refill started");
            // Declines and failures are the charge engine's and the schedule's to handle.
            if let Err(e) = self.charge_invoice(&invoice.id, CardChoice::Default, AttemptTrigger::Initial).await {
                tracing::warn!(invoice_id = %invoice.id, error = %e, "automatic refill not charged now; the schedule will");
            }
        }
        Ok(debited)
    }

    async fn debited_earlier(&self, customer: &CustomerId, earlier: &Created) -> Result<Debited> {
        let Created::WalletEntry(mark) = earlier else { return Err(created_something_else("debit", earlier)) };
        let (currency, number) = mark
            .split_once(':')
            .and_then(|(c, n)| Some((Currency::parse(c).ok()?, n.parse::<u64>().ok()?)))
            .ok_or_else(|| Error::internal(format!("a debit's mark {mark:?} is not currency:number")))?;
        let entry = self
            .repo
            .wallet_entry(customer, currency.code(), number)
            .await?
            .ok_or_else(|| Error::internal("a debit's mark names no entry"))?
            .into_inner();
        let wallet = self.wallet(customer, currency).await?;
        Ok(Debited { entry, wallet, refill: None })
    }

    /// Sets automatic refill for the customer's wallet in `currency`.
    pub async fn configure_auto_refill(
        &self,
        customer: &CustomerId,
        currency: Currency,
        settings: AutoRefill,
        max_refill: i64,
    ) -> Result<Wallet> {
        self.customer(customer).await?;
        self.optimistic("wallet", || async move {
            let mut wallet = self.wallet_or_new(customer, currency).await?;
            let now = self.now();
            wallet.configure(settings, max_refill, now)?;
            let mut tx = Tx::new();
            tx.save(&wallet)?;
            Ok(Decision::Commit(tx, wallet.into_inner()))
        })
        .await
    }

    /// What a refill invoice's change (`events`, just decided on `inv`) does to its
    /// wallet: paid, the wallet is credited; declined, a manual refill ends (the invoice is
    /// voided: nothing is owed) and an automatic one waits for its next attempt or, at the
    /// end of its schedule, ends and turns automatic refill off; voided, the refill ends.
    /// Answers the events with the wallet's, and the wallet's writes for the same
    /// transaction. Other invoices pass through untouched.
    pub(crate) async fn wallet_follows(
        &self,
        inv: &mut Invoice,
        mut events: Vec<EventPayload>,
        now: Timestamp,
    ) -> Result<(Vec<EventPayload>, WalletWrites)> {
        let Some(kind) = inv.wallet_refill else { return Ok((events, WalletWrites::default())) };
        let mut wallet = self.wallet_or_new(&inv.customer_id, inv.amount.currency()).await?;
        let mut entry = None;
        let paid = events.iter().any(|e| matches!(e, EventPayload::InvoicePaid { .. }));
        let failed = events.iter().find_map(|e| match e {
            EventPayload::InvoicePaymentFailed { error_type, next_attempt_at, .. } => {
                Some((Some(*error_type), *next_attempt_at))
            }
            _ => None,
        });
        let errored = events.iter().find_map(|e| match e {
            EventPayload::InvoiceErrored { error_type, .. } => Some(*error_type),
            _ => None,
        });
        let voided = events.iter().any(|e| matches!(e, EventPayload::InvoiceVoided { .. }));
        if paid {
            let (e, more) = wallet.credit_refill(&inv.id, inv.amount, kind, now);
            entry = Some(e);
            events.extend(more);
        } else if failed.is_some() || errored.is_some() {
            let error_type = failed.and_then(|f| f.0).or(errored.flatten());
            let next = match (kind, errored) {
                (RefillKind::Automatic, None) => failed.and_then(|f| f.1),
                (RefillKind::Automatic, Some(_)) | (RefillKind::Manual, _) => None,
            };
            if next.is_none() {
                // Nothing is owed for a refill that did not happen.
                events.extend(inv.void(now)?);
            }
            events.extend(wallet.refill_failed(&inv.id, inv.amount, kind, error_type, next, now));
        } else if voided {
            wallet.refill_ended(&inv.id, now);
        } else {
            return Ok((events, WalletWrites::default()));
        }
        Ok((events, WalletWrites { wallet: Some(wallet), entry }))
    }
}

/// A refill invoice for `wallet` (automatically collected, on the schedule for its first
/// attempt so a process that dies before charging leaves it to the retry scheduler),
/// recorded in flight on the wallet.
fn refill_invoice(
    wallet: &mut Wallet,
    amount: Money,
    kind: RefillKind,
    now: Timestamp,
) -> Result<(Invoice, EventPayload)> {
    let (mut invoice, created) = Invoice::issue(
        NewInvoice {
            customer_id: wallet.customer_id.clone(),
            amount,
            description: REFILL_DESCRIPTION.into(),
            collection_method: CollectionMethod::ChargeAutomatically,
            subscription: None,
        },
        now,
    )?;
    invoice.wallet_refill = Some(kind);
    invoice.schedule_first_attempt(now);
    wallet.begin_refill(&invoice.id, now)?;
    Ok((invoice, created))
}
