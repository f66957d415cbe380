//! Merchant webhooks: the endpoints a merchant registers, what each may receive, how a
//! delivery is signed, and the life of one delivery (one event to one endpoint) through its
//! attempts, as Stripe's webhooks behave.
//!
//! - **Where.** An endpoint's URL is https, and never points into the deployment's own
//!   network: loopback, private, link-local (the instance metadata service), shared
//!   address space, multicast and reserved addresses are refused when the endpoint is
//!   saved, and again for every address its host resolves to at delivery time (a name that
//!   resolved to a public address yesterday may not today). The local product may allow
//!   plain http to loopback (`UrlPolicy::AllowLoopback`).
//! - **Signed.** `Recoup-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`,
//!   with one `v1` per live secret while a secret is being rolled.
//! - **Retried.** Anything but a 2xx is retried on [`RETRY_DELAYS`], with jitter, until
//!   [`GIVE_UP_AFTER`] has passed since the first attempt; then the delivery is failed.
//! - **At least once, in no order.** A delivery carries the event's id, which receivers
//!   dedupe on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::TimeDelta;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::events::EventPayload;
use crate::ids::{EventId, WebhookEndpointId};
use crate::time::Timestamp;

/// The delays before the second, third... attempt. The last repeats until [`GIVE_UP_AFTER`].
pub const RETRY_DELAYS: [TimeDelta; 6] = [
    TimeDelta::minutes(1),
    TimeDelta::minutes(5),
    TimeDelta::minutes(30),
    TimeDelta::hours(2),
    TimeDelta::hours(5),
    TimeDelta::hours(10),
];

/// No attempt is scheduled later than this after the first.
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::days(3);

/// An endpoint every delivery of which has failed for this long is disabled.
pub const DISABLE_AFTER: TimeDelta = TimeDelta::days(5);

/// How long a rolled secret keeps signing beside the new one, unless the merchant says.
pub const DEFAULT_ROLL_WINDOW: TimeDelta = TimeDelta::hours(24);

/// The longest roll window: a week.
pub const MAX_ROLL_WINDOW: TimeDelta = TimeDelta::days(7);

/// The version of the event format a delivery carries.
pub const API_VERSION: &str = "2026-12-01";

/// The most event types one endpoint lists, and the longest URL and description.
pub const MAX_EVENT_TYPES: usize = 32;
pub const MAX_URL_LEN: usize = 2_048;
pub const MAX_DESCRIPTION_LEN: usize = 500;

/// Which URLs an endpoint may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlPolicy {
    /// A deployment: https to public addresses only.
    PublicHttpsOnly,
    /// The local product: also http or https to loopback (a receiver on this machine).
    AllowLoopback,
}

impl UrlPolicy {
    /// Whether a delivery may connect to `ip` (checked for every address a host resolves to).
    pub fn allows_ip(self, ip: IpAddr) -> bool {
        match self {
            UrlPolicy::PublicHttpsOnly => is_public(ip),
            UrlPolicy::AllowLoopback => is_public(ip) || ip.to_canonical().is_loopback(),
        }
    }
}

/// Why a URL is refused. Each maps to one error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("url must use https")]
    NotHttps,
    #[error(
        "url points at an address that is not public ({0}): loopback, private, link-local and metadata addresses are refused"
    )]
    ForbiddenAddress(String),
}

/// Checks an endpoint URL as the merchant gave it. A host given by name is checked again,
/// address by address, when a delivery resolves it.
pub fn check_url(raw: &str, policy: UrlPolicy) -> Result<url::Url, UrlError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::Invalid(format!("longer than {MAX_URL_LEN} characters")));
    }
    let url = url::Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Invalid("credentials in the URL are not allowed".into()));
    }
    if url.fragment().is_some() {
        return Err(UrlError::Invalid("a fragment is never sent; remove it".into()));
    }
    let host = url.host().ok_or_else(|| UrlError::Invalid("no host".into()))?;
    let loopback = match &host {
        url::Host::Ipv4(ip) => {
            check_ip(IpAddr::V4(*ip), policy)?;
            ip.is_loopback()
        }
        url::Host::Ipv6(ip) => {
            check_ip(IpAddr::V6(*ip), policy)?;
            ip.to_canonical().is_loopback()
        }
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local_name = name == "localhost" || name.ends_with(".localhost");
            let internal = name.ends_with(".internal") || name.ends_with(".local") || !name.contains('.');
            if local_name && policy == UrlPolicy::AllowLoopback {
                true
            } else if local_name || internal {
                return Err(UrlError::ForbiddenAddress(name));
            } else {
                false
            }
        }
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && policy == UrlPolicy::AllowLoopback => Ok(url),
        "http" => Err(UrlError::NotHttps),
        other => Err(UrlError::Invalid(format!("scheme {other:?}: only https"))),
    }
}

