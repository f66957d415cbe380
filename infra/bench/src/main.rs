//! `recoup-bench` prints Recoup's figures as Markdown. Nothing here asserts: the numbers
//! are for reading (and for the README), measured on whatever machine runs them.
//!
//! Sections: `store` (store work per card registration and per charge attempt, on the
//! embedded store and on DynamoDB via the emulator), `month` (a simulated 30-day dunning
//! month), `sweep` (one retry sweep with 1,000 due among 100,000 invoices), `binaries`
//! (release binary and zip size per function) and `startup` (process start to ready,
//! beside a hello-world Lambda function).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use recoup_sandbox::SandboxGateway;
use recoup_shared::domain::invoice::{AttemptTrigger, CollectionMethod, NewInvoice};
use recoup_shared::domain::money::{Currency, Money};
use recoup_shared::domain::policy::DunningPolicy;
use recoup_shared::domain::{Invoice, InvoiceStatus};
use recoup_shared::ids::CustomerId;
use recoup_shared::mail::StoreMailer;
use recoup_shared::services::Services;
use recoup_shared::services::charging::{CardChoice, ChargeHint};
use recoup_shared::services::invoices::IssueInvoice;
use recoup_shared::store::ItemStore;
use recoup_shared::store::dynamodb::{ConsumedCapacityTotals, DynamoStore};
use recoup_shared::store::memory::MemoryStore;
use recoup_shared::store::metered::{Metered, MetricsSnapshot, StoreMetrics};
use recoup_shared::store::repo::{Repo, Tx, Versioned};
use recoup_shared::testkit::embedded_store;
use recoup_shared::time::{Clock, ManualClock};
use recoup_tests::runtime_api::{FunctionProcess, RuntimeApi};

// The simulation allocates and frees millions of small JSON trees; glibc's allocator spends
// a third of the run on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc hands freed memory back to the kernel after a delay (10 ms), and the next
// allocation there faults in a fresh page the kernel must zero. The bench's working set only
// grows, so that round trip is pure cost: at 200,000 invoices it was 25,000 page faults of
// 27,000 and about 8% of the CPU time. -1 keeps freed memory in the process; peak memory is
// unchanged (measured). `mi_option_purge_delay` is option 15 of mimalloc v2's and v3's
// option enum; libmimalloc-sys names no constant for it.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn usd(n: i64) -> Money {
    Money::new(n, Currency::parse("USD").unwrap()).unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn moto() -> Option<String> {
    std::env::var("RECOUP_TEST_AWS_ENDPOINT").ok().filter(|s| !s.is_empty())
}

/// ministack's endpoint (`infra/scripts/with-ministack.sh`): unlike moto, it reports the
/// capacity that transactions consume.
fn ministack() -> Option<String> {
    std::env::var("RECOUP_BENCH_MINISTACK_ENDPOINT").ok().filter(|s| !s.is_empty())
}

/// The DynamoDB backends measured: moto, and ministack when it runs.
const DYNAMODB_MOTO: &str = "dynamodb (moto)";
const DYNAMODB_MINISTACK: &str = "dynamodb (ministack)";

/// Recoup's services over a metered store. The sandbox PSP keeps its own records in a
/// separate, unmetered store, so the figures are Recoup's own store work (what remains
/// with a real PSP).
struct Bench {
    services: Services,
    clock: Arc<ManualClock>,
    metrics: Arc<StoreMetrics>,
    consumed: Option<Arc<ConsumedCapacityTotals>>,
    /// The in-memory backend, for its footprint.
    memory: Option<Arc<MemoryStore>>,
    published: Arc<CountingPublisher>,
}

/// The event bus of the simulation: takes every event and counts them by type (a real bus
/// keeps nothing in this process either).
#[derive(Default)]
struct CountingPublisher {
    counts: std::sync::Mutex<BTreeMap<&'static str, usize>>,
}

#[async_trait::async_trait]
impl recoup_shared::ports::messaging::EventPublisher for CountingPublisher {
    async fn publish(
        &self,
        events: &[recoup_shared::domain::events::Event],
    ) -> Result<Vec<bool>, recoup_shared::ports::messaging::PublishError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            *counts.entry(e.kind()).or_default() += 1;
        }
        Ok(vec![true; events.len()])
    }
}

