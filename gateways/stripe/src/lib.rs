//! Recoup's Stripe adapter.
//!
//! - [`StripeGateway`]: the payment-gateway port over Stripe's API (customers,
//!   SetupIntents, PaymentIntents, decline mapping, reconciliation by metadata).
//! - [`api`]: the thin typed client (reqwest with rustls and compiled-in roots) and the
//!   parts of Stripe's objects Recoup reads.
//! - [`signature`]: `Stripe-Signature` verification for the PSP webhook receiver.
//!
//! Card numbers never reach this crate: the customer's browser gives them to Stripe
//! (Stripe.js), and Recoup only ever sees `pm_` ids.

pub mod api;
mod gateway;
pub mod signature;
pub mod webhook;

pub use api::{ClientConfig, SecretKey, StripeClient};
pub use gateway::{METADATA_KEY, StripeGateway, decline_of, outcome_of, verified_card};
