//! A minimal emulator of the AWS Lambda Runtime API, to run the real function binaries
//! (`target/lambda/<name>/bootstrap`) the way the Lambda service does: the process polls
//! `GET /2018-06-01/runtime/invocation/next`, handles the event it gets and posts the
//! answer to `.../invocation/{id}/response` (or `.../error`).
//!
//! ```ignore
//! let api = RuntimeApi::start().await;
//! let mut function = FunctionProcess::spawn(&api, &bootstrap, [("RECOUP_TABLE", table)])?;
//! let startup = function.wait_ready(&api, Duration::from_secs(10)).await?; // spawn -> first poll
//! let response = api.invoke(event).await?;
//! ```
//!
//! One emulator serves one function instance (one process at a time), like one Lambda
//! execution environment. Served endpoints:
//!
//! - `GET  /2018-06-01/runtime/invocation/next`: blocks until an event is queued, then
//!   answers it with the `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`,
//!   `-Invoked-Function-Arn` and `-Trace-Id` headers;
//! - `POST /2018-06-01/runtime/invocation/{id}/response`;
//! - `POST /2018-06-01/runtime/invocation/{id}/error`;
//! - `POST /2018-06-01/runtime/init/error`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot, watch};

/// How long [`RuntimeApi::invoke`] waits for an answer unless told otherwise.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// An error the function reported (`/invocation/{id}/error` or `/init/error`).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// `Lambda-Runtime-Function-Error-Type` header, else the body's `errorType`.
    pub error_type: String,
    pub error_message: String,
    /// The body as posted.
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InvokeError {
    /// No answer within the timeout (the function may not be polling, or be stuck).
    Timeout(Duration),
    /// The function answered the invocation with an error.
    Function(FunctionError),
    /// The function reported an initialisation error instead of polling.
    Init(FunctionError),
    /// The function process ended (exit status as text) before it was ready.
    Exited(String),
    /// The emulator stopped.
    Closed,
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Timeout(d) => write!(f, "no answer from the function within {d:?}"),
            InvokeError::Function(e) => write!(f, "function error {}: {}", e.error_type, e.error_message),
            InvokeError::Init(e) => write!(f, "init error {}: {}", e.error_type, e.error_message),
            InvokeError::Exited(status) => {
                write!(f, "the function process exited ({status}) before polling for events")
            }
            InvokeError::Closed => f.write_str("the runtime API emulator stopped"),
        }
    }
}

impl std::error::Error for InvokeError {}

type Answer = Result<Value, FunctionError>;

struct Queued {
    request_id: String,
    event: Vec<u8>,
    deadline: SystemTime,
    answer: oneshot::Sender<Answer>,
}

#[derive(Debug, Clone, Default)]
struct Phase {
    /// When the function first asked for an event (the end of its init).
    ready: Option<Instant>,
    init_error: Option<FunctionError>,
}

struct Shared {
    function_name: String,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    phase: watch::Sender<Phase>,
    polls: std::sync::atomic::AtomicU64,
}

