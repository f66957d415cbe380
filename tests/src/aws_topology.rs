//! The AWS side of Recoup on the emulator: table, event bus, queues with dead-letter
//! queues, and the EventBridge rules of `recoup_lambda::routing::RULES`; plus a consumer
//! that hands received SQS messages to a handler the way Lambda's event source does.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use recoup_lambda::App;
use recoup_lambda::routing::{self, MAX_RECEIVE_COUNT};
use recoup_sandbox::SandboxGateway;
use recoup_shared::aws::{EventBridgePublisher, SqsSender, sdk_config_for_endpoint};
use recoup_shared::domain::policy::DunningPolicy;
use recoup_shared::mail::StoreMailer;
use recoup_shared::services::Services;
use recoup_shared::store::dynamodb::DynamoStore;
use recoup_shared::store::repo::Repo;
use recoup_shared::time::{Clock, ManualClock};
use serde_json::{Value, json};

pub struct Topology {
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub bus: String,
    /// Queue logical id (as in the template) → URL.
    pub queues: HashMap<&'static str, String>,
    pub dead_letters: HashMap<&'static str, String>,
    /// Receives every Recoup event, for assertions.
    pub audit_queue: String,
    pub app: App,
    pub clock: Arc<ManualClock>,
    pub store: DynamoStore,
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    attrs.attributes().and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)).cloned().expect("arn")
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(aws_sdk_sqs::types::QueueAttributeName, String)>,
) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k, v);
    }
    req.send().await.expect("create queue").queue_url().expect("queue url").to_owned()
}

