//! ExportUser throughput through the real binary beside GetObject of the
//! same objects (the baseline, same run), and the server's peak RSS while
//! each runs.
//!
//! ```text
//! cargo bench --bench export                    # OBJECTS=64 SIZE_MIB=16 (1 GiB)
//! OBJECTS=16 SIZE_MIB=4 cargo bench --bench export
//! ROUNDS=6 cargo bench --bench export           # best of 6 each (a busy machine)
//! cargo test --bench export                     # smoke run: OBJECTS=4 SIZE_MIB=1
//! ```
//!
//! Starts `sealgate serve` (this build's binary, filesystem object store,
//! SQLite key store) on loopback and gives one user OBJECTS objects of
//! SIZE_MIB MiB (untimed). Then, ROUNDS times each (default 2),
//! alternating: every object fetched by GetObject one after the other, and
//! the user's ExportUser (the same plaintext, plus tar framing, SHA-256 of
//! every object and the manifest), each timed at the client, which only
//! counts the bytes. Prints the best MiB/s of each, the ratio export /
//! GetObject (goal: at least 0.8), every round's MiB/s (how noisy the
//! machine was), the serve process's peak RSS (`VmHWM` of `/proc/PID/status`,
//! reset through `/proc/PID/clear_refs` before each phase), and the CPU
//! seconds the server and the client spent in each phase's last run (the
//! two share the machine's cores).

use std::time::{Duration, Instant};

use sealgate::api::pb;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

/// The tests' launcher of the real binary (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod metrics;
    pub mod serve;
    pub mod wait;
}
use support::serve::Serve;

const USER: &str = "export-bench";
const SPACE: &str = "moments";
const MIB: usize = 1024 * 1024;

/// Resets the peak RSS of `pid` (Linux: 5 > clear_refs).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// CPU seconds (user and system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command's closing parenthesis: state is field 3, utime 14.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on every Linux this runs on.
    ticks / 100.0
}

/// The peak RSS of `pid` since the last reset, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

async fn fill(channel: &Channel, objects: usize, size: usize) {
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..objects {
        if pending.len() >= 4 {
            pending.join_next().await.unwrap().unwrap();
        }
        let mut client = pb::content_service_client::ContentServiceClient::new(channel.clone());
        pending.spawn(async move {
            let body: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
            let mut msgs = vec![pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                    user_id: USER.into(),
                    space: SPACE.into(),
                    object_id: format!("obj-{i:04}"),
                    size: Some(size as u64),
                    ..Default::default()
                })),
            }];
            msgs.extend(body.chunks(MIB).map(|c| pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Data(c.to_vec().into())),
            }));
            msgs.push(pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Finish(
                    pb::PutObjectFinish::default(),
                )),
            });
            client
                .put_object(futures_util::stream::iter(msgs))
                .await
                .expect("put object");
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// Every object by GetObject, one after the other: plaintext bytes.
async fn get_all(channel: &Channel, objects: usize) -> u64 {
    let mut client = pb::content_service_client::ContentServiceClient::new(channel.clone())
        .max_decoding_message_size(8 << 20);
    let mut bytes = 0;
    for i in 0..objects {
        let mut stream = client
            .get_object(pb::GetObjectRequest {
                object: Some(pb::ObjectRef {
                    user_id: USER.into(),
                    space: SPACE.into(),
                    object_id: format!("obj-{i:04}"),
                }),
                range: None,
            })
            .await
            .expect("get object")
            .into_inner();
        while let Some(m) = stream.message().await.expect("get stream") {
            if let Some(pb::get_object_response::Part::Data(d)) = m.part {
                bytes += d.len() as u64;
            }
        }
    }
    bytes
}

/// The user's export: archive bytes.
async fn export(channel: &Channel) -> u64 {
    let mut client = pb::export_service_client::ExportServiceClient::new(channel.clone())
        .max_decoding_message_size(8 << 20);
    let mut stream = client
        .export_user(pb::ExportUserRequest {
            user_id: USER.into(),
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner();
    let mut bytes = 0;
    while let Some(chunk) = stream.message().await.expect("export stream") {
        bytes += chunk.data.len() as u64;
    }
    bytes
}

fn main() {
    let (objects, size_mib) = if smoke() {
        (env_or("OBJECTS", 4), env_or("SIZE_MIB", 1))
    } else {
        (env_or("OBJECTS", 64), env_or("SIZE_MIB", 16))
    };
    // Rounds of the two, alternating; the best of each counts.
    let rounds = env_or("ROUNDS", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Serve::new(dir.path())
            .rust_log("warn,sealgate::server=info")
            .env("SEALGATE_METRICS_LISTEN", "")
            .spawn();
        let addr = process
            .ready_within(Duration::from_secs(60))
            .await
            .unwrap_or_else(|log| panic!("sealgate serve did not listen:\n{log}"));
        let pid = process.child.id();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        fill(&channel, objects, size_mib * MIB).await;
        let plaintext = (objects * size_mib * MIB) as u64;
        let (mut get_best, mut export_best) = (f64::MAX, f64::MAX);
        let (mut get_peak, mut export_peak) = (0f64, 0f64);
        // CPU seconds of the server and of this client, per phase (the
        // last round's).
        let (mut get_cpu, mut export_cpu) = ((0f64, 0f64), (0f64, 0f64));
        let me = std::process::id();
        let (mut get_rounds, mut export_rounds) = (Vec::new(), Vec::new());
        let mut archive = 0;
        for _ in 0..rounds {
            reset_peak(pid);
            let (server, client) = (cpu_seconds(pid), cpu_seconds(me));
            let started = Instant::now();
            assert_eq!(get_all(&channel, objects).await, plaintext);
            get_best = get_best.min(started.elapsed().as_secs_f64());
            get_rounds.push(started.elapsed().as_secs_f64());
            get_peak = get_peak.max(peak_mib(pid));
            get_cpu = (cpu_seconds(pid) - server, cpu_seconds(me) - client);

            reset_peak(pid);
            let (server, client) = (cpu_seconds(pid), cpu_seconds(me));
            let started = Instant::now();
            archive = export(&channel).await;
            export_best = export_best.min(started.elapsed().as_secs_f64());
            export_rounds.push(started.elapsed().as_secs_f64());
            export_peak = export_peak.max(peak_mib(pid));
            export_cpu = (cpu_seconds(pid) - server, cpu_seconds(me) - client);
        }
        let mib = plaintext as f64 / MIB as f64;
        let (get_rate, export_rate) = (mib / get_best, mib / export_best);
        println!(
            "export: {objects} objects of {size_mib} MiB ({mib:.0} MiB plaintext, archive {archive} bytes){}",
            if smoke() { " [smoke]" } else { "" }
        );
        println!(
            "  GetObject (baseline)  {get_rate:8.1} MiB/s   server peak RSS {get_peak:7.1} MiB   CPU s server {:5.2} client {:5.2}",
            get_cpu.0, get_cpu.1
        );
        println!(
            "  ExportUser            {export_rate:8.1} MiB/s   server peak RSS {export_peak:7.1} MiB   CPU s server {:5.2} client {:5.2}",
            export_cpu.0, export_cpu.1
        );
        println!(
            "  ratio export / GetObject: {:.2} (goal >= 0.80)",
            export_rate / get_rate
        );
        let each = |secs: &[f64]| {
            secs.iter()
                .map(|s| format!("{:.0}", mib / s))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  each round, MiB/s: GetObject {}; ExportUser {}",
            each(&get_rounds),
            each(&export_rounds)
        );
    });
}
