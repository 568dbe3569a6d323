//! Signed erasure receipts over the real gRPC API: EraseUser returns a
//! receipt that verifies with the key ReceiptPublicKeys publishes,
//! GetErasure returns the same bytes later (and signs one if the erasure's
//! process died before it could), a master rotation brings a new signing
//! key while old receipts still verify, retiring the master version deletes
//! its signing key but not its public key. The CLI and an independent
//! Python verifier written from FORMAT.md accept the receipt and refuse a
//! one-byte change.

use std::path::Path;
use std::process::Command;

use sealgate::api::pb;
use sealgate::crypto::Pseudonym;
use sealgate::receipt::{self, PublicKey, Receipt};

use crate::support::gateway::{
    config, open_key_store, pseudonym, put, rotate_master, try_erase, try_erasure_status,
    with_pg_key_store, TestGateway,
};
use crate::support::serve::{ok, sealgate};

async fn erase(gw: &TestGateway, user: &str) -> pb::EraseReceipt {
    try_erase(gw, user).await.expect("EraseUser")
}

async fn status_receipt(gw: &TestGateway, user: &str) -> pb::EraseReceipt {
    try_erasure_status(gw, user)
        .await
        .expect("GetErasure")
        .receipt
        .expect("a receipt")
}

async fn public_keys(gw: &TestGateway) -> Vec<PublicKey> {
    gw.erasure()
        .await
        .receipt_public_keys(pb::ReceiptPublicKeysRequest::default())
        .await
        .expect("ReceiptPublicKeys")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| PublicKey::from_parts(&k.key_id, &k.public_key).expect("a well-formed key"))
        .collect()
}

/// Writes an object of `user`, so that the erasure destroys a key.
async fn write(gw: &TestGateway, user: &str) {
    put(&mut gw.content().await, user, "moments", "a", b"hello", 4)
        .await
        .expect("PutObject");
}

/// The receipt verifies, and says what the API says.
fn check(r: &pb::EraseReceipt, keys: &[PublicKey], region: &str) -> Receipt {
    let decoded = receipt::verify(&r.signed_receipt, keys).expect("the receipt verifies");
    assert_eq!(decoded.pseudonym_hex(), r.pseudonym);
    assert_eq!(decoded.erased_at_ms, r.erased_at_unix_ms);
    assert_eq!(decoded.destroyed_versions, r.destroyed_key_versions);
    assert_eq!(decoded.key_id, r.signing_key_id);
    assert_eq!(decoded.deployment_id, r.deployment_id);
    assert_eq!(decoded.region, r.region);
    assert_eq!(decoded.region, region);
    assert!(!decoded.deployment_id.is_empty());
    decoded
}

