//! The BI corpus (`tests/bi/corpus.sql`): queries shaped like what Metabase, Superset,
//! Tableau, Power BI and Looker generate, and analysts' dashboard SQL. Each runs through
//! sluice's wire door as tenant A, over a database shared by two tenants whose ids overlap, and
//! directly on a database holding only tenant A's rows. Every query must be accepted (the
//! acceptance rate is printed, per tool) and give the same rows, and the same column types, as
//! the tenant-only database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Daemon, TestDb};
use serde_json::json;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const SECRET: &str = "bi-corpus-secret-0123456789abcdef";
const CORPUS: &str = include_str!("../../tests/bi/corpus.sql");
const SCHEMA: &str = include_str!("../../tests/bi/schema.sql");
const ROWS: &str = include_str!("../../tests/bi/rows.sql");

const CONFIG: &str = r#"
[auth.jwt]
algorithm = "HS256"
secret_env = "BI_SECRET"
issuer = "bi"
audience = "sluice"

[limits]
max_result_rows = 100000

[pgwire]
listen = "127.0.0.1:0"

[[connections]]
id = "shop"
kind = "postgres"
url_env = "BI_PG_URL"

[[connections.tables]]
name = "public.orders"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id", "customer_id", "product_id", "status", "quantity", "amount", "discount", "created_at", "shipped_at", "channel"]
types = { tenant_id = "text", id = "int4", customer_id = "int4", product_id = "int4", status = "text", quantity = "integer", amount = "numeric(12,2)", discount = "float8", created_at = "timestamp", shipped_at = "timestamptz", channel = "text" }

[[connections.tables]]
name = "public.customers"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id", "name", "email", "country_code", "segment", "signup_date", "is_active"]
types = { tenant_id = "text", id = "int4", name = "text", email = "text", country_code = "text", segment = "text", signup_date = "date", is_active = "bool" }

[[connections.tables]]
name = "public.products"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id", "name", "category", "price", "launched"]
types = { tenant_id = "text", id = "int4", name = "text", category = "text", price = "numeric(10,2)", launched = "date" }

[[connections.tables]]
name = "public.countries"
access = "public"
columns = ["code", "name", "region"]
types = { code = "text", name = "text", region = "text" }
"#;

/// `(tool, description, sql)` for every query of the corpus.
fn corpus() -> Vec<(String, String, String)> {
    let lines: Vec<&str> = CORPUS.lines().collect();
    let mut out = Vec::new();
    for pair in lines.windows(2) {
        let (head, sql) = (pair[0], pair[1]);
        if let (Some(label), Some(sql)) = (head.strip_prefix("-- "), sql.strip_suffix(';'))
            && !sql.starts_with("--")
        {
            let (tool, what) = label.split_once(": ").unwrap();
            out.push((tool.to_string(), what.to_string(), sql.to_string()));
        }
    }
    out
}

fn rows_for(tenant: &str, shift: u32, size: u32) -> String {
    ROWS.replace("{t}", tenant)
        .replace("{k}", &shift.to_string())
        .replace("{n}", &size.to_string())
}

/// A cell as compared: numbers as numbers (within a relative 1e-9: the two databases may
/// add floats in another order), anything else exactly as PostgreSQL's text (timestamps,
/// intervals, arrays: the wire door writes PostgreSQL's text forms; the session zone is UTC
/// on both sides).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Number(f64),
    Text(String),
}

fn cell(v: Option<&str>) -> Cell {
    match v {
        None => Cell::Null,
        Some(s) => match s.parse::<f64>() {
            Ok(f) if !s.is_empty() && s.trim() == s => Cell::Number(f),
            _ => Cell::Text(s.to_string()),
        },
    }
}

fn same(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Cell::Number(x), Cell::Number(y)) => {
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
            _ => x == y,
        })
}

