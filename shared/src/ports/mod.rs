//! Every port of the domain, in one place: what the services need from the world, each a
//! trait with the vocabulary it speaks. The adapters are named after what they adapt.
//!
//! | port | trait | adapters |
//! |---|---|---|
//! | [`store`] | `ItemStore` | `store::embedded::EmbeddedStore` (redb), `store::dynamodb::DynamoStore`, `store::memory::MemoryStore` (simulations), `store::metered::MeteredStore` (counts work) |
//! | [`gateway`] | `PaymentGateway` | `recoup_sandbox::SandboxGateway`, `recoup_stripe::StripeGateway` (crates under `gateways/`) |
//! | [`messaging`] | `EventPublisher`, `QueueSender` | `aws::EventBridgePublisher`, `aws::SqsSender`; the local product's in-process bus and queues |
//! | [`mailer`] | `Mailer` | `mail::StoreMailer` |
//! | [`webhooks`] | `WebhookTransport` | `recoup_lambda::webhook_http::HttpTransport` |
//! | [`portal`] | `PortalLinks` | `recoup_lambda::app::SignedPortalLinks` |
//! | [`clock`] | `Clock` | `time::SystemClock`, `time::ManualClock`, `time::OffsetClock` |

pub mod clock;
pub mod gateway;
pub mod mailer;
pub mod messaging;
pub mod portal;
pub mod store;
pub mod webhooks;
