//! Loading the template (short-form intrinsics rewritten to long forms), reading it, and
//! reading the function crates on disk.

use super::*;

pub fn template() -> Json {
    let path = recoup_tests::workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("template.yaml is not YAML: {e}"));
    to_json(yaml)
}

/// YAML to JSON, short-form intrinsic functions to their long forms.
pub fn to_json(v: serde_yaml_ng::Value) -> Json {
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

pub fn resources(t: &Json) -> Map<String, Json> {
    t.get("Resources").and_then(Json::as_object).cloned().unwrap_or_default()
}

pub fn resources_of_type(t: &Json, ty: &str) -> Vec<(String, Json)> {
    resources(t).into_iter().filter(|(_, r)| r["Type"] == ty).collect()
}

/// `{"Ref": "X"}` -> `X`.
pub fn reference(v: &Json) -> Option<&str> {
    v.as_object().filter(|o| o.len() == 1)?.get("Ref")?.as_str()
}

/// `{"Fn::GetAtt": ["X", "Arn"]}` (or the long form's `"X.Arn"`) -> `(X, Arn)`.
pub fn get_att(v: &Json) -> Option<(String, String)> {
    match v.as_object().filter(|o| o.len() == 1)?.get("Fn::GetAtt")? {
        Json::Array(parts) => match parts.as_slice() {
            [Json::String(r), Json::String(a)] => Some((r.clone(), a.clone())),
            _ => None,
        },
        Json::String(s) => s.split_once('.').map(|(r, a)| (r.to_owned(), a.to_owned())),
        _ => None,
    }
}

pub fn is_arn_of(v: &Json, logical_id: &str) -> bool {
    get_att(v).is_some_and(|(r, a)| r == logical_id && a == "Arn")
}

/// A number, or a string holding one (CloudFormation accepts both).
pub fn number(v: &Json) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A string or a list of strings, as a list.
pub fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// A single value or a list, as a list.
pub fn list(v: &Json) -> Vec<Json> {
    match v {
        Json::Null => Vec::new(),
        Json::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

pub fn is_true(v: &Json) -> bool {
    v.as_bool() == Some(true) || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

pub fn globals(t: &Json) -> Json {
    t.pointer("/Globals/Function").cloned().unwrap_or(Json::Null)
}

/// A function property, falling back to `Globals.Function`.
pub fn function_property(t: &Json, function: &Json, name: &str) -> Json {
    match function.pointer(&format!("/Properties/{name}")) {
        Some(v) => v.clone(),
        None => globals(t).get(name).cloned().unwrap_or(Json::Null),
    }
}

/// Lambda's default timeout is 3 seconds.
pub fn function_timeout(t: &Json, function: &Json) -> u64 {
    number(&function_property(t, function, "Timeout")).unwrap_or(3)
}

pub fn binary_of(function: &Json) -> Option<&str> {
    function.pointer("/Metadata/BuildProperties/Binary")?.as_str()
}

/// Every function resource, by the binary it is built from.
pub fn functions_by_binary(t: &Json) -> BTreeMap<String, Vec<(String, Json)>> {
    let mut out: BTreeMap<String, Vec<(String, Json)>> = BTreeMap::new();
    for (id, f) in resources_of_type(t, "AWS::Serverless::Function") {
        out.entry(binary_of(&f).unwrap_or("").to_owned()).or_default().push((id, f));
    }
    out
}

/// The one function built from `binary` (its logical id and resource).
pub fn function(t: &Json, binary: &str) -> Option<(String, Json)> {
    match functions_by_binary(t).remove(binary) {
        Some(mut found) if found.len() == 1 => found.pop(),
        _ => None,
    }
}

/// A function's events of the given types, by event name.
pub fn events_of(function: &Json, types: &[&str]) -> Vec<(String, Json)> {
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
pub fn environment(t: &Json, function: &Json) -> Map<String, Json> {
    let mut vars = globals(t).pointer("/Environment/Variables").and_then(Json::as_object).cloned().unwrap_or_default();
    if let Some(own) = function.pointer("/Properties/Environment/Variables").and_then(Json::as_object) {
        vars.extend(own.clone());
    }
    vars
}

/// A function crate: its directory name, package name and binary name.
#[derive(Debug, Clone)]
pub struct FunctionCrate {
    pub dir: String,
    pub package: String,
    pub binary: String,
    pub manifest: String,
}

/// The `name` in a TOML section (`[package]` or the first `[[bin]]`), without a TOML parser:
/// our manifests keep it on one line.
pub fn section_name(manifest: &str, section: &str) -> Option<String> {
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
pub fn function_crates() -> Vec<FunctionCrate> {
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
