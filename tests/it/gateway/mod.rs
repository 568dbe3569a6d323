//! Gateway tests: real gRPC over a loopback socket on port 0, against a
//! server started in-process on a fresh data directory.
//!
//! Most tests are backend-generic: written once as a plain `async fn` and
//! listed in [`backend_tests!`], which runs each against the filesystem
//! store (`…::fs::name`), against S3 on the shared moto server
//! (`…::s3::name`) and on an s3s-fs server of the test's own
//! (`…::s3s::name`). Tests reach stored objects only through the
//! [`TestGateway`] storage accessors, which know where each backend keeps
//! them.

/// Generates, for each backend-generic test `async fn name()` of the calling
/// module, the tests `fs::name`, `s3::name` (moto) and `s3s::name`
/// (s3s-fs), which run it with gateways started on that backend (see
/// [`with_backend`]).
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        backend_tests!(@on fs, Fs, "The tests against the filesystem store.", $($name),+);
        backend_tests!(@on s3, S3, "The tests against S3 (moto).", $($name),+);
        backend_tests!(
            @on s3s, S3s, "The tests against a second S3 implementation (s3s-fs).", $($name),+
        );
    };
    (@on $module:ident, $kind:ident, $doc:literal, $($name:ident),+) => {
        #[doc = $doc]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::gateway::with_backend(
                        $crate::gateway::BackendKind::$kind,
                        super::$name(),
                    )
                    .await;
                }
            )+
        }
    };
}

/// Generates, for each named test `async fn name()` of the calling module,
/// the test `pg::name`: gateways it starts on a new data directory keep
/// their keys in a fresh PostgreSQL database (objects on the filesystem).
macro_rules! pg_tests {
    ($($name:ident),+ $(,)?) => {
        /// The tests with a PostgreSQL key store.
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::gateway::with_pg_key_store(super::$name()).await;
                }
            )+
        }
    };
}

mod at_rest;
pub mod audit;
mod bad_input;
mod crash;
mod declared_size;
mod decommission;
mod erasure;
mod erasure_holds;
mod feeds;
mod finish;
mod holds;
pub mod jobs;
mod kek_rotation;
mod key_store_faults;
mod kms;
mod limits;
mod limits_flood;
mod limits_timeouts;
mod master_rotation;
pub mod mtls;
mod preconditions;
mod rewrap;
mod roundtrip;
mod user_key_rotation;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::blob::s3::S3BlobStore;
use sealgate::config::{Config, MasterProvider};
use sealgate::keys::kms::KmsClient;
use sealgate::keys::postgres::{PgSettings, PostgresKeyStore};
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::KeyStore;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::s3env;

/// Which blob store the gateways of a test use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `data_dir/objects`.
    Fs,
    /// A fresh bucket on the shared moto server.
    S3,
    /// A bucket on an s3s-fs server of the test's own.
    S3s,
}

tokio::task_local! {
    static BACKEND: BackendKind;
    static PG_KEY_STORE: ();
}

/// Runs `test` so that the gateways it starts on new data directories keep
/// their keys in PostgreSQL (a fresh database each).
pub async fn with_pg_key_store<F: Future>(test: F) -> F::Output {
    PG_KEY_STORE.scope((), test).await
}

/// The PostgreSQL key store of each data directory that has one.
fn pg_urls() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, String>> {
    static URLS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, String>>> =
        std::sync::OnceLock::new();
    URLS.get_or_init(Default::default)
}

/// The PostgreSQL key store's URL of `data_dir`, if it has one.
pub fn pg_url(data_dir: &Path) -> Option<String> {
    pg_urls().lock().unwrap().get(data_dir).cloned()
}

/// Runs `test` so that the gateways it starts use `kind`.
pub async fn with_backend<F: Future>(kind: BackendKind, test: F) -> F::Output {
    BACKEND.scope(kind, test).await
}

/// The backend of the running test: the filesystem outside [`with_backend`].
pub fn backend_kind() -> BackendKind {
    BACKEND.try_with(|k| *k).unwrap_or(BackendKind::Fs)
}

/// Where a gateway keeps its objects. Keys (`keys.db`, `keyring`) are always
/// in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Files under `data_dir/objects`.
    Fs,
    /// A bucket behind an S3 endpoint.
    S3 { endpoint: String, bucket: String },
}

