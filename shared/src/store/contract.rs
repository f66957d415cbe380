//! The store contract: what every [`ItemStore`] must do, as checks any backend's tests run
//! through [`store_contract_suite!`](crate::store_contract_suite). Every check uses its
//! own random partitions, so one table can serve the whole suite.

use std::sync::Arc;

use serde_json::json;

use super::{
    Condition, Cursor, Index, IndexKey, IndexKeys, Item, ItemStore, Key, Query, SortKeyRange, StoreError, WriteOp,
};

fn unique(prefix: &str) -> String {
    format!("{prefix}#{}", uuid::Uuid::new_v4().simple())
}

fn item(pk: &str, sk: &str, version: u64) -> Item {
    Item {
        key: Key::new(pk, sk),
        entity: "thing".into(),
        version,
        indexes: IndexKeys::default(),
        expires_at: None,
        body: json!({"n": version}).into(),
    }
}

fn put(item: Item, condition: Condition) -> WriteOp {
    WriteOp::Put { item, condition }
}

async fn write_one(store: &dyn ItemStore, op: WriteOp) -> Result<(), StoreError> {
    store.write(vec![op]).await
}

async fn collect(store: &dyn ItemStore, mut q: Query) -> Vec<Item> {
    let mut out = Vec::new();
    loop {
        let page = store.query(&q).await.expect("query");
        out.extend(page.items);
        match page.next {
            Some(c) => q.after = Some(c),
            None => return out,
        }
    }
}

pub async fn an_item_reads_back_exactly_as_written(store: Arc<dyn ItemStore>) {
    let pk = unique("RT");
    let mut it = item(&pk, "A", 1);
    it.body = json!({
        "amount": 99_999_999, "big": 9_007_199_254_740_993_u64, "negative": -42, "flag": true,
        "nothing": null, "text": "héllo ✓", "list": [1, "two", {"three": 3}], "nested": {"deep": {"x": []}}
    })
    .into();
    it.indexes = IndexKeys::default()
        .with(Index::Gsi1, Some(IndexKey::new(unique("G1"), "s1")))
        .with(Index::Gsi3, Some(IndexKey::new(unique("G3"), "s3")));
    it.expires_at = Some(1_900_000_000);
    write_one(&*store, put(it.clone(), Condition::NotExists)).await.expect("put");
    assert_eq!(store.get(&it.key).await.expect("get"), Some(it));
    assert_eq!(store.get(&Key::new(&pk, "missing")).await.expect("get"), None);
}

pub async fn a_batched_read_answers_in_the_order_asked(store: Arc<dyn ItemStore>) {
    let pk = unique("BG");
    let (a, b) = (item(&pk, "A", 1), item(&pk, "B", 1));
    write_one(&*store, put(a.clone(), Condition::NotExists)).await.expect("put a");
    write_one(&*store, put(b.clone(), Condition::NotExists)).await.expect("put b");
    let missing = Key::new(&pk, "missing");
    let got = store.get_many(&[b.key.clone(), missing.clone(), a.key.clone()]).await.expect("batched read");
    assert_eq!(got, vec![Some(b.clone()), None, Some(a.clone())]);
    // Eventually consistent: the same answer once the writes have settled (the emulators
    // and the local stores are always consistent).
    let got = store.get_many_eventually(&[missing.clone(), a.key.clone()]).await.expect("eventual batched read");
    assert_eq!(got, vec![None, Some(a.clone())]);
    assert_eq!(store.get_many(&[]).await.expect("empty read"), Vec::<Option<Item>>::new());
    let twice = store.get_many(&[a.key.clone(), a.key.clone()]).await;
    assert!(matches!(twice, Err(StoreError::Invalid(_))), "{twice:?}");
}

pub async fn a_create_is_refused_when_the_item_exists(store: Arc<dyn ItemStore>) {
    let pk = unique("NX");
    write_one(&*store, put(item(&pk, "A", 1), Condition::NotExists)).await.expect("first create");
    let err = write_one(&*store, put(item(&pk, "A", 1), Condition::NotExists)).await.unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 });
}

