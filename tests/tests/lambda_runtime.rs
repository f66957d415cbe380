//! The real Lambda binaries (`target/lambda/<name>/bootstrap`, built by
//! `infra/scripts/build-lambdas.sh`) run through the Lambda Runtime API emulator with API
//! Gateway HTTP API v2 and SQS payloads, against DynamoDB and EventBridge on moto_server
//! (`RECOUP_TEST_AWS_ENDPOINT`). Every test uses its own table and event bus.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use recoup_lambda::http::Route;
use recoup_tests::runtime_api::{FunctionProcess, InvokeError, RuntimeApi};
use recoup_tests::workspace_root;
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn endpoint() -> String {
    std::env::var("RECOUP_TEST_AWS_ENDPOINT").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!(
            "RECOUP_TEST_AWS_ENDPOINT is not set: start moto_server (e.g. `.venv/bin/moto_server -H 127.0.0.1 -p 5000`) \
             and run with RECOUP_TEST_AWS_ENDPOINT=http://127.0.0.1:5000"
        )
    })
}

/// `target/lambda/<name>/bootstrap`, as cargo-lambda leaves it.
fn bootstrap(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { workspace_root().join(target) };
    let path = target.join("lambda").join(name).join("bootstrap");
    assert!(
        path.is_file(),
        "{} is missing: build the Lambda binaries first with infra/scripts/build-lambdas.sh",
        path.display()
    );
    path
}

fn sample_event(file: &str) -> Value {
    let path = workspace_root().join("infra/events").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A table and an event bus of this test's own on moto.
struct Aws {
    endpoint: String,
    table: String,
    bus: String,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl Aws {
    async fn new() -> Aws {
        let endpoint = endpoint();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let table = format!("recoup-rt-{unique}");
        let bus = format!("recoup-rt-bus-{unique}");
        recoup_shared::testkit::dynamo_store(&table).await;
        let config = recoup_shared::aws::sdk_config_for_endpoint(&endpoint).await;
        aws_sdk_eventbridge::Client::new(&config)
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create event bus {bus} on {endpoint}: {e:?}"));
        Aws { endpoint, table, bus, dynamodb: aws_sdk_dynamodb::Client::new(&config) }
    }

    /// What a deployed function gets from the template, pointed at moto.
    fn function_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_SESSION_TOKEN", "test"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
            ("RECOUP_TABLE", self.table.as_str()),
            ("RECOUP_EVENT_BUS", self.bus.as_str()),
            ("RECOUP_PAYMENT_PROVIDER", "sandbox"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn get(&self, pk: &str, sk: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
        self.dynamodb
            .get_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(pk.to_owned()))
            .key("SK", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem on moto")
            .item
    }

    /// Every item of the table.
    async fn scan(&self) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("Scan on moto");
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return items;
            }
        }
    }
}

/// A string field of an item's `data` map.
/// A stored item's body: its `data` map, or its `deflated` JSON where that saved write
/// units (`shared/src/store/deflated.rs`).
fn body(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Value> {
    match (item.get("data"), item.get("deflated")) {
        (Some(data), _) => recoup_shared::store::dynamodb::attr_to_json(data).ok(),
        (None, Some(AttributeValue::B(bytes))) => recoup_shared::store::deflated::inflate(bytes.as_ref()).ok(),
        _ => None,
    }
}

fn data_field(item: &std::collections::HashMap<String, AttributeValue>, field: &str) -> Option<String> {
    body(item)?.get(field)?.as_str().map(str::to_owned)
}

/// Who calls, as the JWT authorizer's claims.
#[derive(Clone)]
struct Caller(BTreeMap<&'static str, String>);

fn merchant() -> Caller {
    Caller(BTreeMap::from([("role", "merchant".to_owned()), ("sub", "ops@merchant.example".to_owned())]))
}

fn owner(customer: &str) -> Caller {
    Caller(BTreeMap::from([
        ("role", "owner".to_owned()),
        ("sub", format!("owner-of-{customer}")),
        ("customer_id", customer.to_owned()),
    ]))
}

fn member(customer: &str) -> Caller {
    Caller(BTreeMap::from([
        ("role", "member".to_owned()),
        ("sub", format!("member-of-{customer}")),
        ("customer_id", customer.to_owned()),
    ]))
}

/// The route a path matches, and its path parameters by name.
fn route_for(routes: &[Route], method: &str, path: &str) -> Option<(String, BTreeMap<String, String>)> {
    let got: Vec<&str> = path.trim_matches('/').split('/').collect();
    routes.iter().filter(|r| r.method == method).find_map(|r| {
        let want: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        if want.len() != got.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (w, g) in want.iter().zip(&got) {
            if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                params.insert(name.to_owned(), (*g).to_owned());
            } else if w != g {
                return None;
            }
        }
        Some((r.key(), params))
    })
}

/// An API Gateway HTTP API (payload 2.0) event from the sample in `infra/events`.
fn http_event(routes: &[Route], caller: Option<&Caller>, method: &str, target: &str, body: Option<&str>) -> Value {
    let mut event = sample_event("http-api-v2-request.json");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (route_key, params) =
        route_for(routes, method, path).unwrap_or_else(|| ("$default".to_owned(), BTreeMap::new()));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    event["routeKey"] = json!(route_key);
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    if query.is_empty() {
        event.as_object_mut().unwrap().remove("queryStringParameters");
    } else {
        let mut q = serde_json::Map::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            q.insert(k.to_owned(), json!(v));
        }
        event["queryStringParameters"] = Value::Object(q);
    }
    if params.is_empty() {
        event.as_object_mut().unwrap().remove("pathParameters");
    } else {
        event["pathParameters"] = json!(params);
    }
    let ctx = &mut event["requestContext"];
    ctx["routeKey"] = json!(route_key);
    ctx["http"]["method"] = json!(method);
    ctx["http"]["path"] = json!(path);
    ctx["requestId"] = json!(uuid::Uuid::new_v4().simple().to_string());
    ctx["timeEpoch"] = json!(now.as_millis() as u64);
    match caller {
        Some(Caller(claims)) => {
            let all = &mut ctx["authorizer"]["jwt"]["claims"];
            all.as_object_mut().unwrap().remove("customer_id");
            for (k, v) in claims {
                all[*k] = json!(v);
            }
        }
        // No authorizer ran (a route without one): no claims at all.
        None => {
            ctx.as_object_mut().unwrap().remove("authorizer");
        }
    }
    let headers = event["headers"].as_object_mut().unwrap();
    match body {
        Some(b) => {
            headers.insert("content-length".into(), json!(b.len().to_string()));
            event["body"] = json!(b);
        }
        None => {
            headers.remove("content-length");
            headers.remove("content-type");
            event.as_object_mut().unwrap().remove("body");
        }
    }
    event
}

