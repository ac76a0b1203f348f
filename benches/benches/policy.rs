//! Policy cost on the 22 TPC-H queries: parse only, versus the whole policy (parse, rewrite,
//! serialize, re-parse and verify), and versus a rewrite-cache hit. Guards the budget of issue "Tenant isolation that holds
//! against any SQL": rewrite + verify at most 1.5x parse time (see benches/README.md).

use criterion::{Criterion, criterion_group};
use sluice_benches::{TPCH, tpch_catalog};
use sluice_policy::Caller;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

fn policy(c: &mut Criterion) {
    let catalog = tpch_catalog();
    let groups = vec!["analyst".to_string()];
    let caller = Caller {
        tenant: "t1",
        groups: &groups,
        row_limit: None,
        attributes: &sluice_policy::NO_ATTRIBUTES,
    };
    let mut g = c.benchmark_group("tpch_22");
    g.bench_function("parse", |b| {
        b.iter(|| {
            for (_, sql) in TPCH {
                std::hint::black_box(Parser::parse_sql(&PostgreSqlDialect {}, sql).is_ok());
            }
        })
    });
    // The breakdown: serializing an AST, and parsing the (longer) rewritten text, which the
    // verifier must do.
    let parsed: Vec<_> = TPCH
        .iter()
        .map(|(_, sql)| Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap_or_default())
        .collect();
    g.bench_function("serialize", |b| {
        b.iter(|| {
            for stmts in &parsed {
                std::hint::black_box(stmts.iter().map(|s| s.to_string().len()).sum::<usize>());
            }
        })
    });
    let rewritten: Vec<String> = TPCH
        .iter()
        .filter_map(|(_, sql)| {
            sluice_policy::rewrite(sql, &catalog, &caller)
                .ok()
                .map(|r| r.sql)
        })
        .collect();
    let (orig_len, new_len): (usize, usize) = (
        TPCH.iter().map(|(_, s)| s.len()).sum(),
        rewritten.iter().map(String::len).sum(),
    );
    eprintln!("TPC-H text: {orig_len} bytes in, {new_len} bytes rewritten");
    g.bench_function("parse_rewritten", |b| {
        b.iter(|| {
            for sql in &rewritten {
                std::hint::black_box(Parser::parse_sql(&PostgreSqlDialect {}, sql).is_ok());
            }
        })
    });
    // The PostgreSQL verifier's share: PostgreSQL's own parser (libpg_query) on the same text.
    g.bench_function("pg_query_parse_rewritten", |b| {
        b.iter(|| {
            for sql in &rewritten {
                std::hint::black_box(pg_query::parse(sql, 0).is_ok());
            }
        })
    });
    g.bench_function("policy_rewrite_verify", |b| {
        b.iter(|| {
            for (_, sql) in TPCH {
                std::hint::black_box(sluice_policy::rewrite(sql, &catalog, &caller).is_ok());
            }
        })
    });
    // The same 22 from the rewrite cache (the daemon's path for a text seen before): a hash
    // lookup and a copy of the verified rewrite, the caller's tenant as its parameter.
    let cache = sluice_policy::RewriteCache::new(
        sluice_policy::DEFAULT_REWRITE_CACHE_ENTRIES,
        sluice_policy::DEFAULT_REWRITE_CACHE_BYTES,
    );
    for (_, sql) in TPCH {
        let _ = cache.rewrite("tpch", sql, &catalog, &caller, 0);
    }
    g.bench_function("policy_cache_hit", |b| {
        b.iter(|| {
            for (_, sql) in TPCH {
                std::hint::black_box(cache.rewrite("tpch", sql, &catalog, &caller, 0).is_ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, policy);

/// Runs on a thread with the daemon's worker stack (`POLICY_STACK_BYTES`), as the daemon does:
/// on a smaller stack every call would first switch to a freshly mapped one.
fn main() {
    let bench = std::thread::Builder::new()
        .stack_size(sluice_policy::POLICY_STACK_BYTES)
        .spawn(|| {
            benches();
            criterion::Criterion::default()
                .configure_from_args()
                .final_summary();
        });
    match bench.map(std::thread::JoinHandle::join) {
        Ok(Ok(())) => {}
        _ => std::process::exit(1),
    }
}
