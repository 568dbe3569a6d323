//! Gateway tests: real gRPC over a loopback socket on port 0, against a
//! server started in-process on a fresh data directory.

mod at_rest;
mod bad_input;
mod crash;
mod erasure;
mod roundtrip;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::config::Config;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A default embedded configuration on `data_dir`.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::load(None, Vec::<(String, String)>::new()).expect("default config");
    c.data_dir = data_dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

impl TestGateway {
    /// Starts a gateway on a new temporary data directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a gateway on a new temporary data directory after `tweak`ing
    /// its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = config(tmp.path());
        tweak(&mut c);
        let mut gw = Self::start_config(c).await;
        gw._tmp = Some(tmp);
        gw
    }

    /// Starts a gateway with exactly this configuration.
    pub async fn start_config(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let data_dir = config.data_dir.clone();
        let handle = tokio::spawn(async move {
            sealgate::server::run(config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server run");
        });
        Self {
            addr,
            data_dir,
            _tmp: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory (a restart).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let mut next = Self::start_config(config(&self.data_dir)).await;
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

    async fn channel(&self) -> Channel {
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
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "image/jpeg".into(),
            attributes: [("origin".to_string(), "test".to_string())].into(),
        })),
    }];
    msgs.extend(data.chunks(piece.max(1)).map(|c| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
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

pub fn obj(user: &str, space: &str, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: user.into(),
        space: space.into(),
        object_id: id.into(),
    }
}

/// Deterministic test bytes (xorshift64*, the same bytes as
/// `crypto::pattern`, kept here so this suite stands on its own).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
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

/// Polls `cond` until it holds, failing the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts that `result` failed with `code`; returns the status.
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
            s
        }
    }
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
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "application/octet-stream".into(),
            attributes: Default::default(),
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
    gw.erasure()
        .await
        .get_erasure(pb::GetErasureRequest {
            user_id: user.into(),
        })
        .await
        .expect("GetErasure")
        .into_inner()
}

/// Waits until the user's GC job is DONE; returns the final status.
pub async fn wait_gc_done(gw: &TestGateway, user: &str) -> pb::ErasureStatus {
    let deadline = tokio::time::Instant::now() + GC_DEADLINE;
    loop {
        let s = erasure_status(gw, user).await;
        let gc = s.gc.clone().expect("GetErasure reports the GC job");
        assert_ne!(gc.state, pb::JobState::Failed as i32, "GC failed: {gc:?}");
        if gc.state == pb::JobState::Done as i32 {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GC job not DONE after {GC_DEADLINE:?}: {gc:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
