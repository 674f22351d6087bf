//! Delivery through the persistent outbox, against real HTTP receivers on 127.0.0.1:
//! retries until accepted, in order and once; `Retry-After`; dead letters; and a hanging
//! receiver that holds back only its own integration.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aggregator::outbox::{DeliveryQuery, DeliveryState, Outbox};
use support::receiver::{Receiver, Recorded, Reply};
use support::{Running, trip, webhook};

const WAIT: Duration = Duration::from_secs(30);

fn nodes_of(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|request| request.json()["node"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_for_a_while_gets_everything_in_order_once() {
    // The first four requests fail with 500; later ones succeed.
    let flaky = Receiver::start_with(|_, index| {
        if index < 4 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let steady = Receiver::start().await;
    let config = format!(
        "{}{}",
        webhook("flaky", &flaky.url("/hook"), "5s"),
        webhook("steady", &steady.url("/hook"), "5s")
    );
    let running = Running::start(&config).await;
    let nodes: Vec<String> = (0..5).map(|index| format!("n{index}")).collect();
    for node in &nodes {
        trip(&running, node).await;
    }

    let steady_requests = steady.wait_for(5, WAIT).await;
    assert_eq!(nodes_of(&steady_requests), nodes);

    // 4 refused attempts of the first event, then all five accepted.
    let flaky_requests = flaky.wait_for(4 + 5, WAIT).await;
    let accepted = &flaky_requests[4..];
    assert_eq!(nodes_of(accepted), nodes, "in commit order");
    let first_id = accepted[0].json()["id"].clone();
    for refused in &flaky_requests[..4] {
        assert_eq!(
            refused.json()["id"],
            first_id,
            "the head waits for its retry"
        );
    }
    let mut ids: Vec<String> = accepted
        .iter()
        .map(|request| request.json()["id"].as_str().unwrap().to_owned())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each event accepted once");
    // Nothing more arrives, and nothing is left in the outbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(flaky.requests().len(), 9);
    assert_eq!(steady.requests().len(), 5);
    let outbox = Outbox::open(&running.db_path()).unwrap();
    assert_eq!(outbox.list(&DeliveryQuery::default()).unwrap(), Vec::new());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let receiver = Receiver::start_with(|_, index| {
        if index == 0 {
            Reply::Status {
                status: 429,
                headers: vec![("retry-after".into(), "2".into())],
                body: "slow down".into(),
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let running = Running::start(&webhook("throttled", &receiver.url("/"), "5s")).await;
    trip(&running, "n1").await;
    let requests = receiver.wait_for(2, WAIT).await;
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before Retry-After's 2 s (backoff_min is 100 ms)"
    );
    assert_eq!(requests[0].json()["id"], requests[1].json()["id"]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_dead_lettered_at_once() {
    let receiver = Receiver::start_with(|request, _| {
        if request.json()["node"] == "bad" {
            Reply::Status {
                status: 400,
                headers: Vec::new(),
                body: "unknown field".into(),
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let running = Running::start(&webhook("strict", &receiver.url("/"), "5s")).await;
    trip(&running, "bad").await;
    trip(&running, "good").await;
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        nodes_of(&requests),
        ["bad", "good"],
        "not retried, not blocking"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 2);

    let outbox = Outbox::open(&running.db_path()).unwrap();
    let strict = DeliveryQuery {
        integrations: Some(vec!["strict".to_owned()]),
        ..DeliveryQuery::default()
    };
    let dead = outbox
        .list(&DeliveryQuery {
            states: vec![DeliveryState::Dead],
            ..strict.clone()
        })
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope["node"], "bad");
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0].last_error.contains("400"), "{}", dead[0].last_error);
    assert!(
        dead[0].last_error.contains("unknown field"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(outbox.list(&strict).unwrap().len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_holds_back_only_its_own_integration() {
    let hanging = Receiver::start_with(|_, _| Reply::Hang).await;
    let healthy = Receiver::start().await;
    let config = format!(
        "{}{}",
        webhook("hanging", &hanging.url("/"), "60s"),
        webhook("healthy", &healthy.url("/"), "5s")
    );
    let running = Running::start(&config).await;
    for node in ["a", "b", "c"] {
        trip(&running, node).await;
    }
    // All three reach the healthy receiver while the hanging one still holds its first
    // request (its timeout is 60 s, far beyond this test's waits).
    let requests = healthy.wait_for(3, WAIT).await;
    assert_eq!(nodes_of(&requests), ["a", "b", "c"]);
    let held = hanging.wait_for(1, WAIT).await;
    assert_eq!(
        held.len(),
        1,
        "the hanging integration is still on its first delivery"
    );
    // The healthy worker removes a row just after its receiver answered, so wait for its
    // rows to go rather than reading the outbox at the instant the third request landed.
    let outbox = Outbox::open(&running.db_path()).unwrap();
    let pending_by_integration = || -> HashMap<String, usize> {
        outbox
            .list(&DeliveryQuery::default())
            .unwrap()
            .into_iter()
            .fold(HashMap::new(), |mut counts, delivery| {
                *counts.entry(delivery.integration).or_default() += 1;
                counts
            })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut pending = pending_by_integration();
    while pending.contains_key("healthy") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pending = pending_by_integration();
    }
    assert_eq!(
        pending.get("healthy"),
        None,
        "the healthy integration's outbox drains"
    );
    assert_eq!(
        pending.get("hanging"),
        Some(&3),
        "the hanging one still holds all three"
    );
    drop(running);
}
