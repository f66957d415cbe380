//! What every Recoup Lambda function shares. `main.rs` of each function calls
//! [`app::from_env`] once per cold start and hands the [`App`] to its handler; the local
//! product builds the same `App` over the embedded store and calls the same handlers.

pub mod app;
pub mod cards;
pub mod http;
pub mod provider;
pub mod routing;
#[cfg(feature = "aws")]
pub mod run;
pub mod sqs;
pub mod views;
pub mod webhook_http;

pub use app::App;
