//! The store contract, run against every backend: the embedded database, DynamoDB (on
//! the emulator the test command starts) and the in-memory store.

mod memory {
    recoup_shared::store_contract_suite!(async {
        std::sync::Arc::new(recoup_shared::store::memory::MemoryStore::new())
            as std::sync::Arc<dyn recoup_shared::store::ItemStore>
    });
}

mod embedded {
    recoup_shared::store_contract_suite!(async { recoup_shared::testkit::embedded_store() });

    #[tokio::test]
    async fn data_survives_reopening_the_database_file() {
        use recoup_shared::store::embedded::EmbeddedStore;
        use recoup_shared::store::{Condition, IndexKeys, Item, ItemStore, Key, WriteOp};
        let path = std::env::temp_dir().join(format!("recoup-reopen-{}.redb", uuid::Uuid::new_v4().simple()));
        let item = Item {
            key: Key::new("P", "S"),
            entity: "thing".into(),
            version: 1,
            indexes: IndexKeys::default(),
            expires_at: None,
            body: serde_json::json!({"kept": true}).into(),
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.write(vec![WriteOp::Put { item: item.clone(), condition: Condition::NotExists }]).await.unwrap();
        }
        let reopened = EmbeddedStore::open(&path).unwrap();
        assert_eq!(reopened.get(&item.key).await.unwrap(), Some(item));
    }

    fn numbered(i: usize) -> recoup_shared::store::Item {
        recoup_shared::store::Item {
            key: recoup_shared::store::Key::new(format!("P#{i}"), "S"),
            entity: "thing".into(),
            version: 1,
            indexes: recoup_shared::store::IndexKeys::default(),
            expires_at: None,
            body: serde_json::json!({"n": i}).into(),
        }
    }

    /// Concurrent transactions share commits, yet each stands alone: of many writers racing
    /// for each item exactly one wins, the losers write nothing, and transactions that
    /// conflict with nobody all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_transactions_succeed_or_fail_alone() {
        use recoup_shared::store::{Condition, WriteOp};
        let store = recoup_shared::testkit::embedded_store();
        let mut tasks = Vec::new();
        for writer in 0..8 {
            for i in 0..50 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut mine = numbered(1000 + writer * 100 + i);
                    mine.body = serde_json::json!({"writer": writer}).into();
                    let mut contested = numbered(i);
                    contested.body = serde_json::json!({"writer": writer}).into();
                    // The uncontested item rides with nothing; the contested one pairs
                    // with a second item only the winner may write.
                    let solo = store.write(vec![WriteOp::Put { item: mine, condition: Condition::NotExists }]).await;
                    let mut prize = numbered(500 + i);
                    prize.body = serde_json::json!({"writer": writer}).into();
                    let race = store
                        .write(vec![
                            WriteOp::Put { item: contested, condition: Condition::NotExists },
                            WriteOp::Put { item: prize, condition: Condition::Always },
                        ])
                        .await;
                    (solo.is_ok(), race.is_ok(), writer, i)
                }));
            }
        }
        let mut winners = std::collections::HashMap::new();
        for t in tasks {
            let (solo, race, writer, i) = t.await.unwrap();
            assert!(solo, "an uncontested transaction was refused");
            if race {
                assert!(winners.insert(i, writer).is_none(), "two winners for item {i}");
            }
        }
        assert_eq!(winners.len(), 50);
        for (i, writer) in winners {
            let contested = store.get(&numbered(i).key).await.unwrap().unwrap();
            let prize = store.get(&numbered(500 + i).key).await.unwrap().unwrap();
            assert_eq!(contested.body, serde_json::json!({"writer": writer}).into());
            // A loser's second write never landed, so the prize is the winner's.
            assert_eq!(prize.body, serde_json::json!({"writer": writer}).into());
        }
    }

    const CHILD_DB: &str = "RECOUP_TEST_CHILD_WRITER_DB";

    /// The writer process of the crash test below: writes items from 8 concurrent tasks
    /// and prints each key once the store acknowledged it. Does nothing in a normal run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn child_writer() {
        use recoup_shared::store::embedded::EmbeddedStore;
        use recoup_shared::store::{Condition, ItemStore, WriteOp};
        use std::io::Write;
        let Ok(path) = std::env::var(CHILD_DB) else { return };
        let store = EmbeddedStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let item = numbered(writer * 1_000_000 + i);
                    store.write(vec![WriteOp::Put { item, condition: Condition::NotExists }]).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {}", writer * 1_000_000 + i).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// SIGKILL while many transactions are being group-committed: every write the store
    /// acknowledged is there after reopening, and the file opens cleanly each time.
    #[tokio::test]
    async fn acknowledged_writes_survive_sigkill() {
        use recoup_shared::store::ItemStore;
        use recoup_shared::store::embedded::EmbeddedStore;
        use std::io::BufRead;
        let path = std::env::temp_dir().join(format!("recoup-sigkill-{}.redb", uuid::Uuid::new_v4().simple()));
        let mut acknowledged = Vec::new();
        for round in 0..5u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["embedded::child_writer", "--exact", "--nocapture", "--test-threads", "1"])
                .env(CHILD_DB, &path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut acks = Vec::new();
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("ACK ") {
                        acks.push(n.parse::<usize>().unwrap());
                    }
                }
                acks
            });
            std::thread::sleep(std::time::Duration::from_millis(300 + 97 * round));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let acks = reader.join().unwrap();
            // The child restarts its numbering each round; keep only this round's keys.
            let store = EmbeddedStore::open(&path).unwrap();
            for n in &acks {
                assert!(store.get(&numbered(*n).key).await.unwrap().is_some(), "acknowledged write {n} lost");
            }
            acknowledged.extend(acks);
            drop(store);
            // Start each round from a fresh file so the child's keys do not collide.
            std::fs::remove_file(&path).unwrap();
        }
        assert!(acknowledged.len() > 100, "the writer acknowledged only {} writes", acknowledged.len());
    }
}

