//! Function resources against the function crates and the registry.

use super::*;

pub fn check_functions(t: &Json) -> Problems {
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
