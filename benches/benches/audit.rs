//! The audit log's cost: durable records per second with group commit under concurrency, and
//! the latency one durable append adds to a query. Guards the audit issue's budget: at least
//! 100,000 durable records/s on this machine (see benches/README.md).
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_audit::{AuditLog, AuditRecord, Decision, Event};

/// Concurrent appenders (in-flight queries).
const WRITERS: usize = 512;
/// Records queued before waiting, in the writer-only bench (below the queue capacity).
const CHUNK: usize = 32_768;

fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(Event::QueryCompletion, format!("req-{i}"), Decision::Allow);
    r.user = Some("alice".into());
    r.tenant = Some("acme".into());
    r.groups = vec!["analyst".into()];
    r.connection = Some("demo".into());
    r.sql = Some("SELECT c.name, count(*) FROM orders o JOIN customers c ON o.customer_id = c.customer_id GROUP BY 1".into());
    r.rewritten_sql =
        Some("SELECT c.name, count(*) FROM (SELECT ...) AS o JOIN (SELECT ...) AS c ON ...".into());
    r.params = vec!["acme".into()];
    r.tables = vec!["public.orders".into(), "public.customers".into()];
    r.outcome = Some("ok".into());
    r.rows = Some(5);
    r.bytes = Some(420);
    r.duration_ms = Some(3.2);
    r
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("bench setup");
    let dir = tempfile::tempdir().expect("bench setup");
    let (log, _writer) = AuditLog::open(&dir.path().join("audit.sqlite")).expect("bench setup");

    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(1));
    // Many concurrent appenders: each record is durable (fsync'd) when its append resolves.
    g.bench_function("durable_append_512_concurrent", |b| {
        b.iter_custom(|iters| {
            let log = log.clone();
            rt.block_on(async move {
                let per = iters.div_ceil(WRITERS as u64);
                let start = Instant::now();
                let tasks: Vec<_> = (0..WRITERS as u64)
                    .map(|w| {
                        let log = log.clone();
                        tokio::spawn(async move {
                            for i in 0..per {
                                let _ = log.append(record(w * per + i)).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * WRITERS as u64) as f64)
            })
        })
    });
    // The writer alone: records built beforehand and queued without waiting; the last append
    // resolves once everything before it is durable (the queue is FIFO).
    g.bench_function("writer_only_durable", |b| {
        b.iter_custom(|iters| {
            let log = log.clone();
            let records: Vec<AuditRecord> = (0..iters).map(record).collect();
            rt.block_on(async move {
                let start = Instant::now();
                let mut it = records.into_iter().peekable();
                // Stay below the writer's queue capacity: each chunk ends with a waited append.
                while it.peek().is_some() {
                    let chunk: Vec<AuditRecord> = it.by_ref().take(CHUNK).collect();
                    let mut chunk = chunk.into_iter();
                    let last = chunk.next_back();
                    for r in chunk {
                        log.append_detached(r);
                    }
                    if let Some(r) = last {
                        let _ = log.append(r).await;
                    }
                }
                start.elapsed()
            })
        })
    });
    // One appender: the latency a query pays for its durable attempt record.
    g.bench_function("durable_append_latency_single", |b| {
        b.iter_custom(|iters| {
            let log = log.clone();
            rt.block_on(async move {
                let start = Instant::now();
                for i in 0..iters {
                    let _ = log.append(record(i)).await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(8)).sample_size(20);
    targets = audit
}
criterion_main!(benches);
