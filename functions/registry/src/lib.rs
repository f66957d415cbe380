//! The one registry of Recoup's functions. Each is one entry: its name (the binary, and
//! the kebab-case of its `template.yaml` resource), its handler, and its trigger (HTTP
//! routes, an SQS queue fed by bus rules, or a schedule). The local product serves and
//! drives exactly these, the AWS topology harness delivers to them, the template check
//! requires their resources and triggers in `template.yaml`, the OpenAPI check compares
//! their routes with `docs/openapi.yaml`, and the bench builds and measures them.
//!
//! Adding a function: its crate under `functions/`, one entry here, and its resources in
//! `template.yaml` (the template test fails until they are there). See CONTRIBUTING.md.

use std::future::Future;
use std::pin::Pin;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Request, Response};
use recoup_lambda::App;
use recoup_lambda::http::Route;
use recoup_lambda::routing;
use recoup_shared::error::Error;
use serde_json::Value;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type HttpHandler = for<'a> fn(&'a App, Request) -> BoxFuture<'a, Response<Body>>;
pub type QueueHandler = for<'a> fn(&'a App, SqsEvent) -> BoxFuture<'a, Result<SqsBatchResponse, Error>>;
pub type ScheduleHandler = for<'a> fn(&'a App, EventBridgeEvent<Value>) -> BoxFuture<'a, Result<Value, Error>>;

/// Who lets a request through to an HTTP function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorizer {
    /// API Gateway's JWT authorizer: the handler reads the caller from the claims.
    Jwt,
    /// None: the handler verifies the caller itself (the PSP's signature).
    None,
}