fn check_ip(ip: IpAddr, policy: UrlPolicy) -> Result<(), UrlError> {
    if policy.allows_ip(ip) { Ok(()) } else { Err(UrlError::ForbiddenAddress(ip.to_string())) }
}

/// Whether `ip` is a public unicast address: the only kind a deployment delivers to.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata service among them
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, the EC2 metadata fd00:ec2::254 among them
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
}

/// Checks `enabled_events`: `["*"]`, or known event types, each once.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>, String> {
    if types.is_empty() {
        return Err("enabled_events must name at least one event type, or \"*\" for all".into());
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(format!("enabled_events lists more than {MAX_EVENT_TYPES} types"));
    }
    if types.iter().any(|t| t == "*") {
        return if types.len() == 1 { Ok(vec!["*".into()]) } else { Err("\"*\" stands alone".into()) };
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !WEBHOOK_EVENT_TYPES.contains(&t.as_str()) {
            return Err(format!("{t:?} is not an event type (see docs/events.md)"));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Every event type an endpoint can subscribe to.
pub const WEBHOOK_EVENT_TYPES: [&str; EventPayload::KINDS.len()] = EventPayload::KINDS;

/// Whether the endpoint takes new deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    /// By the merchant.
    Disabled,
    /// By Recoup, after every delivery failed for [`DISABLE_AFTER`].
    DisabledFailing,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
            EndpointStatus::DisabledFailing => "disabled_failing",
        }
    }
}

/// One signing secret. The newest has no end; a rolled one signs until `expires_at`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: String,
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret").field("secret", &"whsec_…").field("expires_at", &self.expires_at).finish()
    }
}

/// A fresh `whsec_` secret: 256 bits from the operating system's generator (UUIDv4 draws
/// from it), hex-encoded.
pub fn new_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("whsec_{}{}", a.simple(), b.simple())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub url: String,
    /// `["*"]` or event types.
    pub enabled_events: Vec<String>,
    pub description: String,
    pub status: EndpointStatus,
    /// Newest first.
    pub secrets: Vec<SigningSecret>,
    /// Since when every delivery has failed; `None` after a success.
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    /// A new, enabled endpoint with a fresh secret (read it from `secrets[0]` to show once).
    pub fn new(url: String, enabled_events: Vec<String>, description: String, now: Timestamp) -> Self {
        WebhookEndpoint {
            id: WebhookEndpointId::generate(),
            url,
            enabled_events,
            description,
            status: EndpointStatus::Enabled,
            secrets: vec![SigningSecret { secret: new_secret(), expires_at: None }],
            failing_since: None,
            created_at: now,
        }
    }

    /// Whether an event of this type is delivered to it now.
    pub fn wants(&self, kind: &str) -> bool {
        self.status == EndpointStatus::Enabled && self.enabled_events.iter().any(|e| e == "*" || e == kind)
    }

    /// The secrets that sign at `now`, newest first.
    pub fn live_secrets(&self, now: Timestamp) -> Vec<&str> {
        self.secrets.iter().filter(|s| s.expires_at.is_none_or(|at| at > now)).map(|s| s.secret.as_str()).collect()
    }

    /// Starts signing with a new secret; the current one keeps signing for `window` (zero
    /// ends it at once). Answers the new secret.
    pub fn roll_secret(&mut self, window: TimeDelta, now: Timestamp) -> String {
        self.secrets.retain(|s| s.expires_at.is_none_or(|at| at > now));
        for s in &mut self.secrets {
            let end = now + window;
            s.expires_at = Some(s.expires_at.map_or(end, |at| at.min(end)));
        }
        self.secrets.retain(|s| s.expires_at.is_none_or(|at| at > now));
        let secret = new_secret();
        self.secrets.insert(0, SigningSecret { secret: secret.clone(), expires_at: None });
        secret
    }

    /// A delivery succeeded: the endpoint is healthy.
    pub fn record_success(&mut self) {
        self.failing_since = None;
    }

    /// A delivery attempt failed. Answers true when this disables the endpoint (every
    /// delivery has failed for [`DISABLE_AFTER`]).
    pub fn record_failure(&mut self, now: Timestamp) -> bool {
        let since = *self.failing_since.get_or_insert(now);
        if self.status == EndpointStatus::Enabled && now - since >= DISABLE_AFTER {
            self.status = EndpointStatus::DisabledFailing;
            return true;
        }
        false
    }
}