async fn erase_returns_a_signed_receipt_that_get_erasure_repeats() {
    let gw = TestGateway::start().await;
    let region = config(&gw.data_dir).blob.region;
    write(&gw, "alice").await;
    let first = erase(&gw, "alice").await;
    assert_eq!(first.destroyed_key_versions, vec![1]);
    let keys = public_keys(&gw).await;
    assert_eq!(keys.len(), 1, "one signing key: {keys:?}");
    let decoded = check(&first, &keys, &region);
    assert_eq!(decoded.key_id, keys[0].key_id);
    assert_eq!(decoded.backup_horizon_ms, first.backup_horizon_unix_ms);

    // Later calls, a repeated erasure and a restart return the same bytes.
    assert_eq!(status_receipt(&gw, "alice").await, first);
    assert_eq!(
        erase(&gw, "alice").await.signed_receipt,
        first.signed_receipt
    );
    let gw = gw.restart().await;
    assert_eq!(status_receipt(&gw, "alice").await, first);
    assert_eq!(public_keys(&gw).await, keys, "the same key after a restart");

    // Only the key asked for; none for an unknown id.
    let one = gw
        .erasure()
        .await
        .receipt_public_keys(pb::ReceiptPublicKeysRequest {
            key_id: keys[0].key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(one.len(), 1);
    let none = gw
        .erasure()
        .await
        .receipt_public_keys(pb::ReceiptPublicKeysRequest {
            key_id: "0000000000000000".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_signed_receipt_get_erasure_same_bytes() {
    erase_returns_a_signed_receipt_that_get_erasure_repeats().await;
}

async fn a_new_master_version_signs_with_a_new_key() {
    let gw = TestGateway::start().await;
    let region = config(&gw.data_dir).blob.region;
    write(&gw, "old").await;
    let old = erase(&gw, "old").await;
    let (version, jobs) = rotate_master(&gw).await;
    assert_eq!(version, 2);
    assert_eq!(
        jobs.last().map(|j| j.state),
        Some(pb::JobState::Done as i32)
    );
    write(&gw, "new").await;
    let new = erase(&gw, "new").await;
    assert_ne!(new.signing_key_id, old.signing_key_id, "a new key");
    let keys = public_keys(&gw).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    check(&new, &keys, &region);
    // The old receipt verifies with the old key alone, and not with the new.
    let old_key: Vec<_> = keys
        .iter()
        .filter(|k| k.key_id == old.signing_key_id)
        .cloned()
        .collect();
    check(&old, &old_key, &region);
    let new_key_under_old_id = vec![PublicKey {
        key_id: old.signing_key_id.clone(),
        key: keys
            .iter()
            .find(|k| k.key_id == new.signing_key_id)
            .unwrap()
            .key,
    }];
    assert!(matches!(
        receipt::verify(&old.signed_receipt, &new_key_under_old_id),
        Err(receipt::ReceiptError::BadSignature(_))
    ));

    // Retiring master version 1 deletes its signing key, not its public key.
    gw.admin()
        .await
        .retire_master_key(pb::RetireMasterKeyRequest { version: 1 })
        .await
        .expect("RetireMasterKey");
    assert_eq!(public_keys(&gw).await, keys);
    assert_eq!(status_receipt(&gw, "old").await, old);
    check(&status_receipt(&gw, "old").await, &old_key, &region);
    let mut gw = gw;
    gw.stop().await;
    let store = open_key_store(&gw.data_dir).await;
    let rows: Vec<String> = store
        .meta_values("receipt_key:")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(rows, vec!["receipt_key:0000000002".to_string()]);
    let public = store.meta_values("receipt_public:").await.unwrap();
    assert_eq!(public.len(), 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_new_key_old_receipt_verifies() {
    a_new_master_version_signs_with_a_new_key().await;
}

/// An erasure whose process died before signing: GetErasure signs it, once.
async fn get_erasure_signs_a_receipt_left_unsigned() {
    let mut gw = TestGateway::start().await;
    let region = config(&gw.data_dir).blob.region;
    write(&gw, "crashed").await;
    // A signing key exists already (made by this erasure).
    let before = erase(&gw, "before").await;
    let p = Pseudonym::from_hex(&pseudonym(&gw, "crashed").await).unwrap();
    gw.stop().await;
    let store = open_key_store(&gw.data_dir).await;
    let t = store
        .erase_user(&p, sealgate::keys::unix_ms(), "gc-crashed", "test")
        .await
        .unwrap();
    assert!(store.erasure_receipts(&[p]).await.unwrap().is_empty());
    store.close().await;
    let gw = gw.restart().await;
    let first = status_receipt(&gw, "crashed").await;
    let keys = public_keys(&gw).await;
    let decoded = check(&first, &keys, &region);
    assert_eq!(decoded.erased_at_ms, t.erased_at_ms);
    assert_eq!(decoded.key_id, before.signing_key_id);
    assert_eq!(status_receipt(&gw, "crashed").await, first);
    assert_eq!(
        erase(&gw, "crashed").await.signed_receipt,
        first.signed_receipt
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_erasure_signs_unsigned_receipt() {
    get_erasure_signs_a_receipt_left_unsigned().await;
}

/// The PostgreSQL key store keeps receipts and signing keys the same way.
mod pg {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn erase_signed_receipt_get_erasure_same_bytes() {
        with_pg_key_store(erase_returns_a_signed_receipt_that_get_erasure_repeats()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotate_master_new_key_old_receipt_verifies() {
        with_pg_key_store(a_new_master_version_signs_with_a_new_key()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_erasure_signs_unsigned_receipt() {
        with_pg_key_store(get_erasure_signs_a_receipt_left_unsigned()).await;
    }
}

/// The independent verifier, run with `python3`.
fn python_verify(keys: &Path, receipt: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receipts/verify_receipt.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(keys)
        .arg(receipt)
        .output()
        .expect("run python3");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ModuleNotFoundError"),
        "the Python verifier needs the `cryptography` package (Debian: python3-cryptography; \
         scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `sealgate erase --receipt`, `receipt public-key --out` and `receipt
/// verify` (offline), and the Python verifier: both accept the receipt and
/// refuse it with any one byte changed, or a byte appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_python_verify_and_refuse_a_changed_byte() {
    let gw = TestGateway::start().await;
    write(&gw, "carol").await;
    let carol = pseudonym(&gw, "carol").await;
    let ep = gw.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = dir_path.join("carol.receipt");
        let keys = dir_path.join("keys.txt");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let printed = ok(&sealgate(&[
            "erase",
            "--endpoint",
            &ep,
            "--user",
            "carol",
            "--receipt",
            &s(&file),
        ]));
        assert!(printed.contains("signing_key_id: "), "{printed}");
        ok(&sealgate(&[
            "receipt",
            "public-key",
            "--endpoint",
            &ep,
            "--out",
            &s(&keys),
        ]));
        let lines = std::fs::read_to_string(&keys).unwrap();
        assert_eq!(lines.lines().count(), 1, "{lines}");
        let key_id = lines.split_whitespace().next().unwrap().to_string();
        // Printed to stdout alike, and by id.
        let stdout = ok(&sealgate(&[
            "receipt",
            "public-key",
            "--endpoint",
            &ep,
            "--key-id",
            &key_id,
        ]));
        assert_eq!(stdout, lines);
        let unknown = sealgate(&[
            "receipt",
            "public-key",
            "--endpoint",
            &ep,
            "--key-id",
            "0000000000000000",
        ]);
        assert!(!unknown.status.success());

        let verify = |receipt: &Path| {
            sealgate(&["receipt", "verify", "--public-key", &s(&keys), &s(receipt)])
        };
        let good = ok(&verify(&file));
        assert!(good.contains(&format!("pseudonym: {carol}")), "{good}");
        assert!(good.contains("destroyed_key_versions: 1"), "{good}");
        assert!(
            good.contains(&format!("signing_key_id: {key_id}")),
            "{good}"
        );
        let py = python_verify(&keys, &file);
        assert!(
            py.status.success(),
            "python: {}{}",
            String::from_utf8_lossy(&py.stdout),
            String::from_utf8_lossy(&py.stderr)
        );
        let fields: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        assert_eq!(fields["pseudonym"], carol);
        assert_eq!(fields["key_id"], key_id);
        assert_eq!(fields["destroyed_versions"], serde_json::json!([1]));

        let bytes = std::fs::read(&file).unwrap();
        let bad = dir_path.join("bad.receipt");
        // Every byte is covered by the unit tests; here a byte of each
        // stretch of 7, the last one included, and the ends.
        let mut variants: Vec<Vec<u8>> = (0..bytes.len())
            .filter(|i| i % 7 == 0 || *i == bytes.len() - 1)
            .map(|i| {
                let mut b = bytes.clone();
                b[i] ^= 0x01;
                b
            })
            .collect();
        let mut appended = bytes.clone();
        appended.push(0);
        variants.push(appended);
        variants.push(bytes[..bytes.len() - 1].to_vec());
        for (i, variant) in variants.iter().enumerate() {
            std::fs::write(&bad, variant).unwrap();
            let out = verify(&bad);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "variant {i} verifies in the CLI");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.starts_with("error: receipt "), "{stderr}");
            let py = python_verify(&keys, &bad);
            assert_eq!(py.status.code(), Some(1), "variant {i} verifies in Python");
            assert!(
                String::from_utf8_lossy(&py.stdout).starts_with("invalid: "),
                "{py:?}"
            );
        }
    })
    .await
    .unwrap();
}
