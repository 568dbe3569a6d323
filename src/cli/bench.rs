//! `sealgate bench`: the project's load generator, in the spirit of MinIO's
//! warp. It prepares what a workload reads (untimed), runs `--concurrency`
//! callers for `--duration` seconds, then reports operations and bytes per
//! second, latency percentiles from an HDR histogram, and errors by gRPC
//! code; last it deletes every object it stored (untimed).
//!
//! Workloads, each on objects of `--size` bytes spread over `--users`
//! synthetic users (ids unique to the run):
//! - `put`: PutObject with a declared size, 1 MiB messages and the finish's
//!   SHA-256. Each caller overwrites one object of its own, so the store
//!   holds at most `--concurrency` of them.
//! - `get`: GetObject of whole objects stored in preparation.
//! - `items`: GetItems of 100 items of one user (100 items per user are
//!   stored in preparation with PutItem); one operation is one batch.
//! - `mixed`: each operation drawn at random: 40% GetObject, 30% GetItems
//!   (batches of 100), 20% HeadObject, 10% PutObject.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::Channel;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

/// Items in one GetItems batch (the most a call may ask for).
const BATCH: usize = 100;
/// Plaintext bytes in one PutObject data message, as `sealgate put` sends.
const PIECE: usize = 1 << 20;
/// Most connections the callers share (each caller uses one).
const MAX_CONNECTIONS: usize = 16;
/// Calls at once while preparing and cleaning up.
const PREPARE_CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// PutObject of `--size` bytes.
    Put,
    /// GetObject of objects stored in preparation.
    Get,
    /// GetItems batches of 100 items of `--size` bytes.
    Items,
    /// 40% GetObject, 30% GetItems, 20% HeadObject, 10% PutObject.
    Mixed,
    /// PutObject of `--size` bytes, then GetObject of it over the next
    /// connection (with `--replica`, through another gateway).
    PutGet,
}

#[derive(Debug, clap::Args)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// What to run.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Another gateway of the same deployment (repeatable): connections
    /// are spread over `--endpoint` and these, in turn.
    #[arg(long = "replica", value_name = "URL")]
    replicas: Vec<String>,
    /// Bytes of each object or item.
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// Callers running at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Seconds of the timed run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Synthetic users the objects are spread over.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,
    /// Objects stored for `get` and `mixed` to read (default: the
    /// concurrency, at most 64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    objects: Option<u32>,
    /// The space to use.
    #[arg(long, default_value = "moments")]
    space: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The operations the workloads are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Put,
    Get,
    Items,
    Head,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Items => "items",
            Workload::Mixed => "mixed",
            Workload::PutGet => "put-get",
        }
    }
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
            Op::Items => "GetItems",
            Op::Head => "HeadObject",
        }
    }
}

/// What the workload reads and writes, made in preparation.
struct Plan {
    space: String,
    /// User ids, unique to this run.
    users: Vec<String>,
    /// Objects for GetObject and HeadObject: (user index, object id).
    objects: Vec<(usize, String)>,
    /// Per user, the ids of its items.
    items: Vec<Vec<String>>,
    /// The body every upload sends, and its SHA-256.
    body: Bytes,
    sha256: Bytes,
    size: u64,
}

/// One caller's tallies.
struct Tally {
    per_op: BTreeMap<Op, OpTally>,
    errors: BTreeMap<String, u64>,
}

struct OpTally {
    latency_us: Histogram<u64>,
    ops: u64,
    /// Items read (GetItems) or objects moved (others), successful only.
    objects: u64,
    /// Plaintext bytes moved, successful only.
    bytes: u64,
}

impl OpTally {
    fn new() -> Self {
        Self {
            // 1 µs to one hour, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ops: 0,
            objects: 0,
            bytes: 0,
        }
    }

    fn merge(&mut self, other: &OpTally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms of the same bounds");
        self.ops += other.ops;
        self.objects += other.objects;
        self.bytes += other.bytes;
    }
}

