//! `sealgate bench`: the project's load generator, in the spirit of MinIO's
//! warp. It prepares what a workload reads (untimed), runs `--concurrency`
//! callers for `--duration` seconds, then reports operations and bytes per
//! second, latency percentiles from an HDR histogram, and errors by gRPC
//! code; last it deletes every object it stored and erases its synthetic
//! users, so that their keys are destroyed (untimed; the erasures and their
//! audit records stay, as every erasure's do).
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
//!
//! This file owns the command's arguments and the timed run: the callers
//! and the mix they draw from. Beside it: what a workload prepares and
//! cleans up (`plan`), the calls it is made of (`calls`), the tallies and
//! the report (`report`). Nothing here may count the untimed preparation
//! or cleanup in the figures.

mod calls;
mod plan;
mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tonic::transport::Channel;

use super::{connect, Endpoint};
use crate::api::pb;
use calls::{get_items, get_object, object_ref, put_object, put_outcome, Op, Outcome};
use pb::content_service_client::ContentServiceClient;
use pb::erasure_service_client::ErasureServiceClient;
use plan::{cleanup, erase_users, prepare, Plan};
use report::{print_text, report, Tally};

/// Most connections the callers share (each caller uses one).
const MAX_CONNECTIONS: usize = 16;

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
    let mut first = None;
    for i in 0..connections {
        let channel = connect(&gateways[i % gateways.len()]).await?;
        first.get_or_insert_with(|| channel.clone());
        clients.push(client(channel));
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
        .context("cleaning up the benchmark's objects")?;
    let erasure = ErasureServiceClient::new(first.expect("at least one connection"));
    erase_users(&erasure, &plan).await
}

fn client(channel: Channel) -> ContentServiceClient<Channel> {
    // Responses of GetItems stay within the server's budget (4 MiB by
    // default); a server configured for more is read whole.
    ContentServiceClient::new(channel).max_decoding_message_size(64 << 20)
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
