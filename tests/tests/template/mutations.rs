//! The checks notice disagreement: each case edits a copy of the template the way a drift
//! between template and code would, and the checks must report it. Cases pick resources,
//! statements, indexes and keys by name, never by position.

use super::*;

pub fn function_mut<'a>(t: &'a mut Json, binary: &str) -> &'a mut Json {
    let id = function(t, binary).map(|(id, _)| id).unwrap_or_else(|| panic!("no function builds {binary}"));
    &mut t["Resources"][id]
}

pub fn first_event_mut<'a>(t: &'a mut Json, binary: &str, ty: &str) -> &'a mut Json {
    let events = function_mut(t, binary)["Properties"]["Events"].as_object_mut().expect("events");
    events.values_mut().find(|e| e["Type"] == ty).unwrap_or_else(|| panic!("{binary} has no {ty} event"))
}

/// The resource with this logical id.
fn resource_mut<'a>(t: &'a mut Json, logical_id: &str) -> &'a mut Json {
    assert!(t["Resources"].get(logical_id).is_some(), "no resource {logical_id}");
    &mut t["Resources"][logical_id]
}

/// The one resource of this type.
fn only_resource_mut<'a>(t: &'a mut Json, ty: &str) -> &'a mut Json {
    let ids: Vec<String> = resources_of_type(t, ty).into_iter().map(|(id, _)| id).collect();
    let [id] = ids.as_slice() else { panic!("expected one {ty}, found {ids:?}") };
    let id = id.clone();
    resource_mut(t, &id)
}

/// The element of a list whose `field` is `value`.
fn named_mut<'a>(list: &'a mut Json, field: &str, value: &str) -> &'a mut Json {
    list.as_array_mut()
        .and_then(|items| items.iter_mut().find(|i| i[field] == value))
        .unwrap_or_else(|| panic!("no element with {field} = {value}"))
}

/// The policy statement `sid` of the function building `binary`.
fn statement_mut<'a>(t: &'a mut Json, binary: &str, sid: &str) -> &'a mut Json {
    let policies = &mut function_mut(t, binary)["Properties"]["Policies"];
    let policy = policies
        .as_array_mut()
        .and_then(|ps| {
            ps.iter_mut().find(|p| p["Statement"].as_array().is_some_and(|st| st.iter().any(|x| x["Sid"] == sid)))
        })
        .unwrap_or_else(|| panic!("{binary} has no statement {sid}"));
    named_mut(&mut policy["Statement"], "Sid", sid)
}

pub type Mutation = fn(&mut Json);