pub async fn a_stale_version_is_refused_and_the_item_is_unchanged(store: Arc<dyn ItemStore>) {
    let pk = unique("VER");
    write_one(&*store, put(item(&pk, "A", 1), Condition::NotExists)).await.expect("create");
    write_one(&*store, put(item(&pk, "A", 2), Condition::Version(1))).await.expect("update from v1");
    let err = write_one(&*store, put(item(&pk, "A", 2), Condition::Version(1))).await.unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 });
    assert_eq!(store.get(&Key::new(&pk, "A")).await.expect("get").map(|i| i.version), Some(2));
    let err = write_one(&*store, put(item(&pk, "B", 2), Condition::Version(1))).await.unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 }, "a version condition on a missing item fails");
}

pub async fn a_transaction_is_all_or_nothing(store: Arc<dyn ItemStore>) {
    let pk = unique("TX");
    write_one(&*store, put(item(&pk, "EXISTS", 1), Condition::NotExists)).await.expect("seed");
    let err = store
        .write(vec![
            put(item(&pk, "NEW", 1), Condition::NotExists),
            put(item(&pk, "EXISTS", 2), Condition::Version(7)),
            WriteOp::Delete { key: Key::new(&pk, "EXISTS"), condition: Condition::Always },
        ])
        .await;
    // The same key twice is refused outright, before any condition.
    assert!(matches!(err, Err(StoreError::Invalid(_))), "{err:?}");
    let err = store
        .write(vec![put(item(&pk, "NEW", 1), Condition::NotExists), put(item(&pk, "EXISTS", 2), Condition::Version(7))])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 1 });
    assert_eq!(store.get(&Key::new(&pk, "NEW")).await.expect("get"), None, "nothing was written");
    store
        .write(vec![put(item(&pk, "NEW", 1), Condition::NotExists), put(item(&pk, "EXISTS", 2), Condition::Version(1))])
        .await
        .expect("both conditions hold");
    assert!(store.get(&Key::new(&pk, "NEW")).await.expect("get").is_some());
    assert_eq!(store.get(&Key::new(&pk, "EXISTS")).await.expect("get").map(|i| i.version), Some(2));
}

pub async fn a_check_guards_a_transaction_without_writing(store: Arc<dyn ItemStore>) {
    let pk = unique("CHK");
    write_one(&*store, put(item(&pk, "GUARD", 3), Condition::NotExists)).await.expect("seed");
    let err = store
        .write(vec![
            WriteOp::Check { key: Key::new(&pk, "GUARD"), condition: Condition::Version(2) },
            put(item(&pk, "X", 1), Condition::NotExists),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 });
    store
        .write(vec![
            WriteOp::Check { key: Key::new(&pk, "GUARD"), condition: Condition::Version(3) },
            put(item(&pk, "X", 1), Condition::NotExists),
        ])
        .await
        .expect("guard holds");
    assert_eq!(store.get(&Key::new(&pk, "GUARD")).await.expect("get").map(|i| i.version), Some(3));
    // A check alone, and a check that an item is absent.
    write_one(&*store, WriteOp::Check { key: Key::new(&pk, "NOPE"), condition: Condition::NotExists })
        .await
        .expect("absent");
    let err = write_one(&*store, WriteOp::Check { key: Key::new(&pk, "NOPE"), condition: Condition::Exists })
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 });
}

pub async fn a_delete_honours_its_condition(store: Arc<dyn ItemStore>) {
    let pk = unique("DEL");
    let mut it = item(&pk, "A", 1);
    it.indexes = IndexKeys::default().with(Index::Gsi2, Some(IndexKey::new(unique("G2"), "a")));
    write_one(&*store, put(it.clone(), Condition::NotExists)).await.expect("create");
    let err = write_one(&*store, WriteOp::Delete { key: it.key.clone(), condition: Condition::Version(9) })
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::ConditionFailed { op: 0 });
    write_one(&*store, WriteOp::Delete { key: it.key.clone(), condition: Condition::Version(1) })
        .await
        .expect("delete");
    assert_eq!(store.get(&it.key).await.expect("get"), None);
    let gsi = it.indexes.get(Index::Gsi2).cloned().expect("index key");
    let left = collect(&*store, Query::index(Index::Gsi2, gsi.pk, SortKeyRange::All)).await;
    assert!(left.is_empty(), "a deleted item leaves its indexes");
}

