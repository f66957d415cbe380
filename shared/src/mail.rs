//! Customer emails: rendered from the templates under `shared/templates/emails/` (text and
//! HTML, compiled into the binary), recorded in the table under their id (the event that
//! caused them), then handed to a transport once: SES in AWS, `.eml` files locally.
//!
//! **Never twice.** The record moves `queued` → `sending` → `sent` with conditional
//! writes. Only the writer that moved it to `sending` hands it to the transport; a
//! transport's refusal puts it back to `queued` (the queue redelivers the event and it is
//! tried again); a crash between the two leaves it `sending`, and it is not sent again,
//! since the transport may have taken it. A redelivered event finds the record and sends
//! nothing.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::Value;

pub use crate::ports::mailer::{Email, EmailStatus, MailError, MailTransport, Mailer, Sender};
use crate::store::repo::{Entity, Repo, Tx, Versioned};
use crate::store::{Index, IndexKeys, Key, Query, SortKeyRange, StoreError, keys};

impl Entity for Email {
    const KIND: &'static str = "email";
    fn key(&self) -> Key {
        keys::email(&self.id)
    }
    fn index_keys(&self) -> IndexKeys {
        IndexKeys::default().with(Index::Gsi1, Some(keys::listing_entry(keys::ALL_EMAILS, self.created_at, &self.id)))
    }
    fn expires_at(&self) -> Option<i64> {
        Some((self.created_at + chrono::TimeDelta::days(90)).timestamp())
    }
}

/// The templates, as files in the repository, compiled in.
const TEMPLATES: &[(&str, &str)] = &[
    ("_layout.html", include_str!("../templates/emails/_layout.html")),
    ("payment_failed.txt", include_str!("../templates/emails/payment_failed.txt")),
    ("payment_failed.html", include_str!("../templates/emails/payment_failed.html")),
    ("invoice_errored.txt", include_str!("../templates/emails/invoice_errored.txt")),
    ("invoice_errored.html", include_str!("../templates/emails/invoice_errored.html")),
    ("payment_receipt.txt", include_str!("../templates/emails/payment_receipt.txt")),
    ("payment_receipt.html", include_str!("../templates/emails/payment_receipt.html")),
    ("card_expiring.txt", include_str!("../templates/emails/card_expiring.txt")),
    ("card_expiring.html", include_str!("../templates/emails/card_expiring.html")),
    ("card_updated.txt", include_str!("../templates/emails/card_updated.txt")),
    ("card_updated.html", include_str!("../templates/emails/card_updated.html")),
    ("webhook_endpoint_disabled.txt", include_str!("../templates/emails/webhook_endpoint_disabled.txt")),
    ("webhook_endpoint_disabled.html", include_str!("../templates/emails/webhook_endpoint_disabled.html")),
    ("auto_refill_disabled.txt", include_str!("../templates/emails/auto_refill_disabled.txt")),
    ("auto_refill_disabled.html", include_str!("../templates/emails/auto_refill_disabled.html")),
];

/// The emails there are templates for.
pub const TEMPLATE_NAMES: [&str; 7] = [
    "payment_failed",
    "invoice_errored",
    "payment_receipt",
    "card_expiring",
    "card_updated",
    "webhook_endpoint_disabled",
    "auto_refill_disabled",
];

fn environment() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // `.html` templates escape what they insert; `.txt` ones do not.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the email templates parse");
        }
        env
    })
}

/// What one template renders to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders `template` (`payment_failed`...) with `context`. The text template's first line
/// is `Subject: ...`.
pub fn render(template: &str, context: &Value) -> Result<Rendered, MailError> {
    let env = environment();
    let render = |name: String| {
        env.get_template(&name).and_then(|t| t.render(context)).map_err(|e| MailError(format!("template {name}: {e}")))
    };
    let text = render(format!("{template}.txt"))?;
    let html = render(format!("{template}.html"))?;
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let subject = first
        .strip_prefix("Subject: ")
        .ok_or_else(|| MailError(format!("template {template}.txt does not begin with a Subject line")))?;
    Ok(Rendered { subject: subject.trim().to_owned(), text: rest.trim_start_matches('\n').to_owned(), html })
}