impl Backend {
    /// A new store of `kind`: for S3, a fresh bucket on the shared server.
    pub async fn create(kind: BackendKind) -> Self {
        match kind {
            BackendKind::Fs => Self::Fs,
            BackendKind::S3 => {
                let endpoint = s3env::shared().endpoint();
                let bucket = s3env::bucket_name();
                s3env::create_bucket(&endpoint, &bucket, s3env::REGION, false).await;
                Self::S3 { endpoint, bucket }
            }
            BackendKind::S3s => {
                let endpoint = crate::support::s3s_env::start().await;
                let bucket = s3env::bucket_name();
                s3env::create_bucket(&endpoint, &bucket, s3env::REGION, false).await;
                Self::S3 { endpoint, bucket }
            }
        }
    }

    /// The backend a configuration names.
    pub fn of(config: &Config) -> Self {
        match config.blob.backend.as_str() {
            "s3" => Self::S3 {
                endpoint: config.s3.endpoint.clone().expect("s3.endpoint"),
                bucket: config.s3.bucket.clone(),
            },
            _ => Self::Fs,
        }
    }

    /// Points `config` at this store.
    pub fn configure(&self, config: &mut Config) {
        match self {
            Self::Fs => config.blob.backend = sealgate::config::BlobBackend::Fs,
            Self::S3 { endpoint, bucket } => {
                config.blob.backend = sealgate::config::BlobBackend::S3;
                config.s3.bucket = bucket.clone();
                config.s3.endpoint = Some(endpoint.clone());
                config.s3.force_path_style = true;
            }
        }
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// The KMS client of a gateway with `master.provider = "aws-kms"` (its
    /// request counts).
    pub kms: Option<KmsClient>,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A default embedded configuration on `data_dir`.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::load(None, Vec::<(String, String)>::new()).expect("default config");
    c.data_dir = data_dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().unwrap();
    // In-process gateways share the process's metrics; the metrics tests
    // scrape the real binary.
    c.metrics.listen = String::new();
    if let Some(url) = pg_url(data_dir) {
        c.keystore.backend = sealgate::config::KeyStoreBackend::Postgres;
        c.keystore.url = Some(url);
        c.keystore.max_connections = 4;
    }
    c
}

/// A new handle on the key store of the gateway on `data_dir` (SQLite's
/// `keys.db`, or its PostgreSQL database).
pub async fn open_key_store(data_dir: &Path) -> Arc<dyn KeyStore> {
    match pg_url(data_dir) {
        Some(url) => Arc::new(
            PostgresKeyStore::open(&PgSettings {
                url,
                max_connections: 2,
            })
            .await
            .expect("open the PostgreSQL key store"),
        ),
        None => Arc::new(
            SqliteKeyStore::open(&data_dir.join("keys.db"))
                .await
                .expect("open keys.db"),
        ),
    }
}

impl TestGateway {
    /// Starts a gateway on a new temporary data directory and a new store
    /// of the test's backend.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Self::start`], after `tweak`ing the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        if PG_KEY_STORE.try_with(|_| ()).is_ok() {
            let url = crate::support::pgenv::fresh_database().await;
            pg_urls()
                .lock()
                .unwrap()
                .insert(tmp.path().to_path_buf(), url);
        }
        let mut c = config(tmp.path());
        Backend::create(backend_kind()).await.configure(&mut c);
        tweak(&mut c);
        let mut gw = Self::start_config(c).await;
        gw._tmp = Some(tmp);
        gw
    }

    /// Starts a gateway with exactly this configuration. The filesystem
    /// store is opened as `sealgate serve` opens it; an S3 store and a KMS
    /// client with the test credentials (the server would use the AWS
    /// provider chain).
    pub async fn start_config(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let data_dir = config.data_dir.clone();
        let backend = Backend::of(&config);
        let shutdown = async {
            let _ = rx.await;
        };
        let kms = match config.master.provider {
            MasterProvider::AwsKms => Some(crate::support::kms_env::client_for(&config).await),
            MasterProvider::Local => None,
        };
        let server_kms = kms.clone();
        let handle = match &backend {
            Backend::Fs => tokio::spawn(async move {
                let blob = sealgate::server::open_blob(&config)
                    .await
                    .expect("open the object store");
                sealgate::server::serve_with(config, blob, server_kms, listener, shutdown)
                    .await
                    .expect("server run");
            }),
            Backend::S3 { endpoint, bucket } => {
                let store = S3BlobStore::connect(&s3env::settings(endpoint, bucket))
                    .await
                    .expect("connect to S3");
                tokio::spawn(async move {
                    sealgate::server::serve_with(
                        config,
                        Arc::new(store),
                        server_kms,
                        listener,
                        shutdown,
                    )
                    .await
                    .expect("server run");
                })
            }
        };
        Self {
            addr,
            data_dir,
            backend,
            kms,
            _tmp: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory and store (a restart).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Like [`Self::restart`], after `tweak`ing the configuration.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        self.stop().await;
        let mut c = config(&self.data_dir);
        self.backend.configure(&mut c);
        tweak(&mut c);
        let mut next = Self::start_config(c).await;
        next._tmp = self._tmp.take();
        next
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task");
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        // The listener is bound before the server task starts, so connecting
        // succeeds as soon as the server accepts.
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn content(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn erasure(&self) -> ErasureServiceClient<Channel> {
        ErasureServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> KeyAdminServiceClient<Channel> {
        KeyAdminServiceClient::new(self.channel().await)
    }

    pub async fn holds(
        &self,
    ) -> sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient<Channel> {
        sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient::new(
            self.channel().await,
        )
    }
}

/// Access to what the gateway stored, below the API, whatever the backend.
/// Object keys are named `{space}/{pseudonym}/{id}` on both backends.
impl TestGateway {
    fn s3(&self) -> Option<(aws_sdk_s3::Client, &str)> {
        match &self.backend {
            Backend::Fs => None,
            Backend::S3 { endpoint, bucket } => {
                Some((s3env::client(endpoint, s3env::REGION), bucket.as_str()))
            }
        }
    }

    /// The stored (sealed) bytes of an object, if it exists.
    pub async fn stored_object(&self, space: &str, pseudonym: &str, id: &str) -> Option<Vec<u8>> {
        let Some((c, bucket)) = self.s3() else {
            let path = object_path(&self.data_dir, space, pseudonym, id);
            return match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {}: {e}", path.display()),
            };
        };
        let key = format!("{space}/{pseudonym}/{id}");
        match c.get_object().bucket(bucket).key(&key).send().await {
            Ok(o) => {
                // A key-slot patch lives in the object's metadata; these
                // bytes would not include it (and an overwrite drops it).
                assert!(
                    !o.metadata()
                        .is_some_and(|m| m.contains_key("sealgate-patch")),
                    "{key} carries a patch: its stored bytes are not the body alone"
                );
                Some(o.body.collect().await.unwrap().into_bytes().to_vec())
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    /// Replaces the stored bytes of an object (to corrupt or restore it).
    pub async fn overwrite_stored_object(
        &self,
        space: &str,
        pseudonym: &str,
        id: &str,
        bytes: &[u8],
    ) {
        let Some((c, bucket)) = self.s3() else {
            let path = object_path(&self.data_dir, space, pseudonym, id);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            return;
        };
        c.put_object()
            .bucket(bucket)
            .key(format!("{space}/{pseudonym}/{id}"))
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }

    /// Every key in the store, sorted: on the filesystem every file under
    /// `objects` (temporary files in `.tmp/` included), on S3 every object
    /// in the bucket; but not the store's deployment id, which is no object.
    pub async fn stored_keys(&self) -> Vec<String> {
        let mut keys = match &self.backend {
            Backend::Fs => {
                let root = self.data_dir.join("objects");
                files_under(&root)
                    .iter()
                    .map(|f| {
                        f.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            }
            Backend::S3 { endpoint, bucket } => s3env::all_keys(endpoint, bucket).await,
        };
        keys.retain(|k| {
            k != sealgate::blob::fs::STORE_ID_FILE && k != sealgate::blob::s3::STORE_ID_KEY
        });
        keys.sort();
        keys
    }

    /// The keys of every object stored for `pseudonym`, in any space.
    pub async fn user_objects(&self, pseudonym: &str) -> Vec<String> {
        self.stored_keys()
            .await
            .into_iter()
            .filter(|k| k.split('/').nth(1) == Some(pseudonym))
            .collect()
    }

    /// Unfinished uploads the store holds: temporary files on the
    /// filesystem, incomplete multipart uploads on S3.
    pub async fn leftovers(&self) -> usize {
        match &self.backend {
            Backend::Fs => tmp_files(&self.data_dir).len(),
            Backend::S3 { endpoint, bucket } => {
                match crate::support::s3s_env::incomplete_uploads(endpoint) {
                    Some(n) => n,
                    None => s3env::incomplete_uploads(endpoint, bucket).await,
                }
            }
        }
    }

    /// Asserts that the store holds nothing: no object and no leftover.
    pub async fn assert_nothing_stored(&self, what: &str) {
        assert_eq!(self.stored_keys().await, Vec::<String>::new(), "{what}");
        assert_eq!(self.leftovers().await, 0, "{what}: unfinished uploads");
    }

    /// Everything at rest, named: every file under the data directory (key
    /// store, keyring, and on the filesystem backend the objects), named
    /// relative to it, and on S3 also every object in the bucket, as
    /// `s3:{key}` (its body) and `s3:{key} (metadata)` (its content type
    /// and user metadata).
    pub async fn all_stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = read_tree(&self.data_dir);
        if let Backend::S3 { endpoint, bucket } = &self.backend {
            let c = s3env::client(endpoint, s3env::REGION);
            for (key, body) in s3env::all_objects(endpoint, bucket).await {
                let head = c
                    .head_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"));
                let mut meta = head.content_type().unwrap_or_default().as_bytes().to_vec();
                for (k, v) in head.metadata().into_iter().flatten() {
                    meta.extend_from_slice(format!("\n{k}: {v}").as_bytes());
                }
                out.push((format!("s3:{key} (metadata)"), meta));
                out.push((format!("s3:{key}"), body));
            }
        }
        out
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Uploads `data` in messages of `piece` bytes.
pub async fn put(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    data: &[u8],
    piece: usize,
) -> Result<pb::ObjectInfo, Status> {
    let mut msgs = vec![pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "image/jpeg".into(),
            attributes: [("origin".to_string(), "test".to_string())].into(),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(piece.max(1)).map(|c| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
    msgs.push(finish_msg(Some(data)));
    let r = client.put_object(futures_util::stream::iter(msgs)).await?;
    Ok(r.into_inner().info.expect("info"))
}

/// Downloads an object (or a range), checking the first message is the info.
pub async fn get(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    range: Option<(u64, Option<u64>)>,
) -> Result<(pb::ObjectInfo, Vec<u8>), Status> {
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(obj(user, space, id)),
            range: range.map(|(start, end)| pb::ByteRange { start, end }),
        })
        .await?
        .into_inner();
    let info = match stream.message().await?.and_then(|m| m.part) {
        Some(pb::get_object_response::Part::Info(i)) => i,
        other => panic!("first message must be the info, got {other:?}"),
    };
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(pb::get_object_response::Part::Data(d)) => out.extend_from_slice(&d),
            other => panic!("unexpected message {other:?}"),
        }
    }
    Ok((info, out))
}

/// A GetObject of a whole object by a client with HTTP/2 windows of
/// `window` bytes, after it has received at least `first` bytes of data:
/// what it has not read stays in the server. Returns the stream and the
/// bytes received.
pub async fn paused_download(
    gw: &TestGateway,
    user: &str,
    space: &str,
    id: &str,
    window: u32,
    first: usize,
) -> (tonic::Streaming<pb::GetObjectResponse>, Vec<u8>) {
    let channel = tonic::transport::Endpoint::from_shared(gw.endpoint())
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .unwrap();
    let mut client = ContentServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(obj(user, space, id)),
            range: None,
        })
        .await
        .expect("GetObject")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < first {
        match stream.message().await.expect("read").and_then(|m| m.part) {
            Some(pb::get_object_response::Part::Data(d)) => got.extend_from_slice(&d),
            Some(pb::get_object_response::Part::Info(_)) => {}
            None => panic!("stream ended early"),
        }
    }
    (stream, got)
}

pub fn obj(user: &str, space: &str, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: user.into(),
        space: space.into(),
        object_id: id.into(),
    }
}

/// Deterministic test bytes (`crypto::pattern`).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    crate::crypto::pattern(len, seed)
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Every file under `dir` with its bytes, named relative to `dir`.
///
/// SQLite may remove its `-wal` and `-shm` files while the key store closes
/// after a stop; a file vanishing mid-read restarts the listing, so the
/// result always covers one complete listing.
pub fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    'attempt: for _ in 0..20 {
        let mut out = Vec::new();
        for f in files_under(dir) {
            let bytes = match std::fs::read(&f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'attempt,
                Err(e) => panic!("read {}: {e}", f.display()),
            };
            let name = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.push((name, bytes));
        }
        return out;
    }
    panic!(
        "files under {} kept vanishing while being read",
        dir.display()
    );
}

/// The gateway's overall health status (`ServingStatus` as i32).
pub async fn health(gw: &TestGateway) -> i32 {
    let channel = tonic::transport::Channel::from_shared(gw.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Check")
        .into_inner()
        .status
}

/// The `ErrorInfo.reason` of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason)
}

/// The hex pseudonym of `user`, as KeyStatus reports it.
pub async fn pseudonym(gw: &TestGateway, user: &str) -> String {
    gw.admin()
        .await
        .key_status(pb::KeyStatusRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .expect("KeyStatus")
        .into_inner()
        .pseudonym
}

/// Where the filesystem store keeps an object.
pub fn object_path(data_dir: &Path, space: &str, pseudonym: &str, id: &str) -> PathBuf {
    data_dir
        .join("objects")
        .join(space)
        .join(pseudonym)
        .join(id)
}

/// The files in the store's temporary directory (uploads in progress).
pub fn tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("objects").join(".tmp"))
}

