//! The PostgreSQL connector against the real server: a client that leaves cancels the query on
//! the server (it leaves pg_stat_activity), and the statement timeout applies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, TestDb};
use serde_json::{Value, json};

const SECRET: &str = "world-secret-for-tests-only-0123456789";
const WORLD_SQL: &str = include_str!("../../../shared/security/world.sql");
const WORLD_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/security/world.toml");
/// Long enough to still be running when the client gives up: 200^4 rows for tenant A.
const SLOW_SQL: &str = "SELECT count(*) FROM orders a, orders b, orders c, orders d";

fn token() -> String {
    token_as("alice", "A")
}

/// A world token for a user of a tenant.
fn token_as(user: &str, tenant: &str) -> String {
    common::sign_hs256(
        SECRET,
        json!({"sub": user, "tenant": tenant, "groups": ["analyst"], "aud": "sluice-world", "iss": "world-idp"}),
    )
}

/// Starts the world daemon with the given statement timeout and request (header) deadline,
/// logged in as the least-privilege reader.
async fn daemon(
    db: &TestDb,
    dir: &std::path::Path,
    statement_timeout_ms: u64,
    request_timeout_ms: u64,
) -> Daemon {
    let text = std::fs::read_to_string(WORLD_TOML)
        .unwrap()
        .replacen(
            "url_env = \"WORLD_PG_URL\"",
            &format!("url_env = \"WORLD_PG_URL\"\nstatement_timeout_ms = {statement_timeout_ms}"),
            1,
        )
        .replacen(
            "data_dir = \"world-data\"",
            &format!("data_dir = \"world-data\"\nrequest_timeout_ms = {request_timeout_ms}"),
            1,
        );
    let config = dir.join("world.toml");
    std::fs::write(&config, text).unwrap();
    db.grant_reader().await;
    let url = db.reader_url();
    Daemon::start(
        &config,
        &dir.join("data"),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    )
}