async fn bench_on(backend: &str) -> Option<Bench> {
    let mut memory = None;
    let (inner, consumed): (Arc<dyn ItemStore>, _) = match backend {
        "embedded" => (embedded_store(), None),
        "memory" => {
            let m = Arc::new(MemoryStore::new());
            memory = Some(m.clone());
            (m, None)
        }
        _ => {
            let table = format!("bench-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
            let store: DynamoStore = if backend == DYNAMODB_MINISTACK {
                let config = recoup_shared::aws::sdk_config_for_endpoint(&ministack()?).await;
                let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
                store.ensure_table().await.expect("create the table on ministack");
                store
            } else {
                moto()?;
                recoup_shared::testkit::dynamo_store(&table).await
            };
            let consumed = store.consumed();
            (Arc::new(store), Some(consumed))
        }
    };
    let metered = Metered::new(inner.clone());
    let metrics = metered.metrics();
    // The simulation on the in-memory store runs unmetered: metering sizes every item.
    let repo = Repo::new(if memory.is_some() { inner } else { Arc::new(metered) });
    let published = Arc::new(CountingPublisher::default());
    let clock = Arc::new(ManualClock::at_default_start());
    let psp_repo = Repo::new(if backend == "memory" { Arc::new(MemoryStore::new()) } else { embedded_store() });
    let services = Services {
        repo: repo.clone(),
        gateway: Arc::new(SandboxGateway::new(psp_repo, clock.clone() as Arc<dyn Clock>)),
        clock: clock.clone(),
        publisher: published.clone(),
        mailer: Arc::new(StoreMailer::new(repo)),
        policy: DunningPolicy::default(),
        portal_url: "https://billing.example.com/portal".into(),
        merchant_email: None,
        portal_links: None,
        card_turns: Default::default(),
        publishing: Default::default(),
    };
    Some(Bench { services, clock, metrics, consumed, memory, published })
}

struct Measured {
    metrics: MetricsSnapshot,
    reported: Option<(f64, f64)>,
}

impl Bench {
    async fn measure<F, Fut>(&self, f: F) -> Measured
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let before = self.metrics.snapshot();
        let rep_before = self.consumed.as_ref().map(|c| (c.read_units(), c.write_units()));
        f().await;
        let metrics = self.metrics.snapshot().since(&before);
        let reported =
            self.consumed.as_ref().zip(rep_before).map(|(c, (r, w))| (c.read_units() - r, c.write_units() - w));
        Measured { metrics, reported }
    }

    async fn customer(&self, card: Option<&str>) -> CustomerId {
        let c = self.services.create_customer("bench@example.com", None).await.unwrap().id;
        if let Some(token) = card {
            self.services.register_payment_method(&c, token, true).await.unwrap();
        }
        c
    }
}

fn row(op: &str, backend: &str, m: &Measured) -> String {
    let x = &m.metrics;
    let reported = m.reported.map_or("—".to_owned(), |(r, w)| format!("{r:.1} / {w:.1}"));
    format!(
        "| {op} | {backend} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} ({:.1}) | {reported} |",
        x.get_requests,
        x.query_requests,
        x.write_requests,
        x.items_read,
        x.items_written,
        x.read_units,
        x.write_units,
        x.mark_requests,
        x.mark_write_units
    )
}

