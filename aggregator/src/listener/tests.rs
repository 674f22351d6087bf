use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

use super::*;

/// Far longer than any test runs: the deadline a test does not exercise.
const NEVER: Duration = Duration::from_secs(3600);
/// How long a test waits for what must happen; only a broken listener gets near it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn listening(
    max: usize,
    deadlines: Deadlines,
) -> (SocketAddr, ReceiverStream<io::Result<Connection>>, Registry) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::default();
    let incoming = incoming(listener, max, deadlines, registry.clone());
    (addr, incoming, registry)
}

/// Reads until the connection ends; the error kind it ended with.
async fn read_until_closed(connection: &mut Connection) -> io::ErrorKind {
    let mut buffer = [0_u8; 16];
    loop {
        match connection.read(&mut buffer).await {
            Ok(0) => return io::ErrorKind::UnexpectedEof,
            Ok(_) => continue,
            Err(error) => return error.kind(),
        }
    }
}

#[test]
fn the_deadline_is_the_handshake_then_the_idle_one_and_none_during_a_call() {
    let deadlines = Deadlines {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(300),
    };
    let accepted = Instant::now();
    let activity = Arc::new(Activity::new(accepted));
    assert_eq!(
        activity.deadline(deadlines),
        Some(accepted + deadlines.handshake)
    );
    let call = activity.call_started();
    let second = activity.call_started();
    assert_eq!(activity.deadline(deadlines), None);
    drop(call);
    assert_eq!(activity.deadline(deadlines), None, "one call still runs");
    drop(second);
    let idle_since = *activity.idle_since.lock().unwrap();
    assert!(idle_since >= accepted);
    assert_eq!(
        activity.deadline(deadlines),
        Some(idle_since + deadlines.idle)
    );
}

#[tokio::test]
async fn a_connection_that_starts_no_call_ends_at_the_handshake_deadline() {
    let deadlines = Deadlines {
        handshake: Duration::from_millis(50),
        idle: NEVER,
    };
    let (addr, mut incoming, registry) = listening(8, deadlines).await;
    let _client = TcpStream::connect(addr).await.unwrap();
    let mut connection = incoming.next().await.unwrap().unwrap();
    let ended = tokio::time::timeout(PATIENCE, read_until_closed(&mut connection)).await;
    assert_eq!(ended.unwrap(), io::ErrorKind::TimedOut);
    drop(connection);
    assert!(
        registry.lock().is_empty(),
        "a closed connection stays registered"
    );
}

#[tokio::test]
async fn the_end_of_the_last_call_starts_the_idle_deadline() {
    let deadlines = Deadlines {
        handshake: NEVER,
        idle: Duration::from_millis(50),
    };
    let (addr, mut incoming, registry) = listening(8, deadlines).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let mut connection = incoming.next().await.unwrap().unwrap();
    let call = registry
        .get(client.local_addr().unwrap())
        .expect("the connection is registered under its peer address")
        .call_started();
    // The reader waits on the socket with no timer (a call is in progress); the call's
    // end must wake it to start the idle deadline.
    let reader = tokio::spawn(async move {
        let kind = read_until_closed(&mut connection).await;
        (kind, connection)
    });
    tokio::task::yield_now().await;
    drop(call);
    let (kind, _connection) = tokio::time::timeout(PATIENCE, reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kind, io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn past_the_cap_a_connection_is_accepted_once_one_closes() {
    let deadlines = Deadlines {
        handshake: NEVER,
        idle: NEVER,
    };
    let (addr, mut incoming, registry) = listening(1, deadlines).await;
    let _first_client = TcpStream::connect(addr).await.unwrap();
    let first = incoming.next().await.unwrap().unwrap();
    let _second_client = TcpStream::connect(addr).await.unwrap();
    drop(first);
    let second = tokio::time::timeout(PATIENCE, incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(registry.lock().len(), 1);
    drop(second);
    assert!(registry.lock().is_empty());
}

#[test]
fn a_closing_connection_does_not_forget_a_newer_one_from_the_same_address() {
    let registry = Registry::default();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let old = Arc::new(Activity::new(Instant::now()));
    let new = Arc::new(Activity::new(Instant::now()));
    registry.insert(peer, Arc::clone(&old));
    registry.insert(peer, Arc::clone(&new));
    registry.remove(peer, &old);
    assert!(Arc::ptr_eq(&registry.get(peer).unwrap(), &new));
    registry.remove(peer, &new);
    assert!(registry.get(peer).is_none());
}

#[test]
fn the_cap_stays_below_the_open_file_limit() {
    assert_eq!(connection_cap(None, 1024), 1024 - 256);
    assert_eq!(connection_cap(Some(100), 1024), 100);
    assert_eq!(connection_cap(Some(5000), 1024), 1024 - 256);
    assert_eq!(connection_cap(None, 100), 1);
}

#[test]
fn running_out_of_descriptors_is_told_from_a_peer_that_gave_up() {
    assert!(lacks_resources(&io::Error::from_raw_os_error(24)));
    assert!(lacks_resources(&io::Error::from_raw_os_error(23)));
    assert!(!lacks_resources(&io::Error::from_raw_os_error(103)));
}