/// An HTTP answer as API Gateway would turn it into one.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    raw: Value,
}

/// One function binary running against its own runtime API emulator.
struct Function {
    name: &'static str,
    routes: &'static [Route],
    api: RuntimeApi,
    process: FunctionProcess,
}

impl Function {
    async fn start(name: &'static str, routes: &'static [Route], aws: &Aws, extra: &[(&str, &str)]) -> Function {
        let binary = bootstrap(name);
        let api = RuntimeApi::start_named(name).await;
        let mut env = aws.function_env();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut process =
            FunctionProcess::spawn(&api, &binary, env).unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        if let Err(e) = process.wait_ready(&api, READY_TIMEOUT).await {
            panic!("{name} did not start polling the runtime API: {e}\noutput:\n{}", process.output());
        }
        Function { name, routes, api, process }
    }

    async fn invoke(&self, event: Value) -> Value {
        match self.api.invoke(event).await {
            Ok(v) => v,
            Err(e) => panic!("invoking {}: {e}\noutput:\n{}", self.name, self.process.output()),
        }
    }

    async fn call(&self, caller: Option<&Caller>, method: &str, target: &str, body: Option<&str>) -> Reply {
        let raw = self.invoke(http_event(self.routes, caller, method, target, body)).await;
        let status =
            raw["statusCode"].as_u64().unwrap_or_else(|| panic!("{} answered without a statusCode: {raw}", self.name))
                as u16;
        let text = match &raw["body"] {
            Value::String(s) if raw["isBase64Encoded"] == json!(true) => {
                use base64_decode::decode;
                String::from_utf8(decode(s)).expect("UTF-8 body")
            }
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body, raw }
    }

    async fn post(&self, caller: &Caller, target: &str, body: Value) -> Reply {
        self.call(Some(caller), "POST", target, Some(&body.to_string())).await
    }

    async fn get(&self, caller: &Caller, target: &str) -> Reply {
        self.call(Some(caller), "GET", target, None).await
    }
}

/// A tiny standard base64 decoder (the test crate has no base64 dependency).
mod base64_decode {
    pub fn decode(s: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        };
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for v in s.bytes().filter_map(value) {
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}

#[track_caller]
fn expect_status(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "unexpected answer: {}", reply.raw);
}

async fn create_customer(invoices: &Function, email: &str) -> String {
    let reply = invoices.post(&merchant(), "/v1/customers", json!({"email": email})).await;
    expect_status(&reply, 201);
    let id = reply.body["id"].as_str().expect("customer id").to_owned();
    assert!(id.starts_with("cus_"), "{id}");
    id
}

async fn register_card(payment_methods: &Function, customer: &str, token: &str) -> Value {
    let reply = payment_methods.post(&owner(customer), "/v1/payment-methods", json!({"payment_method": token})).await;
    expect_status(&reply, 201);
    reply.body
}

