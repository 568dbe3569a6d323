//! SIGKILL of the real server process during uploads: after a restart the
//! completed object is intact and the interrupted ones never appear.
//! Filesystem only: it checks the store's `objects/.tmp` across a crash of
//! the real binary, which would reach S3 through the AWS credential chain.

use std::net::SocketAddr;
use std::time::Duration;

use sealgate::api::pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::*;
use crate::support::host::free_port;
use crate::support::serve::{Serve, ServeProcess};

const SPACE: &str = "moments";
const USER: &str = "crash-user";
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary running as a child process; killed when dropped.
struct ServerProcess {
    process: ServeProcess,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `sealgate serve` on `data_dir` and waits until it listens.
    async fn start(data_dir: &Path) -> Self {
        // The port is picked before the child binds it, so another process
        // may take it meanwhile: only then, try again on another port.
        for _ in 0..3 {
            match Self::try_start(data_dir).await {
                Ok(server) => return server,
                Err(log) if log.contains("cannot listen") => continue,
                Err(log) => panic!("sealgate exited before listening:\n{log}"),
            }
        }
        panic!("sealgate could not listen on three free ports");
    }

    /// One attempt; the child's log if it exits before listening.
    async fn try_start(data_dir: &Path) -> Result<Self, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut process = Serve::new(data_dir).listen(addr).spawn();
        match process.ready_within(READY_DEADLINE).await {
            Ok(_) => Ok(Self { process, addr }),
            Err(log) => {
                let status = process.child.wait();
                Err(format!("exit status {status:?}\n{log}"))
            }
        }
    }

    async fn content(&self) -> ContentServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        ContentServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// SIGKILL, and reap the process.
    fn kill(&mut self) {
        self.process.child.kill().expect("SIGKILL");
        let status = self.process.child.wait().expect("wait");
        assert!(!status.success(), "killed server exited with {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_leaves_only_complete_objects() {
    const UPLOADS: usize = 3;
    const PIECE: usize = 256 * 1024;
    /// Each interrupted object is 20 MiB, of which the first 4 MiB are sent
    /// before the crash.
    const OBJECT: usize = 20 << 20;
    const SENT: usize = 4 << 20;
    const { assert!(SENT < OBJECT) };
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path();
    let mut server = ServerProcess::start(data_dir).await;

    // One object completed before the crash.
    let done_body = data(300_000, 42);
    let mut c = server.content().await;
    put(&mut c, USER, SPACE, "completed", &done_body, 64 * 1024)
        .await
        .expect("completed upload");

    // Large uploads, each on its own connection, fed through channels so
    // they stay in flight: part of each object is sent, then they stall.
    let mut senders = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::PutObjectRequest>(8);
        let mut client = server.content().await;
        uploads.push(tokio::spawn(async move {
            client.put_object(ReceiverStream::new(rx)).await
        }));
        tx.send(header_msg(USER, SPACE, &format!("interrupted-{i}")))
            .await
            .unwrap();
        senders.push(tx);
    }
    // Send the first few MiB of each 20 MiB object.
    for piece in 0..SENT / PIECE {
        for (i, tx) in senders.iter().enumerate() {
            tx.send(data_msg(data(PIECE, (i * 1000 + piece) as u64)))
                .await
                .expect("upload in progress");
        }
    }
    // Under way: every upload has written bytes to its temporary file.
    eventually(
        "every upload has a non-empty temporary file",
        Duration::from_secs(20),
        || async {
            let files = tmp_files(data_dir);
            files.len() == UPLOADS
                && files
                    .iter()
                    .all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
        },
    )
    .await;

    server.kill();

    // Every interrupted upload fails; none can have succeeded.
    for (i, upload) in uploads.into_iter().enumerate() {
        let r = upload.await.expect("upload task");
        assert!(
            r.is_err(),
            "upload {i} must fail when the server dies: {r:?}"
        );
    }
    drop(senders);
    // The crash left the partial uploads behind, for the restart to clean.
    assert_eq!(
        tmp_files(data_dir).len(),
        UPLOADS,
        "partial uploads before restart"
    );

    let server = ServerProcess::start(data_dir).await;
    assert_eq!(
        tmp_files(data_dir),
        Vec::<PathBuf>::new(),
        "temporary files removed on start"
    );
    let mut c = server.content().await;
    let (info, got) = get(&mut c, USER, SPACE, "completed", None)
        .await
        .expect("completed object after the crash");
    assert_eq!(info.size, done_body.len() as u64);
    assert!(got == done_body, "completed object intact");
    for i in 0..UPLOADS {
        let id = format!("interrupted-{i}");
        expect_code(
            get(&mut c, USER, SPACE, &id, None).await,
            Code::NotFound,
            &id,
        );
        expect_code(head(&mut c, USER, SPACE, &id).await, Code::NotFound, &id);
    }
    assert_eq!(
        list_all(&mut c, USER, SPACE).await.expect("list"),
        vec![("completed".to_string(), done_body.len() as u64)]
    );
    // The restarted server works normally.
    put(&mut c, USER, SPACE, "after", &data(50_000, 1), 8192)
        .await
        .expect("put after restart");
    let (_, got) = get(&mut c, USER, SPACE, "after", None).await.expect("get");
    assert_eq!(got, data(50_000, 1));
}