/// What invokes a function, and the handler it invokes.
#[derive(Clone, Copy)]
pub enum Trigger {
    /// Routes of the HTTP API, behind its JWT authorizer or, for callers that prove
    /// themselves otherwise (a PSP's signed webhooks), without it.
    Http { routes: &'static [Route], handler: HttpHandler, authorizer: Authorizer },
    /// An SQS queue (its logical id in `template.yaml`), fed by the bus rules of
    /// [`routing::RULES`], or by senders.
    Queue { queue: &'static str, handler: QueueHandler },
    /// An EventBridge schedule.
    Schedule { rate: &'static str, handler: ScheduleHandler },
}

#[derive(Clone, Copy)]
pub struct Function {
    /// `charge-worker`: the binary, and `ChargeWorkerFunction` in `template.yaml`.
    pub name: &'static str,
    pub trigger: Trigger,
    /// Calls the payment provider (verifies, charges, looks up or detaches cards), and so
    /// is granted its secret in `template.yaml`.
    pub calls_psp: bool,
}

impl Function {
    /// The logical id of its `AWS::Serverless::Function` in `template.yaml`.
    pub fn logical_id(&self) -> String {
        let mut id: String = self
            .name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect();
        id.push_str("Function");
        id
    }

    pub fn routes(&self) -> &'static [Route] {
        match self.trigger {
            Trigger::Http { routes, .. } => routes,
            Trigger::Queue { .. } | Trigger::Schedule { .. } => &[],
        }
    }
}

pub const FUNCTIONS: &[Function] = &[
    Function {
        name: "payment-methods-api",
        calls_psp: true,
        trigger: Trigger::Http {
            routes: payment_methods_api::ROUTES,
            handler: |app, req| Box::pin(payment_methods_api::handle(app, req)),
            authorizer: Authorizer::Jwt,
        },
    },
    Function {
        name: "invoices-api",
        calls_psp: true,
        trigger: Trigger::Http {
            routes: invoices_api::ROUTES,
            handler: |app, req| Box::pin(invoices_api::handle(app, req)),
            authorizer: Authorizer::Jwt,
        },
    },
    Function {
        name: "subscriptions-api",
        calls_psp: true,
        trigger: Trigger::Http {
            routes: subscriptions_api::ROUTES,
            handler: |app, req| Box::pin(subscriptions_api::handle(app, req)),
            authorizer: Authorizer::Jwt,
        },
    },
    Function {
        name: "psp-webhooks",
        // A card the issuer updated collects what is outstanding at once.
        calls_psp: true,
        trigger: Trigger::Http {
            routes: psp_webhooks::ROUTES,
            handler: |app, req| Box::pin(psp_webhooks::handle(app, req)),
            authorizer: Authorizer::None,
        },
    },
    Function {
        name: "portal",
        // "Pay now" charges; removing a card detaches it at the PSP.
        calls_psp: true,
        trigger: Trigger::Http {
            routes: portal::ROUTES,
            handler: |app, req| Box::pin(portal::handle(app, req)),
            // A browser navigates to the pages: no bearer token (the card form's script
            // sends one to the API).
            authorizer: Authorizer::None,
        },
    },
    Function {
        name: "webhooks-api",
        calls_psp: false,
        trigger: Trigger::Http {
            routes: webhooks_api::ROUTES,
            handler: |app, req| Box::pin(webhooks_api::handle(app, req)),
            authorizer: Authorizer::Jwt,
        },
    },
    Function {
        name: "wallet-api",
        // A refill charges a card (and a debit may start an automatic one).
        calls_psp: true,
        trigger: Trigger::Http {
            routes: wallet_api::ROUTES,
            handler: |app, req| Box::pin(wallet_api::handle(app, req)),
            authorizer: Authorizer::Jwt,
        },
    },
    Function {
        name: "charge-worker",
        calls_psp: true,
        trigger: Trigger::Queue {
            queue: routing::CHARGE_QUEUE,
            handler: |app, event| Box::pin(charge_worker::handle(app, event)),
        },
    },
    Function {
        name: "subscription-updater",
        calls_psp: false,
        trigger: Trigger::Queue {
            queue: routing::SUBSCRIPTION_UPDATES_QUEUE,
            handler: |app, event| Box::pin(subscription_updater::handle(app, event)),
        },
    },
    Function {
        name: "notifier",
        calls_psp: false,
        trigger: Trigger::Queue {
            queue: routing::NOTIFICATIONS_QUEUE,
            handler: |app, event| Box::pin(notifier::handle(app, event)),
        },
    },
    Function {
        name: "webhook-dispatcher",
        calls_psp: false,
        trigger: Trigger::Queue {
            queue: routing::WEBHOOKS_QUEUE,
            handler: |app, event| Box::pin(webhook_dispatcher::handle(app, event)),
        },
    },
    Function {
        name: "retry-scheduler",
        calls_psp: false,
        trigger: Trigger::Schedule {
            rate: "rate(5 minutes)",
            handler: |app, event| Box::pin(retry_scheduler::handle(app, event)),
        },
    },
    Function {
        name: "renewal-scheduler",
        calls_psp: false,
        trigger: Trigger::Schedule {
            rate: "rate(15 minutes)",
            handler: |app, event| Box::pin(renewal_scheduler::handle(app, event)),
        },
    },
    Function {
        name: "expiry-reminder",
        calls_psp: false,
        trigger: Trigger::Schedule {
            rate: "rate(1 day)",
            handler: |app, event| Box::pin(expiry_reminder::handle(app, event)),
        },
    },
    Function {
        name: "outbox-relay",
        calls_psp: false,
        trigger: Trigger::Schedule {
            rate: "rate(1 minute)",
            handler: |app, event| Box::pin(outbox_relay::handle(app, event)),
        },
    },
];

pub fn by_name(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Every route of the HTTP API, with the function that serves it.
pub fn http_routes() -> impl Iterator<Item = (&'static Function, Route)> {
    FUNCTIONS.iter().flat_map(|f| f.routes().iter().map(move |r| (f, *r)))
}

/// The function that consumes `queue` (a logical id), if any.
pub fn consumer_of(queue: &str) -> Option<(&'static Function, QueueHandler)> {
    FUNCTIONS.iter().find_map(|f| match f.trigger {
        Trigger::Queue { queue: q, handler } if q == queue => Some((f, handler)),
        Trigger::Queue { .. } | Trigger::Http { .. } | Trigger::Schedule { .. } => None,
    })
}

/// The queues (logical ids) some function consumes.
pub fn queues() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().filter_map(|f| match f.trigger {
        Trigger::Queue { queue, .. } => Some(queue),
        Trigger::Http { .. } | Trigger::Schedule { .. } => None,
    })
}

/// The scheduled functions with their rate and handler.
pub fn schedules() -> impl Iterator<Item = (&'static Function, &'static str, ScheduleHandler)> {
    FUNCTIONS.iter().filter_map(|f| match f.trigger {
        Trigger::Schedule { rate, handler } => Some((f, rate, handler)),
        Trigger::Http { .. } | Trigger::Queue { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_name_their_template_resource() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len());
        assert_eq!(by_name("charge-worker").map(Function::logical_id).as_deref(), Some("ChargeWorkerFunction"));
        assert_eq!(
            by_name("payment-methods-api").map(Function::logical_id).as_deref(),
            Some("PaymentMethodsApiFunction")
        );
    }

    #[test]
    fn every_queue_a_bus_rule_feeds_has_exactly_one_consumer() {
        for rule in routing::RULES {
            assert_eq!(queues().filter(|q| *q == rule.queue).count(), 1, "{}", rule.queue);
        }
        assert!(consumer_of(routing::CHARGE_QUEUE).is_some());
        assert!(consumer_of("NoSuchQueue").is_none());
    }

    #[test]
    fn the_functions_that_charge_are_the_ones_that_call_the_psp() {
        let calling: Vec<&str> = FUNCTIONS.iter().filter(|f| f.calls_psp).map(|f| f.name).collect();
        assert_eq!(
            calling,
            [
                "payment-methods-api",
                "invoices-api",
                "subscriptions-api",
                "psp-webhooks",
                "portal",
                "wallet-api",
                "charge-worker"
            ]
        );
    }

    #[test]
    fn no_route_is_served_twice() {
        let mut keys: Vec<String> = http_routes().map(|(_, r)| r.key()).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }
}
