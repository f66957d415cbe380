//! `template.yaml` against the code. The template is written by hand; these tests fail when
//! it and the code disagree: the function resources against the crates under `functions/`,
//! the API events against each crate's `ROUTES`, the EventBridge rules and queues against
//! `recoup_lambda::routing`, the table against the store's keys and indexes, the
//! environment against `Settings::from_lookup`, and each function's IAM grants against
//! what it does.
//!
//! Every check returns the problems it found instead of panicking on the first, so one run
//! lists everything that is out of step, and the last test can show that each check
//! notices a template edited to disagree with the code.
//!
//! CloudFormation's short-form tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`) arrive from
//! serde_yaml_ng as tagged values; [`to_json`] rewrites them into the long forms
//! (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, `{"Fn::Sub": ...}`), so the checks see one
//! shape whichever form the template uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use recoup_functions::Trigger;
use recoup_lambda::app::Settings;
use recoup_lambda::http::Route;
use recoup_lambda::routing::{self, MAX_RECEIVE_COUNT, RULES};
use recoup_shared::domain::events::{EVENT_SOURCE, EventPayload};
use recoup_shared::store::Index;
use serde_json::{Map, Value as Json, json};

// ------------------------------------------------------------------------------------------
// What the code says, where the code cannot say it itself.
// ------------------------------------------------------------------------------------------

/// The HTTP functions and the routes each serves, from the registry.
fn http_functions() -> Vec<(&'static str, &'static [Route])> {
    recoup_functions::FUNCTIONS
        .iter()
        .filter_map(|f| match f.trigger {
            Trigger::Http { routes, .. } => Some((f.name, routes)),
            Trigger::Queue { .. } | Trigger::Schedule { .. } => None,
        })
        .collect()
}

/// The SQS consumers and the queue (logical id) each reads, from the registry.
fn queue_consumers() -> Vec<(&'static str, &'static str)> {
    recoup_functions::FUNCTIONS
        .iter()
        .filter_map(|f| match f.trigger {
            Trigger::Queue { queue, .. } => Some((f.name, queue)),
            Trigger::Http { .. } | Trigger::Schedule { .. } => None,
        })
        .collect()
}

/// The scheduled functions and their schedules, from the registry.
fn scheduled_functions() -> Vec<(&'static str, &'static str)> {
    recoup_functions::schedules().map(|(f, rate, _)| (f.name, rate)).collect()
}

/// The schedulers put work on the charge queue (`App::charge_queue`, from
/// `RECOUP_CHARGE_QUEUE_URL`); nothing else sends to a queue.
const CHARGE_QUEUE_SENDERS: [&str; 2] = ["retry-scheduler", "renewal-scheduler"];

/// Functions that never change state, so never publish events: the retry scheduler only
/// reads the schedule index and enqueues; the notifier only records emails.
const NON_PUBLISHERS: [&str; 2] = ["retry-scheduler", "notifier"];

/// Everything `DynamoStore` calls: `GetItem`, `Query`, `PutItem`, `DeleteItem`, and
/// `TransactWriteItems`, which IAM authorizes per item as Put/Delete/ConditionCheck.
const DYNAMODB_ACTIONS: [&str; 5] =
    ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"];

// ------------------------------------------------------------------------------------------
// Loading the template.
// ------------------------------------------------------------------------------------------

fn template() -> Json {
    let path = recoup_tests::workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("template.yaml is not YAML: {e}"));
    to_json(yaml)
}

