//! Two gateway replicas in one test, as a scaled-out deployment runs them:
//! each with its own data directory (holding only the keyring, copied), one
//! PostgreSQL key store and one S3 bucket (moto) shared. Replica A reaches
//! PostgreSQL through a proxy that can silently drop the notifications it
//! listens for.

use std::time::{Duration, Instant};

use sealgate::api::pb;
use sealgate::config::KeyStoreBackend;
use tonic::Code;

use crate::support::gateway::{
    config, data, data_msg, finish_msg, get, get_items, header_msg, paused_download, pseudonym,
    put, put_item, reason, try_erase, Backend, BackendKind, TestGateway,
};
use crate::support::pgenv;
use crate::support::proxy::PgProxy;

/// Two replicas over one fresh PostgreSQL database and one fresh bucket,
/// with user keys cached for `ttl` seconds. Their data directories are
/// held by the returned guards.
struct Replicas {
    a: TestGateway,
    b: TestGateway,
    /// Between replica A and PostgreSQL.
    proxy: PgProxy,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Replicas {
    async fn start(ttl: u64) -> Self {
        let backend = Backend::create(BackendKind::S3).await;
        let url = pgenv::fresh_database().await;
        let (head, rest) = url.split_once('@').expect("user@host in the URL");
        let (server, db) = rest.split_once('/').expect("/database in the URL");
        let proxy = PgProxy::start(server.parse().expect("host:port")).await;
        let replica = |dir: &std::path::Path, url: String| {
            let mut c = config(dir);
            backend.configure(&mut c);
            c.keystore.backend = KeyStoreBackend::Postgres;
            c.keystore.url = Some(url);
            c.cache.ttl_seconds = ttl;
            c
        };
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a =
            TestGateway::start_config(replica(dir_a.path(), format!("{head}@{}/{db}", proxy.addr)))
                .await;
        // A replica's data directory holds the deployment's keyring, the
        // same in every replica (with KMS, nothing).
        crate::support::eventually(
            "replica A made the keyring",
            Duration::from_secs(10),
            || async { dir_a.path().join("keyring").exists() },
        )
        .await;
        std::fs::copy(dir_a.path().join("keyring"), dir_b.path().join("keyring")).unwrap();
        let b = TestGateway::start_config(replica(dir_b.path(), url.clone())).await;
        Self {
            a,
            b,
            proxy,
            _dirs: (dir_a, dir_b),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_reads_through_the_other() {
    let r = Replicas::start(60).await;
    let body = data(3 << 20, 7);
    put(
        &mut r.a.content().await,
        "ann",
        "moments",
        "photo",
        &body,
        1 << 20,
    )
    .await
    .expect("put through A");
    let (_, got) = get(&mut r.b.content().await, "ann", "moments", "photo", None)
        .await
        .expect("get through B");
    assert!(got == body, "B reads what A wrote");
    put_item(&mut r.b.content().await, "ann", "moments", "c1", b"nice")
        .await
        .expect("item through B");
    let items = get_items(&mut r.a.content().await, "ann", "moments", &["c1"])
        .await
        .expect("items through A");
    match &items[0].result {
        Some(pb::item_result::Result::Item(i)) => assert_eq!(&i.content[..], b"nice"),
        other => panic!("the item through A: {other:?}"),
    }
}

/// Reads `user`'s photo through `gw` until it is refused as erased, and
/// returns when the refused read was asked. Panics if a read asked at
/// `deadline` or later is not refused. (The time a read is asked is what
/// counts: one that is slow to answer under load was asked earlier.)
async fn refused_by(gw: &TestGateway, user: &str, deadline: Instant) -> Instant {
    let started = Instant::now();
    let mut c = gw.content().await;
    loop {
        let asked = Instant::now();
        let got = get(&mut c, user, "moments", "photo", None).await;
        if let Err(s) = &got {
            if s.code() == Code::FailedPrecondition && reason(s).as_deref() == Some("USER_ERASED") {
                return asked;
            }
        }
        assert!(
            asked < deadline,
            "{user} not refused as erased by a read asked {:?} after the erasure: {got:?}",
            asked - started
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An erasure through B is refused by A before A's cached key of the user
/// could have expired (`cache.ttl_seconds` = 60), so by the notification:
/// ordered against the cache's lifetime, not against a wall-clock bound a
/// loaded machine might miss. The time it took is printed (under a second
/// on an idle machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_through_one_replica_is_refused_by_the_other_before_its_cache_expires() {
    const TTL: Duration = Duration::from_secs(60);
    let r = Replicas::start(TTL.as_secs()).await;
    let mut a = r.a.content().await;
    // A caches bob's key from here on: it cannot expire before this + TTL.
    let cached_from = Instant::now();
    put(&mut a, "bob", "moments", "photo", &data(100_000, 1), 50_000)
        .await
        .expect("put");
    let video = data(30 << 20, 2);
    put(&mut a, "bob", "channels", "video", &video, 1 << 20)
        .await
        .expect("put");
    // A has bob's key cached, and a download open that it holds back.
    get(&mut a, "bob", "moments", "photo", None)
        .await
        .expect("get through A");
    let (mut stream, got) =
        paused_download(&r.a, "bob", "channels", "video", 64 * 1024, 1 << 20).await;
    assert_eq!(&got[..], &video[..got.len()]);

    try_erase(&r.b, "bob").await.expect("EraseUser through B");
    let erased = Instant::now();
    let expiry = cached_from + TTL;
    let refused = refused_by(&r.a, "bob", expiry).await;
    assert!(
        refused < expiry,
        "refused only by a read asked once the cached key could have expired, {:?} after the erasure",
        refused - erased
    );
    eprintln!(
        "replica A refused the erased user {:?} after the erasure returned",
        refused.saturating_duration_since(erased)
    );
    // The open download ends as erased too, before its end.
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the download on A completed after the erasure on B"),
            Err(status) => break status,
        }
    };
    assert_eq!(reason(&end).as_deref(), Some("USER_ERASED"), "{end:?}");
}

/// The notifications are lost (A's listening connection hears nothing and
/// notices nothing): A still refuses the erased user once its cached key
/// expires, within `cache.ttl_seconds`. Ordered against the cache: the key
/// was cached before the last read below returned, so every read asked
/// `cache.ttl_seconds` (and a margin for the cache's own clock) after that
/// finds it expired, however loaded the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notifications_lost_an_erasure_is_refused_within_the_cache_lifetime() {
    const TTL: u64 = 2;
    let r = Replicas::start(TTL).await;
    let mut a = r.a.content().await;
    put(&mut a, "cid", "moments", "photo", &data(10_000, 3), 5_000)
        .await
        .expect("put");
    get(&mut a, "cid", "moments", "photo", None)
        .await
        .expect("get");
    let cached_by = Instant::now();
    r.proxy.mute();
    try_erase(&r.b, "cid").await.expect("EraseUser through B");
    refused_by(
        &r.a,
        "cid",
        cached_by + Duration::from_secs(TTL) + Duration::from_millis(900),
    )
    .await;
    assert!(
        r.proxy.swallowed() > 0,
        "the erasure's notification was sent, and lost on the way to A"
    );
}

/// The pace of the slow clients below: a reader that sleeps after each
/// message for as long as the message takes at this rate (so it never
/// reads faster, and never catches up after a pause), a writer likewise.
const PACE_BYTES_PER_SEC: usize = 2 << 20;

/// How long `bytes` take at [`PACE_BYTES_PER_SEC`].
fn pace(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / PACE_BYTES_PER_SEC as f64)
}

/// What a paced client moves in `ttl`: with one check of the store due at
/// most `ttl` after the erasure committed (so before its receipt + `ttl`),
/// the bytes that move after the receipt are what the client moves at its
/// pace in `ttl`, one more message (it moves a message, then sleeps), and
/// `in_flight`, what had passed the check and was still on the way.
fn paced_bound(ttl: Duration, in_flight: usize) -> usize {
    (PACE_BYTES_PER_SEC as f64 * ttl.as_secs_f64()) as usize
        + sealgate::content::MAX_SEND_PIECE
        + in_flight
}

/// The notifications are lost and a slow download is open on A: it ends
/// USER_ERASED once A's check of the key store is due, at most
/// `cache.ttl_seconds` after the erasure, so the client gets no more after
/// the receipt than it reads in that time at its pace (plus what was in
/// flight); without the check it read on to the end. The bytes and the
/// time are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notifications_lost_an_open_download_ends_within_the_cache_lifetime() {
    const TTL: Duration = Duration::from_secs(2);
    let r = Replicas::start(TTL.as_secs()).await;
    let video = data(16 << 20, 5);
    put(
        &mut r.a.content().await,
        "eve",
        "channels",
        "video",
        &video,
        1 << 20,
    )
    .await
    .expect("put");
    let window = 64 * 1024;
    let (mut stream, mut got) =
        paused_download(&r.a, "eve", "channels", "video", window, 1 << 20).await;
    r.proxy.mute();
    try_erase(&r.b, "eve").await.expect("EraseUser through B");
    let receipt = Instant::now();
    let before = got.len();
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => match m.part {
                Some(pb::get_object_response::Part::Data(d)) => {
                    got.extend_from_slice(&d);
                    tokio::time::sleep(pace(d.len())).await;
                }
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => panic!(
                "the download on A completed, {} bytes and {:?} after the erasure's receipt",
                got.len() - before,
                receipt.elapsed()
            ),
            Err(status) => break status,
        }
    };
    let (after, took) = (got.len() - before, receipt.elapsed());
    eprintln!(
        "download on A: {after} bytes delivered after the erasure's receipt, ended {took:?} after it"
    );
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert_eq!(reason(&end).as_deref(), Some("USER_ERASED"), "{end:?}");
    // On the way: the client's window, hyper's send buffer (400 KiB per
    // stream) and the message that crossed it.
    let bound = paced_bound(
        TTL,
        window as usize + 400 * 1024 + sealgate::content::MAX_SEND_PIECE,
    );
    assert!(
        after <= bound,
        "{after} bytes arrived after the erasure's receipt, over {bound}"
    );
    assert_eq!(&got[..], &video[..got.len()]);
    crate::support::eventually(
        "the erasure's notice was lost on the way to A",
        Duration::from_secs(10),
        || async { r.proxy.swallowed() > 0 },
    )
    .await;
}

