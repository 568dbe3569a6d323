//! A TCP proxy in front of PostgreSQL for the tests of what a replica
//! does when its database goes away: deaf to notifications on one
//! connection ([`PgProxy::mute`]), or unreachable altogether
//! ([`PgProxy::cut`] until [`PgProxy::restore`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
    /// True while the database is unreachable.
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let muted = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicU64::new(0));
        let (down, _) = watch::channel(false);
        let (m, sw, d) = (muted.clone(), swallowed.clone(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Cut: the connection closes before a byte is exchanged.
                if *d.borrow() {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (m, sw) = (m.clone(), sw.clone());
                let mut down = d.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        () = relay(client, server, m, sw) => {}
                        _ = down.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self {
            addr,
            muted,
            swallowed,
            down,
            task,
        }
    }

    /// The database becomes unreachable: every connection through the
    /// proxy closes, and new ones close as soon as they are accepted.
    pub fn cut(&self) {
        self.down.send_replace(true);
    }

    /// The database is reachable again (for new connections).
    pub fn restore(&self) {
        self.down.send_replace(false);
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
