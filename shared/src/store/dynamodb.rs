//! The DynamoDB store. One table, keys `PK`/`SK`, three sparse GSIs (`GSI1PK`/`GSI1SK`
//! ...), TTL on `expires_at`. The entity body is stored as a native map in `data` so items
//! stay readable in the console, except where an item would pass one write unit and
//! deflating its body saves units (an invoice with its attempts): then it is raw DEFLATE of
//! the JSON in the binary attribute `deflated` (see [`super::deflated`]).
//!
//! A single write uses `PutItem`/`DeleteItem` with a condition; several use
//! `TransactWriteItems`, which costs twice the capacity, so the engine keeps most writes
//! single.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, ConsumedCapacity, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnConsumedCapacity,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};

use super::{
    Condition, Cursor, Index, IndexKey, IndexKeys, Item, ItemStore, Key, Page, Query, SortKeyRange, StoreError,
    WriteOp, deflated, validate_batch,
};

const PK: &str = "PK";
const SK: &str = "SK";
const ENTITY: &str = "entity";
const VERSION: &str = "version";
const EXPIRES_AT: &str = "expires_at";
const DATA: &str = "data";

fn index_attrs(index: Index) -> (&'static str, &'static str) {
    match index {
        Index::Gsi1 => ("GSI1PK", "GSI1SK"),
        Index::Gsi2 => ("GSI2PK", "GSI2SK"),
        Index::Gsi3 => ("GSI3PK", "GSI3SK"),
    }
}

/// JSON to a DynamoDB attribute value. Numbers stay exact: DynamoDB numbers are decimal
/// strings, never floats.
pub fn json_to_attr(v: &serde_json::Value) -> AttributeValue {
    use serde_json::Value;
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(json_to_attr).collect()),
        Value::Object(o) => AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), json_to_attr(v))).collect()),
    }
}

pub fn attr_to_json(a: &AttributeValue) -> Result<serde_json::Value, StoreError> {
    use serde_json::Value;
    Ok(match a {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => {
            let parsed: serde_json::Number = n.parse().map_err(|_| StoreError::Corrupt(format!("number {n:?}")))?;
            Value::Number(parsed)
        }
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(attr_to_json).collect::<Result<_, _>>()?),
        AttributeValue::M(m) => {
            Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), attr_to_json(v)?))).collect::<Result<_, StoreError>>()?)
        }
        other => return Err(StoreError::Corrupt(format!("unsupported attribute type {other:?}"))),
    })
}

fn key_map(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

fn to_attrs(item: &Item) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut m = key_map(&item.key);
    m.insert(ENTITY.into(), AttributeValue::S(item.entity.clone()));
    m.insert(VERSION.into(), AttributeValue::N(item.version.to_string()));
    for index in Index::ALL {
        if let Some(ik) = item.indexes.get(index) {
            let (p, s) = index_attrs(index);
            m.insert(p.into(), AttributeValue::S(ik.pk.clone()));
            m.insert(s.into(), AttributeValue::S(ik.sk.clone()));
        }
    }
    if let Some(t) = item.expires_at {
        m.insert(EXPIRES_AT.into(), AttributeValue::N(t.to_string()));
    }
    match deflated::stored_body(item)? {
        deflated::StoredBody::Deflated(bytes) => {
            m.insert(deflated::DEFLATED.into(), AttributeValue::B(Blob::new(bytes)))
        }
        deflated::StoredBody::Map(json) => m.insert(DATA.into(), json_to_attr(&json)),
    };
    Ok(m)
}

/// Whether an item (or an index entry) holds the body, in either form.
fn has_body(m: &HashMap<String, AttributeValue>) -> bool {
    m.contains_key(DATA) || m.contains_key(deflated::DEFLATED)
}

fn string(m: &HashMap<String, AttributeValue>, name: &str) -> Result<String, StoreError> {
    match m.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(StoreError::Corrupt(format!("attribute {name} missing or not a string"))),
    }
}

fn number(m: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<i64>, StoreError> {
    match m.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| StoreError::Corrupt(format!("{name}={n}"))),
        Some(_) => Err(StoreError::Corrupt(format!("attribute {name} is not a number"))),
    }
}