#[tokio::test]
async fn a_merchant_customer_registers_a_card_and_the_invoice_comes_back_paid_and_stored() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &[]).await;

    let customer = create_customer(&invoices, "ada@example.com").await;
    let card = register_card(&payment_methods, &customer, "pm_card_visa").await;
    assert_eq!(card["brand"], "visa", "{card}");
    assert_eq!(card["last4"], "4242", "{card}");
    assert_eq!(card["customer_id"], customer.as_str());
    let card_id = card["id"].as_str().expect("payment method id").to_owned();

    let reply = invoices
        .post(&merchant(), "/v1/invoices", json!({"customer_id": customer, "amount": 2500, "currency": "usd"}))
        .await;
    expect_status(&reply, 201);
    let invoice = reply.body;
    assert_eq!(invoice["status"], "paid", "{invoice}");
    assert_eq!(invoice["amount"], 2500);
    assert_eq!(invoice["currency"], "USD", "currency codes come back in upper case");
    assert_eq!(invoice["charge"]["outcome"], "paid", "{invoice}");
    let invoice_id = invoice["id"].as_str().expect("invoice id").to_owned();

    // The owner sees it paid too, through the same binary.
    let seen = invoices.get(&owner(&customer), &format!("/v1/invoices/{invoice_id}")).await;
    expect_status(&seen, 200);
    assert_eq!(seen.body["status"], "paid");
    assert_eq!(seen.body["transactions"][0]["status"], "succeeded", "{}", seen.body);

    // The items are really in the table on moto.
    let stored = aws.get(&format!("CUS#{customer}"), "PROFILE").await.expect("the customer item");
    assert_eq!(data_field(&stored, "email").as_deref(), Some("ada@example.com"));
    let stored = aws.get(&format!("CUS#{customer}"), &format!("PM#{card_id}")).await.expect("the payment method item");
    assert_eq!(data_field(&stored, "last4").as_deref(), Some("4242"));
    let stored = aws.get(&format!("INV#{invoice_id}"), "INVOICE").await.expect("the invoice item");
    assert_eq!(data_field(&stored, "status").as_deref(), Some("paid"), "{stored:?}");
    assert_eq!(data_field(&stored, "customer_id").as_deref(), Some(customer.as_str()));
}

#[tokio::test]
async fn a_team_member_gets_403_on_payment_methods_and_a_request_without_claims_gets_401() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &[]).await;
    let customer = create_customer(&invoices, "team@example.com").await;
    register_card(&payment_methods, &customer, "pm_card_visa").await;

    let listed = payment_methods.get(&member(&customer), "/v1/payment-methods").await;
    expect_status(&listed, 403);
    assert_eq!(listed.body["code"], "forbidden", "{}", listed.body);
    let added = payment_methods
        .post(&member(&customer), "/v1/payment-methods", json!({"payment_method": "pm_card_mastercard"}))
        .await;
    expect_status(&added, 403);

    // The owner still sees exactly the one card: the member changed nothing.
    let mine = payment_methods.get(&owner(&customer), "/v1/payment-methods").await;
    expect_status(&mine, 200);
    assert_eq!(mine.body["data"].as_array().map(Vec::len), Some(1), "{}", mine.body);

    let anonymous = payment_methods.call(None, "GET", "/v1/payment-methods", None).await;
    expect_status(&anonymous, 401);
    assert_eq!(anonymous.body["code"], "unauthorized");
}

const CARD_NUMBER: &str = "4242424242424242";
/// `{"email":"b@example.com","name":"4242424242424242"}`, base64.
const BASE64_BODY_WITH_CARD: &str = "eyJlbWFpbCI6ImJAZXhhbXBsZS5jb20iLCJuYW1lIjoiNDI0MjQyNDI0MjQyNDI0MiJ9";

#[tokio::test]
async fn a_card_number_in_a_request_is_refused_with_400_and_is_neither_stored_nor_logged() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &[]).await;
    let customer = create_customer(&invoices, "card@example.com").await;
    register_card(&payment_methods, &customer, "pm_card_visa").await;

    let spaced = "4242 4242 4242 4242";
    let attempts = [
        (&payment_methods, "/v1/payment-methods", json!({"payment_method": "pm_card_visa", "number": CARD_NUMBER})),
        (&payment_methods, "/v1/payment-methods", json!({"payment_method": CARD_NUMBER})),
        (&invoices, "/v1/customers", json!({"email": "x@example.com", "name": spaced})),
    ];
    for (function, path, body) in attempts {
        let caller = if path == "/v1/customers" { merchant() } else { owner(&customer) };
        let reply = function.post(&caller, path, body).await;
        expect_status(&reply, 400);
        assert_eq!(reply.body["code"], "raw_card_data_refused", "{}", reply.body);
        assert!(!reply.raw.to_string().contains(CARD_NUMBER), "the answer echoes the number: {}", reply.raw);
    }
    // In the query string, as typed and URL-encoded (`+` and `%20` decode to spaces).
    for query in
        [format!("card={CARD_NUMBER}"), "card=4242+4242+4242+4242".into(), "card=4242%204242%204242%204242".into()]
    {
        let in_query = payment_methods.get(&owner(&customer), &format!("/v1/payment-methods?{query}")).await;
        expect_status(&in_query, 400);
        assert_eq!(in_query.body["code"], "raw_card_data_refused", "?{query}: {}", in_query.body);
    }
    // A body API Gateway passed base64-encoded (it does for non-text content types).
    let mut event = http_event(invoices_api::ROUTES, Some(&merchant()), "POST", "/v1/customers", Some("{}"));
    event["headers"]["content-type"] = json!("application/octet-stream");
    event["body"] = json!(BASE64_BODY_WITH_CARD);
    event["isBase64Encoded"] = json!(true);
    let encoded = invoices.invoke(event).await;
    assert_eq!(encoded["statusCode"], 400, "{encoded}");
    assert!(encoded["body"].as_str().is_some_and(|b| b.contains("raw_card_data_refused")), "{encoded}");

    // Nothing was stored: the table holds the customer, the card and the PSP's token record,
    // and none of them has the number, spaced or not.
    let items = aws.scan().await;
    assert!(items.len() >= 2, "expected the customer and card items, found {}", items.len());
    for item in &items {
        let text = format!("{item:?}");
        assert!(!text.contains(CARD_NUMBER) && !text.contains(spaced), "a stored item holds the card number: {text}");
    }
    let customers =
        aws.scan().await.iter().filter(|i| data_field(i, "email").as_deref() == Some("x@example.com")).count();
    assert_eq!(customers, 0, "the refused customer was created anyway");

    // Nor logged: the functions' whole output (their refusal is logged, without the number).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for function in [&payment_methods, &invoices] {
        let output = function.process.output();
        assert!(
            output.contains("refused a request carrying a card number"),
            "{} logged no refusal:\n{output}",
            function.name
        );
        assert!(
            !output.contains(CARD_NUMBER) && !output.contains(spaced),
            "{} logged the card number:\n{output}",
            function.name
        );
    }
}