pub async fn a_table_query_selects_sort_key_ranges_in_order(store: Arc<dyn ItemStore>) {
    let pk = unique("Q");
    let other = unique("Q");
    let sks = ["A#1", "A#2", "A#3", "B#1", "C#1"];
    let mut ops: Vec<WriteOp> = sks.iter().map(|sk| put(item(&pk, sk, 1), Condition::NotExists)).collect();
    ops.push(put(item(&other, "A#1", 1), Condition::NotExists));
    store.write(ops).await.expect("seed");
    let sk_of = |items: Vec<Item>| items.into_iter().map(|i| i.key.sk).collect::<Vec<_>>();

    let all = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::All)).await);
    assert_eq!(all, sks);
    let desc = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::All).descending()).await);
    assert_eq!(desc, ["C#1", "B#1", "A#3", "A#2", "A#1"]);
    let a = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::BeginsWith("A#".into()))).await);
    assert_eq!(a, ["A#1", "A#2", "A#3"]);
    let upto = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::AtMost("A#2".into()))).await);
    assert_eq!(upto, ["A#1", "A#2"]);
    let from = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::AtLeast("B".into()))).await);
    assert_eq!(from, ["B#1", "C#1"]);
    let between = sk_of(collect(&*store, Query::table(&pk, SortKeyRange::Between("A#2".into(), "B#1".into()))).await);
    assert_eq!(between, ["A#2", "A#3", "B#1"]);
}

pub async fn an_index_holds_only_items_carrying_its_key_and_follows_updates(store: Arc<dyn ItemStore>) {
    let g = unique("DUE");
    let pk = unique("IDX");
    let mut due = item(&pk, "1", 1);
    due.indexes = IndexKeys::default().with(Index::Gsi2, Some(IndexKey::new(&g, "2030-01-02")));
    let mut later = item(&pk, "2", 1);
    later.indexes = IndexKeys::default().with(Index::Gsi2, Some(IndexKey::new(&g, "2030-01-05")));
    let not_indexed = item(&pk, "3", 1);
    store
        .write(vec![
            put(due.clone(), Condition::NotExists),
            put(later.clone(), Condition::NotExists),
            put(not_indexed, Condition::NotExists),
        ])
        .await
        .expect("seed");
    let keys_of = |items: Vec<Item>| items.into_iter().map(|i| i.key.sk).collect::<Vec<_>>();
    let q = Query::index(Index::Gsi2, &g, SortKeyRange::AtMost("2030-01-03".into()));
    assert_eq!(keys_of(collect(&*store, q.clone()).await), ["1"]);
    assert_eq!(keys_of(collect(&*store, Query::index(Index::Gsi2, &g, SortKeyRange::All)).await), ["1", "2"]);

    // Dropping the index key takes the item out; changing it moves it.
    let mut done = due.clone();
    done.version = 2;
    done.indexes = IndexKeys::default();
    write_one(&*store, put(done, Condition::Version(1))).await.expect("update");
    let mut moved = later.clone();
    moved.version = 2;
    moved.indexes = IndexKeys::default().with(Index::Gsi2, Some(IndexKey::new(&g, "2030-01-01")));
    write_one(&*store, put(moved, Condition::Version(1))).await.expect("update");
    assert_eq!(keys_of(collect(&*store, q).await), ["2"]);
    let other_index = collect(&*store, Query::index(Index::Gsi1, &g, SortKeyRange::All)).await;
    assert!(other_index.is_empty(), "indexes are separate");
}

/// An index query answers whole items, as written, in index order, however many a page
/// holds (DynamoDB's indexes project keys only, and its batched reads name at most 100).
pub async fn an_index_page_holds_whole_items_however_many(store: Arc<dyn ItemStore>) {
    let g = unique("MANY");
    let written: Vec<Item> = (0..250u64)
        .map(|i| {
            let mut it = item(&unique("MANYITEM"), "A", 1);
            it.entity = "numbered".into();
            it.body = json!({"n": i, "label": format!("item {i}")}).into();
            it.indexes = IndexKeys::default().with(Index::Gsi3, Some(IndexKey::new(&g, format!("{i:04}"))));
            it
        })
        .collect();
    for chunk in written.chunks(50) {
        store.write(chunk.iter().map(|i| put(i.clone(), Condition::NotExists)).collect()).await.expect("seed");
    }
    let page = store.query(&Query::index(Index::Gsi3, &g, SortKeyRange::All).limit(1000)).await.expect("query");
    let mut read = page.items;
    if let Some(after) = page.next {
        read.extend(collect(&*store, Query::index(Index::Gsi3, &g, SortKeyRange::All).after(Some(after))).await);
    }
    assert_eq!(read.len(), written.len(), "every indexed item");
    for (got, want) in read.iter().zip(&written) {
        assert_eq!(
            (&got.key, &got.entity, got.version, &got.body),
            (&want.key, &want.entity, want.version, &want.body)
        );
        assert_eq!(got.indexes.get(Index::Gsi3), want.indexes.get(Index::Gsi3));
    }
}

