//! PII-free telemetry: a user whose id looks like a phone number, driven
//! through puts, gets, failures, a legal hold and erasure against the real
//! binary at `RUST_LOG=trace`; neither the id nor any key bytes (hex,
//! base64 or a byte list) appear in anything it logged.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use tonic::transport::Channel;

use crate::support::gateway::{get, put, put_item};
use crate::support::serve::Serve;

const PHONE: &str = "13800138000";

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn renderings_are_right() {
    let r = renderings(b"Many hands make light work.");
    assert_eq!(r[2], "TWFueSBoYW5kcyBt");
    assert_eq!(r[0], "4d616e792068616e6473206d");
    assert_eq!(r[4], "[77, 97, 110, 121, 32, 104, 97, 110");
}

/// The ways a secret could show in a log line.
fn renderings(secret: &[u8]) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // A prefix long enough to be no accident, short enough to catch a
    // truncated rendering.
    let head = &secret[..secret.len().min(12)];
    vec![
        hex::encode(head),
        hex::encode_upper(head),
        base64(head, STD),
        base64(head, URL),
        format!("{:?}", &head[..8])
            .trim_end_matches(']')
            .to_string(),
    ]
}

/// Every key the gateway holds, as bytes: the keyring's naming and master
/// keys, and every wrapped KEK and user key in the key store.
async fn secrets(data_dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let keyring = std::fs::read_to_string(data_dir.join("keyring")).unwrap();
    for line in keyring.lines().filter(|l| !l.starts_with('#')) {
        if let Some(hexkey) = line.split_whitespace().last() {
            if let Ok(bytes) = hex::decode(hexkey) {
                out.push(bytes);
            }
        }
    }
    let pool = crate::support::keys_db::open_read_only(data_dir).await;
    for table in ["keks", "user_keys"] {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT wrapped FROM {table}"))
            .fetch_all(&pool)
            .await
            .unwrap();
        out.extend(rows);
    }
    pool.close().await;
    assert!(out.len() >= 4, "naming, master, a KEK and a user key");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_number_user_id_and_keys_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path()).rust_log("trace").spawn();
    let addr = server.listening().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut content = ContentServiceClient::new(channel.clone());
    let body = crate::support::gateway::data(300_000, 9);
    put(&mut content, PHONE, "moments", "pic", &body, 65_536)
        .await
        .unwrap();
    let (_, got) = get(
        &mut content,
        PHONE,
        "moments",
        "pic",
        Some((10, Some(5000))),
    )
    .await
    .unwrap();
    assert_eq!(got, body[10..5000]);
    put_item(&mut content, PHONE, "channels", "c1", b"a comment")
        .await
        .unwrap();
    // Failures: a missing object, a bad range, an unknown space.
    assert!(get(&mut content, PHONE, "moments", "nope", None)
        .await
        .is_err());
    assert!(
        get(&mut content, PHONE, "moments", "pic", Some((1 << 40, None)))
            .await
            .is_err()
    );
    assert!(get(&mut content, PHONE, "nospace", "pic", None)
        .await
        .is_err());
    let pseudonym = KeyAdminServiceClient::new(channel.clone())
        .key_status(pb::KeyStatusRequest {
            user_id: PHONE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pseudonym;
    let mut holds = LegalHoldServiceClient::new(channel.clone());
    holds
        .place_hold(pb::PlaceHoldRequest {
            user_id: PHONE.into(),
            case_ref: "case-1".into(),
        })
        .await
        .unwrap();
    let mut erasure = ErasureServiceClient::new(channel.clone());
    let erase = pb::EraseUserRequest {
        user_id: PHONE.into(),
        after_seconds: 0,
    };
    let pending = erasure
        .erase_user(erase.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state(), pb::ErasureState::PendingHold, "held");
    holds
        .release_hold(pb::ReleaseHoldRequest {
            user_id: PHONE.into(),
            case_ref: "case-1".into(),
        })
        .await
        .unwrap();
    let secrets = secrets(dir.path()).await;
    erasure.erase_user(erase).await.unwrap();
    assert!(get(&mut content, PHONE, "moments", "pic", None)
        .await
        .is_err());
    drop((content, erasure, holds, channel));

    let text = server.stop_and_read_log().await;
    assert!(
        text.lines().count() > 100,
        "trace logging was on: {} lines",
        text.lines().count()
    );
    assert!(text.contains("user erased"), "the erasure was logged");
    assert!(text.contains(&pseudonym), "users appear as pseudonyms");
    for (n, line) in text.lines().enumerate() {
        assert!(!line.contains(PHONE), "line {n} holds the user id: {line}");
        for secret in &secrets {
            for r in renderings(secret) {
                assert!(!line.contains(&r), "line {n} holds key bytes {r}: {line}");
            }
        }
    }
}

/// `log.format = "json"`: every line the real binary writes is one JSON
/// object, and an event inside a call carries the call's span (its
/// method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_method_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path())
        .env("SEALGATE_LOG_FORMAT", "json")
        .spawn();
    let addr = server.listening().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ErasureServiceClient::new(channel)
        .erase_user(pb::EraseUserRequest {
            user_id: "json-user".into(),
            after_seconds: 0,
        })
        .await
        .unwrap();
    let erased = || server.log().lines().any(|l| l.contains("user erased"));
    crate::support::eventually("the erasure is logged", Duration::from_secs(10), || {
        let done = erased();
        async move { done }
    })
    .await;
    let text = server.stop_and_read_log().await;
    let mut erasure = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["fields"]["message"] == "user erased" {
            erasure = Some(v);
        }
    }
    let erasure = erasure.expect("the erasure's line");
    assert_eq!(erasure["target"], "sealgate::audit");
    assert_eq!(erasure["span"]["name"], "grpc");
    assert_eq!(
        erasure["span"]["method"],
        "/sealgate.v1.ErasureService/EraseUser"
    );
    assert!(!text.contains("json-user"), "raw user id in the log");
}

