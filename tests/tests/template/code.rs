//! What the code says, where the code cannot say it itself: the function registry seen
//! by trigger, and facts about functions that no type carries.

use super::*;

/// The HTTP functions and the routes each serves, from the registry.
pub fn http_functions() -> Vec<(&'static str, &'static [Route])> {
    recoup_functions::FUNCTIONS
        .iter()
        .filter(|f| matches!(f.trigger, Trigger::Http { .. }))
        .map(|f| (f.name, f.routes()))
        .collect()
}

/// Who authorizes an HTTP function's routes, from the registry.
pub fn authorizer_of(binary: &str) -> Authorizer {
    match recoup_functions::by_name(binary).map(|f| f.trigger) {
        Some(Trigger::Http { authorizer, .. }) => authorizer,
        _ => Authorizer::Jwt,
    }
}

/// The SQS consumers and the queue (logical id) each reads, from the registry.
pub fn queue_consumers() -> Vec<(&'static str, &'static str)> {
    recoup_functions::queues().filter_map(|q| recoup_functions::consumer_of(q).map(|(f, _)| (f.name, q))).collect()
}

/// The scheduled functions and their schedules, from the registry.
pub fn scheduled_functions() -> Vec<(&'static str, &'static str)> {
    recoup_functions::schedules().map(|(f, rate, _)| (f.name, rate)).collect()
}

/// The schedulers put work on the charge queue (`App::charge_queue`, from
/// `RECOUP_CHARGE_QUEUE_URL`).
pub const CHARGE_QUEUE_SENDERS: [&str; 2] = ["retry-scheduler", "renewal-scheduler"];

/// The webhooks API (resends) and the dispatcher (its next attempts) put attempts on the
/// webhooks queue (`App::webhooks.queue`, from `RECOUP_WEBHOOKS_QUEUE_URL`).
pub const WEBHOOK_QUEUE_SENDERS: [&str; 2] = ["webhooks-api", "webhook-dispatcher"];

/// The queue (logical id) a function sends to, with the variable that names it; nothing
/// else sends to a queue.
pub fn queue_sent_to(binary: &str) -> Option<(&'static str, &'static str)> {
    if CHARGE_QUEUE_SENDERS.contains(&binary) {
        Some((routing::CHARGE_QUEUE, "RECOUP_CHARGE_QUEUE_URL"))
    } else if WEBHOOK_QUEUE_SENDERS.contains(&binary) {
        Some((routing::WEBHOOKS_QUEUE, "RECOUP_WEBHOOKS_QUEUE_URL"))
    } else {
        None
    }
}

/// Functions that never change state, so never publish events: the retry scheduler only
/// reads the schedule index and enqueues; the notifier only records emails; the webhooks
/// API manages endpoints, which are the merchant's configuration, not events.
pub const NON_PUBLISHERS: [&str; 3] = ["retry-scheduler", "notifier", "webhooks-api"];

/// Everything `DynamoStore` calls: `GetItem`, `BatchGetItem` (batched reads, an IAM action of
/// its own), `Query`, `PutItem`, `DeleteItem`, and `TransactWriteItems`, which IAM
/// authorizes per item as Put/Delete/ConditionCheck.
pub const DYNAMODB_ACTIONS: [&str; 6] = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
];
