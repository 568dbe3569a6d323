//! Slow clients, as a hostile caller would run them, to measure what a
//! gateway holds for them (`benches/slow_clients.sh` samples the server's
//! memory meanwhile).
//!
//! ```text
//! slow_clients ENDPOINT readers N SECONDS   # N GetObject streams that never read
//! slow_clients ENDPOINT trickle N SECONDS   # N PutObject streams sending 1 byte a second
//! ```
//!
//! Each stream has its own connection. The streams are opened, "open" is
//! printed, and they are held for SECONDS (or until the server ends them),
//! then the program prints how many the server ended and exits.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const USER: &str = "slow-client";
const SPACE: &str = "moments";
/// The object the readers ask for: far more than the transport buffers.
const OBJECT_BYTES: usize = 16 << 20;

async fn client(endpoint: &str) -> ContentServiceClient<Channel> {
    let channel = Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    ContentServiceClient::new(channel).max_encoding_message_size(8 << 20)
}

fn header(id: &str) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            user_id: USER.into(),
            space: SPACE.into(),
            object_id: id.into(),
            ..Default::default()
        })),
    }
}

fn data(bytes: Vec<u8>) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(bytes.into())),
    }
}

fn finish() -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
            sha256: Default::default(),
        })),
    }
}

/// Stores the object the readers ask for.
async fn store_object(endpoint: &str) {
    let mut c = client(endpoint).await;
    let mut msgs = vec![header("big")];
    msgs.extend((0..OBJECT_BYTES / (1 << 20)).map(|i| data(vec![i as u8; 1 << 20])));
    msgs.push(finish());
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .expect("store the object");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, mode, n, seconds] = &args[..] else {
        eprintln!("usage: slow_clients ENDPOINT readers|trickle N SECONDS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let hold = Duration::from_secs(seconds.parse().expect("SECONDS"));
    let mut tasks = Vec::with_capacity(n);
    match mode.as_str() {
        "readers" => {
            store_object(endpoint).await;
            for _ in 0..n {
                let mut c = client(endpoint).await;
                let stream = c
                    .get_object(pb::GetObjectRequest {
                        object: Some(pb::ObjectRef {
                            user_id: USER.into(),
                            space: SPACE.into(),
                            object_id: "big".into(),
                        }),
                        range: None,
                    })
                    .await
                    .expect("GetObject")
                    .into_inner();
                // Never read; the stream (and its connection) is kept.
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    drop((stream, c));
                    false
                }));
            }
        }
        "trickle" => {
            for i in 0..n {
                let c = client(endpoint).await;
                let (tx, rx) = mpsc::channel(4);
                tx.send(header(&format!("trickle-{i}"))).await.unwrap();
                tasks.push(tokio::spawn(async move {
                    // A clone on the same connection makes the call; `c`
                    // keeps the connection after the call ends.
                    let mut caller = c.clone();
                    let call = caller.put_object(ReceiverStream::new(rx));
                    tokio::pin!(call);
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let until = tokio::time::Instant::now() + hold;
                    loop {
                        tokio::select! {
                            // The server answered: it ended the upload. The
                            // connection is kept until the end all the same.
                            _ = &mut call => {
                                tokio::time::sleep_until(until).await;
                                drop(c);
                                return true;
                            }
                            _ = tick.tick() => {
                                if tokio::time::Instant::now() >= until {
                                    return false;
                                }
                                let _ = tx.send(data(vec![0u8])).await;
                            }
                        }
                    }
                }));
            }
        }
        other => panic!("unknown mode {other}"),
    }
    println!("open: {n} {mode}");
    let mut ended = 0;
    for t in tasks {
        if t.await.unwrap() {
            ended += 1;
        }
    }
    println!("done: the server ended {ended} of {n}");
}
