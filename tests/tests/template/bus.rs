//! The event bus and the queues: rules against `routing::RULES`, queues with their
//! dead-letter queues, SQS consumers and schedules against the registry.

use super::*;

pub fn check_rules(t: &Json) -> Problems {
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
pub fn work_queues() -> BTreeSet<&'static str> {
    let mut queues: BTreeSet<&'static str> = RULES.iter().map(|r| r.queue).collect();
    queues.insert(routing::CHARGE_QUEUE);
    queues
}

pub fn encrypted(queue: &Json) -> bool {
    let p = &queue["Properties"];
    is_true(&p["SqsManagedSseEnabled"]) || !p["KmsMasterKeyId"].is_null()
}

pub fn check_queues(t: &Json) -> Problems {
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

pub fn check_sqs_consumers(t: &Json) -> Problems {
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

pub fn check_schedules(t: &Json) -> Problems {
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