/// The `Recoup-Signature` header for `body` sent at `t` (unix seconds).
pub fn signature_header(secrets: &[&str], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&sign(secret, t, body));
    }
    header
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// An attempt is due (at `next_attempt_at`) or running.
    Pending,
    Delivered,
    /// Given up: retried for [`GIVE_UP_AFTER`], or the endpoint was disabled or deleted.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered with this status.
    Answered { status: u16 },
    /// No answer: connection refused, timed out, TLS failure, a refused address.
    NoAnswer { error: String },
}

impl AttemptOutcome {
    pub fn delivered(&self) -> bool {
        matches!(self, AttemptOutcome::Answered { status } if (200..300).contains(status))
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts begun (the one running included), over every round.
    pub attempts: u32,
    /// Attempts made before the current round began (a resend starts a round, whose
    /// back-off starts over).
    #[serde(default)]
    pub round_base: u32,
    /// When the running attempt began; `None` between attempts.
    pub attempting_since: Option<Timestamp>,
    pub first_attempt_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    pub last_response_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How long an attempt may be running before another may start over it (its worker died):
/// longer than a delivery's timeout, with room.
pub const ATTEMPT_LEASE: TimeDelta = TimeDelta::seconds(60);

/// What the dispatcher should do with a delivery it was asked to attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Attempt number `n` now.
    Attempt { n: u32 },
    /// Not yet: ask again at this time.
    Wait { until: Timestamp },
    /// Nothing to do: delivered, failed, or another worker has this attempt.
    Nothing,
}

impl Delivery {
    pub fn new(endpoint_id: WebhookEndpointId, event_id: EventId, event_type: &str, now: Timestamp) -> Self {
        Delivery {
            endpoint_id,
            event_id,
            event_type: event_type.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            round_base: 0,
            attempting_since: None,
            first_attempt_at: None,
            next_attempt_at: Some(now),
            last_response_code: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Asked to make attempt `n` at `now`: whether to, and which.
    pub fn next(&self, n: u32, now: Timestamp) -> Next {
        match self.status {
            DeliveryStatus::Delivered | DeliveryStatus::Failed => Next::Nothing,
            DeliveryStatus::Pending => match self.attempting_since {
                // The attempt asked for is running, or its worker died: after the lease,
                // it is made again (at least once).
                Some(since) if self.attempts == n => {
                    if now - since >= ATTEMPT_LEASE {
                        Next::Attempt { n }
                    } else {
                        Next::Nothing
                    }
                }
                Some(_) => Next::Nothing,
                None if self.attempts + 1 != n => Next::Nothing,
                None => match self.next_attempt_at {
                    Some(at) if at > now => Next::Wait { until: at },
                    _ => Next::Attempt { n },
                },
            },
        }
    }

    /// Takes attempt `n`: written (conditionally) before the request goes out.
    pub fn begin(&mut self, n: u32, now: Timestamp) {
        self.attempts = n;
        self.attempting_since = Some(now);
        self.first_attempt_at.get_or_insert(now);
        self.next_attempt_at = None;
        self.updated_at = now;
    }

    /// Records the outcome of the running attempt and decides what follows: delivered,
    /// another attempt after a delay (with `jitter` in [0, 1) spreading it by ±20%), or
    /// failed for good.
    pub fn finish(&mut self, outcome: &AttemptOutcome, now: Timestamp, jitter: f64) {
        self.attempting_since = None;
        self.updated_at = now;
        match outcome {
            AttemptOutcome::Answered { status } => {
                self.last_response_code = Some(*status);
                self.last_error = None;
            }
            AttemptOutcome::NoAnswer { error } => {
                self.last_response_code = None;
                self.last_error = Some(error.chars().take(300).collect());
            }
        }
        if outcome.delivered() {
            self.status = DeliveryStatus::Delivered;
            self.next_attempt_at = None;
            return;
        }
        let first = self.first_attempt_at.unwrap_or(now);
        let in_round = self.attempts.saturating_sub(self.round_base).max(1) as usize;
        let i = (in_round - 1).min(RETRY_DELAYS.len() - 1);
        let base = RETRY_DELAYS[i];
        let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        let delay = TimeDelta::milliseconds((base.num_milliseconds() as f64 * spread) as i64);
        let at = now + delay;
        if at - first > GIVE_UP_AFTER {
            self.status = DeliveryStatus::Failed;
            self.next_attempt_at = None;
        } else {
            self.next_attempt_at = Some(at);
        }
    }

    /// Gives up without another attempt (the endpoint was disabled or deleted).
    pub fn abandon(&mut self, why: &str, now: Timestamp) {
        self.status = DeliveryStatus::Failed;
        self.attempting_since = None;
        self.next_attempt_at = None;
        self.last_error = Some(why.to_owned());
        self.updated_at = now;
    }

    /// Sends the event again: a new round of attempts, now.
    pub fn resend(&mut self, now: Timestamp) {
        self.status = DeliveryStatus::Pending;
        self.round_base = self.attempts;
        self.attempting_since = None;
        self.first_attempt_at = None;
        self.next_attempt_at = Some(now);
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn only_https_to_public_hosts_is_accepted_when_deployed() {
        let p = UrlPolicy::PublicHttpsOnly;
        assert!(check_url("https://hooks.example.com/recoup", p).is_ok());
        assert!(check_url("https://93.184.216.34/x", p).is_ok());
        assert_eq!(check_url("http://hooks.example.com/", p), Err(UrlError::NotHttps));
        for bad in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://localhost/",
            "https://metadata.google.internal/",
            "https://intranet/",
        ] {
            assert!(matches!(check_url(bad, p), Err(UrlError::ForbiddenAddress(_))), "{bad}");
        }
        for bad in
            ["not a url", "ftp://example.com/", "https://user:pw@example.com/", "https://example.com/#x", "/relative"]
        {
            assert!(matches!(check_url(bad, p), Err(UrlError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn the_local_product_may_deliver_over_http_to_loopback_but_not_to_private_networks() {
        let p = UrlPolicy::AllowLoopback;
        assert!(check_url("http://127.0.0.1:9000/hook", p).is_ok());
        assert!(check_url("http://localhost:9000/hook", p).is_ok());
        assert!(matches!(check_url("https://10.0.0.1/", p), Err(UrlError::ForbiddenAddress(_))));
        assert_eq!(check_url("http://example.com/", p), Err(UrlError::NotHttps));
        assert!(p.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!UrlPolicy::PublicHttpsOnly.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!p.allows_ip("169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn event_types_are_checked_and_star_stands_alone() {
        assert_eq!(check_event_types(&["*".into()]).unwrap(), vec!["*"]);
        assert!(check_event_types(&["*".into(), "invoice.paid".into()]).is_err());
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["invoice.exploded".into()]).unwrap_err().contains("invoice.exploded"));
        assert_eq!(check_event_types(&["invoice.paid".into(), "invoice.paid".into()]).unwrap(), vec!["invoice.paid"]);
    }

    #[test]
    fn the_signature_is_stripes_scheme_with_one_v1_per_live_secret() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently.
        let body = b"{}";
        let header = signature_header(&["whsec_test"], 1_700_000_000, body);
        let expected = sign("whsec_test", 1_700_000_000, body);
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_eq!(expected.len(), 64);
        assert_ne!(sign("whsec_other", 1_700_000_000, body), expected);
        assert_ne!(sign("whsec_test", 1_700_000_001, body), expected);

        let mut e = WebhookEndpoint::new("https://x.example.com".into(), vec!["*".into()], String::new(), t0());
        let old = e.secrets[0].secret.clone();
        let new = e.roll_secret(TimeDelta::hours(1), t0());
        assert!(new.starts_with("whsec_") && new.len() == 6 + 64 && new != old);
        assert_eq!(e.live_secrets(t0()), vec![new.as_str(), old.as_str()]);
        assert_eq!(e.live_secrets(t0() + TimeDelta::hours(2)), vec![new.as_str()]);
        let newest = e.roll_secret(TimeDelta::zero(), t0());
        assert_eq!(e.live_secrets(t0()), vec![newest.as_str()]);
    }

    #[test]
    fn retries_back_off_for_three_days_then_the_delivery_fails() {
        let e = WebhookEndpointId::generate();
        let mut d = Delivery::new(e, EventId::generate(), "invoice.paid", t0());
        let mut now = t0();
        let mut gaps = Vec::new();
        loop {
            let n = match d.next(d.attempts + 1, now) {
                Next::Attempt { n } => n,
                Next::Wait { until } => {
                    now = until;
                    continue;
                }
                Next::Nothing => break,
            };
            d.begin(n, now);
            d.finish(&AttemptOutcome::Answered { status: 500 }, now, 0.5);
            if let Some(at) = d.next_attempt_at {
                gaps.push(at - now);
            }
        }
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(&gaps[..3], &[TimeDelta::minutes(1), TimeDelta::minutes(5), TimeDelta::minutes(30)]);
        assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
        assert!(now - t0() <= GIVE_UP_AFTER && now - t0() > GIVE_UP_AFTER - TimeDelta::hours(10));
        assert!((10..=14).contains(&d.attempts), "{}", d.attempts);
    }

    #[test]
    fn an_attempt_is_made_once_unless_its_worker_died() {
        let mut d = Delivery::new(WebhookEndpointId::generate(), EventId::generate(), "invoice.paid", t0());
        assert_eq!(d.next(1, t0()), Next::Attempt { n: 1 });
        d.begin(1, t0());
        assert_eq!(d.next(1, t0() + TimeDelta::seconds(5)), Next::Nothing);
        assert_eq!(d.next(1, t0() + ATTEMPT_LEASE), Next::Attempt { n: 1 });
        d.finish(&AttemptOutcome::NoAnswer { error: "timed out".into() }, t0(), 0.0);
        assert_eq!(d.next(1, t0()), Next::Nothing, "a stale message for attempt 1");
        assert!(matches!(d.next(2, t0()), Next::Wait { .. }));
        d.finish(&AttemptOutcome::Answered { status: 204 }, t0(), 0.0);
        assert_eq!(d.status, DeliveryStatus::Delivered);
        assert_eq!(d.next(3, t0() + TimeDelta::days(1)), Next::Nothing);
    }

    #[test]
    fn an_endpoint_failing_for_days_is_disabled_and_a_success_resets_the_count() {
        let mut e =
            WebhookEndpoint::new("https://x.example.com".into(), vec!["invoice.paid".into()], String::new(), t0());
        assert!(e.wants("invoice.paid") && !e.wants("invoice.errored"));
        assert!(!e.record_failure(t0()));
        e.record_success();
        assert!(!e.record_failure(t0() + TimeDelta::days(4)));
        assert!(!e.record_failure(t0() + TimeDelta::days(8)));
        assert!(e.record_failure(t0() + TimeDelta::days(9)));
        assert_eq!(e.status, EndpointStatus::DisabledFailing);
        assert!(!e.wants("invoice.paid"));
    }
}
