//! Decommission: with the wrong region nothing happens; with the right one
//! every user key, KEK and master version is destroyed, no object reads
//! back, no key bytes (wrapped or master) remain in any file of the data
//! dir, and `sealgate serve` refuses to start there.

use std::time::Duration;

use tonic::Code;

use super::*;

async fn decommission(gw: &TestGateway, region: &str) -> Result<pb::DecommissionReceipt, Status> {
    gw.admin()
        .await
        .decommission(pb::DecommissionRequest {
            confirm_region: region.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every wrapped user key and KEK the key store holds, and the raw master
/// and naming keys of the keyring.
async fn key_bytes(data_dir: &Path) -> Vec<Vec<u8>> {
    let pool = crate::support::keys_db::open(data_dir).await;
    let mut out: Vec<Vec<u8>> = sqlx::query_scalar("SELECT wrapped FROM user_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    out.extend(
        sqlx::query_scalar::<_, Vec<u8>>("SELECT wrapped FROM keks")
            .fetch_all(&pool)
            .await
            .unwrap(),
    );
    pool.close().await;
    let keyring = std::fs::read_to_string(data_dir.join("keyring")).unwrap();
    for line in keyring.lines().filter(|l| !l.starts_with('#')) {
        let hex_key = line.rsplit(' ').next().unwrap();
        out.push(hex_key.as_bytes().to_vec());
        out.push(hex::decode(hex_key).unwrap());
    }
    out
}

fn files_holding(data_dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    read_tree(data_dir)
        .into_iter()
        .filter(|(_, bytes)| {
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_destroys_every_key_and_the_data_dir_never_serves_again() {
    const USERS: usize = 12;
    let mut gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for u in 0..USERS {
        put(
            &mut c,
            &format!("user-{u}"),
            "moments",
            "pic",
            &data(5_000, u as u64),
            2_000,
        )
        .await
        .unwrap();
    }
    let secrets = key_bytes(&gw.data_dir).await;
    assert!(secrets.len() > USERS + 2);
    assert!(
        !files_holding(&gw.data_dir, &secrets).is_empty(),
        "the scan finds the keys while they exist"
    );

    // The wrong region: refused, nothing destroyed.
    expect_reason(
        decommission(&gw, "cn-northwest-1").await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "another region",
    );
    let (_, got) = get(&mut c, "user-3", "moments", "pic", None).await.unwrap();
    assert_eq!(got, data(5_000, 3));

    let receipt = decommission(&gw, "cn-north-1").await.expect("Decommission");
    assert_eq!(receipt.user_keys_destroyed, USERS as u64);
    assert!(receipt.kek_versions_destroyed >= 2);
    assert_eq!(receipt.master_versions_destroyed, [1]);
    assert!(receipt.decommissioned_at_unix_ms > 0);

    for u in [0, 7] {
        expect_reason(
            get(&mut c, &format!("user-{u}"), "moments", "pic", None).await,
            Code::FailedPrecondition,
            "DECOMMISSIONED",
            "a read after decommission",
        );
    }
    expect_reason(
        put(&mut c, "newcomer", "moments", "pic", b"x", 1).await,
        Code::FailedPrecondition,
        "DECOMMISSIONED",
        "a write after decommission",
    );
    gw.stop().await;

    assert!(!gw.data_dir.join("keyring").exists(), "keyring removed");
    let left = files_holding(&gw.data_dir, &secrets);
    assert!(left.is_empty(), "key bytes left in {left:?}");

    let mut serve = crate::support::serve::Serve::new(&gw.data_dir).spawn();
    let outcome = serve.ready_within(Duration::from_secs(60)).await;
    drop(serve);
    let log = outcome.expect_err("serve refuses a decommissioned data dir");
    assert!(log.contains("was decommissioned"), "{log}");
    assert!(
        !gw.data_dir.join("keyring").exists(),
        "no fresh keyring made over a decommissioned store"
    );
}

/// A download paused across the decommission ends at its next piece with
/// `DECOMMISSIONED`: the stream's key is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_download_stops_at_decommission() {
    let gw = TestGateway::start().await;
    let body = data(8 << 20, 5);
    put(
        &mut gw.content().await,
        "viewer",
        "channels",
        "video",
        &body,
        1 << 20,
    )
    .await
    .unwrap();
    let window = 64 * 1024;
    let (mut stream, _) =
        paused_download(&gw, "viewer", "channels", "video", window, 1 << 20).await;
    decommission(&gw, "cn-north-1").await.expect("Decommission");
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the download completed after the decommission"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert_eq!(reason(&end).as_deref(), Some("DECOMMISSIONED"));
}
