//! The accept loop: TCP connections, their TLS handshakes, and the [`Peer`]
//! each connection carries into its requests.
//!
//! Connections are counted in total and per peer address
//! (`limits.max_connections`, `limits.max_connections_per_peer`); one past
//! a limit is closed as soon as it is accepted, and refusals are logged at
//! most once a minute (with a count of the others). Handshakes run in their own
//! tasks (one per counted connection) with a deadline, so a client that
//! connects and says nothing holds up no one. Running out of file
//! descriptors pauses accepting with a growing backoff and is logged once
//! per episode, never a busy loop.
//!
//! Accepted sockets get TCP_NODELAY. A connection on which no byte moves
//! either way for `limits.idle_connection_timeout_seconds` is closed: its
//! reads fail, the timer being polled with the read HTTP/2 always has
//! pending.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::tls::ServerTls;
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

/// The open connections, counted in total and per peer address.
#[derive(Debug)]
struct Counts {
    limits: ConnLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// When a refusal was last logged, and how many went unlogged since.
    refusals: Mutex<(Option<Instant>, u64)>,
}

/// One counted connection; uncounted when dropped (the connection closed).
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Counts {
    /// A slot for a connection from `ip`, or why there is none.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.limits.total {
            return Err("limits.max_connections");
        }
        let of_peer = open.1.entry(ip).or_insert(0);
        if *of_peer >= self.limits.per_peer {
            return Err("limits.max_connections_per_peer");
        }
        *of_peer += 1;
        open.0 += 1;
        Ok(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// At most one log line per this interval for refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Counts {
    /// Logs a refused connection: the first at once, then at most one line
    /// per [`REFUSAL_LOG_INTERVAL`] counting those not logged, so that a
    /// flood neither floods the log nor goes unseen.
    fn refused(&self, ip: IpAddr, limit: &'static str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match refusals.0 {
            Some(last) if now.duration_since(last) < REFUSAL_LOG_INTERVAL => refusals.1 += 1,
            _ => {
                tracing::warn!(
                    peer = %ip,
                    limit,
                    unlogged = refusals.1,
                    "connection refused: limit reached (further refusals within a minute are counted, not logged)"
                );
                *refusals = (Some(now), 0);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}
/// The first and the longest pause after an accept error.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// An accepted connection.
pub struct Conn {
    io: Io,
    peer: Peer,
    idle: Idle,
    _slot: Slot,
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
        let before = buf.filled().len();
        let read = match &mut me.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => me.idle.touch(),
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
            me.idle.touch();
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
            me.idle.touch();
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

/// The connections accepted on `listener`, TLS when `tls` is given (else
/// plaintext, served on loopback only: the local caller). Accepting stops
/// when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ConnLimits,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let counts = Arc::new(Counts {
        limits,
        open: Mutex::new((0, HashMap::new())),
        refusals: Mutex::new((None, 0)),
    });
    tokio::spawn(accept_loop(listener, tls, counts, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    counts: Arc<Counts>,
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
                let pause = match backoff {
                    None => {
                        tracing::error!(
                            error = %e,
                            "cannot accept connections: out of file descriptors or memory; backing off"
                        );
                        ACCEPT_BACKOFF.0
                    }
                    Some(p) => (p * 2).min(ACCEPT_BACKOFF.1),
                };
                backoff = Some(pause);
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
            tracing::info!("accepting connections again");
        }
        // Past a limit the connection is closed at once: it never holds a
        // descriptor or a task for longer than this.
        let slot = match counts.take(addr.ip()) {
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
                    _slot: slot,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, tx) = (tls.clone(), tx.clone());
                // Bounded: one task per counted connection.
                tokio::spawn(handshake(tls, tcp, addr, slot, counts.limits, tx));
            }
        }
    }
}

async fn handshake(
    tls: Arc<ServerTls>,
    tcp: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    limits: ConnLimits,
    tx: mpsc::Sender<std::io::Result<Conn>>,
) {
    match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
        Ok(Ok((stream, identity))) => {
            let conn = Conn {
                io: Io::Tls(Box::new(stream)),
                peer: Peer {
                    addr: Some(addr),
                    identity,
                },
                idle: Idle::new(limits.idle_timeout),
                _slot: slot,
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
