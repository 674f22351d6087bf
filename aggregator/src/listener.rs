//! The listener's side of connections: accepting them under a cap, backing off when the
//! process runs out of file descriptors, and closing connections that do nothing.
//!
//! tonic's own accept loop holds every connection it gets, however idle, and retries a
//! failed `accept` at once: at the open-file limit (EMFILE) that is a loop spinning at
//! full CPU while nothing, not even the operator's call, gets through. Here a task
//! accepts only while fewer than `max` connections are held (the rest wait in the
//! kernel's backlog), waits with back-off when `accept` fails for want of resources,
//! and hands each connection to tonic as a [`Connection`], which ends itself once it
//! has been idle too long: without a call started within the handshake timeout, or
//! without a call in progress for the idle timeout.
//!
//! A connection's calls are counted by [`CallTracking`], a layer in front of every
//! service; it finds the connection by the peer address tonic attaches to each request.
//! What a call does is not this module's business; the Hello deadline is `ingest`'s.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, Bytes, Service, http};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::config::ConnectionsConfig;

/// File descriptors kept for everything but client connections: the database and its
/// WAL, sinks' sockets, the log, the runtime's own.
pub const RESERVED_FILES: u64 = 256;

/// The first wait after `accept` failed for want of resources; it doubles up to
/// `ACCEPT_BACKOFF_MAX` while the failures last.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often reaching the connection limit is logged while it lasts.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Raises the soft open-file limit to the hard one (systemd's default soft limit is
/// 1,024) and returns the soft limit in force. Failure to raise it is not fatal: the
/// connection cap follows whatever limit there is.
pub fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (the kernel caps it at nr_open).
    let target = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|current| current < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, target, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection cap: the configured one, but never so many that connections alone
/// reach the open-file limit.
pub fn connection_cap(configured: Option<usize>, file_limit: u64) -> usize {
    let ceiling =
        usize::try_from(file_limit.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
    match configured {
        Some(max) if max > ceiling => {
            tracing::warn!(
                configured = max,
                file_limit,
                used = ceiling,
                "connections.max is above what the open-file limit allows; lowered"
            );
            ceiling
        }
        Some(max) => max,
        None => ceiling,
    }
}

/// How long connections may do nothing.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub handshake: Duration,
    pub idle: Duration,
}

impl Deadlines {
    pub fn from_config(config: &ConnectionsConfig) -> Self {
        Self {
            handshake: config.handshake_timeout,
            idle: config.idle_timeout,
        }
    }
}

/// The connections held, by peer address, so a request can be counted against its own.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    connections: Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>,
}

impl Registry {
    fn insert(&self, peer: SocketAddr, activity: Arc<Activity>) {
        self.lock().insert(peer, activity);
    }

    /// Forgets `peer`, unless a newer connection from the same address (a reused port)
    /// took its place.
    fn remove(&self, peer: SocketAddr, activity: &Arc<Activity>) {
        let mut connections = self.lock();
        if connections
            .get(&peer)
            .is_some_and(|held| Arc::ptr_eq(held, activity))
        {
            connections.remove(&peer);
        }
    }

    fn get(&self, peer: SocketAddr) -> Option<Arc<Activity>> {
        self.lock().get(&peer).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Activity>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a connection is doing: its calls in progress and since when it has had none.
#[derive(Debug)]
struct Activity {
    calls: AtomicUsize,
    ever_called: AtomicBool,
    idle_since: Mutex<Instant>,
    /// The connection's reader while a call is in progress: woken when the last call
    /// ends, so it starts its idle deadline then.
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            calls: AtomicUsize::new(0),
            ever_called: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            reader: Mutex::new(None),
        }
    }

    fn call_started(self: &Arc<Self>) -> CallGuard {
        self.ever_called.store(true, Ordering::Release);
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(self))
    }

    /// When the connection is to be closed if nothing changes; `None` while a call is in
    /// progress.
    fn deadline(&self, deadlines: Deadlines) -> Option<Instant> {
        if self.calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(if self.ever_called.load(Ordering::Acquire) {
            idle_since + deadlines.idle
        } else {
            idle_since + deadlines.handshake
        })
    }
}

