//! Crypto-shredding: after EraseUser nothing of the user is readable or
//! writable, the receipt is stable, garbage collection deletes the objects,
//! and all of it survives restarts, including an unfinished GC job.

use sealgate::api::pb;
use sealgate::keys::store::JobState;
use tonic::Code;

use super::*;

backend_tests!(
    erase_user_end_to_end,
    get_erasure_of_a_user_never_erased_is_not_found,
    erasing_a_user_without_data_is_recorded,
    unfinished_gc_job_resumes_after_restart,
);
pg_tests!(
    erase_user_end_to_end,
    erasing_a_user_without_data_is_recorded,
    unfinished_gc_job_resumes_after_restart,
);

async fn erase(gw: &TestGateway, user: &str) -> pb::EraseReceipt {
    try_erase(gw, user).await.expect("EraseUser")
}

/// Every read and write of `user` is refused as erased.
async fn assert_all_refused(gw: &TestGateway, user: &str, ids: &[(&str, &str)]) {
    let mut c = gw.content().await;
    for &(space, id) in ids {
        expect_erased(get(&mut c, user, space, id, None).await, "GetObject");
        expect_erased(
            get(&mut c, user, space, id, Some((0, Some(1)))).await,
            "ranged GetObject",
        );
        expect_erased(head(&mut c, user, space, id).await, "HeadObject");
        expect_items_erased(get_items(&mut c, user, space, &[id]).await, "GetItems");
        expect_erased(delete(&mut c, user, space, id).await, "DeleteObject");
        expect_erased(
            put(&mut c, user, space, id, b"resurrected", 4).await,
            "PutObject over an existing id",
        );
        expect_erased(put_item(&mut c, user, space, id, b"again").await, "PutItem");
    }
    for space in ["moments", "channels"] {
        expect_erased(list_page(&mut c, user, space, 0, "").await, "ListObjects");
        // Objects that never existed are refused the same way: no oracle.
        expect_erased(
            get(&mut c, user, space, "never-was", None).await,
            "GetObject (absent)",
        );
        expect_erased(
            head(&mut c, user, space, "never-was").await,
            "HeadObject (absent)",
        );
        expect_items_erased(
            get_items(&mut c, user, space, &["never-was"]).await,
            "GetItems (absent)",
        );
        expect_erased(
            delete(&mut c, user, space, "never-was").await,
            "DeleteObject (absent)",
        );
        expect_erased(
            put(&mut c, user, space, "new", &data(40_000, 1), 8192).await,
            "PutObject (new)",
        );
        expect_erased(
            put(&mut c, user, space, "", b"", 1).await,
            "PutObject (generated id)",
        );
        expect_erased(
            put_item(&mut c, user, space, "", b"x").await,
            "PutItem (generated id)",
        );
    }
}

async fn erase_user_end_to_end() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let victim = "erase-me";
    let bystander = "keep-me";

    let objects = [
        ("moments", "p1", 0usize),
        ("moments", "p2", 40_000),
        ("channels", "v1", 100_000),
    ];
    for (i, (space, id, size)) in objects.iter().enumerate() {
        for user in [victim, bystander] {
            put(&mut c, user, space, id, &data(*size, i as u64), 16_384)
                .await
                .expect("put");
        }
    }
    for user in [victim, bystander] {
        put_item(&mut c, user, "channels", "comment", b"nice photo")
            .await
            .expect("put item");
    }
    let ids: Vec<(&str, &str)> = objects
        .iter()
        .map(|(s, id, _)| (*s, *id))
        .chain([("channels", "comment")])
        .collect();
    let n_objects = ids.len() as u64;

    // Warm the user-key cache: erasure must win over cached keys.
    for &(space, id) in &ids {
        get(&mut c, victim, space, id, None)
            .await
            .expect("readable before erasure");
    }
    let before = key_status(&gw, victim).await;
    assert!(!before.erased);
    assert_eq!(
        before
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1]
    );
    let p = before.pseudonym.clone();
    assert_eq!(gw.user_objects(&p).await.len() as u64, n_objects);

    let receipt = erase(&gw, victim).await;
    assert_eq!(receipt.pseudonym, p);
    assert_eq!(receipt.destroyed_key_versions, [1]);
    assert!(!receipt.gc_job_id.is_empty());
    assert!(receipt.erased_at_unix_ms > 0);

    assert_all_refused(&gw, victim, &ids).await;

    // The bystander is unaffected.
    for (i, (space, id, size)) in objects.iter().enumerate() {
        let (_, got) = get(&mut c, bystander, space, id, None)
            .await
            .expect("bystander reads");
        assert_eq!(got, data(*size, i as u64));
    }
    assert_eq!(
        list_all(&mut c, bystander, "moments").await.unwrap().len(),
        2
    );
    put(&mut c, bystander, "moments", "p3", b"still writable", 4)
        .await
        .expect("bystander writes");
    let bystander_status = key_status(&gw, bystander).await;
    assert!(!bystander_status.erased);
    assert_eq!(bystander_status.versions.len(), 1);

    // Idempotent: the identical receipt.
    assert_eq!(erase(&gw, victim).await, receipt);

    let status = wait_gc_done(&gw, victim).await;
    assert_eq!(status.receipt.as_ref(), Some(&receipt));
    let gc = status.gc.unwrap();
    assert_eq!(gc.job_id, receipt.gc_job_id);
    assert_eq!(gc.done, n_objects, "GC deleted every object of the user");
    assert!(gc.last_error.is_empty(), "{gc:?}");
    assert_eq!(gw.user_objects(&p).await, Vec::<String>::new());
    assert_eq!(
        erase(&gw, victim).await,
        receipt,
        "receipt unchanged after GC"
    );

    let status = key_status(&gw, victim).await;
    assert!(status.erased);
    assert!(status.versions.is_empty(), "{:?}", status.versions);

    // After a restart: still erased, nothing readable, nothing resurrected.
    let gw = gw.restart().await;
    assert_all_refused(&gw, victim, &ids).await;
    assert_eq!(gw.user_objects(&p).await, Vec::<String>::new());
    let status = key_status(&gw, victim).await;
    assert!(status.erased);
    assert!(status.versions.is_empty());
    assert_eq!(erase(&gw, victim).await, receipt);
    let after = erasure_status(&gw, victim).await;
    assert_eq!(after.receipt, Some(receipt));
    assert_eq!(after.gc.unwrap().state, pb::JobState::Done as i32);
    // The bystander's data survived the restart.
    let mut c = gw.content().await;
    assert_eq!(
        list_all(&mut c, bystander, "moments").await.unwrap().len(),
        3
    );
    let (_, got) = get(&mut c, bystander, "channels", "v1", None)
        .await
        .expect("get");
    assert_eq!(got, data(100_000, 2));
}