/// With master keys in KMS (moto's), at `RUST_LOG=trace` (the AWS SDK's
/// own tracing included, and its `LOG_SENSITIVE_BODIES` on): neither the
/// KEKs and naming key KMS unwrapped nor their ciphertexts appear in the
/// log of a start that makes them or of one that unwraps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_unwrapped_keys_never_reach_the_log() {
    use aws_sdk_kms::primitives::Blob;
    let arn = crate::support::kms_env::create_key().await;
    let endpoint = crate::support::s3env::shared().endpoint();
    let mut env = crate::support::kms_env::serve_env(&arn, &endpoint);
    // The SDK's switch to log what it marks sensitive (KMS Decrypt's
    // answer): the gateway's logging never shows it either.
    env.push(("LOG_SENSITIVE_BODIES", "true"));
    let dir = tempfile::tempdir().unwrap();
    let body = crate::support::gateway::data(20_000, 3);
    let mut text = String::new();
    for round in 0..2 {
        let mut server = Serve::new(dir.path()).rust_log("trace").envs(&env).spawn();
        let addr = server.listening().await;
        let mut content = ContentServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        if round == 0 {
            put(&mut content, PHONE, "moments", "pic", &body, 8_192)
                .await
                .unwrap();
        }
        let (_, got) = get(&mut content, PHONE, "moments", "pic", None)
            .await
            .unwrap();
        assert_eq!(got, body);
        drop(content);
        text.push_str(&server.stop_and_read_log().await);
    }
    assert!(text.contains("KMS.Decrypt"), "the SDK's tracing was on");

    // The keys as KMS unwraps them, and their ciphertexts.
    let pool = crate::support::keys_db::open_read_only(dir.path()).await;
    let keks: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as("SELECT shard, version, wrapped FROM keks")
        .fetch_all(&pool)
        .await
        .unwrap();
    let record: String =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'kms_master:0000000001'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    let kms = crate::support::kms_env::sdk();
    let mut secrets = Vec::new();
    for (shard, version, wrapped) in keks {
        let aad = sealgate::crypto::keys::kek_aad(shard as u32, version as u32);
        let plain = kms
            .decrypt()
            .key_id(&arn)
            .ciphertext_blob(Blob::new(wrapped.clone()))
            .encryption_context("sealgate", "kek")
            .encryption_context("aad", hex::encode(aad))
            .send()
            .await
            .unwrap();
        secrets.push(plain.plaintext().unwrap().as_ref().to_vec());
        secrets.push(wrapped);
    }
    let naming = hex::decode(record.split(' ').nth(1).unwrap()).unwrap();
    let plain = kms
        .decrypt()
        .key_id(&arn)
        .ciphertext_blob(Blob::new(naming.clone()))
        .encryption_context("sealgate", "naming-key")
        .encryption_context("master_version", "1")
        .send()
        .await
        .unwrap();
    secrets.push(plain.plaintext().unwrap().as_ref().to_vec());
    secrets.push(naming);
    assert!(secrets.len() >= 4 && secrets.iter().all(|s| s.len() >= 32));
    for (n, line) in text.lines().enumerate() {
        assert!(!line.contains(PHONE), "line {n} holds the user id: {line}");
        for secret in &secrets {
            for r in renderings(secret) {
                assert!(!line.contains(&r), "line {n} holds key bytes {r}: {line}");
            }
        }
    }
}