impl Tally {
    fn new() -> Self {
        Self {
            per_op: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, op: Op, took: Duration, outcome: Outcome) {
        let t = self.per_op.entry(op).or_insert_with(OpTally::new);
        t.ops += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        t.latency_us.saturating_record(us);
        t.objects += outcome.objects;
        t.bytes += outcome.bytes;
        for code in outcome.errors {
            *self.errors.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        for (op, t) in other.per_op {
            self.per_op.entry(op).or_insert_with(OpTally::new).merge(&t);
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

/// What one call did.
#[derive(Default)]
struct Outcome {
    objects: u64,
    bytes: u64,
    /// The call's status if it failed, or each failed item's.
    errors: Vec<tonic::Code>,
}

impl Outcome {
    fn failed(code: tonic::Code) -> Self {
        Self {
            errors: vec![code],
            ..Self::default()
        }
    }
}

/// The report, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    workload: Workload,
    size: u64,
    concurrency: u32,
    users: u32,
    /// Seconds from the start of the timed run until its last call ended.
    seconds: f64,
    #[serde(flatten)]
    total: Figures,
    /// Errors by gRPC code (per item for GetItems).
    errors: BTreeMap<String, u64>,
    /// Per operation, for `mixed` (one entry otherwise).
    operations: BTreeMap<&'static str, Figures>,
}

#[derive(Debug, Serialize)]
struct Figures {
    ops: u64,
    ops_per_second: f64,
    /// Objects (items for GetItems) moved per second.
    objects_per_second: f64,
    /// Plaintext megabytes (10^6 bytes) moved per second.
    mb_per_second: f64,
    latency_ms: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Figures {
    fn of(t: &OpTally, seconds: f64) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &t.latency_us;
        Self {
            ops: t.ops,
            ops_per_second: t.ops as f64 / seconds,
            objects_per_second: t.objects as f64 / seconds,
            mb_per_second: t.bytes as f64 / 1e6 / seconds,
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            },
        }
    }
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let gateways: Vec<Endpoint> = std::iter::once(args.endpoint.clone())
        .chain(args.replicas.iter().map(|url| Endpoint {
            endpoint: url.clone(),
            ..args.endpoint.clone()
        }))
        .collect();
    // At least one connection per gateway, so that every one serves.
    let connections = (args.concurrency as usize)
        .min(MAX_CONNECTIONS)
        .max(gateways.len());
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(client(connect(&gateways[i % gateways.len()]).await?));
    }
    let plan = Arc::new(prepare(&args, &clients[0]).await?);
    let progress = !args.json;
    if progress {
        eprintln!(
            "running {} for {} s: {} callers over {connections} connections",
            args.workload.name(),
            args.duration,
            args.concurrency
        );
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut callers = Vec::with_capacity(args.concurrency as usize);
    for n in 0..args.concurrency as usize {
        let client = clients[n % connections].clone();
        let reader = clients[(n + 1) % connections].clone();
        let plan = plan.clone();
        let workload = args.workload;
        callers.push(tokio::spawn(async move {
            caller(n, workload, client, reader, &plan, deadline).await
        }));
    }
    let mut tally = Tally::new();
    for c in callers {
        tally.merge(c.await.context("a caller panicked")?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = report(&args, &tally, seconds);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    let writers = match args.workload {
        Workload::Put | Workload::Mixed | Workload::PutGet => args.concurrency as usize,
        Workload::Get | Workload::Items => 0,
    };
    cleanup(&clients[0], &plan, writers)
        .await
        .context("cleaning up the benchmark's objects")
}

fn client(channel: Channel) -> ContentServiceClient<Channel> {
    // Responses of GetItems stay within the server's budget (4 MiB by
    // default); a server configured for more is read whole.
    ContentServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

/// A run-unique prefix for user ids, so that runs never meet.
fn run_prefix() -> String {
    format!("bench-{}", &crate::names::random_id()[..12])
}

/// Stores what the workload reads; untimed.
async fn prepare(args: &BenchArgs, client: &ContentServiceClient<Channel>) -> anyhow::Result<Plan> {
    let size = usize::try_from(args.size).context("--size too large")?;
    let mut body = vec![0u8; size];
    aws_lc_rs::rand::fill(&mut body).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let sha256 = Bytes::copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref(),
    );
    let prefix = run_prefix();
    let users: Vec<String> = (0..args.users).map(|u| format!("{prefix}-u{u}")).collect();
    let mut plan = Plan {
        space: args.space.clone(),
        users,
        objects: Vec::new(),
        items: vec![Vec::new(); args.users as usize],
        body: Bytes::from(body),
        sha256,
        size: args.size,
    };
    let needs_objects = matches!(args.workload, Workload::Get | Workload::Mixed);
    let needs_items = matches!(args.workload, Workload::Items | Workload::Mixed);
    if needs_objects {
        let n = args
            .objects
            .unwrap_or_else(|| args.concurrency.min(64))
            .max(1) as usize;
        plan.objects = (0..n)
            .map(|i| (i % plan.users.len(), format!("obj-{i}")))
            .collect();
    }
    if needs_items {
        for (u, ids) in plan.items.iter_mut().enumerate() {
            *ids = (0..BATCH).map(|i| format!("item-{u}-{i}")).collect();
        }
    }
    let started = Instant::now();
    let plan_ref = &plan;
    let uploads = plan
        .objects
        .iter()
        .map(|(u, id)| Prep::Object(*u, id.clone()))
        .chain(
            plan.items
                .iter()
                .enumerate()
                .flat_map(|(u, ids)| ids.iter().map(move |id| Prep::Item(u, id.clone()))),
        );
    let count = futures_util::stream::iter(uploads)
        .map(|p| {
            let mut client = client.clone();
            async move {
                match p {
                    Prep::Object(u, id) => put_object(&mut client, plan_ref, u, &id)
                        .await
                        .with_context(|| format!("preparing object {id}")),
                    Prep::Item(u, id) => client
                        .put_item(pb::PutItemRequest {
                            user_id: plan_ref.users[u].clone(),
                            space: plan_ref.space.clone(),
                            item_id: id.clone(),
                            content: plan_ref.body.clone(),
                            content_type: "application/octet-stream".into(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                        .with_context(|| format!("preparing item {id}")),
                }
            }
        })
        .buffer_unordered(PREPARE_CONCURRENCY)
        .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
        .await?;
    if count > 0 && !args.json {
        eprintln!(
            "prepared {count} objects of {} bytes in {:.1} s",
            args.size,
            started.elapsed().as_secs_f64()
        );
    }
    // Warm: one read of each user's items, so that the timed run starts
    // with keys and files cached as a long-running gateway has them.
    for (u, ids) in plan.items.iter().enumerate() {
        if !ids.is_empty() {
            get_items(&mut client.clone(), &plan, u).await;
        }
    }
    Ok(plan)
}

enum Prep {
    Object(usize, String),
    Item(usize, String),
}

/// One caller: operations back to back until the deadline. `put-get`
/// reads back through `reader`, the next connection.
async fn caller(
    n: usize,
    workload: Workload,
    mut client: ContentServiceClient<Channel>,
    mut reader: ContentServiceClient<Channel>,
    plan: &Plan,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = XorShift::new(n as u64);
    let own_user = n % plan.users.len();
    let own_object = format!("put-{n}");
    let mut next = n;
    while Instant::now() < deadline {
        let op = match workload {
            Workload::Put => Op::Put,
            Workload::Get => Op::Get,
            Workload::Items => Op::Items,
            Workload::PutGet => {
                let start = Instant::now();
                let put = put_object(&mut client, plan, own_user, &own_object).await;
                let stored = put.is_ok();
                tally.record(Op::Put, start.elapsed(), put_outcome(plan, put));
                if stored {
                    let start = Instant::now();
                    let got = get_object(&mut reader, plan, own_user, &own_object).await;
                    tally.record(Op::Get, start.elapsed(), got);
                }
                continue;
            }
            Workload::Mixed => match rng.next() % 10 {
                0..=3 => Op::Get,
                4..=6 => Op::Items,
                7..=8 => Op::Head,
                _ => Op::Put,
            },
        };
        let start = Instant::now();
        let outcome = match op {
            Op::Put => put_outcome(
                plan,
                put_object(&mut client, plan, own_user, &own_object).await,
            ),
            Op::Get => {
                let (u, id) = &plan.objects[next % plan.objects.len()];
                get_object(&mut client, plan, *u, id).await
            }
            Op::Items => get_items(&mut client, plan, next % plan.users.len()).await,
            Op::Head => {
                let (u, id) = &plan.objects[next % plan.objects.len()];
                match client
                    .head_object(pb::HeadObjectRequest {
                        object: Some(object_ref(plan, *u, id)),
                    })
                    .await
                {
                    Ok(_) => Outcome {
                        objects: 1,
                        ..Outcome::default()
                    },
                    Err(s) => Outcome::failed(s.code()),
                }
            }
        };
        tally.record(op, start.elapsed(), outcome);
        next = next.wrapping_add(1);
    }
    tally
}

fn put_outcome(plan: &Plan, put: Result<(), tonic::Status>) -> Outcome {
    match put {
        Ok(()) => Outcome {
            objects: 1,
            bytes: plan.size,
            errors: Vec::new(),
        },
        Err(s) => Outcome::failed(s.code()),
    }
}

fn object_ref(plan: &Plan, user: usize, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: plan.users[user].clone(),
        space: plan.space.clone(),
        object_id: id.to_string(),
    }
}

/// Uploads the plan's body as `id` of `user`, as `sealgate put` uploads a
/// file: declared size, 1 MiB messages, the finish's SHA-256.
async fn put_object(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
    id: &str,
) -> Result<(), tonic::Status> {
    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            user_id: plan.users[user].clone(),
            space: plan.space.clone(),
            object_id: id.to_string(),
            content_type: "application/octet-stream".into(),
            size: Some(plan.size),
            ..Default::default()
        })),
    };
    let body = plan.body.clone();
    let pieces = (0..body.len().div_ceil(PIECE)).map(move |i| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            body.slice(i * PIECE..((i + 1) * PIECE).min(body.len())),
        )),
    });
    let finish = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
            sha256: plan.sha256.clone(),
        })),
    };
    let messages = std::iter::once(header)
        .chain(pieces)
        .chain(std::iter::once(finish));
    client
        .put_object(futures_util::stream::iter(messages))
        .await
        .map(|_| ())
}

