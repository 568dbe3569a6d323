//! The Prometheus endpoint of the real binary: after a known sequence of
//! calls, a scrape over a real socket shows the exact counts, and no label
//! holds a user id, a pseudonym or an object id.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;

use crate::support::eventually;
use crate::support::metrics::{metrics_address, sample, series, value};
use crate::support::serve::{Serve, Served};

const CONTENT: &str = "sealgate.v1.ContentService";
/// The calls by method and code. One name for the check that none is
/// counted yet and for those of the counts: misspelled, the counts fail.
const REQUESTS: &str = "sealgate_requests_total";

/// The calls of ContentService `method` ended with `code`; `None` when
/// none did (the series does not exist).
fn requests(text: &str, method: &str, code: &str) -> Option<f64> {
    sample(
        text,
        REQUESTS,
        &[("method", &format!("{CONTENT}/{method}")), ("code", code)],
    )
}

/// Every series of the family `name`, as (label values in label-name
/// order, value): for comparing a whole family, so that a series expected
/// absent cannot pass through a misspelled label.
fn family(text: &str, name: &str) -> Vec<(Vec<String>, f64)> {
    let mut all: Vec<(Vec<String>, f64)> = series(text, name)
        .into_iter()
        .map(|(labels, v)| (labels.into_values().collect(), v))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The expected rows of [`family`], written as (label values, value).
fn rows(expected: &[(&[&str], f64)]) -> Vec<(Vec<String>, f64)> {
    let mut all: Vec<(Vec<String>, f64)> = expected
        .iter()
        .map(|(labels, v)| (labels.iter().map(|l| l.to_string()).collect(), *v))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Lookups in a key cache (every series exists from the start).
fn cache(text: &str, level: &str, result: &str) -> f64 {
    value(
        text,
        "sealgate_key_cache_requests_total",
        &[("level", level), ("result", result)],
    )
}

/// Keys unwrapped under a key of `level` (every series exists from the
/// start).
fn unwraps(text: &str, level: &str) -> f64 {
    value(text, "sealgate_key_unwraps_total", &[("level", level)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_the_exact_counts_of_known_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Served::start(&tmp.path().join("data"), &[]).await;
    let mut client = server.content().await;
    // Users, object ids and items no label may show.
    let (user, gone) = ("metrics-user-5c1d", "metrics-gone-user-77ab");
    let body = crate::support::gateway::data(300_000, 9);

    // Before any call: no call counted (no series at all), no stream in
    // flight.
    let text = server.scrape().await;
    assert_eq!(series(&text, REQUESTS), [], "{text}");
    assert_eq!(value(&text, "sealgate_inflight_streams", &[]), 0.0);

    // 1. An object up (3 messages of 100,000 bytes) and down.
    crate::support::gateway::put(
        &mut client,
        user,
        "moments",
        "metrics-object-a",
        &body,
        100_000,
    )
    .await
    .unwrap();
    let (_, back) =
        crate::support::gateway::get(&mut client, user, "moments", "metrics-object-a", None)
            .await
            .unwrap();
    assert_eq!(back, body);
    // 2. HeadObject of an object that does not exist.
    let missing = client
        .head_object(pb::HeadObjectRequest {
            object: Some(crate::support::gateway::obj(
                user,
                "moments",
                "metrics-missing",
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // 3. An item of 1,000 bytes, read back with one that does not exist.
    crate::support::gateway::put_item(
        &mut client,
        user,
        "channels",
        "metrics-item-b",
        &[7u8; 1000],
    )
    .await
    .unwrap();
    let items = crate::support::gateway::get_items(
        &mut client,
        user,
        "channels",
        &["metrics-item-b", "metrics-item-none"],
    )
    .await
    .unwrap();
    assert!(matches!(
        items[0].result,
        Some(pb::item_result::Result::Item(_))
    ));
    // 4. Another user with one item, erased: one GC job, run to its end.
    crate::support::gateway::put_item(&mut client, gone, "channels", "metrics-item-c", b"bye")
        .await
        .unwrap();
    ErasureServiceClient::new(server.channel().await)
        .erase_user(pb::EraseUserRequest {
            user_id: gone.into(),
            after_seconds: 0,
        })
        .await
        .unwrap();
    let last = std::cell::RefCell::new(String::new());
    eventually(
        "the scrape shows the GC job done",
        Duration::from_secs(30),
        || async {
            let text = server.scrape().await;
            let done = sample(
                &text,
                "sealgate_jobs",
                &[("kind", "erasure_gc"), ("state", "done")],
            ) == Some(1.0);
            *last.borrow_mut() = text;
            done
        },
    )
    .await;
    let text = last.into_inner();
    assert_eq!(
        value(
            &text,
            "sealgate_jobs",
            &[("kind", "erasure_gc"), ("state", "pending")]
        ),
        0.0,
        "{text}"
    );

    // Calls, by method and code.
    assert_eq!(requests(&text, "PutObject", "OK"), Some(1.0), "{text}");
    assert_eq!(requests(&text, "GetObject", "OK"), Some(1.0), "{text}");
    assert_eq!(
        requests(&text, "HeadObject", "NOT_FOUND"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests(&text, "PutItem", "OK"), Some(2.0), "{text}");
    assert_eq!(requests(&text, "GetItems", "OK"), Some(1.0), "{text}");
    // Every call counted, and nothing else: no HeadObject OK, no other
    // method or code (labels: code, method).
    let erase_user = "sealgate.v1.ErasureService/EraseUser";
    let method = |m: &str| format!("{CONTENT}/{m}");
    let (put_object, get_object, head_object, put_item, get_items) = (
        method("PutObject"),
        method("GetObject"),
        method("HeadObject"),
        method("PutItem"),
        method("GetItems"),
    );
    assert_eq!(
        family(&text, REQUESTS),
        rows(&[
            (&["OK", &put_object], 1.0),
            (&["OK", &get_object], 1.0),
            (&["NOT_FOUND", &head_object], 1.0),
            (&["OK", &put_item], 2.0),
            (&["OK", &get_items], 1.0),
            (&["OK", erase_user], 1.0),
        ]),
        "{text}"
    );
    // One duration observed per call.
    for method in ["PutObject", "GetObject", "HeadObject", "GetItems"] {
        assert_eq!(
            value(
                &text,
                "sealgate_request_duration_seconds_count",
                &[("method", &format!("{CONTENT}/{method}"))]
            ),
            1.0,
            "{method}\n{text}"
        );
    }
    // Plaintext bytes: the object both ways, the items in (1,000 + 3) and
    // the one found out (1,000).
    assert_eq!(
        value(&text, "sealgate_bytes_total", &[("direction", "in")]),
        301_003.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "sealgate_bytes_total", &[("direction", "out")]),
        301_000.0,
        "{text}"
    );
    // Key caches. A user's first write misses twice: no key yet (one is
    // made, under the shard's KEK, made and cached as it is), then the new
    // key is loaded: a KEK cache hit and one user key unwrapped under it.
    // Every later lookup of the user's keys hits: GetObject's open (one
    // lookup gives the check and the key: 1), HeadObject's check (1),
    // PutItem's key (1), GetItems' check (1), the item found (1) and the
    // one not (check: 1). (A write's check after its commit reads the key
    // store, not the cache.)
    assert_eq!(cache(&text, "user", "miss"), 4.0, "{text}");
    assert_eq!(cache(&text, "user", "hit"), 6.0, "{text}");
    assert_eq!(cache(&text, "kek", "miss"), 0.0, "{text}");
    // No KEK is ever unwrapped in this process (each was made here); one
    // user key per user is.
    assert_eq!(unwraps(&text, "master"), 0.0, "{text}");
    assert_eq!(unwraps(&text, "kek"), 2.0, "{text}");
    // A data key per object opened: GetObject, and the item found.
    assert_eq!(unwraps(&text, "user"), 2.0, "{text}");
    // Object store operations, the whole family (labels: op, outcome):
    // startup reads the new store's id, records it and reads it back (the
    // health probe reads it through an unmetered handle); three objects
    // written; two opened (three reads each: the fixed header, the header,
    // the body), two not found; the GC lists both spaces, deletes the
    // erased user's item and lists its space again. No abort, no error.
    assert_eq!(
        family(&text, "sealgate_storage_requests_total"),
        rows(&[
            (&["store_id", "ok"], 3.0),
            (&["create", "ok"], 3.0),
            (&["commit", "ok"], 3.0),
            (&["open", "ok"], 2.0),
            (&["open", "not_found"], 2.0),
            (&["read", "ok"], 6.0),
            (&["list", "ok"], 3.0),
            (&["delete", "ok"], 1.0),
        ]),
        "{text}"
    );
    // Every series is labelled with fixed words only.
    for needle in [
        user,
        gone,
        "metrics-object-a",
        "metrics-missing",
        "metrics-item",
    ] {
        assert!(!text.contains(needle), "{needle} in the scrape:\n{text}");
    }
    // No label value looks like a pseudonym or a generated id (a long hex
    // run).
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split_once('}').expect("closed labels").0;
        for value in labels.split(',').filter_map(|l| l.split_once('=')) {
            let hex_run = value
                .1
                .split(|c: char| !c.is_ascii_hexdigit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            assert!(hex_run < 16, "an id-like label value: {line}");
        }
    }
    assert_eq!(value(&text, "sealgate_inflight_streams", &[]), 0.0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // The second user's first write found its KEK cached when both users
    // fall in one shard (the KEK made by the first): one hit more.
    let hierarchy = KeyAdminServiceClient::new(server.channel().await)
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hierarchy
        .expect("the hierarchy's status");
    let kek_hits = match hierarchy.shards_with_kek {
        2 => 2.0,
        1 => 3.0,
        n => panic!("{n} shards with a KEK"),
    };
    assert_eq!(cache(&text, "kek", "hit"), kek_hits, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_only_metrics_and_an_empty_address_turns_it_off() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Served::start(&tmp.path().join("data"), &[]).await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.metrics)
            .await
            .unwrap();
        tcp.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    }
    drop(server);

    let mut off = Serve::new(&tmp.path().join("off"))
        .env("SEALGATE_METRICS_LISTEN", "")
        .spawn();
    off.ready_within(Duration::from_secs(60))
        .await
        .unwrap_or_else(|log| panic!("sealgate did not start:\n{log}"));
    let log = off.stop_and_read_log().await;
    assert!(metrics_address(&log).is_none(), "{log}");
}

/// The real binary with master keys in KMS (moto's): the scrape counts
/// the KMS requests that left the process. A new deployment wraps its
/// naming key (Encrypt) and reads it back (Decrypt); the first KEK is one
/// Encrypt; after a restart, sixteen concurrent cold reads of the one
/// shard's users cost one Decrypt beside the naming key's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_requests_are_counted_as_they_leave_the_process() {
    const USERS: usize = 16;
    let arn = crate::support::kms_env::create_key().await;
    let endpoint = crate::support::s3env::shared().endpoint();
    let mut env = crate::support::kms_env::serve_env(&arn, &endpoint);
    env.push(("SEALGATE_KEYSTORE_SHARDS", "1"));
    // The whole family (labels: op, outcome): every request ended ok.
    let kms = |text: &str| family(text, "sealgate_kms_requests_total");
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let server = Served::start(&data_dir, &env).await;
    let text = server.scrape().await;
    assert_eq!(
        kms(&text),
        rows(&[(&["encrypt", "ok"], 1.0), (&["decrypt", "ok"], 1.0)]),
        "{text}"
    );
    let mut client = server.content().await;
    for u in 0..USERS {
        let body = crate::support::gateway::data(1_000, u as u64);
        crate::support::gateway::put(
            &mut client,
            &format!("kms-{u}"),
            "moments",
            "pic",
            &body,
            1_000,
        )
        .await
        .expect("put");
    }
    let text = server.scrape().await;
    assert_eq!(
        kms(&text),
        rows(&[(&["encrypt", "ok"], 2.0), (&["decrypt", "ok"], 1.0)]),
        "{text}"
    );
    drop(client);
    drop(server);

    let server = Served::start(&data_dir, &env).await;
    let client = server.content().await;
    let reads = (0..USERS).map(|u| {
        let mut c = client.clone();
        async move {
            let (_, got) =
                crate::support::gateway::get(&mut c, &format!("kms-{u}"), "moments", "pic", None)
                    .await
                    .expect("get");
            assert_eq!(got, crate::support::gateway::data(1_000, u as u64));
        }
    });
    futures_util::future::join_all(reads).await;
    let text = server.scrape().await;
    // No Encrypt in the new process, and no Decrypt that failed (outcome
    // `error` or `no_response`).
    assert_eq!(kms(&text), rows(&[(&["decrypt", "ok"], 2.0)]), "{text}");
}

/// One HTTP/1.1 request to the HTTP listener; the status line and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Signed HTTP reads are counted by method and status, with fixed labels
/// only; neither the metrics nor the log (at debug for the listener) name
/// the user, the object or the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_http_reads_are_counted_and_name_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::host::free_port()));
    let mut process = Serve::new(&tmp.path().join("data"))
        .env("SEALGATE_HTTP_LISTEN", &http.to_string())
        .rust_log("info,sealgate::http=debug")
        .spawn();
    let addr = process
        .ready_within(Duration::from_secs(60))
        .await
        .unwrap_or_else(|log| panic!("sealgate did not start:\n{log}"));
    let metrics = metrics_address(&process.log()).expect("the metrics address");
    let mut server = Served {
        process,
        addr,
        metrics,
    };
    let (user, id) = ("http-metrics-user-9f2e", "http-metrics-object-41");
    let mut client = server.content().await;
    crate::support::gateway::put(&mut client, user, "moments", id, b"hello", 5)
        .await
        .unwrap();
    let link = client
        .sign_read(pb::SignReadRequest {
            object: Some(crate::support::gateway::obj(user, "moments", id)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = link.path.strip_prefix("/v1/o/").unwrap().to_string();
    let (status, body) = http_get(http, &link.path).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "hello")
    );
    let (status, _) = http_get(http, &format!("{}x", link.path)).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    let text = server.scrape().await;
    assert_eq!(
        family(&text, "sealgate_http_requests_total"),
        rows(&[(&["GET", "200"], 1.0), (&["GET", "403"], 1.0)]),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "sealgate_http_request_duration_seconds_count",
            &[("method", "GET")]
        ),
        2.0,
        "{text}"
    );
    let log = server.process.stop_and_read_log().await;
    assert!(
        log.contains("signed read refused"),
        "the refusal is logged:\n{log}"
    );
    for secret in [user, id, &token] {
        assert!(!text.contains(secret), "the metrics name {secret}");
        assert!(!log.contains(secret), "the log names {secret}:\n{log}");
    }
}
