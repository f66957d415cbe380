//! The HTTP API: its routes against the registry, and its JWT authorizer.

use super::*;

pub fn check_http_routes(t: &Json) -> Problems {
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
            let open = auth.is_some_and(|a| a.eq_ignore_ascii_case("NONE"));
            match (authorizer_of(binary), open) {
                (Authorizer::Jwt, true) => problems.push(format!(
                    "{id}.Events.{name}: the route requires the JWT authorizer (the registry says Authorizer::Jwt)"
                )),
                (Authorizer::None, false) => problems.push(format!(
                    "{id}.Events.{name}: the function checks its caller itself (Authorizer::None); set Auth.Authorizer: NONE so the PSP can reach it"
                )),
                (Authorizer::Jwt, false) | (Authorizer::None, true) => {}
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

pub fn check_authorizer(t: &Json) -> Problems {
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

#[test]
fn every_http_route_in_the_code_is_an_api_event_in_the_template() {
    assert_none(check_http_routes(&template()));
}

#[test]
fn every_route_requires_the_jwt_authorizer_by_default() {
    assert_none(check_authorizer(&template()));
}
