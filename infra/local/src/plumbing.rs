//! The local stand-ins for EventBridge and SQS, with the same routing and the same
//! delivery rules: events go to the queues `routing::RULES` names, consumers get SQS
//! batches built like Lambda's, failed records are redelivered with back-off, and a
//! record received `MAX_RECEIVE_COUNT` times without success moves to the queue's
//! dead-letter list.
//!
//! **Durable, like SQS.** SQS keeps a message until its consumer deletes it, so a Lambda
//! that dies mid-batch loses nothing. The local queues keep the same promise across a
//! crash of the whole process: every message is an item of the product's own store,
//! written before `send` (or the bus's `publish`) answers, and deleted only once its
//! consumer succeeded. The store is the truth; each queue mirrors its messages in memory
//! to pick batches without reading the store. On open the mirror is rebuilt from the
//! store, and every message that was in flight when the process died is visible again
//! at once (SQS would wait out the visibility timeout; nothing else is waiting for it
//! locally).
//!
//! **One departure from SQS:** on the charge queue, a message sent while an identical one
//! still waits to be received for the first time is dropped, so sweeps run every second
//! cannot pile copies of the same work onto a busy queue.
//!
//! Each message costs three writes, each one `ItemStore::write` that joins the embedded
//! store's group commit: the send, the receive (its receive count, bumped before the
//! consumer runs, so a message that crashes the process every time still reaches the
//! dead letters), and the settlement (deleted, or moved to the dead letters). A batch's
//! receive and settlement are one write each, whatever its size; a redelivery after a
//! failure needs no write of its own (its count was written when it was received).
//!
//! Keys (see `docs/data-model.md`): `QUEUE#<queue>` / `MSG#<message id>` for a message,
//! `QUEUE#<queue>` / `DEAD#<message id>` for a dead letter. No domain key starts with
//! `QUEUE#`, and the items carry no index keys, so no listing or schedule sees them.
//! Message ids are UUIDv7: a queue reloads in roughly the order it was sent, which is
//! as much ordering as an SQS standard queue promises (none, strictly).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use recoup_lambda::App;
use recoup_lambda::routing::{self, MAX_RECEIVE_COUNT};
use recoup_shared::domain::events::{EVENT_SOURCE, Event};
use recoup_shared::ports::messaging::{EventPublisher, PublishError, QueueError, QueueSender};
use recoup_shared::store::{
    Condition, IndexKeys, Item, ItemStore, Key, MAX_TRANSACTION_ITEMS, Query, SortKeyRange, StoreError, WriteOp,
};
use recoup_shared::time::Clock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The partition of one queue's messages and dead letters.
fn partition(queue: &str) -> String {
    format!("QUEUE#{queue}")
}

const MESSAGE_PREFIX: &str = "MSG#";
const DEAD_PREFIX: &str = "DEAD#";
const MESSAGE_ENTITY: &str = "queue_message";
const DEAD_ENTITY: &str = "dead_letter";

/// How long a batch whose receive or settlement could not be written waits before it is
/// tried again (the store is failing; retrying at once would only spin).
const STORE_BACKOFF: Duration = Duration::from_secs(1);

/// How many items one page of the reload reads.
const RELOAD_PAGE: usize = 1_000;

/// What the store keeps of a message (or a dead letter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    id: String,
    body: String,
    /// How many times it was handed to its consumer.
    receive_count: u32,
    sent_at_ms: i64,
    /// A delayed message (SQS `DelaySeconds`) is hidden until this time of the product's
    /// clock, so the dev clock moving forward brings it out.
    #[serde(default)]
    not_before_ms: i64,
}

#[derive(Debug, Clone)]
struct Message {
    stored: Stored,
    /// The version of its item in the store: every write of it is conditional on it, so
    /// a write never lands on a message someone else settled.
    version: u64,
    visible_at: Instant,
}

/// Where an item of a queue lives: waiting for its consumer, or among the dead letters.
#[derive(Clone, Copy)]
enum Place {
    Queue,
    DeadLetters,
}

impl Message {
    fn new(body: String, sent_at_ms: i64, not_before_ms: i64) -> Self {
        Message {
            stored: Stored { id: uuid::Uuid::now_v7().to_string(), body, receive_count: 0, sent_at_ms, not_before_ms },
            version: 0,
            visible_at: Instant::now(),
        }
    }

    fn id(&self) -> &str {
        &self.stored.id
    }

    /// Sent to be delivered at once, and never received yet: a copy of another such message
    /// would reach its consumer at the same time, for nothing.
    fn is_fresh(&self) -> bool {
        self.stored.receive_count == 0 && self.stored.not_before_ms == 0
    }