pub use crate::support::eventually;

/// The reasons each code may carry: read from the table in the proto's
/// header comment (`//   CODE   REASON   meaning`), so the proto is the one
/// list callers and tests both go by.
pub fn reasons_for(code: Code) -> Vec<&'static str> {
    const PROTO: &str = include_str!("../../../proto/sealgate/v1/sealgate.proto");
    let name = match code {
        Code::NotFound => "NOT_FOUND",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::DataLoss => "DATA_LOSS",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::Unavailable => "UNAVAILABLE",
        Code::Internal => "INTERNAL",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Aborted => "ABORTED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        _ => return Vec::new(),
    };
    PROTO
        .lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| {
            let mut words = l.strip_prefix("//   ")?.split_whitespace();
            (words.next()? == name).then(|| words.next()).flatten()
        })
        .collect()
}

/// Asserts that a status from the gateway carries its `google.rpc.ErrorInfo`
/// (domain `sealgate.v1`, a reason its code may carry) and, for
/// INVALID_ARGUMENT, a `google.rpc.BadRequest` field violation; returns the
/// reason.
#[track_caller]
pub fn check_details(s: &Status, what: &str) -> String {
    use tonic_types::StatusExt;
    let info = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo in {s:?}"));
    assert_eq!(info.domain, "sealgate.v1", "{what}");
    assert!(
        reasons_for(s.code()).contains(&info.reason.as_str()),
        "{what}: reason {} does not go with {:?}",
        info.reason,
        s.code()
    );
    if s.code() == Code::InvalidArgument {
        let bad = s
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{what}: no BadRequest in {s:?}"));
        assert!(!bad.field_violations.is_empty(), "{what}");
    }
    info.reason
}

