//! Recoup's domain crate: what a payment method, an invoice and a subscription are, how a
//! failed payment is classified and retried under card-network rules, and the ports
//! (store, payment gateway, event publisher, clock, mailer) the Lambda functions and the
//! local product plug adapters into.
//!
//! Every port is under `ports/` (the store, the payment gateway, messaging, the mailer, the
//! clock). Every business rule is under `domain/`: money, cards, the decline taxonomy, the
//! retry policy and network limits, invoices, subscriptions, the card ledger and domain
//! events. `services/` runs the use cases over the ports; `store/`, `aws`, `mail` and
//! `time` hold the adapters named after what they adapt.
//!
//! The core has no AWS or Lambda dependency; the DynamoDB, EventBridge and SQS adapters sit
//! behind the `aws` feature and the embedded store behind `embedded`.

pub mod domain;
pub mod error;
pub mod ids;
pub mod mail;
pub mod ports;
pub mod services;
pub mod store;
pub mod time;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(feature = "testing")]
pub mod testkit;