    fn key(&self, queue: &str, place: Place) -> Key {
        let prefix = match place {
            Place::Queue => MESSAGE_PREFIX,
            Place::DeadLetters => DEAD_PREFIX,
        };
        Key::new(partition(queue), format!("{prefix}{}", self.stored.id))
    }

    fn item(&self, queue: &str, place: Place, version: u64) -> Item {
        Item {
            key: self.key(queue, place),
            entity: match place {
                Place::Queue => MESSAGE_ENTITY,
                Place::DeadLetters => DEAD_ENTITY,
            }
            .to_owned(),
            version,
            indexes: IndexKeys::default(),
            expires_at: None,
            body: serde_json::to_value(&self.stored).unwrap_or_default().into(),
        }
    }

    fn from_item(item: Item) -> Result<Self, StoreError> {
        let stored: Stored = serde_json::from_value(item.body.into_json()?)
            .map_err(|e| StoreError::Corrupt(format!("queue item at {:?}: {e}", item.key)))?;
        Ok(Message { stored, version: item.version, visible_at: Instant::now() })
    }

    /// The write that creates it in its queue.
    fn put_new(&self, queue: &str) -> WriteOp {
        WriteOp::Put { item: self.item(queue, Place::Queue, 1), condition: Condition::NotExists }
    }

    /// The writes that move it from its queue to the dead letters.
    fn move_to_dead_letters(&self, queue: &str, ops: &mut Vec<WriteOp>) {
        ops.push(WriteOp::Delete { key: self.key(queue, Place::Queue), condition: Condition::Version(self.version) });
        ops.push(WriteOp::Put { item: self.item(queue, Place::DeadLetters, 1), condition: Condition::NotExists });
    }
}

#[derive(Default)]
struct State {
    ready: VecDeque<Message>,
    /// For the charge queue only (the one the sweeps feed): how many fresh messages (see
    /// [`Message::is_fresh`]) of each body are in `ready` or being sent. A fresh message
    /// whose body is already here is not sent again (see [`enqueue`]). The other queues
    /// take the bus's envelopes, each with an id of its own: nothing there could match.
    fresh: Option<HashMap<String, usize>>,
    dead: Vec<Message>,
    in_flight: usize,
}

impl State {
    fn new(ready: Vec<Message>, dead: Vec<Message>, deduplicates: bool) -> Self {
        let fresh = deduplicates.then(HashMap::new);
        let mut state = State { ready: VecDeque::with_capacity(ready.len()), fresh, dead, in_flight: 0 };
        for m in ready {
            state.make_ready(m);
        }
        state
    }

    /// Whether a message about to be sent is new here; if so, it counts from now on.
    fn admit(&mut self, m: &Message) -> bool {
        match &mut self.fresh {
            Some(fresh) if m.is_fresh() => {
                if fresh.contains_key(&m.stored.body) {
                    return false;
                }
                fresh.insert(m.stored.body.clone(), 1);
                true
            }
            Some(_) | None => true,
        }
    }

    /// Puts a message (back) among those waiting for a consumer.
    fn make_ready(&mut self, m: Message) {
        if let Some(fresh) = &mut self.fresh
            && m.is_fresh()
        {
            *fresh.entry(m.stored.body.clone()).or_default() += 1;
        }
        self.ready.push_back(m);
    }

    /// Takes a message off the count of fresh ones: it was received, or never sent.
    fn forget(&mut self, m: &Message) {
        if let Some(fresh) = &mut self.fresh
            && m.is_fresh()
            && let Some(n) = fresh.get_mut(&m.stored.body)
        {
            *n -= 1;
            if *n == 0 {
                fresh.remove(&m.stored.body);
            }
        }
    }
}

