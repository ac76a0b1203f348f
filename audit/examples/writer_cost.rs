//! What the audit writer costs per query in the daemon's pattern: each simulated query waits
//! for its attempt to be durable, then queues its completion without waiting (`append_lazy`).
//! Prints, per concurrency, queries/s and the writer thread's CPU per query (from
//! `/proc/self/task/*/stat`), so a change to the row layout can be measured without the daemon.
//!
//! `cargo run --release -p sluice-audit --example writer_cost -- [seconds] [concurrency,...]`
#![allow(clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use sluice_audit::{AuditLog, AuditRecord, Decision, Event};

/// The daemon's allocator (proxy/src/main.rs), so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn attempt(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(Event::QueryAttempt, format!("req-{i}"), Decision::Allow);
    r.session_id = None;
    r.user = Some("alice@example.com".into());
    r.tenant = Some("acme".into());
    r.groups = vec!["analyst".into()];
    r.auth_method = Some("jwt".into());
    r.client_addr = Some("127.0.0.1".into());
    r.user_agent = Some("load/1".into());
    r.connection = Some("pg".into());
    r.sql = Some("SELECT id, tenant_id, amount FROM public.orders WHERE id = $1".into());
    r.rewritten_sql = Some(
        "SELECT id, tenant_id, amount FROM (SELECT * FROM public.orders WHERE tenant_id = $1 \
         AND id = $2 OFFSET 0) AS orders WHERE id = $2"
            .into(),
    );
    r.params = vec!["acme".into(), "42".into()];
    r.tables = vec!["public.orders".into()];
    r.columns = vec![
        "public.orders.id".into(),
        "public.orders.tenant_id".into(),
        "public.orders.amount".into(),
    ];
    r.policy_version = Some("4f0e3c2a9b1d".into());
    r
}

fn completion(mut r: AuditRecord) -> AuditRecord {
    r.event = Event::QueryCompletion;
    r.outcome = Some("ok".into());
    r.rows = Some(1);
    r.bytes = Some(64);
    r.duration_ms = Some(0.4);
    r.warehouse_query_id = Some("pg-1234".into());
    r
}

/// CPU ticks (user + system) of the thread named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some(open) = stat.find('(') else { continue };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3 of stat(5); utime and stime are 14 and 15.
        let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        total += get(14).unwrap_or(0) + get(15).unwrap_or(0);
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let levels: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,32,512".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, writer) = AuditLog::open(&dir.path().join("audit.sqlite")).expect("open");
    let ticks_per_s = 100.0; // USER_HZ on Linux
    println!("concurrency  queries/s  writer CPU µs/query  attempt µs p50 / p99 / max");
    for c in levels {
        let before = thread_ticks("sluice-audit");
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let (queries, mut waits) = rt.block_on(async {
            let tasks: Vec<_> = (0..c as u64)
                .map(|w| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        let mut waits = Vec::new();
                        while Instant::now() < deadline {
                            let a = attempt(w << 32 | n);
                            let t = Instant::now();
                            log.append(a.clone()).await.expect("append");
                            waits.push(t.elapsed().as_micros() as u64);
                            log.append_lazy(completion(a)).expect("lazy");
                            n += 1;
                        }
                        (n, waits)
                    })
                })
                .collect();
            let mut total = 0;
            let mut all = Vec::new();
            for t in tasks {
                let (n, w) = t.await.expect("task");
                total += n;
                all.extend(w);
            }
            log.barrier().await.expect("barrier");
            (total, all)
        });
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = (thread_ticks("sluice-audit") - before) as f64 / ticks_per_s;
        waits.sort_unstable();
        let at = |q: f64| {
            waits
                .get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{c:>11}  {:>9.0}  {:>19.1}  {} / {} / {}",
            queries as f64 / elapsed,
            cpu * 1e6 / queries as f64,
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    drop(log);
    writer.join();
}
