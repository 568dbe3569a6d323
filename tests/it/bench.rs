//! `sealgate bench`, the real binary run as a user runs it, against a
//! gateway on a loopback socket: each workload for two seconds, with no
//! error, a report with every field, and nothing left stored afterwards:
//! no object, and no user key (the bench erases its users).

use std::process::Output;

use serde_json::Value;

use crate::support::gateway::TestGateway;

/// The report of a successful run, which is UTF-8 text.
fn ok(out: &Output) -> String {
    let text = crate::support::serve::ok(out);
    assert!(std::str::from_utf8(&out.stdout).is_ok(), "UTF-8 report");
    text
}

fn bench(args: &[&str]) -> Output {
    let args: Vec<&str> = std::iter::once("bench")
        .chain(args.iter().copied())
        .collect();
    crate::support::serve::sealgate(&args)
}

/// The figures of one operation (or of the whole run) are all there and
/// make sense: some operations, latencies ordered.
fn check_figures(f: &Value, what: &str) {
    let num = |k: &str| {
        f[k].as_f64()
            .unwrap_or_else(|| panic!("{what}: {k} in {f}"))
    };
    assert!(num("ops") >= 1.0, "{what}: no operation: {f}");
    assert!(num("ops_per_second") > 0.0, "{what}: {f}");
    assert!(num("objects_per_second") > 0.0, "{what}: {f}");
    assert!(num("mb_per_second") >= 0.0, "{what}: {f}");
    let l = &f["latency_ms"];
    let p = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("{what}: latency {k} in {f}"))
    };
    assert!(p("p50") > 0.0, "{what}: {f}");
    assert!(p("p50") <= p("p90"), "{what}: {f}");
    assert!(p("p90") <= p("p99"), "{what}: {f}");
    assert!(p("p99") <= p("max"), "{what}: {f}");
}

/// The bench erased its synthetic users: the key store holds no user key.
async fn assert_no_user_key(gw: &TestGateway) {
    let store = crate::support::gateway::server::open_key_store(&gw.data_dir).await;
    let shards: Vec<u32> = (0..256).collect();
    assert_eq!(
        store.count_user_keys(&shards).await.unwrap(),
        0,
        "the bench erases its users, destroying their keys"
    );
    store.close().await;
}