async fn store_section() {
    println!("### Store work per operation\n");
    println!("Recoup's own reads and writes (the sandbox PSP's bookkeeping excluded). Capacity units are estimated");
    println!("by DynamoDB's published rules from the item sizes; the last column is what the emulator reported.");
    println!("moto reports single-item calls only, not transactions; ministack reports transactions and");
    println!("single-item calls but not `BatchGetItem`, so its read figure leaves out the batched reads.");
    println!("Gets, queries and writes are the operation's own sequential calls (a batched read is one get); the");
    println!("outbox marks (single-item writes, in parallel, after the events are published) are counted apart.\n");
    println!(
        "| operation | backend | gets | queries | writes | items read | items written | est. RCU / WCU | outbox marks (WCU) | reported RCU / WCU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for backend in ["embedded", DYNAMODB_MOTO, DYNAMODB_MINISTACK] {
        let Some(b) = bench_on(backend).await else {
            println!("| ({backend} rows need its emulator: run `make bench`) | | | | | | | | | |");
            continue;
        };
        let s = &b.services;
        let cus = b.customer(None).await;
        let m = b
            .measure(|| async { s.register_payment_method(&cus, "pm_card_visa", false).await.map(|_| ()).unwrap() })
            .await;
        println!("{}", row("register a card (nothing outstanding)", backend, &m));

        let issue = |collection_method| IssueInvoice {
            customer_id: cus.clone(),
            amount: usd(2500),
            description: "bench".into(),
            collection_method: Some(collection_method),
        };
        let inv = s.issue_invoice(issue(CollectionMethod::SendInvoice)).await.unwrap().invoice;
        let m = b
            .measure(|| async {
                s.register_payment_method(&cus, "pm_card_mastercard", false).await.map(|_| ()).unwrap()
            })
            .await;
        println!("{}", row("register a card, 1 invoice outstanding (charged at once)", backend, &m));
        let _ = inv;

        let inv = s.issue_invoice(issue(CollectionMethod::SendInvoice)).await.unwrap().invoice;
        let m = b
            .measure(|| async {
                s.charge_invoice(&inv.id, CardChoice::Default, AttemptTrigger::Manual).await.map(|_| ()).unwrap();
            })
            .await;
        println!("{}", row("charge attempt, approved", backend, &m));

        let m = b
            .measure(|| async {
                s.issue_invoice(issue(CollectionMethod::ChargeAutomatically)).await.map(|_| ()).unwrap();
            })
            .await;
        println!("{}", row("issue an invoice, charged at once (approved)", backend, &m));

        // The charge worker as the retry scheduler drives it: the message carries what the
        // due invoice said (customer, subscription, last card), so one batched read fetches
        // everything the attempt needs.
        let due_retry = |token: &'static str| {
            let b = &b;
            async move {
                let cus = b.customer(Some(token)).await;
                let inv = s
                    .issue_invoice(IssueInvoice {
                        customer_id: cus,
                        amount: usd(2500),
                        description: String::new(),
                        collection_method: Some(CollectionMethod::ChargeAutomatically),
                    })
                    .await
                    .unwrap()
                    .invoice;
                let stored = s.invoice(&inv.id).await.unwrap();
                b.clock.set(stored.next_attempt_at().unwrap());
                let due = s.repo.due_invoice_entities(s.now(), 1000).await.unwrap();
                let found = due.into_iter().find(|d| d.id == inv.id).expect("the declined invoice is due");
                (inv.id, ChargeHint::of(&found))
            }
        };
        let (id, hint) = due_retry("pm_sandbox_visa_51_recover1_idbench").await;
        let m = b.measure(|| async { s.process_due_hinted(&id, Some(&hint)).await.map(|_| ()).unwrap() }).await;
        println!("{}", row("scheduled retry, approved (charge worker)", backend, &m));

        let (id, hint) = due_retry("pm_sandbox_visa_51_idbench").await;
        let m = b.measure(|| async { s.process_due_hinted(&id, Some(&hint)).await.map(|_| ()).unwrap() }).await;
        println!("{}", row("scheduled retry, declined (charge worker)", backend, &m));

        let m = b.measure(|| async { s.repo.due_invoices(s.now(), 1000).await.map(|_| ()).unwrap() }).await;
        println!("{}", row("retry sweep, nothing due (8 shards)", backend, &m));
    }
    println!();
}

/// The decline mix of the simulated month, by share of customers.
const MIX: [(&str, u32); 6] = [
    ("approved at once", 70),
    ("soft decline, recovers after 1-4 retries", 12),
    ("soft decline, never recovers", 8),
    ("Mastercard soft decline with advice 24", 4),
    ("hard decline (Visa category 1)", 3),
    ("soft decline, card expires during the month", 3),
];

