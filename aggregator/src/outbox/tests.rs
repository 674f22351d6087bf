use rusqlite::Connection;
use serde_json::json;
use tokio_util::task::TaskTracker;

use super::*;
use crate::dispatch::Dispatch;
use crate::store::Store;

fn open(dir: &Path) {
    let dispatch = Dispatch::start(&[], &TaskTracker::new());
    let (store, writer, _) = Store::open(dir, dispatch).unwrap();
    drop(store);
    writer.join();
}

fn envelope(tenant: &str) -> Value {
    json!({ "tenant": tenant })
}

/// Migration 5: a tenant's integration made through the API before names were per
/// tenant is re-keyed `tenant/name`, with the deliveries it owes; a global one keeps
/// its name.
#[tokio::test]
async fn integrations_of_a_tenant_are_rekeyed_with_their_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path());
    let db = dir.path().join("hostwatch.db");
    // As an aggregator before migration 5 left them (nothing listens on port 9).
    let sink = json!({ "type": "webhook", "url": "http://127.0.0.1:9/" });
    let connection = Connection::open(&db).unwrap();
    for (name, config) in [
        (
            "pager",
            json!({ "name": "pager", "tenant": "acme", "sink": sink }),
        ),
        ("everyone", json!({ "name": "everyone", "sink": sink })),
    ] {
        connection
            .execute(
                "INSERT INTO integrations (name, config, created_ms) VALUES (?1, ?2, 0)",
                params![name, config.to_string()],
            )
            .unwrap();
    }
    for (integration, event_id, tenant) in [
        ("pager", "e1", "acme"),
        ("everyone", "e1", "acme"),
        ("everyone", "e2", "globex"),
    ] {
        connection
            .execute(
                "INSERT INTO deliveries (integration, event_id, envelope, created_ms)
                 VALUES (?1, ?2, ?3, 0)",
                params![integration, event_id, envelope(tenant).to_string()],
            )
            .unwrap();
    }
    connection.pragma_update(None, "user_version", 4).unwrap();
    drop(connection);

    open(dir.path());
    let outbox = Outbox::open(&db).unwrap();
    let keys: Vec<String> = outbox
        .integrations()
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(keys, ["acme/pager", "everyone"]);
    let owed: Vec<(String, String)> = outbox
        .list(&DeliveryQuery::default())
        .unwrap()
        .into_iter()
        .map(|delivery| (delivery.integration, delivery.event_id))
        .collect();
    assert_eq!(
        owed,
        [
            ("acme/pager".to_owned(), "e1".to_owned()),
            ("everyone".to_owned(), "e1".to_owned()),
            ("everyone".to_owned(), "e2".to_owned()),
        ]
    );
}

#[tokio::test]
async fn listing_filters_by_tenant_state_and_integration_before_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path());
    let db = dir.path().join("hostwatch.db");
    let connection = Connection::open(&db).unwrap();
    for index in 0..10 {
        connection
            .execute(
                "INSERT INTO deliveries (integration, event_id, envelope, created_ms)
                 VALUES ('everyone', ?1, ?2, 0)",
                params![format!("g{index}"), envelope("globex").to_string()],
            )
            .unwrap();
    }
    for (integration, event_id) in [("everyone", "a1"), ("acme/pager", "a1")] {
        connection
            .execute(
                "INSERT INTO deliveries (integration, event_id, envelope, created_ms)
                 VALUES (?1, ?2, ?3, 0)",
                params![integration, event_id, envelope("acme").to_string()],
            )
            .unwrap();
    }
    drop(connection);
    let outbox = Outbox::open(&db).unwrap();
    let acme = DeliveryQuery {
        tenant: Some("acme".to_owned()),
        limit: 2,
        ..DeliveryQuery::default()
    };
    assert_eq!(outbox.list(&acme).unwrap().len(), 2);
    let pager = DeliveryQuery {
        integrations: Some(vec!["acme/pager".to_owned()]),
        ..acme.clone()
    };
    let listed = outbox.list(&pager).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].integration, "acme/pager");
    outbox.dead(listed[0].seq, 1, "refused").unwrap();
    let dead = DeliveryQuery {
        states: vec![DeliveryState::Dead],
        limit: 1,
        ..DeliveryQuery::default()
    };
    assert_eq!(outbox.list(&dead).unwrap()[0].seq, listed[0].seq);
    let after = DeliveryQuery {
        after_seq: listed[0].seq,
        ..DeliveryQuery::default()
    };
    assert!(outbox.list(&after).unwrap().is_empty());
}