/// The rows of `sql`, sorted (the corpus compares sets of rows: a query's `ORDER BY` may
/// leave ties in any order).
async fn rows(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Cell>>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = m {
            out.push((0..row.len()).map(|i| cell(row.get(i))).collect::<Vec<_>>());
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Ok(out)
}

/// The type sluice reports for a column PostgreSQL types as `direct` (with `type_modifier`):
/// the same, except the documented substitutions (README, PostgreSQL types): an unconstrained
/// `numeric`, whose values need not fit a decimal of fixed precision, travels as exact text,
/// and `varchar`, `bpchar` and `name` as `text`.
fn expected_type(direct: &Type, type_modifier: i32) -> Type {
    match *direct {
        Type::NUMERIC if type_modifier < 0 => Type::TEXT,
        Type::VARCHAR | Type::BPCHAR | Type::NAME => Type::TEXT,
        ref t => t.clone(),
    }
}

#[tokio::test]
async fn bi_tool_queries_are_accepted_and_answer_as_on_a_tenant_only_database() {
    let full = TestDb::create(
        "bi_full",
        &format!("{SCHEMA}{}{}", rows_for("B", 3, 6), rows_for("A", 0, 4)),
    )
    .await;
    let reference = TestDb::create("bi_ref", &format!("{SCHEMA}{}", rows_for("A", 0, 4))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bi.toml");
    std::fs::write(&config, CONFIG).unwrap();
    full.grant_reader().await;
    let url = full.reader_url();
    let (daemon, wire) = Daemon::start_with_wire(
        &config,
        &dir.path().join("data"),
        &[("BI_SECRET", SECRET), ("BI_PG_URL", url.as_str())],
    );
    let token = common::sign_hs256(
        SECRET,
        json!({"sub": "alice", "tenant": "A", "iss": "bi", "aud": "sluice"}),
    );
    let port = wire.rsplit(':').next().unwrap();
    let (sluice, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=alice password={token} dbname=shop"),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let direct = common::connect(&reference.conn_str()).await;
    direct.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();

    let queries = corpus();
    assert!(
        queries.len() >= 200,
        "the corpus has {} queries",
        queries.len()
    );
    let mut per_tool: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut different = Vec::new();
    for (tool, what, sql) in &queries {
        let tally = per_tool.entry(tool.as_str()).or_default();
        tally.0 += 1;
        let want = rows(&direct, sql)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {what}: the corpus query fails directly: {e}"));
        let got = match rows(&sluice, sql).await {
            Ok(r) => r,
            Err(e) => {
                let message = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string());
                refused.push(format!("{tool}: {what}: {message}\n  {sql}"));
                continue;
            }
        };
        tally.1 += 1;
        let stmt_direct = direct.prepare(sql).await.unwrap();
        let stmt_sluice = sluice.prepare(sql).await;
        let types = |s: &tokio_postgres::Statement| {
            s.columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_().clone()))
                .collect::<Vec<_>>()
        };
        let want_types: Vec<(String, Type)> = stmt_direct
            .columns()
            .iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    expected_type(c.type_(), c.type_modifier()),
                )
            })
            .collect();
        match stmt_sluice {
            Ok(s) if types(&s) == want_types => {}
            Ok(s) => different.push(format!(
                "{tool}: {what}: columns {:?}, want {want_types:?}\n  {sql}",
                types(&s)
            )),
            Err(e) => different.push(format!("{tool}: {what}: prepare failed: {e}\n  {sql}")),
        }
        if got.len() != want.len() || !got.iter().zip(&want).all(|(a, b)| same(a, b)) {
            let show = |r: &[Vec<Cell>]| format!("{:?}", &r[..r.len().min(3)]);
            different.push(format!(
                "{tool}: {what}: {} rows {}, want {} rows {}\n  {sql}",
                got.len(),
                show(&got),
                want.len(),
                show(&want)
            ));
        }
    }
    let accepted: usize = per_tool.values().map(|t| t.1).sum();
    println!(
        "BI corpus: {accepted} of {} accepted ({:.1} %)",
        queries.len(),
        100.0 * accepted as f64 / queries.len() as f64
    );
    for (tool, (n, ok)) in &per_tool {
        println!("  {tool}: {ok} of {n}");
    }
    for r in &refused {
        println!("refused: {r}");
    }
    assert!(
        different.is_empty(),
        "answers differ:\n{}",
        different.join("\n")
    );
    // Every query of the corpus is honest BI SQL: none may be refused.
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    // With the columns' types declared, the corpus's correlated scalar sub-queries and closed
    // `IN` sub-queries ran with their correlation or sub-query moved inside the tenant wrapper
    // (where PostgreSQL can use an index), and still answered as above: two of them as the
    // policy explains them.
    for (sql, copied) in [
        (
            "SELECT c.id, (SELECT max(o.created_at) FROM orders o WHERE o.customer_id = c.id) \
             AS last_order FROM customers c ORDER BY c.id LIMIT 40",
            r#"AND ("customer_id" = "c"."id")"#,
        ),
        (
            "SELECT count(*) FROM orders WHERE product_id IN \
             (SELECT id FROM products WHERE category = 'Books')",
            r#"AND ("product_id" IN (SELECT "products"."id" FROM"#,
        ),
    ] {
        let explained: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/v1/policy/explain", daemon.url))
            .bearer_auth(&token)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            explained["sql"].as_str().unwrap().contains(copied),
            "{explained}"
        );
    }
}