async fn wait_until_running(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while running_sluice_queries(db).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the query never started on PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_gone(db: &TestDb, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running_sluice_queries(db).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the query kept running on PostgreSQL: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running_sluice_queries(db: &TestDb) -> i64 {
    let c = common::connect(common::PG_ADMIN).await;
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'sluice' AND state = 'active'",
            &[&db.name],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn a_client_that_leaves_mid_answer_stops_the_query_on_the_server() {
    let db = TestDb::create("cancel", WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&db, dir.path(), 300_000, 30_000).await;
    // Millions of rows for tenant A: the answer streams for a long time.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token())
        .json(&json!({"sql": "SELECT a.id, b.id, c.id FROM orders a, orders b, orders c", "connection": "world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_until_running(&db).await;
    drop(resp); // the client leaves mid-answer
    wait_until_gone(&db, "after the client left mid-answer").await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_first_row_stops_the_query_on_the_server() {
    let db = TestDb::create("gone", WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    // The request deadline is far away: only noticing the departure can stop the query.
    let d = daemon(&db, dir.path(), 300_000, 120_000).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let query = client
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token())
        .json(&json!({"sql": SLOW_SQL, "connection": "world"}))
        .send();
    let (resp, ()) = tokio::join!(query, wait_until_running(&db));
    assert!(resp.is_err(), "the client gave up");
    wait_until_gone(&db, "after the client left before the first row").await;
    // The audit log says so.
    let audit = sluice_audit::open_read_only(&dir.path().join("data/audit.sqlite")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records =
            sluice_audit::read_settled(&audit, std::time::Duration::from_secs(5)).unwrap();
        if let Some(r) = records
            .iter()
            .find(|r| r.event == sluice_audit::Event::QueryCompletion)
        {
            assert_eq!(r.outcome.as_deref(), Some("cancelled"));
            assert_eq!(r.code.as_deref(), Some("client_disconnected"));
            break;
        }
        assert!(Instant::now() < deadline, "no completion record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_request_deadline_stops_a_query_that_has_not_answered_yet() {
    let db = TestDb::create("deadline", WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&db, dir.path(), 300_000, 1_000).await;
    let query = reqwest::Client::new()
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token())
        .json(&json!({"sql": SLOW_SQL, "connection": "world"}))
        .send();
    let (resp, ()) = tokio::join!(query, wait_until_running(&db));
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "timeout");
    wait_until_gone(&db, "after the request deadline").await;
}

#[tokio::test]
async fn the_statement_timeout_stops_a_long_query() {
    let db = TestDb::create("stmt_timeout", WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&db, dir.path(), 300, 30_000).await;
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token())
        .json(&json!({"sql": SLOW_SQL, "connection": "world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "warehouse_error");
    assert!(
        !v["detail"].as_str().unwrap().contains("statement timeout"),
        "warehouse text never reaches the client"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Every mapped PostgreSQL type, one row of values and one of NULLs: the Arrow types, and the
/// JSON sluice answers with.
#[tokio::test]
async fn the_type_matrix_maps_to_arrow_and_json() {
    use futures::StreamExt;
    use sluice_connectors::postgres::{PostgresConnector, PostgresOptions};
    use sluice_connectors::{Connector, QueryRequest};
    let db = TestDb::create(
        "types",
        r#"CREATE TABLE t (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(12,2),
             nu numeric, tx text, vc varchar(10), j jsonb, u uuid, by bytea, d date, tm time,
             ts timestamp, tz timestamptz, iv interval, ai int4[], at text[]);
           INSERT INTO t VALUES (true, 1, 2, 3, 1.5, 2.5, 1234.5, 3.14159, 'x', 'y', '{"a": 1}',
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef', '2024-02-29', '13:45:30.123456',
             '2024-01-01 12:00:00', '2024-01-01 12:00:00+02', '1 mon 2 days 03:04:05.5',
             '{1,NULL,3}', '{"a","b"}');
           INSERT INTO t DEFAULT VALUES;"#,
    )
    .await;
    let conn = PostgresConnector::new(&PostgresOptions {
        url: db.conn_str(),
        statement_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let mut s = conn
        .execute(QueryRequest {
            sql: "SELECT * FROM t ORDER BY b NULLS LAST",
            params: &[],
            request_id: "types",
            credential: None,
        })
        .await
        .unwrap();
    let types: Vec<String> = s
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "Boolean",
            "Int16",
            "Int32",
            "Int64",
            "Float32",
            "Float64",
            "Decimal128(12, 2)",
            "Utf8",
            "Utf8",
            "Utf8",
            "Utf8",
            "Utf8",
            "Binary",
            "Date32",
            "Time64(µs)",
            "Timestamp(µs)",
            "Timestamp(µs, \"UTC\")",
            "Interval(MonthDayNano)",
            "List(Int32)",
            "List(Utf8)",
        ]
    );
    let (mut enc, head) =
        sluice::http::encode::Encoder::start(sluice::http::encode::Format::Json, &s.schema, "t")
            .unwrap();
    let mut out = head.to_vec();
    let mut rows = 0;
    while let Some(b) = s.batches.next().await {
        let b = b.unwrap();
        rows += b.num_rows() as u64;
        out.extend_from_slice(&enc.batch(&b).unwrap());
    }
    out.extend_from_slice(&enc.finish(rows, false, None).unwrap());
    let v: Value = serde_json::from_slice(&out).unwrap();
    let row = &v["rows"][0];
    assert_eq!(row[0], true);
    assert_eq!(
        (row[1].clone(), row[2].clone(), row[3].clone()),
        (json!(1), json!(2), json!(3))
    );
    assert_eq!((row[4].clone(), row[5].clone()), (json!(1.5), json!(2.5)));
    let raw = String::from_utf8(out.clone()).unwrap();
    assert!(
        raw.contains(",1234.50,"),
        "numeric(12,2) keeps its scale: {raw}"
    );
    assert_eq!(row[7], "3.14159", "unconstrained numeric is exact text");
    assert_eq!((row[8].clone(), row[9].clone()), (json!("x"), json!("y")));
    assert_eq!(row[10], r#"{"a":1}"#);
    assert_eq!(row[11], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(row[12], "deadbeef");
    assert_eq!(row[13], "2024-02-29");
    assert_eq!(row[14], "13:45:30.123456");
    assert_eq!(row[15], "2024-01-01T12:00:00");
    assert_eq!(row[16], "2024-01-01T10:00:00Z");
    assert!(
        row[17]
            .as_str()
            .unwrap()
            .contains("1 mons 2 days 3 hours 4 mins 5.5"),
        "{}",
        row[17]
    );
    assert_eq!(row[18], json!([1, null, 3]));
    assert_eq!(row[19], json!(["a", "b"]));
    assert!(
        v["rows"][1].as_array().unwrap().iter().all(Value::is_null),
        "{}",
        v["rows"][1]
    );
}

/// Peak resident memory of a process, from /proc (kB).
fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 5-million-row answer streams through the daemon with flat memory: its peak RSS grows by a
/// small, bounded amount, not with the answer (which is ~200 MB as Arrow).
#[tokio::test]
async fn a_five_million_row_answer_streams_with_flat_memory() {
    use futures::StreamExt;
    const ROWS: u64 = 5_000_000;
    let db = TestDb::create(
        "big",
        &format!(
            "CREATE TABLE big AS SELECT i AS id, 'A'::text AS tenant_id, md5(i::text) AS payload
             FROM generate_series(1, {ROWS}) i;"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("big.toml");
    std::fs::write(
        &config,
        "[auth.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"WORLD_JWT_SECRET\"\nissuer = \"world-idp\"\naudience = \"sluice-world\"\n\
         [limits]\nmax_result_rows = 10000000\n\
         [[connections]]\nid = \"world\"\nkind = \"postgres\"\nurl_env = \"WORLD_PG_URL\"\n\
         [[connections.tables]]\nname = \"public.big\"\naccess = \"protected\"\ntenant_column = \"tenant_id\"\n\
         columns = [\"id\", \"tenant_id\", \"payload\"]\n",
    )
    .unwrap();
    db.grant_reader().await;
    let url = db.reader_url();
    let d = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let pid = d.child.id();
    let before = vm_hwm_kb(pid);
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token())
        .header("Accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": "SELECT id, payload FROM big", "connection": "world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut bytes = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        bytes += chunk.unwrap().len() as u64;
    }
    let elapsed = started.elapsed();
    let after = vm_hwm_kb(pid);
    let growth_mb = (after.saturating_sub(before)) as f64 / 1024.0;
    println!(
        "streaming: {ROWS} rows, {:.0} MB of Arrow in {:.1} s ({:.0} rows/s, debug build); daemon peak RSS {} -> {} kB (+{growth_mb:.1} MB)",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64(),
        before,
        after
    );
    assert!(
        bytes > 150_000_000,
        "the whole answer arrived: {bytes} bytes"
    );
    assert!(
        growth_mb < 128.0,
        "memory grew with the answer: +{growth_mb:.1} MB"
    );
}

/// Roles created for one test, dropped (with what they own or were granted) at the end.
struct Roles {
    names: Vec<String>,
    db: String,
}

impl Drop for Roles {
    fn drop(&mut self) {
        for r in &self.names {
            for (db, sql) in [
                (self.db.as_str(), format!("DROP OWNED BY {r}")),
                ("postgres", format!("DROP ROLE IF EXISTS {r}")),
            ] {
                let _ = std::process::Command::new("psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-d",
                        db,
                        "-q",
                        "-c",
                        &sql,
                    ])
                    .output();
            }
        }
    }
}

fn token_for(user: &str) -> String {
    token_as(user, "A")
}

#[tokio::test]
async fn per_user_passwords_log_in_as_that_user_so_the_warehouses_grants_apply() {
    let db = TestDb::create("pwmode", WORLD_SQL).await;
    let pid = std::process::id();
    let (granted, denied) = (
        format!("sluice_pw_granted_{pid}"),
        format!("sluice_pw_denied_{pid}"),
    );
    let _roles = Roles {
        names: vec![granted.clone(), denied.clone()],
        db: db.name.clone(),
    };
    let admin = common::connect(&db.conn_str()).await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {granted}; DROP ROLE IF EXISTS {denied};
             CREATE ROLE {granted} LOGIN PASSWORD 'pw-granted';
             CREATE ROLE {denied} LOGIN PASSWORD 'pw-denied';
             GRANT USAGE ON SCHEMA public TO {granted}, {denied};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {granted};"
        ))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let text = std::fs::read_to_string(WORLD_TOML).unwrap().replacen(
        "url_env = \"WORLD_PG_URL\"",
        "url_env = \"WORLD_PG_URL\"\ncredential = \"password\"",
        1,
    ) + &format!("\n[vault]\nkey_file = \"{}\"\n", key.display());
    let config = dir.path().join("world.toml");
    std::fs::write(&config, text).unwrap();
    // Users log in as themselves; the URL's own login (checked at start) is the reader.
    db.grant_reader().await;
    let url = db.reader_url();
    let d = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let http = reqwest::Client::new();
    let query = |user: &str| {
        http.post(format!("{}/v1/query", d.url))
            .bearer_auth(token_for(user))
            .json(&json!({"sql": "SELECT count(*) AS n FROM orders", "connection": "world"}))
            .send()
    };
    let put = |user: &str, pw: &str| {
        http.put(format!("{}/v1/connections/world/credential", d.url))
            .bearer_auth(token_for(user))
            .json(&json!({ "password": pw }))
            .send()
    };

    // No password stored: the user is asked for one, never given the service role.
    let r = query(&granted).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "reauth_required", "{body}");

    assert_eq!(put(&granted, "pw-granted").await.unwrap().status(), 204);
    assert_eq!(put(&denied, "pw-denied").await.unwrap().status(), 204);
    let r = query(&granted).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rows"][0][0], 200);
    // The warehouse itself refuses a user it gave no grant: the query ran as that user.
    let r = query(&denied).await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "warehouse_error");
    // The warehouse's own code reaches the caller (insufficient_privilege), never its text.
    assert_eq!(body["warehouse_code"], "42501", "{body}");
    assert!(!body.to_string().contains("permission denied"), "{body}");
    // The whole text is in the audit log, for the compliance officer.
    let log = sluice_audit::open_read_only(&dir.path().join("data").join("audit.sqlite")).unwrap();
    let records = sluice_audit::read_settled(&log, std::time::Duration::from_secs(5)).unwrap();
    assert!(records.iter().any(|r| {
        r.code.as_deref() == Some("warehouse_error")
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("permission denied"))
    }));

    let listed: Value = http
        .get(format!("{}/v1/connections", d.url))
        .bearer_auth(token_for(&granted))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let world = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "world")
        .unwrap();
    assert_eq!(world["credential"], "password");
    assert_eq!(world["status"], "connected");
    assert!(!listed.to_string().contains("pw-granted"));
    // Nothing readable at rest.
    let raw = std::fs::read(dir.path().join("data").join("vault.sqlite")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("pw-granted"));
}

#[tokio::test]
async fn passthrough_acts_as_the_users_role_so_row_level_security_applies_and_sessions_are_pooled()
{
    let pid = std::process::id();
    // Users; their database roles are "<tenant>.<user>".
    let (alice, bob, svc, stranger) = (
        format!("sluice_rls_alice_{pid}"),
        format!("sluice_rls_bob_{pid}"),
        format!("sluice_rls_svc_{pid}"),
        format!("sluice_rls_nobody_{pid}"),
    );
    let (a_alice, a_bob, b_alice) = (
        format!("A.{alice}"),
        format!("A.{bob}"),
        format!("B.{alice}"),
    );
    let db = TestDb::create(
        "rls",
        &format!(
            "CREATE TABLE notes (id int, tenant_id text, owner text, body text);
             INSERT INTO notes VALUES
               (1, 'A', '{a_alice}', 'alice in A'), (2, 'A', '{a_alice}', 'alice in A again'),
               (3, 'A', '{a_bob}', 'bob in A'), (4, 'B', '{b_alice}', 'alice in B'),
               (5, 'B', '{a_alice}', 'mislabelled: A.alice in tenant B');"
        ),
    )
    .await;
    let _roles = Roles {
        names: vec![
            format!("\"{a_alice}\""),
            format!("\"{a_bob}\""),
            format!("\"{b_alice}\""),
            svc.clone(),
        ],
        db: db.name.clone(),
    };
    common::connect(&db.conn_str())
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{a_alice}\"; DROP ROLE IF EXISTS \"{a_bob}\";
             DROP ROLE IF EXISTS \"{b_alice}\"; DROP ROLE IF EXISTS {svc};
             CREATE ROLE \"{a_alice}\" NOLOGIN; CREATE ROLE \"{a_bob}\" NOLOGIN;
             CREATE ROLE \"{b_alice}\" NOLOGIN; CREATE ROLE {svc} LOGIN;
             GRANT \"{a_alice}\", \"{a_bob}\", \"{b_alice}\" TO {svc};
             GRANT USAGE ON SCHEMA public TO \"{a_alice}\", \"{a_bob}\", \"{b_alice}\";
             GRANT SELECT ON notes TO \"{a_alice}\", \"{a_bob}\", \"{b_alice}\";
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_notes ON notes FOR SELECT
               USING (tenant_id = current_setting('sluice.tenant', true) AND owner = current_user);"
        ))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rls.toml");
    std::fs::write(
        &config,
        r#"
[auth.jwt]
algorithm = "HS256"
secret_env = "WORLD_JWT_SECRET"
issuer = "world-idp"
audience = "sluice-world"

[[connections]]
id = "pg"
kind = "postgres"
url_env = "RLS_PG_URL"
credential = "passthrough"

# Declared public: sluice adds no tenant predicate here; the database's RLS policy decides.
[[connections.tables]]
name = "public.notes"
access = "public"
columns = ["id", "tenant_id", "owner", "body"]
"#,
    )
    .unwrap();
    let url = format!("postgres://{svc}@127.0.0.1:5432/{}", db.name);
    let d = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("WORLD_JWT_SECRET", SECRET), ("RLS_PG_URL", url.as_str())],
    );
    let http = reqwest::Client::new();
    let ids = |user: String, tenant: &'static str| {
        let http = http.clone();
        let url = d.url.clone();
        async move {
            let token = token_as(&user, tenant);
            let r = http
                .post(format!("{url}/v1/query"))
                .bearer_auth(token)
                .json(&json!({"sql": "SELECT id FROM notes ORDER BY id"}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    };
    // Alternating users on the same pooled session: each sees only what RLS grants it, so
    // neither the role nor the tenant leaks from one query into the next.
    for _ in 0..3 {
        let (s, body) = ids(alice.clone(), "A").await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["rows"], json!([[1], [2]]));
        let (_, body) = ids(bob.clone(), "A").await;
        assert_eq!(body["rows"], json!([[3]]));
        let (_, body) = ids(alice.clone(), "B").await;
        assert_eq!(body["rows"], json!([[4]]));
    }
    // Nine queries ran one after another: pooled sessions served them (without pooling none
    // would be left; a session goes back a moment after its answer ends, so a second may open).
    let admin = common::connect(common::PG_ADMIN).await;
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            &[&db.name, &svc],
        )
        .await
        .unwrap()
        .get(0);
    assert!((1..=2).contains(&n), "{n} connections of the service login");

    // A user without a database role cannot borrow the service login's rights.
    // (A failed transaction's connection is closed, not pooled.)
    let (s, body) = ids(stranger, "A").await;
    assert_eq!(
        (s, body["code"].as_str()),
        (502, Some("warehouse_error")),
        "{body}"
    );
}

/// `tenant_fence = "row_security"`: the wrappers lose their `OFFSET 0` fence and the database's
/// own row-level security keeps other tenants' rows from the query's predicates — an error
/// that only another tenant's row would raise is never raised, the answers are the tenant's
/// rows — and a protected table without row security stops the start.
#[tokio::test]
async fn row_security_replaces_the_fence_on_a_passthrough_connection() {
    let pid = std::process::id();
    let (alice, svc) = (
        format!("sluice_rs_alice_{pid}"),
        format!("sluice_rs_svc_{pid}"),
    );
    let a_alice = format!("A.{alice}");
    let db = TestDb::create(
        "rowsec",
        "CREATE TABLE orders (id int, tenant_id text, amount int);
         INSERT INTO orders VALUES (1, 'A', 10), (2, 'A', 20), (3, 'A', 30),
                                   (4, 'B', 5000), (5, 'B', 6000);
         CREATE TABLE plain (id int, tenant_id text);",
    )
    .await;
    let _roles = Roles {
        names: vec![format!("\"{a_alice}\""), svc.clone()],
        db: db.name.clone(),
    };
    common::connect(&db.conn_str())
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{a_alice}\"; DROP ROLE IF EXISTS {svc};
             CREATE ROLE \"{a_alice}\" NOLOGIN; CREATE ROLE {svc} LOGIN;
             GRANT \"{a_alice}\" TO {svc};
             GRANT USAGE ON SCHEMA public TO \"{a_alice}\";
             GRANT SELECT ON orders, plain TO \"{a_alice}\";
             ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant ON orders FOR SELECT
               USING (tenant_id = current_setting('sluice.tenant', true));"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, tables: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"
[auth.jwt]
algorithm = "HS256"
secret_env = "WORLD_JWT_SECRET"
issuer = "world-idp"
audience = "sluice-world"

[[connections]]
id = "pg"
kind = "postgres"
url_env = "RS_PG_URL"
credential = "passthrough"
tenant_fence = "row_security"
{tables}"#
            ),
        )
        .unwrap();
        path
    };
    let orders = r#"
