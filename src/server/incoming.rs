//! The accept loop: TCP connections, their TLS handshakes, and the [`Peer`]
//! each connection carries into its requests.
//!
//! Connections are counted in total and per peer address
//! (`limits.max_connections`, `limits.max_connections_per_peer`). One past
//! the per-peer limit is closed as soon as it is accepted. At the total
//! limit, the longest-idle connection (no call open, no byte moved for the
//! longest time) is closed to make room for the new one; only if every
//! connection has a call open is the new one closed instead. Refusals and
//! such closes are logged at most once a minute each (with a count of the
//! others). Handshakes run in their own tasks (one per counted connection)
//! with a deadline, so a client that connects and says nothing holds up no
//! one.
//!
//! Running out of file descriptors (EMFILE, ENFILE) closes the
//! longest-idle connections too, a few at a time, and accepting resumes
//! once they are gone; with none to close it pauses with a growing
//! backoff. Either is logged once per episode, never a busy loop.
//!
//! Accepted sockets get TCP_NODELAY. A connection on which no byte moves
//! either way for `limits.idle_connection_timeout_seconds` is closed: its
//! reads fail, the timer being polled with the read HTTP/2 always has
//! pending. A connection chosen to make room is closed the same way, its
//! pending read woken. Calls are counted per connection by
//! [`Connections::open_calls`], a layer in front of the services.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::tls::{Listener, ServerTls};
use crate::api::auth::{Peer, PeerIdentity};

/// The bounds on connections (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections in total.
    pub total: usize,
    /// Open connections from one peer address.
    pub per_peer: usize,
    /// How long a client has to complete its TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a connection may move no byte either way.
    pub idle_timeout: Duration,
}

/// What choosing a connection to close needs to know of it.
#[derive(Debug, Default)]
struct Activity {
    /// When a byte last moved either way, in µs since [`epoch`].
    last_us: AtomicU64,
    /// Calls (HTTP/2 streams) open on it.
    calls: AtomicUsize,
    /// Chosen to be closed to make room.
    closing: AtomicBool,
    /// The connection's pending read, woken when it is chosen.
    waker: AtomicWaker,
}

/// The instant [`Activity::last_us`] counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl Activity {
    fn new() -> Self {
        let a = Self::default();
        a.touch();
        a
    }

    fn touch(&self) {
        self.last_us.store(now_us(), Ordering::Relaxed);
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Open {
    /// Counted in total.
    total: usize,
    /// Of them, chosen to be closed and not closed yet.
    closing: usize,
    /// Counted per peer address.
    per_peer: HashMap<IpAddr, usize>,
    /// Each by its remote address.
    conns: HashMap<SocketAddr, Arc<Activity>>,
}

impl Open {
    /// Chooses up to `n` connections to close, the longest idle first
    /// (none with a call open); returns how many.
    fn close_longest_idle(&mut self, n: usize) -> usize {
        let mut idle: Vec<(u64, &Arc<Activity>)> = self
            .conns
            .values()
            .filter(|a| a.calls.load(Ordering::Acquire) == 0 && !a.closing.load(Ordering::Relaxed))
            .map(|a| (a.last_us.load(Ordering::Relaxed), a))
            .collect();
        let n = n.min(idle.len());
        if n == 0 {
            return 0;
        }
        if n < idle.len() {
            idle.select_nth_unstable_by_key(n - 1, |(last, _)| *last);
        }
        for (_, a) in &idle[..n] {
            a.closing.store(true, Ordering::Release);
            a.waker.wake();
        }
        self.closing += n;
        n
    }
}

/// The connections of a listener: counted, their calls counted, the
/// longest idle closed when room is needed.
#[derive(Debug)]
pub struct Connections {
    limits: ConnLimits,
    open: Mutex<Open>,
    /// When a refusal was last logged, and how many went unlogged since.
    refusals: Mutex<(Option<Instant>, u64)>,
    /// The same for connections closed to make room.
    closes: Mutex<(Option<Instant>, u64)>,
    /// The same for accepts that failed for want of descriptors or memory.
    out_of_resources: Mutex<(Option<Instant>, u64)>,
}

/// One counted connection; uncounted when dropped (the connection closed).
struct Slot {
    conns: Arc<Connections>,
    addr: SocketAddr,
    activity: Arc<Activity>,
}

impl Connections {
    /// Connections bounded by `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(Open::default()),
            refusals: Mutex::new((None, 0)),
            closes: Mutex::new((None, 0)),
            out_of_resources: Mutex::new((None, 0)),
        })
    }

    /// A slot for a connection from `addr`, or the limit that refuses it.
    /// At the total limit the longest-idle connection is chosen to close.
    fn take(self: &Arc<Self>, addr: SocketAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.per_peer.get(&addr.ip()).copied().unwrap_or(0) >= self.limits.per_peer {
            return Err("limits.max_connections_per_peer");
        }
        if open.total - open.closing >= self.limits.total {
            if open.close_longest_idle(1) == 0 {
                return Err("limits.max_connections");
            }
            self.closed_to_make_room("limits.max_connections", 1);
        }
        *open.per_peer.entry(addr.ip()).or_insert(0) += 1;
        open.total += 1;
        let activity = Arc::new(Activity::new());
        open.conns.insert(addr, activity.clone());
        Ok(Slot {
            conns: self.clone(),
            addr,
            activity,
        })
    }

    /// Out of descriptors: chooses up to `n` of the longest-idle
    /// connections to close; returns how many.
    fn close_for_descriptors(&self, n: usize) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let closed = open.close_longest_idle(n);
        if closed > 0 {
            self.closed_to_make_room("file descriptors", closed);
        }
        closed
    }

    /// A layer in front of the services that counts each connection's open
    /// calls: a connection with a call open is never idle.
    pub fn open_calls(self: &Arc<Self>) -> OpenCalls {
        OpenCalls(self.clone())
    }

    fn activity(&self, addr: &SocketAddr) -> Option<Arc<Activity>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.conns.get(addr).cloned()
    }
}

