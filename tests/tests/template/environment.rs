//! Each function's environment against `Settings::from_lookup`.

use super::*;

pub fn resolved_environment(t: &Json, function: &Json) -> BTreeMap<String, String> {
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
pub fn settings_from(env: &BTreeMap<String, String>) -> (Result<Settings, String>, BTreeSet<String>) {
    let asked = Mutex::new(BTreeSet::new());
    let result = Settings::from_lookup(|name| {
        asked.lock().expect("not poisoned").insert(name.to_owned());
        env.get(name).cloned()
    })
    .map_err(|e| e.to_string());
    (result, asked.into_inner().expect("not poisoned"))
}

/// The parameters the template's `Rules` require when `parameter` is `value` (rules of
/// the form `RuleCondition: !Equals [!Ref P, v]` with `Assert: !Not [!Equals [!Ref Q, ""]]`).
pub fn required_by_rules(t: &Json, parameter: &str, value: &str) -> Vec<String> {
    let mut required = Vec::new();
    for rule in t["Rules"].as_object().into_iter().flat_map(|r| r.values()) {
        let condition = list(&rule["RuleCondition"]["Fn::Equals"]);
        if condition.len() != 2 || reference(&condition[0]) != Some(parameter) || condition[1] != value {
            continue;
        }
        for assertion in list(&rule["Assertions"]) {
            let not = list(&assertion["Assert"]["Fn::Not"]);
            let equals = not.first().map(|n| list(&n["Fn::Equals"])).unwrap_or_default();
            if equals.len() == 2 && equals[1] == "" {
                required.extend(reference(&equals[0]).map(str::to_owned));
            }
        }
    }
    required
}

pub fn check_environment(t: &Json) -> Problems {
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
        let sends = queue_sent_to(&binary);
        let queue_vars = ["RECOUP_CHARGE_QUEUE_URL", "RECOUP_WEBHOOKS_QUEUE_URL"];
        for name in asked.iter().filter(|n| !env.contains_key(*n)) {
            if !queue_vars.contains(&name.as_str()) || sends.is_some_and(|(_, var)| var == name) {
                problems.push(format!("{id} ({binary}): the code reads {name}, which the template does not set"));
            }
        }
        for var in queue_vars {
            let expected = sends.filter(|(_, v)| *v == var).map(|(q, _)| q);
            match (expected, reference(&vars.get(var).cloned().unwrap_or(Json::Null))) {
                (Some(queue), Some(q)) if q == queue => {}
                (Some(queue), _) => problems.push(format!("{id} ({binary}): {var} should be !Ref {queue}")),
                (None, Some(_)) => {
                    problems.push(format!("{id} ({binary}) does not send to that queue; it should not get {var}"))
                }
                (None, None) => {}
            }
        }
        let bus = vars.get("RECOUP_EVENT_BUS").and_then(|v| reference(v).map(str::to_owned));
        if !bus.as_ref().is_some_and(|b| buses.contains(b)) {
            problems
                .push(format!("{id} ({binary}): RECOUP_EVENT_BUS should be !Ref the template's event bus {buses:?}"));
        }
        // Every value the stack may be deployed with must be one the code accepts.
        for (var, value) in &vars {
            let Some(param) = reference(value).and_then(|r| t.pointer(&format!("/Parameters/{r}"))) else { continue };
            let parameter = reference(value).unwrap_or_default();
            for allowed in strings(&param["AllowedValues"]) {
                let mut env = env.clone();
                env.insert(var.clone(), allowed.clone());
                // What the template's rules make the operator fill in for this choice.
                for required in required_by_rules(t, parameter, &allowed) {
                    for (other, v) in &vars {
                        if reference(v) == Some(required.as_str()) {
                            env.insert(other.clone(), format!("<{required}>"));
                        }
                    }
                }
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

#[test]
fn every_function_gets_an_environment_the_code_accepts() {
    assert_none(check_environment(&template()));
}