[[connections.tables]]
name = "public.orders"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "amount"]
"#;
    let url = format!("postgres://{svc}@127.0.0.1:5432/{}", db.name);
    let env = [("WORLD_JWT_SECRET", SECRET), ("RS_PG_URL", url.as_str())];

    // A protected table without row security: the daemon does not start.
    let plain = write(
        "plain.toml",
        &format!(
            "{orders}\n[[connections.tables]]\nname = \"public.plain\"\naccess = \"protected\"\n\
             tenant_column = \"tenant_id\"\ncolumns = [\"id\", \"tenant_id\"]\n"
        ),
    );
    let out = common::serve_expecting_exit(&plain, &dir.path().join("data-plain"), &env);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("public.plain have no row-level security"),
        "{printed}"
    );

    let config = write("rowsec.toml", orders);
    let d = Daemon::start(&config, &dir.path().join("data"), &env);
    let http = reqwest::Client::new();
    let token = token_as(&alice, "A");
    let post = |path: &'static str, sql: &'static str| {
        let (http, url, token) = (http.clone(), d.url.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, body) = post("/v1/query", "SELECT id FROM orders ORDER BY id").await;
    assert_eq!((s, &body["rows"]), (200, &json!([[1], [2], [3]])), "{body}");
    // Division by zero only for tenant B's amounts: the policy's condition runs first.
    let oracle = "SELECT id FROM orders \
                  WHERE 1 / (CASE WHEN amount > 1000 THEN 0 ELSE 1 END) = 1 ORDER BY id";
    let (s, body) = post("/v1/query", oracle).await;
    assert_eq!((s, &body["rows"]), (200, &json!([[1], [2], [3]])), "{body}");
    // The wrapper keeps its tenant predicate, without the fence and without copies.
    let (s, body) = post("/v1/policy/explain", "SELECT id FROM orders WHERE id = 2").await;
    assert_eq!(s, 200, "{body}");
    let sql = body["sql"].as_str().unwrap();
    assert!(
        sql.contains(
            r#"FROM "public"."orders" WHERE "tenant_id" = $1) AS "orders" WHERE "id" = 2"#
        ),
        "{sql}"
    );
    assert!(!sql.contains("OFFSET"), "{sql}");
}