/// Asserts that `result` failed with `code`, with the details every
/// gateway error carries ([`check_details`]); returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got success {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: unexpected status {s:?}");
            check_details(&s, what);
            s
        }
    }
}

/// Asserts that `result` failed with `code` and `reason`.
#[track_caller]
pub fn expect_reason<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected: &str,
    what: &str,
) -> Status {
    let s = expect_code(result, code, what);
    assert_eq!(reason(&s).as_deref(), Some(expected), "{what}: {s:?}");
    s
}

/// Asserts that `result` failed because the user is erased.
#[track_caller]
pub fn expect_erased<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) {
    let s = expect_code(result, Code::FailedPrecondition, what);
    assert_eq!(
        reason(&s).as_deref(),
        Some("USER_ERASED"),
        "{what}: ErrorInfo reason of {s:?}"
    );
}

/// The header message of an upload.
pub fn header_msg(user: &str, space: &str, id: &str) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "application/octet-stream".into(),
            attributes: Default::default(),
            ..Default::default()
        })),
    }
}

/// The finish message of an upload, with the SHA-256 of `plaintext` if given.
pub fn finish_msg(plaintext: Option<&[u8]>) -> pb::PutObjectRequest {
    let sha256 = plaintext.map_or_else(Vec::new, |p| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, p)
            .as_ref()
            .to_vec()
    });
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
            sha256: sha256.into(),
        })),
    }
}