#[tokio::test]
async fn a_merchant_creates_a_subscription_and_reads_it_back_with_its_payments() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &[]).await;
    let subscriptions = Function::start("subscriptions-api", subscriptions_api::ROUTES, &aws, &[]).await;
    let customer = create_customer(&invoices, "sub@example.com").await;
    register_card(&payment_methods, &customer, "pm_card_visa").await;

    let created = subscriptions
        .post(
            &merchant(),
            "/v1/subscriptions",
            json!({"customer_id": customer, "amount": 1500, "currency": "usd", "interval": "month", "description": "Pro plan"}),
        )
        .await;
    expect_status(&created, 201);
    let sub = created.body;
    assert_eq!(sub["status"], "active", "{sub}");
    assert_eq!(sub["first_payment"]["outcome"], "paid", "{sub}");
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();
    assert!(sub_id.starts_with("sub_"), "{sub_id}");

    let plain = subscriptions.get(&merchant(), &format!("/v1/subscriptions/{sub_id}")).await;
    expect_status(&plain, 200);
    assert!(plain.body.get("payments").is_none(), "payments only come with include_sub_objects: {}", plain.body);

    let full = subscriptions.get(&merchant(), &format!("/v1/subscriptions/{sub_id}?include_sub_objects=true")).await;
    expect_status(&full, 200);
    assert_eq!(full.body["id"], sub_id.as_str());
    assert_eq!(full.body["interval"], "month");
    let payments = full.body["payments"].as_array().unwrap_or_else(|| panic!("no payments: {}", full.body));
    // Payment 1, approved, then the upcoming payment 2, waiting for its renewal.
    assert_eq!(payments.len(), 2, "{}", full.body);
    assert_eq!(payments[0]["payment_number"], 1);
    assert_eq!(payments[0]["status"], "approved", "{}", full.body);
    assert_eq!(payments[0]["amount"], 1500);
    assert_eq!(payments[0]["attempt_count"], 1);
    assert_eq!(payments[1]["payment_number"], 2);
    assert_eq!(payments[1]["status"], "waiting", "{}", full.body);
    assert_eq!(payments[1]["invoice_id"], Value::Null);
    assert_eq!(payments[1]["due_at"], full.body["next_renewal_at"]);

    // The first payment's invoice is the one the subscription points at, paid, in the table.
    let invoice_id = sub["first_payment"]["invoice_id"].as_str().expect("first invoice id");
    assert_eq!(payments[0]["invoice_id"], invoice_id);
    let stored = aws.get(&format!("INV#{invoice_id}"), "INVOICE").await.expect("the first invoice item");
    assert_eq!(data_field(&stored, "status").as_deref(), Some("paid"));
    assert!(aws.get(&format!("SUB#{sub_id}"), "SUBSCRIPTION").await.is_some(), "the subscription item");

    // A bad flag value is a 400, not silently false.
    let bad = subscriptions.get(&merchant(), &format!("/v1/subscriptions/{sub_id}?include_sub_objects=yes")).await;
    expect_status(&bad, 400);
}

/// An SQS event from the sample in `infra/events`, one record per `(message id, body)`.
fn sqs_event(messages: &[(&str, String)]) -> Value {
    let mut event = sample_event("sqs-charge-message.json");
    let template = event["Records"][0].clone();
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            let mut record = template.clone();
            record["messageId"] = json!(id);
            record["body"] = json!(body);
            record.as_object_mut().unwrap().remove("md5OfBody");
            record
        })
        .collect();
    event["Records"] = json!(records);
    event
}