/// A body of several kilobytes (DynamoDB stores it deflated) reads back whole through
/// every read, and an item that grows past a kilobyte and shrinks again reads as written at
/// each step.
pub async fn a_large_body_reads_back_whole_by_every_read(store: Arc<dyn ItemStore>) {
    let g = unique("LARGE");
    let attempt = |n: u64| {
        json!({"n": n, "card": {"brand": "visa", "last4": "4242", "expiry": {"month": 1, "year": 2032}},
               "decline": null, "reattempt": n > 1, "amount": 9_007_199_254_740_993u64, "notes": [], "meta": {}})
    };
    let body = |attempts: u64| json!({"description": "Pro plan \u{00e9}", "attempts": (1..=attempts).map(attempt).collect::<Vec<_>>()});
    let mut it = item(&unique("LARGEITEM"), "A", 1);
    it.indexes = IndexKeys::default().with(Index::Gsi1, Some(IndexKey::new(&g, "1")));
    for (version, attempts) in [(1, 30), (2, 0), (3, 12)] {
        let condition = if version == 1 { Condition::NotExists } else { Condition::Version(version - 1) };
        it.version = version;
        it.body = body(attempts).into();
        write_one(&*store, put(it.clone(), condition)).await.expect("write");
        assert_eq!(store.get(&it.key).await.unwrap().as_ref(), Some(&it), "get, {attempts} attempts");
        let missing = Key::new(unique("NONE"), "A");
        for read in [
            store.get_many(&[missing.clone(), it.key.clone()]).await.unwrap(),
            store.get_many_eventually(&[missing.clone(), it.key.clone()]).await.unwrap(),
        ] {
            assert_eq!(read, vec![None, Some(it.clone())], "batched read, {attempts} attempts");
        }
        let page = store.query(&Query::index(Index::Gsi1, &g, SortKeyRange::All)).await.unwrap();
        assert_eq!(page.items, vec![it.clone()], "index query, {attempts} attempts");
        let page = store.query(&Query::table(&it.key.pk, SortKeyRange::All)).await.unwrap();
        assert_eq!(page.items, vec![it.clone()], "table query, {attempts} attempts");
    }
}

pub async fn pages_cover_every_item_exactly_once_in_both_directions(store: Arc<dyn ItemStore>) {
    let pk = unique("PAGE");
    let g = unique("PAGEIDX");
    let ops: Vec<WriteOp> = (0..23)
        .map(|i| {
            let mut it = item(&pk, &format!("{i:03}"), 1);
            it.indexes = IndexKeys::default().with(Index::Gsi1, Some(IndexKey::new(&g, format!("{:03}", 100 - i))));
            put(it, Condition::NotExists)
        })
        .collect();
    store.write(ops).await.expect("seed");
    for descending in [false, true] {
        for index in [None, Some(Index::Gsi1)] {
            let mut q = match index {
                None => Query::table(&pk, SortKeyRange::All),
                Some(i) => Query::index(i, &g, SortKeyRange::All),
            }
            .limit(5);
            q.descending = descending;
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.query(&q).await.expect("page");
                assert!(page.items.len() <= 5);
                pages += 1;
                seen.extend(page.items.into_iter().map(|i| i.key.sk));
                match page.next {
                    Some(c) => q.after = Some(c),
                    None => break,
                }
            }
            assert!(pages >= 5, "23 items in pages of 5");
            let mut expected: Vec<String> = (0..23).map(|i| format!("{i:03}")).collect();
            // The index sorts by 100 - i, the reverse of the table order.
            if descending != index.is_some() {
                expected.reverse();
            }
            assert_eq!(seen, expected, "descending={descending} index={index:?}");
        }
    }
}