fn token_for(i: usize) -> (usize, String) {
    let bucket = (i * 37) % 100;
    let mut acc = 0;
    for (k, (_, share)) in MIX.iter().enumerate() {
        acc += *share as usize;
        if bucket < acc {
            let t = match k {
                0 => format!("pm_sandbox_visa_ok_id{i}"),
                1 => format!("pm_sandbox_visa_51_recover{}_id{i}", 1 + i % 4),
                2 => format!("pm_sandbox_visa_51_id{i}"),
                3 => format!("pm_sandbox_mastercard_51_advice24_id{i}"),
                4 => format!("pm_sandbox_visa_04_id{i}"),
                _ => format!("pm_sandbox_visa_51_exp0130_id{i}"),
            };
            return (k, t);
        }
    }
    (0, "pm_card_visa".to_owned())
}

/// Work items in flight at once in the simulated month: enough to keep both cores busy.
const IN_FLIGHT: usize = 64;

/// Runs `work` over `items`, `IN_FLIGHT` at a time, in one task per runtime thread: each
/// task drives its share concurrently itself, so futures wake within their task and
/// threads meet only in the store (a task per item would hand every completion across
/// threads).
async fn in_lanes<T, R, F, Fut>(items: Vec<T>, work: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    use futures::StreamExt;
    const LANES: usize = 2;
    let mut items = items;
    let share = items.len().div_ceil(LANES).max(1);
    let mut lanes = Vec::new();
    while !items.is_empty() {
        let part = items.split_off(items.len().saturating_sub(share));
        let work = work.clone();
        lanes.push(tokio::spawn(async move {
            futures::stream::iter(part).map(work).buffer_unordered(IN_FLIGHT / LANES).collect::<Vec<R>>().await
        }));
    }
    let mut out = Vec::new();
    for lane in lanes {
        out.extend(lane.await.expect("a lane of work"));
    }
    out
}