/// A connector on `url` with a 10 s statement timeout (no login check unless asked for).
fn pg_connector(url: &str) -> sluice_connectors::postgres::PostgresConnector {
    sluice_connectors::postgres::PostgresConnector::new(
        &sluice_connectors::postgres::PostgresOptions {
            url: url.to_string(),
            statement_timeout: Duration::from_secs(10),
        },
    )
    .unwrap()
}

/// Runs raw SQL through the connector as its service login (no policy: connectors take SQL as
/// given) and returns the answer's rows as sluice's JSON encodes them, or the first error,
/// whether it came before the first batch or while the rows streamed.
async fn raw_rows(
    conn: &sluice_connectors::postgres::PostgresConnector,
    sql: &str,
) -> Result<Value, sluice_connectors::ConnectorError> {
    use futures::StreamExt;
    use sluice_connectors::{Connector, QueryRequest};
    let mut s = conn
        .execute(QueryRequest {
            sql,
            params: &[],
            request_id: "raw",
            credential: None,
        })
        .await?;
    let (mut enc, head) =
        sluice::http::encode::Encoder::start(sluice::http::encode::Format::Json, &s.schema, "raw")
            .unwrap();
    let mut out = head.to_vec();
    let mut rows = 0;
    while let Some(b) = s.batches.next().await {
        let b = b?;
        rows += b.num_rows() as u64;
        out.extend_from_slice(&enc.batch(&b).unwrap());
    }
    out.extend_from_slice(&enc.finish(rows, false, None).unwrap());
    let v: Value = serde_json::from_slice(&out).unwrap();
    Ok(v["rows"].clone())
}

