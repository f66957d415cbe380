//! The local stand-ins for EventBridge and SQS, with the same routing and the same
//! delivery rules: events go to the queues `routing::RULES` names, consumers get SQS
//! batches built like Lambda's, failed records are redelivered with back-off, and a
//! record that fails `MAX_RECEIVE_COUNT` times moves to the queue's dead-letter list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use recoup_lambda::App;
use recoup_lambda::routing::{self, MAX_RECEIVE_COUNT};
use recoup_shared::domain::events::{EVENT_SOURCE, Event};
use recoup_shared::ports::messaging::{EventPublisher, PublishError, QueueError, QueueSender};
use recoup_shared::time::Clock;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    receive_count: u32,
    sent_at_ms: i64,
    visible_at: Instant,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Message>,
    dead: Vec<Message>,
    in_flight: usize,
}

/// One queue and its dead-letter list.
pub struct LocalQueue {
    pub name: &'static str,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl LocalQueue {
    pub fn new(name: &'static str, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(LocalQueue { name, state: Mutex::new(State::default()), clock })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, body: String) {
        let m = Message {
            id: uuid::Uuid::new_v4().to_string(),
            body,
            receive_count: 0,
            sent_at_ms: self.clock.now().timestamp_millis(),
            visible_at: Instant::now(),
        };
        self.lock().ready.push_back(m);
    }

    /// Up to `n` visible messages, now in flight.
    fn receive(&self, n: usize) -> Vec<Message> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut out = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(mut m) = st.ready.pop_front() {
            if out.len() < n && m.visible_at <= now {
                m.receive_count += 1;
                out.push(m);
            } else {
                rest.push_back(m);
            }
        }
        st.ready = rest;
        st.in_flight += out.len();
        out
    }

    /// Settles a batch: failed messages come back after a back-off, or go to the
    /// dead-letter list once they have been received `MAX_RECEIVE_COUNT` times.
    fn settle(&self, batch: Vec<Message>, failed: &[String]) {
        let mut st = self.lock();
        st.in_flight -= batch.len();
        for mut m in batch {
            if !failed.contains(&m.id) {
                continue;
            }
            if m.receive_count >= MAX_RECEIVE_COUNT {
                tracing::warn!(queue = self.name, message_id = %m.id, "message moved to the dead-letter queue");
                st.dead.push(m);
            } else {
                m.visible_at = Instant::now() + Duration::from_millis(200 * u64::from(m.receive_count));
                st.ready.push_back(m);
            }
        }
    }

    pub fn depth(&self) -> Value {
        let st = self.lock();
        json!({
            "queue": self.name,
            "ready": st.ready.len(),
            "in_flight": st.in_flight,
            "dead_letters": st.dead.iter().map(|m| json!({"id": m.id, "body": m.body, "receive_count": m.receive_count})).collect::<Vec<_>>(),
        })
    }

    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        st.in_flight == 0 && st.ready.iter().all(|m| m.visible_at > Instant::now())
    }

    /// The batch as Lambda's SQS event source delivers it.
    fn event(&self, batch: &[Message]) -> SqsEvent {
        let records: Vec<Value> = batch
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.id,
                    "receiptHandle": format!("local-{}-{}", m.id, m.receive_count),
                    "body": m.body,
                    "attributes": {
                        "ApproximateReceiveCount": m.receive_count.to_string(),
                        "SentTimestamp": m.sent_at_ms.to_string(),
                        "SenderId": "recoup-local",
                        "ApproximateFirstReceiveTimestamp": m.sent_at_ms.to_string(),
                    },
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:local:000000000000:{}", self.name),
                    "awsRegion": "local",
                })
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap_or_default()
    }
}

#[async_trait]
impl QueueSender for LocalQueue {
    async fn send(&self, bodies: &[String]) -> Result<(), QueueError> {
        for b in bodies {
            self.push(b.clone());
        }
        Ok(())
    }
}

/// The three queues of the system.
pub struct Queues {
    pub charge: Arc<LocalQueue>,
    pub subscription_updates: Arc<LocalQueue>,
    pub notifications: Arc<LocalQueue>,
}

impl Queues {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Queues {
            charge: LocalQueue::new(routing::CHARGE_QUEUE, clock.clone()),
            subscription_updates: LocalQueue::new(routing::SUBSCRIPTION_UPDATES_QUEUE, clock.clone()),
            notifications: LocalQueue::new(routing::NOTIFICATIONS_QUEUE, clock),
        }
    }

    pub fn all(&self) -> [&Arc<LocalQueue>; 3] {
        [&self.charge, &self.subscription_updates, &self.notifications]
    }

    fn by_name(&self, name: &str) -> Option<&Arc<LocalQueue>> {
        self.all().into_iter().find(|q| q.name == name)
    }

    /// Hands one batch of `queue` to its consumer. Returns how many messages it carried.
    pub async fn deliver(&self, app: &App, queue: &LocalQueue) -> usize {
        let batch = queue.receive(10);
        if batch.is_empty() {
            return 0;
        }
        let event = queue.event(&batch);
        let result = match recoup_functions::consumer_of(queue.name) {
            Some((_, handle)) => handle(app, event).await,
            // No function reads this queue: nothing acknowledges the messages, so they
            // reach the dead-letter queue, as they would in AWS.
            None => {
                tracing::error!(queue = queue.name, "no function consumes this queue");
                Err(recoup_shared::error::Error::internal(format!("no consumer for {}", queue.name)))
            }
        };
        let failed: Vec<String> = match result {
            Ok(response) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
            // The whole invocation failed: every record is redelivered.
            Err(_) => batch.iter().map(|m| m.id.clone()).collect(),
        };
        let n = batch.len();
        queue.settle(batch, &failed);
        n
    }
}

/// The event bus: routes each event by type, as the EventBridge rules do, and keeps the
/// most recent ones for the dev console.
pub struct LocalBus {
    queues: Arc<Queues>,
    recent: Mutex<VecDeque<Value>>,
    clock: Arc<dyn Clock>,
}

impl LocalBus {
    pub fn new(queues: Arc<Queues>, clock: Arc<dyn Clock>) -> Self {
        LocalBus { queues, recent: Mutex::new(VecDeque::new()), clock }
    }

    pub fn recent(&self) -> Vec<Value> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }
}

#[async_trait]
impl EventPublisher for LocalBus {
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError> {
        for e in events {
            // The envelope an SQS target of an EventBridge rule receives.
            let envelope = json!({
                "version": "0",
                "id": uuid::Uuid::new_v4().to_string(),
                "detail-type": e.kind(),
                "source": EVENT_SOURCE,
                "account": "000000000000",
                "time": self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "region": "local",
                "resources": [format!("recoup:event:{}", e.id)],
                "detail": e,
            });
            let body = envelope.to_string();
            for name in routing::queues_for(e.kind()) {
                if let Some(q) = self.queues.by_name(name) {
                    q.push(body.clone());
                }
            }
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.push_back(envelope);
            while recent.len() > 500 {
                recent.pop_front();
            }
        }
        Ok(vec![true; events.len()])
    }
}

/// An EventBridge scheduled event, as a schedule rule delivers it.
pub fn scheduled_event(rule: &str, clock: &dyn Clock) -> EventBridgeEvent<Value> {
    serde_json::from_value(json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "local",
        "resources": [format!("arn:aws:events:local:000000000000:rule/{rule}")],
        "detail": {},
    }))
    .expect("a scheduled event deserializes")
}