/// Peak resident memory of this process so far (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn month_section(n: usize, backend: &str) {
    println!("### A simulated 30-day dunning month ({backend} store)\n");
    let b = Arc::new(bench_on(backend).await.expect("a local backend"));
    let s = &b.services;
    // Late January: the expiring cards (end of January) lapse a week into dunning.
    b.clock.set(recoup_shared::time::parse("2030-01-25T09:00:00Z"));
    // The merchant's customers and their cards, before the month starts. Work runs as
    // tasks, so both of the runtime's threads take part.
    let started = Instant::now();
    let customers: Vec<(usize, CustomerId)> = in_lanes((0..n).collect(), {
        let b = b.clone();
        move |i| {
            let b = b.clone();
            async move {
                let (kind, token) = token_for(i);
                (kind, b.customer(Some(&token)).await)
            }
        }
    })
    .await;
    let setup = started.elapsed();
    // The month: every invoice issued and charged at once, then the retry scheduler every
    // hour for 30 days, its messages (with what each due invoice said) to the charge worker.
    let month = Instant::now();
    let issued: Vec<(usize, recoup_shared::ids::InvoiceId)> = in_lanes(customers.into_iter().enumerate().collect(), {
        let b = b.clone();
        move |(i, (kind, cus)): (usize, (usize, CustomerId))| {
            let b = b.clone();
            async move {
                let inv = b
                    .services
                    .issue_invoice(IssueInvoice {
                        customer_id: cus,
                        amount: usd(1000 + (i as i64 % 50) * 100),
                        description: String::new(),
                        collection_method: Some(CollectionMethod::ChargeAutomatically),
                    })
                    .await
                    .unwrap()
                    .invoice;
                (kind, inv.id)
            }
        }
    })
    .await;
    let issued_in = month.elapsed();
    let mut sweeps = 0;
    // The scheduler's reads of what is due, between pages of charges.
    let mut querying = std::time::Duration::ZERO;
    for _ in 0..(30 * 24) {
        b.clock.advance(TimeDelta::hours(1));
        sweeps += 1;
        // A sweep takes what is due in pages, as the scheduler's successive runs would.
        loop {
            let asked = Instant::now();
            let due = s.repo.due_invoice_entities(s.now(), 10_000).await.unwrap();
            querying += asked.elapsed();
            let full = due.len() == 10_000;
            let outcomes: Vec<bool> = in_lanes(due, {
                let b = b.clone();
                move |inv: Versioned<Invoice>| {
                    let b = b.clone();
                    async move {
                        let hint = ChargeHint::of(&inv);
                        matches!(
                            b.services.process_due_hinted(&inv.id, Some(&hint)).await,
                            Ok(recoup_shared::services::charging::DueOutcome::NotDue)
                        )
                    }
                }
            })
            .await;
            if !full || outcomes.iter().all(|not_due| *not_due) {
                break;
            }
        }
    }
    let month_wall = month.elapsed();
    let (mut sent, mut unsent, mut first_try, mut recovered, mut errored, mut open) = (0, 0, 0, 0, 0, 0);
    let mut by_kind: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (kind, id) in &issued {
        let inv: Invoice = s.invoice(id).await.unwrap().into_inner();
        sent += inv.transactions().iter().filter(|t| t.sent_to_psp).count();
        unsent += inv.transactions().iter().filter(|t| !t.sent_to_psp).count();
        let paid = inv.status() == InvoiceStatus::Paid;
        if paid && inv.attempt_count() == 1 {
            first_try += 1;
        } else if paid {
            recovered += 1;
        }
        match inv.status() {
            InvoiceStatus::Error => errored += 1,
            InvoiceStatus::Open => open += 1,
            InvoiceStatus::Paid | InvoiceStatus::Draft | InvoiceStatus::Void => {}
        }
        let e = by_kind.entry(*kind).or_default();
        e.0 += 1;
        e.1 += usize::from(paid);
    }
    let failed_first = n - first_try;
    println!("{n} customers with a card each; then the month: an invoice each, issued and charged at once, and");
    println!("the retry scheduler every hour for 30 days on the default schedule, its messages to the charge");
    println!("worker ({backend} store, sandbox PSP), through the same services the functions call (decline");
    println!("classification, retry schedule, network rules), {IN_FLIGHT} at a time on two threads.\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| invoices | {n} |");
    println!("| paid at the first attempt | {first_try} |");
    println!("| failed the first attempt | {failed_first} |");
    println!(
        "| recovered by retries | {recovered} ({:.1}% of those that failed) |",
        100.0 * recovered as f64 / failed_first.max(1) as f64
    );
    println!("| errored after the last retry | {errored} |");
    println!("| still open at day 30 | {open} |");
    println!("| attempts sent to the PSP | {sent} ({:.2} per invoice) |", sent as f64 / n as f64);
    println!("| attempts recorded without the PSP (expired card) | {unsent} |");
    println!("| sweeps | {sweeps} |");
    println!("| wall time: before the month, customers and cards | {:.2} s |", setup.as_secs_f64());
    println!("| wall time: invoices issued and first attempts | {:.2} s |", issued_in.as_secs_f64());
    println!("| wall time: sweeps and retries | {:.2} s |", (month_wall - issued_in).as_secs_f64());
    println!("| of which the scheduler's reads of what is due | {:.2} s |", querying.as_secs_f64());
    println!(
        "| wall time: the month (invoices, attempts, retries) | {:.2} s ({:.0} invoices/s) |",
        month_wall.as_secs_f64(),
        n as f64 / month_wall.as_secs_f64()
    );
    if let Some(mib) = peak_rss_mib() {
        println!("| peak memory (the bench process so far) | {mib:.0} MiB |");
    }
    println!();
    if let Some(m) = &b.memory {
        println!("| stored item | count | approx. bytes |");
        println!("|---|---|---|");
        for (entity, (count, bytes)) in m.footprint() {
            println!("| {entity} | {count} | {bytes} |");
        }
        println!();
    }
    println!("| event | published |");
    println!("|---|---|");
    for (kind, count) in b.published.counts.lock().unwrap().iter() {
        println!("| {kind} | {count} |");
    }
    println!();
    println!("| customer mix | invoices | paid by day 30 |");
    println!("|---|---|---|");
    for (k, (count, paid)) in by_kind {
        println!("| {} | {count} | {paid} |", MIX[k].0);
    }
    println!();
}

