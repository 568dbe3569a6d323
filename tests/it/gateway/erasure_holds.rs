//! Erasure that holds: no copy of a destroyed key on disk, streams that
//! stop at the erasure, and one garbage-collection run however often a
//! deletion service retries.

use sealgate::api::pb;
use sealgate::crypto::Pseudonym;
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::roles::*;
use tonic::Code;

use super::*;

backend_tests!(
    destroyed_keys_leave_no_copy_in_any_file,
    paused_reader_stops_at_erasure,
    upload_in_flight_stops_at_erasure,
    concurrent_erasures_run_gc_once_with_an_exact_count,
);

/// The wrapped user keys of `user` as the key store holds them.
async fn wrapped_keys(gw: &TestGateway, user: &str) -> Vec<Vec<u8>> {
    let p = Pseudonym::from_hex(&pseudonym(gw, user).await).unwrap();
    let store = SqliteKeyStore::open(&crate::support::keys_db::file(&gw.data_dir))
        .await
        .expect("open key store beside the gateway");
    let keys = store.user_keys(&p).await.unwrap();
    store.close().await;
    keys.into_iter().map(|k| k.wrapped).collect()
}

/// Files under the data directory holding any of `needles`.
fn files_holding(gw: &TestGateway, needles: &[Vec<u8>]) -> Vec<String> {
    read_tree(&gw.data_dir)
        .into_iter()
        .filter(|(_, bytes)| {
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .map(|(name, _)| name)
        .collect()
}

async fn destroyed_keys_leave_no_copy_in_any_file() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        put_item(&mut c, u, "moments", "note", &data(300, i as u64))
            .await
            .expect("put item");
    }
    let victim = "user-7";
    let destroyed = wrapped_keys(&gw, victim).await;
    assert_eq!(destroyed.len(), 1);
    assert_eq!(destroyed[0].len(), 60, "a wrapped user key is 60 bytes");
    // The test would be worthless if the bytes were not there to begin with.
    assert!(
        files_holding(&gw, &destroyed)
            .iter()
            .any(|f| f.starts_with("keys.db")),
        "the live key store holds the wrapped key before erasure"
    );
    let survivor = wrapped_keys(&gw, "user-8").await;

    try_erase(&gw, victim).await.expect("EraseUser");
    assert_eq!(
        files_holding(&gw, &destroyed),
        Vec::<String>::new(),
        "after EraseUser returned"
    );
    assert!(
        !files_holding(&gw, &survivor).is_empty(),
        "others keep keys"
    );

    let gw = gw.restart().await;
    assert_eq!(
        files_holding(&gw, &destroyed),
        Vec::<String>::new(),
        "after a restart"
    );
    expect_items_erased(
        get_items(&mut gw.content().await, victim, "moments", &["note"]).await,
        "GetItems",
    );
    // The key store's files are private to the gateway's user.
    use std::os::unix::fs::PermissionsExt;
    for f in files_under(&gw.data_dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("keys.db") || name == "keyring" {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
}

async fn paused_reader_stops_at_erasure() {
    let gw = TestGateway::start().await;
    let user = "paused-reader";
    let body = data(30 << 20, 3);
    put(
        &mut gw.content().await,
        user,
        "channels",
        "video",
        &body,
        1 << 20,
    )
    .await
    .expect("put");
    // A client with small, known HTTP/2 windows: what it has not read stays
    // in the server, where the erasure can stop it.
    let window = 64 * 1024;
    let (mut stream, mut got) =
        paused_download(&gw, user, "channels", "video", window, 1 << 20).await;
    let before = got.len();
    try_erase(&gw, user).await.expect("EraseUser");
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => match m.part {
                Some(pb::get_object_response::Part::Data(d)) => got.extend_from_slice(&d),
                other => panic!("unexpected {other:?}"),
            },
            Ok(None) => panic!("the stream completed after the erasure"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert_eq!(reason(&end).as_deref(), Some("USER_ERASED"));
    // What arrives after the erasure is only what had already left the
    // gateway's hands before it: the client's window, and what the HTTP/2
    // transport had taken (hyper's send buffer, 400 KiB per stream, plus the
    // one message that crossed it).
    let after = got.len() - before;
    let h2_send_buffer = 400 * 1024;
    assert!(
        after <= window as usize + h2_send_buffer + sealgate::content::MAX_SEND_PIECE,
        "{after} bytes arrived after the erasure"
    );
    assert_eq!(
        &got[..],
        &body[..got.len()],
        "bytes before are the object's"
    );
}

async fn upload_in_flight_stops_at_erasure() {
    let gw = TestGateway::start().await;
    let user = "uploader";
    put_item(&mut gw.content().await, user, "moments", "first", b"x")
        .await
        .expect("put");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut client = gw.content().await;
    let call = tokio::spawn(async move {
        client
            .put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header_msg(user, "channels", "upload"))
        .await
        .unwrap();
    tx.send(data_msg(data(1 << 20, 1))).await.unwrap();
    // The first piece has been taken once the channel has room again.
    tx.send(data_msg(data(1 << 20, 2))).await.unwrap();
    try_erase(&gw, user).await.expect("EraseUser");
    // The next piece after the erasure ends the upload.
    let _ = tx.send(data_msg(data(1 << 20, 3))).await;
    let _ = tx.send(data_msg(data(1 << 20, 4))).await;
    let status = call.await.unwrap().expect_err("upload after erasure");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("USER_ERASED"));
    drop(tx);
    let p = pseudonym(&gw, user).await;
    assert!(
        gw.user_objects(&p)
            .await
            .iter()
            .all(|name| !name.contains("upload")),
        "nothing of the upload is stored"
    );
}

async fn concurrent_erasures_run_gc_once_with_an_exact_count() {
    let gw = TestGateway::start().await;
    let user = "retried";
    let mut c = gw.content().await;
    for i in 0..7 {
        put_item(&mut c, user, "moments", &format!("m{i}"), b"m")
            .await
            .expect("put");
    }
    for i in 0..5 {
        put_item(&mut c, user, "channels", &format!("c{i}"), b"c")
            .await
            .expect("put");
    }
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let endpoint = gw.endpoint();
            tokio::spawn(async move {
                pb::erasure_service_client::ErasureServiceClient::connect(endpoint)
                    .await
                    .unwrap()
                    .erase_user(pb::EraseUserRequest {
                        user_id: "retried".into(),
                        after_seconds: 0,
                    })
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for call in calls {
        receipts.push(call.await.unwrap().expect("EraseUser"));
    }
    assert!(
        receipts.windows(2).all(|w| w[0] == w[1]),
        "one receipt for every call"
    );
    let status = wait_gc_done(&gw, user).await;
    assert_eq!(status.gc.unwrap().done, 12, "each object counted once");
    // Retries after the job finished change nothing.
    for _ in 0..3 {
        try_erase(&gw, user).await.expect("EraseUser again");
    }
    assert_eq!(erasure_status(&gw, user).await.gc.unwrap().done, 12);
    assert!(gw
        .user_objects(&pseudonym(&gw, user).await)
        .await
        .is_empty());
}
