//! `docs/openapi.yaml` against the code: the operations it lists are the routes the HTTP
//! functions serve, each is behind the bearer token (except the PSP's webhook receiver,
//! which the registry declares without the authorizer, and which the document declares
//! open) and documents its error statuses with the shared `Error` schema, every POST
//! behind the token documents `Idempotency-Key`, every path
//! parameter is declared, its error table is exactly the code enum with the statuses the
//! edge answers with, and every error type the API can answer with is named in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use recoup_lambda::http::Route;
use recoup_shared::domain::decline::ErrorType;
use recoup_shared::error::Code;
use serde_json::Value;

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const ROLES: [&str; 3] = ["owner", "member", "merchant"];
const ERROR_SCHEMA: &str = "#/components/schemas/Error";

fn document_path() -> PathBuf {
    recoup_tests::workspace_root().join("docs").join("openapi.yaml")
}

fn document_text() -> String {
    let path = document_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn document() -> Value {
    serde_yaml_ng::from_str(&document_text()).unwrap_or_else(|e| panic!("docs/openapi.yaml does not parse: {e}"))
}

/// Every route the API functions serve.
fn code_routes() -> Vec<Route> {
    recoup_functions::http_routes().map(|(_, r)| r).collect()
}

/// The routes of functions the registry puts outside the JWT authorizer.
fn open_routes() -> BTreeSet<String> {
    recoup_functions::http_routes()
        .filter(|(f, _)| {
            matches!(f.trigger, recoup_functions::Trigger::Http { authorizer: recoup_functions::Authorizer::None, .. })
        })
        .map(|(_, r)| r.key())
        .collect()
}

/// Follows local `$ref`s (`#/components/...`) until it reaches a value that is not one.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(reference) = v.get("$ref").and_then(Value::as_str) else { return v };
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are expected, found {reference}"));
        v = doc.pointer(pointer).unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    panic!("a reference cycle in docs/openapi.yaml")
}

/// One operation of the document.
struct Operation<'a> {
    method: String,
    path: &'a str,
    path_item: &'a Value,
    op: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Served without the JWT authorizer (the function checks its caller itself).
    fn is_open(&self) -> bool {
        open_routes().contains(&self.name())
    }

    /// Path-level and operation-level parameters, resolved; the operation's win.
    fn parameters<'d>(&'d self, doc: &'d Value) -> Vec<&'d Value> {
        let mut by_key: BTreeMap<(String, String), &Value> = BTreeMap::new();
        for source in [self.path_item, self.op] {
            for p in source.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                let p = resolve(doc, p);
                let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
                let place = p["in"].as_str().unwrap_or_default().to_owned();
                by_key.insert((place, name), p);
            }
        }
        by_key.into_values().collect()
    }

    fn responses<'d>(&'d self, doc: &'d Value) -> BTreeMap<String, &'d Value> {
        self.op
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| r.iter().map(|(code, resp)| (code.clone(), resolve(doc, resp))).collect())
            .unwrap_or_default()
    }
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let paths = doc["paths"].as_object().expect("docs/openapi.yaml has a paths object");
    let mut out = Vec::new();
    for (path, item) in paths {
        for method in HTTP_METHODS {
            if let Some(op) = item.get(method) {
                out.push(Operation { method: method.to_ascii_uppercase(), path, path_item: item, op });
            }
        }
    }
    out
}

/// Whether a schema is the shared `Error` schema, or builds on it (`allOf`).
fn uses_error_schema(doc: &Value, schema: &Value) -> bool {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference == ERROR_SCHEMA || uses_error_schema(doc, resolve(doc, schema));
    }
    schema.get("allOf").and_then(Value::as_array).is_some_and(|parts| parts.iter().any(|p| uses_error_schema(doc, p)))
}

fn template_parameters(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_documented_operations_are_exactly_the_routes_the_functions_serve() {
    let routes = code_routes();
    let in_code: BTreeSet<String> = routes.iter().map(Route::key).collect();
    assert_eq!(in_code.len(), routes.len(), "a route is served twice: {routes:?}");

    let doc = document();
    let in_doc: BTreeSet<String> = operations(&doc).iter().map(Operation::name).collect();

    let undocumented: Vec<&String> = in_code.difference(&in_doc).collect();
    let not_served: Vec<&String> = in_doc.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "docs/openapi.yaml and the ROUTES of the API functions disagree.\n  served but not documented: {undocumented:?}\n  documented but not served: {not_served:?}"
    );
}