async fn sweep_section(backend: &str, stored: usize, due: usize) {
    let Some(b) = bench_on(backend).await else {
        println!("(sweep on DynamoDB skipped: set RECOUP_TEST_AWS_ENDPOINT)\n");
        return;
    };
    let s = &b.services;
    let now = b.clock.now();
    let customers: Vec<CustomerId> = (0..100).map(|_| CustomerId::generate()).collect();
    // The embedded store loads in transactions of 100; DynamoDB gets one PutItem per invoice,
    // because moto_server copies its tables for every transaction and runs out of memory.
    let per_commit = if backend == "embedded" { 100 } else { 1 };
    let load = Instant::now();
    let mut tx = Tx::new();
    for i in 0..stored {
        let (mut inv, _) = Invoice::issue(
            NewInvoice {
                customer_id: customers[i % customers.len()].clone(),
                amount: usd(1000),
                description: String::new(),
                collection_method: CollectionMethod::ChargeAutomatically,
                subscription: None,
            },
            now - TimeDelta::days(40),
        )
        .unwrap();
        // 1% due now, 20% due later, the rest off the schedule (paid long ago).
        if i % (stored / due) == 0 {
            inv.schedule_first_attempt(now - TimeDelta::minutes(5));
        } else if i % 5 == 0 {
            inv.schedule_first_attempt(now + TimeDelta::days(1 + (i % 13) as i64));
        }
        tx.save(&Versioned::new(inv)).unwrap();
        if tx.len() == per_commit {
            s.repo.commit(std::mem::take(&mut tx)).await.unwrap();
        }
    }
    if !tx.is_empty() {
        s.repo.commit(tx).await.unwrap();
    }
    let loaded_in = load.elapsed();
    let started = Instant::now();
    let mut found = 0;
    let m = b.measure(|| async { found = s.repo.due_invoices(now, 10_000).await.unwrap().len() }).await;
    let took = started.elapsed();
    let x = &m.metrics;
    let scan_rcu = (stored as f64 * 1.0) / 4.0 / 2.0; // ~1 KB invoices, eventually consistent scan
    println!(
        "| {backend} | {stored} | {found} | {} | {} | {:.1} | ~{scan_rcu:.0} | {:.0} ms | {:.0} s |",
        x.query_requests,
        x.items_read,
        x.read_units,
        took.as_secs_f64() * 1000.0,
        loaded_in.as_secs_f64()
    );
}

