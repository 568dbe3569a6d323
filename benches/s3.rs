//! The gateway in front of S3 against aws-sdk-s3 straight to the same S3
//! server (plaintext), in the same run.
//!
//! ```text
//! cargo bench --bench s3            # ROUNDS=8 ITEMS=300 by default
//! ```
//!
//! Starts its own moto server (as the tests do), a gateway in-process on the
//! S3 backend, and alternates gateway and direct rounds so that drift in the
//! machine's load hits both sides alike. Prints throughput for put+get of
//! 4 MiB objects, ops/s for put+get of 1 KiB items, the latency of a
//! 1,000-entry ListObjects page (env LIST) against a ListObjectsV2 of the
//! same prefix, and the ratios gateway / direct.
//!
//! Under `cargo test --benches` (no `--bench` argument) it is a smoke run:
//! one round, 50 items, a page of 20 (unless the environment says
//! otherwise).

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

/// The tests' moto launcher and S3 clients (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod s3env;
}
use support::s3env;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::blob::s3::S3BlobStore;
use tonic::transport::Channel;

const OBJECT: usize = 4 << 20;
const ITEM: usize = 1024;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn gateway_put(client: &mut ContentServiceClient<Channel>, id: &str, body: &[u8]) {
    let mut msgs = vec![pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: Some(body.len() as u64),
            user_id: "bench-user".into(),
            space: "channels".into(),
            object_id: id.into(),
            content_type: "application/octet-stream".into(),
            attributes: Default::default(),
            ..Default::default()
        })),
    }];
    msgs.extend(body.chunks(1 << 20).map(|c| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
    msgs.push(pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(
            pb::PutObjectFinish::default(),
        )),
    });
    client
        .put_object(futures_util::stream::iter(msgs))
        .await
        .unwrap();
}

async fn gateway_get(client: &mut ContentServiceClient<Channel>, id: &str) -> usize {
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(pb::ObjectRef {
                user_id: "bench-user".into(),
                space: "channels".into(),
                object_id: id.into(),
            }),
            range: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(pb::get_object_response::Part::Data(d)) = m.part {
            n += d.len();
        }
    }
    n
}

async fn direct_put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
}