/// The emulator. Dropping it stops the server.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Queued>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start() -> RuntimeApi {
        Self::start_named("recoup-function").await
    }

    /// Like [`start`](Self::start); the name goes into the invoked function's ARN.
    pub async fn start_named(function_name: &str) -> RuntimeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the runtime API emulator");
        let addr = listener.local_addr().expect("local address");
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_name: function_name.to_owned(),
            queue: tokio::sync::Mutex::new(receiver),
            in_flight: Mutex::new(HashMap::new()),
            phase: watch::Sender::new(Phase::default()),
            polls: std::sync::atomic::AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi { addr, shared, sender, server }
    }

    /// Where the emulator listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for the function's `AWS_LAMBDA_RUNTIME_API` (`host:port`).
    pub fn runtime_api_env(&self) -> String {
        self.addr.to_string()
    }

    /// The ARN sent as `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn function_arn(&self) -> String {
        format!("arn:aws:lambda:us-east-1:123456789012:function:{}", self.shared.function_name)
    }

    /// When the function first polled `/next`, if it has.
    pub fn ready_at(&self) -> Option<Instant> {
        self.shared.phase.borrow().ready
    }

    /// How many times `/next` was called.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The init error the function reported, if any.
    pub fn init_error(&self) -> Option<FunctionError> {
        self.shared.phase.borrow().init_error.clone()
    }

    /// Waits until the function first polls `/next`; returns that instant.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Instant, InvokeError> {
        let mut phase = self.shared.phase.subscribe();
        let waited =
            tokio::time::timeout(timeout, phase.wait_for(|p| p.ready.is_some() || p.init_error.is_some())).await;
        match waited {
            Err(_) => Err(InvokeError::Timeout(timeout)),
            Ok(Err(_)) => Err(InvokeError::Closed),
            Ok(Ok(p)) => match (&p.init_error, p.ready) {
                (Some(e), _) => Err(InvokeError::Init(e.clone())),
                (None, Some(at)) => Ok(at),
                (None, None) => Err(InvokeError::Closed),
            },
        }
    }

    /// Invokes the function with `event` and waits (up to [`DEFAULT_INVOKE_TIMEOUT`]) for
    /// its answer.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        self.invoke_with_timeout(event, DEFAULT_INVOKE_TIMEOUT).await
    }

    /// Invokes the function; `timeout` is also the deadline the function is told.
    pub async fn invoke_with_timeout(&self, event: Value, timeout: Duration) -> Result<Value, InvokeError> {
        let (answer, answered) = oneshot::channel();
        let request_id = uuid::Uuid::new_v4().to_string();
        let event = serde_json::to_vec(&event).expect("an event serialises");
        let queued = Queued { request_id: request_id.clone(), event, deadline: SystemTime::now() + timeout, answer };
        self.sender.send(queued).map_err(|_| InvokeError::Closed)?;
        let mut phase = self.shared.phase.subscribe();
        let init_failed = async move {
            match phase.wait_for(|p| p.init_error.is_some()).await {
                Ok(p) => p.init_error.clone(),
                Err(_) => std::future::pending().await,
            }
        };
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                answer = answered => match answer {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(InvokeError::Function(e)),
                    Err(_) => Err(InvokeError::Closed),
                },
                Some(e) = init_failed => Err(InvokeError::Init(e)),
            }
        })
        .await;
        // A late answer for an abandoned invocation is refused like Lambda does.
        self.shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
        outcome.unwrap_or(Err(InvokeError::Timeout(timeout)))
    }
}

fn trace_id(request_id: &str) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("Root=1-{secs:08x}-{:0<24.24};Parent={:0<16.16};Sampled=0", hex, hex.get(8..).unwrap_or(""))
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.phase.send_if_modified(|p| {
        if p.ready.is_none() {
            p.ready = Some(Instant::now());
            true
        } else {
            false
        }
    });
    let queued = loop {
        let mut queue = shared.queue.lock().await;
        let Some(queued) = queue.recv().await else {
            return StatusCode::GONE.into_response();
        };
        // The caller gave up (timed out) before the function asked: skip it.
        if !queued.answer.is_closed() {
            break queued;
        }
    };
    shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(queued.request_id.clone(), queued.answer);
    let deadline_ms = queued.deadline.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("content-type", "application/json".into());
    set("lambda-runtime-aws-request-id", queued.request_id.clone());
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        format!("arn:aws:lambda:us-east-1:123456789012:function:{}", shared.function_name),
    );
    set("lambda-runtime-trace-id", trace_id(&queued.request_id));
    (StatusCode::OK, headers, queued.event).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

fn unknown_request(id: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"errorType": "InvalidRequestID", "errorMessage": format!("no invocation {id} is in flight")}),
        ),
    )
        .into_response()
}

fn parse_error(headers: &HeaderMap, body: &Bytes) -> FunctionError {
    let body: Value =
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let header = headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let error_type = body.get("errorType").and_then(Value::as_str).map(str::to_owned).or(header).unwrap_or_default();
    let error_message = body.get("errorMessage").and_then(Value::as_str).unwrap_or_default().to_owned();
    FunctionError { error_type, error_message, body }
}