/// The notifications are lost and a slow upload is in progress on A: it is
/// refused USER_ERASED once A's check of the key store is due, at most
/// `cache.ttl_seconds` after the erasure, having taken no more after the
/// receipt than the client sends in that time at its pace (plus what the
/// gateway's HTTP/2 window lets it have in flight), and nothing of it is
/// stored; without the check it took the whole body before the check
/// after the commit refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notifications_lost_an_upload_in_progress_is_refused_within_the_cache_lifetime() {
    const TTL: Duration = Duration::from_secs(2);
    /// The gateway's HTTP/2 stream window (src/server/grpc.rs).
    const SERVER_STREAM_WINDOW: usize = 2 << 20;
    const PIECE: usize = 256 * 1024;
    let r = Replicas::start(TTL.as_secs()).await;
    let mut a = r.a.content().await;
    // A has fox's key cached before the upload begins.
    put_item(&mut a, "fox", "moments", "first", b"x")
        .await
        .expect("put");
    let body = data(16 << 20, 6);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut call = tokio::spawn(async move {
        a.put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header_msg("fox", "channels", "upload"))
        .await
        .unwrap();
    let mut pieces = body.chunks(PIECE);
    for piece in pieces.by_ref().take(4) {
        tx.send(data_msg(piece.to_vec())).await.unwrap();
        tokio::time::sleep(pace(piece.len())).await;
    }
    r.proxy.mute();
    try_erase(&r.b, "fox").await.expect("EraseUser through B");
    let receipt = Instant::now();
    let mut after = 0;
    let ended = loop {
        let Some(piece) = pieces.next() else {
            break None;
        };
        let sent = &mut after;
        tokio::select! {
            ended = &mut call => break Some(ended),
            () = async {
                if tx.send(data_msg(piece.to_vec())).await.is_ok() {
                    *sent += piece.len();
                }
                tokio::time::sleep(pace(piece.len())).await;
            } => {}
        }
    };
    let ended = match ended {
        Some(ended) => {
            drop(tx);
            ended
        }
        // Every byte went: finish the upload (the check after its commit
        // refuses it then).
        None => {
            let _ = tx.send(finish_msg(Some(&body))).await;
            drop(tx);
            call.await
        }
    };
    let took = receipt.elapsed();
    eprintln!(
        "upload on A: {after} bytes sent after the erasure's receipt, refused {took:?} after it"
    );
    let status = ended.unwrap().expect_err("the upload is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        reason(&status).as_deref(),
        Some("USER_ERASED"),
        "{status:?}"
    );
    // On the way: the gateway's stream window, and the messages in the
    // client's channel and encoder.
    let bound = paced_bound(TTL, SERVER_STREAM_WINDOW + 2 * PIECE);
    assert!(
        after <= bound,
        "{after} bytes sent after the erasure's receipt, over {bound}"
    );
    let p = pseudonym(&r.b, "fox").await;
    assert!(
        r.a.user_objects(&p)
            .await
            .iter()
            .all(|name| !name.ends_with("/upload")),
        "nothing of the upload is stored"
    );
    assert_eq!(r.a.leftovers().await, 0, "no unfinished upload is left");
    assert!(
        r.proxy.swallowed() > 0,
        "the erasure's notice was lost on the way to A"
    );
}

