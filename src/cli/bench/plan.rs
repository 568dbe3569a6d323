//! What a workload reads and writes: the plan made in preparation (run-
//! unique users, the objects and items stored before the timed run, the
//! body every upload sends), and the cleanup that deletes everything the
//! run stored and erases the run's users, destroying their keys. Both are
//! untimed; this file must never record a figure.

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

use super::calls::{get_items, object_ref, put_object};
use super::{BenchArgs, Workload};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;
use pb::erasure_service_client::ErasureServiceClient;

/// Items in one GetItems batch (the most a call may ask for).
const BATCH: usize = 100;
/// Calls at once while preparing and cleaning up.
const PREPARE_CONCURRENCY: usize = 32;

/// What the workload reads and writes, made in preparation.
pub(super) struct Plan {
    pub(super) space: String,
    /// User ids, unique to this run.
    pub(super) users: Vec<String>,
    /// Objects for GetObject and HeadObject: (user index, object id).
    pub(super) objects: Vec<(usize, String)>,
    /// Per user, the ids of its items.
    pub(super) items: Vec<Vec<String>>,
    /// The body every upload sends, and its SHA-256.
    pub(super) body: Bytes,
    pub(super) sha256: Bytes,
    pub(super) size: u64,
}

/// A run-unique prefix for user ids, so that runs never meet.
fn run_prefix() -> String {
    format!("bench-{}", &crate::names::random_id()[..12])
}

/// Stores what the workload reads; untimed.
pub(super) async fn prepare(
    args: &BenchArgs,
    client: &ContentServiceClient<Channel>,
) -> anyhow::Result<Plan> {
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

/// Deletes every object the run stored (`writers` callers uploaded one
/// each); untimed.
pub(super) async fn cleanup(
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

/// Erases the run's synthetic users (crypto-shredding): each user key the
/// run made is destroyed. What an erasure leaves stays, as it does for
/// every erased user: a tombstone and receipt per user, and the audit
/// records (the hash chain cannot lose records), all under the run's
/// user ids `bench-<run>-u<N>`. Untimed.
///
/// # Errors
/// A refused erasure, naming what remains: a caller without the role
/// `erasure` leaves the users' keys in place.
pub(super) async fn erase_users(
    client: &ErasureServiceClient<Channel>,
    plan: &Plan,
) -> anyhow::Result<()> {
    let erased = futures_util::stream::iter(plan.users.iter())
        .map(|user| {
            let mut client = client.clone();
            async move {
                client
                    .erase_user(pb::EraseUserRequest {
                        user_id: user.clone(),
                        after_seconds: 0,
                    })
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(PREPARE_CONCURRENCY)
        .try_collect::<()>()
        .await;
    let (first, last) = (&plan.users[0], &plan.users[plan.users.len() - 1]);
    match erased {
        Ok(()) => {
            // On stderr (`--json` keeps stdout for the report): the ids to
            // find the run's records by (`sealgate audit --user ID`).
            eprintln!(
                "erased the benchmark's {} users, {first} to {last}: their keys are destroyed",
                plan.users.len()
            );
            Ok(())
        }
        Err(status) => Err(anyhow::anyhow!(
            "cannot erase the benchmark's users {first} to {last}, so their keys remain (erase them with `sealgate erase --user ID`, which needs the role erasure): {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}
