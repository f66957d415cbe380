//! The HTTPS client that delivers merchant webhooks: the adapter of
//! `recoup_shared::ports::webhooks`.
//!
//! - **No SSRF.** Every address a host name resolves to is checked against the URL policy
//!   when the connection is made (a resolver of our own, so the check and the connection
//!   see the same addresses), and an IP-literal URL is checked before the request. No
//!   proxy is used and redirects are not followed (a 3xx is a failed attempt).
//! - **Bounded.** The whole attempt (connect, send, headers, body) has [`TIMEOUT`], and at
//!   most [`BODY_CAP`] bytes of the answer are read: a receiver that never answers or
//!   answers with a gigabyte costs one slot for five seconds, and no memory.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use recoup_shared::domain::webhook::{AttemptOutcome, UrlPolicy, check_url};
use recoup_shared::ports::webhooks::{WebhookRequest, WebhookTransport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest one attempt takes, start to finish.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an answer's body that is read (the rest is dropped with the connection).
pub const BODY_CAP: usize = 64 * 1024;

/// Resolves with the system resolver and refuses a name any of whose addresses the
/// policy forbids (one bad address is enough: the client could pick it).
struct CheckedResolver {
    policy: UrlPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.allows_ip(a.ip())) {
                return Err(format!("{host} resolves to {}, which is not a public address", bad.ip()).into());
            }
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Delivers over HTTPS (and, under `UrlPolicy::AllowLoopback`, plain HTTP to loopback).
/// The client is built at the first delivery, so functions that never deliver pay nothing.
pub struct HttpTransport {
    policy: UrlPolicy,
    client: OnceLock<reqwest::Client>,
}

impl HttpTransport {
    pub fn new(policy: UrlPolicy) -> Self {
        HttpTransport { policy, client: OnceLock::new() }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(CheckedResolver { policy: self.policy }))
                .user_agent(concat!("Recoup-Webhooks/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("the HTTP client builds with static settings")
        })
    }
}

/// The full error chain: reqwest's own message hides the cause ("error sending request").
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("timed out after {}s", TIMEOUT.as_secs());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait]
impl WebhookTransport for HttpTransport {
    async fn post(&self, request: &WebhookRequest) -> AttemptOutcome {
        // The URL was checked when saved; checked again (an IP literal never reaches the
        // resolver).
        if let Err(e) = check_url(&request.url, self.policy) {
            return AttemptOutcome::NoAnswer { error: e.to_string() };
        }
        let attempt = async {
            let mut response = self
                .client()
                .post(&request.url)
                .header("content-type", "application/json")
                .header("recoup-signature", &request.signature)
                .header("recoup-event-id", &request.event_id)
                .body(request.body.clone())
                .send()
                .await?;
            let status = response.status().as_u16();
            // Read a little of the answer (what a receiver says about a failure), never more.
            let mut read = 0usize;
            while read < BODY_CAP {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            Ok::<u16, reqwest::Error>(status)
        };
        // The client's timeout covers the body too; this bounds the whole attempt anyway.
        match tokio::time::timeout(TIMEOUT + Duration::from_millis(500), attempt).await {
            Ok(Ok(status)) => AttemptOutcome::Answered { status },
            Ok(Err(e)) => AttemptOutcome::NoAnswer { error: describe(&e) },
            Err(_) => AttemptOutcome::NoAnswer { error: format!("timed out after {}s", TIMEOUT.as_secs()) },
        }
    }
}
