//! The agent against a real tonic `Ingest` server on 127.0.0.1, written here: what it sends
//! first, how it numbers batches, what it resends after the server hangs up, what survives
//! a restart, and what happens while the aggregator is down.

// A test's helpers panic on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Action, Policy, Seen, WAIT, assert_host_batch, config, start_agent, start_server};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_first_resend_after_hangup_and_seq_survives_restart() {
    let state_dir = tempfile::tempdir().unwrap();
    // Connection 1 acks 1 and 2, keeps 3 unacknowledged and hangs up on 4; later ones ack all.
    let policy: Policy = Arc::new(|conn, seq| match (conn, seq) {
        (1, 1 | 2) => Action::Ack,
        (1, 3) => Action::Ignore,
        (1, _) => Action::HangUp,
        _ => Action::Ack,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, policy).await;
    let running = start_agent(config(state_dir.path(), server.addr));

    let hello = server.expect_hello(1).await;
    let identity = hello.identity.clone().expect("hello carries the identity");
    assert_eq!(
        (
            identity.tenant.as_str(),
            identity.cluster.as_str(),
            identity.node.as_str()
        ),
        ("acme", "orders-db", "db-1")
    );
    assert_eq!(identity.business_group, "payments");
    assert_eq!(identity.labels.get("az").map(String::as_str), Some("a"));
    let instance_id = identity.service_instance_id.clone();
    assert_eq!(
        std::fs::read_to_string(state_dir.path().join("instance_id"))
            .unwrap()
            .trim(),
        instance_id
    );
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    // The first sample is taken while the agent connects, so the first Hello finds either
    // nothing unacknowledged yet or that sample (seq 1); both are right. The reconnect
    // below checks the field where its value is determined.
    assert!(
        matches!(hello.oldest_unacked_seq, 0 | 1),
        "oldest_unacked_seq on the first hello: {}",
        hello.oldest_unacked_seq
    );
    assert!(!hello.seq_epoch.is_empty());
    assert_eq!(hello.probes.len(), 1);
    assert_eq!(
        (hello.probes[0].name.as_str(), hello.probes[0].interval_ms),
        ("host", 200)
    );

    let mut first_copies = Vec::new();
    for expected_seq in 1..=4 {
        let batch = server.expect_batch(1).await;
        assert_eq!(batch.seq, expected_seq);
        assert_eq!(batch.dropped_batches_total, 0);
        assert_host_batch(&batch);
        first_copies.push(batch);
    }

    // The server hung up on 4: the agent reconnects, says 3 is its oldest unacknowledged
    // batch, and resends 3 and 4 (the same batches, not new samples) before anything newer.
    let hello = server.expect_hello(2).await;
    assert_eq!(
        hello
            .identity
            .as_ref()
            .map(|i| i.service_instance_id.as_str()),
        Some(instance_id.as_str())
    );
    assert_eq!(hello.oldest_unacked_seq, 3);
    let resent_3 = server.expect_batch(2).await;
    let resent_4 = server.expect_batch(2).await;
    assert_eq!(resent_3, first_copies[2]);
    assert_eq!(resent_4, first_copies[3]);
    let mut last_seq = 4;
    while last_seq < 7 {
        let batch = server.expect_batch(2).await;
        assert_eq!(batch.seq, last_seq + 1, "seqs grow by one, no gaps");
        last_seq = batch.seq;
    }

    running.stop().await;
    // Batches taken while stopping were sent and acknowledged on the same connection.
    while let Ok(seen) = server.seen.try_recv() {
        match seen {
            Seen::Batch { conn: 2, batch } => {
                assert_eq!(batch.seq, last_seq + 1);
                last_seq = batch.seq;
            }
            other => panic!("unexpected after shutdown: {other:?}"),
        }
    }
    let seq_file = std::fs::read_to_string(state_dir.path().join("seq")).unwrap();
    assert_eq!(seq_file.trim(), (last_seq + 1).to_string());

    // A restarted agent with the same state directory continues the numbering.
    let running = start_agent(config(state_dir.path(), server.addr));
    let hello_after_restart = server.expect_hello(3).await;
    assert_eq!(
        hello_after_restart
            .identity
            .as_ref()
            .map(|i| i.service_instance_id.as_str()),
        Some(instance_id.as_str())
    );
    assert_eq!(
        hello_after_restart.seq_epoch, hello.seq_epoch,
        "same counter, same epoch"
    );
    // Everything was acknowledged; the restarted agent's first sample may already be
    // spooled when it connects (the same race as the first Hello's).
    assert!(
        [0, last_seq + 1].contains(&hello_after_restart.oldest_unacked_seq),
        "oldest_unacked_seq after a restart with everything acknowledged: {}",
        hello_after_restart.oldest_unacked_seq
    );
    let batch = server.expect_batch(3).await;
    assert_eq!(batch.seq, last_seq + 1, "no seq is reused after a restart");
    let batch = server.expect_batch(3).await;
    assert_eq!(batch.seq, last_seq + 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_goes_on_while_the_aggregator_is_down_and_the_outbox_drops_the_oldest() {
    let state_dir = tempfile::tempdir().unwrap();
    // Find a free port, then leave it closed: the agent starts against a dead aggregator.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = config(state_dir.path(), addr);
    config.outbox.max_batches = 3;
    let running = start_agent(config);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;

    let hello = server.expect_hello(1).await;
    // At 200 ms per sample, more than 3 batches were taken before the server came up.
    assert!(
        hello.oldest_unacked_seq > 3,
        "oldest batches dropped: {}",
        hello.oldest_unacked_seq
    );
    let mut batches = Vec::new();
    for _ in 0..8 {
        batches.push(server.expect_batch(1).await);
    }
    let first = &batches[0];
    assert!(first.seq >= hello.oldest_unacked_seq);
    for pair in batches.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "no gaps once connected");
        assert!(pair[1].dropped_batches_total >= pair[0].dropped_batches_total);
    }
    // With room for 3, the oldest surviving batch was created after seq − 3 drops...
    assert_eq!(first.dropped_batches_total, first.seq - 3);
    // ...and once the backlog is through, the running total counts exactly the batches the
    // server never saw: every seq before the first one it received.
    let last = &batches[batches.len() - 1];
    assert_eq!(last.dropped_batches_total, first.seq - 1, "{batches:#?}");
    assert_eq!(
        std::fs::read_to_string(state_dir.path().join("dropped_batches_total"))
            .unwrap()
            .trim(),
        (first.seq - 1).to_string()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_at_most_the_grace_period_for_unacknowledged_batches() {
    let state_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ignore)).await;
    let mut config = config(state_dir.path(), server.addr);
    config.shutdown_grace = Duration::from_millis(700);
    let running = start_agent(config);
    server.expect_hello(1).await;
    server.expect_batch(1).await;
    let took = running.stop().await;
    assert!(
        took >= Duration::from_millis(600),
        "gave up before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "overran the grace period: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_immediate_when_everything_is_acknowledged() {
    let state_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    let running = start_agent(config(state_dir.path(), server.addr));
    server.expect_hello(1).await;
    server.expect_batch(1).await;
    server.expect_batch(1).await;
    let took = running.stop().await;
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with nothing to wait for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_ends_the_stream_rather_than_breaking_it() {
    let state_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = start_server(listener, Arc::new(|_, _| Action::Ack)).await;
    // As the binary runs it: on a runtime of its own, dropped (and with it every connection)
    // as soon as `run` returns.
    let agent = agent::Agent::new(config(state_dir.path(), server.addr)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(agent.run(async {
            let _ = stopped.await;
        }))
    });
    server.expect_hello(1).await;
    server.expect_batch(1).await;
    stop.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    // The aggregator logs a stream that ends in an error as broken; a stop is not that.
    let deadline = std::time::Instant::now() + WAIT;
    let ends = loop {
        let ends = server.stream_ends.lock().unwrap().clone();
        if !ends.is_empty() || std::time::Instant::now() > deadline {
            break ends;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ends, vec![(1, None)], "the stream did not end cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_unacknowledged_at_shutdown_stay_spooled_and_are_replayed_first() {
    let state_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The first agent's batches are never acknowledged; the second's all are.
    let policy: Policy = Arc::new(|conn, _| {
        if conn == 1 {
            Action::Ignore
        } else {
            Action::Ack
        }
    });
    let mut server = start_server(listener, policy).await;
    let mut first_config = config(state_dir.path(), server.addr);
    first_config.shutdown_grace = Duration::from_millis(300);
    let running = start_agent(first_config);
    server.expect_hello(1).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(server.expect_batch(1).await);
    }
    running.stop().await;
    let spooled = agent::outbox::spooled_batches(state_dir.path()).unwrap();
    assert!(
        spooled >= 3,
        "unacknowledged batches stay on disk: {spooled}"
    );

    let running = start_agent(config(state_dir.path(), server.addr));
    let hello = loop {
        match server.next().await {
            Seen::Hello { conn, hello } if conn > 1 => break *hello,
            _ => {}
        }
    };
    assert_eq!(hello.oldest_unacked_seq, 1);
    for expected in &sent {
        let replayed = loop {
            if let Seen::Batch { conn, batch } = server.next().await
                && conn > 1
            {
                break batch;
            }
        };
        assert_eq!(&replayed, expected, "the same batch, oldest first");
    }
    running.stop().await;
    assert_eq!(
        agent::outbox::spooled_batches(state_dir.path()).unwrap(),
        0,
        "a clean stop with a working aggregator leaves nothing spooled"
    );
}
