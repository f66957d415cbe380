//! Drives the real `recoup-local` binary over HTTP.

// Each test crate (e2e, crash) uses part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_recoup-local");

pub struct Runner {
    pub base: String,
    pub data_dir: PathBuf,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Runner {
    /// Starts the product on a free port with a fresh data directory; the schedules run
    /// only when the test asks (`tick`, `advance`).
    pub async fn start() -> Runner {
        let data_dir = std::env::temp_dir().join(format!("recoup-e2e-{}", uuid_like()));
        Runner::start_in(data_dir).await
    }

    pub async fn start_in(data_dir: PathBuf) -> Runner {
        Runner::start_with(data_dir, &[]).await
    }

    /// Starts the product with extra environment (e.g. another payment provider).
    pub async fn start_with(data_dir: PathBuf, env: &[(&str, &str)]) -> Runner {
        Runner::serve(data_dir, &["--tick-seconds", "0"], env).await
    }

    /// Starts `recoup-local serve` with extra arguments (e.g. `--tick-seconds 1`) and
    /// environment; its log is appended to `server.log` in the data directory.
    pub async fn serve(data_dir: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Runner {
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = data_dir.join("server.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("start recoup-local");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = match tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "recoup-local did not announce its address ({other:?}); its log ends with:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().join("\n")
            ),
        };
        let base = first.strip_prefix("listening on ").expect("listening line").to_owned();
        Runner { base, data_dir, child, http: reqwest::Client::new() }
    }

    pub async fn stop(mut self) -> PathBuf {
        let _ = self.child.kill().await;
        self.data_dir.clone()
    }

    pub fn token(role: &str, customer: Option<&str>) -> String {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["token", "--role", role]);
        if let Some(c) = customer {
            cmd.args(["--customer", c]);
        }
        let out = cmd.output().expect("recoup-local token");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Reply {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body), None).await
    }

    /// Runs the schedules and drains the queues.
    pub async fn tick(&self) -> Value {
        self.call("POST", "/v1/dev/tick", None, None, None).await.body
    }

    pub async fn advance(&self, days: i64, minutes: i64) -> Value {
        self.call("POST", "/v1/dev/clock/advance", None, Some(json!({"days": days, "minutes": minutes})), None)
            .await
            .body
    }

    pub async fn tokenize(&self, number: &str) -> String {
        let r = self
            .call(
                "POST",
                "/sandbox/v1/payment_methods",
                None,
                Some(json!({"card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// A customer and owner/member tokens for it.
    pub async fn customer(&self, merchant: &str) -> (String, String, String) {
        let r = self.post("/v1/customers", merchant, json!({"email": "ada@example.com", "name": "Ada"})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let owner = Runner::token("owner", Some(&id));
        let member = Runner::token("member", Some(&id));
        (id, owner, member)
    }

    pub async fn event_types(&self) -> Vec<String> {
        let r = self.call("GET", "/v1/dev/events", None, None, None).await;
        let mut kinds: Vec<String> =
            r.body["data"].as_array().unwrap().iter().map(|e| e["detail-type"].as_str().unwrap().to_owned()).collect();
        kinds.reverse();
        kinds
    }
}

pub fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{n:x}-{}", std::process::id())
}

/// Every file under `dir`, as bytes.
pub fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}
