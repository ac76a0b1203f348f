//! Property: for generated queries over the security world (every join kind, subqueries in
//! several clauses, CTEs named like tables, set operations, OR-true predicates), the verifier
//! accepts every rewrite the rewriter produces, and running the rewrite on the real PostgreSQL
//! world never returns a tenant-B row or an ungranted value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestDb;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice_connectors::postgres::{PostgresConnector, PostgresOptions};
use sluice_connectors::{Connector, Param, QueryRequest};
use sluice_policy::PolicyError;

const WORLD_SQL: &str = include_str!("../../../shared/security/world.sql");
const WORLD_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/security/world.toml");
/// Generated queries per run (each runs on PostgreSQL).
const CASES: u32 = 96;

/// (table, granted columns an analyst may name)
const TABLES: &[(&str, &[&str])] = &[
    (
        "orders",
        &["id", "tenant_id", "customer_id", "amount", "status", "note"],
    ),
    (
        "customers",
        &["id", "tenant_id", "name", "country", "credit_limit"],
    ),
    ("invoices", &["id", "tenant_id", "order_id", "total"]),
    ("countries", &["code", "name"]),
];

fn table() -> impl Strategy<Value = usize> {
    0..TABLES.len()
}

/// A column of table `t` under alias `a`.
fn column(t: usize, a: &'static str) -> impl Strategy<Value = String> {
    proptest::sample::select(TABLES[t].1).prop_map(move |c| format!("{a}.{c}"))
}

fn name(t: usize, qualified: bool) -> String {
    if qualified {
        format!("public.{}", TABLES[t].0)
    } else {
        TABLES[t].0.to_string()
    }
}

/// A predicate, possibly with a subquery, possibly OR-ed with something always true.
fn predicate(t: usize, a: &'static str) -> impl Strategy<Value = String> {
    (column(t, a), table(), any::<bool>(), 0..5u8).prop_map(move |(c, sub, or_true, kind)| {
        let base = match kind {
            0 => format!("{c} IS NOT NULL"),
            1 => format!(
                "{c} IN (SELECT {} FROM {} s)",
                TABLES[sub].1[0],
                name(sub, false)
            ),
            2 => format!(
                "EXISTS (SELECT 1 FROM {} s WHERE s.{} IS NOT NULL)",
                name(sub, true),
                TABLES[sub].1[0]
            ),
            3 => format!("CAST({c} AS TEXT) <> 'x'"),
            _ => format!("(SELECT count(*) FROM {} s) >= 0", name(sub, false)),
        };
        if or_true {
            format!("({base}) OR 1 = 1")
        } else {
            base
        }
    })
}

fn join_kind() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN"][..])
}

/// A SELECT over one or two tables.
fn select() -> impl Strategy<Value = String> {
    (
        table(),
        table(),
        any::<bool>(),
        any::<bool>(),
        join_kind(),
        any::<bool>(),
    )
        .prop_flat_map(|(t1, t2, two, qualified, kind, with_where)| {
            let cols = (column(t1, "a"), column(t2, "b"));
            let pred = predicate(t1, "a");
            (cols, pred).prop_map(move |((c1, c2), p)| {
                let from = if two {
                    let on = if kind == "CROSS JOIN" {
                        String::new()
                    } else {
                        " ON true".to_string()
                    };
                    format!(
                        "{} a {kind} {} b{on}",
                        name(t1, qualified),
                        name(t2, !qualified)
                    )
                } else {
                    format!("{} a", name(t1, qualified))
                };
                let proj = if two {
                    format!("{c1}, {c2}")
                } else {
                    format!("{c1}, a.*")
                };
                let w = if with_where {
                    format!(" WHERE {p}")
                } else {
                    String::new()
                };
                format!("SELECT {proj} FROM {from}{w}")
            })
        })
}

/// A whole query: a SELECT, maybe in a CTE named like a base table, maybe in a set operation.
fn query() -> impl Strategy<Value = String> {
    (select(), select(), 0..4u8, table()).prop_map(|(s1, s2, shape, t)| match shape {
        0 => s1,
        1 => format!(
            "WITH {} AS ({s1}) SELECT * FROM {}",
            TABLES[t].0, TABLES[t].0
        ),
        2 => format!("SELECT count(*) FROM ({s1}) x UNION ALL SELECT count(*) FROM ({s2}) y"),
        _ => format!("SELECT * FROM ({s1}) x WHERE EXISTS (SELECT 1 FROM ({s2}) y)"),
    })
}

#[test]
fn generated_queries_verify_and_never_return_tenant_b_data() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let world = rt.block_on(TestDb::create("prop", WORLD_SQL));
    let conn = PostgresConnector::new(&PostgresOptions {
        url: world.conn_str(),
        statement_timeout: std::time::Duration::from_secs(20),
    })
    .unwrap();
    let config = sluice::config::Config::load(std::path::Path::new(WORLD_TOML)).unwrap();
    let policy = sluice::app::Policy::from_config(&config).unwrap();
    let catalog = &policy.catalogs["world"];
    let groups = vec!["analyst".to_string()];
    let caller = sluice_policy::Caller {
        tenant: "A",
        groups: &groups,
        row_limit: None,
        attributes: &sluice_policy::NO_ATTRIBUTES,
    };

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = std::cell::Cell::new(0u32);
    let answered = std::cell::Cell::new(0u32);
    runner
        .run(&query(), |sql| {
            let rewritten = match sluice_policy::rewrite(&sql, catalog, &caller) {
                Ok(r) => r,
                Err(e @ PolicyError::Verification(_)) => {
                    return Err(TestCaseError::fail(format!(
                        "verifier refused a rewrite of {sql}: {e}"
                    )));
                }
                // Other refusals (e.g. an ambiguous name) are safe; the property is about leaks.
                Err(_) => return Ok(()),
            };
            let params: Vec<Param> = sluice::engine::connection::bind(&rewritten.params);
            let rows = rt.block_on(async {
                let mut out = Vec::new();
                let req = QueryRequest {
                    sql: &rewritten.sql,
                    params: &params,
                    request_id: "prop",
                    credential: None,
                };
                let Ok(mut s) = conn.execute(req).await else {
                    return out;
                };
                while let Some(Ok(b)) = s.batches.next().await {
                    for col in b.columns() {
                        let strings =
                            arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
                        let strings = strings
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap();
                        out.extend(strings.iter().flatten().map(str::to_string));
                    }
                }
                out
            });
            ran.set(ran.get() + 1);
            if !rows.is_empty() {
                answered.set(answered.get() + 1);
            }
            for v in rows {
                let leaked = v.contains("LEAK")
                    || v == "B"
                    || v.parse::<f64>().is_ok_and(|n| n >= 900_000.0);
                prop_assert!(!leaked, "{sql}\n-> {}\nreturned {v:?}", rewritten.sql);
            }
            Ok(())
        })
        .unwrap();
    let (ran, answered) = (ran.get(), answered.get());
    println!(
        "property: {ran} generated queries rewritten and run on PostgreSQL, {answered} returned rows, none held tenant-B data"
    );
    assert!(
        ran > CASES / 2,
        "too few generated queries were accepted: {ran}"
    );
    assert!(
        answered > ran / 2,
        "too few generated queries returned rows: {answered} of {ran}"
    );
}