/// At most one log line per this interval for refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs the first event at once, then at most one line per
/// [`REFUSAL_LOG_INTERVAL`] counting those not logged, so that a flood
/// neither floods the log nor goes unseen. Whether to log now, and how
/// many went unlogged before.
fn rate_limited(log: &Mutex<(Option<Instant>, u64)>, n: u64) -> Option<u64> {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match log.0 {
        Some(last) if now.duration_since(last) < REFUSAL_LOG_INTERVAL => {
            log.1 += n;
            None
        }
        _ => {
            let unlogged = log.1;
            *log = (Some(now), n - 1);
            Some(unlogged)
        }
    }
}

impl Connections {
    /// Logs a refused connection (rate-limited).
    fn refused(&self, ip: IpAddr, limit: &'static str) {
        if let Some(unlogged) = rate_limited(&self.refusals, 1) {
            tracing::warn!(
                peer = %ip,
                limit,
                unlogged,
                "connection refused: limit reached (further refusals within a minute are counted, not logged)"
            );
        }
    }

    /// Logs connections chosen to close for room (rate-limited).
    fn closed_to_make_room(&self, short_of: &'static str, n: usize) {
        if let Some(unlogged) = rate_limited(&self.closes, n as u64) {
            tracing::warn!(
                short_of,
                closed = n,
                unlogged,
                "closing the longest-idle connections to make room (further closes within a minute are counted, not logged)"
            );
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if self.activity.closing.load(Ordering::Acquire) {
            open.closing -= 1;
        }
        if open
            .conns
            .get(&self.addr)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            open.conns.remove(&self.addr);
        }
        let ip = self.addr.ip();
        if let Some(n) = open.per_peer.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&ip);
            }
        }
    }
}

/// The layer of [`Connections::open_calls`].
#[derive(Debug, Clone)]
pub struct OpenCalls(Arc<Connections>);

impl<S> tower_layer::Layer<S> for OpenCalls {
    type Service = OpenCallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenCallsService {
            inner,
            conns: self.0.clone(),
        }
    }
}

/// The service of [`OpenCalls`].
#[derive(Debug, Clone)]
pub struct OpenCallsService<S> {
    inner: S,
    conns: Arc<Connections>,
}

/// One open call on a connection, from its request until its response
/// body is dropped.
struct CallGuard(Option<Arc<Activity>>);