/// A write that commits on one replica after the user was erased through
/// the other is undone, even when the writer's replica heard nothing: the
/// check after the commit asks the key store, not the replica's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_committing_after_an_erasure_elsewhere_is_undone() {
    let r = Replicas::start(60).await;
    let mut a = r.a.content().await;
    put(&mut a, "dee", "moments", "photo", b"first", 5)
        .await
        .expect("put");
    r.proxy.mute();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let call = tokio::spawn(async move {
        a.put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let body = data(1 << 20, 4);
    tx.send(header_msg("dee", "channels", "late"))
        .await
        .unwrap();
    tx.send(data_msg(body.clone())).await.unwrap();
    try_erase(&r.b, "dee").await.expect("EraseUser through B");
    tx.send(crate::support::gateway::finish_msg(Some(&body)))
        .await
        .unwrap();
    drop(tx);
    let status = call.await.unwrap().expect_err("the late write is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("USER_ERASED"));
    let p = pseudonym(&r.b, "dee").await;
    crate::support::gateway::wait_gc_done(&r.b, "dee").await;
    assert!(
        r.b.user_objects(&p).await.is_empty(),
        "nothing of the erased user is stored"
    );
}

/// A KEK rotation started through A runs once, seen the same from B, and
/// both replicas read every object afterwards.
/// How many jobs of `kind` a replica lists.
async fn jobs_of_kind(gw: &TestGateway, kind: &str) -> usize {
    gw.admin()
        .await
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner()
        .jobs
        .iter()
        .filter(|j| j.kind == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_runs_once_for_both_replicas() {
    let r = Replicas::start(60).await;
    let mut a = r.a.content().await;
    for u in 0..20 {
        put(
            &mut a,
            &format!("u{u}"),
            "moments",
            "pic",
            &data(2_000, u),
            1_000,
        )
        .await
        .expect("put");
    }
    let id =
        r.a.admin()
            .await
            .rotate_kek(pb::RotateKekRequest {
                shards: vec![],
                all: true,
            })
            .await
            .expect("RotateKek")
            .into_inner()
            .job_id;
    let updates = crate::support::gateway::watch_all(&r.b, &id).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!((last.done, last.total), (20, 20), "{updates:?}");
    for gw in [&r.a, &r.b] {
        assert_eq!(jobs_of_kind(gw, "rotate_kek").await, 1);
        let mut c = gw.content().await;
        for u in 0..20 {
            let (_, got) = get(&mut c, &format!("u{u}"), "moments", "pic", None)
                .await
                .expect("readable after the rotation");
            assert_eq!(got, data(2_000, u));
        }
    }
}

/// An erasure's garbage collection is one job that one replica leases and
/// runs: its count is the user's objects, and the bucket holds none of
/// them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasures_gc_runs_once_for_both_replicas() {
    let r = Replicas::start(60).await;
    let mut b = r.b.content().await;
    for i in 0..8 {
        put(
            &mut b,
            "gone",
            "moments",
            &format!("o{i}"),
            &data(1_000, i),
            500,
        )
        .await
        .expect("put");
    }
    assert_eq!(r.a.stored_keys().await.len(), 8);
    let receipt = try_erase(&r.b, "gone").await.expect("EraseUser");
    let updates = crate::support::gateway::watch_all(&r.a, &receipt.gc_job_id).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!((last.done, last.total), (8, 8), "{updates:?}");
    for gw in [&r.a, &r.b] {
        assert_eq!(jobs_of_kind(gw, "erasure_gc").await, 1);
    }
    assert_eq!(r.b.stored_keys().await, Vec::<String>::new());
}