#[tokio::test]
async fn the_charge_worker_retries_a_declined_invoice_and_reports_only_the_poison_message() {
    let aws = Aws::new().await;
    // Retries one second after the first failure, so the charge message is due at once.
    let schedule = [("RECOUP_RETRY_SCHEDULE", "1s,1h")];
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &schedule).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &schedule).await;
    let worker = Function::start("charge-worker", &[], &aws, &schedule).await;

    let customer = create_customer(&invoices, "declined@example.com").await;
    register_card(&payment_methods, &customer, "pm_card_chargeCustomerFail").await;
    let issued = invoices
        .post(&merchant(), "/v1/invoices", json!({"customer_id": customer, "amount": 2500, "currency": "usd"}))
        .await;
    expect_status(&issued, 201);
    assert_eq!(issued.body["status"], "open", "{}", issued.body);
    assert_eq!(issued.body["charge"]["outcome"], "declined", "{}", issued.body);
    assert_eq!(issued.body["transactions"][0]["error_type"], "declined", "{}", issued.body);
    let invoice_id = issued.body["id"].as_str().expect("invoice id").to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let event = sqs_event(&[
        ("msg-declined-invoice", json!({"invoice_id": invoice_id}).to_string()),
        ("msg-poison", "{not json".to_owned()),
        ("msg-unknown-invoice", json!({"invoice_id": "in_01jq7m3v8k2x9f4t6w0yz5abcd"}).to_string()),
    ]);
    let response = worker.invoke(event).await;
    assert_eq!(response, json!({"batchItemFailures": [{"itemIdentifier": "msg-poison"}]}));

    // The worker really made the retry: a second declined attempt, the next one scheduled.
    let after = invoices.get(&merchant(), &format!("/v1/invoices/{invoice_id}")).await;
    expect_status(&after, 200);
    assert_eq!(after.body["status"], "open", "{}", after.body);
    assert_eq!(after.body["attempt_count"], 2, "{}", after.body);
    let transactions = after.body["transactions"].as_array().expect("transactions");
    assert!(transactions.iter().all(|t| t["status"] == "failed" && t["error_type"] == "declined"), "{}", after.body);
    assert_eq!(transactions[1]["trigger"], "retry", "{}", after.body);
    assert!(after.body["next_attempt_at"].is_string(), "{}", after.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = worker.process.output();
    assert!(logs.contains("poison_message"), "the poison message is logged:\n{logs}");
}