/// Every kind of sort key range, read in pages of two in both directions, on the table
/// and on an index, returns what the range holds in order: bounds that are prefixes of
/// other keys, several index entries on one sort key, and neighbouring partitions whose
/// keys extend this one's.
pub async fn every_range_reads_the_same_in_pages_in_both_directions(store: Arc<dyn ItemStore>) {
    let pk = unique("RANGE");
    let g = unique("RANGEIDX");
    let sks = ["A", "A#1", "A#2", "A#20", "A#2x", "A#3", "B", "B#1", "C"];
    let mut ops = Vec::new();
    for (i, sk) in sks.iter().enumerate() {
        let mut it = item(&pk, sk, 1);
        // Index sort keys: the table's, with pairs sharing one (A#2 and A#20 on "A#2").
        let isk = if *sk == "A#20" { "A#2" } else { sk };
        it.indexes = IndexKeys::default().with(Index::Gsi1, Some(IndexKey::new(&g, isk)));
        ops.push(put(it, Condition::NotExists));
        // Neighbours: a partition whose key extends this one's, in the table and the index.
        let mut n = item(&format!("{pk}#"), &format!("{i}"), 1);
        n.indexes = IndexKeys::default().with(Index::Gsi1, Some(IndexKey::new(format!("{g}#"), *sk)));
        ops.push(put(n, Condition::NotExists));
    }
    store.write(ops).await.expect("seed");
    let ranges = [
        SortKeyRange::All,
        SortKeyRange::BeginsWith("A#2".into()),
        SortKeyRange::BeginsWith("A".into()),
        SortKeyRange::BeginsWith("Z".into()),
        SortKeyRange::AtMost("A#2".into()),
        SortKeyRange::AtMost("A#".into()),
        SortKeyRange::AtLeast("A#2".into()),
        SortKeyRange::AtLeast("D".into()),
        SortKeyRange::Between("A#2".into(), "B".into()),
        SortKeyRange::Between("A#1".into(), "A#2".into()),
        SortKeyRange::Between("B".into(), "A".into()),
    ];
    for range in ranges {
        for index in [None, Some(Index::Gsi1)] {
            for descending in [false, true] {
                // What the range holds, in the index's order (its sort key, then the item's).
                let mut expected: Vec<(&str, &str)> = sks
                    .iter()
                    .map(|sk| (if *sk == "A#20" && index.is_some() { "A#2" } else { *sk }, *sk))
                    .filter(|(by, _)| range.contains(by))
                    .collect();
                expected.sort();
                if descending {
                    expected.reverse();
                }
                let expected: Vec<&str> = expected.into_iter().map(|(_, sk)| sk).collect();
                let mut q = match index {
                    None => Query::table(&pk, range.clone()),
                    Some(i) => Query::index(i, &g, range.clone()),
                }
                .limit(2);
                q.descending = descending;
                let got: Vec<String> = collect(&*store, q).await.into_iter().map(|i| i.key.sk).collect();
                assert_eq!(got, expected, "{range:?} index={index:?} descending={descending}");
            }
        }
    }
}

pub async fn a_cursor_from_another_listing_is_refused(store: Arc<dyn ItemStore>) {
    let mine = unique("MINE");
    let theirs = unique("THEIRS");
    let q = Query::table(&mine, SortKeyRange::All).after(Some(Cursor { key: Key::new(&theirs, "A"), index_key: None }));
    assert!(matches!(store.query(&q).await, Err(StoreError::InvalidCursor(_))));
}

pub async fn oversized_or_empty_transactions_are_refused(store: Arc<dyn ItemStore>) {
    let pk = unique("BIG");
    let ops: Vec<WriteOp> = (0..101).map(|i| put(item(&pk, &i.to_string(), 1), Condition::NotExists)).collect();
    assert!(matches!(store.write(ops).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.write(Vec::new()).await, Err(StoreError::Invalid(_))));
    let ops: Vec<WriteOp> = (0..100).map(|i| put(item(&pk, &i.to_string(), 1), Condition::NotExists)).collect();
    store.write(ops).await.expect("a hundred items is the limit, not over it");
    assert_eq!(collect(&*store, Query::table(&pk, SortKeyRange::All)).await.len(), 100);
}