fn binaries_section() {
    println!("### Lambda binaries (x86_64, `cargo lambda build --profile lambda`; goal: every zip ≤ 3 MB)\n");
    println!("| function | bootstrap | zip |");
    println!("|---|---|---|");
    let dir = root().join("target/lambda");
    for f in recoup_functions::FUNCTIONS.iter().map(|f| f.name).chain(["hello-lambda"]) {
        let size =
            |p: PathBuf| std::fs::metadata(p).map(|m| format!("{:.2} MB", m.len() as f64 / 1e6)).unwrap_or("—".into());
        println!("| {f} | {} | {} |", size(dir.join(f).join("bootstrap")), size(dir.join(f).join("bootstrap.zip")));
    }
    println!();
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn startup_section(runs: usize) {
    println!("### Start-up: process start to first poll of the Runtime API\n");
    println!("Each binary started {runs} times, in turn, under a local Runtime API emulator (what a cold start");
    println!("costs after the sandbox is up: process start, wiring, first `GET /next`). The ratios are to");
    println!("hello-lambda, measured in the same run; the goal is at most 2.\n");
    println!("| function | median | p90 | median ÷ hello | p90 ÷ hello |");
    println!("|---|---|---|---|---|");
    let env = [
        ("RECOUP_TABLE", "bench"),
        ("RECOUP_EVENT_BUS", "bench"),
        ("RECOUP_CHARGE_QUEUE_URL", "http://127.0.0.1:9/queue"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ];
    let names: Vec<&str> =
        ["hello-lambda"].into_iter().chain(recoup_functions::FUNCTIONS.iter().map(|f| f.name)).collect();
    // Rounds over every function, so a noisy moment on the machine hits them all alike.
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); names.len()];
    for _ in 0..runs {
        for (i, f) in names.iter().enumerate() {
            let binary = root().join("target/lambda").join(f).join("bootstrap");
            if !binary.exists() {
                continue;
            }
            let api = RuntimeApi::start().await;
            let mut process = FunctionProcess::spawn(&api, &binary, env).expect("spawn");
            match process.wait_ready(&api, Duration::from_secs(10)).await {
                Ok(d) => times[i].push(d),
                Err(e) => eprintln!("{f}: {e:?}\n{}", process.output()),
            }
            process.kill().await;
        }
    }
    for t in &mut times {
        t.sort();
    }
    let hello = (!times[0].is_empty()).then(|| (percentile(&times[0], 0.5), percentile(&times[0], 0.9)));
    for (f, t) in names.iter().zip(&times) {
        if t.is_empty() {
            println!("| {f} | — (run `make build-lambdas`) | | | |");
            continue;
        }
        let (median, p90) = (percentile(t, 0.5), percentile(t, 0.9));
        let ratio = |x: f64, h: f64| format!("{:.2}", x / h);
        let (rm, rp) = hello.map_or(("—".into(), "—".into()), |(hm, hp)| (ratio(median, hm), ratio(p90, hp)));
        println!("| {f} | {median:.1} ms | {p90:.1} ms | {rm} | {rp} |");
    }
    println!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // SAFETY: mi_option_set only stores the value; mimalloc reads options atomically.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty() || args.iter().any(|a| a == "all");
    let want = |s: &str| all || args.iter().any(|a| a == s);
    let month_n: usize = std::env::var("RECOUP_BENCH_INVOICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // The emulator stores a few hundred items a second and holds them all in one Python
    // process, so the DynamoDB sweep runs on fewer invoices (the same 1% due).
    let moto_sweep: usize =
        std::env::var("RECOUP_BENCH_MOTO_SWEEP_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    if want("store") {
        store_section().await;
    }
    if want("month") {
        month_section(month_n, "embedded").await;
    }
    // The million-invoice month on the in-memory store; run it alone for its peak memory
    // (`recoup-bench sim`).
    if want("sim") {
        let sim_n: usize =
            std::env::var("RECOUP_BENCH_SIM_INVOICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        month_section(sim_n, "memory").await;
    }
    if want("sweep") {
        println!("### One retry sweep: due invoices among many stored\n");
        println!("The sweep queries the sparse schedule index (8 shards); it never scans. A scan of the same table");
        println!("is shown for scale.\n");
        println!(
            "| backend | invoices stored | due found | queries | items read | est. RCU | a scan's est. RCU | sweep time | load time |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let embedded_items: usize =
            std::env::var("RECOUP_BENCH_SWEEP_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        sweep_section("embedded", embedded_items, embedded_items / 100).await;
        if moto().is_some() {
            sweep_section(DYNAMODB_MOTO, moto_sweep, moto_sweep / 100).await;
        }
        println!();
    }
    if want("binaries") {
        binaries_section();
    }
    if want("startup") {
        startup_section(10).await;
    }
    if args.iter().any(|a| a == "wiring") {
        wiring_section().await;
    }
}

/// Where a cold start's wiring goes, step by step, in this process (release build).
async fn wiring_section() {
    use std::time::Instant;
    let t = Instant::now();
    let roots = recoup_shared::aws::compiled_in_roots();
    let roots_time = t.elapsed();
    let t = Instant::now();
    let config = recoup_shared::aws::sdk_config_for_endpoint("http://127.0.0.1:9").await;
    let config_time = t.elapsed();
    let t = Instant::now();
    let _d = aws_sdk_dynamodb::Client::new(&config);
    let _e = aws_sdk_dynamodb::Client::new(&config);
    let _q = aws_sdk_dynamodb::Client::new(&config);
    let clients_time = t.elapsed();
    println!(
        "roots ({}): {roots_time:?}; sdk config: {config_time:?}; three DynamoDB clients: {clients_time:?}",
        roots.len()
    );
}
