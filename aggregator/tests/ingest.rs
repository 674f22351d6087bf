//! Ingest over real gRPC on loopback: a real aggregator, a tonic client playing the agent.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use std::time::Duration;

use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use proto::v1::operator_client::OperatorClient;
use support::{Running, now_ms};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// A small limit, so an oversized message is cheap to make.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// An aggregator with a small message limit, from the tests' shared support.
async fn start() -> Running {
    Running::start(&format!(
        "[ingest]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n"
    ))
    .await
}

fn hello(node: &str) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
            identity: Some(wire::NodeIdentity {
                tenant: "acme".into(),
                cluster: "db".into(),
                node: node.into(),
                ..Default::default()
            }),
            agent_version: "test".into(),
            probes: vec![wire::ProbeInfo {
                name: "host".into(),
                interval_ms: 1000,
            }],
            seq_epoch: "e1".into(),
            ..Default::default()
        })),
    }
}

fn host(load1: f64, memory_used_percent: f64, disk_total: i64) -> wire::Sample {
    wire::Sample {
        time_unix_ms: now_ms(),
        kind: Some(wire::sample::Kind::Host(wire::HostSample {
            load1,
            load5: 0.1,
            load15: 0.1,
            physical_cores: 2,
            logical_cores: 2,
            physical_cores_estimated: false,
            memory_total_bytes: 1 << 30,
            memory_available_bytes: 1 << 29,
            memory_used_percent,
            disks: vec![wire::DiskUsage {
                mount: "/".into(),
                device: "/dev/vda".into(),
                fs_type: "ext4".into(),
                total_bytes: disk_total,
                available_bytes: 1 << 20,
                used_percent: 10.0,
                inodes_total: 10,
                inodes_free: 5,
            }],
        })),
    }
}

fn batch(seq: u64, samples: Vec<wire::Sample>) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
            seq,
            samples,
            dropped_batches_total: 0,
        })),
    }
}

/// Opens a stream; returns the sender for agent messages and the response stream.
async fn open_stream(
    channel: Channel,
    first: wire::AgentMessage,
) -> Result<
    (
        mpsc::Sender<wire::AgentMessage>,
        tonic::Streaming<wire::AggregatorMessage>,
    ),
    tonic::Status,
> {
    let (sender, outbound) = mpsc::channel(16);
    sender.send(first).await.unwrap();
    let response = IngestClient::new(channel)
        .stream(ReceiverStream::new(outbound))
        .await?;
    Ok((sender, response.into_inner()))
}

async fn next_ack(inbound: &mut tonic::Streaming<wire::AggregatorMessage>) -> wire::Ack {
    let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an ack within 10 s")
        .expect("a healthy stream")
        .expect("the stream is still open");
    match message.kind {
        Some(wire::aggregator_message::Kind::Ack(ack)) => ack,
        None => panic!("empty aggregator message"),
    }
}

#[tokio::test]
async fn a_mixed_batch_applies_the_good_samples_and_names_the_bad_ones() {
    let running = start().await;
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();

    let mut nan = host(0.5, 10.0, 1 << 30);
    if let Some(wire::sample::Kind::Host(host)) = &mut nan.kind {
        host.load1 = f64::NAN;
    }
    let mut future = host(0.5, 10.0, 1 << 30);
    future.time_unix_ms += 86_400_000;
    let mut later = host(0.7, 20.0, 1 << 30);
    later.time_unix_ms += 1000;
    let samples = vec![
        host(0.5, 10.0, 1 << 30),
        nan,
        host(0.5, 10.0, -4096),
        host(0.5, 150.0, 1 << 30),
        future,
        later,
    ];
    sender.send(batch(1, samples)).await.unwrap();
    let ack = next_ack(&mut inbound).await;
    assert_eq!(ack.seq, 1);
    assert_eq!(ack.accepted, 2);
    assert!(!ack.duplicate);
    let reasons: Vec<(u32, &str)> = ack
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "not_finite"),
            (2, "negative_size"),
            (3, "percent_out_of_range"),
            (4, "future_timestamp")
        ]
    );
    assert_eq!(
        ack.rejected[1].detail,
        "host.disks[0].total_bytes: -4096 is negative"
    );

    // The same seq again is acknowledged as a duplicate and not applied twice.
    sender
        .send(batch(1, vec![host(0.9, 10.0, 1 << 30)]))
        .await
        .unwrap();
    let duplicate = next_ack(&mut inbound).await;
    assert!(duplicate.duplicate);
    assert_eq!(duplicate.accepted, 0);

    let mut operator = OperatorClient::new(running.channel().await);
    let node = operator
        .get_node(wire::GetNodeRequest {
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.applied_seq, 1);
    assert_eq!(node.rejected_samples_total, 4);
    assert_eq!(
        (node.batches_applied_total, node.duplicate_batches_total),
        (1, 1)
    );
    assert!(node.connected);
    let latest = node.latest_host.unwrap();
    assert_eq!(
        latest.load1, 0.7,
        "the newest good sample, not the replayed one"
    );

    drop(sender);
    running.stop().await;
}

