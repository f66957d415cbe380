//! How events travel: which event types each EventBridge rule sends to which SQS queue.
//! The local product's in-process bus uses this table, the emulator tests build their
//! rules from it, and a test checks `template.yaml` declares the same rules.

use recoup_shared::domain::events::EventPayload;

/// A rule on the event bus and the queue it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The rule's logical id in `template.yaml`.
    pub name: &'static str,
    pub detail_types: &'static [&'static str],
    /// The queue's logical id in `template.yaml`.
    pub queue: &'static str,
}

pub const SUBSCRIPTION_UPDATES_QUEUE: &str = "SubscriptionUpdatesQueue";
pub const NOTIFICATIONS_QUEUE: &str = "NotificationsQueue";
pub const CHARGE_QUEUE: &str = "ChargeQueue";
pub const WEBHOOKS_QUEUE: &str = "WebhooksQueue";

/// Every queue's receive limit before a message moves to its dead-letter queue.
pub const MAX_RECEIVE_COUNT: u32 = 5;

pub const RULES: &[Rule] = &[
    Rule {
        name: "InvoiceEventsToSubscriptionUpdates",
        detail_types: &["invoice.payment_failed", "invoice.paid", "invoice.errored", "invoice.voided"],
        queue: SUBSCRIPTION_UPDATES_QUEUE,
    },
    Rule {
        name: "CustomerNotifications",
        detail_types: &[
            "invoice.payment_failed",
            "invoice.errored",
            "invoice.paid",
            "payment_method.attached",
            "payment_method.expiring",
            "webhook_endpoint.disabled",
            "wallet.refill_failed",
        ],
        queue: NOTIFICATIONS_QUEUE,
    },
    Rule { name: "MerchantWebhooks", detail_types: &EventPayload::KINDS, queue: WEBHOOKS_QUEUE },
];

/// The queues an event of this type is delivered to.
pub fn queues_for(detail_type: &str) -> Vec<&'static str> {
    RULES.iter().filter(|r| r.detail_types.contains(&detail_type)).map(|r| r.queue).collect()
}