async fn direct_get(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> usize {
    let out = c.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().len()
}

fn per_sec(count: f64, d: Duration) -> f64 {
    count / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // criterion-style flags (`--bench`) are accepted; without `--bench`,
    // a smoke run.
    let smoke = smoke();
    let rounds = env_or("ROUNDS", if smoke { 1 } else { 8 });
    let items = env_or("ITEMS", if smoke { 50 } else { 300 });

    let moto = s3env::Moto::start();
    let endpoint = moto.endpoint();
    let (gw_bucket, direct_bucket) = (s3env::bucket_name(), s3env::bucket_name());
    s3env::create_bucket(&endpoint, &gw_bucket, s3env::REGION, false).await;
    s3env::create_bucket(&endpoint, &direct_bucket, s3env::REGION, false).await;

    let tmp = tempfile::tempdir().unwrap();
    let mut config = sealgate::config::Config::load(None, Vec::<(String, String)>::new()).unwrap();
    config.data_dir = tmp.path().to_path_buf();
    // Two gateways in this process: no metrics endpoint for either.
    config.metrics.listen = String::new();
    config.blob.backend = sealgate::config::BlobBackend::S3;
    config.s3.bucket = gw_bucket.clone();
    config.s3.endpoint = Some(endpoint.clone());
    config.s3.force_path_style = true;
    let store = S3BlobStore::connect(&s3env::settings(&endpoint, &gw_bucket))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sealgate::server::serve(
        config,
        Arc::new(store),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gw = ContentServiceClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let direct = s3env::client(&endpoint, s3env::REGION);

    let object = bytes(OBJECT, 1);
    let item = bytes(ITEM, 2);
    // Warm up both paths (connections, key creation).
    gateway_put(&mut gw, "warm", &object).await;
    assert_eq!(gateway_get(&mut gw, "warm").await, OBJECT);
    direct_put(&direct, &direct_bucket, "warm", &object).await;
    assert_eq!(direct_get(&direct, &direct_bucket, "warm").await, OBJECT);

    // [put, get] times of each side.
    let (mut gw_obj, mut direct_obj) = ([Duration::ZERO; 2], [Duration::ZERO; 2]);
    for r in 0..rounds {
        let id = format!("obj-{r}");
        let t = Instant::now();
        gateway_put(&mut gw, &id, &object).await;
        gw_obj[0] += t.elapsed();
        let t = Instant::now();
        assert_eq!(gateway_get(&mut gw, &id).await, OBJECT);
        gw_obj[1] += t.elapsed();
        let t = Instant::now();
        direct_put(&direct, &direct_bucket, &id, &object).await;
        direct_obj[0] += t.elapsed();
        let t = Instant::now();
        assert_eq!(direct_get(&direct, &direct_bucket, &id).await, OBJECT);
        direct_obj[1] += t.elapsed();
    }

    // The same gateway code on the filesystem store: what the gateway itself
    // (gRPC, crypto) costs, apart from S3.
    let fs_dir = tempfile::tempdir().unwrap();
    let mut fs_config =
        sealgate::config::Config::load(None, Vec::<(String, String)>::new()).unwrap();
    fs_config.data_dir = fs_dir.path().to_path_buf();
    fs_config.metrics.listen = String::new();
    let fs_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fs_addr = fs_listener.local_addr().unwrap();
    let (fs_stop, fs_stopped) = tokio::sync::oneshot::channel::<()>();
    let fs_server = tokio::spawn(sealgate::server::run(fs_config, fs_listener, async {
        let _ = fs_stopped.await;
    }));
    let fs_channel = Channel::from_shared(format!("http://{fs_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut fs_gw = ContentServiceClient::new(fs_channel);
    let mut fs_obj = [Duration::ZERO; 2];
    gateway_put(&mut fs_gw, "warm", &object).await;
    for r in 0..rounds {
        let id = format!("obj-{r}");
        let t = Instant::now();
        gateway_put(&mut fs_gw, &id, &object).await;
        fs_obj[0] += t.elapsed();
        let t = Instant::now();
        assert_eq!(gateway_get(&mut fs_gw, &id).await, OBJECT);
        fs_obj[1] += t.elapsed();
    }
    let _ = fs_stop.send(());
    fs_server.await.unwrap().unwrap();

    let (mut gw_items, mut direct_items) = (Duration::ZERO, Duration::ZERO);
    for batch in 0..items / 50 {
        let t = Instant::now();
        for i in 0..50 {
            let id = format!("item-{batch}-{i}");
            gw.put_item(pb::PutItemRequest {
                user_id: "bench-user".into(),
                space: "moments".into(),
                item_id: id.clone(),
                content: item.clone().into(),
                content_type: "text/plain".into(),
                attributes: Default::default(),
                ..Default::default()
            })
            .await
            .unwrap();
            let got = gw
                .get_items(pb::GetItemsRequest {
                    user_id: "bench-user".into(),
                    space: "moments".into(),
                    item_ids: vec![id],
                })
                .await
                .unwrap()
                .into_inner();
            assert!(matches!(
                got.items[0].result,
                Some(pb::item_result::Result::Item(_))
            ));
        }
        gw_items += t.elapsed();
        let t = Instant::now();
        for i in 0..50 {
            let key = format!("item-{batch}-{i}");
            direct_put(&direct, &direct_bucket, &key, &item).await;
            assert_eq!(direct_get(&direct, &direct_bucket, &key).await, ITEM);
        }
        direct_items += t.elapsed();
    }

    // Listings: one ListObjects page of LIST entries through the gateway
    // against one ListObjectsV2 of the same prefix of the same bucket.
    let listed = env_or("LIST", if smoke { 20 } else { 1000 });
    {
        use futures_util::StreamExt;
        let puts = futures_util::stream::iter(0..listed).map(|i| {
            let mut gw = gw.clone();
            let item = item.clone();
            async move {
                gw.put_item(pb::PutItemRequest {
                    user_id: "list-user".into(),
                    space: "moments".into(),
                    item_id: format!("entry-{i:05}"),
                    content: item.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        });
        puts.buffer_unordered(16).collect::<Vec<()>>().await;
    }
    let pseudonym = sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .key_status(pb::KeyStatusRequest {
        user_id: "list-user".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .pseudonym;
    let prefix = format!("moments/{pseudonym}/");
    let (mut gw_list, mut direct_list) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        let page = gw
            .list_objects(pb::ListObjectsRequest {
                user_id: "list-user".into(),
                space: "moments".into(),
                page_size: u32::try_from(listed).unwrap(),
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        gw_list += t.elapsed();
        assert_eq!(page.objects.len(), listed);
        let t = Instant::now();
        let out = direct
            .list_objects_v2()
            .bucket(&gw_bucket)
            .prefix(&prefix)
            .max_keys(i32::try_from(listed).unwrap())
            .send()
            .await
            .unwrap();
        direct_list += t.elapsed();
        assert_eq!(out.contents().len(), listed);
    }

    let mib = (rounds * OBJECT) as f64 / (1 << 20) as f64;
    let ops = ((items / 50) * 50 * 2) as f64;
    let both = |t: [Duration; 2]| t[0] + t[1];
    let (g, d) = (
        per_sec(2.0 * mib, both(gw_obj)),
        per_sec(2.0 * mib, both(direct_obj)),
    );
    println!("4 MiB objects, put+get, {rounds} rounds: gateway {g:.1} MiB/s, direct {d:.1} MiB/s, ratio {:.2}", g / d);
    for (i, op) in ["put", "get"].iter().enumerate() {
        let (g, d) = (per_sec(mib, gw_obj[i]), per_sec(mib, direct_obj[i]));
        let f = per_sec(mib, fs_obj[i]);
        println!("  {op}: gateway {g:.1} MiB/s, direct {d:.1} MiB/s, ratio {:.2} (same gateway on the filesystem store: {f:.1} MiB/s)", g / d);
    }
    let (g, d) = (per_sec(ops, gw_items), per_sec(ops, direct_items));
    println!(
        "1 KiB items, put+get, {} ops: gateway {g:.0} ops/s, direct {d:.0} ops/s, ratio {:.2}",
        ops,
        g / d
    );

    let (g, d) = (gw_list / rounds as u32, direct_list / rounds as u32);
    println!(
        "ListObjects page of {listed} entries, {rounds} rounds: gateway {:.1} ms, direct ListObjectsV2 {:.1} ms, ratio {:.1}",
        g.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3,
        g.as_secs_f64() / d.as_secs_f64()
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    moto.stop();
}