/// A header value on one line: no CR or LF can start another header.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect()
}

/// RFC 2047 for a header that is not plain ASCII.
fn encoded_header(s: &str) -> String {
    let s = one_line(s);
    if s.is_ascii() {
        s
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
    }
}

fn base64_lines(s: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// The email as one RFC 5322 message: text and HTML alternatives, UTF-8, base64.
pub fn mime(email: &Email, sender: &Sender) -> Vec<u8> {
    let boundary = format!("recoup-{}", one_line(&email.id));
    let mut m = String::new();
    m.push_str(&format!("From: {}\r\n", one_line(&sender.from)));
    m.push_str(&format!("To: {}\r\n", one_line(&email.to)));
    if let Some(reply_to) = &sender.reply_to {
        m.push_str(&format!("Reply-To: {}\r\n", one_line(reply_to)));
    }
    m.push_str(&format!("Subject: {}\r\n", encoded_header(&email.subject)));
    m.push_str(&format!("Date: {}\r\n", email.created_at.to_rfc2822()));
    m.push_str(&format!("Message-ID: <{}@recoup.invalid>\r\n", one_line(&email.id)));
    m.push_str(&format!("X-Recoup-Template: {}\r\n", one_line(&email.template)));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"));
    for (kind, part) in [("plain", &email.body), ("html", &email.html)] {
        m.push_str(&format!("--{boundary}\r\n"));
        m.push_str(&format!("Content-Type: text/{kind}; charset=utf-8\r\n"));
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        m.push_str(&base64_lines(part));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

/// Records each email in the store (once per id) and, with a transport, sends it once.
pub struct StoreMailer {
    repo: Repo,
    delivery: Option<(Arc<dyn MailTransport>, Sender)>,
}

impl StoreMailer {
    /// Records only: nothing leaves the system.
    pub fn new(repo: Repo) -> Self {
        StoreMailer { repo, delivery: None }
    }

    /// Records, then sends through `transport` as `sender`.
    pub fn sending(repo: Repo, transport: Arc<dyn MailTransport>, sender: Sender) -> Self {
        StoreMailer { repo, delivery: Some((transport, sender)) }
    }

    /// Most recent first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Email>, StoreError> {
        let q = Query::index(Index::Gsi1, keys::ALL_EMAILS, SortKeyRange::All).descending().limit(limit);
        let page = self.repo.store().query(&q).await?;
        page.items.into_iter().map(|i| crate::store::repo::from_item::<Email>(i).map(Versioned::into_inner)).collect()
    }

    /// Writes `email` at its version; false when someone else moved it first.
    async fn save(&self, email: &Versioned<Email>) -> Result<bool, MailError> {
        let mut tx = Tx::new();
        tx.save(email).map_err(|e| MailError(e.to_string()))?;
        match self.repo.commit(tx).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(MailError(e.to_string())),
        }
    }
}

#[async_trait]
impl Mailer for StoreMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let mut record = Versioned::new(Email {
            status: if self.delivery.is_some() { EmailStatus::Queued } else { EmailStatus::Recorded },
            ..email.clone()
        });
        if !self.save(&record).await? {
            // Written before: go on only if it is still waiting to be sent.
            record = match self.repo.load::<Email>(&keys::email(&email.id)).await {
                Ok(Some(existing)) if existing.status == EmailStatus::Queued => existing,
                Ok(_) => return Ok(()),
                Err(e) => return Err(MailError(e.to_string())),
            };
        } else {
            record.set_version(1);
            tracing::info!(email_id = %email.id, template = %email.template, customer_id = ?email.customer_id, "email recorded");
        }
        let Some((transport, sender)) = &self.delivery else { return Ok(()) };
        record.status = EmailStatus::Sending;
        if !self.save(&record).await? {
            return Ok(());
        }
        record.set_version(record.version() + 1);
        match transport.deliver(&record, sender, &mime(&record, sender)).await {
            Ok(message_id) => {
                record.status = EmailStatus::Sent;
                record.message_id = Some(message_id);
                tracing::info!(email_id = %record.id, message_id = ?record.message_id, "email sent");
            }
            Err(e) => {
                // Not taken: back in the queue, and the event's redelivery tries again.
                record.status = EmailStatus::Queued;
                self.save(&record).await?;
                return Err(e);
            }
        }
        self.save(&record).await?;
        Ok(())
    }
}