/// YAML to JSON, short-form intrinsic functions to their long forms.
fn to_json(v: serde_yaml_ng::Value) -> Json {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Json::Null,
        Y::Bool(b) => Json::Bool(b),
        Y::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => json!(u),
            (None, Some(i), _) => json!(i),
            (None, None, f) => json!(f),
        },
        Y::String(s) => Json::String(s),
        Y::Sequence(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other).unwrap_or_default().trim().to_owned(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = to_json(tagged.value);
            match name.as_str() {
                "Ref" => json!({ "Ref": inner }),
                "Condition" => json!({ "Condition": inner }),
                // `!GetAtt Table.Arn` is the string "Table.Arn"; the long form is a pair.
                "GetAtt" => {
                    let pair = match inner {
                        Json::String(s) => match s.split_once('.') {
                            Some((resource, attribute)) => json!([resource, attribute]),
                            None => json!([s]),
                        },
                        other => other,
                    };
                    json!({ "Fn::GetAtt": pair })
                }
                other => Json::Object(Map::from_iter([(format!("Fn::{other}"), inner)])),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Reading the template.
// ------------------------------------------------------------------------------------------

fn resources(t: &Json) -> Map<String, Json> {
    t.get("Resources").and_then(Json::as_object).cloned().unwrap_or_default()
}

fn resources_of_type(t: &Json, ty: &str) -> Vec<(String, Json)> {
    resources(t).into_iter().filter(|(_, r)| r["Type"] == ty).collect()
}

/// `{"Ref": "X"}` -> `X`.
fn reference(v: &Json) -> Option<&str> {
    v.as_object().filter(|o| o.len() == 1)?.get("Ref")?.as_str()
}

/// `{"Fn::GetAtt": ["X", "Arn"]}` (or the long form's `"X.Arn"`) -> `(X, Arn)`.
fn get_att(v: &Json) -> Option<(String, String)> {
    match v.as_object().filter(|o| o.len() == 1)?.get("Fn::GetAtt")? {
        Json::Array(parts) => match parts.as_slice() {
            [Json::String(r), Json::String(a)] => Some((r.clone(), a.clone())),
            _ => None,
        },
        Json::String(s) => s.split_once('.').map(|(r, a)| (r.to_owned(), a.to_owned())),
        _ => None,
    }
}

fn is_arn_of(v: &Json, logical_id: &str) -> bool {
    get_att(v).is_some_and(|(r, a)| r == logical_id && a == "Arn")
}

/// A number, or a string holding one (CloudFormation accepts both).
fn number(v: &Json) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A string or a list of strings, as a list.
fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// A single value or a list, as a list.
fn list(v: &Json) -> Vec<Json> {
    match v {
        Json::Null => Vec::new(),
        Json::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

fn is_true(v: &Json) -> bool {
    v.as_bool() == Some(true) || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

fn globals(t: &Json) -> Json {
    t.pointer("/Globals/Function").cloned().unwrap_or(Json::Null)
}

/// A function property, falling back to `Globals.Function`.
fn function_property(t: &Json, function: &Json, name: &str) -> Json {
    match function.pointer(&format!("/Properties/{name}")) {
        Some(v) => v.clone(),
        None => globals(t).get(name).cloned().unwrap_or(Json::Null),
    }
}

/// Lambda's default timeout is 3 seconds.
fn function_timeout(t: &Json, function: &Json) -> u64 {
    number(&function_property(t, function, "Timeout")).unwrap_or(3)
}

fn binary_of(function: &Json) -> Option<&str> {
    function.pointer("/Metadata/BuildProperties/Binary")?.as_str()
}

/// Every function resource, by the binary it is built from.
fn functions_by_binary(t: &Json) -> BTreeMap<String, Vec<(String, Json)>> {
    let mut out: BTreeMap<String, Vec<(String, Json)>> = BTreeMap::new();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        out.entry(binary_of(&f).unwrap_or("").to_owned()).or_default().push((id, f));
    }
    out
}

/// The one function built from `binary` (its logical id and resource).
fn function(t: &Json, binary: &str) -> Option<(String, Json)> {
    match functions_by_binary(t).remove(binary) {
        Some(mut found) if found.len() == 1 => found.pop(),
        _ => None,
    }
}

/// A function's events of the given types, by event name.
fn events_of(function: &Json, types: &[&str]) -> Vec<(String, Json)> {
    function
        .pointer("/Properties/Events")
        .and_then(Json::as_object)
        .map(|events| {
            events
                .iter()
                .filter(|(_, e)| e["Type"].as_str().is_some_and(|ty| types.contains(&ty)))
                .map(|(name, e)| (name.clone(), e.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// `Globals.Function.Environment.Variables` overlaid with the function's own (SAM merges
/// the two maps).
fn environment(t: &Json, function: &Json) -> Map<String, Json> {
    let mut vars = globals(t).pointer("/Environment/Variables").and_then(Json::as_object).cloned().unwrap_or_default();
    if let Some(own) = function.pointer("/Properties/Environment/Variables").and_then(Json::as_object) {
        vars.extend(own.clone());
    }
    vars
}

// ------------------------------------------------------------------------------------------
// Reading the code on disk.
// ------------------------------------------------------------------------------------------

/// A function crate: its directory name, package name and binary name.
#[derive(Debug, Clone)]
struct FunctionCrate {
    dir: String,
    package: String,
    binary: String,
    manifest: String,
}

/// The `name` in a TOML section (`[package]` or the first `[[bin]]`), without a TOML parser:
/// our manifests keep it on one line.
fn section_name(manifest: &str, section: &str) -> Option<String> {
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Every crate under `functions/` that builds a binary (so every Lambda function; the
/// shared library, `functions/common`, has none).
fn function_crates() -> Vec<FunctionCrate> {
    let dir = recoup_tests::workspace_root().join("functions");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let manifest_path = path.join("Cargo.toml");
        if !manifest_path.is_file() || !path.join("src/main.rs").is_file() {
            continue;
        }
        let manifest = std::fs::read_to_string(&manifest_path).expect("a readable Cargo.toml");
        let package = section_name(&manifest, "[package]")
            .unwrap_or_else(|| panic!("{} has no package name", manifest_path.display()));
        let binary = section_name(&manifest, "[[bin]]").unwrap_or_else(|| package.clone());
        let dir = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push(FunctionCrate { dir, package, binary, manifest });
    }
    out.sort_by(|a, b| a.binary.cmp(&b.binary));
    out
}

// ------------------------------------------------------------------------------------------
// The checks. Each returns the disagreements it found.
// ------------------------------------------------------------------------------------------

type Problems = Vec<String>;

fn check_functions(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let crates = function_crates();
    let by_binary = functions_by_binary(t);
    for c in &crates {
        match by_binary.get(&c.binary).map(Vec::len).unwrap_or(0) {
            1 => {}
            n => problems.push(format!(
                "functions/{} (binary {}) should be built by exactly one AWS::Serverless::Function with \
                 Metadata.BuildProperties.Binary: {}, found {n}",
                c.dir, c.binary, c.binary
            )),
        }
        if c.binary != c.package {
            problems
                .push(format!("functions/{}: binary {} is not named after its crate {}", c.dir, c.binary, c.package));
        }
    }
    let known: BTreeSet<&str> = crates.iter().map(|c| c.binary.as_str()).collect();
    let g = globals(t);
    for (binary, found) in &by_binary {
        for (id, f) in found {
            if !known.contains(binary.as_str()) {
                problems.push(format!("{id} builds binary {binary:?}, which no crate under functions/ provides"));
            }
            if f.pointer("/Metadata/BuildMethod").and_then(Json::as_str) != Some("rust-cargolambda") {
                problems.push(format!("{id}: Metadata.BuildMethod should be rust-cargolambda"));
            }
            if function_property(t, f, "CodeUri") != "." {
                problems.push(format!("{id}: CodeUri should be . (the workspace root, where cargo-lambda builds)"));
            }
            let expect = [
                ("Runtime", json!("provided.al2023")),
                ("Handler", json!("bootstrap")),
                ("Architectures", json!(["x86_64"])),
            ];
            for (name, want) in expect {
                let got = function_property(t, f, name);
                if got != want {
                    problems.push(format!("{id}: {name} is {got}, expected {want}"));
                }
            }
            if function_property(t, f, "LoggingConfig").pointer("/LogFormat").and_then(Json::as_str) != Some("JSON") {
                problems.push(format!("{id}: LoggingConfig.LogFormat should be JSON"));
            }
        }
    }
    if g.is_null() {
        problems.push("the template has no Globals.Function".into());
    }
    problems
}

fn check_http_routes(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let apis = resources_of_type(t, "AWS::Serverless::HttpApi");
    let api_id = match apis.as_slice() {
        [(id, _)] => Some(id.clone()),
        _ => {
            problems.push(format!("expected one AWS::Serverless::HttpApi, found {}", apis.len()));
            None
        }
    };
    // The test must know every HTTP function: a new API crate has to be added above.
    let http: BTreeSet<&str> = http_functions().iter().map(|(b, _)| *b).collect();
    for c in function_crates() {
        if c.manifest.contains("lambda_http") && !http.contains(c.binary.as_str()) {
            problems.push(format!(
                "functions/{} serves HTTP; give it one entry in the function registry (functions/registry)",
                c.dir
            ));
        }
    }
    for (binary, routes) in http_functions() {
        let Some((id, f)) = function(t, binary) else {
            problems.push(format!("no single function resource builds {binary}"));
            continue;
        };
        let mut expected: Vec<(String, String)> =
            routes.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
        expected.sort();
        let mut actual = Vec::new();
        for (name, event) in events_of(&f, &["HttpApi"]) {
            let p = &event["Properties"];
            let method = p["Method"].as_str().unwrap_or("").to_ascii_uppercase();
            let path = p["Path"].as_str().unwrap_or("").to_owned();
            actual.push((method, path));
            if let Some(api) = &api_id
                && reference(&p["ApiId"]) != Some(api.as_str())
            {
                problems.push(format!(
                    "{id}.Events.{name}: ApiId should be !Ref {api} (else SAM makes an API without the authorizer)"
                ));
            }
            let auth = p.pointer("/Auth/Authorizer").and_then(Json::as_str);
            if auth.is_some_and(|a| a.eq_ignore_ascii_case("NONE")) {
                problems.push(format!("{id}.Events.{name}: every route requires the JWT authorizer"));
            }
        }
        actual.sort();
        for missing in expected.iter().filter(|r| !actual.contains(r)) {
            problems.push(format!(
                "{id} ({binary}): route {} {} is in ROUTES but has no HttpApi event",
                missing.0, missing.1
            ));
        }
        for extra in actual.iter().filter(|r| !expected.contains(r)) {
            problems
                .push(format!("{id} ({binary}): HttpApi event {} {} is not in {binary}'s ROUTES", extra.0, extra.1));
        }
        let mut seen = BTreeSet::new();
        for dup in actual.iter().filter(|r| !seen.insert(*r)) {
            problems.push(format!("{id} ({binary}): route {} {} has more than one HttpApi event", dup.0, dup.1));
        }
    }
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("");
        if !http.contains(binary) && !events_of(&f, &["HttpApi", "Api"]).is_empty() {
            problems.push(format!("{id} ({binary}) is not an HTTP function but has API events"));
        }
        if http.contains(binary) && !events_of(&f, &["Api"]).is_empty() {
            problems.push(format!(
                "{id} ({binary}) has REST Api events; the handlers read HTTP API (payload 2.0) requests"
            ));
        }
    }
    problems
}

fn check_authorizer(t: &Json) -> Problems {
    let mut problems = Vec::new();
    for param in ["JwtIssuer", "JwtAudience"] {
        if t.pointer(&format!("/Parameters/{param}")).is_none() {
            problems.push(format!("the template has no {param} parameter"));
        }
    }
    let apis = resources_of_type(t, "AWS::Serverless::HttpApi");
    let [(id, api)] = apis.as_slice() else {
        problems.push(format!("expected one AWS::Serverless::HttpApi, found {}", apis.len()));
        return problems;
    };
    let auth = &api["Properties"]["Auth"];
    let Some(default) = auth["DefaultAuthorizer"].as_str() else {
        problems.push(format!("{id}: Auth.DefaultAuthorizer is missing; every route must require the JWT authorizer"));
        return problems;
    };
    let authorizer = &auth["Authorizers"][default];
    let jwt = &authorizer["JwtConfiguration"];
    if !jwt.is_object() {
        problems.push(format!("{id}: the default authorizer {default} is not a JWT authorizer (no JwtConfiguration)"));
        return problems;
    }
    if reference(&jwt["issuer"]) != Some("JwtIssuer") {
        problems.push(format!("{id}: {default}.JwtConfiguration.issuer should be !Ref JwtIssuer"));
    }
    if !list(&jwt["audience"]).iter().any(|a| reference(a) == Some("JwtAudience")) {
        problems.push(format!("{id}: {default}.JwtConfiguration.audience should contain !Ref JwtAudience"));
    }
    if authorizer["IdentitySource"] != "$request.header.Authorization" {
        problems.push(format!("{id}: {default}.IdentitySource should be $request.header.Authorization"));
    }
    if !resources_of_type(t, "AWS::Serverless::Api").is_empty()
        || !resources_of_type(t, "AWS::ApiGatewayV2::Route").is_empty()
    {
        problems.push("routes outside the one HttpApi would bypass its default authorizer".into());
    }
    problems
}

fn check_rules(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let res = resources(t);
    let buses: Vec<String> = resources_of_type(t, "AWS::Events::EventBus").into_iter().map(|(id, _)| id).collect();
    let declared: BTreeSet<String> = resources_of_type(t, "AWS::Events::Rule").into_iter().map(|(id, _)| id).collect();
    let expected: BTreeSet<String> = RULES.iter().map(|r| r.name.to_owned()).collect();
    for extra in declared.difference(&expected) {
        problems.push(format!("rule {extra} is not in routing::RULES"));
    }
    let policies = resources_of_type(t, "AWS::SQS::QueuePolicy");
    for rule in RULES {
        let Some(r) = res.get(rule.name) else {
            problems.push(format!(
                "routing::RULES has {} but the template has no resource with that logical id",
                rule.name
            ));
            continue;
        };
        if r["Type"] != "AWS::Events::Rule" {
            problems.push(format!("{} should be an AWS::Events::Rule, is {}", rule.name, r["Type"]));
            continue;
        }
        let p = &r["Properties"];
        if !reference(&p["EventBusName"]).is_some_and(|b| buses.iter().any(|bus| bus == b)) {
            problems.push(format!("{}: EventBusName should be !Ref the template's event bus {buses:?}", rule.name));
        }
        if p["State"].as_str().is_some_and(|s| s != "ENABLED") {
            problems.push(format!("{}: State should be ENABLED", rule.name));
        }
        let pattern = &p["EventPattern"];
        if strings(&pattern["source"]) != [EVENT_SOURCE] {
            problems.push(format!(
                "{}: EventPattern.source should be [{EVENT_SOURCE}], is {}",
                rule.name, pattern["source"]
            ));
        }
        let mut got = strings(&pattern["detail-type"]);
        got.sort();
        let mut want: Vec<String> = rule.detail_types.iter().map(|d| (*d).to_owned()).collect();
        want.sort();
        if got != want {
            problems.push(format!("{}: EventPattern.detail-type is {got:?}, routing::RULES says {want:?}", rule.name));
        }
        if let Some(other) = pattern.as_object().and_then(|o| o.keys().find(|k| *k != "source" && *k != "detail-type"))
        {
            problems
                .push(format!("{}: EventPattern also filters on {other}, which routing::RULES does not", rule.name));
        }
        for d in rule.detail_types {
            if !EventPayload::KINDS.contains(d) {
                problems.push(format!("routing::RULES {} routes {d}, which is no event type", rule.name));
            }
        }
        let targets = list(&p["Targets"]);
        match targets.as_slice() {
            [target] if is_arn_of(&target["Arn"], rule.queue) => {}
            _ => problems.push(format!("{}: should have one target, !GetAtt {}.Arn", rule.name, rule.queue)),
        }
        // The queue must let EventBridge deliver, from this rule.
        let allowed = policies.iter().any(|(_, qp)| {
            let qp = &qp["Properties"];
            list(&qp["Queues"]).iter().any(|q| reference(q) == Some(rule.queue))
                && list(&qp["PolicyDocument"]["Statement"]).iter().any(|s| {
                    s["Effect"] == "Allow"
                        && strings(&s["Principal"]["Service"]).iter().any(|p| p == "events.amazonaws.com")
                        && strings(&s["Action"]).iter().any(|a| a == "sqs:SendMessage")
                        && list(&s["Resource"]).iter().any(|r| is_arn_of(r, rule.queue))
                        && s["Condition"].as_object().is_some_and(|c| {
                            c.values().any(|m| list(&m["aws:SourceArn"]).iter().any(|a| is_arn_of(a, rule.name)))
                        })
                })
        });
        if !allowed {
            problems.push(format!(
                "no AWS::SQS::QueuePolicy on {} lets events.amazonaws.com sqs:SendMessage with aws:SourceArn {}.Arn",
                rule.queue, rule.name
            ));
        }
    }
    problems
}

/// The work queues: the charge queue and every queue a rule feeds.
fn work_queues() -> BTreeSet<&'static str> {
    let mut queues: BTreeSet<&'static str> = RULES.iter().map(|r| r.queue).collect();
    queues.insert(routing::CHARGE_QUEUE);
    queues
}

fn encrypted(queue: &Json) -> bool {
    let p = &queue["Properties"];
    is_true(&p["SqsManagedSseEnabled"]) || !p["KmsMasterKeyId"].is_null()
}

fn check_queues(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let res = resources(t);
    let mut dead_letter_queues = BTreeSet::new();
    for queue in work_queues() {
        let Some(q) = res.get(queue).filter(|q| q["Type"] == "AWS::SQS::Queue") else {
            problems.push(format!("the template has no AWS::SQS::Queue {queue}"));
            continue;
        };
        if !encrypted(q) {
            problems.push(format!("{queue}: server-side encryption is off"));
        }
        let redrive = &q["Properties"]["RedrivePolicy"];
        if number(&redrive["maxReceiveCount"]) != Some(u64::from(MAX_RECEIVE_COUNT)) {
            problems.push(format!(
                "{queue}: RedrivePolicy.maxReceiveCount is {}, routing::MAX_RECEIVE_COUNT is {MAX_RECEIVE_COUNT}",
                redrive["maxReceiveCount"]
            ));
        }
        match get_att(&redrive["deadLetterTargetArn"]) {
            Some((dlq, attr)) if attr == "Arn" => match res.get(&dlq) {
                Some(d) if d["Type"] == "AWS::SQS::Queue" => {
                    if work_queues().contains(dlq.as_str()) || !d["Properties"]["RedrivePolicy"].is_null() {
                        problems
                            .push(format!("{queue}: its dead-letter queue {dlq} should be a plain queue of its own"));
                    }
                    if !encrypted(d) {
                        problems.push(format!("{dlq}: server-side encryption is off"));
                    }
                    dead_letter_queues.insert(dlq);
                }
                _ => problems
                    .push(format!("{queue}: dead-letter target {dlq} is not an AWS::SQS::Queue in the template")),
            },
            _ => problems
                .push(format!("{queue}: RedrivePolicy.deadLetterTargetArn should be !GetAtt <DeadLetterQueue>.Arn")),
        }
        // A message must stay invisible while the consumer may still be working on it.
        for (binary, _) in queue_consumers().iter().filter(|(_, q)| *q == queue) {
            if let Some((id, f)) = function(t, binary) {
                let timeout = function_timeout(t, &f);
                let visibility = number(&q["Properties"]["VisibilityTimeout"]).unwrap_or(30);
                if visibility < 6 * timeout {
                    problems.push(format!(
                        "{queue}: VisibilityTimeout {visibility}s is under six times {id}'s Timeout ({timeout}s)"
                    ));
                }
            }
        }
    }
    for (id, _) in resources_of_type(t, "AWS::SQS::Queue") {
        if !work_queues().contains(id.as_str()) && !dead_letter_queues.contains(&id) {
            problems.push(format!("queue {id} is neither a work queue the code knows nor one's dead-letter queue"));
        }
    }
    problems
}

fn check_sqs_consumers(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let consumers: BTreeMap<&str, &str> = queue_consumers().into_iter().collect();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("");
        let events = events_of(&f, &["SQS"]);
        for (name, event) in &events {
            let p = &event["Properties"];
            if !strings(&p["FunctionResponseTypes"]).iter().any(|r| r == "ReportBatchItemFailures") {
                problems.push(format!(
                    "{id}.Events.{name}: FunctionResponseTypes should include ReportBatchItemFailures (the handler reports failed records)"
                ));
            }
            match number(&p["BatchSize"]) {
                Some(1..=10) => {}
                other => problems.push(format!("{id}.Events.{name}: BatchSize should be 1 to 10, is {other:?}")),
            }
        }
        match consumers.get(binary) {
            Some(queue) => {
                let reads: Vec<bool> =
                    events.iter().map(|(_, e)| is_arn_of(&e["Properties"]["Queue"], queue)).collect();
                if reads != [true] {
                    problems.push(format!("{id} ({binary}) should have one SQS event, on !GetAtt {queue}.Arn"));
                }
            }
            None if !events.is_empty() => {
                problems.push(format!("{id} ({binary}) is not a queue consumer but has SQS events"))
            }
            None => {}
        }
    }
    for (binary, _) in queue_consumers() {
        if function(t, binary).is_none() {
            problems.push(format!("no single function resource builds {binary}"));
        }
    }
    for queue in work_queues() {
        if !queue_consumers().iter().any(|(_, q)| *q == queue) {
            problems.push(format!("queue {queue} has no consumer in the function registry"));
        }
    }
    problems
}

fn check_schedules(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let scheduled: BTreeMap<&str, &str> = scheduled_functions().into_iter().collect();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("");
        let events = events_of(&f, &["Schedule", "ScheduleV2"]);
        let expressions: Vec<String> = events
            .iter()
            .map(|(_, e)| {
                let p = &e["Properties"];
                p["Schedule"].as_str().or(p["ScheduleExpression"].as_str()).unwrap_or("").to_owned()
            })
            .collect();
        match scheduled.get(binary) {
            Some(want) if expressions != [*want] => {
                problems.push(format!("{id} ({binary}) should run on one schedule, {want}; has {expressions:?}"));
            }
            None if !events.is_empty() => {
                problems.push(format!("{id} ({binary}) is not scheduled but has schedule events"))
            }
            _ => {}
        }
    }
    problems
}

fn check_table(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let tables = resources_of_type(t, "AWS::DynamoDB::Table");
    let [(id, table)] = tables.as_slice() else {
        return vec![format!("expected one AWS::DynamoDB::Table, found {}", tables.len())];
    };
    let p = &table["Properties"];
    let keys = |schema: &Json| -> Vec<(String, String)> {
        list(schema)
            .iter()
            .map(|k| {
                (k["AttributeName"].as_str().unwrap_or("").to_owned(), k["KeyType"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    };
    let pair =
        |hash: &str, range: &str| vec![(hash.to_owned(), "HASH".to_owned()), (range.to_owned(), "RANGE".to_owned())];
    if keys(&p["KeySchema"]) != pair("PK", "SK") {
        problems.push(format!("{id}: KeySchema should be PK (HASH), SK (RANGE); is {:?}", keys(&p["KeySchema"])));
    }
    let mut key_attributes: BTreeSet<String> = ["PK".to_owned(), "SK".to_owned()].into();
    let mut want_indexes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for index in Index::ALL {
        let name = index.name();
        want_indexes.insert(name.to_owned(), pair(&format!("{name}PK"), &format!("{name}SK")));
        key_attributes.insert(format!("{name}PK"));
        key_attributes.insert(format!("{name}SK"));
    }
    let mut got_indexes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for gsi in list(&p["GlobalSecondaryIndexes"]) {
        let name = gsi["IndexName"].as_str().unwrap_or("").to_owned();
        if gsi.pointer("/Projection/ProjectionType").and_then(Json::as_str) != Some("ALL") {
            problems.push(format!(
                "{id}: index {name} should project ALL attributes (the store reads whole items from it)"
            ));
        }
        if got_indexes.insert(name.clone(), keys(&gsi["KeySchema"])).is_some() {
            problems.push(format!("{id}: index {name} is declared twice"));
        }
    }
    if got_indexes != want_indexes {
        problems.push(format!("{id}: GlobalSecondaryIndexes are {got_indexes:?}, the store uses {want_indexes:?}"));
    }
    let definitions: BTreeMap<String, String> = list(&p["AttributeDefinitions"])
        .iter()
        .map(|d| {
            (d["AttributeName"].as_str().unwrap_or("").to_owned(), d["AttributeType"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    let want_definitions: BTreeMap<String, String> = key_attributes.into_iter().map(|a| (a, "S".to_owned())).collect();
    if definitions != want_definitions {
        problems.push(format!("{id}: AttributeDefinitions are {definitions:?}, expected every key attribute as a string: {want_definitions:?}"));
    }
    let ttl = &p["TimeToLiveSpecification"];
    if ttl["AttributeName"] != "expires_at" || !is_true(&ttl["Enabled"]) {
        problems.push(format!("{id}: TimeToLiveSpecification should enable TTL on expires_at"));
    }
    if p["BillingMode"] != "PAY_PER_REQUEST" {
        problems.push(format!("{id}: BillingMode should be PAY_PER_REQUEST"));
    }
    if !is_true(&p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]) {
        problems.push(format!("{id}: point-in-time recovery should be enabled"));
    }
    if reference(&globals(t)["Environment"]["Variables"]["RECOUP_TABLE"]) != Some(id.as_str()) {
        problems.push(format!("Globals: RECOUP_TABLE should be !Ref {id}"));
    }
    problems
}

/// A function's environment as Lambda would see it: parameters at their defaults (or a
/// placeholder when they have none), resources by logical id.
fn resolved_environment(t: &Json, function: &Json) -> BTreeMap<String, String> {
    environment(t, function)
        .into_iter()
        .map(|(name, value)| {
            let resolved = match (&value, reference(&value)) {
                (_, Some(r)) => match t.pointer(&format!("/Parameters/{r}")) {
                    Some(param) => match &param["Default"] {
                        Json::String(s) => s.clone(),
                        Json::Null => format!("https://{}.example", r.to_ascii_lowercase()),
                        other => other.to_string(),
                    },
                    None => format!("<{r}>"),
                },
                (Json::String(s), None) => s.clone(),
                (Json::Number(n), None) => n.to_string(),
                (other, None) => format!("<{other}>"),
            };
            (name, resolved)
        })
        .collect()
}

/// Runs `Settings::from_lookup` over `env`; returns the result and every name it asked for.
fn settings_from(env: &BTreeMap<String, String>) -> (Result<Settings, String>, BTreeSet<String>) {
    let asked = Mutex::new(BTreeSet::new());
    let result = Settings::from_lookup(|name| {
        asked.lock().expect("not poisoned").insert(name.to_owned());
        env.get(name).cloned()
    })
    .map_err(|e| e.to_string());
    (result, asked.into_inner().expect("not poisoned"))
}

fn check_environment(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let buses: Vec<String> = resources_of_type(t, "AWS::Events::EventBus").into_iter().map(|(id, _)| id).collect();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("").to_owned();
        let vars = environment(t, &f);
        let env = resolved_environment(t, &f);
        let (settings, asked) = settings_from(&env);
        if let Err(e) = &settings {
            problems.push(format!("{id} ({binary}): the code rejects its environment: {e}"));
        }
        for name in env.keys().filter(|n| n.starts_with("RECOUP_")) {
            if !asked.contains(name) {
                problems.push(format!("{id} ({binary}): sets {name}, which Settings::from_lookup never reads"));
            }
        }
        let sends = CHARGE_QUEUE_SENDERS.contains(&binary.as_str());
        for name in asked.iter().filter(|n| !env.contains_key(*n)) {
            if name != "RECOUP_CHARGE_QUEUE_URL" || sends {
                problems.push(format!("{id} ({binary}): the code reads {name}, which the template does not set"));
            }
        }
        match (sends, reference(&vars.get("RECOUP_CHARGE_QUEUE_URL").cloned().unwrap_or(Json::Null))) {
            (true, Some(q)) if q == routing::CHARGE_QUEUE => {}
            (true, _) => problems
                .push(format!("{id} ({binary}): RECOUP_CHARGE_QUEUE_URL should be !Ref {}", routing::CHARGE_QUEUE)),
            (false, Some(_)) => problems
                .push(format!("{id} ({binary}) does not enqueue charges; it should not get RECOUP_CHARGE_QUEUE_URL")),
            (false, None) => {}
        }
        let bus = vars.get("RECOUP_EVENT_BUS").and_then(|v| reference(v).map(str::to_owned));
        if !bus.as_ref().is_some_and(|b| buses.contains(b)) {
            problems
                .push(format!("{id} ({binary}): RECOUP_EVENT_BUS should be !Ref the template's event bus {buses:?}"));
        }
        // Every value the stack may be deployed with must be one the code accepts.
        for (var, value) in &vars {
            let Some(param) = reference(value).and_then(|r| t.pointer(&format!("/Parameters/{r}"))) else { continue };
            for allowed in strings(&param["AllowedValues"]) {
                let mut env = env.clone();
                env.insert(var.clone(), allowed.clone());
                if let (Err(e), _) = settings_from(&env) {
                    problems.push(format!(
                        "{id}: {var}={allowed:?} is allowed by the template but refused by the code: {e}"
                    ));
                }
            }
        }
    }
    problems
}

/// Which table, index, bus or queue ARN a policy resource is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    Table,
    Index(String),
    Arn(String),
    Other(String),
}

fn grant_of(v: &Json, table: &str) -> Grant {
    if let Some((r, a)) = get_att(v)
        && a == "Arn"
    {
        return if r == table { Grant::Table } else { Grant::Arn(r) };
    }
    if let Some(sub) = v.get("Fn::Sub").and_then(Json::as_str)
        && let Some(index) = sub.strip_prefix(&format!("${{{table}.Arn}}/index/"))
    {
        return Grant::Index(index.to_owned());
    }
    Grant::Other(v.to_string())
}

fn check_iam(t: &Json) -> Problems {
    let mut problems = Vec::new();
    let table = resources_of_type(t, "AWS::DynamoDB::Table").into_iter().next().map(|(id, _)| id).unwrap_or_default();
    let buses: Vec<String> = resources_of_type(t, "AWS::Events::EventBus").into_iter().map(|(id, _)| id).collect();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("").to_owned();
        if !f["Properties"]["Role"].is_null() {
            problems.push(format!("{id}: has its own Role; grant through Policies statements so they can be checked"));
        }
        let mut publishes = false;
        let mut sends = false;
        for policy in list(&function_property(t, &f, "Policies")) {
            if policy.get("Statement").is_none() {
                problems.push(format!(
                    "{id}: policy {policy} is not an explicit Statement list (no managed or SAM template policies)"
                ));
                continue;
            }
            for statement in list(&policy["Statement"]) {
                if statement["Effect"] != "Allow" {
                    continue;
                }
                let actions = strings(&statement["Action"]);
                let grants: Vec<Grant> = list(&statement["Resource"]).iter().map(|r| grant_of(r, &table)).collect();
                if !statement["NotAction"].is_null() || !statement["NotResource"].is_null() {
                    problems.push(format!("{id}: NotAction/NotResource grant more than they name"));
                }
                for action in &actions {
                    if action.contains('*') {
                        problems.push(format!("{id}: wildcard action {action}"));
                    } else if action.starts_with("dynamodb:") {
                        if !DYNAMODB_ACTIONS.contains(&action.as_str()) {
                            problems.push(format!("{id}: {action} is not an operation the store performs"));
                        }
                        for g in &grants {
                            match g {
                                Grant::Table => {}
                                Grant::Index(_) if action == "dynamodb:Query" => {}
                                other => problems.push(format!(
                                    "{id}: {action} on {other:?}; only the table (and its indexes, for Query)"
                                )),
                            }
                        }
                    } else if action == "events:PutEvents" {
                        publishes = true;
                        if !grants.iter().all(|g| matches!(g, Grant::Arn(b) if buses.contains(b))) || grants.is_empty()
                        {
                            problems.push(format!(
                                "{id}: events:PutEvents should be on the event bus ARN only, is on {grants:?}"
                            ));
                        }
                    } else if action == "sqs:SendMessage" {
                        sends = true;
                        if grants != [Grant::Arn(routing::CHARGE_QUEUE.to_owned())] {
                            problems.push(format!(
                                "{id}: sqs:SendMessage should be on {}.Arn only, is on {grants:?}",
                                routing::CHARGE_QUEUE
                            ));
                        }
                    } else {
                        problems.push(format!("{id}: unexpected action {action}"));
                    }
                }
            }
        }
        let should_publish = !NON_PUBLISHERS.contains(&binary.as_str());
        if publishes != should_publish {
            problems.push(format!(
                "{id} ({binary}): events:PutEvents is {}granted but the function {}",
                if publishes { "" } else { "not " },
                if should_publish { "changes state and publishes its events" } else { "never publishes" }
            ));
        }
        let should_send = CHARGE_QUEUE_SENDERS.contains(&binary.as_str());
        if sends != should_send {
            problems.push(format!(
                "{id} ({binary}): sqs:SendMessage on the charge queue is {}granted but the function {}",
                if sends { "" } else { "not " },
                if should_send { "enqueues charges" } else { "never enqueues" }
            ));
        }
    }
    problems
}

fn all_problems(t: &Json) -> Problems {
    [
        check_functions(t),
        check_http_routes(t),
        check_authorizer(t),
        check_rules(t),
        check_queues(t),
        check_sqs_consumers(t),
        check_schedules(t),
        check_table(t),
        check_environment(t),
        check_iam(t),
    ]
    .concat()
}

#[track_caller]
fn assert_none(problems: Problems) {
    assert!(problems.is_empty(), "template.yaml disagrees with the code:\n  - {}", problems.join("\n  - "));
}

// ------------------------------------------------------------------------------------------
// The tests.
// ------------------------------------------------------------------------------------------

#[test]
fn every_function_crate_is_built_by_exactly_one_function_resource() {
    // The registry must give every function on disk exactly one trigger.
    let on_disk: Vec<String> = function_crates().into_iter().map(|c| c.binary).collect();
    let mut known: Vec<String> = http_functions()
        .iter()
        .map(|(b, _)| *b)
        .chain(queue_consumers().iter().map(|(b, _)| *b))
        .chain(scheduled_functions().iter().map(|(b, _)| *b))
        .map(str::to_owned)
        .collect();
    known.sort();
    assert_eq!(on_disk, known, "functions/ and the function registry (functions/registry) disagree");
    assert!(
        !recoup_tests::workspace_root().join("functions/common/src/main.rs").exists(),
        "functions/common is a library"
    );
    assert_none(check_functions(&template()));
}

#[test]
fn every_http_route_in_the_code_is_an_api_event_in_the_template() {
    assert_none(check_http_routes(&template()));
}

#[test]
fn every_route_requires_the_jwt_authorizer_by_default() {
    assert_none(check_authorizer(&template()));
}

#[test]
fn every_routing_rule_is_an_eventbridge_rule_with_the_same_detail_types_and_queue() {
    assert_none(check_rules(&template()));
}

#[test]
fn every_queue_has_an_encrypted_dead_letter_queue_after_max_receive_count() {
    assert_none(check_queues(&template()));
}

#[test]
fn every_sqs_consumer_reads_its_queue_and_reports_batch_item_failures() {
    assert_none(check_sqs_consumers(&template()));
}

#[test]
fn the_schedulers_and_the_relay_run_on_their_schedules() {
    assert_none(check_schedules(&template()));
}

#[test]
fn the_table_has_the_keys_indexes_and_ttl_the_store_uses() {
    assert_none(check_table(&template()));
}

#[test]
fn every_function_gets_an_environment_the_code_accepts() {
    assert_none(check_environment(&template()));
}

#[test]
fn every_function_is_granted_only_what_it_does() {
    assert_none(check_iam(&template()));
}

#[test]
fn short_form_intrinsics_read_the_same_as_long_forms() {
    let short: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "a: !Ref Table\nb: !GetAtt Queue.Arn\nc: !Sub \"${Table.Arn}/index/*\"\nd: !If [C, x, y]",
    )
    .unwrap();
    let long: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "a: {Ref: Table}\nb: {'Fn::GetAtt': [Queue, Arn]}\nc: {'Fn::Sub': '${Table.Arn}/index/*'}\nd: {'Fn::If': [C, x, y]}",
    )
    .unwrap();
    assert_eq!(to_json(short), to_json(long));
}

// ------------------------------------------------------------------------------------------
// The checks notice disagreement: each case edits a copy of the template the way a drift
// between template and code would, and the checks must report it.
// ------------------------------------------------------------------------------------------

fn function_mut<'a>(t: &'a mut Json, binary: &str) -> &'a mut Json {
    let id = function(t, binary).map(|(id, _)| id).unwrap_or_else(|| panic!("no function builds {binary}"));
    &mut t["Resources"][id]
}

fn first_event_mut<'a>(t: &'a mut Json, binary: &str, ty: &str) -> &'a mut Json {
    let events = function_mut(t, binary)["Properties"]["Events"].as_object_mut().expect("events");
    events.values_mut().find(|e| e["Type"] == ty).unwrap_or_else(|| panic!("{binary} has no {ty} event"))
}

type Mutation = fn(&mut Json);

#[test]
fn the_checks_catch_a_template_that_disagrees_with_the_code() {
    let cases: &[(&str, Mutation, &str)] = &[
        (
            "a route path that differs from ROUTES",
            |t| {
                first_event_mut(t, "payment-methods-api", "HttpApi")["Properties"]["Path"] = json!("/v1/payment-method")
            },
            "is not in payment-methods-api's ROUTES",
        ),
        (
            "a route missing from the template",
            |t| {
                let events = function_mut(t, "subscriptions-api")["Properties"]["Events"].as_object_mut().unwrap();
                let name = events.keys().next().unwrap().clone();
                events.remove(&name);
            },
            "has no HttpApi event",
        ),
        (
            "a function built from a misspelled binary",
            |t| function_mut(t, "notifier")["Metadata"]["BuildProperties"]["Binary"] = json!("notifer"),
            "should be built by exactly one",
        ),
        (
            "a rule missing a detail type",
            |t| {
                let pattern = &mut t["Resources"][RULES[0].name]["Properties"]["EventPattern"]["detail-type"];
                pattern.as_array_mut().unwrap().pop();
            },
            "routing::RULES says",
        ),
        (
            "a rule feeding the wrong queue",
            |t| {
                t["Resources"][RULES[1].name]["Properties"]["Targets"][0]["Arn"] =
                    json!({"Fn::GetAtt": [routing::CHARGE_QUEUE, "Arn"]})
            },
            "should have one target",
        ),
        (
            "a rule renamed",
            |t| {
                let resources = t["Resources"].as_object_mut().unwrap();
                let rule = resources.remove(RULES[0].name).unwrap();
                resources.insert("InvoiceEvents".into(), rule);
            },
            "no resource with that logical id",
        ),
        (
            "a receive count other than MAX_RECEIVE_COUNT",
            |t| {
                t["Resources"][routing::CHARGE_QUEUE]["Properties"]["RedrivePolicy"]["maxReceiveCount"] =
                    json!(MAX_RECEIVE_COUNT + 1)
            },
            "routing::MAX_RECEIVE_COUNT",
        ),
        (
            "a queue without a dead-letter queue",
            |t| {
                t["Resources"][routing::NOTIFICATIONS_QUEUE]["Properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("RedrivePolicy")
                    .unwrap();
            },
            "deadLetterTargetArn",
        ),
        (
            "a visibility timeout shorter than six consumer timeouts",
            |t| t["Resources"][routing::CHARGE_QUEUE]["Properties"]["VisibilityTimeout"] = json!(30),
            "six times",
        ),
        (
            "an SQS event without partial batch responses",
            |t| {
                first_event_mut(t, "charge-worker", "SQS")["Properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("FunctionResponseTypes")
                    .unwrap();
            },
            "ReportBatchItemFailures",
        ),
        (
            "an API without a default authorizer",
            |t| {
                let id = resources_of_type(t, "AWS::Serverless::HttpApi")[0].0.clone();
                t["Resources"][id]["Properties"]["Auth"].as_object_mut().unwrap().remove("DefaultAuthorizer");
            },
            "DefaultAuthorizer is missing",
        ),
        (
            "a route that opts out of the authorizer",
            |t| first_event_mut(t, "invoices-api", "HttpApi")["Properties"]["Auth"] = json!({"Authorizer": "NONE"}),
            "requires the JWT authorizer",
        ),
        (
            "a renamed index",
            |t| {
                let id = resources_of_type(t, "AWS::DynamoDB::Table")[0].0.clone();
                t["Resources"][id]["Properties"]["GlobalSecondaryIndexes"][2]["IndexName"] = json!("GSI4");
            },
            "the store uses",
        ),
        (
            "a sort key that is not SK",
            |t| {
                let id = resources_of_type(t, "AWS::DynamoDB::Table")[0].0.clone();
                t["Resources"][id]["Properties"]["KeySchema"][1]["AttributeName"] = json!("sk");
            },
            "KeySchema",
        ),
        (
            "a missing required setting",
            |t| {
                t["Globals"]["Function"]["Environment"]["Variables"]
                    .as_object_mut()
                    .unwrap()
                    .remove("RECOUP_EVENT_BUS")
                    .unwrap();
            },
            "RECOUP_EVENT_BUS must be set",
        ),
        (
            "a provider the code does not accept",
            |t| t["Parameters"]["PaymentProvider"]["AllowedValues"] = json!(["sandbox", "stripe"]),
            "refused by the code",
        ),
        (
            "a scheduler without the charge queue's URL",
            |t| {
                function_mut(t, "retry-scheduler")["Properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Environment")
                    .unwrap();
            },
            "RECOUP_CHARGE_QUEUE_URL",
        ),
        (
            "a broad DynamoDB grant",
            |t| function_mut(t, "notifier")["Properties"]["Policies"] = json!(["DynamoDBCrudPolicy"]),
            "not an explicit Statement list",
        ),
        (
            "a scan permission",
            |t| {
                function_mut(t, "notifier")["Properties"]["Policies"][0]["Statement"][0]["Action"] =
                    json!(["dynamodb:Scan"])
            },
            "not an operation the store performs",
        ),
        (
            "a publisher without events:PutEvents",
            |t| {
                let statements =
                    function_mut(t, "charge-worker")["Properties"]["Policies"][0]["Statement"].as_array_mut().unwrap();
                statements.retain(|s| s["Action"] != "events:PutEvents");
            },
            "changes state and publishes",
        ),
        (
            "a schedule that differs",
            |t| first_event_mut(t, "outbox-relay", "Schedule")["Properties"]["Schedule"] = json!("rate(1 hour)"),
            "should run on one schedule",
        ),
    ];
    let pristine = template();
    assert_none(all_problems(&pristine));
    for (what, mutate, expected) in cases {
        let mut t = pristine.clone();
        mutate(&mut t);
        let problems = all_problems(&t);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem mentioning {expected:?}, got {problems:#?}"
        );
    }
}
