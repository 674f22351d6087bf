//! The kafka sink against rdkafka's MockCluster: topic, key and order as a consumer reads
//! them back, and a broker that is down.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use serde_json::json;

use super::*;

fn health_event(status: &str) -> Value {
    json!({
        "version": "1.0",
        "timestamp": "2023-02-14T12:40:00.000Z",
        "id": "958e11dd-a12c-425e-8738-7ba3a83958c6",
        "platform": "ESC",
        "tenant_name": "orion-123",
        "business_group_name": "marketing",
        "cloud_service_name": "Managed EventStoreDB",
        "service_instance": {
            "id": "df22bc90-ebdd-4c8e-a051-b088f89f8897",
            "name": "orion1230001",
            "instance_class_name": "Managed EventStoreDB",
        },
        "health_status": status,
        "health_description": "no open issues",
    })
}

fn config(brokers: String) -> KafkaConfig {
    KafkaConfig {
        brokers,
        topic_prefix: default_topic_prefix(),
        interval: default_interval(),
        platform: default_platform(),
        sasl_username: None,
        sasl_password: None,
        sasl_password_file: None,
        options: BTreeMap::new(),
    }
}

/// Reads `count` messages of `topic` from the start.
fn consume(brokers: &str, topic: &str, count: usize) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hostwatch-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received.len() < count && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            let payload = message.payload_view::<str>().unwrap().unwrap().to_owned();
            // Dropped before the consumer, or dropping the consumer hangs.
            drop(message);
            received.push((key, payload));
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_events_go_to_the_tenant_topic_keyed_by_instance() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("health-orion-123", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = config(brokers.clone())
        .build(Duration::from_secs(10))
        .unwrap();
    sink.deliver(&health_event("OK")).await.unwrap();
    sink.deliver(&health_event("ERROR")).await.unwrap();

    let received = tokio::task::spawn_blocking(move || consume(&brokers, "health-orion-123", 2))
        .await
        .unwrap();
    assert_eq!(received.len(), 2);
    for (key, _) in &received {
        assert_eq!(key, "df22bc90-ebdd-4c8e-a051-b088f89f8897");
    }
    let statuses: Vec<Value> = received
        .iter()
        .map(|(_, payload)| {
            serde_json::from_str::<Value>(payload).unwrap()["health_status"].clone()
        })
        .collect();
    assert_eq!(statuses, ["OK", "ERROR"], "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_a_transient_failure() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("health-orion-123", 1, 1).unwrap();
    cluster.broker_down(1).unwrap();
    let mut sink = config(cluster.bootstrap_servers())
        .build(Duration::from_millis(1500))
        .unwrap();
    match sink.deliver(&health_event("OK")).await {
        Err(DeliveryError::Transient(reason)) => assert!(reason.starts_with("kafka:"), "{reason}"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

#[test]
fn topic_prefix_is_configurable() {
    let mut config = config("127.0.0.1:1".into());
    config.topic_prefix = "hes.".into();
    let sink = config.build(Duration::from_secs(1)).unwrap();
    assert_eq!(sink.topic(&health_event("OK")), "hes.orion-123");
    assert_eq!(
        key(&health_event("OK")),
        "df22bc90-ebdd-4c8e-a051-b088f89f8897"
    );
}