/// Waits until `user` has `n` idle pooled sessions (one goes back a moment after its answer
/// ended, once it has been reset).
async fn wait_idle(conn: &sluice_connectors::postgres::PostgresConnector, user: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.idle_connections(user) != n {
        assert!(
            Instant::now() < deadline,
            "{user} has {} idle sessions, not {n}",
            conn.idle_connections(user)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_pooled_session_is_reset_before_it_is_reused() {
    let db = TestDb::create("reset", "CREATE TABLE t (id int); CREATE SEQUENCE s;").await;
    db.grant_reader().await;
    common::connect(&db.conn_str())
        .await
        .batch_execute(&format!("GRANT USAGE ON SEQUENCE s TO {}", common::READER))
        .await
        .unwrap();
    let conn = pg_connector(&db.reader_url());
    let lock = i64::from(std::process::id());
    // One query changes the session: settings (session-wide, not LOCAL) and a session-level
    // advisory lock, which a ROLLBACK alone would keep.
    let first = raw_rows(
        &conn,
        &format!(
            "SELECT pg_backend_pid() AS pid,
                    set_config('default_transaction_read_only', 'off', false) AS ro,
                    set_config('standard_conforming_strings', 'off', false) AS scs,
                    set_config('statement_timeout', '0', false) AS st,
                    pg_try_advisory_lock({lock}) AS locked"
        ),
    )
    .await
    .unwrap();
    assert_eq!(first[0][1], "off", "{first}");
    assert_eq!(first[0][4], true, "{first}");
    wait_idle(&conn, common::READER, 1).await;
    // The next query on the same pooled session sees none of it.
    let second = raw_rows(
        &conn,
        "SELECT pg_backend_pid() AS pid,
                current_setting('default_transaction_read_only') AS ro,
                current_setting('standard_conforming_strings') AS scs,
                current_setting('statement_timeout') AS st,
                (SELECT count(*) FROM pg_locks
                  WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks,
                current_setting('transaction_read_only') AS tro",
    )
    .await
    .unwrap();
    assert_eq!(
        second[0][0], first[0][0],
        "the same pooled session: {second}"
    );
    assert_eq!(
        second[0],
        json!([first[0][0], "on", "on", "10s", 0, "on"]),
        "{second}"
    );
    // And it still cannot write.
    wait_idle(&conn, common::READER, 1).await;
    let e = raw_rows(&conn, "SELECT pg_backend_pid() AS pid, nextval('s') AS n")
        .await
        .unwrap_err();
    assert_eq!(e.warehouse_code(), Some("25006"), "{e}");
}

/// A pooled session keeps the statements it prepared, through its reset: the same text runs
/// again without a new `Parse` (one round trip); a table whose columns changed under a cached
/// plan is prepared again within the same query, which answers with the new columns.
#[tokio::test]
async fn a_session_keeps_its_prepared_statements_and_prepares_again_when_a_table_changes() {
    let db = TestDb::create(
        "stmt_cache",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    )
    .await;
    db.grant_reader().await;
    let conn = pg_connector(&db.reader_url());
    let q1 = "SELECT pg_backend_pid() AS pid, \
              (SELECT count(*) FROM pg_prepared_statements) AS n";
    let first = raw_rows(&conn, q1).await.unwrap();
    assert_eq!(first[0][1], 1, "{first}");
    wait_idle(&conn, common::READER, 1).await;
    let again = raw_rows(&conn, q1).await.unwrap();
    assert_eq!(again[0][0], first[0][0], "the same pooled session");
    assert_eq!(again[0][1], 1, "prepared again instead of reused: {again}");
    wait_idle(&conn, common::READER, 1).await;
    let q2 = "SELECT pg_backend_pid() AS pid, \
              (SELECT count(*) FROM pg_prepared_statements) AS n2";
    let other = raw_rows(&conn, q2).await.unwrap();
    assert_eq!(other[0][0], first[0][0]);
    assert_eq!(
        other[0][1], 2,
        "the session dropped its statements: {other}"
    );
    wait_idle(&conn, common::READER, 1).await;
    // A text longer than the cache keeps (16 KiB) runs, and is not kept: the next query on
    // the session still sees two statements, not three.
    let long = format!(
        "SELECT pg_backend_pid() AS pid, (SELECT count(*) FROM pg_prepared_statements) AS n3 \
         /* {} */",
        "x".repeat(17 * 1024)
    );
    let ran = raw_rows(&conn, &long).await.unwrap();
    assert_eq!(ran[0][0], first[0][0]);
    assert_eq!(ran[0][1], 3, "{ran}");
    wait_idle(&conn, common::READER, 1).await;
    let kept = raw_rows(&conn, q2).await.unwrap();
    assert_eq!(kept[0][0], first[0][0]);
    assert_eq!(kept[0][1], 2, "a 17 KiB text stayed prepared: {kept}");
    wait_idle(&conn, common::READER, 1).await;

    let star = "SELECT * FROM t";
    assert_eq!(raw_rows(&conn, star).await.unwrap(), json!([[1]]));
    wait_idle(&conn, common::READER, 1).await;
    common::connect(&db.conn_str())
        .await
        .batch_execute("ALTER TABLE t ADD COLUMN label text DEFAULT 'x'")
        .await
        .unwrap();
    assert_eq!(raw_rows(&conn, star).await.unwrap(), json!([[1, "x"]]));
    wait_idle(&conn, common::READER, 1).await;
    assert_eq!(raw_rows(&conn, star).await.unwrap(), json!([[1, "x"]]));
}

#[tokio::test]
async fn every_query_runs_in_a_read_only_transaction_even_as_a_superuser() {
    let db = TestDb::create("readonly", "CREATE TABLE t (id int); CREATE SEQUENCE s;").await;
    // The superuser, with no login check (a bare connector): the transaction still refuses.
    let conn = pg_connector(&db.conn_str());
    for sql in [
        "INSERT INTO t VALUES (1)",
        "WITH w AS (INSERT INTO t VALUES (2) RETURNING id) SELECT id FROM w",
        "DELETE FROM t",
        "SELECT nextval('s') AS n",
        "CREATE TABLE u (id int)",
        // Turning the session default off does not make the transaction it runs in writable.
        "SELECT set_config('default_transaction_read_only', 'off', false) AS ro, nextval('s') AS n",
    ] {
        let e = raw_rows(&conn, sql).await.unwrap_err();
        // read_only_sql_transaction
        assert_eq!(e.warehouse_code(), Some("25006"), "{sql}: {e}");
    }
    let admin = common::connect(&db.conn_str()).await;
    let n: i64 = admin
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let u: Option<String> = admin
        .query_one("SELECT to_regclass('public.u')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(u, None);
}

#[tokio::test]
async fn privileged_service_logins_are_refused() {
    use sluice_connectors::{Connector, ConnectorError};
    let db = TestDb::create(
        "privileged",
        "CREATE TABLE t (id int); CREATE TABLE u (id int);",
    )
    .await;
    db.grant_reader().await;
    let pid = std::process::id();
    let (writer, bypass) = (
        format!("sluice_priv_writer_{pid}"),
        format!("sluice_priv_bypass_{pid}"),
    );
    let _roles = Roles {
        names: vec![writer.clone(), bypass.clone()],
        db: db.name.clone(),
    };
    common::connect(&db.conn_str())
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {writer}; DROP ROLE IF EXISTS {bypass};
             CREATE ROLE {writer} LOGIN; CREATE ROLE {bypass} LOGIN BYPASSRLS;
             GRANT USAGE ON SCHEMA public TO {writer}, {bypass};
             GRANT SELECT ON t, u TO {writer}, {bypass};
             GRANT INSERT ON u TO {writer};"
        ))
        .await
        .unwrap();
    // Declared tables; one does not exist (not writable, no error).
    let declared: Vec<(String, String)> = [("public", "t"), ("public", "u"), ("public", "gone")]
        .iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect();
    let login = |user: &str| pg_connector(&format!("postgres://{user}@127.0.0.1:5432/{}", db.name));

    let e = login("postgres")
        .check_service_login(&declared)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectorError::Config(m) if m.contains("superuser")),
        "{e}"
    );
    let e = login(&bypass)
        .check_service_login(&declared)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(e, ConnectorError::Config(_)) && m.contains("BYPASSRLS") && !m.contains("public."),
        "{m}"
    );
    let e = login(&writer)
        .check_service_login(&declared)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(e, ConnectorError::Config(_))
            && m.contains("public.u")
            && !m.contains("public.t")
            && !m.contains("superuser"),
        "{m}"
    );
    login(common::READER)
        .check_service_login(&declared)
        .await
        .unwrap();

    // Required on the connector (as the daemon does): the superuser's queries are refused as
    // unavailable (503), every time; the reader's run.
    let su = login("postgres").require_unprivileged_login(declared.clone());
    for _ in 0..2 {
        let e = raw_rows(&su, "SELECT 1 AS one").await.unwrap_err();
        assert!(
            matches!(&e, ConnectorError::Unavailable(m) if m.contains("superuser")),
            "{e}"
        );
    }
    assert!(matches!(
        su.ensure_service_login().await,
        Err(ConnectorError::Config(_))
    ));
    let reader = login(common::READER).require_unprivileged_login(declared.clone());
    assert_eq!(
        raw_rows(&reader, "SELECT 1 AS one").await.unwrap(),
        json!([[1]])
    );
    reader.ensure_service_login().await.unwrap();
    // A per-user login is the warehouse's business, not the service login's: not checked.
    let e = su
        .execute(sluice_connectors::QueryRequest {
            sql: "SELECT 1 AS one",
            params: &[],
            request_id: "per-user",
            credential: Some(sluice_connectors::UserCredential::Password {
                user: common::READER,
                password: "unused under trust auth",
            }),
        })
        .await;
    assert!(e.is_ok(), "{:?}", e.err());
}