#[test]
pub fn the_checks_catch_a_template_that_disagrees_with_the_code() {
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
                events.retain(|_, e| e["Properties"]["Path"] != "/v1/subscriptions/{id}/resume");
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
                let pattern = &mut resource_mut(t, "InvoiceEventsToSubscriptionUpdates")["Properties"]["EventPattern"]
                    ["detail-type"];
                pattern.as_array_mut().unwrap().pop();
            },
            "routing::RULES says",
        ),
        (
            "a rule feeding the wrong queue",
            |t| {
                let targets = &mut resource_mut(t, "CustomerNotifications")["Properties"]["Targets"];
                for target in targets.as_array_mut().unwrap() {
                    target["Arn"] = json!({"Fn::GetAtt": [routing::CHARGE_QUEUE, "Arn"]});
                }
            },
            "should have one target",
        ),
        (
            "a rule renamed",
            |t| {
                let resources = t["Resources"].as_object_mut().unwrap();
                let rule = resources.remove("InvoiceEventsToSubscriptionUpdates").unwrap();
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
                let api = only_resource_mut(t, "AWS::Serverless::HttpApi");
                api["Properties"]["Auth"].as_object_mut().unwrap().remove("DefaultAuthorizer");
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
                let table = only_resource_mut(t, "AWS::DynamoDB::Table");
                named_mut(&mut table["Properties"]["GlobalSecondaryIndexes"], "IndexName", "GSI3")["IndexName"] =
                    json!("GSI4");
            },
            "the store uses",
        ),
        (
            "a sort key that is not SK",
            |t| {
                let table = only_resource_mut(t, "AWS::DynamoDB::Table");
                named_mut(&mut table["Properties"]["KeySchema"], "AttributeName", "SK")["AttributeName"] = json!("sk");
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
            |t| t["Parameters"]["PaymentProvider"]["AllowedValues"] = json!(["sandbox", "stripe", "adyen"]),
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
            "an index read without the table's batched read",
            |t| statement_mut(t, "outbox-relay", "TableItems")["Action"] = json!(["dynamodb:PutItem"]),
            "may not BatchGetItem the table",
        ),
        (
            "an index that projects every attribute",
            |t| {
                let table = only_resource_mut(t, "AWS::DynamoDB::Table");
                named_mut(&mut table["Properties"]["GlobalSecondaryIndexes"], "IndexName", "GSI2")["Projection"] =
                    json!({"ProjectionType": "ALL"});
            },
            "should project KEYS_ONLY",
        ),
        (
            "a scan permission",
            |t| statement_mut(t, "notifier", "TableItems")["Action"] = json!(["dynamodb:Scan"]),
            "not an operation the store performs",
        ),
        (
            "a publisher without events:PutEvents",
            |t| {
                for policy in function_mut(t, "charge-worker")["Properties"]["Policies"].as_array_mut().unwrap() {
                    if let Some(statements) = policy["Statement"].as_array_mut() {
                        statements.retain(|s| s["Action"] != "events:PutEvents");
                    }
                }
            },
            "changes state and publishes",
        ),
        (
            "the Stripe key readable by a function that never calls Stripe",
            |t| {
                let grant = function_mut(t, "charge-worker")["Properties"]["Policies"][1].clone();
                function_mut(t, "notifier")["Properties"]["Policies"].as_array_mut().unwrap().push(grant);
            },
            "can read StripeApiKeySecretArn, which the function never needs",
        ),
        (
            "a charging function that cannot read the Stripe key",
            |t| {
                function_mut(t, "invoices-api")["Properties"]["Policies"].as_array_mut().unwrap().truncate(1);
            },
            "cannot read StripeApiKeySecretArn",
        ),
        (
            "the Stripe key granted whatever the provider",
            |t| {
                let policies = &mut function_mut(t, "charge-worker")["Properties"]["Policies"];
                policies[1] = policies[1]["Fn::If"][1].clone();
            },
            "under !If UsesStripe",
        ),
        (
            "the webhook route behind the JWT authorizer",
            |t| {
                first_event_mut(t, "psp-webhooks", "HttpApi")["Properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("Auth")
                    .unwrap();
            },
            "so the PSP can reach it",
        ),
        (
            "the webhook secret readable by a charging function",
            |t| {
                let grant = function_mut(t, "psp-webhooks")["Properties"]["Policies"][1].clone();
                function_mut(t, "invoices-api")["Properties"]["Policies"].as_array_mut().unwrap().push(grant);
            },
            "can read StripeWebhookSecretArn",
        ),
        (
            "webhook signing secrets readable by another function",
            |t| {
                let statements = &mut function_mut(t, "charge-worker")["Properties"]["Policies"][0]["Statement"];
                statements.as_array_mut().unwrap().retain(|s| s["Sid"] != "NoWebhookSecrets");
            },
            "may read webhook signing secrets",
        ),
        (
            "SES granted beyond the sending identity",
            |t| {
                let policies = &mut function_mut(t, "notifier")["Properties"]["Policies"];
                policies[1]["Fn::If"][1]["Statement"][0]["Resource"] = json!("*");
            },
            "ses:SendEmail should be on the EmailIdentity identity",
        ),
        (
            "Stripe allowed without a rule that requires its key",
            |t| {
                t.as_object_mut().unwrap().remove("Rules");
            },
            "refused by the code",
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
