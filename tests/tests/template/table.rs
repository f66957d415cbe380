//! The table against the store's keys, indexes and TTL.

use super::*;

pub fn check_table(t: &Json) -> Problems {
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
        if gsi.pointer("/Projection/ProjectionType").and_then(Json::as_str) != Some("KEYS_ONLY") {
            problems.push(format!(
                "{id}: index {name} should project KEYS_ONLY (the store reads the items from the table, and a write that keeps an item's index keys then costs the index nothing)"
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

#[test]
fn the_table_has_the_keys_indexes_and_ttl_the_store_uses() {
    assert_none(check_table(&template()));
}