async fn get_erasure_of_a_user_never_erased_is_not_found() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put(&mut c, "alive", "moments", "x", b"x", 1)
        .await
        .expect("put");
    let r = gw
        .erasure()
        .await
        .get_erasure(pb::GetErasureRequest {
            user_id: "alive".into(),
        })
        .await;
    expect_code(r, Code::NotFound, "GetErasure of a live user");
    let r = gw
        .erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: String::new(),
            after_seconds: 0,
        })
        .await;
    expect_code(r, Code::InvalidArgument, "EraseUser with an empty user id");
}

async fn erasing_a_user_without_data_is_recorded() {
    let gw = TestGateway::start().await;
    let receipt = erase(&gw, "never-stored-anything").await;
    assert!(receipt.destroyed_key_versions.is_empty(), "{receipt:?}");
    let status = wait_gc_done(&gw, "never-stored-anything").await;
    assert_eq!(status.gc.unwrap().done, 0);
    // The user cannot start storing afterwards.
    let mut c = gw.content().await;
    expect_erased(
        put(&mut c, "never-stored-anything", "moments", "a", b"a", 1).await,
        "PutObject after erasure",
    );
    expect_erased(
        put_item(&mut c, "never-stored-anything", "moments", "a", b"a").await,
        "PutItem after erasure",
    );
    let ks = key_status(&gw, "never-stored-anything").await;
    assert!(ks.erased && ks.versions.is_empty());
}

async fn unfinished_gc_job_resumes_after_restart() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let user = "gc-resume";
    for (space, id) in [("moments", "a"), ("moments", "b"), ("channels", "c")] {
        put(&mut c, user, space, id, &data(30_000, 5), 10_000)
            .await
            .expect("put");
    }
    put(&mut c, "other", "moments", "a", b"other", 2)
        .await
        .expect("put");
    let p = pseudonym(&gw, user).await;

    // Keep copies of the user's stored objects.
    let objects = [("moments", "a"), ("moments", "b"), ("channels", "c")];
    assert_eq!(
        gw.user_objects(&p).await,
        [
            format!("channels/{p}/c"),
            format!("moments/{p}/a"),
            format!("moments/{p}/b"),
        ]
    );
    let mut copies = Vec::new();
    for (space, id) in objects {
        let bytes = gw
            .stored_object(space, &p, id)
            .await
            .expect("stored object");
        copies.push((space, id, bytes));
    }

    let receipt = erase(&gw, user).await;
    let status = wait_gc_done(&gw, user).await;
    assert_eq!(status.gc.unwrap().done, 3);
    assert!(gw.user_objects(&p).await.is_empty());

    // Stopped mid-job, as it were: the job is pending again and the objects
    // it had not deleted yet are back.
    gw.stop().await;
    {
        let store = open_key_store(&gw.data_dir).await;
        store
            .update_job(&receipt.gc_job_id, JobState::Pending, 0, "")
            .await
            .expect("reset job");
        let job = store.job(&receipt.gc_job_id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Pending);
    }
    for (space, id, bytes) in &copies {
        gw.overwrite_stored_object(space, &p, id, bytes).await;
    }
    assert_eq!(gw.user_objects(&p).await.len(), 3);

    let gw = gw.restart().await;
    // Even before GC catches up, the restored objects are unreadable.
    let mut c = gw.content().await;
    expect_erased(get(&mut c, user, "moments", "a", None).await, "GetObject");
    expect_erased(
        list_page(&mut c, user, "moments", 0, "").await,
        "ListObjects",
    );

    let status = wait_gc_done(&gw, user).await;
    assert_eq!(status.receipt, Some(receipt));
    assert_eq!(
        status.gc.unwrap().done,
        3,
        "the resumed job deleted the restored objects"
    );
    assert!(gw.user_objects(&p).await.is_empty());
    // Other users are untouched by the resumed job.
    let (_, got) = get(&mut c, "other", "moments", "a", None)
        .await
        .expect("get");
    assert_eq!(got, b"other");
}