/// A data message of an upload.
pub fn data_msg(bytes: impl Into<bytes::Bytes>) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(bytes.into())),
    }
}

/// HeadObject.
pub async fn head(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
) -> Result<pb::ObjectInfo, Status> {
    client
        .head_object(pb::HeadObjectRequest {
            object: Some(obj(user, space, id)),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// DeleteObject; whether something was deleted.
pub async fn delete(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
) -> Result<bool, Status> {
    client
        .delete_object(pb::DeleteObjectRequest {
            object: Some(obj(user, space, id)),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().deleted)
}

/// One ListObjects page.
pub async fn list_page(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListObjectsResponse, Status> {
    client
        .list_objects(pb::ListObjectsRequest {
            user_id: user.into(),
            space: space.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every object of a user in a space, following page tokens.
pub async fn list_all(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
) -> Result<Vec<(String, u64)>, Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_page(client, user, space, 0, &token).await?;
        out.extend(page.objects.into_iter().map(|o| (o.object_id, o.size)));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// PutItem with a fixed content type and attributes.
pub async fn put_item(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    content: &[u8],
) -> Result<pb::ObjectInfo, Status> {
    client
        .put_item(pb::PutItemRequest {
            user_id: user.into(),
            space: space.into(),
            item_id: id.into(),
            content: bytes::Bytes::copy_from_slice(content),
            content_type: "text/plain".into(),
            attributes: [("kind".to_string(), "comment".to_string())].into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().info.expect("info"))
}

/// GetItems.
pub async fn get_items(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    ids: &[&str],
) -> Result<Vec<pb::ItemResult>, Status> {
    client
        .get_items(pb::GetItemsRequest {
            user_id: user.into(),
            space: space.into(),
            item_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .map(|r| r.into_inner().items)
}

/// How long an erasure's garbage collection may take in tests.
pub const GC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// GetErasure.
pub async fn erasure_status(gw: &TestGateway, user: &str) -> pb::ErasureStatus {
    try_erasure_status(gw, user).await.expect("GetErasure")
}

/// Erases `user`.
pub async fn try_erase(gw: &TestGateway, user: &str) -> Result<pb::EraseReceipt, Status> {
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// GetErasure of `user`.
pub async fn try_erasure_status(gw: &TestGateway, user: &str) -> Result<pb::ErasureStatus, Status> {
    gw.erasure()
        .await
        .get_erasure(pb::GetErasureRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// KeyStatus of `user`.
pub async fn key_status(gw: &TestGateway, user: &str) -> pb::KeyStatusResponse {
    gw.admin()
        .await
        .key_status(pb::KeyStatusRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .expect("KeyStatus")
        .into_inner()
}

/// Waits until the user's GC job is DONE (failing at once if it FAILED);
/// returns the final status.
pub async fn wait_gc_done(gw: &TestGateway, user: &str) -> pb::ErasureStatus {
    let last = std::cell::RefCell::new(None);
    eventually("the GC job is DONE", GC_DEADLINE, || async {
        let s = erasure_status(gw, user).await;
        let gc = s.gc.clone().expect("GetErasure reports the GC job");
        assert_ne!(gc.state, pb::JobState::Failed as i32, "GC failed: {gc:?}");
        let done = gc.state == pb::JobState::Done as i32;
        *last.borrow_mut() = Some(s);
        done
    })
    .await;
    last.into_inner().expect("polled at least once")
}