async fn get_object(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
    id: &str,
) -> Outcome {
    let result = async {
        let mut stream = client
            .get_object(pb::GetObjectRequest {
                object: Some(object_ref(plan, user, id)),
                range: None,
            })
            .await?
            .into_inner();
        let mut bytes = 0u64;
        while let Some(msg) = stream.message().await? {
            if let Some(pb::get_object_response::Part::Data(d)) = msg.part {
                bytes += d.len() as u64;
            }
        }
        Ok::<_, tonic::Status>(bytes)
    }
    .await;
    match result {
        Ok(bytes) if bytes == plan.size => Outcome {
            objects: 1,
            bytes,
            errors: Vec::new(),
        },
        // A short object is a data error the server did not report.
        Ok(_) => Outcome::failed(tonic::Code::DataLoss),
        Err(s) => Outcome::failed(s.code()),
    }
}

/// One GetItems batch of all of `user`'s items.
async fn get_items(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
) -> Outcome {
    let response = client
        .get_items(pb::GetItemsRequest {
            user_id: plan.users[user].clone(),
            space: plan.space.clone(),
            item_ids: plan.items[user].clone(),
        })
        .await;
    match response {
        Err(s) => Outcome::failed(s.code()),
        Ok(r) => {
            let mut outcome = Outcome::default();
            for item in r.into_inner().items {
                match item.result {
                    Some(pb::item_result::Result::Item(i)) => {
                        outcome.objects += 1;
                        outcome.bytes += i.content.len() as u64;
                    }
                    Some(pb::item_result::Result::Error(e)) => {
                        outcome.errors.push(tonic::Code::from_i32(e.code));
                    }
                    None => outcome.errors.push(tonic::Code::Internal),
                }
            }
            outcome
        }
    }
}

