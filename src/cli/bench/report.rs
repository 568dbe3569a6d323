//! What a run measured: each caller's tallies (a latency histogram, the
//! operations, objects and bytes per operation, errors by gRPC code),
//! merged into the report printed as text or JSON. This file counts and
//! prints: it must never make a call.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::calls::{Op, Outcome};
use super::{BenchArgs, Workload};

/// One caller's tallies.
pub(super) struct Tally {
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
    pub(super) fn new() -> Self {
        Self {
            per_op: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    pub(super) fn record(&mut self, op: Op, took: Duration, outcome: Outcome) {
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

    pub(super) fn merge(&mut self, other: Tally) {
        for (op, t) in other.per_op {
            self.per_op.entry(op).or_insert_with(OpTally::new).merge(&t);
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

/// The report, as printed with `--json`.
#[derive(Debug, Serialize)]
pub(super) struct Report {
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

pub(super) fn report(args: &BenchArgs, tally: &Tally, seconds: f64) -> Report {
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

pub(super) fn print_text(r: &Report) {
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