mod dynamodb {
    use std::sync::Arc;

    use recoup_shared::store::ItemStore;

    async fn store() -> Arc<dyn ItemStore> {
        Arc::new(recoup_shared::testkit::dynamo_store("recoup-contract").await)
    }

    recoup_shared::store_contract_suite!(store());

    /// A body that takes its item past a write unit is stored deflated when that saves
    /// units; one within a unit stays a map, readable in the console. An item an earlier
    /// release wrote as a map, however large, still reads.
    #[tokio::test]
    async fn a_large_body_is_stored_deflated_and_an_old_large_map_still_reads() {
        use aws_sdk_dynamodb::types::AttributeValue;
        use recoup_shared::store::{Condition, IndexKeys, Item, Key, WriteOp};

        let table = "recoup-contract";
        let store = recoup_shared::testkit::dynamo_store(table).await;
        let config = recoup_shared::aws::sdk_config_for_endpoint(&recoup_shared::testkit::moto_endpoint()).await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let pk = format!("DEFLATED#{}", uuid::Uuid::new_v4().simple());
        let thing = |sk: &str, body: serde_json::Value| Item {
            key: Key::new(&pk, sk),
            entity: "thing".into(),
            version: 1,
            indexes: IndexKeys::default(),
            expires_at: None,
            body: body.into(),
        };
        let big_body = serde_json::json!({
            "attempts": (0..40).map(|n| serde_json::json!({"n": n, "card": "visa 4242", "status": "failed"})).collect::<Vec<_>>()
        });
        let big = thing("BIG", big_body.clone());
        let small = thing("SMALL", serde_json::json!({"n": 1}));
        for it in [&big, &small] {
            store.write(vec![WriteOp::Put { item: it.clone(), condition: Condition::NotExists }]).await.unwrap();
        }
        let raw = |sk: &'static str| {
            client
                .get_item()
                .table_name(table)
                .key("PK", AttributeValue::S(pk.clone()))
                .key("SK", AttributeValue::S(sk.into()))
                .consistent_read(true)
                .send()
        };
        let big_raw = raw("BIG").await.unwrap().item.expect("written");
        assert!(big_raw.contains_key("deflated") && !big_raw.contains_key("data"), "{big_raw:?}");
        let small_raw = raw("SMALL").await.unwrap().item.expect("written");
        assert!(small_raw.contains_key("data") && !small_raw.contains_key("deflated"), "{small_raw:?}");

        // As an earlier release wrote it: the whole body a map.
        let mut old = big_raw.clone();
        old.remove("deflated");
        old.insert("SK".into(), AttributeValue::S("OLD".into()));
        old.insert("data".into(), recoup_shared::store::dynamodb::json_to_attr(&big_body));
        client.put_item().table_name(table).set_item(Some(old)).send().await.unwrap();
        assert_eq!(store.get(&Key::new(&pk, "OLD")).await.unwrap(), Some(thing("OLD", big_body)));
    }
}

/// A table made before its indexes projected keys only (every attribute projected): the
/// store reads the items its index queries find as they come.
mod dynamodb_projecting_all {
    use std::sync::Arc;

    use aws_sdk_dynamodb::types::ProjectionType;
    use recoup_shared::store::ItemStore;

    async fn store() -> Arc<dyn ItemStore> {
        let store = recoup_shared::testkit::dynamo_store_unmade("recoup-contract-all").await;
        store.ensure_table_projecting(ProjectionType::All).await.expect("create the table");
        Arc::new(store)
    }

    recoup_shared::store_contract_suite!(store());
}