fn from_attrs(m: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let mut indexes = IndexKeys::default();
    for index in Index::ALL {
        let (p, s) = index_attrs(index);
        if let (Some(AttributeValue::S(ip)), Some(AttributeValue::S(is))) = (m.get(p), m.get(s)) {
            indexes = indexes.with(index, Some(IndexKey::new(ip.clone(), is.clone())));
        }
    }
    Ok(Item {
        key: Key::new(string(m, PK)?, string(m, SK)?),
        entity: string(m, ENTITY)?,
        version: number(m, VERSION)?.unwrap_or(0) as u64,
        indexes,
        expires_at: number(m, EXPIRES_AT)?,
        body: match (m.get(DATA), m.get(deflated::DEFLATED)) {
            (Some(data), _) => attr_to_json(data)?,
            (None, Some(AttributeValue::B(bytes))) => deflated::inflate(bytes.as_ref())?,
            (None, Some(_)) => {
                return Err(StoreError::Corrupt(format!("attribute {} is not binary", deflated::DEFLATED)));
            }
            (None, None) => serde_json::Value::Null,
        }
        .into(),
    })
}

/// A condition as a DynamoDB expression and its values.
fn condition_expr(c: Condition) -> (Option<String>, Option<HashMap<String, AttributeValue>>) {
    match c {
        Condition::Always => (None, None),
        Condition::NotExists => (Some(format!("attribute_not_exists({PK})")), None),
        Condition::Exists => (Some(format!("attribute_exists({PK})")), None),
        Condition::Version(v) => (
            Some(format!("{VERSION} = :expected_version")),
            Some(HashMap::from([(":expected_version".to_owned(), AttributeValue::N(v.to_string()))])),
        ),
    }
}

fn map_err<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> StoreError {
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            let msg = err.message().unwrap_or("").to_owned();
            match code {
                "ConditionalCheckFailedException" => StoreError::ConditionFailed { op: 0 },
                "TransactionConflictException"
                | "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TransactionInProgressException" => StoreError::Contention(format!("{code}: {msg}")),
                "ValidationException" => StoreError::Invalid(msg),
                "ResourceNotFoundException" => StoreError::Unavailable(format!("table not found: {msg}")),
                _ => StoreError::Unavailable(format!("{code}: {msg}")),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{e:?}"))
        }
        _ => StoreError::Unavailable(format!("{e:?}")),
    }
}

/// What DynamoDB reported as consumed, in thousandths of a unit.
#[derive(Debug, Default)]
pub struct ConsumedCapacityTotals {
    pub read_milli: AtomicU64,
    pub write_milli: AtomicU64,
}

impl ConsumedCapacityTotals {
    fn add(&self, c: Option<&ConsumedCapacity>, write: bool) {
        let Some(c) = c else { return };
        let units = c
            .capacity_units()
            .unwrap_or_default()
            .max(c.read_capacity_units().unwrap_or_default() + c.write_capacity_units().unwrap_or_default());
        let milli = (units * 1000.0).round() as u64;
        if write {
            self.write_milli.fetch_add(milli, Ordering::Relaxed);
        } else {
            self.read_milli.fetch_add(milli, Ordering::Relaxed);
        }
    }

