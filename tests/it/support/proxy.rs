//! Loopback TCP proxies between the gateway and a server, for the tests
//! of what it does when the server goes away: [`FaultProxy`] goes down
//! altogether and comes back (S3, PostgreSQL, KMS); [`PgProxy`] goes deaf
//! on PostgreSQL's notification connection alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::launch::LoopbackServer;

/// A loopback TCP proxy that can go down (dropping every connection and
/// refusing new ones) and come back, while the server behind it keeps its
/// state; or go silent (a network dropping packets: connections stay open
/// and new ones are accepted, but nothing is delivered until it thaws); or
/// go down by itself once it has passed a number of the server's bytes.
pub struct FaultProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    frozen: watch::Sender<bool>,
    /// Bytes relayed from clients to the server.
    upstream: Arc<AtomicU64>,
    /// Bytes of the server's still to relay before going down by itself
    /// (`u64::MAX`: no such limit).
    downstream_left: Arc<AtomicU64>,
    _server: LoopbackServer,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let (up, rx) = watch::channel(true);
        let (frozen, frozen_rx) = watch::channel(false);
        let upstream = Arc::new(AtomicU64::new(0));
        let counted = upstream.clone();
        let downstream_left = Arc::new(AtomicU64::new(u64::MAX));
        let (left, down) = (downstream_left.clone(), up.clone());
        let server = LoopbackServer::start(|listener| async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    drop(client); // down: refuse
                    continue;
                }
                let mut rx = rx.clone();
                let frozen = frozen_rx.clone();
                let counted = counted.clone();
                let limit = (left.clone(), down.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_rx, client_tx) = client.into_split();
                    let (server_rx, server_tx) = server.into_split();
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                pipe(client_rx, server_tx, frozen.clone(), Some(counted), None),
                                pipe(server_rx, client_tx, frozen, None, Some(limit)),
                            )
                        } => {}
                        _ = rx.wait_for(|up| !*up) => {} // down: cut the connection
                    }
                });
            }
        })
        .await;
        Self {
            addr: server.addr,
            up,
            frozen,
            upstream,
            downstream_left,
            _server: server,
        }
    }

    /// From now on, goes down by itself (as [`FaultProxy::set_up`] with
    /// `false`) the moment it has relayed `bytes` more of the server's
    /// bytes: a connection cut at a point the test chose, whatever the
    /// timing. `set_up(true)` brings it back, without the limit.
    pub fn go_down_after(&self, bytes: u64) {
        self.downstream_left.store(bytes, Ordering::SeqCst);
    }

    /// Bytes relayed so far from clients to the server.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream.load(Ordering::SeqCst)
    }

    /// Silent (`true`): from now on nothing is delivered either way, on
    /// open connections or new ones, until it thaws (`false`), when what
    /// was held back is delivered.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_up(&self, up: bool) {
        if up {
            self.downstream_left.store(u64::MAX, Ordering::SeqCst);
        }
        self.up.send_replace(up);
    }
}

/// Relays `from` to `to`, holding each read back while the link is
/// frozen, adding what it relayed to `counted`; with `limit` (bytes left,
/// the proxy's state), it relays no more than the bytes left and then
/// takes the proxy down.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    counted: Option<Arc<AtomicU64>>,
    limit: Option<(Arc<AtomicU64>, watch::Sender<bool>)>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // Passed on, as the other side would see it without us.
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        // With a limit, no more than the bytes left, then down.
        let mut n = n;
        let mut cut = false;
        if let Some((left, _)) = &limit {
            // Unchanged while there is no limit (u64::MAX).
            let was = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                (l != u64::MAX).then(|| l.saturating_sub(n as u64))
            });
            if let Ok(was) = was {
                if was <= n as u64 {
                    n = usize::try_from(was).unwrap_or(n);
                    cut = true;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if cut {
            if let Some((_, up)) = &limit {
                up.send_replace(false);
            }
            return;
        }
        if let Some(c) = &counted {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
}

/// A TCP proxy in front of PostgreSQL that can go deaf on the connection
/// that listens for notifications: from `mute()` on, whatever the server
/// sends on a connection that sent `LISTEN` is swallowed, and the
/// connection stays open, so the listener neither hears nor notices
/// anything (a middlebox dropping one flow). Queries on other connections
/// pass untouched.
pub struct PgProxy {
    pub addr: SocketAddr,
    muted: Arc<AtomicBool>,
    swallowed: Arc<AtomicU64>,
    _server: LoopbackServer,
}

impl PgProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let muted = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicU64::new(0));
        let (m, sw) = (muted.clone(), swallowed.clone());
        let server = LoopbackServer::start(|listener| async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (m, sw) = (m.clone(), sw.clone());
                tokio::spawn(relay(client, server, m, sw));
            }
        })
        .await;
        Self {
            addr: server.addr,
            muted,
            swallowed,
            _server: server,
        }
    }

    /// From now on, the listening connections hear nothing.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    /// Bytes the server sent to a muted listener and the proxy dropped.
    pub fn swallowed(&self) -> u64 {
        self.swallowed.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    muted: Arc<AtomicBool>,
    swallowed: Arc<AtomicU64>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let listens = Arc::new(AtomicBool::new(false));
    let l = listens.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if buf[..n].windows(6).any(|w| w == b"LISTEN") {
                l.store(true, Ordering::SeqCst);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if listens.load(Ordering::SeqCst) && muted.load(Ordering::SeqCst) {
                swallowed.fetch_add(n as u64, Ordering::SeqCst);
                continue;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}