/// Deletes every object the run stored (`writers` callers uploaded one
/// each); untimed.
async fn cleanup(
    client: &ContentServiceClient<Channel>,
    plan: &Plan,
    writers: usize,
) -> anyhow::Result<()> {
    let puts = (0..writers).map(|n| (n % plan.users.len(), format!("put-{n}")));
    let items = plan
        .items
        .iter()
        .enumerate()
        .flat_map(|(u, ids)| ids.iter().map(move |id| (u, id.clone())));
    let all = plan.objects.iter().cloned().chain(items).chain(puts);
    futures_util::stream::iter(all)
        .map(|(u, id)| {
            let mut client = client.clone();
            async move {
                client
                    .delete_object(pb::DeleteObjectRequest {
                        object: Some(object_ref(plan, u, &id)),
                        if_match: String::new(),
                    })
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(PREPARE_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    Ok(())
}

fn report(args: &BenchArgs, tally: &Tally, seconds: f64) -> Report {
    let mut total = OpTally::new();
    for t in tally.per_op.values() {
        total.merge(t);
    }
    Report {
        workload: args.workload,
        size: args.size,
        concurrency: args.concurrency,
        users: args.users,
        seconds,
        total: Figures::of(&total, seconds),
        errors: tally.errors.clone(),
        operations: tally
            .per_op
            .iter()
            .map(|(op, t)| (op.name(), Figures::of(t, seconds)))
            .collect(),
    }
}

fn print_text(r: &Report) {
    let line = |name: &str, f: &Figures| {
        println!(
            "{name:<11} {:>9} ops {:>10.1} ops/s {:>11.1} obj/s {:>9.2} MB/s   latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            f.ops,
            f.ops_per_second,
            f.objects_per_second,
            f.mb_per_second,
            f.latency_ms.p50,
            f.latency_ms.p90,
            f.latency_ms.p99,
            f.latency_ms.max
        );
    };
    println!(
        "workload {}, {} bytes, {} callers, {} users, {:.2} s",
        r.workload.name(),
        r.size,
        r.concurrency,
        r.users,
        r.seconds
    );
    for (name, f) in &r.operations {
        line(name, f);
    }
    if r.operations.len() > 1 {
        line("total", &r.total);
    }
    if r.errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = r.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("errors: {}", list.join(", "));
    }
}

/// The mix's dice: xorshift64*, seeded per caller (no need for more).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
