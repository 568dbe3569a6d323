//! Startup guards against fresh state over old state: a missing keyring
//! next to a key store that holds keys, and a missing, empty or different
//! key store next to an object store that holds objects, are refused with
//! one line naming the path. (Processes racing on one data directory:
//! one serves, the others are refused by its lock, `data_dir_lock.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sealgate::blob::fs::{FsBlobStore, STORE_ID_FILE};
use sealgate::blob::s3::{S3BlobStore, STORE_ID_KEY};
use sealgate::blob::BlobStore;
use sealgate::server::Gateway;

use crate::support::gateway::{config, put, TestGateway};
use crate::support::s3env;

const SPACE: &str = "moments";
const USER: &str = "startup-user";

/// A data directory `tmp/data` on which a gateway stored an object, then
/// stopped. Objects live in `data/objects`.
async fn populated(tmp: &Path) -> PathBuf {
    let data_dir = tmp.join("data");
    let mut gw = TestGateway::start_config(config(&data_dir)).await;
    put(&mut gw.content().await, USER, SPACE, "photo", b"bytes", 5)
        .await
        .expect("put");
    gw.stop().await;
    assert!(data_dir.join("keyring").exists());
    assert!(data_dir.join("objects").join(STORE_ID_FILE).exists());
    data_dir
}

/// Opens a gateway on `data_dir` over `objects`; the refusal's message.
async fn refusal(data_dir: &Path, objects: &Path) -> String {
    refusal_of(&config(data_dir), objects).await
}

/// Opens a gateway of `config` over `objects`; the refusal's message.
pub(crate) async fn refusal_of(config: &sealgate::config::Config, objects: &Path) -> String {
    let blob: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(objects).await.unwrap());
    match Gateway::open(config, blob).await {
        Ok(_) => panic!("the gateway started on {}", config.data_dir.display()),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(message.starts_with("refusing to start: "), "{message}");
            message
        }
    }
}

/// Removes the key store and its SQLite companions.
fn remove_key_store(data_dir: &Path) {
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("keys.db") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_missing_next_to_populated_key_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = populated(tmp.path()).await;
    let keyring = data_dir.join("keyring");
    std::fs::remove_file(&keyring).unwrap();

    let message = refusal(&data_dir, &data_dir.join("objects")).await;
    assert!(
        message.contains(&format!("keyring {} is missing", keyring.display())),
        "{message}"
    );
    assert!(
        message.contains(&data_dir.join("keys.db").display().to_string()),
        "{message}"
    );
    assert!(!keyring.exists(), "no new keyring was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_names_the_missing_keyring_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = populated(tmp.path()).await;
    let keyring = data_dir.join("keyring");
    std::fs::remove_file(&keyring).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("refusing to start"))
        .unwrap_or_else(|| panic!("no refusal in:\n{stderr}"));
    assert!(
        line.starts_with("error: refusing to start: keyring ")
            && line.contains(&keyring.display().to_string())
            && line.contains("restore the keyring from the backup taken with keys.db"),
        "{line}"
    );
    assert!(!keyring.exists(), "no new keyring was created");
}

