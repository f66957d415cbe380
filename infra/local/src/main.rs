//! `recoup-local serve` runs the whole product on this machine; `recoup-local token`
//! prints a bearer token for a role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use recoup_local::{Local, LocalProvider, Options, jwt, server};
use recoup_shared::domain::policy::{DunningPolicy, RetrySchedule};
use recoup_shared::time::parse_duration;
use serde_json::{Map, json};

#[derive(Parser)]
#[command(
    name = "recoup-local",
    version,
    about = "Recoup on one machine: the API, the dunning engine, the event bus and a PSP (the sandbox, or Stripe)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the `serve` variant's settings costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the API, run the schedules and queues, keep data in --data-dir.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        #[arg(long, default_value = ".recoup")]
        data_dir: PathBuf,
        /// Seconds between schedule runs (retries, renewals, outbox relay); 0 runs them
        /// only on POST /v1/dev/tick.
        #[arg(long, default_value_t = 5)]
        tick_seconds: u64,
        /// Retry offsets from the first failure.
        #[arg(long, env = "RECOUP_RETRY_SCHEDULE", default_value = recoup_shared::domain::policy::DEFAULT_SCHEDULE)]
        retry_schedule: String,
        #[arg(long, env = "RECOUP_RECONCILE_AFTER", default_value = "10m")]
        reconcile_after: String,
        #[arg(long, env = "RECOUP_PORTAL_URL", default_value = "http://127.0.0.1:8080/portal")]
        portal_url: String,
        /// The merchant's own address: told when a failing webhook endpoint is disabled.
        #[arg(long, env = "RECOUP_MERCHANT_EMAIL", default_value = "merchant@recoup.localhost")]
        merchant_email: String,
        /// The payment provider: the built-in sandbox, or Stripe's API.
        #[arg(long, env = "RECOUP_PAYMENT_PROVIDER", value_enum, default_value = "sandbox")]
        payment_provider: ProviderArg,
        /// Stripe's API: https://api.stripe.com with a test-mode key, or localstripe's URL.
        #[arg(long, env = "RECOUP_STRIPE_API_BASE", default_value = "https://api.stripe.com")]
        stripe_api_base: String,
        /// The Stripe secret key (sk_test_...). Read from the environment, never printed.
        #[arg(long, env = "RECOUP_STRIPE_API_KEY", hide_env_values = true)]
        stripe_api_key: Option<String>,
        /// The signing secret(s) of Stripe's webhooks (whsec_..., comma-separated while
        /// rolling), for POST /v1/webhooks/stripe.
        #[arg(long, env = "RECOUP_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
        stripe_webhook_secret: Option<String>,
        /// Stripe's publishable key (pk_test_...) for the hosted card form.
        #[arg(long, env = "RECOUP_STRIPE_PUBLISHABLE_KEY")]
        stripe_publishable_key: Option<String>,
        /// Where the card form loads Stripe.js: Stripe's own with Stripe's API, else the
        /// stand-in localstripe serves at <api base>/js.stripe.com/v3/.
        #[arg(long, env = "RECOUP_STRIPE_JS_URL")]
        stripe_js_url: Option<String>,
    },
    /// Print a bearer token (HS256, signed with the development secret).
    Token {
        #[arg(long, value_enum)]
        role: Role,
        /// The customer the token acts for (owner and member).
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value = "dev")]
        subject: String,
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    Sandbox,
    Stripe,
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Owner,
    Member,
    Merchant,
}

// Every request builds and drops many small JSON trees; mimalloc serves them faster than
// glibc's allocator (the in-memory month runs 1.6 times as fast with it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn secret() -> String {
    std::env::var("RECOUP_JWT_SECRET").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| jwt::DEFAULT_SECRET.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Token { role, customer, subject, ttl_hours } => {
            let mut claims = Map::new();
            let role = match role {
                Role::Owner => "owner",
                Role::Member => "member",
                Role::Merchant => "merchant",
            };
            if role != "merchant" {
                let c = customer.ok_or("--customer is required for owner and member tokens")?;
                if recoup_shared::ids::CustomerId::parse(&c).is_none() {
                    return Err(format!("{c:?} is not a customer id (cus_...)"));
                }
                claims.insert("customer_id".into(), json!(c));
            }
            claims.insert("role".into(), json!(role));
            claims.insert("sub".into(), json!(subject));
            println!("{}", jwt::mint(&secret(), claims, chrono::Utc::now().timestamp(), ttl_hours * 3600));
            Ok(())
        }
        Command::Serve {
            addr,
            data_dir,
            tick_seconds,
            retry_schedule,
            reconcile_after,
            portal_url,
            merchant_email,
            payment_provider,
            stripe_api_base,
            stripe_api_key,
            stripe_webhook_secret,
            stripe_publishable_key,
            stripe_js_url,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,recoup=info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let schedule: RetrySchedule = retry_schedule.parse().map_err(|e| format!("--retry-schedule: {e}"))?;
            let reconcile_after = parse_duration(&reconcile_after).ok_or("--reconcile-after: a duration like 10m")?;
            let provider = match payment_provider {
                ProviderArg::Sandbox => LocalProvider::Sandbox,
                ProviderArg::Stripe => LocalProvider::Stripe {
                    js_url: stripe_js_url.unwrap_or_else(|| recoup_lambda::app::stripe_js_url_for(&stripe_api_base)),
                    publishable_key: stripe_publishable_key,
                    api_base: stripe_api_base,
                    api_key: recoup_stripe::SecretKey::new(
                        stripe_api_key.ok_or("--payment-provider stripe needs RECOUP_STRIPE_API_KEY")?,
                    ),
                },
            };
            let local = Local::open(Options {
                data_dir,
                jwt_secret: secret(),
                policy: DunningPolicy { schedule, reconcile_after },
                portal_url,
                merchant_email: Some(merchant_email),
                provider,
                stripe_webhook_secrets: stripe_webhook_secret.map(|s| recoup_lambda::app::split_secrets(&s)),
            })
            .await?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("{addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            println!("listening on http://{bound}");
            if secret() == jwt::DEFAULT_SECRET {
                tracing::warn!(
                    "tokens are signed with the built-in development secret; set RECOUP_JWT_SECRET to change it"
                );
            }
            // Queue consumers: deliver what the API and the bus produce, promptly.
            let worker = local.clone();
            tokio::spawn(async move {
                loop {
                    worker.drain().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            if tick_seconds > 0 {
                let ticker = local.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(tick_seconds));
                    loop {
                        every.tick().await;
                        ticker.run_schedules().await;
                    }
                });
            }
            let served = axum::serve(listener, server::router(local.clone()))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(|e| e.to_string());
            // The answered requests' events reach the bus before the process ends (the
            // relay would publish them at the next start otherwise).
            local.caught_up().await;
            served
        }
    }
}
