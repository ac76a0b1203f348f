//! Differential: each query, sent through sluice as tenant A, returns the same rows and types as
//! the same SQL sent directly to a PostgreSQL database that holds only tenant A's rows. The
//! cases read as a specification of what passes through the proxy unchanged: projections,
//! expressions, aggregates, windows, CTEs, joins, set operations, NULLs, every common type.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Daemon, TestDb};
use serde_json::{Value, json};

const SECRET: &str = "differential-secret-0123456789abcdef";

/// Rows for one tenant; `{t}` is the tenant, `{o}` an id offset.
const ROWS: &str = "INSERT INTO facts
  SELECT {o} + g, '{t}', 'name-' || g, (g * 12.25)::numeric(12,2), g / 4.0, g % 3 = 0,
         DATE '2024-01-01' + g, TIMESTAMP '2024-01-01 08:00:00' + g * INTERVAL '7 hours',
         TIMESTAMPTZ '2024-01-01 08:00:00+00' + g * INTERVAL '5 hours', g::bigint * 1000000007,
         CASE WHEN g % 4 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(1, 30) g;";

const SCHEMA: &str = "CREATE TABLE facts (id int PRIMARY KEY, tenant_id text NOT NULL,
  name text, amount numeric(12,2), score float8, flag bool, day date, at timestamp,
  seen timestamptz, big bigint, note text);
  CREATE TABLE kinds (flag bool PRIMARY KEY, label text);
  INSERT INTO kinds VALUES (true, 'yes'), (false, 'no');";

const CASES: &[&str] = &[
    "SELECT * FROM facts ORDER BY id",
    "SELECT id, amount * 2 AS twice, upper(name) AS big_name, score + 1 AS s FROM facts WHERE flag ORDER BY id",
    "SELECT flag, count(*) AS n, sum(amount) AS total, min(day) AS first_day, max(at) AS last_at FROM facts GROUP BY flag ORDER BY flag",
    "SELECT date_trunc('month', at) AS m, count(*) AS n FROM facts GROUP BY 1 ORDER BY 1",
    "SELECT id, coalesce(note, 'none') AS note FROM facts ORDER BY id DESC LIMIT 7",
    "SELECT id, rank() OVER (ORDER BY amount DESC) AS r, sum(score) OVER (ORDER BY id) AS running FROM facts ORDER BY id",
    "WITH big AS (SELECT id, amount FROM facts WHERE amount > 200) SELECT count(*) AS n, avg(amount) AS a FROM big",
    "SELECT f.id, k.label FROM facts f JOIN kinds k ON k.flag = f.flag WHERE f.id % 5 = 0 ORDER BY f.id",
    "SELECT id FROM facts WHERE id < 5 UNION ALL SELECT id FROM facts WHERE id > 27 ORDER BY id",
    "SELECT id, seen, big, note IS NULL AS missing FROM facts WHERE seen > TIMESTAMPTZ '2024-01-03 00:00:00+00' ORDER BY id",
    "SELECT count(DISTINCT flag) AS kinds, bool_and(score > 0) AS all_positive FROM facts",
    "SELECT id, CASE WHEN amount > 100 THEN 'high' ELSE 'low' END AS band, round(score) AS r FROM facts ORDER BY id LIMIT 10",
];

/// The Arrow type sluice reports for a PostgreSQL column type.
fn arrow_type_of(pg: &tokio_postgres::types::Type) -> &'static str {
    match pg.name() {
        "int4" => "Int32",
        "int8" => "Int64",
        "float8" => "Float64",
        "text" => "Utf8",
        "bool" => "Boolean",
        "date" => "Date32",
        "timestamp" => "Timestamp(µs)",
        "timestamptz" => "Timestamp(µs, \"UTC\")",
        "numeric" => "numeric",
        other => panic!("no expectation for {other}"),
    }
}

/// A JSON value from sluice, in PostgreSQL's text form (numbers compared as numbers).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
        Value::Number(n) => Some(n.as_f64().unwrap().to_string()),
        Value::String(s) => Some(s.replace('T', " ").trim_end_matches('Z').to_string()),
        other => Some(other.to_string()),
    }
}

/// PostgreSQL's text form, numbers normalized like [`text_of`].
fn normalize(pg: Option<&str>, numeric: bool) -> Option<String> {
    pg.map(|s| {
        if numeric {
            s.parse::<f64>().unwrap().to_string()
        } else {
            s.trim_end_matches("+00").to_string()
        }
    })
}

#[tokio::test]
async fn queries_through_sluice_return_what_postgres_returns_for_the_tenants_rows() {
    let full = TestDb::create(
        "diff_full",
        &format!(
            "{SCHEMA}{}{}",
            ROWS.replace("{t}", "A").replace("{o}", "0"),
            ROWS.replace("{t}", "B").replace("{o}", "1000")
        ),
    )
    .await;
    let reference = TestDb::create(
        "diff_ref",
        &format!("{SCHEMA}{}", ROWS.replace("{t}", "A").replace("{o}", "0")),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("diff.toml");
    std::fs::write(
        &config,
        r#"
[auth.jwt]
algorithm = "HS256"
secret_env = "DIFF_SECRET"
issuer = "diff"
audience = "sluice"

[limits]
max_result_rows = 100000

[[connections]]
id = "pg"
kind = "postgres"
url_env = "DIFF_PG_URL"

[[connections.tables]]
name = "public.facts"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "name", "amount", "score", "flag", "day", "at", "seen", "big", "note"]

[[connections.tables]]
name = "public.kinds"
access = "public"
columns = ["flag", "label"]
"#,
    )
    .unwrap();
    full.grant_reader().await;
    let url = full.reader_url();
    let d = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("DIFF_SECRET", SECRET), ("DIFF_PG_URL", url.as_str())],
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "tenant": "A", "iss": "diff", "aud": "sluice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let direct = common::connect(&reference.conn_str()).await;
    direct.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let http = reqwest::Client::new();

    for sql in CASES {
        let r = http
            .post(format!("{}/v1/query", d.url))
            .bearer_auth(&token)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{sql}: {body}");

        // Types: what the prepared statement says, mapped as the connector maps it.
        let stmt = direct.prepare(sql).await.unwrap();
        let columns = body["columns"].as_array().unwrap();
        assert_eq!(columns.len(), stmt.columns().len(), "{sql}");
        let mut numeric = Vec::new();
        for (c, pg) in columns.iter().zip(stmt.columns()) {
            assert_eq!(c["name"], pg.name(), "{sql}");
            let expected = arrow_type_of(pg.type_());
            let got = c["type"].as_str().unwrap();
            if expected == "numeric" {
                assert!(
                    got.starts_with("Decimal128") || got == "Utf8",
                    "{sql}: {got}"
                );
            } else {
                assert_eq!(got, expected, "{sql}: column {}", pg.name());
            }
            numeric.push(matches!(
                pg.type_().name(),
                "numeric" | "float8" | "int4" | "int8"
            ));
        }

        // Rows: the reference database's, in PostgreSQL's text form.
        let mut want = Vec::new();
        for m in direct.simple_query(sql).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                want.push(
                    (0..row.len())
                        .map(|i| normalize(row.get(i), numeric[i]))
                        .collect::<Vec<_>>(),
                );
            }
        }
        let got: Vec<Vec<Option<String>>> = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let t = text_of(v);
                        if numeric[i] {
                            t.map(|s| s.parse::<f64>().unwrap().to_string())
                        } else {
                            t
                        }
                    })
                    .collect()
            })
            .collect();
        assert!(!want.is_empty(), "{sql}: the reference has rows");
        assert_eq!(got, want, "{sql}");
    }
}