#[tokio::test]
async fn the_daemon_refuses_a_privileged_service_login_unless_allowed() {
    let db = TestDb::create("privileged_daemon", WORLD_SQL).await;
    db.grant_reader().await;
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(WORLD_TOML).unwrap();
    let config = dir.path().join("world.toml");
    // A data directory per start.
    let data = |n: u32| dir.path().join(format!("data{n}"));
    let count = |url: String| async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/query"))
            .bearer_auth(token())
            .json(&json!({"sql": "SELECT count(*) AS n FROM countries", "connection": "world"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };

    // The superuser as the service login: the daemon does not start, and says why.
    std::fs::write(&config, &world).unwrap();
    let url = db.url();
    let env = [("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())];
    let out = common::serve_expecting_exit(&config, &data(1), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("connection world")
            && err.contains("superuser")
            && err.contains("allow_privileged_login"),
        "{err}"
    );

    // Allowed explicitly, it starts and answers.
    std::fs::write(
        &config,
        world.replacen(
            "url_env = \"WORLD_PG_URL\"",
            "url_env = \"WORLD_PG_URL\"\nallow_privileged_login = true",
            1,
        ),
    )
    .unwrap();
    let d = Daemon::start(&config, &data(2), &env);
    let (status, body) = count(d.url.clone()).await;
    assert_eq!(status, 200, "{body}");
    drop(d);

    // The least-privilege reader: starts and answers without being allowed anything.
    std::fs::write(&config, &world).unwrap();
    let url = db.reader_url();
    let d = Daemon::start(
        &config,
        &data(3),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let (status, body) = count(d.url.clone()).await;
    assert_eq!(status, 200, "{body}");
    drop(d);

    // A warehouse that cannot be reached at start does not stop the start (the check waits for
    // the first query); its queries are refused as unavailable.
    let url = format!("postgres://{}@127.0.0.1:1/{}", common::READER, db.name);
    let d = Daemon::start(
        &config,
        &data(4),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    let (status, body) = count(d.url.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("warehouse_unavailable")),
        "{body}"
    );
}

/// `POST <path>` on the world daemon as alice of tenant A, with caller parameters.
async fn post_params(d: &Daemon, path: &str, sql: &str, params: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", d.url))
        .bearer_auth(token())
        .json(&json!({"sql": sql, "connection": "world", "params": params}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn caller_parameters_are_bound_at_the_warehouse_never_spliced_into_the_sql() {
    let db = TestDb::create("params", WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&db, dir.path(), 30_000, 30_000).await;
    let q = |sql: &'static str, params: Value| post_params(&d, "/v1/query", sql, params);

    // Typed values, bound as the types PostgreSQL infers; the tenant's `$4` after them.
    let (s, b) = q(
        "SELECT id, status FROM orders WHERE id BETWEEN $1 AND $2 AND status = $3 ORDER BY id",
        json!([1, 10, "open"]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["rows"],
        json!([[1, "open"], [4, "open"], [7, "open"], [10, "open"]])
    );
    // Text that would be an injection if spliced is a value; another tenant's id filters
    // within the caller's rows; NULL, timestamps and numerics as PostgreSQL reads them.
    for (sql, params, n) in [
        (
            "SELECT count(*) AS n FROM orders WHERE status = $1",
            json!(["x' OR '1'='1"]),
            0,
        ),
        (
            "SELECT count(*) AS n FROM orders WHERE tenant_id = $1",
            json!(["B"]),
            0,
        ),
        (
            "SELECT count(*) AS n FROM orders WHERE $1::text IS NULL",
            json!([null]),
            200,
        ),
        (
            "SELECT count(*) AS n FROM orders WHERE created_at < $1 AND amount > $2",
            json!(["2100-01-01T00:00:00Z", "10.5"]),
            200,
        ),
        (
            "SELECT count(*) AS n FROM orders WHERE amount > $1",
            json!([10.5]),
            200,
        ),
    ] {
        let (s, b) = q(sql, params).await;
        assert_eq!((s, b["rows"][0][0].clone()), (200, json!(n)), "{sql}: {b}");
    }

    // Refused, each with its own precise 400: too few, too many, the tenant's placeholder,
    // a value of the wrong type, a non-scalar.
    for (sql, params, code) in [
        (
            "SELECT id FROM orders WHERE id = $1 OR id = $3",
            json!([1]),
            "invalid_parameters",
        ),
        (
            "SELECT id FROM orders WHERE id = $1",
            json!([1, 2]),
            "invalid_parameters",
        ),
        (
            "SELECT id FROM orders WHERE id = $1",
            json!(["abc"]),
            "invalid_parameter",
        ),
        (
            "SELECT id FROM orders WHERE id = $1",
            json!([true]),
            "invalid_parameter",
        ),
        (
            "SELECT id FROM orders WHERE id = $1",
            json!([[1]]),
            "invalid_parameter",
        ),
        // PostgreSQL has no `?` placeholder: its grammar refuses it.
        (
            "SELECT id FROM orders WHERE id = ?",
            json!([1]),
            "sql_parse_error",
        ),
    ] {
        let (s, b) = q(sql, params.clone()).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some(code)),
            "{sql} {params}: {b}"
        );
    }

    // The tenant's own placeholder (`$2` with one parameter sent, `$1` with none) is a policy
    // refusal: only sluice binds it.
    for (sql, params) in [
        ("SELECT id FROM orders WHERE tenant_id = $2", json!(["B"])),
        (
            "SELECT id FROM orders WHERE id = $1 AND status = $2",
            json!([1]),
        ),
        ("SELECT id FROM orders WHERE tenant_id = $1", json!([])),
    ] {
        let (s, b) = q(sql, params).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (403, Some("policy_denied")),
            "{sql}: {b}"
        );
        assert!(b["detail"].as_str().unwrap().contains("sent"), "{b}");
    }

    // Explain shows the parameters and the SQL as sent, the tenant's placeholder after them.
    let (s, b) = post_params(
        &d,
        "/v1/policy/explain",
        "SELECT id FROM orders WHERE id = $1",
        json!([7]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["caller_params"], json!([7]));
    assert_eq!(b["params"], json!(["A"]));
    let sql = b["sql"].as_str().unwrap();
    assert!(
        sql.contains("\"tenant_id\" = $2") && sql.contains("\"id\" = $1"),
        "{sql}"
    );

    // The audit record stores them, beside the tenant.
    let audit = sluice_audit::open_read_only(&dir.path().join("data/audit.sqlite")).unwrap();
    let records = sluice_audit::read_settled(&audit, std::time::Duration::from_secs(5)).unwrap();
    let attempt = records
        .iter()
        .find(|r| {
            r.event == sluice_audit::Event::QueryAttempt
                && r.sql
                    .as_deref()
                    .is_some_and(|s| s.contains("BETWEEN $1 AND $2"))
        })
        .unwrap();
    assert_eq!(attempt.params, ["1", "10", "\"open\"", "A"]);
}

/// The policy's table of leakproof comparisons (`sluice_policy::ColumnType`) against this
/// server's catalog: for every pair of type names the policy calls comparable, each of the six
/// comparison operators exists for that pair (`varchar` reaching `text`'s, to which it is
/// binary-coercible) and its function is marked `proleakproof`. And `numeric`, which the
/// policy never compares inside a wrapper, is indeed not.
#[tokio::test]
async fn the_leakproof_comparisons_are_the_servers() {
    use sluice_policy::ColumnType;
    let db = TestDb::create("leakproof", "SELECT 1").await;
    let pg = common::connect(&db.conn_str()).await;
    let names = [
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "text",
        "varchar",
        "bpchar",
        "bool",
        "date",
        "timestamp",
        "timestamptz",
        "uuid",
        "numeric",
        "jsonb",
    ];
    let catalog_name = |n: &str| if n == "varchar" { "text" } else { n }.to_string();
    let mut checked = 0;
    for a in names {
        for b in names {
            let (ta, tb) = (ColumnType::parse(a).unwrap(), ColumnType::parse(b).unwrap());
            if !ta.comparable_with(tb) {
                continue;
            }
            for op in ["=", "<>", "<", "<=", ">", ">="] {
                let sig = format!("{op}({},{})", catalog_name(a), catalog_name(b));
                let row = pg
                    .query_one(
                        "SELECT p.proleakproof FROM pg_operator o JOIN pg_proc p \
                         ON p.oid = o.oprcode WHERE o.oid = to_regoperator($1)",
                        &[&sig],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{sig}: no such operator: {e}"));
                assert!(row.get::<_, bool>(0), "{sig} is not leakproof");
                checked += 1;
            }
        }
    }
    assert!(checked >= 6 * 20, "only {checked} operators checked");
    let numeric: bool = pg
        .query_one(
            "SELECT p.proleakproof FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode \
             WHERE o.oid = to_regoperator('=(numeric,numeric)')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !numeric,
        "numeric = numeric became leakproof: the policy may compare it"
    );
}

/// The connection URL's own `options` reach the session (an operator's `jit = off`), and
/// sluice's session settings still win where both set one: a URL cannot make the session
/// writable.
#[tokio::test]
async fn the_urls_session_options_apply_under_sluices_own() {
    let db = TestDb::create("urloptions", "SELECT 1").await;
    db.grant_reader().await;
    let url = format!(
        "{}?options=-c%20jit%3Doff%20-c%20default_transaction_read_only%3Doff",
        db.reader_url()
    );
    let conn = pg_connector(&url);
    let rows = raw_rows(
        &conn,
        "SELECT current_setting('jit') AS jit, \
         current_setting('default_transaction_read_only') AS ro",
    )
    .await
    .unwrap();
    assert_eq!(rows, json!([["off", "on"]]), "{rows}");
}
