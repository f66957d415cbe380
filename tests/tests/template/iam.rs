//! Each function's IAM grants against what it does.

use super::*;

/// Which table, index, bus or queue ARN a policy resource is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Table,
    Index(String),
    Arn(String),
    Other(String),
}

pub fn grant_of(v: &Json, table: &str) -> Grant {
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

/// A function's policies, each with the condition it applies under: a SAM `Fn::If`
/// item contributes its branches (minus `AWS::NoValue`) under that condition.
pub fn policies_of(t: &Json, function: &Json) -> Vec<(Option<String>, Json)> {
    let mut out = Vec::new();
    for policy in list(&function_property(t, function, "Policies")) {
        match policy.get("Fn::If").and_then(Json::as_array) {
            Some(branches) if branches.len() == 3 => {
                let condition = branches[0].as_str().unwrap_or_default().to_owned();
                for (i, branch) in branches[1..].iter().enumerate() {
                    if reference(branch) != Some("AWS::NoValue") {
                        let when = if i == 0 { condition.clone() } else { format!("!{condition}") };
                        out.push((Some(when), branch.clone()));
                    }
                }
            }
            _ => out.push((None, policy)),
        }
    }
    out
}

/// Stripe's secrets are read only when the stack runs on Stripe, each by the functions that
/// need it: the API key by those that call the PSP, the webhook signing secret by the
/// function that serves the PSP's webhook route.
const STRIPE_CONDITION: &str = "UsesStripe";
const STRIPE_KEY_PARAMETER: &str = "StripeApiKeySecretArn";
const STRIPE_WEBHOOK_PARAMETER: &str = "StripeWebhookSecretArn";

/// The template's own secret that signs billing portal links and sessions.
const PORTAL_SECRET: &str = "PortalSigningSecret";

fn secrets_needed(binary: &str) -> BTreeSet<String> {
    let mut needed = BTreeSet::new();
    if let Some(f) = recoup_functions::by_name(binary) {
        if f.calls_psp {
            needed.insert(STRIPE_KEY_PARAMETER.to_owned());
        }
        if f.routes().iter().any(|r| r.path.starts_with("/v1/webhooks/")) {
            needed.insert(STRIPE_WEBHOOK_PARAMETER.to_owned());
        }
        // Portal links are signed where they are made (the portal-sessions route) and
        // checked where they are opened (the portal's pages).
        // The notifier signs the links its emails carry.
        if f.routes().iter().any(|r| r.path == "/v1/portal-sessions" || r.path == "/portal/session")
            || binary == "notifier"
        {
            needed.insert(PORTAL_SECRET.to_owned());
        }
    }
    needed
}

pub fn check_iam(t: &Json) -> Problems {
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
        let mut sends_email = false;
        let mut queries_index = false;
        let mut batch_reads_table = false;
        let mut secrets_read = BTreeSet::new();
        for (condition, policy) in policies_of(t, &f) {
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
                                Grant::Table => batch_reads_table |= action == "dynamodb:BatchGetItem",
                                Grant::Index(_) if action == "dynamodb:Query" => queries_index = true,
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
                        let queue = queue_sent_to(&binary).map_or(routing::CHARGE_QUEUE, |(q, _)| q);
                        if grants != [Grant::Arn(queue.to_owned())] {
                            problems
                                .push(format!("{id}: sqs:SendMessage should be on {queue}.Arn only, is on {grants:?}"));
                        }
                    } else if action == "secretsmanager:GetSecretValue" {
                        let listed = list(&statement["Resource"]);
                        // The template's own secret by its ARN (`!GetAtt X.Id`: the ARN on
                        // AWS and on ministack alike), a parameter's by `!Ref`.
                        let portal = listed.len() == 1
                            && get_att(&listed[0]).is_some_and(|(r, a)| r == PORTAL_SECRET && a == "Id");
                        let resources: Vec<Option<&str>> =
                            if portal { vec![Some(PORTAL_SECRET)] } else { listed.iter().map(reference).collect() };
                        match resources.as_slice() {
                            [Some(p)] if condition.as_deref() == Some(STRIPE_CONDITION) => {
                                secrets_read.insert((*p).to_owned());
                            }
                            // The portal's signing secret, made by the template itself.
                            [Some(p)] if *p == PORTAL_SECRET && condition.is_none() => {
                                secrets_read.insert((*p).to_owned());
                            }
                            _ => problems.push(format!(
                                "{id}: {action} should be on one !Ref to a secret parameter, under !If {STRIPE_CONDITION}; is on {} under {condition:?}",
                                statement["Resource"]
                            )),
                        }
                    } else if action == "ses:SendEmail" {
                        // The notifier sends as the sender's verified identity only, and only
                        // when a sender is configured.
                        if binary != "notifier" {
                            problems.push(format!("{id} ({binary}): ses:SendEmail, but only the notifier emails"));
                        }
                        if condition.as_deref() != Some("SendsEmail")
                            || !statement["Resource"].to_string().contains(":identity/${EmailIdentity}")
                        {
                            problems.push(format!(
                                "{id}: ses:SendEmail should be on the EmailIdentity identity, under !If SendsEmail; is on {} under {condition:?}",
                                statement["Resource"]
                            ));
                        }
                        sends_email = true;
                    } else {
                        problems.push(format!("{id}: unexpected action {action}"));
                    }
                }
            }
        }
        if queries_index && !batch_reads_table {
            problems.push(format!(
                "{id} ({binary}): queries an index but may not BatchGetItem the table; the indexes project keys only, so the store reads what it finds from the table"
            ));
        }
        if binary == "notifier" && !sends_email {
            problems.push(format!("{id} ({binary}): may not send email through SES"));
        }
        let should_publish = !NON_PUBLISHERS.contains(&binary.as_str());
        if publishes != should_publish {
            problems.push(format!(
                "{id} ({binary}): events:PutEvents is {}granted but the function {}",
                if publishes { "" } else { "not " },
                if should_publish { "changes state and publishes its events" } else { "never publishes" }
            ));
        }
        let needed = secrets_needed(&binary);
        for missing in needed.difference(&secrets_read) {
            problems.push(format!("{id} ({binary}): cannot read {missing}, which the function needs"));
        }
        for extra in secrets_read.difference(&needed) {
            problems.push(format!("{id} ({binary}): can read {extra}, which the function never needs"));
        }
        let should_send = queue_sent_to(&binary).is_some();
        if sends != should_send {
            problems.push(format!(
                "{id} ({binary}): sqs:SendMessage is {}granted but the function {}",
                if sends { "" } else { "not " },
                if should_send { "sends to its queue" } else { "never enqueues" }
            ));
        }
    }
    problems
}

