//! Customer emails through Amazon SES v2 on the emulator: the notifier renders its
//! templates and sends the MIME message through SES, once per event, and the test reads
//! the sent messages back from moto.

use std::sync::Arc;

use base64::Engine as _;
use recoup_shared::aws::{SesTransport, sdk_config_for_endpoint};
use recoup_shared::domain::invoice::CollectionMethod;
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::mail::{EmailStatus, Sender, StoreMailer};
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::testkit::moto_endpoint;
use recoup_tests::aws_topology::Topology;
use serde_json::Value;

/// The raw messages moto's SES holds that were sent to `to`.
async fn sent_to(endpoint: &str, to: &str) -> Vec<String> {
    let data: Value = reqwest::get(format!("{endpoint}/moto-api/data.json")).await.unwrap().json().await.unwrap();
    data["ses"]["RawMessage"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m["raw_data"].as_str().map(str::to_owned))
        .filter(|raw| raw.contains(&format!("To: {to}\r\n")))
        .collect()
}

/// The decoded text of each base64 part of a message.
fn parts(raw: &str) -> Vec<String> {
    raw.split("Content-Transfer-Encoding: base64\r\n\r\n")
        .skip(1)
        .map(|p| {
            let b64: String = p.split("--recoup-").next().unwrap().split_whitespace().collect();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_payment_and_its_recovery_are_emailed_through_ses_once_each() {
    let endpoint = moto_endpoint();
    let mut t = Topology::create(&endpoint).await;
    let ses = aws_sdk_sesv2::Client::new(&sdk_config_for_endpoint(&endpoint).await);
    ses.create_email_identity().email_identity("billing.example.com").send().await.unwrap();
    let sender = Sender {
        from: "Acme Billing <receipts@billing.example.com>".into(),
        reply_to: Some("help@billing.example.com".into()),
        configuration_set: None,
    };
    let transport = Arc::new(SesTransport::new(ses));
    t.app.services.mailer = Arc::new(StoreMailer::sending(t.app.services.repo.clone(), transport, sender));
    let s = &t.app.services;

    let to = format!("ada-{}@example.com", uuid::Uuid::new_v4().simple());
    let cus = s.create_customer(&to, Some("Ada")).await.unwrap().id;
    // A card whose charges are declined as suspected fraud: the customer is told it was
    // declined, nothing more.
    s.register_payment_method(&cus, "pm_sandbox_visa_59", false).await.unwrap();
    let invoice = s
        .issue_invoice(IssueInvoice {
            customer_id: cus.clone(),
            amount: Money::new(2500, Currency::parse("USD").unwrap()).unwrap(),
            description: "Pro plan".into(),
            collection_method: Some(CollectionMethod::ChargeAutomatically),
        })
        .await
        .unwrap();
    t.pump().await;
    let sent = sent_to(&endpoint, &to).await;
    let kinds: Vec<&str> =
        sent.iter().filter_map(|m| m.split("X-Recoup-Template: ").nth(1)?.split("\r\n").next()).collect();
    assert!(kinds.contains(&"card_updated"), "{kinds:?}");
    let failed = sent.iter().find(|m| m.contains("X-Recoup-Template: payment_failed")).expect("a payment_failed email");
    assert!(failed.contains("Subject: Your payment of $25.00 failed\r\n"), "{failed}");
    assert!(failed.contains("From: Acme Billing <receipts@billing.example.com>\r\n"));
    assert!(failed.contains("Reply-To: help@billing.example.com\r\n"));
    let [text, html] = &parts(failed)[..] else { panic!("two parts: {failed}") };
    assert!(text.contains("Hello Ada") && text.contains("$25.00") && text.contains(&invoice.invoice.id.to_string()));
    assert!(text.contains("https://billing.example.com/portal"), "{text}");
    assert!(!text.to_lowercase().contains("fraud") && !html.to_lowercase().contains("fraud"));
    assert!(html.contains("<a href=\"https://billing.example.com/portal\""));

    // The event again (SQS delivers at least once): no second email.
    let before = sent_to(&endpoint, &to).await.len();
    for record in t
        .app
        .services
        .repo
        .store()
        .query(&recoup_shared::store::Query::index(
            recoup_shared::store::Index::Gsi1,
            recoup_shared::store::keys::ALL_EMAILS,
            recoup_shared::store::SortKeyRange::All,
        ))
        .await
        .unwrap()
        .items
    {
        let body = record.body.into_json().unwrap();
        assert_eq!(body["status"], "sent", "{body}");
        let id = recoup_shared::ids::EventId::parse(body["id"].as_str().unwrap()).unwrap();
        let e = s.repo.event(&id).await.unwrap().unwrap().into_inner().event;
        s.notify(&e).await.unwrap();
    }
    assert_eq!(sent_to(&endpoint, &to).await.len(), before, "sent once per event");
    let stored = StoreMailer::new(s.repo.clone()).recent(20).await.unwrap();
    assert!(stored.iter().filter(|e| e.to == to).all(|e| e.status == EmailStatus::Sent && e.message_id.is_some()));

    // A good card pays the invoice: a receipt, and a card_updated for the new card.
    s.register_payment_method(&cus, "pm_card_visa", true).await.unwrap();
    t.pump().await;
    let sent = sent_to(&endpoint, &to).await;
    let receipt = sent.iter().find(|m| m.contains("X-Recoup-Template: payment_receipt")).expect("a receipt");
    assert!(receipt.contains("Subject: Payment received: $25.00\r\n"));
    assert_eq!(sent.iter().filter(|m| m.contains("X-Recoup-Template: card_updated")).count(), 2);
}