#[test]
fn every_operation_requires_the_bearer_token() {
    let doc = document();
    let bearer: BTreeSet<&str> = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, scheme)| {
            let scheme = resolve(&doc, scheme);
            scheme["type"] == "http" && scheme["scheme"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(!bearer.is_empty(), "components.securitySchemes declares no HTTP bearer scheme");

    let mut open = Vec::new();
    for op in operations(&doc) {
        if op.is_open() {
            // Declared open, with `security: []`, and nothing else.
            if op.op.get("security").and_then(Value::as_array).is_none_or(|s| !s.is_empty()) {
                open.push(format!("{} (served without the authorizer: declare `security: []`)", op.name()));
            }
            continue;
        }
        // An operation's own `security` replaces the document's.
        let security = op.op.get("security").or_else(|| doc.get("security"));
        let requirements = security.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        // Every alternative must include the bearer scheme; an empty one `{}` means anonymous.
        let guarded = !requirements.is_empty()
            && requirements.iter().all(|req| {
                req.as_object().is_some_and(|alternative| alternative.keys().any(|k| bearer.contains(k.as_str())))
            });
        if !guarded {
            open.push(op.name());
        }
    }
    assert!(open.is_empty(), "operations not behind the bearer token: {open:?}");
}

#[test]
fn every_operation_documents_its_error_statuses_with_the_shared_error_schema() {
    let doc = document();
    let error = doc
        .pointer(ERROR_SCHEMA.trim_start_matches('#'))
        .unwrap_or_else(|| panic!("docs/openapi.yaml has no {ERROR_SCHEMA}"));
    let required: BTreeSet<&str> =
        error["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(
        required.contains("code") && required.contains("message"),
        "the Error schema must require code and message, as error_body writes them"
    );

    let mut problems = Vec::new();
    for op in operations(&doc) {
        let name = op.name();
        let responses = op.responses(&doc);
        // A page a browser opens: it may answer with a redirect, and with a page for a
        // refusal (the portal's 401 page) rather than an error body.
        let page = op.op.get("tags").and_then(Value::as_array).is_some_and(|t| t.iter().any(|t| t == "Pages"));

        if !responses.keys().any(|code| code.starts_with('2') || (page && code.starts_with('3'))) {
            problems.push(format!("{name}: no success response"));
        }

        // Every route can meet the edge: a card number in the request (400), no or a bad
        // token (401), a bug (500), an unavailable store or PSP (503). POSTs also meet
        // idempotency keys: in progress (409) and reused (422). An operation closed to some
        // roles answers them 403.
        let expected = if op.is_open() && (op.method == "GET" || page) {
            // A page: the same for everyone, read from nothing.
            vec![]
        } else if op.is_open() {
            // The PSP's webhooks: a bad signature or body (400), a bug (500), the store or
            // the signing secret unavailable (503).
            vec!["400", "500", "503"]
        } else {
            let roles: Vec<&str> = op
                .op
                .get("x-roles")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if roles.is_empty() || roles.iter().any(|r| !ROLES.contains(r)) {
                problems.push(format!(
                    "{name}: x-roles must list the roles that may call it, from {ROLES:?}; found {roles:?}"
                ));
            }
            let mut expected = vec!["400", "401", "500", "503"];
            if op.method == "POST" {
                expected.extend(["409", "422"]);
            }
            if ROLES.iter().any(|r| !roles.contains(r)) {
                expected.push("403");
            }
            expected
        };
        for status in expected {
            if !responses.contains_key(status) {
                problems.push(format!("{name}: no {status} response"));
            }
        }

        for (status, response) in &responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            if page && response.pointer("/content/text~1html").is_some() {
                continue;
            }
            match response.pointer("/content/application~1json/schema") {
                Some(schema) if uses_error_schema(&doc, schema) => {}
                Some(_) => problems.push(format!("{name}: the {status} response does not use {ERROR_SCHEMA}")),
                None => problems.push(format!("{name}: the {status} response has no application/json schema")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "error responses are not documented as the edge answers them:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_post_documents_the_idempotency_key_header_and_nothing_else_does() {
    let doc = document();
    let mut problems = Vec::new();
    for op in operations(&doc) {
        let header = op.parameters(&doc).into_iter().find(|p| {
            p["in"] == "header" && p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
        });
        match (op.method.as_str(), header) {
            // The webhook receiver dedupes by event id, not by key.
            (_, None) if op.is_open() => {}
            (_, Some(_)) if op.is_open() => {
                problems.push(format!("{}: the webhook receiver does not read Idempotency-Key", op.name()))
            }
            ("POST", None) => problems.push(format!("{}: no Idempotency-Key header", op.name())),
            ("POST", Some(h)) => {
                let schema = resolve(&doc, &h["schema"]);
                if h.get("required") == Some(&Value::Bool(true)) {
                    problems.push(format!("{}: Idempotency-Key is optional, not required", op.name()));
                }
                if schema["maxLength"] != 255 || schema["minLength"] != 1 {
                    problems.push(format!("{}: Idempotency-Key is 1 to 255 characters", op.name()));
                }
            }
            // The edge reads the key on POSTs only; documenting it elsewhere would promise
            // a safety that does not exist.
            (_, Some(_)) => problems.push(format!("{}: Idempotency-Key is only honoured on POST", op.name())),
            (_, None) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_path_parameter_in_a_path_template_is_declared() {
    let doc = document();
    let mut problems = Vec::new();
    for op in operations(&doc) {
        let wanted = template_parameters(op.path);
        let declared: BTreeMap<String, &Value> = op
            .parameters(&doc)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p))
            .collect();
        for name in &wanted {
            match declared.get(name) {
                None => problems.push(format!("{}: path parameter {{{name}}} is not declared", op.name())),
                Some(p) if p.get("required") != Some(&Value::Bool(true)) => {
                    problems.push(format!("{}: path parameter {{{name}}} must be required", op.name()));
                }
                Some(_) => {}
            }
        }
        for name in declared.keys().filter(|n| !wanted.contains(*n)) {
            problems.push(format!("{}: declares path parameter {name}, which is not in the template", op.name()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Codes only queue consumers use: never an HTTP answer.
const NOT_HTTP: [Code; 1] = [Code::PoisonMessage];

/// The error table in the API's description: `| status | `code` | meaning |` rows.
fn documented_error_table(text: &str) -> BTreeMap<String, u16> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if let [status, code, _meaning] = cells[..]
            && let Ok(status) = status.parse::<u16>()
            && let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`'))
        {
            rows.insert(code.to_owned(), status);
        }
    }
    rows
}

/// The one list of codes (`recoup_shared::error::Code`) and the document's error table are
/// the same, with the same statuses, so a new code cannot ship undocumented.
#[test]
fn the_error_table_is_exactly_the_code_enum_with_its_statuses() {
    let table = documented_error_table(&document_text());
    assert!(table.len() > 20, "the error table was not found in docs/openapi.yaml: {table:?}");
    let mut problems = Vec::new();
    for code in Code::ALL.iter().filter(|c| !NOT_HTTP.contains(c)) {
        let status = recoup_lambda::http::status_of(code.kind());
        match table.get(code.as_str()) {
            None => problems.push(format!("`{code}` ({}) is not in the error table", code.meaning())),
            Some(s) if *s != status => problems.push(format!("`{code}` is documented as {s}, answered as {status}")),
            Some(_) => {}
        }
    }
    for documented in table.keys() {
        if !Code::ALL.iter().any(|c| c == &documented.as_str()) {
            problems.push(format!("`{documented}` is documented but is no code the API has"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_documented_error_types_are_the_failure_taxonomy() {
    let doc = document();
    let documented: BTreeSet<&str> = doc
        .pointer("/components/schemas/ErrorType/enum")
        .and_then(Value::as_array)
        .expect("components.schemas.ErrorType has an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let in_code: BTreeSet<&str> = ErrorType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(documented, in_code);
}

/// The event types an endpoint may subscribe to are exactly the events there are.
#[test]
fn the_documented_webhook_event_types_are_the_event_kinds() {
    let doc = document();
    let documented: BTreeSet<&str> = doc
        .pointer("/components/schemas/WebhookEventType/enum")
        .and_then(Value::as_array)
        .expect("components.schemas.WebhookEventType has an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let kinds: BTreeSet<&str> = recoup_shared::domain::events::EventPayload::KINDS.into_iter().collect();
    assert_eq!(documented, kinds);
}