/// The local product's transport: each email is an `.eml` file a mail client opens.
pub struct EmlDirectory {
    dir: PathBuf,
}

impl EmlDirectory {
    pub fn new(dir: PathBuf) -> Self {
        EmlDirectory { dir }
    }

    /// The file an email is written to (its id, made safe for a file name).
    pub fn path_of(&self, id: &str) -> PathBuf {
        let name: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
        self.dir.join(format!("{name}.eml"))
    }
}

#[async_trait]
impl MailTransport for EmlDirectory {
    async fn deliver(&self, email: &Email, _sender: &Sender, mime: &[u8]) -> Result<String, MailError> {
        let path = self.path_of(&email.id);
        let (dir, bytes) = (self.dir.clone(), mime.to_vec());
        let written = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            // Written whole then renamed: a mail client never opens half a message.
            let partial = written.with_extension("eml.partial");
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, &written)
        })
        .await
        .map_err(|e| MailError(e.to_string()))?
        .map_err(|e| MailError(format!("{}: {e}", path.display())))?;
        Ok(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "customer_name": "Ada <script>",
            "amount": "$25.00",
            "invoice_id": "in_1",
            "reason": "Your bank declined the payment.",
            "next_attempt": "2030-01-03",
            "portal_url": "https://billing.example.com/portal",
            "paid_on": "2030-01-05",
            "brand": "Visa",
            "last4": "4242",
            "expiry": "02/2030",
            "replaced": false,
            "url": "https://hooks.example.com/recoup",
            "webhook_endpoint_id": "we_1",
        })
    }

    #[test]
    fn every_template_renders_a_subject_text_and_escaped_html() {
        for name in TEMPLATE_NAMES.into_iter().filter(|n| !n.starts_with("webhook_")) {
            let r = render(name, &context()).unwrap();
            assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{name}: {r:?}");
            assert!(r.text.contains("https://billing.example.com/portal"), "{name}");
            assert!(r.html.contains("Ada &lt;script&gt;"), "{name}: HTML escapes what it inserts");
            assert!(r.text.contains("Ada <script>"), "{name}: text is text");
        }
        let merchant = render("webhook_endpoint_disabled", &context()).unwrap();
        assert_eq!(merchant.subject, "Webhook endpoint disabled: https://hooks.example.com/recoup");
        let failed = render("payment_failed", &context()).unwrap();
        assert_eq!(failed.subject, "Your payment of $25.00 failed");
        assert!(failed.text.contains("We will try again on 2030-01-03."));
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_string() {
        assert!(render("payment_failed", &json!({"amount": "$1.00"})).is_err());
    }

    #[test]
    fn the_message_is_mime_with_both_parts_and_no_header_injection() {
        let email = Email {
            id: "evt_1".into(),
            template: "payment_failed".into(),
            customer_id: Some(crate::ids::CustomerId::generate()),
            to: "ada@example.com\r\nBcc: eve@example.com".into(),
            subject: "Paiement échoué".into(),
            body: "text part".into(),
            html: "<p>html part</p>".into(),
            created_at: chrono::Utc::now(),
            status: EmailStatus::Queued,
            message_id: None,
        };
        let sender = Sender {
            from: "Billing <billing@example.com>".into(),
            reply_to: Some("help@example.com".into()),
            configuration_set: None,
        };
        let raw = String::from_utf8(mime(&email, &sender)).unwrap();
        assert!(raw.contains("Subject: =?UTF-8?B?"));
        assert!(raw.contains("Reply-To: help@example.com\r\n"));
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(raw.contains(&b64("text part")) && raw.contains(&b64("<p>html part</p>")));
        assert!(raw.ends_with("--recoup-evt_1--\r\n"));
    }
}