/// One queue and its dead-letter list.
pub struct LocalQueue {
    pub name: &'static str,
    store: Arc<dyn ItemStore>,
    /// Shared with the tasks that send to the queue (see [`enqueue`]).
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

/// What one receive took from a queue.
struct Received {
    /// For the consumer.
    batch: Vec<Message>,
    /// Received `MAX_RECEIVE_COUNT` times already and never settled (the process died
    /// with them in flight): moved to the dead letters instead of being delivered again.
    dead_lettered: usize,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every item of one kind (`MSG#` or `DEAD#`) in a queue's partition, oldest first.
async fn load(store: &dyn ItemStore, queue: &str, prefix: &str) -> Result<Vec<Message>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let query =
            Query::table(partition(queue), SortKeyRange::BeginsWith(prefix.to_owned())).limit(RELOAD_PAGE).after(after);
        let page = store.query(&query).await?;
        for item in page.items {
            out.push(Message::from_item(item)?);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Writes each group of operations as one transaction, all at once, so they share the
/// embedded store's group commit rather than taking one commit each.
async fn write_all(store: &Arc<dyn ItemStore>, writes: Vec<Vec<WriteOp>>) -> Vec<Result<(), StoreError>> {
    if writes.len() == 1 {
        return vec![store.write(writes.into_iter().next().unwrap_or_default()).await];
    }
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|ops| {
            let store = store.clone();
            tokio::spawn(async move { store.write(ops).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or_else(|e| Err(StoreError::Unavailable(format!("queue write: {e}")))));
    }
    out
}

/// A message on its way to a queue: the queue's name, its state in memory, the message.
type Outgoing = (&'static str, Arc<Mutex<State>>, Message);

/// Sends messages to queues: each group is one write, and its messages become visible to
/// consumers only once that write is durable. Answers, per group, whether it was sent.
///
/// On the charge queue, a fresh message whose body is the same as another fresh one there
/// is not sent again: its consumer would get the same body twice, at the same time. SQS
/// has no such rule, but the local schedules run every second, and a retry sweep that
/// finds the invoices its last run enqueued (and a busy worker has not reached yet) must
/// not grow the charge queue by its whole due set each second. Delayed messages and
/// redeliveries are never matched.
///
/// It runs as a task of its own: a caller that gives up (an HTTP request whose client went
/// away) must not leave a message in the store that its queue in memory never learns of.
async fn enqueue(store: &Arc<dyn ItemStore>, groups: Vec<Vec<Outgoing>>) -> Vec<Result<(), StoreError>> {
    let n = groups.len();
    let store = store.clone();
    let task = tokio::spawn(async move {
        let groups: Vec<Vec<Outgoing>> = groups
            .into_iter()
            .map(|group| group.into_iter().filter(|(_, state, m)| lock(state).admit(m)).collect())
            .collect();
        let writes: Vec<(usize, Vec<WriteOp>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(i, g)| (i, g.iter().map(|(queue, _, m)| m.put_new(queue)).collect()))
            .collect();
        let (written, writes): (Vec<usize>, Vec<Vec<WriteOp>>) = writes.into_iter().unzip();
        let mut results: Vec<Result<(), StoreError>> = (0..groups.len()).map(|_| Ok(())).collect();
        for (i, result) in written.into_iter().zip(write_all(&store, writes).await) {
            results[i] = result;
        }
        for (group, result) in groups.into_iter().zip(&results) {
            for (_, state, mut m) in group {
                let mut st = lock(&state);
                if result.is_ok() {
                    m.version = 1;
                    st.ready.push_back(m);
                } else {
                    st.forget(&m);
                }
            }
        }
        results
    });
    task.await.unwrap_or_else(|e| vec![Err(StoreError::Unavailable(format!("queue send: {e}"))); n])
}

impl LocalQueue {
    /// Opens the queue over `store`, with what it held when the process last stopped:
    /// its messages (those that were in flight visible again) and its dead letters.
    pub async fn open(
        name: &'static str,
        store: Arc<dyn ItemStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let ready = load(store.as_ref(), name, MESSAGE_PREFIX).await?;
        let dead = load(store.as_ref(), name, DEAD_PREFIX).await?;
        if !ready.is_empty() {
            tracing::info!(queue = name, messages = ready.len(), "messages left from before the restart");
        }
        let state = State::new(ready, dead, name == routing::CHARGE_QUEUE);
        Ok(Arc::new(LocalQueue { name, store, state: Arc::new(Mutex::new(state)), clock }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends messages; answers once they are durable.
    pub async fn push(&self, bodies: &[String]) -> Result<(), StoreError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let now_ms = self.clock.now().timestamp_millis();
        let groups = bodies
            .chunks(MAX_TRANSACTION_ITEMS)
            .map(|chunk| {
                chunk.iter().map(|b| (self.name, self.state.clone(), Message::new(b.clone(), now_ms, 0))).collect()
            })
            .collect();
        enqueue(&self.store, groups).await.into_iter().collect()
    }

    /// Sends one message hidden until `delay` has passed on the product's clock.
    pub async fn push_delayed(&self, body: &str, delay: Duration) -> Result<(), StoreError> {
        let now_ms = self.clock.now().timestamp_millis();
        let not_before = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let message = Message::new(body.to_owned(), now_ms, not_before);
        enqueue(&self.store, vec![vec![(self.name, self.state.clone(), message)]]).await.into_iter().collect()
    }

    /// Up to `n` visible messages, now in flight, their receive counts written before they
    /// are handed out. A message already received `MAX_RECEIVE_COUNT` times goes to the
    /// dead letters instead: its consumer never settled it (the process died each time).
    async fn receive(&self, n: usize) -> Received {
        let picked: Vec<Message> = {
            let now = Instant::now();
            let clock_ms = self.clock.now().timestamp_millis();
            let mut st = self.lock();
            let mut picked = Vec::with_capacity(n);
            // Hidden messages passed over keep their places; the scan stops once the batch
            // is full, so a long queue costs a receive no more than its batch.
            let mut passed = Vec::new();
            while picked.len() < n
                && let Some(m) = st.ready.pop_front()
            {
                if m.visible_at <= now && m.stored.not_before_ms <= clock_ms {
                    st.forget(&m);
                    picked.push(m);
                } else {
                    passed.push(m);
                }
            }
            for m in passed.into_iter().rev() {
                st.ready.push_front(m);
            }
            st.in_flight += picked.len();
            picked
        };
        if picked.is_empty() {
            return Received { batch: Vec::new(), dead_lettered: 0 };
        }
        let mut ops = Vec::with_capacity(picked.len() + 1);
        // Which picked message each operation is about, to name it when a condition fails.
        let mut about = Vec::with_capacity(picked.len() + 1);
        for (i, m) in picked.iter().enumerate() {
            if m.stored.receive_count >= MAX_RECEIVE_COUNT {
                m.move_to_dead_letters(self.name, &mut ops);
                about.extend([i, i]);
            } else {
                let mut next = m.clone();
                next.stored.receive_count += 1;
                ops.push(WriteOp::Put {
                    item: next.item(self.name, Place::Queue, m.version + 1),
                    condition: Condition::Version(m.version),
                });
                about.push(i);
            }
        }
        match self.store.write(ops).await {
            Ok(()) => {
                let mut batch = Vec::with_capacity(picked.len());
                let mut st = self.lock();
                let mut dead_lettered = 0;
                for mut m in picked {
                    if m.stored.receive_count >= MAX_RECEIVE_COUNT {
                        tracing::warn!(queue = self.name, message_id = %m.id(), receive_count = m.stored.receive_count, "message never settled; moved to the dead-letter queue");
                        m.version = 1;
                        st.in_flight -= 1;
                        st.dead.push(m);
                        dead_lettered += 1;
                    } else {
                        m.stored.receive_count += 1;
                        m.version += 1;
                        batch.push(m);
                    }
                }
                Received { batch, dead_lettered }
            }
            Err(e) => {
                self.give_back(picked, &e, &about);
                Received { batch: Vec::new(), dead_lettered: 0 }
            }
        }
    }

    /// After a write about `messages` failed: they are visible again after a pause, as
    /// they were before it, except one whose stored version moved under it (it was
    /// settled by a write whose answer was lost), which is dropped from memory; the
    /// store holds whatever is true of it.
    fn give_back(&self, messages: Vec<Message>, error: &StoreError, about: &[usize]) {
        let stale = match error {
            StoreError::ConditionFailed { op } => about.get(*op).copied(),
            _ => None,
        };
        tracing::error!(queue = self.name, error = %error, "a queue write failed; the batch is retried");
        let mut st = self.lock();
        st.in_flight -= messages.len();
        for (i, mut m) in messages.into_iter().enumerate() {
            if Some(i) == stale {
                tracing::error!(queue = self.name, message_id = %m.id(), "message changed in the store behind its queue; dropped");
                continue;
            }
            m.visible_at = Instant::now() + STORE_BACKOFF;
            st.make_ready(m);
        }
    }

    /// Settles a batch: messages that succeeded are deleted; failed ones come back after a
    /// back-off, or go to the dead letters once they have been received
    /// `MAX_RECEIVE_COUNT` times. Deletions and moves are one write.
    async fn settle(&self, batch: Vec<Message>, failed: &HashSet<String>) {
        let mut ops = Vec::new();
        let mut about = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            if !failed.contains(m.id()) {
                ops.push(WriteOp::Delete {
                    key: m.key(self.name, Place::Queue),
                    condition: Condition::Version(m.version),
                });
                about.push(i);
            } else if m.stored.receive_count >= MAX_RECEIVE_COUNT {
                m.move_to_dead_letters(self.name, &mut ops);
                about.extend([i, i]);
            }
        }
        if !ops.is_empty()
            && let Err(e) = self.store.write(ops).await
        {
            // Nothing was settled: the whole batch is delivered again, at least once.
            self.give_back(batch, &e, &about);
            return;
        }
        let mut st = self.lock();
        st.in_flight -= batch.len();
        for mut m in batch {
            if !failed.contains(m.id()) {
                continue;
            }
            if m.stored.receive_count >= MAX_RECEIVE_COUNT {
                tracing::warn!(queue = self.name, message_id = %m.id(), "message moved to the dead-letter queue");
                m.version = 1;
                st.dead.push(m);
            } else {
                m.visible_at = Instant::now() + Duration::from_millis(200 * u64::from(m.stored.receive_count));
                st.make_ready(m);
            }
        }
    }

    pub fn depth(&self) -> Value {
        let st = self.lock();
        json!({
            "queue": self.name,
            "ready": st.ready.len(),
            "in_flight": st.in_flight,
            "dead_letters": st.dead.iter().map(|m| json!({"id": m.id(), "body": m.stored.body, "receive_count": m.stored.receive_count})).collect::<Vec<_>>(),
        })
    }

    pub fn is_idle(&self) -> bool {
        let st = self.lock();
        let clock_ms = self.clock.now().timestamp_millis();
        st.in_flight == 0 && st.ready.iter().all(|m| m.visible_at > Instant::now() || m.stored.not_before_ms > clock_ms)
    }

    /// The batch as Lambda's SQS event source delivers it.
    fn event(&self, batch: &[Message]) -> SqsEvent {
        let records: Vec<Value> = batch
            .iter()
            .map(|m| {
                let s = &m.stored;
                json!({
                    "messageId": s.id,
                    "receiptHandle": format!("local-{}-{}", s.id, s.receive_count),
                    "body": s.body,
                    "attributes": {
                        "ApproximateReceiveCount": s.receive_count.to_string(),
                        "SentTimestamp": s.sent_at_ms.to_string(),
                        "SenderId": "recoup-local",
                        "ApproximateFirstReceiveTimestamp": s.sent_at_ms.to_string(),
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

    /// Receives one batch, hands it to the queue's consumer and settles it. Returns how
    /// many messages it took from the queue.
    async fn deliver_one(&self, app: App) -> usize {
        let Received { batch, dead_lettered } = self.receive(10).await;
        if batch.is_empty() {
            return dead_lettered;
        }
        let event = self.event(&batch);
        let name = self.name;
        // The consumer runs as a task of its own so that a panic in it fails this one
        // invocation (every record redelivered, as when a Lambda crashes) instead of
        // leaving the batch in flight forever.
        let invocation = tokio::spawn(async move {
            match recoup_functions::consumer_of(name) {
                Some((_, handle)) => handle(&app, event).await,
                // No function reads this queue: nothing acknowledges the messages, so they
                // reach the dead-letter queue, as they would in AWS.
                None => {
                    tracing::error!(queue = name, "no function consumes this queue");
                    Err(recoup_shared::error::Error::internal(format!("no consumer for {name}")))
                }
            }
        });
        let failed: HashSet<String> = match invocation.await {
            Ok(Ok(response)) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
            // The whole invocation failed: every record is redelivered.
            Ok(Err(_)) | Err(_) => batch.iter().map(|m| m.stored.id.clone()).collect(),
        };
        let n = batch.len();
        self.settle(batch, &failed).await;
        n + dead_lettered
    }
}

#[async_trait]
impl QueueSender for LocalQueue {
    async fn send(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.push(bodies).await.map_err(|e| QueueError(e.to_string()))
    }

    async fn send_delayed(&self, body: &str, delay: Duration) -> Result<(), QueueError> {
        self.push_delayed(body, delay).await.map_err(|e| QueueError(e.to_string()))
    }
}

/// The queues of the system.
pub struct Queues {
    pub charge: Arc<LocalQueue>,
    pub subscription_updates: Arc<LocalQueue>,
    pub notifications: Arc<LocalQueue>,
    pub webhooks: Arc<LocalQueue>,
    store: Arc<dyn ItemStore>,
}

impl Queues {
    /// Opens the queues kept in `store` (the product's own).
    pub async fn open(store: Arc<dyn ItemStore>, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Ok(Queues {
            charge: LocalQueue::open(routing::CHARGE_QUEUE, store.clone(), clock.clone()).await?,
            subscription_updates: LocalQueue::open(routing::SUBSCRIPTION_UPDATES_QUEUE, store.clone(), clock.clone())
                .await?,
            notifications: LocalQueue::open(routing::NOTIFICATIONS_QUEUE, store.clone(), clock.clone()).await?,
            webhooks: LocalQueue::open(routing::WEBHOOKS_QUEUE, store.clone(), clock).await?,
            store,
        })
    }

    pub fn all(&self) -> [&Arc<LocalQueue>; 4] {
        [&self.charge, &self.subscription_updates, &self.notifications, &self.webhooks]
    }

    fn by_name(&self, name: &str) -> Option<&Arc<LocalQueue>> {
        self.all().into_iter().find(|q| q.name == name)
    }

    /// Hands one batch of `queue` to its consumer. Returns how many messages it took.
    ///
    /// The batch runs to its end as a task of its own, whatever happens to the caller (a
    /// `/v1/dev/tick` whose client hung up): a batch abandoned between its receive and its
    /// settlement would stay in flight until the next restart.
    pub async fn deliver(&self, app: &App, queue: &Arc<LocalQueue>) -> usize {
        let (queue, app) = (queue.clone(), app.clone());
        tokio::spawn(async move { queue.deliver_one(app).await }).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a queue delivery failed");
            0
        })
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

    /// The envelope an SQS target of an EventBridge rule receives.
    fn envelope(&self, e: &Event) -> Value {
        json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": e.kind(),
            "source": EVENT_SOURCE,
            "account": "000000000000",
            "time": self.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "region": "local",
            "resources": [format!("recoup:event:{}", e.id)],
            "detail": e,
        })
    }
}

#[async_trait]
impl EventPublisher for LocalBus {
    /// Accepts an event once it is durable in every queue its rules name, as EventBridge
    /// accepts one it will deliver. Every event's messages are written in one transaction
    /// (none or all of its queues get it), events are packed into as few transactions as
    /// fit, and the transactions go out together; an event whose write failed is reported
    /// not accepted, and the outbox relay sends it again.
    async fn publish(&self, events: &[Event]) -> Result<Vec<bool>, PublishError> {
        let now_ms = self.clock.now().timestamp_millis();
        let mut groups: Vec<Vec<Outgoing>> = Vec::new();
        // Per event, the group holding its messages (`None`: no rule routes it anywhere).
        let mut group_of = Vec::with_capacity(events.len());
        let mut envelopes = Vec::with_capacity(events.len());
        for e in events {
            let envelope = self.envelope(e);
            let body = envelope.to_string();
            envelopes.push(envelope);
            let messages: Vec<_> = routing::queues_for(e.kind())
                .into_iter()
                .filter_map(|name| self.queues.by_name(name))
                .map(|q| (q.name, q.state.clone(), Message::new(body.clone(), now_ms, 0)))
                .collect();
            if messages.is_empty() {
                group_of.push(None);
                continue;
            }
            let fits = groups.last().is_some_and(|g| g.len() + messages.len() <= MAX_TRANSACTION_ITEMS);
            if !fits {
                groups.push(Vec::new());
            }
            group_of.push(Some(groups.len() - 1));
            if let Some(g) = groups.last_mut() {
                g.extend(messages);
            }
        }
        let results = if groups.is_empty() { Vec::new() } else { enqueue(&self.queues.store, groups).await };
        let accepted: Vec<bool> = group_of.iter().map(|g| g.is_none_or(|g| results[g].is_ok())).collect();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, "the local bus could not queue some events; the outbox relay sends them again");
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for (envelope, ok) in envelopes.into_iter().zip(&accepted) {
            if *ok {
                recent.push_back(envelope);
            }
        }
        while recent.len() > 500 {
            recent.pop_front();
        }
        Ok(accepted)
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use recoup_shared::store::embedded::EmbeddedStore;
    use recoup_shared::time::SystemClock;

    use super::*;

    /// A store file of its own, removed when the test ends.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            Dir(std::env::temp_dir().join(format!("recoup-queue-{}", uuid::Uuid::new_v4())))
        }

        /// The queue over the store in this directory, as a freshly started process sees it.
        async fn open(&self) -> Arc<LocalQueue> {
            self.open_queue(routing::NOTIFICATIONS_QUEUE).await
        }

        async fn open_queue(&self, name: &'static str) -> Arc<LocalQueue> {
            let store = EmbeddedStore::open(self.0.join("recoup.redb")).expect("the store opens");
            LocalQueue::open(name, Arc::new(store), Arc::new(SystemClock)).await.expect("the queue loads")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A process that dies: the queue and its store handle are dropped with messages still
    /// in flight (the store is closed, so the same file can be opened again).
    fn crash(queue: Arc<LocalQueue>) {
        drop(queue);
    }

    fn ids(batch: &[Message]) -> Vec<&str> {
        batch.iter().map(Message::id).collect()
    }

    /// Skips the back-off of failed messages, so a test need not sleep through it.
    fn make_visible(queue: &LocalQueue) {
        for m in &mut queue.lock().ready {
            m.visible_at = Instant::now();
        }
    }

    #[tokio::test]
    async fn a_message_received_but_not_settled_is_delivered_again_after_a_restart() {
        let dir = Dir::new();
        let q = dir.open().await;
        q.push(&["one".to_owned(), "two".to_owned()]).await.unwrap();
        let first = q.receive(10).await.batch;
        assert_eq!(first.len(), 2);
        assert_eq!(q.depth()["in_flight"], 2);
        assert!(q.receive(10).await.batch.is_empty(), "in-flight messages are not handed out twice");
        crash(q);

        let q = dir.open().await;
        assert_eq!(q.depth()["ready"], 2);
        let again = q.receive(10).await.batch;
        assert_eq!(ids(&again), ids(&first), "the same messages, in the order they were sent");
        assert_eq!(again.iter().map(|m| m.stored.receive_count).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(again.iter().map(|m| m.stored.body.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    }

    #[tokio::test]
    async fn on_the_charge_queue_a_message_the_same_as_one_waiting_to_be_received_is_not_queued_twice() {
        let dir = Dir::new();
        let q = dir.open_queue(routing::CHARGE_QUEUE).await;
        q.push(&["due in_1".to_owned(), "due in_2".to_owned(), "due in_1".to_owned()]).await.unwrap();
        q.push(&["due in_2".to_owned()]).await.unwrap();
        assert_eq!(q.depth()["ready"], 2, "one message per body while it waits");
        crash(q);

        let q = dir.open_queue(routing::CHARGE_QUEUE).await;
        assert_eq!(q.depth()["ready"], 2, "nothing more was written");
        q.push(&["due in_1".to_owned()]).await.unwrap();
        assert_eq!(q.depth()["ready"], 2, "the reloaded messages count as waiting");
        let batch = q.receive(1).await.batch;
        assert_eq!(batch.iter().map(|m| m.stored.body.as_str()).collect::<Vec<_>>(), ["due in_1"]);
        q.push(&["due in_1".to_owned()]).await.unwrap();
        assert_eq!(q.depth()["ready"], 2, "once received, the same body is a new message");
        q.push_delayed("due in_2", Duration::from_secs(3_600)).await.unwrap();
        assert_eq!(q.depth()["ready"], 3, "a delayed message is never matched");
        // The received one fails: both copies are delivered, then neither is matched.
        let failed = HashSet::from([batch[0].stored.id.clone()]);
        q.settle(batch, &failed).await;
        make_visible(&q);
        let rest = q.receive(10).await.batch;
        let mut bodies: Vec<&str> = rest.iter().map(|m| m.stored.body.as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["due in_1", "due in_1", "due in_2"]);
        let failed: HashSet<String> = rest.iter().map(|m| m.stored.id.clone()).collect();
        q.settle(rest, &failed).await;
        q.push(&["due in_1".to_owned(), "due in_2".to_owned()]).await.unwrap();
        assert_eq!(q.depth()["ready"], 6, "a redelivery is never matched");

        let other = Dir::new();
        let q = other.open().await;
        q.push(&["same".to_owned(), "same".to_owned()]).await.unwrap();
        assert_eq!(q.depth()["ready"], 2, "only the charge queue drops copies");
    }

    #[tokio::test]
    async fn a_receive_passes_over_hidden_messages_and_leaves_them_in_their_places() {
        let dir = Dir::new();
        let q = dir.open().await;
        q.push_delayed("later", Duration::from_secs(3_600)).await.unwrap();
        q.push(&["a".to_owned(), "b".to_owned(), "c".to_owned()]).await.unwrap();
        let first = q.receive(2).await.batch;
        assert_eq!(first.iter().map(|m| m.stored.body.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let second = q.receive(2).await.batch;
        assert_eq!(second.iter().map(|m| m.stored.body.as_str()).collect::<Vec<_>>(), ["c"]);
        let bodies: Vec<String> = q.lock().ready.iter().map(|m| m.stored.body.clone()).collect();
        assert_eq!(bodies, ["later"]);
        q.settle(first, &HashSet::new()).await;
        q.settle(second, &HashSet::new()).await;
        assert!(q.is_idle(), "a delayed message is not work yet");
    }

    #[tokio::test]
    async fn a_settled_message_is_gone_for_good_and_a_failed_one_of_the_same_batch_is_not() {
        let dir = Dir::new();
        let q = dir.open().await;
        q.push(&["ok".to_owned(), "fails".to_owned()]).await.unwrap();
        let batch = q.receive(10).await.batch;
        let failed: HashSet<String> =
            batch.iter().filter(|m| m.stored.body == "fails").map(|m| m.stored.id.clone()).collect();
        q.settle(batch, &failed).await;
        assert_eq!(q.depth()["in_flight"], 0);
        assert_eq!(q.depth()["ready"], 1);
        assert!(q.is_idle(), "the failed message waits out its back-off");
        crash(q);

        let q = dir.open().await;
        let batch = q.receive(10).await.batch;
        assert_eq!(batch.iter().map(|m| m.stored.body.as_str()).collect::<Vec<_>>(), ["fails"]);
        assert_eq!(batch[0].stored.receive_count, 2);
        q.settle(batch, &HashSet::new()).await;
        assert!(q.is_idle());
        crash(q);

        let q = dir.open().await;
        assert_eq!(q.depth()["ready"], 0);
        assert!(q.receive(10).await.batch.is_empty());
    }

    #[tokio::test]
    async fn a_message_that_keeps_failing_reaches_the_dead_letters_after_the_maximum_receives_and_stays_there() {
        let dir = Dir::new();
        let q = dir.open().await;
        q.push(&["poison".to_owned()]).await.unwrap();
        for n in 1..=MAX_RECEIVE_COUNT {
            make_visible(&q);
            let batch = q.receive(10).await.batch;
            assert_eq!(batch.len(), 1, "receive {n}");
            assert_eq!(batch[0].stored.receive_count, n);
            let failed = HashSet::from([batch[0].stored.id.clone()]);
            q.settle(batch, &failed).await;
        }
        let depth = q.depth();
        assert_eq!((depth["ready"].clone(), depth["in_flight"].clone()), (json!(0), json!(0)));
        assert_eq!(depth["dead_letters"][0]["body"], "poison");
        assert_eq!(depth["dead_letters"][0]["receive_count"], MAX_RECEIVE_COUNT);
        crash(q);

        let q = dir.open().await;
        let depth = q.depth();
        assert_eq!(depth["ready"], 0, "a dead letter is not delivered again");
        assert_eq!(depth["dead_letters"].as_array().map(Vec::len), Some(1));
        assert_eq!(depth["dead_letters"][0]["receive_count"], MAX_RECEIVE_COUNT);
        assert!(q.is_idle());
    }

    #[tokio::test]
    async fn a_message_whose_consumer_dies_every_time_reaches_the_dead_letters_instead_of_looping() {
        let dir = Dir::new();
        let q = dir.open().await;
        q.push(&["crashes the process".to_owned()]).await.unwrap();
        crash(q);
        for n in 1..=MAX_RECEIVE_COUNT {
            let q = dir.open().await;
            let batch = q.receive(10).await.batch;
            assert_eq!(batch.len(), 1, "receive {n}");
            assert_eq!(batch[0].stored.receive_count, n, "the count survives each crash");
            crash(q);
        }
        let q = dir.open().await;
        let taken = q.receive(10).await;
        assert!(taken.batch.is_empty(), "not handed out a sixth time");
        assert_eq!(taken.dead_lettered, 1);
        assert_eq!(q.depth()["in_flight"], 0);
        crash(q);

        let q = dir.open().await;
        assert_eq!(q.depth()["ready"], 0);
        assert_eq!(q.depth()["dead_letters"][0]["body"], "crashes the process");
    }

    #[tokio::test]
    async fn the_bus_accepts_an_event_once_every_queue_its_rules_name_holds_it_durably() {
        use recoup_shared::domain::events::EventPayload;
        use recoup_shared::domain::money::{Currency, Money};
        let dir = Dir::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store: Arc<dyn ItemStore> = Arc::new(EmbeddedStore::open(dir.0.join("recoup.redb")).unwrap());
        let queues = Arc::new(Queues::open(store, clock.clone()).await.unwrap());
        let bus = LocalBus::new(queues.clone(), clock.clone());
        let errored = EventPayload::InvoiceErrored {
            invoice_id: recoup_shared::ids::InvoiceId::generate(),
            customer_id: recoup_shared::ids::CustomerId::generate(),
            subscription_id: None,
            amount: Money::new(1_000, Currency::parse("USD").unwrap()).unwrap(),
            attempt_count: 4,
            error_type: None,
        };
        let errored = Event::new(errored, clock.now());
        assert_eq!(bus.publish(std::slice::from_ref(&errored)).await.unwrap(), [true]);
        drop((bus, queues));

        let store: Arc<dyn ItemStore> = Arc::new(EmbeddedStore::open(dir.0.join("recoup.redb")).unwrap());
        let queues = Queues::open(store, clock).await.unwrap();
        for q in [&queues.notifications, &queues.subscription_updates] {
            let batch = q.receive(10).await.batch;
            assert_eq!(batch.len(), 1, "{}", q.name);
            let envelope: Value = serde_json::from_str(&batch[0].stored.body).unwrap();
            assert_eq!(envelope["detail-type"], "invoice.errored");
            assert_eq!(envelope["detail"]["id"], errored.id.to_string());
        }
        assert_eq!(queues.charge.depth()["ready"], 0);
    }
}