impl Topology {
    /// Builds a fresh, uniquely named deployment on the emulator at `endpoint`.
    pub async fn create(endpoint: &str) -> Topology {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let config = sdk_config_for_endpoint(endpoint).await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let events = aws_sdk_eventbridge::Client::new(&config);
        let bus = format!("recoup-{suffix}");
        events.create_event_bus().name(&bus).send().await.expect("create bus");

        let mut queues = HashMap::new();
        let mut dead_letters = HashMap::new();
        for name in recoup_functions::queues() {
            let dlq = create_queue(&sqs, &format!("{name}-dlq-{suffix}"), vec![]).await;
            let redrive = json!({"deadLetterTargetArn": queue_arn(&sqs, &dlq).await, "maxReceiveCount": MAX_RECEIVE_COUNT.to_string()});
            // Visibility 0: a failed message is redelivered at once, so tests stay quick.
            let url = create_queue(
                &sqs,
                &format!("{name}-{suffix}"),
                vec![(A::RedrivePolicy, redrive.to_string()), (A::VisibilityTimeout, "0".into())],
            )
            .await;
            queues.insert(name, url);
            dead_letters.insert(name, dlq);
        }
        for rule in routing::RULES {
            let rule_name = format!("{}-{suffix}", rule.name);
            let pattern = json!({"source": ["recoup"], "detail-type": rule.detail_types});
            events
                .put_rule()
                .name(&rule_name)
                .event_bus_name(&bus)
                .event_pattern(pattern.to_string())
                .send()
                .await
                .expect("rule");
            let target = aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn(&sqs, &queues[rule.queue]).await)
                .build()
                .expect("target");
            events.put_targets().rule(&rule_name).event_bus_name(&bus).targets(target).send().await.expect("targets");
        }
        let audit_queue = create_queue(&sqs, &format!("audit-{suffix}"), vec![]).await;
        let audit_rule = format!("audit-{suffix}");
        events
            .put_rule()
            .name(&audit_rule)
            .event_bus_name(&bus)
            .event_pattern(json!({"source": ["recoup"]}).to_string())
            .send()
            .await
            .expect("audit rule");
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("audit")
            .arn(queue_arn(&sqs, &audit_queue).await)
            .build()
            .expect("target");
        events.put_targets().rule(&audit_rule).event_bus_name(&bus).targets(target).send().await.expect("audit target");

        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), format!("recoup-{suffix}"));
        store.ensure_table().await.expect("table");
        let repo = Repo::new(Arc::new(store.clone()));
        let clock = Arc::new(ManualClock::at_default_start());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let services = Services {
            repo: repo.clone(),
            gateway: Arc::new(SandboxGateway::new(repo.clone(), dyn_clock.clone())),
            clock: dyn_clock,
            publisher: Arc::new(EventBridgePublisher::new(events.clone(), &bus)),
            mailer: Arc::new(StoreMailer::new(repo)),
            policy: DunningPolicy::default(),
            portal_url: "https://billing.example.com/portal".into(),
            merchant_email: None,
            portal_links: None,
            card_turns: Default::default(),
            publishing: Default::default(),
        };
        let charge_queue = Arc::new(SqsSender::new(sqs.clone(), queues[routing::CHARGE_QUEUE].clone()));
        let app = App {
            services,
            charge_queue: Some(charge_queue),
            psp_webhook_secrets: None,
            card_form: Default::default(),
            webhooks: recoup_lambda::app::Webhooks::new(
                recoup_shared::domain::webhook::UrlPolicy::AllowLoopback,
                Some(Arc::new(SqsSender::new(sqs.clone(), queues[routing::WEBHOOKS_QUEUE].clone()))),
            ),
            portal_secrets: None,
        };
        Topology { sqs, events, bus, queues, dead_letters, audit_queue, app, clock, store }
    }

    /// Receives one batch from `url` and returns it as Lambda's SQS event source would.
    pub async fn receive(&self, url: &str) -> Option<(SqsEvent, HashMap<String, String>)> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let messages = out.messages();
        if messages.is_empty() {
            return None;
        }
        let mut handles = HashMap::new();
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let id = m.message_id().unwrap_or_default().to_owned();
                handles.insert(id.clone(), m.receipt_handle().unwrap_or_default().to_owned());
                let attributes: HashMap<String, String> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
                    .unwrap_or_default();
                json!({
                    "messageId": id,
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        Some((serde_json::from_value(json!({"Records": records})).expect("sqs event"), handles))
    }

    /// Deletes what the handler did not report as failed, as the event source mapping does.
    pub async fn acknowledge(&self, url: &str, handles: HashMap<String, String>, response: &SqsBatchResponse) {
        for (id, handle) in handles {
            if response.batch_item_failures.iter().any(|f| f.item_identifier == id) {
                continue;
            }
            self.sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("delete");
        }
    }

    /// Delivers every message waiting on the consumed queues to their functions (as the
    /// registry wires them), until quiet.
    pub async fn pump(&self) -> usize {
        let mut delivered = 0;
        for _ in 0..200 {
            let mut round = 0;
            for name in recoup_functions::queues() {
                let url = self.queues[name].clone();
                if let Some((event, handles)) = self.receive(&url).await {
                    round += event.records.len();
                    let (_, handle) = recoup_functions::consumer_of(name).expect("a consumed queue has a consumer");
                    let response = handle(&self.app, event).await.expect("handlers report per-record failures");
                    self.acknowledge(&url, handles, &response).await;
                }
            }
            delivered += round;
            if round == 0 {
                break;
            }
        }
        delivered
    }

    pub fn scheduled_event(&self) -> aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> {
        serde_json::from_value(json!({
            "version": "0", "id": uuid::Uuid::new_v4().to_string(), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2030-01-01T00:00:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/schedule"], "detail": {}
        }))
        .expect("scheduled event")
    }

    /// The scheduled functions, then everything they set off.
    pub async fn tick(&self) {
        for (function, _rate, handle) in recoup_functions::schedules() {
            handle(&self.app, self.scheduled_event()).await.unwrap_or_else(|e| panic!("{}: {e}", function.name));
        }
        self.pump().await;
    }

    /// Every event type the bus delivered so far (drains the audit queue).
    pub async fn delivered_event_types(&self) -> Vec<String> {
        let mut kinds = Vec::new();
        while let Some((event, handles)) = self.receive(&self.audit_queue).await {
            for r in &event.records {
                let v: Value = serde_json::from_str(r.body.as_deref().unwrap_or("{}")).unwrap_or_default();
                kinds.push(v["detail-type"].as_str().unwrap_or_default().to_owned());
            }
            self.acknowledge(&self.audit_queue.clone(), handles, &SqsBatchResponse::default()).await;
        }
        kinds
    }
}