/// One call in progress; dropped when its response (a stream's included) has ended.
#[derive(Debug)]
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        *activity
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        if activity.calls.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(reader) = activity
                .reader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            reader.wake();
        }
    }
}

/// Accepts connections on `listener` for as long as the returned stream is held.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    deadlines: Deadlines,
    registry: Registry,
) -> ReceiverStream<io::Result<Connection>> {
    let (sender, receiver) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        tokio::select! {
            () = accept_loop(&listener, &slots, max_connections, deadlines, &registry, &sender) => {}
            // The server stopped accepting: the listening socket closes with this task.
            () = sender.closed() => {}
        }
    });
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    max_connections: usize,
    deadlines: Deadlines,
    registry: &Registry,
    sender: &mpsc::Sender<io::Result<Connection>>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut starved = false;
    // At the cap every closed connection lets one more in: warn once per interval, not
    // per connection.
    let mut last_warned: Option<Instant> = None;
    let mut waits_since_warned = 0_u64;
    loop {
        let permit = match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                waits_since_warned += 1;
                if last_warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL) {
                    tracing::warn!(
                        max_connections,
                        times = waits_since_warned,
                        "connection limit reached; new connections wait until one closes"
                    );
                    last_warned = Some(Instant::now());
                    waits_since_warned = 0;
                }
                let Ok(permit) = Arc::clone(slots).acquire_owned().await else {
                    return;
                };
                permit
            }
        };
        let (stream, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => break accepted,
                Err(error) if lacks_resources(&error) => {
                    if !starved {
                        tracing::warn!(%error, "cannot accept connections: out of resources; backing off");
                        starved = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                // The peer gave up between SYN and accept: nothing to do.
                Err(error) => tracing::debug!(%error, "accept failed"),
            }
        };
        if starved {
            tracing::info!("accepting connections again");
            starved = false;
        }
        backoff = ACCEPT_BACKOFF_MIN;
        // No Nagle: an ack is a few bytes and must not wait for the agent's delayed ACK
        // (up to 40 ms), which capped a stream at one round of batches per 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = Connection::new(stream, peer, permit, deadlines, registry.clone());
        if sender.send(Ok(connection)).await.is_err() {
            return;
        }
    }
}

/// Errors of `accept` that say the process or system ran out of something (file
/// descriptors, memory): retrying at once cannot succeed.
fn lacks_resources(error: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(
        error.raw_os_error(),
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)
    )
}

/// An accepted connection as tonic reads it: a TCP stream that ends with `TimedOut`
/// once it has been idle past its deadline, and frees its slot when dropped.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    timer: Pin<Box<Sleep>>,
    registry: Registry,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        deadlines: Deadlines,
        registry: Registry,
    ) -> Self {
        let now = Instant::now();
        let activity = Arc::new(Activity::new(now));
        registry.insert(peer, Arc::clone(&activity));
        Self {
            stream,
            peer,
            activity,
            deadlines,
            timer: Box::pin(tokio::time::sleep_until(now + deadlines.handshake)),
            registry,
            _slot: slot,
        }
    }

    /// `Err(TimedOut)` once the connection has been idle past its deadline. While a call
    /// is in progress, registers the reader to be woken when it ends instead.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // The waker goes in before the count is read, so a call ending in between
        // still wakes this reader.
        *self
            .activity
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        let Some(deadline) = self.activity.deadline(self.deadlines) else {
            return Ok(());
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle past its deadline",
            ));
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.registry.remove(self.peer, &self.activity);
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(error) = self.check_idle(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The layer that counts each connection's calls, from request to the end of its
/// response body.
#[derive(Debug, Clone)]
pub struct CallTracking {
    registry: Registry,
}

impl CallTracking {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

impl<S> tower_layer::Layer<S> for CallTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// A service whose calls count against their connection.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    registry: Registry,
}

fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Tracked<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = peer_of(&request)
            .and_then(|peer| self.registry.get(peer))
            .map(|activity| activity.call_started());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    tonic::body::Body::new(GuardedBody {
                        inner: body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that keeps its call counted until it ends or is dropped.
struct GuardedBody {
    inner: tonic::body::Body,
    _guard: CallGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