#[tokio::test]
async fn a_function_without_its_table_exits_at_init_naming_the_missing_setting() {
    let api = RuntimeApi::start_named("invoices-api").await;
    let env = [("AWS_REGION", "us-east-1"), ("RECOUP_EVENT_BUS", "bus")];
    let mut process = FunctionProcess::spawn(&api, &bootstrap("invoices-api"), env).expect("spawn");
    match process.wait_ready(&api, READY_TIMEOUT).await {
        Err(InvokeError::Exited(message)) => assert!(message.contains("RECOUP_TABLE must be set"), "{message}"),
        other => panic!("expected the process to exit at init, got {other:?}"),
    }
    assert_eq!(api.polls(), 0);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_is_replayed_and_creates_nothing_more() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let post = || {
        let mut event = http_event(
            invoices_api::ROUTES,
            Some(&merchant()),
            "POST",
            "/v1/customers",
            Some(r#"{"email":"once@example.com"}"#),
        );
        event["headers"]["idempotency-key"] = json!("create-once-1");
        event
    };
    let first = invoices.invoke(post()).await;
    let again = invoices.invoke(post()).await;
    assert_eq!(first["statusCode"], 201, "{first}");
    assert_eq!(again["statusCode"], 201, "{again}");
    assert_eq!(first["body"], again["body"], "the replay is the first answer");
    assert_eq!(again["headers"]["idempotency-replayed"], "true", "{again}");
    assert!(first["headers"].get("idempotency-replayed").is_none(), "{first}");
    let customers =
        aws.scan().await.iter().filter(|i| data_field(i, "email").as_deref() == Some("once@example.com")).count();
    assert_eq!(customers, 1);

    // The same key with another body is refused.
    let mut other = post();
    other["body"] = json!(r#"{"email":"twice@example.com"}"#);
    let reused = invoices.invoke(other).await;
    assert_eq!(reused["statusCode"], 422, "{reused}");
}

/// `template.yaml` deploys the HTTP API on a named stage (`StageName: !Ref Stage`, default
/// `prod`). API Gateway then puts the stage in front of `rawPath` and
/// `requestContext.http.path` (`/prod/v1/customers`), while the route key stays
/// `POST /v1/customers`.
#[tokio::test]
async fn a_request_through_the_named_stage_of_the_template_reaches_its_route() {
    let aws = Aws::new().await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let mut event = http_event(
        invoices_api::ROUTES,
        Some(&merchant()),
        "POST",
        "/v1/customers",
        Some(r#"{"email":"stage@example.com"}"#),
    );
    event["rawPath"] = json!("/prod/v1/customers");
    event["requestContext"]["http"]["path"] = json!("/prod/v1/customers");
    event["requestContext"]["stage"] = json!("prod");
    let answer = invoices.invoke(event).await;
    assert_eq!(answer["statusCode"], 201, "{answer}");
}

/// The PSP webhook receiver as deployed: its signing secret in Secrets Manager (two values,
/// as while rolling it), Stripe's signed event in an HTTP API v2 payload without an
/// authorizer, and the attempt it reports settled in DynamoDB. A forged signature is
/// refused with nothing written.
#[tokio::test]
async fn the_webhook_receiver_reads_its_secret_from_secrets_manager_and_settles_a_signed_payment() {
    let aws = Aws::new().await;
    let config = recoup_shared::aws::sdk_config_for_endpoint(&aws.endpoint).await;
    let secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let arn = aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(format!("recoup/webhook-{}", uuid::Uuid::new_v4().simple()))
        .secret_string(format!("whsec_previous,{secret}"))
        .send()
        .await
        .expect("CreateSecret on moto")
        .arn
        .expect("an ARN");
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &[]).await;
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &[]).await;
    let hooks =
        Function::start("psp-webhooks", psp_webhooks::ROUTES, &aws, &[("RECOUP_STRIPE_WEBHOOK_SECRET_ARN", &arn)])
            .await;

    // An attempt whose answer was lost: pending until the PSP says.
    let cus = create_customer(&invoices, "hooks@example.com").await;
    register_card(&payment_methods, &cus, "pm_sandbox_visa_timeout").await;
    let issued = invoices
        .post(&merchant(), "/v1/invoices", json!({"customer_id": cus, "amount": 1900, "currency": "usd"}))
        .await;
    expect_status(&issued, 201);
    assert_eq!(issued.body["transactions"][0]["status"], "pending");
    let invoice_id = recoup_shared::ids::InvoiceId::parse(issued.body["id"].as_str().unwrap()).unwrap();
    let repo = recoup_shared::store::repo::Repo::new(std::sync::Arc::new(
        recoup_shared::testkit::dynamo_store(&aws.table).await,
    ));
    let key = repo.invoice(&invoice_id).await.unwrap().unwrap().transactions()[0].idempotency_key.clone();

    let event = json!({
        "id": "evt_lambda_1", "object": "event", "type": "payment_intent.succeeded", "created": 1_700_000_000,
        "data": {"object": {"id": "pi_lambda", "object": "payment_intent", "status": "succeeded", "amount": 1900,
            "currency": "usd", "metadata": {"recoup_idempotency_key": key, "recoup_invoice_id": invoice_id.as_str()}}},
    })
    .to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let deliver = |signature: String| {
        let mut e = http_event(psp_webhooks::ROUTES, None, "POST", "/v1/webhooks/stripe", Some(&event));
        e["headers"]["stripe-signature"] = json!(signature);
        e
    };
    let forged = hooks.invoke(deliver(recoup_stripe::signature::sign(event.as_bytes(), "whsec_forger", now))).await;
    assert_eq!(forged["statusCode"], 400, "{forged}");
    assert_eq!(repo.invoice(&invoice_id).await.unwrap().unwrap().status().as_str(), "open");

    let answer = hooks.invoke(deliver(recoup_stripe::signature::sign(event.as_bytes(), &secret, now))).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert!(answer["body"].as_str().unwrap_or_default().contains("\"paid\""), "{answer}");
    let inv = repo.invoice(&invoice_id).await.unwrap().unwrap();
    assert_eq!(inv.status().as_str(), "paid");
    assert_eq!(inv.transactions()[0].psp_charge_id.as_deref(), Some("pi_lambda"));
}

// The emulator itself, driven by a plain HTTP client the way the runtime client drives it.

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

#[tokio::test]
async fn the_emulator_hands_the_event_to_the_poller_and_returns_its_response() {
    let api = RuntimeApi::start_named("echo").await;
    let base = format!("http://{}", api.addr());
    assert!(api.ready_at().is_none());
    let poller = tokio::spawn({
        let base = base.clone();
        async move {
            let client = reqwest::Client::new();
            let next = client.get(format!("{base}{NEXT}")).send().await.expect("poll /next");
            let headers = next.headers().clone();
            let event: Value = next.json().await.expect("event JSON");
            let id = headers["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
            let posted = client
                .post(format!("{base}/2018-06-01/runtime/invocation/{id}/response"))
                .json(&json!({"echo": event}))
                .send()
                .await
                .expect("post the response");
            (headers, posted.status().as_u16())
        }
    });
    let ready = api.wait_ready(Duration::from_secs(5)).await.expect("the poller is ready");
    let answer = api.invoke(json!({"n": 1})).await.expect("an answer");
    assert_eq!(answer, json!({"echo": {"n": 1}}));
    let (headers, status) = poller.await.unwrap();
    assert_eq!(status, 202);
    let deadline: u128 = headers["lambda-runtime-deadline-ms"].to_str().unwrap().parse().unwrap();
    assert!(deadline > SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis());
    assert_eq!(headers["lambda-runtime-invoked-function-arn"], "arn:aws:lambda:us-east-1:123456789012:function:echo");
    assert!(headers["lambda-runtime-trace-id"].to_str().unwrap().starts_with("Root=1-"));
    assert_eq!(api.ready_at(), Some(ready));
}

#[tokio::test]
async fn the_emulator_reports_invocation_and_init_errors_and_times_out_unpolled_invocations() {
    let api = RuntimeApi::start().await;
    let base = format!("http://{}", api.addr());
    let client = reqwest::Client::new();
    let failing = tokio::spawn({
        let (base, client) = (base.clone(), client.clone());
        async move {
            let next = client.get(format!("{base}{NEXT}")).send().await.unwrap();
            let id = next.headers()["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
            client
                .post(format!("{base}/2018-06-01/runtime/invocation/{id}/error"))
                .header("lambda-runtime-function-error-type", "unhandled")
                .json(&json!({"errorType": "poison_message", "errorMessage": "bad body"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    match api.invoke(json!({})).await {
        Err(InvokeError::Function(e)) => {
            assert_eq!((e.error_type.as_str(), e.error_message.as_str()), ("poison_message", "bad body"))
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    assert_eq!(failing.await.unwrap().as_u16(), 202);

    // Nobody polls now: the invocation times out, and a late poller does not get it.
    let timeout = Duration::from_millis(200);
    assert_eq!(api.invoke_with_timeout(json!({"late": true}), timeout).await, Err(InvokeError::Timeout(timeout)));
    let late = client.get(format!("{base}{NEXT}")).timeout(Duration::from_millis(300)).send().await;
    assert!(late.is_err(), "the abandoned invocation was handed out: {late:?}");

    let unknown =
        client.post(format!("{base}/2018-06-01/runtime/invocation/nope/response")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 400);

    let init = client
        .post(format!("{base}/2018-06-01/runtime/init/error"))
        .json(&json!({"errorType": "Runtime.InitError", "errorMessage": "no table"}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status().as_u16(), 202);
    assert!(
        matches!(api.wait_ready(Duration::from_secs(1)).await, Err(InvokeError::Init(e)) if e.error_message == "no table")
    );
    assert!(matches!(api.invoke(json!({})).await, Err(InvokeError::Init(_))));
}

#[tokio::test]
async fn a_poll_abandoned_by_a_killed_function_does_not_swallow_the_next_event() {
    let api = RuntimeApi::start().await;
    let base = format!("http://{}", api.addr());
    // A poller that goes away (its connection closes) while waiting, like a killed process.
    let gone = reqwest::Client::new().get(format!("{base}{NEXT}")).timeout(Duration::from_millis(200)).send().await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let poller = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let next = client.get(format!("{base}{NEXT}")).send().await.unwrap();
        let id = next.headers()["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
        client.post(format!("{base}/2018-06-01/runtime/invocation/{id}/response")).body("\"ok\"").send().await.unwrap();
    });
    assert_eq!(api.invoke_with_timeout(json!({}), Duration::from_secs(5)).await, Ok(json!("ok")));
    poller.await.unwrap();
}

// The charge worker killed between claim and settle.

/// Where the proxy in front of moto holds the sandbox's write of a charge.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hold {
    /// The request is never forwarded: the PSP has not seen the charge.
    BeforeThePsp,
    /// Forwarded and committed, the answer held: the PSP charged, the worker never learns.
    AfterThePsp,
}

/// A pass-through proxy to moto (the function's `AWS_ENDPOINT_URL`) that holds, forever,
/// the one DynamoDB call in which the sandbox PSP records a charge (a `TransactWriteItems`
/// writing a `PSP#CHARGE#` item), so the function process is inside its PSP call, after
/// the claim was committed and before the settle, when the test kills it. No production
/// code knows about it.
struct HoldingProxy {
    url: String,
    held: tokio::sync::watch::Receiver<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct ProxyState {
    upstream: String,
    hold: Hold,
    held: tokio::sync::watch::Sender<bool>,
    http: reqwest::Client,
}

async fn proxy_forward(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<ProxyState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let is_charge = target.ends_with(".TransactWriteItems") && String::from_utf8_lossy(&body).contains("PSP#CHARGE#");
    if is_charge && s.hold == Hold::BeforeThePsp {
        s.held.send_replace(true);
        std::future::pending::<()>().await;
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = s.http.request(method, format!("{}{path}", s.upstream)).body(body);
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
            req = req.header(name, value);
        }
    }
    let Ok(resp) = req.send().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    if is_charge && s.hold == Hold::AfterThePsp {
        assert!(status.is_success(), "moto refused the sandbox's charge write: {status}");
        s.held.send_replace(true);
        std::future::pending::<()>().await;
    }
    let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
    *out.status_mut() = status;
    for (name, value) in &resp_headers {
        if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

use axum::response::IntoResponse;

impl HoldingProxy {
    async fn start(upstream: &str, hold: Hold) -> HoldingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (held_tx, held) = tokio::sync::watch::channel(false);
        let state = std::sync::Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            hold,
            held: held_tx,
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(proxy_forward).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HoldingProxy { url, held, server }
    }

    /// Waits until the function is inside its PSP call.
    async fn wait_held(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.held.wait_for(|h| *h)).await.is_ok_and(|r| r.is_ok())
    }
}

/// The sandbox's record of a charge, by idempotency key: whether it succeeded, its id.
async fn sandbox_charge(aws: &Aws, key: &str) -> Option<(bool, Option<String>)> {
    let item = aws.get(&format!("PSP#CHARGE#{key}"), "CHARGE").await?;
    let outcome = body(&item)?.get("outcome")?.clone();
    let succeeded = outcome.get("status").and_then(Value::as_str) == Some("succeeded");
    Some((succeeded, outcome.get("charge_id").and_then(Value::as_str).map(str::to_owned)))
}

/// The charge worker claims a retry (a pending attempt on the invoice and the card's ledger)
/// and calls the sandbox PSP; while it is inside that call it is killed with SIGKILL. The
/// same SQS message, delivered again once the attempt is due for reconciliation, goes to a
/// fresh worker process: the charge is settled exactly once.
async fn a_charge_worker_killed_between_claim_and_settle(hold: Hold) {
    const RECONCILE_AFTER: Duration = Duration::from_secs(30); // the least a function accepts
    let aws = Aws::new().await;
    let policy = [("RECOUP_RETRY_SCHEDULE", "1s,1h"), ("RECOUP_RECONCILE_AFTER", "30s")];
    let invoices = Function::start("invoices-api", invoices_api::ROUTES, &aws, &policy).await;
    let payment_methods = Function::start("payment-methods-api", payment_methods_api::ROUTES, &aws, &policy).await;
    // Declines once (insufficient funds), then pays: the first attempt is the API's, the
    // retry the worker's.
    let customer = create_customer(&invoices, "killed-worker@example.com").await;
    register_card(&payment_methods, &customer, "pm_sandbox_visa_51_recover1_idkilledworker").await;
    let issued = invoices
        .post(&merchant(), "/v1/invoices", json!({"customer_id": customer, "amount": 4100, "currency": "usd"}))
        .await;
    expect_status(&issued, 201);
    assert_eq!(issued.body["charge"]["outcome"], "declined", "{}", issued.body);
    let invoice_id = recoup_shared::ids::InvoiceId::parse(issued.body["id"].as_str().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut proxy = HoldingProxy::start(&aws.endpoint, hold).await;
    let mut env = policy.to_vec();
    env.push(("AWS_ENDPOINT_URL", proxy.url.as_str()));
    let mut doomed = Function::start("charge-worker", &[], &aws, &env).await;
    let message = sqs_event(&[("msg-killed-worker", json!({"invoice_id": invoice_id.as_str()}).to_string())]);
    let invocation = doomed.api.invoke_with_timeout(message.clone(), Duration::from_secs(60));
    tokio::pin!(invocation);
    tokio::select! {
        answer = &mut invocation => panic!(
            "the worker answered ({answer:?}) without reaching the sandbox's charge write ({hold:?})\noutput:\n{}",
            doomed.process.output()
        ),
        held = proxy.wait_held(Duration::from_secs(20)) => assert!(
            held,
            "the worker never reached the sandbox's charge write ({hold:?})\noutput:\n{}",
            doomed.process.output()
        ),
    }
    doomed.process.kill().await; // SIGKILL, inside the PSP call
    drop(proxy);

    // Between claim and settle: the retry is claimed and pending.
    let repo = recoup_shared::store::repo::Repo::new(std::sync::Arc::new(
        recoup_shared::testkit::dynamo_store(&aws.table).await,
    ));
    let claimed = repo.invoice(&invoice_id).await.unwrap().unwrap();
    let txns = claimed.transactions().to_vec();
    assert_eq!(txns.len(), 2, "the worker's claim is committed: {txns:?}");
    assert_eq!(txns[1].status, recoup_shared::domain::invoice::TransactionStatus::Pending, "{txns:?}");
    let key = txns[1].idempotency_key.clone();
    let at_psp = sandbox_charge(&aws, &key).await;
    assert_eq!(
        at_psp.is_some(),
        hold == Hold::AfterThePsp,
        "the sandbox's record of the charge when killed: {at_psp:?}"
    );

    // SQS delivers the message again after its visibility timeout; here, once the pending
    // attempt is due for reconciliation, to a fresh process.
    tokio::time::sleep(RECONCILE_AFTER + Duration::from_secs(1)).await;
    let fresh = Function::start("charge-worker", &[], &aws, &policy).await;
    let answer = fresh.invoke(message.clone()).await;
    assert_eq!(answer, json!({"batchItemFailures": []}), "output:\n{}", fresh.process.output());
    // And once more, as SQS may: nothing changes.
    assert_eq!(fresh.invoke(message).await, json!({"batchItemFailures": []}));

    let settled = repo.invoice(&invoice_id).await.unwrap().unwrap();
    let txns = settled.transactions();
    use recoup_shared::domain::invoice::TransactionStatus;
    assert_eq!(settled.status().as_str(), "paid", "{txns:?}\noutput:\n{}", fresh.process.output());
    assert_eq!(txns.len(), 2, "the killed attempt was settled, not charged anew: {txns:?}");
    assert_eq!(txns.iter().filter(|t| t.status == TransactionStatus::Succeeded).count(), 1, "{txns:?}");
    assert_eq!(txns[1].status, TransactionStatus::Succeeded, "{txns:?}");
    let charge = sandbox_charge(&aws, &key).await;
    assert_eq!(charge.as_ref().map(|c| c.0), Some(true), "one successful sandbox charge under the key");
    assert_eq!(charge.and_then(|c| c.1), txns[1].psp_charge_id, "the settle recorded the sandbox's charge");
    let items = aws.scan().await;
    let charges = items
        .iter()
        .filter(|i| i.get("PK").and_then(|v| v.as_s().ok()).is_some_and(|pk| pk.starts_with("PSP#CHARGE#")))
        .count();
    assert_eq!(charges, 2, "the declined first attempt and the one retry: nothing else reached the PSP");
    let paid_events = items
        .iter()
        .filter(|i| i.get("PK").and_then(|v| v.as_s().ok()).is_some_and(|pk| pk.starts_with("EVT#")))
        .filter(|i| {
            let text = format!("{i:?}");
            text.contains("invoice.paid") && text.contains(invoice_id.as_str())
        })
        .count();
    assert_eq!(paid_events, 1, "the invoice was paid once");
}

#[tokio::test]
async fn a_charge_worker_killed_before_the_psp_answers_is_settled_once_by_the_next_delivery() {
    a_charge_worker_killed_between_claim_and_settle(Hold::BeforeThePsp).await;
}

#[tokio::test]
async fn a_charge_worker_killed_after_the_psp_charged_is_settled_once_by_the_next_delivery() {
    a_charge_worker_killed_between_claim_and_settle(Hold::AfterThePsp).await;
}