fn take_in_flight(shared: &Shared, id: &str) -> Option<oneshot::Sender<Answer>> {
    shared.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
}

async fn response(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    let Some(answer) = take_in_flight(&shared, &id) else { return unknown_request(&id) };
    let value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let _ = answer.send(Ok(value));
    accepted()
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(answer) = take_in_flight(&shared, &id) else { return unknown_request(&id) };
    let _ = answer.send(Err(parse_error(&headers, &body)));
    accepted()
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let error = parse_error(&headers, &body);
    shared.phase.send_modify(|p| p.init_error = Some(error));
    accepted()
}

/// Output captured from a child process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn collect(&self, mut from: impl AsyncRead + Unpin + Send + 'static, echo: bool) {
        let into = self.0.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if echo {
                    eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                }
                into.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
            }
        });
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// A function binary running against a [`RuntimeApi`], with the environment Lambda gives
/// a `provided.al2023` function plus the caller's variables. The process starts from an
/// empty environment (nothing leaks from the test's own), its stdout and stderr are
/// captured, and it is killed when this value is dropped.
pub struct FunctionProcess {
    child: tokio::process::Child,
    started: Instant,
    binary: PathBuf,
    stdout: Captured,
    stderr: Captured,
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The function's name from its path: `target/lambda/<name>/bootstrap` → `<name>`.
pub fn function_name_of(binary: &Path) -> String {
    let file = binary.file_name().and_then(OsStr::to_str).unwrap_or("function");
    match binary.parent().and_then(Path::file_name).and_then(OsStr::to_str) {
        Some(dir) if file == "bootstrap" => dir.to_owned(),
        _ => file.to_owned(),
    }
}

impl FunctionProcess {
    /// Starts `binary` wired to `api`. `env` comes on top of the Lambda variables.
    /// Set `RECOUP_TEST_ECHO_FUNCTION_LOGS=1` to also copy the function's output to stderr.
    pub fn spawn<I, K, V>(api: &RuntimeApi, binary: &Path, env: I) -> std::io::Result<FunctionProcess>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let name = function_name_of(binary);
        let dir = binary.parent().unwrap_or(Path::new("."));
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .current_dir(dir)
            .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api_env())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]0123456789abcdef")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("LAMBDA_TASK_ROOT", dir)
            .env("LAMBDA_RUNTIME_DIR", dir)
            .env("_HANDLER", "bootstrap")
            .env("TZ", ":UTC")
            .env("LANG", "en_US.UTF-8")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn()?;
        let echo = std::env::var_os("RECOUP_TEST_ECHO_FUNCTION_LOGS").is_some_and(|v| !v.is_empty() && v != "0");
        let (stdout, stderr) = (Captured::default(), Captured::default());
        if let Some(out) = child.stdout.take() {
            stdout.collect(out, echo);
        }
        if let Some(err) = child.stderr.take() {
            stderr.collect(err, echo);
        }
        Ok(FunctionProcess { child, started, binary: binary.to_owned(), stdout, stderr })
    }

    /// When the process was spawned.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the function polls `/next` and returns the time from spawn to then
    /// (its cold start). Fails early if the process exits or reports an init error.
    pub async fn wait_ready(&mut self, api: &RuntimeApi, timeout: Duration) -> Result<Duration, InvokeError> {
        let started = self.started;
        let outcome = tokio::select! {
            ready = api.wait_ready(timeout) => ready.map(|at| at.saturating_duration_since(started)),
            status = self.child.wait() => {
                // It may have polled just before exiting.
                match api.ready_at() {
                    Some(at) => Ok(at.saturating_duration_since(started)),
                    None => Err(InvokeError::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()))),
                }
            }
        };
        match outcome {
            Err(InvokeError::Exited(status)) => {
                // Let the output readers drain so the message can include the output.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(InvokeError::Exited(format!("{status}; output: {}", self.output().trim())))
            }
            other => other,
        }
    }

    /// Everything the function wrote to stdout so far (its logs).
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything the function wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// stdout then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Whether the process has exited, and how.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