/// Runs `n` writers at once, each on its own task, and answers what each returned.
async fn concurrently<T, F, Fut>(n: usize, writer: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(writer(i))).collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

/// Many writers read version 1 and race to write version 2: exactly one wins.
pub async fn concurrent_writers_of_one_version_produce_exactly_one_winner(store: Arc<dyn ItemStore>) {
    let pk = unique("RACE");
    write_one(&*store, put(item(&pk, "A", 1), Condition::NotExists)).await.expect("seed");
    let results = concurrently(8, |i| {
        let (store, pk) = (store.clone(), pk.clone());
        async move {
            let mut it = item(&pk, "A", 2);
            it.body = json!({"writer": i}).into();
            store.write(vec![put(it, Condition::Version(1))]).await
        }
    })
    .await;
    let mut wins = 0;
    for result in results {
        match result {
            Ok(()) => wins += 1,
            Err(StoreError::ConditionFailed { .. } | StoreError::Contention(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// A transaction refused for its condition undoes nothing that other writers committed
/// while it ran: every acknowledged write is there afterwards. (moto_server broke this: a
/// refused transaction put back a copy of the table from when it began; the tests run it
/// through `infra/scripts/moto_server_serialised.py`.)
pub async fn a_refused_transaction_never_undoes_another_writers_commit(store: Arc<dyn ItemStore>) {
    const EACH: usize = 100;
    let pk = unique("KEEP");
    write_one(&*store, put(item(&pk, "TAKEN", 1), Condition::NotExists)).await.expect("seed");
    let mut acknowledged: Vec<String> = concurrently(4, |w| {
        let (store, pk) = (store.clone(), pk.clone());
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..EACH {
                let sk = format!("W{w}-{i:03}");
                if w % 2 == 0 {
                    write_one(&*store, put(item(&pk, &sk, 1), Condition::NotExists)).await.expect("a new key");
                    acknowledged.push(sk);
                } else {
                    // Refused by its second operation: the first must not be written either.
                    let refused = store
                        .write(vec![
                            put(item(&pk, &sk, 1), Condition::NotExists),
                            put(item(&pk, "TAKEN", 1), Condition::NotExists),
                        ])
                        .await;
                    assert!(
                        matches!(refused, Err(StoreError::ConditionFailed { op: 1 } | StoreError::Contention(_))),
                        "{refused:?}"
                    );
                }
            }
            acknowledged
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    let stored: Vec<String> = collect(&*store, Query::table(&pk, SortKeyRange::All))
        .await
        .into_iter()
        .map(|i| i.key.sk)
        .filter(|sk| sk != "TAKEN")
        .collect();
    acknowledged.sort();
    assert_eq!(stored, acknowledged, "every acknowledged write, and nothing refused");
}

/// Expands to one `#[tokio::test]` per contract check, each given a store from `$make`
/// (an async expression yielding `Arc<dyn ItemStore>`).
#[macro_export]
macro_rules! store_contract_suite {
    ($make:expr) => {
        $crate::store_contract_suite!(@tests $make;
            an_item_reads_back_exactly_as_written,
            a_batched_read_answers_in_the_order_asked,
            a_create_is_refused_when_the_item_exists,
            a_stale_version_is_refused_and_the_item_is_unchanged,
            a_transaction_is_all_or_nothing,
            a_check_guards_a_transaction_without_writing,
            a_delete_honours_its_condition,
            a_table_query_selects_sort_key_ranges_in_order,
            an_index_holds_only_items_carrying_its_key_and_follows_updates,
            an_index_page_holds_whole_items_however_many,
            a_large_body_reads_back_whole_by_every_read,
            pages_cover_every_item_exactly_once_in_both_directions,
            every_range_reads_the_same_in_pages_in_both_directions,
            a_cursor_from_another_listing_is_refused,
            oversized_or_empty_transactions_are_refused,
            concurrent_writers_of_one_version_produce_exactly_one_winner,
            a_refused_transaction_never_undoes_another_writers_commit,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $make.await;
                $crate::store::contract::$name(store).await;
            }
        )*
    };
}
