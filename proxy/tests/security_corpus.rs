//! The security corpus (`../shared/security/public-corpus.jsonl`) against the real daemon and a
//! real PostgreSQL holding the world of `../shared/security/README.md`, as alice of tenant A.
//!
//! - `reject`: refused before PostgreSQL sees it (no `query_attempt` record in the audit log).
//! - `allow_filtered`: the same rows as the original query on a reference database that holds
//!   only tenant A's rows and the granted columns; or an equally safe refusal, counted and listed.
//! - No answer or error anywhere contains `LEAK` or a tenant-B amount (>= 900000).
//!
//! Other dialects' lines go to `POST /v1/policy/explain` on their `world_*` connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Daemon, TestDb};
use futures::StreamExt;
use serde_json::{Value, json};
use sluice::http::encode::{Encoder, Format};
use sluice_connectors::postgres::{PostgresConnector, PostgresOptions};
use sluice_connectors::{Connector, QueryRequest};

const SECRET: &str = "world-secret-for-tests-only-0123456789";
const WORLD_SQL: &str = include_str!("../../../shared/security/world.sql");
const CORPUS: &str = include_str!("../../../shared/security/public-corpus.jsonl");
const WORLD_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/security/world.toml");

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "tenant": "A", "groups": ["analyst"], "aud": "sluice-world", "iss": "world-idp", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Every string and number in `v`, checked for tenant-B data.
fn leaks(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            if s.contains("LEAK") || s.parse::<f64>().is_ok_and(|n| n >= 900_000.0) {
                return Some(s.clone());
            }
            None
        }
        Value::Number(n) if n.as_f64().is_some_and(|n| n >= 900_000.0) => Some(n.to_string()),
        Value::Array(a) => a.iter().find_map(leaks),
        Value::Object(o) => o.values().find_map(leaks),
        _ => None,
    }
}