/// With the key store in PostgreSQL, refusals ask for the database from
/// the backup, not for a keys.db the deployment never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_postgres_key_store_refusals_name_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let on = |url: &str| {
        let mut c = config(&data_dir);
        c.keystore.backend = sealgate::config::KeyStoreBackend::Postgres;
        c.keystore.url = Some(url.to_string());
        c.keystore.max_connections = 4;
        c
    };
    let deployments = crate::support::pgenv::fresh_database().await;
    let mut gw = TestGateway::start_config(on(&deployments)).await;
    put(&mut gw.content().await, USER, SPACE, "photo", b"bytes", 5)
        .await
        .expect("put");
    gw.stop().await;
    let objects = data_dir.join("objects");

    // A new database in place of the deployment's.
    let other = crate::support::pgenv::fresh_database().await;
    let message = refusal_of(&on(&other), &objects).await;
    assert!(message.contains("is new or empty"), "{message}");
    assert!(
        message.contains(
            "restore the key store database and the keyring from this deployment's backup"
        ),
        "{message}"
    );
    assert!(!message.contains("keys.db"), "{message}");

    // The deployment's database without its keyring.
    let keyring = data_dir.join("keyring");
    std::fs::remove_file(&keyring).unwrap();
    let message = refusal_of(&on(&deployments), &objects).await;
    assert!(
        message.contains(&format!("keyring {} is missing", keyring.display())),
        "{message}"
    );
    assert!(
        message.contains("restore the keyring from the backup taken with the key store database"),
        "{message}"
    );
    assert!(!keyring.exists(), "no new keyring was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_store_missing_next_to_populated_object_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = populated(tmp.path()).await;
    remove_key_store(&data_dir);

    let message = refusal(&data_dir, &data_dir.join("objects")).await;
    let key_store = data_dir.join("keys.db");
    assert!(
        message.contains(&format!("key store {} is missing", key_store.display())),
        "{message}"
    );
    assert!(!key_store.exists(), "no new key store was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_store_next_to_populated_object_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = populated(tmp.path()).await;
    // An empty database in place of keys.db, and the keyring gone too: the
    // refusal names the key store, and no keyring is made for it.
    remove_key_store(&data_dir);
    std::fs::write(data_dir.join("keys.db"), b"").unwrap();
    let keyring = data_dir.join("keyring");
    std::fs::remove_file(&keyring).unwrap();

    let message = refusal(&data_dir, &data_dir.join("objects")).await;
    let key_store = data_dir.join("keys.db");
    assert!(
        message.contains(&format!(
            "key store {} is new or empty",
            key_store.display()
        )),
        "{message}"
    );
    assert!(!keyring.exists(), "no new keyring was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_deployments_key_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = populated(&tmp.path().join("a")).await;
    let a_objects = a.join("objects");

    // A fresh data directory over A's objects.
    let fresh = tmp.path().join("fresh");
    let message = refusal(&fresh, &a_objects).await;
    assert!(
        message.contains(&fresh.join("keys.db").display().to_string())
            && message.contains(&a_objects.display().to_string()),
        "{message}"
    );
    assert!(
        !fresh.join("keyring").exists(),
        "no new keyring was created"
    );

    // Another deployment's data directory over A's objects.
    let b = populated(&tmp.path().join("b")).await;
    let message = refusal(&b, &a_objects).await;
    let a_id = std::fs::read_to_string(a_objects.join(STORE_ID_FILE)).unwrap();
    assert!(
        message.contains(&b.join("keys.db").display().to_string())
            && message.contains(&format!("the object store {}", a_objects.display()))
            && message.contains(a_id.trim()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_object_store_joins_the_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = populated(tmp.path()).await;
    let id = std::fs::read_to_string(data_dir.join("objects").join(STORE_ID_FILE)).unwrap();
    let moved = tmp.path().join("new-objects");
    let blob: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(&moved).await.unwrap());
    let gateway = match Gateway::open(&config(&data_dir), blob).await {
        Ok(g) => g,
        Err(e) => panic!("refused: {e}"),
    };
    gateway.store.close().await;
    assert_eq!(
        std::fs::read_to_string(moved.join(STORE_ID_FILE)).unwrap(),
        id
    );
}

/// The store id on S3: create-only, read back, invisible to listings; and
/// a fresh data directory over a used bucket is refused naming the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_id_is_create_only_and_guards_the_bucket() {
    let (store, bucket) = s3env::fresh_store(false).await;
    assert_eq!(store.store_id().await.unwrap(), None);
    let (a, b) = tokio::join!(store.init_store_id("first"), store.init_store_id("second"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "one id is recorded");
    assert_eq!(store.store_id().await.unwrap().as_deref(), Some(a.as_str()));
    assert_eq!(store.init_store_id("third").await.unwrap(), a);
    let endpoint = s3env::shared().endpoint();
    assert_eq!(
        s3env::all_keys(&endpoint, &bucket).await,
        [STORE_ID_KEY.to_string()]
    );
    assert!(store
        .list(SPACE, "owner", None, 100)
        .await
        .unwrap()
        .is_empty());

    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let store = S3BlobStore::connect(&s3env::settings(&endpoint, &bucket))
        .await
        .unwrap();
    let message = match Gateway::open(&config(&data_dir), Arc::new(store)).await {
        Ok(_) => panic!("started over a used bucket"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(&format!("s3://{bucket}")) && message.contains("keys.db is missing"),
        "{message}"
    );
}