/// Runs `workload` for two seconds with `--json` and checks the report;
/// returns it.
async fn run_json(workload: &str, size: &str, operations: &[&str]) -> Value {
    let gw = TestGateway::start().await;
    let ep = gw.endpoint();
    let args: Vec<String> = [
        "--endpoint",
        &ep,
        "--workload",
        workload,
        "--size",
        size,
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--users",
        "3",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bench(&args)
    })
    .await
    .unwrap();
    let stdout = ok(&out);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["size"].as_u64(), Some(size.parse().unwrap()));
    assert_eq!(report["concurrency"], 4);
    assert_eq!(report["users"], 3);
    assert!(
        report["seconds"].as_f64().unwrap() >= 2.0,
        "ran two seconds: {report}"
    );
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "no errors: {report}"
    );
    check_figures(&report, "total");
    let ops = report["operations"].as_object().expect("operations");
    let mut names: Vec<&str> = ops.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, operations, "{report}");
    for (name, f) in ops {
        check_figures(f, name);
    }
    gw.assert_nothing_stored("the bench deletes what it stored")
        .await;
    assert_no_user_key(&gw).await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_put_runs_without_errors() {
    let r = run_json("put", "100000", &["PutObject"]).await;
    let put = &r["operations"]["PutObject"];
    let mb = put["mb_per_second"].as_f64().unwrap();
    let objects = put["objects_per_second"].as_f64().unwrap();
    assert!(
        (mb - objects * 0.1).abs() < 1e-6 * mb.max(1.0),
        "MB/s is objects/s times 100,000 bytes: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_get_runs_without_errors() {
    // Larger than a download message (256 KiB), so each GetObject streams.
    run_json("get", "600000", &["GetObject"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_items_runs_without_errors() {
    let r = run_json("items", "1024", &["GetItems"]).await;
    let items = &r["operations"]["GetItems"];
    let ops = items["ops_per_second"].as_f64().unwrap();
    let objects = items["objects_per_second"].as_f64().unwrap();
    assert!(
        (objects - ops * 100.0).abs() < 1e-6 * objects,
        "each GetItems reads a batch of 100 items: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_mixed_runs_without_errors() {
    run_json(
        "mixed",
        "2048",
        &["GetItems", "GetObject", "HeadObject", "PutObject"],
    )
    .await;
}

/// Without `--json` the report is text a person reads; over TLS the
/// client-certificate flags are those of the other client commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_text_and_speaks_mtls() {
    use crate::support::gateway::tls::{ClientFiles, TlsGateway, BENCH};
    let t = TlsGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ClientFiles { ca, cert, key } = t.client_files(dir.path(), BENCH);
    let ep = format!("https://{}", t.gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        bench(&[
            "--endpoint",
            &ep,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--workload",
            "items",
            "--size",
            "512",
            "--concurrency",
            "2",
            "--duration",
            "2",
        ])
    })
    .await
    .unwrap();
    let text = ok(&out);
    assert!(
        text.starts_with("workload items, 512 bytes, 2 callers, 16 users, "),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("GetItems "))
        .unwrap_or_else(|| panic!("a GetItems line: {text}"));
    for field in ["ops/s", "obj/s", "MB/s", "p50", "p90", "p99", "max"] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(text.ends_with("errors: none\n"), "{text}");
    t.gw.assert_nothing_stored("the bench deletes what it stored")
        .await;
}

/// Runs `put-get` for two seconds over `endpoint` and `replica` with
/// `--json`; returns the report.
async fn put_get_over(endpoint: String, replica: String) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        bench(&[
            "--endpoint",
            &endpoint,
            "--replica",
            &replica,
            "--workload",
            "put-get",
            "--size",
            "300000",
            "--concurrency",
            "4",
            "--duration",
            "2",
            "--json",
        ])
    })
    .await
    .unwrap();
    serde_json::from_str(&ok(&out)).expect("the report is JSON")
}

/// `put-get` with `--replica` reads each upload back through the other
/// gateway: over two gateways of one store nothing fails; over two
/// gateways of different stores every read misses, which shows the reads
/// really went to the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_put_get_reads_back_through_the_replica() {
    use crate::support::gateway::{with_backend, with_pg_key_store, BackendKind};
    // Replicas as a scaled-out deployment runs them: a data directory each,
    // one PostgreSQL key store and one bucket.
    with_pg_key_store(with_backend(BackendKind::S3, put_get_through_replicas())).await;
}

async fn put_get_through_replicas() {
    let a = TestGateway::start().await;
    let mut same_store = a.start_replica(|_| {}).await;
    let r = put_get_over(a.endpoint(), same_store.endpoint()).await;
    assert_eq!(r["workload"], "put-get", "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "no errors: {r}");
    let ops = &r["operations"];
    check_figures(&ops["PutObject"], "PutObject");
    check_figures(&ops["GetObject"], "GetObject");
    assert_eq!(
        ops["PutObject"]["ops"], ops["GetObject"]["ops"],
        "each upload is read back once: {r}"
    );
    same_store.stop().await;
    a.assert_nothing_stored("the bench deletes what it stored")
        .await;

    // Another deployment: a key store and a bucket of its own.
    let other_store = TestGateway::start().await;
    let r = put_get_over(a.endpoint(), other_store.endpoint()).await;
    let ops = &r["operations"];
    let reads = ops["GetObject"]["ops"].as_u64().expect("GetObject ops");
    assert!(reads >= 1, "some uploads were read back: {r}");
    assert_eq!(
        ops["PutObject"]["ops"].as_u64(),
        Some(reads),
        "each upload is read back once: {r}"
    );
    assert_eq!(
        r["errors"],
        serde_json::json!({ "NotFound": reads }),
        "every read through a gateway of another store misses, and nothing else fails: {r}"
    );
}
