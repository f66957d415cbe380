//! Card-expiry reminders, run daily by the `expiry-reminder` function. Seed 001: an expired
//! default card breaks the next renewal; the customer is told before it happens.
//!
//! - **Expiring.** Every saved card that expires at the end of next month (found through
//!   the expiry index, `EXPIRES#<yyyy-mm>`, not a scan) gets one `payment_method.expiring`
//!   event, which the notifier turns into the `card_expiring` email. A reminder record per
//!   card and expiry, written in the event's transaction, makes it once: a second sweep,
//!   or the same card saved again with the same expiry, changes nothing.
//! - **Expired.** A default card that expired at the end of last month, of a customer with
//!   an active subscription, gets one `payment_method.expired` event: the next renewal
//!   will fail unless the customer adds a card.

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::domain::SubscriptionStatus;
use crate::domain::events::EventPayload;
use crate::domain::payment_method::PaymentMethodStatus;
use crate::error::Result;
use crate::ids::PaymentMethodId;
use crate::store::repo::{Entity, Tx, Versioned};
use crate::store::{Key, StoreError, keys};
use crate::time::Timestamp;

use super::Services;

/// The once-only mark of one reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reminder {
    kind: String,
    payment_method_id: PaymentMethodId,
    year: u16,
    month: u8,
    sent_at: Timestamp,
}

impl Entity for Reminder {
    const KIND: &'static str = "card_reminder";
    fn key(&self) -> Key {
        keys::card_reminder(&self.kind, &self.payment_method_id, self.year, self.month)
    }
    fn expires_at(&self) -> Option<i64> {
        // Kept past the card's expiry, then dropped.
        Some((self.sent_at + chrono::TimeDelta::days(120)).timestamp())
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReminderSweep {
    pub expiring: usize,
    pub expired: usize,
}

/// The month after (`+1`) or before (`-1`) the one `now` is in.
fn month_from(now: Timestamp, delta: i32) -> (u16, u8) {
    let index = now.year() * 12 + now.month0() as i32 + delta;
    ((index.div_euclid(12)) as u16, (index.rem_euclid(12) + 1) as u8)
}

impl Services {
    /// Reminds of cards expiring at the end of next month and reports default cards of
    /// active subscriptions that expired at the end of last month, each once.
    pub async fn sweep_card_expiries(&self) -> Result<ReminderSweep> {
        let now = self.now();
        let mut sweep = ReminderSweep::default();

        let (year, month) = month_from(now, 1);
        for entry in self.repo.cards_expiring(year, month).await? {
            // Re-read: the index may lag a removal or a new expiry.
            let Some(card) = self.repo.payment_method(&entry.customer_id, &entry.id).await? else { continue };
            if card.expiry.year() != year || card.expiry.month() != month {
                continue;
            }
            if card.status(now) == PaymentMethodStatus::Invalid {
                continue;
            }
            let is_default = self
                .repo
                .customer(&card.customer_id)
                .await?
                .is_some_and(|c| c.default_payment_method_id() == Some(&card.id));
            let event = EventPayload::PaymentMethodExpiring {
                payment_method_id: card.id.clone(),
                customer_id: card.customer_id.clone(),
                brand: card.brand,
                last4: card.last4.clone(),
                exp_month: month,
                exp_year: year,
                is_default,
            };
            if self.remind_once("EXPIRING", &card.id, year, month, event).await? {
                sweep.expiring += 1;
            }
        }

        let (year, month) = month_from(now, -1);
        for entry in self.repo.cards_expiring(year, month).await? {
            let Some(customer) = self.repo.customer(&entry.customer_id).await? else { continue };
            if customer.default_payment_method_id() != Some(&entry.id) {
                continue;
            }
            let Some(card) = self.repo.payment_method(&entry.customer_id, &entry.id).await? else { continue };
            if card.status(now) != PaymentMethodStatus::Expired {
                continue;
            }
            let mut active = Vec::new();
            for id in &customer.subscription_ids {
                if let Some(sub) = self.repo.subscription(id).await?
                    && sub.status() == SubscriptionStatus::Active
                {
                    active.push(id.clone());
                }
            }
            if active.is_empty() {
                continue;
            }
            let event = EventPayload::PaymentMethodExpired {
                payment_method_id: card.id.clone(),
                customer_id: card.customer_id.clone(),
                subscription_ids: active,
            };
            if self.remind_once("EXPIRED", &card.id, year, month, event).await? {
                sweep.expired += 1;
            }
        }
        if sweep != ReminderSweep::default() {
            tracing::info!(expiring = sweep.expiring, expired = sweep.expired, "card expiry reminders");
        }
        Ok(sweep)
    }

    /// Writes the reminder's mark with its event; false when it was written before.
    async fn remind_once(
        &self,
        kind: &str,
        card: &PaymentMethodId,
        year: u16,
        month: u8,
        event: EventPayload,
    ) -> Result<bool> {
        let now = self.now();
        let mark = Reminder { kind: kind.to_owned(), payment_method_id: card.clone(), year, month, sent_at: now };
        let mut tx = Tx::new();
        tx.save(&Versioned::new(mark))?;
        tx.emit([event], now)?;
        match self.repo.commit(tx).await {
            Ok(events) => {
                self.publish(events).await;
                Ok(true)
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_and_last_month_wrap_around_the_year() {
        let dec = chrono::Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).unwrap();
        assert_eq!(month_from(dec, 1), (2027, 1));
        assert_eq!(month_from(dec, -1), (2026, 11));
        let jan = chrono::Utc.with_ymd_and_hms(2027, 1, 31, 23, 0, 0).unwrap();
        assert_eq!(month_from(jan, -1), (2026, 12));
    }
}