impl CallGuard {
    fn new(activity: Option<Arc<Activity>>) -> Self {
        if let Some(a) = &activity {
            a.calls.fetch_add(1, Ordering::AcqRel);
        }
        Self(activity)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(a) = &self.0 {
            a.touch();
            a.calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for OpenCallsService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let activity = req
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.addr)
            .and_then(|addr| self.conns.activity(&addr));
        let guard = CallGuard::new(activity);
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| CallBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that holds its call open (see [`CallGuard`]).
pub struct CallBody<B> {
    inner: B,
    _guard: CallGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for CallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The first and the longest pause after an accept error.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// An accepted connection.
pub struct Conn {
    io: Io,
    peer: Peer,
    idle: Idle,
    slot: Slot,
}

impl Conn {
    /// Bytes moved: the connection is not idle.
    fn touch(&mut self) {
        self.idle.touch();
        self.slot.activity.touch();
    }
}

/// The idle timer of a connection: it fires once no byte has moved either
/// way for `timeout`. The connection's reads always have one pending (the
/// HTTP/2 server waits for frames), which is where the timer is polled.
struct Idle {
    timeout: Duration,
    last: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Bytes moved: the connection is not idle. (The timer is moved on
    /// only when it fires, not at every read and write.)
    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the connection has been idle for `timeout`; if not, the
    /// timer is set for when it would be.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last + self.timeout;
            if due <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(due.into());
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        // Chosen to make room: closed as an idle one is.
        me.slot.activity.waker.register(cx.waker());
        if me.slot.activity.closing.load(Ordering::Acquire) {
            tracing::debug!("closing the longest-idle connection to make room");
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed to make room for another",
            )));
        }
        let before = buf.filled().len();
        let read = match &mut me.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => me.touch(),
            Poll::Pending if me.idle.poll_expired(cx) => {
                tracing::debug!(
                    "closing a connection idle for limits.idle_connection_timeout_seconds"
                );
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle past limits.idle_connection_timeout_seconds",
                )));
            }
            _ => {}
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let written = match &mut me.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        };
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let written = match &mut me.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        };
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            me.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// How many of the longest-idle connections one accept that failed for
/// want of descriptors closes.
const CLOSE_FOR_DESCRIPTORS: usize = 8;
/// After closing connections for descriptors, how long before accepting
/// again (their tasks close them meanwhile).
const CLOSE_PAUSE: Duration = Duration::from_millis(5);

/// The connections accepted on `listener`, TLS when `tls` is given (else
/// plaintext, served on loopback only: the local caller), counted in
/// `conns`. Accepting stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<(Arc<ServerTls>, Listener)>,
    conns: Arc<Connections>,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, conns, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(Arc<ServerTls>, Listener)>,
    counts: Arc<Connections>,
    tx: mpsc::Sender<std::io::Result<Conn>>,
) {
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if out_of_resources(&e) => {
                if let Some(unlogged) = rate_limited(&counts.out_of_resources, 1) {
                    tracing::error!(
                        error = %e,
                        unlogged,
                        "cannot accept connections: out of file descriptors or memory; closing the longest-idle connections, else backing off (further failures within a minute are counted, not logged)"
                    );
                }
                // Out of descriptors, the longest-idle connections make
                // room; with none idle (or out of memory), back off.
                let closed = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                    && counts.close_for_descriptors(CLOSE_FOR_DESCRIPTORS) > 0;
                let pause = match backoff {
                    _ if closed => CLOSE_PAUSE,
                    None => ACCEPT_BACKOFF.0,
                    Some(p) => (p * 2).min(ACCEPT_BACKOFF.1),
                };
                if !closed {
                    backoff = Some(pause);
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
            // The client gave up before the accept (ECONNABORTED and the
            // like): nothing to do.
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if backoff.take().is_some() {
            tracing::info!("accepting connections again after backing off");
        }
        // Past a limit the connection is closed at once: it never holds a
        // descriptor or a task for longer than this.
        let slot = match counts.take(addr) {
            Ok(slot) => slot,
            Err(limit) => {
                counts.refused(addr.ip(), limit);
                drop(tcp);
                continue;
            }
        };
        // Without TCP_NODELAY, small responses wait out Nagle's algorithm
        // against the client's delayed ACKs: tens of milliseconds per call.
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let conn = Conn {
                    io: Io::Plain(tcp),
                    peer: Peer {
                        addr: Some(addr),
                        identity: PeerIdentity::Local,
                    },
                    idle: Idle::new(counts.limits.idle_timeout),
                    slot,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Some((tls, which)) => {
                let (tls, tx) = (tls.clone(), tx.clone());
                // Bounded: one task per counted connection.
                tokio::spawn(handshake((tls, *which), tcp, addr, slot, counts.limits, tx));
            }
        }
    }
}

async fn handshake(
    (tls, which): (Arc<ServerTls>, Listener),
    tcp: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    limits: ConnLimits,
    tx: mpsc::Sender<std::io::Result<Conn>>,
) {
    match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp, which)).await {
        Ok(Ok((stream, identity))) => {
            let conn = Conn {
                io: Io::Tls(Box::new(stream)),
                peer: Peer {
                    addr: Some(addr),
                    identity,
                },
                idle: Idle::new(limits.idle_timeout),
                slot,
            };
            let _ = tx.send(Ok(conn)).await;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!("tls handshake timed out"),
    }
}

/// Accept errors that mean the process or system is out of descriptors or
/// memory: retrying at once cannot succeed.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