#[test]
fn every_function_is_granted_only_what_it_does() {
    assert_none(check_iam(&template()));
}

/// The functions that hold webhook endpoints and their signing secrets.
const WEBHOOK_FUNCTIONS: [&str; 2] = ["webhooks-api", "webhook-dispatcher"];

/// Webhook signing secrets live in the endpoints' items (`WHE#...`, listed under
/// `WEBHOOK_ENDPOINTS`): every other function that may touch the table is denied those
/// partitions, by their leading key, for every read and write.
pub fn check_webhook_secrets(t: &Json) -> Problems {
    let mut problems = Vec::new();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        let binary = binary_of(&f).unwrap_or("").to_owned();
        let statements: Vec<Json> = policies_of(t, &f).into_iter().flat_map(|(_, p)| list(&p["Statement"])).collect();
        let touches_table = statements
            .iter()
            .any(|s| s["Effect"] == "Allow" && strings(&s["Action"]).iter().any(|a| a.starts_with("dynamodb:")));
        let denied = statements.iter().any(|s| {
            let keys = strings(&s["Condition"]["ForAnyValue:StringLike"]["dynamodb:LeadingKeys"]);
            let actions = strings(&s["Action"]);
            s["Effect"] == "Deny"
                && keys.contains(&"WHE#*".to_owned())
                && keys.contains(&"WEBHOOK_ENDPOINTS".to_owned())
                && ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
                    .iter()
                    .all(|a| actions.contains(&(*a).to_owned()))
        });
        let holder = WEBHOOK_FUNCTIONS.contains(&binary.as_str());
        if holder && denied {
            problems.push(format!("{id} ({binary}) delivers or manages webhooks but is denied their endpoints"));
        }
        if !holder && touches_table && !denied {
            problems
                .push(format!("{id} ({binary}) may read webhook signing secrets: deny it WHE#* and WEBHOOK_ENDPOINTS"));
        }
    }
    problems
}

#[test]
fn only_the_webhook_functions_can_read_webhook_signing_secrets() {
    assert_none(check_webhook_secrets(&template()));
}