    pub fn read_units(&self) -> f64 {
        self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn write_units(&self) -> f64 {
        self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: crate::aws::LazyClient<Client>,
    table: String,
    consumed: Arc<ConsumedCapacityTotals>,
}

impl DynamoStore {
    /// One `BatchGetItem` (more if DynamoDB leaves keys unprocessed, asked again with
    /// backoff), answered in the order of `keys`.
    async fn batch_get(&self, keys: &[Key], consistent: bool) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_keys(keys)?;
        let mut found: HashMap<Key, Item> = HashMap::with_capacity(keys.len());
        let mut pending: Vec<HashMap<String, AttributeValue>> = keys.iter().map(key_map).collect();
        for round in 0..8u32 {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10 << round)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(consistent)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let out = self
                .client
                .get()
                .batch_get_item()
                .request_items(&self.table, request)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(map_err)?;
            for c in out.consumed_capacity() {
                self.consumed.add(Some(c), false);
            }
            for attrs in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                let item = from_attrs(attrs)?;
                found.insert(item.key.clone(), item);
            }
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                pending = left.keys().to_vec();
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::Contention("DynamoDB left keys of a batched read unprocessed".into()));
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    /// The items an index query found, read from the table. The indexes project keys only
    /// (`KEYS_ONLY`), so a write that leaves an item's index keys alone costs the indexes
    /// nothing (an invoice's claim and settle rewrite it, and with every attribute
    /// projected each index holding it paid for a copy of the whole item each time). The
    /// read is eventually consistent, as the index is. An item that no longer carries the
    /// queried index key (it moved or left the index after the index was read) is left
    /// out, so a page holds what its items say now, as the other stores' pages do; the
    /// cursor still follows the index.
    async fn read_indexed(
        &self,
        index: Index,
        q: &Query,
        found: &[HashMap<String, AttributeValue>],
    ) -> Result<Vec<Item>, StoreError> {
        let keys = found
            .iter()
            .map(|m| Ok(Key::new(string(m, PK)?, string(m, SK)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let batches =
            futures::future::try_join_all(keys.chunks(super::MAX_BATCH_GET).map(|c| self.batch_get(c, false))).await?;
        Ok(batches
            .into_iter()
            .flatten()
            .flatten()
            .filter(|item| item.indexes.get(index).is_some_and(|k| k.pk == q.pk && q.range.contains(&k.sk)))
            .collect())
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self::with(crate::aws::LazyClient::ready(client), table)
    }

    /// Its client made at the first call (a function's first invocation, not its start).
    pub fn lazy(config: &aws_types::SdkConfig, table: impl Into<String>) -> Self {
        Self::with(crate::aws::LazyClient::new(config, Client::new), table)
    }

    fn with(client: crate::aws::LazyClient<Client>, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into(), consumed: Arc::new(ConsumedCapacityTotals::default()) }
    }

    pub fn consumed(&self) -> Arc<ConsumedCapacityTotals> {
        self.consumed.clone()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as `template.yaml` declares it, if it is missing. For the emulator
    /// and local tooling; in AWS the stack owns the table.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        self.ensure_table_projecting(ProjectionType::KeysOnly).await
    }

    /// [`Self::ensure_table`] with the indexes projecting `projection`. Tables made before
    /// 2026-12-07 project every attribute (`ALL`); the store reads either.
    pub async fn ensure_table_projecting(&self, projection: ProjectionType) -> Result<(), StoreError> {
        let exists = self.client.get().describe_table().table_name(&self.table).send().await;
        if exists.is_ok() {
            return Ok(());
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let key = |name: &str, kt: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kt)
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))
        };
        let mut req = self
            .client
            .get()
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?);
        for index in Index::ALL {
            let (p, s) = index_attrs(index);
            req = req.attribute_definitions(attr(p)?).attribute_definitions(attr(s)?).global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name())
                    .key_schema(key(p, KeyType::Hash)?)
                    .key_schema(key(s, KeyType::Range)?)
                    .projection(Projection::builder().projection_type(projection.clone()).build())
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            // Another process created it first.
            Err(SdkError::ServiceError(se)) if se.err().code() == Some("ResourceInUseException") => return Ok(()),
            Err(e) => return Err(map_err(e)),
        }
        self.client
            .get()
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            )
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn transact_item(&self, op: WriteOp) -> Result<TransactWriteItem, StoreError> {
        let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Invalid(e.to_string());
        Ok(match op {
            WriteOp::Put { item, condition } => {
                let (expr, values) = condition_expr(condition);
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(to_attrs(&item)?))
                            .set_condition_expression(expr)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(built)?,
                    )
                    .build()
            }
            WriteOp::Delete { key, condition } => {
                let (expr, values) = condition_expr(condition);
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_map(&key)))
                            .set_condition_expression(expr)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(built)?,
                    )
                    .build()
            }
            WriteOp::Check { key, condition } => {
                let (expr, values) = condition_expr(condition);
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_map(&key)))
                            .condition_expression(
                                expr.unwrap_or_else(|| format!("attribute_exists({PK}) OR attribute_not_exists({PK})")),
                            )
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(built)?,
                    )
                    .build()
            }
        })
    }
}

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get()
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(map_err)?;
        self.consumed.add(out.consumed_capacity(), false);
        out.item().map(from_attrs).transpose()
    }

    /// `BatchGetItem`, strongly consistent; keys DynamoDB leaves unprocessed (throttling)
    /// are asked again.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        self.batch_get(keys, true).await
    }

    async fn get_many_eventually(&self, keys: &[Key]) -> Result<Vec<Option<Item>>, StoreError> {
        self.batch_get(keys, false).await
    }

    async fn query(&self, q: &Query) -> Result<Page, StoreError> {
        q.validate_cursor()?;
        let (pk_attr, sk_attr) = match q.index {
            None => (PK, SK),
            Some(i) => index_attrs(i),
        };
        let mut names = HashMap::from([("#pk".to_owned(), pk_attr.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(q.pk.clone()))]);
        let mut expr = "#pk = :pk".to_owned();
        let mut sk = |cond: &str, vals: &[&String]| {
            names.insert("#sk".into(), sk_attr.to_owned());
            for (i, v) in vals.iter().enumerate() {
                values.insert(format!(":sk{i}"), AttributeValue::S((*v).clone()));
            }
            expr.push_str(" AND ");
            expr.push_str(cond);
        };
        match &q.range {
            SortKeyRange::All => {}
            SortKeyRange::BeginsWith(p) => sk("begins_with(#sk, :sk0)", &[p]),
            SortKeyRange::AtMost(b) => sk("#sk <= :sk0", &[b]),
            SortKeyRange::AtLeast(b) => sk("#sk >= :sk0", &[b]),
            SortKeyRange::Between(a, b) => sk("#sk BETWEEN :sk0 AND :sk1", &[a, b]),
        }
        let start = q.after.as_ref().map(|c| {
            let mut m = key_map(&c.key);
            if let (Some(index), Some(ik)) = (q.index, &c.index_key) {
                let (p, s) = index_attrs(index);
                m.insert(p.into(), AttributeValue::S(ik.pk.clone()));
                m.insert(s.into(), AttributeValue::S(ik.sk.clone()));
            }
            m
        });
        let mut req = self
            .client
            .get()
            .query()
            .table_name(&self.table)
            .key_condition_expression(expr)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(!q.descending)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        match q.index {
            None => req = req.consistent_read(true),
            Some(i) => req = req.index_name(i.name()),
        }
        if let Some(limit) = q.limit {
            req = req.limit(i32::try_from(limit).unwrap_or(i32::MAX));
        }
        let out = req.send().await.map_err(map_err)?;
        self.consumed.add(out.consumed_capacity(), false);
        let items = match q.index {
            // The index projects keys only: read the items themselves.
            Some(index) if out.items().iter().any(|m| !has_body(m)) => self.read_indexed(index, q, out.items()).await?,
            _ => out.items().iter().map(from_attrs).collect::<Result<Vec<_>, _>>()?,
        };
        let next = match out.last_evaluated_key() {
            None => None,
            Some(lek) => Some(Cursor {
                key: Key::new(string(lek, PK)?, string(lek, SK)?),
                index_key: match q.index {
                    None => None,
                    Some(i) => {
                        let (p, s) = index_attrs(i);
                        Some(IndexKey::new(string(lek, p)?, string(lek, s)?))
                    }
                },
            }),
        };
        Ok(Page { items, next })
    }

    async fn write(&self, mut ops: Vec<WriteOp>) -> Result<(), StoreError> {
        validate_batch(&ops)?;
        if ops.len() == 1 {
            match ops.pop() {
                Some(WriteOp::Put { item, condition }) => {
                    let (expr, values) = condition_expr(condition);
                    let out = self
                        .client
                        .get()
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(to_attrs(&item)?))
                        .set_condition_expression(expr)
                        .set_expression_attribute_values(values)
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send()
                        .await
                        .map_err(map_err)?;
                    self.consumed.add(out.consumed_capacity(), true);
                    return Ok(());
                }
                Some(WriteOp::Delete { key, condition }) => {
                    let (expr, values) = condition_expr(condition);
                    let out = self
                        .client
                        .get()
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(key_map(&key)))
                        .set_condition_expression(expr)
                        .set_expression_attribute_values(values)
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send()
                        .await
                        .map_err(map_err)?;
                    self.consumed.add(out.consumed_capacity(), true);
                    return Ok(());
                }
                Some(check @ WriteOp::Check { .. }) => ops.push(check),
                None => {}
            }
        }
        let items = ops.into_iter().map(|op| self.transact_item(op)).collect::<Result<Vec<_>, _>>()?;
        let result = self
            .client
            .get()
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                for c in out.consumed_capacity() {
                    self.consumed.add(Some(c), true);
                }
                Ok(())
            }
            Err(SdkError::ServiceError(se)) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
                match se.err() {
                    TransactWriteItemsError::TransactionCanceledException(tce) => {
                        let reasons = tce.cancellation_reasons();
                        if let Some(op) = reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed")) {
                            return Err(StoreError::ConditionFailed { op });
                        }
                        let codes: Vec<&str> =
                            reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
                        Err(StoreError::Contention(format!("transaction canceled: {codes:?}")))
                    }
                    other => {
                        let code = other.code().unwrap_or("Unknown");
                        let msg = other.message().unwrap_or("");
                        Err(match code {
                            "TransactionConflictException"
                            | "ThrottlingException"
                            | "ProvisionedThroughputExceededException"
                            | "RequestLimitExceeded"
                            | "TransactionInProgressException" => StoreError::Contention(format!("{code}: {msg}")),
                            "ValidationException" => StoreError::Invalid(msg.to_owned()),
                            _ => StoreError::Unavailable(format!("{code}: {msg}")),
                        })
                    }
                }
            }
            Err(e) => Err(map_err(e)),
        }
    }

    fn backend(&self) -> &'static str {
        "dynamodb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_attribute_values_without_losing_integers() {
        let v = serde_json::json!({"amount": 99999999, "big": 9007199254740993u64, "s": "x", "n": null, "l": [1, true], "m": {"k": "v"}});
        assert_eq!(attr_to_json(&json_to_attr(&v)).unwrap(), v);
    }
}
