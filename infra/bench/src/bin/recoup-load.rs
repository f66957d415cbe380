//! `recoup-load` drives a running `recoup-local` over HTTP and prints throughput and
//! latency percentiles as Markdown, beside an axum hello-world answering the same requests
//! from the same client (the HTTP layer's own limit on this machine). Nothing asserts:
//! the figures are for reading.
//!
//! It starts `recoup-local serve` itself (release build, fresh data directory, schedules
//! off, logs at `warn`), creates customers with a card each, then for each client count
//! issues invoices (`POST /v1/invoices`, charged at once) for a fixed time. With
//! `--shared-card` every customer saves the same card (one fingerprint, one card ledger).
//!
//!   recoup-load [--bin target/release/recoup-local] [--clients 1,8] [--seconds 10]
//!               [--customers 256] [--shared-card]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Args {
    bin: PathBuf,
    clients: Vec<usize>,
    seconds: u64,
    customers: usize,
    shared_card: bool,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/recoup-local"),
        clients: vec![1, 8],
        seconds: 10,
        customers: 256,
        shared_card: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(value()),
            "--clients" => a.clients = value().split(',').map(|n| n.parse().expect("--clients 1,8")).collect(),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--customers" => a.customers = value().parse().expect("--customers N"),
            "--shared-card" => a.shared_card = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The product under load, as a separate process.
struct Server {
    base: String,
    child: Child,
    data_dir: PathBuf,
}

impl Server {
    async fn start(bin: &PathBuf) -> Server {
        let data_dir = std::env::temp_dir().join(format!("recoup-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut child = Command::new(bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--tick-seconds", "0", "--data-dir"])
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {}: {e} (build it: cargo build --release -p recoup-local)", bin.display())
            });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("recoup-local announces its address")
            .expect("stdout")
            .expect("a line");
        let base = first.strip_prefix("listening on ").expect("listening line").to_owned();
        Server { base, child, data_dir }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn token(claims: Value) -> String {
    let Value::Object(claims) = claims else { unreachable!() };
    let mut claims: Map<String, Value> = claims;
    claims.insert("sub".into(), json!("load"));
    recoup_local::jwt::mint(recoup_local::jwt::DEFAULT_SECRET, claims, chrono::Utc::now().timestamp(), 3600)
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Customers with a default card each: distinct cards, or one card they all saved.
async fn customers(http: &reqwest::Client, base: &str, n: usize, shared: bool) -> Vec<String> {
    let merchant = token(json!({"role": "merchant"}));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, c) =
            post(http, &format!("{base}/v1/customers"), &merchant, &json!({"email": format!("load{i}@example.com")}))
                .await;
        assert_eq!(s, 201, "{c}");
        let id = c["id"].as_str().expect("customer id").to_owned();
        let owner = token(json!({"role": "owner", "customer_id": id}));
        let card = if shared { "pm_sandbox_visa_ok_idshared".to_owned() } else { format!("pm_sandbox_visa_ok_id{i}") };
        let (s, pm) = post(http, &format!("{base}/v1/payment-methods"), &owner, &json!({"payment_method": card})).await;
        assert_eq!(s, 201, "{pm}");
        out.push(id);
    }
    out
}

struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

/// `clients` loops issuing invoices for `seconds`, round-robin over the customers.
async fn drive(base: &str, customers: Arc<Vec<String>>, clients: usize, seconds: u64, check_paid: bool) -> Run {
    let merchant = Arc::new(token(json!({"role": "merchant"})));
    let url = Arc::new(format!("{base}/v1/invoices"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (merchant, url, stop, customers) = (merchant.clone(), url.clone(), stop.clone(), customers.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"customer_id": customers[i % customers.len()], "amount": 1000 + (i % 50) as i64, "currency": "usd"});
                i += clients;
                let t = Instant::now();
                let (status, reply) = post(&http, &url, &merchant, &body).await;
                latencies.push(t.elapsed());
                let paid = reply["status"] == "paid";
                if status != 201 || (check_paid && !paid) {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("unexpected answer {status}: {reply}");
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run { latencies: Vec::new(), errors: 0, wall: Duration::ZERO };
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        run.latencies.extend(l);
        run.errors += e;
    }
    run.wall = started.elapsed();
    run.latencies.sort();
    run
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn row(target: &str, clients: usize, r: &Run) {
    println!(
        "| {target} | {clients} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        r.latencies.len(),
        r.latencies.len() as f64 / r.wall.as_secs_f64(),
        ms(&r.latencies, 0.50),
        ms(&r.latencies, 0.99),
        ms(&r.latencies, 0.999),
        r.errors
    );
}

/// The HTTP layer's own limit: axum answering `POST /v1/invoices` with a fixed body, on
/// its own two-thread runtime as `recoup-local` has.
fn hello_world() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/invoices",
                axum::routing::post(|body: String| async move {
                    let _ = body.len();
                    (axum::http::StatusCode::CREATED, axum::Json(json!({"invoice": {"status": "paid"}})))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("hello-world address")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let cards = if a.shared_card { "one card shared by every customer" } else { "a distinct card per customer" };
    println!("### Charging under load: `POST /v1/invoices` over HTTP\n");
    println!(
        "`recoup-local` (release, embedded store, sandbox PSP, logs at warn), {} customers with {cards}; each",
        a.customers
    );
    println!("client issues invoices back to back for {} s, each charged at once. The hello-world rows are", a.seconds);
    println!("axum answering the same requests with a fixed body: the HTTP layer's own limit here.\n");
    println!("| target | clients | requests | per second | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    let hello = format!("http://{}", hello_world());
    let fake = Arc::new(vec!["cus_hello".to_owned()]);
    for &clients in &a.clients {
        let r = drive(&hello, fake.clone(), clients, a.seconds.min(5), false).await;
        row("axum hello-world", clients, &r);
    }
    let server = Server::start(&a.bin).await;
    let http = reqwest::Client::new();
    let customers = Arc::new(customers(&http, &server.base, a.customers, a.shared_card).await);
    for &clients in &a.clients {
        let r = drive(&server.base, customers.clone(), clients, a.seconds, true).await;
        row("recoup-local", clients, &r);
    }
    server.stop().await;
    println!();
}