/// The original query on the reference database, encoded exactly as sluice encodes answers.
async fn reference(conn: &PostgresConnector, sql: &str) -> Result<Value, String> {
    let mut s = conn
        .execute(QueryRequest {
            sql,
            params: &[],
            request_id: "reference",
            credential: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let (mut enc, head) = Encoder::start(Format::Json, &s.schema, "reference").unwrap();
    let mut buf = head.to_vec();
    let mut rows = 0;
    while let Some(b) = s.batches.next().await {
        let b = b.map_err(|e| e.to_string())?;
        rows += b.num_rows() as u64;
        buf.extend_from_slice(&enc.batch(&b).unwrap());
    }
    buf.extend_from_slice(&enc.finish(rows, false, None).unwrap());
    Ok(serde_json::from_slice(&buf).unwrap())
}

fn sorted_rows(answer: &Value) -> Vec<String> {
    let mut rows: Vec<String> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    rows.sort();
    rows
}

/// One `POST /v1/query` on the world connection: the status and the body's text.
async fn post_query(
    client: &reqwest::Client,
    daemon: &Daemon,
    token: &str,
    sql: &str,
) -> (reqwest::StatusCode, String) {
    let resp = client
        .post(format!("{}/v1/query", daemon.url))
        .bearer_auth(token)
        .json(&json!({"sql": sql, "connection": "world"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_public_corpus_is_refused_or_filtered() {
    let world = TestDb::create("world", WORLD_SQL).await;
    // Reference: only tenant A's rows and only the columns an analyst is granted.
    let reference_db = TestDb::create("world_ref", WORLD_SQL).await;
    common::connect(&reference_db.conn_str())
        .await
        .batch_execute(
            "DELETE FROM customers WHERE tenant_id <> 'A'; DELETE FROM orders WHERE tenant_id <> 'A';
             DELETE FROM invoices WHERE tenant_id <> 'A';
             ALTER TABLE customers DROP COLUMN email, DROP COLUMN ssn;
             ALTER TABLE orders DROP COLUMN card_number CASCADE;",
        )
        .await
        .unwrap();
    let reference_conn = PostgresConnector::new(&PostgresOptions {
        url: reference_db.conn_str(),
        statement_timeout: std::time::Duration::from_secs(30),
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // The daemon logs in as a least-privilege role (it refuses a superuser).
    world.grant_reader().await;
    let url = world.reader_url();
    let daemon = Daemon::start(
        std::path::Path::new(WORLD_TOML),
        dir.path(),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let client = reqwest::Client::new();
    let token = token();

    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut safe_refusals = Vec::new();
    let mut failures = Vec::new();
    let mut rejected_ids = Vec::new();

    for line in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let id = case["id"].as_str().unwrap();
        let sql = case["sql"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let (connection, endpoint) = match case["dialect"].as_str().unwrap() {
            "snowflake" => ("world_snowflake", "/v1/policy/explain"),
            "bigquery" => ("world_bigquery", "/v1/policy/explain"),
            "databricks" => ("world_databricks", "/v1/policy/explain"),
            _ => ("world", "/v1/query"),
        };
        let request_id = format!("corpus-{id}");
        let resp = client
            .post(format!("{}{endpoint}", daemon.url))
            .bearer_auth(&token)
            .header("X-Request-Id", &request_id)
            .json(&json!({"sql": sql, "connection": connection}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        if let Some(leak) = leaks(&body) {
            failures.push(format!("{id}: answer contains tenant-B data {leak:?}"));
            continue;
        }

        if endpoint == "/v1/policy/explain" {
            assert!(status.is_success(), "{id}: {body}");
            let decision = body["decision"].as_str().unwrap();
            match (expect, decision) {
                ("reject", "reject") => *counts.entry("rejected").or_default() += 1,
                ("reject", _) => failures.push(format!("{id}: expected a refusal, got {body}")),
                ("allow_filtered", "allow") => {
                    let tables = body["manifest"]["tables"].as_array().unwrap().len();
                    let wrapped = body["sql"]
                        .as_str()
                        .unwrap()
                        .matches("tenant_id\" = :1")
                        .count()
                        + body["sql"]
                            .as_str()
                            .unwrap()
                            .matches("TENANT_ID\" = :1")
                            .count()
                        + body["sql"]
                            .as_str()
                            .unwrap()
                            .matches("= @sluice_tenant")
                            .count()
                        + body["sql"]
                            .as_str()
                            .unwrap()
                            .matches("= :sluice_tenant")
                            .count();
                    if tables > 0 && wrapped == 0 {
                        failures.push(format!("{id}: protected tables not wrapped: {body}"));
                    } else {
                        *counts.entry("filtered (explain)").or_default() += 1;
                    }
                }
                (_, _) => {
                    *counts.entry("safe refusal").or_default() += 1;
                    safe_refusals.push(format!("{id}: {}", body["message"]));
                }
            }
            continue;
        }

        match expect {
            "reject" => {
                if status.is_success() {
                    failures.push(format!("{id}: expected a refusal, got {status}"));
                } else {
                    *counts.entry("rejected").or_default() += 1;
                    rejected_ids.push(request_id);
                }
            }
            _ => {
                if !status.is_success() {
                    *counts.entry("safe refusal").or_default() += 1;
                    safe_refusals.push(format!("{id}: {} {}", body["code"], body["detail"]));
                    continue;
                }
                match reference(&reference_conn, sql).await {
                    Ok(expected) => {
                        let names = |v: &Value| -> Vec<Value> {
                            v["columns"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|c| c["name"].clone())
                                .collect()
                        };
                        if names(&body) != names(&expected) {
                            failures.push(format!(
                                "{id}: columns {:?} != {:?}",
                                names(&body),
                                names(&expected)
                            ));
                        } else if sorted_rows(&body) != sorted_rows(&expected) {
                            failures.push(format!(
                                "{id}: {} rows through sluice, {} on the reference",
                                body["row_count"], expected["row_count"]
                            ));
                        } else {
                            *counts.entry("filtered (same rows)").or_default() += 1;
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{id}: the reference database refused it: {e}"))
                    }
                }
            }
        }
    }

    // Refused queries never reached PostgreSQL: no attempt record exists for them.
    let audit = sluice_audit::open_read_only(&dir.path().join("audit.sqlite")).unwrap();
    let records = sluice_audit::read_settled(&audit, std::time::Duration::from_secs(5)).unwrap();
    for rid in &rejected_ids {
        if records
            .iter()
            .any(|r| &r.request_id == rid && r.event == sluice_audit::Event::QueryAttempt)
        {
            failures.push(format!("{rid}: a refused query reached the warehouse"));
        }
    }

    println!("security corpus: {counts:?}");
    for r in &safe_refusals {
        println!("  safe refusal of an allow_filtered query: {r}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(daemon);
}

/// The attacks of the serializer-injection issue, each as one HTTP request as alice of tenant A:
/// every one is refused, or answered with nothing but tenant A's granted data. A superuser
/// service login is used on purpose (`allow_privileged_login`), so that only the policy stands
/// between the request and `pg_read_file`.
#[tokio::test]
async fn serializer_injections_are_refused_or_harmless_end_to_end() {
    // A column the table has but the policy does not declare, on a public table.
    let sql = format!(
        "{WORLD_SQL}\nALTER TABLE public.countries ADD COLUMN undeclared_secret text \
         DEFAULT 'LEAK-undeclared-public-column';"
    );
    let world = TestDb::create("inject", &sql).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(WORLD_TOML).unwrap().replace(
        "url_env = \"WORLD_PG_URL\"",
        "url_env = \"WORLD_PG_URL\"\nallow_privileged_login = true",
    );
    let config = dir.path().join("world.toml");
    std::fs::write(&config, toml).unwrap();
    let url = world.url();
    let daemon = Daemon::start(
        &config,
        dir.path(),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let client = reqwest::Client::new();
    let token = token();
    let hidden =
        "card_number, amount FROM public.orders UNION ALL SELECT pg_read_file('/etc/passwd'), 0";
    let mut attacks: Vec<String> = vec![];
    for prefix in ["N", "X", "B", "E", "U&", "n", "b"] {
        attacks.push(format!(
            "SELECT {prefix}''' AS a, 1 >/* ''x */ 0, {hidden} -- y'' >*/ 0, ''' AS b FROM orders"
        ));
        attacks.push(format!(
            "SELECT id FROM orders WHERE note = {prefix}'x'' UNION SELECT ssn FROM public.customers --'"
        ));
    }
    for minus in ["- -1", "-  -1", "1 - -1", "-(-1)"] {
        attacks.push(format!(
            "SELECT {minus} AS a, '\n UNION ALL SELECT ssn, 0 FROM public.customers' AS b FROM orders"
        ));
        attacks.push(format!(
            "SELECT amount FROM orders WHERE id > {minus} /* */ OR 1 = 1"
        ));
        attacks.push(format!(
            "SELECT {minus} >/* x */ 0, email FROM customers -- */"
        ));
    }
    attacks.extend([
        "SELECT set_config('default_transaction_read_only', 'off', false)".to_string(),
        "SELECT 1 FROM orders WHERE 1 >/* */ 0 UNION SELECT count(*) FROM pg_stat_activity"
            .to_string(),
        "WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d".to_string(),
        "SELECT ctid, xmin, code FROM countries".to_string(),
        "SELECT \"COUNT\"(*) FROM orders".to_string(),
        "SELECT 0x1F AS a FROM orders".to_string(),
        "SELECT amount FROM orders WHERE note = E'\\' OR 1 = 1 --'".to_string(),
        "SELECT amount FROM orders WHERE note = $$x$$ || ' UNION SELECT ssn FROM customers'"
            .to_string(),
        // Default deny extends to the columns of public tables.
        "SELECT code, undeclared_secret FROM countries".to_string(),
        "SELECT * FROM countries".to_string(),
        "SELECT c FROM countries c".to_string(),
        "SELECT c.* FROM countries c NATURAL JOIN countries d".to_string(),
    ]);
    let mut answered = 0;
    for sql in &attacks {
        let (status, text) = post_query(&client, &daemon, &token, sql).await;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(leaks(&body).is_none(), "{sql}: leaked {body}");
        assert!(
            !text.contains("LEAK") && !text.contains("root:"),
            "{sql}: {text}"
        );
        if status.is_success() {
            answered += 1;
        } else {
            assert!(
                status.is_client_error() || status.as_u16() == 502,
                "{sql}: {status} {text}"
            );
        }
    }
    // The harmless ones (a nested minus is arithmetic) really ran.
    assert!(answered > 0);
    // PostgreSQL reads `q.f`, when `q` has no column `f`, as the call `f(q)`: refused before
    // anything is sent (the PostgreSQL verifier knows each relation's columns).
    for sql in [
        "SELECT o.row_to_json FROM orders o",
        "SELECT o.id, o.pg_typeof FROM orders o",
        "SELECT c.to_jsonb FROM countries c",
        "SELECT s.quote_literal FROM (SELECT amount FROM orders) s",
    ] {
        let (status, text) = post_query(&client, &daemon, &token, sql).await;
        assert_eq!(status.as_u16(), 403, "{sql}: {text}");
        assert!(text.contains("no column"), "{sql}: {text}");
    }
    drop(daemon);
}

/// Deep input through HTTP (query and explain): a clear `400 query_too_complex`, and the daemon
/// keeps answering.
#[tokio::test]
async fn deep_input_is_a_clear_400_and_the_daemon_stays_up() {
    let world = TestDb::create("deep", WORLD_SQL).await;
    world.grant_reader().await;
    let dir = tempfile::tempdir().unwrap();
    let url = world.reader_url();
    let daemon = Daemon::start(
        std::path::Path::new(WORLD_TOML),
        dir.path(),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let client = reqwest::Client::new();
    let token = token();
    let chain = |op: &str, n: usize| {
        let mut s = String::from("SELECT amount FROM orders WHERE 1");
        for _ in 0..n {
            s.push(' ');
            s.push_str(op);
            s.push_str(" 1");
        }
        s
    };
    let mut cases: Vec<String> = ["+", "||", "AND", "OR", "*"]
        .iter()
        .map(|op| chain(op, 100_000))
        .collect();
    // (Within the 1 MiB body limit: 40,000 terms.)
    let mut union = String::from("SELECT 1");
    for _ in 0..40_000 {
        union.push_str(" UNION ALL SELECT 1");
    }
    cases.push(union);
    cases.push(format!(
        "SELECT {}1{}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    ));
    cases.push(format!(
        "SELECT {} 1 {}",
        "(SELECT ".repeat(10_000),
        ")".repeat(10_000)
    ));
    for sql in &cases {
        for endpoint in ["/v1/query", "/v1/policy/explain"] {
            let resp = client
                .post(format!("{}{endpoint}", daemon.url))
                .bearer_auth(&token)
                .json(&json!({"sql": sql, "connection": "world"}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            if endpoint == "/v1/query" {
                assert_eq!(status.as_u16(), 400, "{body}");
            } else {
                assert_eq!(body["decision"], "reject", "{body}");
            }
            let code = body["code"].as_str().unwrap();
            assert!(
                code == "query_too_complex" || code == "sql_parse_error",
                "{endpoint}: {code}"
            );
        }
        let health = client
            .get(format!("{}/healthz", daemon.url))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success());
    }
    // A deep but admitted query (a thousand ORed comparisons) is answered.
    let mut ors = String::from("SELECT count(*) AS n FROM orders WHERE id = 0");
    for i in 1..1_000 {
        ors.push_str(&format!(" OR id = {i}"));
    }
    let (status, text) = post_query(&client, &daemon, &token, &ors).await;
    assert!(status.is_success(), "{text}");
    drop(daemon);
}