#[tokio::test]
async fn a_stream_must_open_with_a_valid_hello() {
    let running = start().await;
    let error = open_stream(running.channel().await, batch(1, vec![]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("first message must be a hello"),
        "{}",
        error.message()
    );

    let error = open_stream(running.channel().await, hello("bad node!"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("hello.identity.node"),
        "{}",
        error.message()
    );
    running.stop().await;
}

#[tokio::test]
async fn an_unknown_node_is_unknown_and_the_services_answer_health_checks() {
    let running = start().await;
    let mut operator = OperatorClient::new(running.channel().await);
    let error = operator
        .get_node(wire::GetNodeRequest {
            tenant: "x".into(),
            cluster: "y".into(),
            node: "z".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.message(), "node x/y/z: not known");
    running.stop().await;
}

#[tokio::test]
async fn an_oversized_message_ends_the_stream_with_resource_exhausted() {
    let running = start().await;
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();
    let mut huge = host(0.5, 10.0, 1 << 30);
    if let Some(wire::sample::Kind::Host(host)) = &mut huge.kind {
        host.disks[0].mount = "/".repeat(MAX_MESSAGE_BYTES * 2);
    }
    sender.send(batch(1, vec![huge])).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(error.message().contains("too large"), "{}", error.message());

    // Nothing else was lost: the node is known and a new stream works.
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();
    sender
        .send(batch(1, vec![host(0.5, 10.0, 1 << 30)]))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut inbound).await.accepted, 1);
    running.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_for_both_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let running = start().await;
    let mut health = HealthClient::new(running.channel().await);
    for service in ["hostwatch.v1.Ingest", "hostwatch.v1.Operator"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service}");
    }

    let mut reflection = ServerReflectionClient::new(running.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "hostwatch.v1.Ingest",
        "hostwatch.v1.Operator",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn watch_events_streams_what_happens_filtered() {
    let running = start().await;
    let mut operator = OperatorClient::new(running.channel().await);
    let request = wire::WatchEventsRequest {
        cluster: "db".into(),
        sources: vec![wire::EventSource::Notifications as i32],
        ..Default::default()
    };
    let mut events = operator.watch_events(request).await.unwrap().into_inner();

    // A node in another cluster, then one in "db": only the second is seen.
    let mut other = hello("elsewhere");
    if let Some(wire::agent_message::Kind::Hello(hello)) = &mut other.kind {
        hello.identity.as_mut().unwrap().cluster = "other".into();
    }
    let _elsewhere = open_stream(running.channel().await, other).await.unwrap();
    let _n1 = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();

    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.cluster, "db");
    assert_eq!(event.node, "n1");
    assert_eq!(event.source(), wire::EventSource::Notifications);
    let Some(wire::event::Payload::Notification(notification)) = event.payload else {
        panic!("not a notification: {event:?}");
    };
    assert_eq!(notification.title, "New node");
    assert_eq!(notification.text, "node acme/db/n1 appeared (agent test)");
    running.stop().await;
}

#[tokio::test]
async fn a_sample_not_after_the_previous_one_is_rejected_not_silently_dropped() {
    let running = start().await;
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();
    let at = |offset_ms: i64, load1: f64| {
        let mut sample = host(load1, 10.0, 1 << 30);
        sample.time_unix_ms += offset_ms;
        sample
    };
    sender.send(batch(1, vec![at(0, 0.1)])).await.unwrap();
    assert_eq!(next_ack(&mut inbound).await.accepted, 1);

    // Older than the applied one, then newer, then older than that within the batch.
    let samples = vec![at(-1000, 0.2), at(1000, 0.3), at(500, 0.4), at(1000, 0.5)];
    sender.send(batch(2, samples)).await.unwrap();
    let ack = next_ack(&mut inbound).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    assert_eq!(ack.rejected.len(), 1, "one summary: {ack:?}");
    let rejection = &ack.rejected[0];
    assert_eq!(
        (
            rejection.reason.as_str(),
            rejection.count,
            rejection.indices.clone()
        ),
        ("out_of_order", 3, vec![0, 2, 3])
    );
    assert!(
        rejection
            .detail
            .contains("is not after the node's previous host sample"),
        "{}",
        rejection.detail
    );

    let mut operator = OperatorClient::new(running.channel().await);
    let node = operator
        .get_node(wire::GetNodeRequest {
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.rejected_samples_total, 3);
    assert_eq!(node.latest_host.unwrap().load1, 0.3);
    drop(sender);
    running.stop().await;
}

/// The same for the `elasticsearch` probe: each check's results keep their own order (a
/// health result older than the previous health result is rejected, while a storage result
/// of that older time is not), since the rules' windows only move forward.
#[tokio::test]
async fn an_elasticsearch_result_not_after_the_previous_one_of_its_check_is_rejected() {
    let running = start().await;
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();
    let base = host(0.1, 10.0, 1 << 30).time_unix_ms;
    let es = |offset_ms: i64, check: wire::ElasticsearchCheck, result| wire::Sample {
        time_unix_ms: base + offset_ms,
        kind: Some(wire::sample::Kind::Elasticsearch(
            wire::ElasticsearchSample {
                check: check as i32,
                url: "http://127.0.0.1:9200".into(),
                error: None,
                result: Some(result),
            },
        )),
    };
    let health = |offset_ms| {
        let green = wire::ElasticsearchHealth {
            cluster_name: "logs".into(),
            status: "green".into(),
            number_of_nodes: 3,
            number_of_data_nodes: 3,
            ..Default::default()
        };
        let result = wire::elasticsearch_sample::Result::Health(green);
        es(offset_ms, wire::ElasticsearchCheck::Health, result)
    };
    let storage = |offset_ms| {
        let empty = wire::ElasticsearchStorage::default();
        let result = wire::elasticsearch_sample::Result::Storage(empty);
        es(offset_ms, wire::ElasticsearchCheck::Storage, result)
    };
    sender.send(batch(1, vec![health(0)])).await.unwrap();
    let first = next_ack(&mut inbound).await;
    assert_eq!(first.accepted, 1, "{first:?}");

    sender
        .send(batch(2, vec![health(-1000), storage(-1000), health(1000)]))
        .await
        .unwrap();
    let ack = next_ack(&mut inbound).await;
    assert_eq!(ack.accepted, 2, "{ack:?}");
    assert_eq!(ack.rejected.len(), 1, "{ack:?}");
    let rejection = &ack.rejected[0];
    assert_eq!(
        (rejection.reason.as_str(), rejection.indices.clone()),
        ("out_of_order", vec![0])
    );
    assert!(
        rejection
            .detail
            .contains("is not after the node's previous elasticsearch.health"),
        "{}",
        rejection.detail
    );
    drop(sender);
    running.stop().await;
}

#[tokio::test]
async fn more_memory_available_than_in_total_is_rejected() {
    let running = start().await;
    let (sender, mut inbound) = open_stream(running.channel().await, hello("n1"))
        .await
        .unwrap();
    let mut sample = host(0.1, 10.0, 1 << 30);
    if let Some(wire::sample::Kind::Host(host)) = &mut sample.kind {
        host.memory_total_bytes = 16_000_000_000;
        host.memory_available_bytes = 20_000_000_000;
    }
    sender.send(batch(1, vec![sample])).await.unwrap();
    let ack = next_ack(&mut inbound).await;
    assert_eq!(ack.accepted, 0);
    assert_eq!(ack.rejected[0].reason, "inconsistent");
    assert_eq!(
        ack.rejected[0].detail,
        "host.memory_available_bytes: 20000000000 is more than host.memory_total_bytes \
         (16000000000)"
    );
    drop(sender);
    running.stop().await;
}
