//! The store contract, run against both backends: the embedded database and DynamoDB (on
//! the emulator the test command starts).

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
            body: serde_json::json!({"kept": true}),
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.write(vec![WriteOp::Put { item: item.clone(), condition: Condition::NotExists }]).await.unwrap();
        }
        let reopened = EmbeddedStore::open(&path).unwrap();
        assert_eq!(reopened.get(&item.key).await.unwrap(), Some(item));
    }
}

mod dynamodb {
    use std::sync::Arc;

    use recoup_shared::store::ItemStore;

    async fn store() -> Arc<dyn ItemStore> {
        Arc::new(recoup_shared::testkit::dynamo_store("recoup-contract").await)
    }

    recoup_shared::store_contract_suite!(store());
}
