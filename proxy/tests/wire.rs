//! The PostgreSQL-wire front door with real clients (tokio-postgres, psql, pgbench) against the
//! daemon binary in front of the security test world on the real PostgreSQL: the same
//! authentication, policy, audit and tenant isolation as HTTP; SQLSTATEs; cancel requests and
//! clients that leave stop the warehouse query; portals with row limits; TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, TestDb};
use serde_json::json;
use sluice_audit::{AuditRecord, Event};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const SECRET: &str = "world-secret-for-tests-only-0123456789";
const WORLD_SQL: &str = include_str!("../../../shared/security/world.sql");
const WORLD_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/security/world.toml");
/// Long enough to still be running when the client gives up: 200^4 rows for tenant A.
const SLOW_SQL: &str = "SELECT count(*) FROM orders a, orders b, orders c, orders d";
/// Tenant A's orders: 200 of them, amounts 11..=210.
const A_ORDERS: i64 = 200;
const A_TOTAL: i64 = 22_100;

fn token_as(user: &str, tenant: &str) -> String {
    token_with(user, tenant, &["analyst"])
}

fn token_with(user: &str, tenant: &str, groups: &[&str]) -> String {
    common::sign_hs256(
        SECRET,
        json!({"sub": user, "tenant": tenant, "groups": groups, "aud": "sluice-world", "iss": "world-idp"}),
    )
}

/// The client virtualenv (.ci/run installs psycopg, SQLAlchemy, pandas, ADBC there).
fn client_python() -> std::path::PathBuf {
    let venvs = std::env::var_os("SLUICE_TEST_VENVS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/sluice-venvs")
        });
    let python = venvs.join("clients/bin/python");
    assert!(
        python.exists(),
        "{} is required (.ci/run installs the PostgreSQL clients there)",
        python.display()
    );
    python
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct World {
    db: TestDb,
    dir: tempfile::TempDir,
    daemon: Daemon,
    /// The wire door's `host:port`.
    wire: String,
}

/// The world daemon with the wire door on an ephemeral loopback port; `pgwire_extra` is added
/// to its `[pgwire]` section.
async fn world(tag: &str, pgwire_extra: &str) -> World {
    world_with(tag, pgwire_extra, "").await
}

/// [`world`], with `jwt_extra` added to its `[auth.jwt]` section.
async fn world_with(tag: &str, pgwire_extra: &str, jwt_extra: &str) -> World {
    let db = TestDb::create(tag, WORLD_SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(WORLD_TOML).unwrap().replacen(
        "[auth.jwt]\n",
        &format!("[auth.jwt]\n{jwt_extra}\n"),
        1,
    ) + &format!("\n[pgwire]\nlisten = \"127.0.0.1:0\"\n{pgwire_extra}\n");
    let config = dir.path().join("world.toml");
    std::fs::write(&config, text).unwrap();
    db.grant_reader().await;
    let url = db.reader_url();
    let (daemon, wire) = Daemon::start_with_wire(
        &config,
        &dir.path().join("data"),
        &[("WORLD_JWT_SECRET", SECRET), ("WORLD_PG_URL", url.as_str())],
    );
    World {
        db,
        dir,
        daemon,
        wire,
    }
}

impl World {
    fn port(&self) -> &str {
        self.wire.rsplit(':').next().unwrap()
    }

    fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port()
        )
    }

    async fn client(&self, user: &str, tenant: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &self.conn_str(user, &token_as(user, tenant), "world"),
            NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
    }

    fn audit(&self) -> Vec<AuditRecord> {
        let audit =
            sluice_audit::open_read_only(&self.dir.path().join("data/audit.sqlite")).unwrap();
        sluice_audit::read_settled(&audit, Duration::from_secs(5)).unwrap()
    }

    async fn running_queries(&self) -> i64 {
        let c = common::connect(common::PG_ADMIN).await;
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'sluice' AND state = 'active'",
            &[&self.db.name],
        )
        .await
        .unwrap()
        .get(0)
    }

    async fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running_queries().await == 0 {
            assert!(Instant::now() < deadline, "the query never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_until_gone(&self, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running_queries().await > 0 {
            assert!(Instant::now() < deadline, "the query kept running: {why}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn code(e: &tokio_postgres::Error) -> SqlState {
    e.code()
        .cloned()
        .unwrap_or_else(|| panic!("no SQLSTATE: {e:?}"))
}

#[tokio::test]
async fn queries_run_through_the_same_policy_and_audit_as_http() {
    let w = world("wire_basic", "").await;
    let alice = w.client("alice", "A").await;

    // Simple protocol (text): tenant A's rows only.
    let rows = alice
        .simple_query("SELECT count(*), sum(amount) FROM orders")
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(row.get(0), Some(A_ORDERS.to_string().as_str()));
    assert_eq!(row.get(1), Some(A_TOTAL.to_string().as_str()));

    // Extended protocol, binary results, a bound parameter: typed values.
    let rows = alice
        .query(
            "SELECT id, amount::float8 AS amount, status, created_at FROM orders WHERE id <= $1 ORDER BY id",
            &[&3i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let amount: f64 = rows[0].get(1);
    assert_eq!(amount, 11.0);
    let status: &str = rows[0].get(2);
    assert_eq!(status, "open");
    let created: chrono::DateTime<chrono::Utc> = rows[0].get(3);
    assert_eq!(created.to_rfc3339(), "2024-01-01T01:00:00+00:00");

    // A prepared statement reused with several values (one Parse, many Binds).
    let stmt = alice
        .prepare("SELECT note FROM orders WHERE id = $1")
        .await
        .unwrap();
    for id in [5i32, 7, 9] {
        let row = alice.query_one(&stmt, &[&id]).await.unwrap();
        let note: &str = row.get(0);
        assert_eq!(note, format!("note-{id}"), "tenant A's row, never B's");
    }

    // Tenant B sees its own rows through the same statement text; never A's, and A never B's.
    let bob = w.client("bob", "B").await;
    let row = bob
        .query_one("SELECT note FROM orders WHERE id = $1", &[&5i32])
        .await
        .unwrap();
    let note: &str = row.get(0);
    assert_eq!(note, "LEAK-B-note-5");
    let leaks = alice
        .query("SELECT note FROM orders WHERE note LIKE 'LEAK%'", &[])
        .await
        .unwrap();
    assert!(leaks.is_empty(), "tenant B's rows reached tenant A");

    // Refusals carry SQLSTATEs and sluice's code in the detail.
    let e = alice
        .simple_query("SELECT card_number FROM orders")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::INSUFFICIENT_PRIVILEGE);
    let db = e.as_db_error().unwrap();
    assert!(
        db.detail().unwrap().starts_with("sluice: policy_denied"),
        "{db:?}"
    );
    let e = alice.simple_query("DELETE FROM orders").await.unwrap_err();
    assert_eq!(code(&e), SqlState::INSUFFICIENT_PRIVILEGE);
    let e = alice
        .simple_query("SELEC id FROM orders")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::SYNTAX_ERROR);
    let e = alice
        .simple_query("SELECT * FROM orders_2024")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::UNDEFINED_TABLE, "{e:?}");
    let e = alice
        .query("SELECT * FROM pg_catalog.pg_shadow", &[])
        .await
        .unwrap_err();
    assert!(
        [SqlState::UNDEFINED_TABLE, SqlState::INSUFFICIENT_PRIVILEGE].contains(&code(&e)),
        "{e:?}"
    );
    // The session goes on after errors.
    let n: i64 = alice
        .query_one("SELECT count(*) FROM invoices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);

    // What drivers send on connect is answered locally.
    alice
        .batch_execute("SET extra_float_digits = 3; SET application_name = 'wire-test'")
        .await
        .unwrap();
    let v: String = alice
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "wire-test");
    let v: String = alice
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "alice");
    let v: String = alice
        .query_one("select pg_catalog.version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(v.starts_with("PostgreSQL 16"), "{v}");
    let e = alice
        .simple_query("SET session_replication_role = replica")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::INSUFFICIENT_PRIVILEGE);
    let e = alice.simple_query("BEGIN READ WRITE").await.unwrap_err();
    assert_eq!(code(&e), SqlState::READ_ONLY_SQL_TRANSACTION);

    drop(alice);
    drop(bob);
    // Every statement sent to the engine is audited, with its front door.
    let records = w.audit();
    let logins: Vec<_> = records
        .iter()
        .filter(|r| r.code.as_deref() == Some("pgwire_login"))
        .collect();
    assert_eq!(logins.len(), 2, "one login record per connection");
    assert!(
        logins
            .iter()
            .all(|r| r.front_door.as_deref() == Some("pgwire"))
    );
    let queries: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.event, Event::QueryAttempt | Event::QueryDenied))
        .collect();
    assert!(queries.len() >= 12, "{}", queries.len());
    assert!(
        queries
            .iter()
            .all(|r| r.front_door.as_deref() == Some("pgwire")),
        "every query record names its door"
    );
    let denied = records
        .iter()
        .find(|r| {
            r.event == Event::QueryDenied
                && r.sql.as_deref() == Some("SELECT card_number FROM orders")
        })
        .expect("the refusal is audited");
    assert_eq!(denied.user.as_deref(), Some("alice"));
    assert_eq!(denied.tenant.as_deref(), Some("A"));
    // Local statements never reach the engine (nor the audit's query records).
    assert!(
        records
            .iter()
            .all(|r| r.sql.as_deref() != Some("SHOW application_name"))
    );
    // The chain (with the new field) verifies.
    let out = Command::new(common::BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(w.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_counted_and_audited() {
    let w = world("wire_auth", "").await;
    for (user, password, db) in [
        ("alice", "not-a-token", "world"),
        ("mallory", token_as("alice", "A").as_str(), "world"),
        ("alice", "slk_nothere_123", "world"),
    ] {
        let e = tokio_postgres::connect(&w.conn_str(user, password, db), NoTls)
            .await
            .err()
            .unwrap();
        assert_eq!(code(&e), SqlState::INVALID_PASSWORD, "{user}: {e:?}");
    }
    // An unknown database is not a connection.
    let e = tokio_postgres::connect(
        &w.conn_str("alice", &token_as("alice", "A"), "nosuchdb"),
        NoTls,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(code(&e), SqlState::INVALID_CATALOG_NAME);
    let denied = w
        .audit()
        .into_iter()
        .filter(|r| r.event == Event::AuthDenied && r.front_door.as_deref() == Some("pgwire"))
        .count();
    assert!(denied >= 3, "{denied}");
}

#[tokio::test]
async fn a_cancel_request_and_a_client_that_leaves_stop_the_warehouse_query() {
    let w = world("wire_cancel", "").await;
    // CancelRequest (BackendKeyData) on a new connection.
    let alice = w.client("alice", "A").await;
    let token = alice.cancel_token();
    let slow = tokio::spawn(async move {
        let r = alice.simple_query(SLOW_SQL).await;
        (r, alice)
    });
    w.wait_until_running().await;
    token.cancel_query(NoTls).await.unwrap();
    let (r, alice) = slow.await.unwrap();
    assert_eq!(code(&r.unwrap_err()), SqlState::QUERY_CANCELED);
    w.wait_until_gone("after the cancel request").await;
    // The connection is still usable.
    let n: i64 = alice
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, A_ORDERS);

    // A client that goes away while its query waits for the warehouse.
    let (client, conn) = tokio_postgres::connect(
        &w.conn_str("alice", &token_as("alice", "A"), "world"),
        NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let slow = tokio::spawn(async move { client.simple_query(SLOW_SQL).await });
    w.wait_until_running().await;
    conn.abort();
    slow.abort();
    w.wait_until_gone("after the client left").await;

    let records = w.audit();
    let cancelled = records
        .iter()
        .filter(|r| {
            r.event == Event::QueryCompletion
                && r.outcome.as_deref() == Some("cancelled")
                && r.front_door.as_deref() == Some("pgwire")
        })
        .count();
    assert_eq!(cancelled, 2, "both recorded as cancelled");
}

#[tokio::test]
async fn portals_stream_with_row_limits_inside_a_transaction() {
    let w = world("wire_portal", "").await;
    let mut alice = w.client("alice", "A").await;
    let tx = alice.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT id FROM orders WHERE id > $1 ORDER BY id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&100i32]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 30).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 30);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, (101..=200).collect::<Vec<i32>>());
    tx.commit().await.unwrap();
    // The Describe (planned at the warehouse, audited) and one run for the portal, however
    // many Executes.
    let (described, completions): (Vec<_>, Vec<_>) = w
        .audit()
        .into_iter()
        .filter(|r| {
            r.event == Event::QueryCompletion
                && r.sql.as_deref() == Some("SELECT id FROM orders WHERE id > $1 ORDER BY id")
        })
        .partition(|r| r.outcome.as_deref() == Some("described"));
    assert_eq!(described.len(), 1, "{described:?}");
    assert_eq!(described[0].rows, Some(0));
    assert_eq!(completions.len(), 1, "{completions:?}");
    assert_eq!(completions[0].rows, Some(100));
    assert_eq!(completions[0].outcome.as_deref(), Some("ok"));
}

fn psql(w: &World, conninfo: &str, password: &str, args: &[&str]) -> std::process::Output {
    let _ = w;
    Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql (postgresql-client) is required")
}

fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required");
    assert!(out.status.success(), "{out:?}");
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

#[tokio::test]
async fn psql_connects_over_tls_and_plaintext_passwords_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let w = world(
        "wire_tls",
        &format!("require_tls = true\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\""),
    )
    .await;
    let token = token_as("alice", "A");
    let base = format!("host=127.0.0.1 port={} user=alice dbname=world", w.port());
    let out = psql(
        &w,
        &format!("{base} sslmode=require"),
        &token,
        &["-c", "SELECT count(*) FROM orders"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        A_ORDERS.to_string()
    );
    // Without TLS the password is never asked for.
    let out = psql(
        &w,
        &format!("{base} sslmode=disable"),
        &token,
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires TLS"), "{err}");
    // psql's own introspection of the session.
    let out = psql(
        &w,
        &format!("{base} sslmode=require"),
        &token,
        &[
            "-c",
            "SHOW server_version",
            "-c",
            "SELECT current_database()",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("16.6") && text.contains("world"), "{text}");
}

#[tokio::test]
async fn psql_ctrl_c_cancels_a_slow_query() {
    let w = world("wire_sigint", "").await;
    let token = token_as("alice", "A");
    let child = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=alice dbname=world sslmode=disable",
            w.port()
        ))
        .args(["-X", "-c", SLOW_SQL])
        .env("PGPASSWORD", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    w.wait_until_running().await;
    // psql sends a CancelRequest on SIGINT.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    w.wait_until_gone("after psql's Ctrl-C").await;
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("canceling statement"), "{err}");
}

#[tokio::test]
async fn pgbench_runs_a_custom_script_in_both_protocols() {
    let w = world("wire_pgbench", "").await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("point.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 200)\nSELECT id, amount FROM orders WHERE id = :id;\n",
    )
    .unwrap();
    let token = token_as("alice", "A");
    for mode in ["extended", "prepared", "simple"] {
        let out = Command::new("pgbench")
            .args(["-n", "-h", "127.0.0.1", "-p", w.port(), "-U", "alice"])
            .args(["-M", mode, "-c", "2", "-t", "25", "-f"])
            .arg(&script)
            .arg("world")
            .env("PGPASSWORD", &token)
            .output()
            .expect("pgbench is required");
        assert!(out.status.success(), "{mode}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("number of transactions actually processed: 50/50"),
            "{mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "{mode}: {text}"
        );
    }
}

/// Every string in a wire answer, checked for tenant-B data.
fn leak(v: &str) -> bool {
    v.contains("LEAK") || v.parse::<f64>().is_ok_and(|n| n >= 900_000.0)
}

#[tokio::test]
async fn the_security_corpus_gets_the_same_decisions_through_the_wire_door() {
    const CORPUS: &str = include_str!("../../../shared/security/public-corpus.jsonl");
    let w = world("wire_corpus", "").await;
    let alice = w.client("alice", "A").await;
    let http = reqwest::Client::new();
    let token = token_as("alice", "A");
    let mut failures = Vec::new();
    let (mut same, mut local, mut catalog) = (0, 0, 0);
    // What the analyst may not see: ungranted columns, undeclared tables.
    const HIDDEN: &[&str] = &["card_number", "ssn", "email", "orders_2024", "archive"];
    for line in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        if case["dialect"].as_str() != Some("postgres") {
            continue;
        }
        let id = case["id"].as_str().unwrap();
        let sql = case["sql"].as_str().unwrap();
        let resp = http
            .post(format!("{}/v1/query", w.daemon.url))
            .bearer_auth(&token)
            .json(&json!({"sql": sql, "connection": "world"}))
            .send()
            .await
            .unwrap();
        let http_ok = resp.status().is_success();
        let body: serde_json::Value = resp.json().await.unwrap();
        let wire = alice.simple_query(sql).await;
        match (&wire, http_ok) {
            (Ok(messages), _) => {
                let mut rows = 0u64;
                for m in messages {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        rows += 1;
                        for i in 0..r.len() {
                            if r.get(i).is_some_and(leak) {
                                failures.push(format!("{id}: tenant-B data through the wire"));
                            }
                        }
                    }
                }
                if http_ok && Some(rows) != body["row_count"].as_u64() {
                    failures.push(format!(
                        "{id}: {rows} rows by wire, {} by HTTP",
                        body["row_count"]
                    ));
                } else if http_ok {
                    same += 1;
                } else if sluice::wire::local::classify(sql).is_ok_and(|l| l.is_some()) {
                    // Answered by sluice itself (a session function, a SET): no warehouse.
                    local += 1;
                } else if sluice::engine::catalog::is_catalog_query(sql) {
                    // Answered by the virtual catalog: the caller's visible catalog only.
                    for m in messages {
                        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                            for v in (0..r.len()).filter_map(|i| r.get(i)) {
                                if HIDDEN.iter().any(|h| v.contains(h)) {
                                    failures.push(format!("{id}: {v:?} shown by the catalog"));
                                }
                            }
                        }
                    }
                    catalog += 1;
                } else {
                    failures.push(format!(
                        "{id}: refused by HTTP ({}), allowed by wire",
                        body["code"]
                    ));
                }
            }
            (Err(e), false) => {
                let detail = e
                    .as_db_error()
                    .and_then(|d| d.detail())
                    .unwrap_or_default()
                    .to_string();
                let message = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_default();
                if leak(&message) || leak(&detail) {
                    failures.push(format!("{id}: tenant-B data in an error"));
                }
                let code = body["code"].as_str().unwrap_or_default();
                if detail.starts_with(&format!("sluice: {code}"))
                    || sluice::wire::local::classify(sql).is_err()
                {
                    same += 1;
                } else {
                    failures.push(format!(
                        "{id}: HTTP code {code}, wire {detail:?} ({message})"
                    ));
                }
            }
            (Err(e), true) => {
                failures.push(format!("{id}: allowed by HTTP, refused by wire: {e:?}"))
            }
        }
    }
    println!(
        "wire corpus: {same} same decisions, {local} answered locally, {catalog} by the virtual catalog"
    );
    assert!(same > 20, "{same}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// psycopg 3 (PyPI, with its bundled libpq): server-side parameters, a prepared statement
/// reused, `COPY` refused with a clear error, and a 1 M-row answer streamed row by row while
/// the daemon's memory stays flat.
const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    cur = conn.execute("SELECT id, note FROM orders WHERE id = %s", (5,))
    assert cur.fetchall() == [(5, "note-5")]
    for i in range(1, 8):
        row = conn.execute("SELECT amount FROM orders WHERE id = %s", (i,), prepare=True).fetchone()
        assert float(row[0]) == 10 + i, row
    try:
        with conn.cursor().copy("COPY orders TO STDOUT") as copy:
            for _ in copy:
                pass
        raise SystemExit("COPY was not refused")
    except psycopg.errors.InsufficientPrivilege as e:
        assert (e.diag.message_detail or "").startswith("sluice:"), e
    n = 0
    for row in conn.cursor().stream(
        "SELECT a.id, b.id, c.id FROM orders a, orders b, orders c LIMIT 1000000"
    ):
        n += 1
    assert n == 1000000, n
print("ok")
"#;

/// The daemon's peak resident memory so far (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn psycopg_binds_prepares_and_streams_in_flat_memory() {
    let w = world("wire_psycopg", "[limits]\nmax_result_rows = 2000000").await;
    let python = client_python();
    let before = peak_rss_kb(w.daemon.child.id());
    let out = Command::new(&python)
        .arg("-c")
        .arg(PSYCOPG_SCRIPT)
        .arg(w.conn_str("alice", &token_as("alice", "A"), "world"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let grown_mb = (peak_rss_kb(w.daemon.child.id()) - before) / 1024;
    println!("daemon peak RSS growth over a 1 M-row answer: {grown_mb} MB");
    assert!(
        grown_mb < 256,
        "the answer was held in memory: +{grown_mb} MB"
    );
}

/// Text rows of a simple query.
async fn simple_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_virtual_catalog_shows_only_what_the_caller_may_read() {
    let w = world("wire_catalog", "").await;
    let alice = w.client("alice", "A").await;

    let tables = simple_rows(
        &alice,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .await;
    let tables: Vec<_> = tables.into_iter().map(|r| r[0].clone().unwrap()).collect();
    // Declared tables only: not orders_2024, not archive.orders, no views.
    assert_eq!(tables, ["countries", "customers", "invoices", "orders"]);

    // Granted columns only, with the warehouse's types.
    let sql = "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) \
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relname = $1 AND n.nspname = 'public' AND a.attnum > 0 ORDER BY a.attnum";
    let columns: Vec<(String, String)> = alice
        .query(sql, &[&"orders"])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "tenant_id",
            "customer_id",
            "amount",
            "status",
            "note",
            "items",
            "created_at"
        ],
        "card_number is granted to billing only"
    );
    assert!(
        columns.iter().any(|(n, t)| n == "id" && t == "integer"),
        "{columns:?}"
    );
    let cols = simple_rows(
        &alice,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY ordinal_position",
    )
    .await;
    assert!(
        !cols.iter().any(|r| r[0].as_deref() == Some("ssn")),
        "{cols:?}"
    );
    // Another caller's session sees what they may read (their own probes, their own cache).
    let (pii, conn) = tokio_postgres::connect(
        &w.conn_str(
            "carol",
            &token_with("carol", "A", &["analyst", "pii"]),
            "world",
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let cols = simple_rows(
        &pii,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY ordinal_position",
    )
    .await;
    assert!(
        cols.iter().any(|r| r[0].as_deref() == Some("ssn")),
        "{cols:?}"
    );

    // A query mixing catalog and data relations is not a catalog query: default deny.
    let e = alice
        .simple_query("SELECT count(*) FROM pg_catalog.pg_class, orders")
        .await
        .unwrap_err();
    assert!(
        matches!(
            code(&e),
            SqlState::UNDEFINED_TABLE | SqlState::INSUFFICIENT_PRIVILEGE
        ),
        "{e:?}"
    );
    // The catalog session is read-only.
    let e = alice
        .simple_query("CREATE TABLE pg_catalog.x (a int)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::INSUFFICIENT_PRIVILEGE, "{e:?}");

    // Audited like any query: connection `catalog`, the probes (tenant-filtered, no row read)
    // recorded once per session, the chain intact.
    let records = w.audit();
    let catalog: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == Event::QueryCompletion && r.connection.as_deref() == Some("catalog"))
        .collect();
    assert!(catalog.len() >= 3, "{catalog:?}");
    assert!(
        catalog
            .iter()
            .all(|r| r.front_door.as_deref() == Some("pgwire"))
    );
    let probed: Vec<&AuditRecord> = catalog
        .iter()
        .copied()
        .filter(|r| !r.sub_queries.is_empty())
        .collect();
    assert_eq!(probed.len(), 2, "one probing per session: {catalog:?}");
    for r in &probed {
        assert_eq!(r.sub_queries.len(), 4, "{:?}", r.sub_queries);
        assert!(
            r.sub_queries.iter().all(|q| q.sql.contains("1 = 0")),
            "{:?}",
            r.sub_queries
        );
        assert!(
            r.sub_queries.iter().any(|q| q.sql.contains("tenant_id")),
            "protected tables are probed through the tenant filter: {:?}",
            r.sub_queries
        );
    }
    run_ok(
        Command::new(common::BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(w.dir.path().join("data")),
    );
}

#[tokio::test]
async fn psql_lists_and_describes_visible_tables_only() {
    let w = world("wire_psql_catalog", "").await;
    let token = token_as("alice", "A");
    let base = format!(
        "host=127.0.0.1 port={} user=alice dbname=world sslmode=disable",
        w.port()
    );
    let out = psql(&w, &base, &token, &["-c", "\\dt"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for t in ["countries", "customers", "invoices", "orders"] {
        assert!(text.contains(&format!("public|{t}|table|")), "{t}: {text}");
    }
    assert!(
        !text.contains("orders_2024") && !text.contains("archive"),
        "{text}"
    );

    let out = psql(&w, &base, &token, &["-c", "\\d orders"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for c in [
        "id",
        "customer_id",
        "amount",
        "status",
        "note",
        "created_at",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{c}|"))),
            "{c}: {text}"
        );
    }
    assert!(!text.contains("card_number"), "{text}");

    let out = psql(&w, &base, &token, &["-c", "\\d orders_2024"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Did not find any relation"), "{out:?}");
}

/// SQLAlchemy 2's inspector and pandas over psycopg 3, and the ADBC driver's Arrow-native fetch
/// (binary COPY of the query).
const PYTHON_CATALOG_SCRIPT: &str = r#"
import sys
import sqlalchemy as sa, pandas as pd
port, token = sys.argv[1], sys.argv[2]
engine = sa.create_engine(f"postgresql+psycopg://alice:{token}@127.0.0.1:{port}/world")
insp = sa.inspect(engine)
tables = sorted(insp.get_table_names())
assert tables == ["countries", "customers", "invoices", "orders"], tables
cols = [c["name"] for c in insp.get_columns("orders")]
assert "amount" in cols and "card_number" not in cols, cols
assert "ssn" not in [c["name"] for c in insp.get_columns("customers")]
df = pd.read_sql("SELECT id, amount FROM orders WHERE id <= 5 ORDER BY id", engine)
assert list(df["id"]) == [1, 2, 3, 4, 5], df
import adbc_driver_postgresql.dbapi as adbc
with adbc.connect(f"postgresql://alice:{token}@127.0.0.1:{port}/world?sslmode=disable") as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT id, amount, status FROM orders WHERE id <= 10 ORDER BY id")
        t = cur.fetch_arrow_table()
        assert t.num_rows == 10, t
        assert t.column("id").to_pylist() == list(range(1, 11)), t
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetch_arrow_table().column("n").to_pylist() == [200]
print("ok")
"#;

#[tokio::test]
async fn sqlalchemy_pandas_and_adbc_see_the_visible_catalog() {
    let w = world("wire_python_catalog", "").await;
    let out = run_ok(
        Command::new(client_python())
            .arg("-c")
            .arg(PYTHON_CATALOG_SCRIPT)
            .arg(w.port())
            .arg(token_as("alice", "A")),
    );
    assert!(out.contains("ok"), "{out}");
    // ADBC read through the same pipeline: audited, tenant-filtered.
    let records = w.audit();
    assert!(records.iter().any(|r| r.event == Event::QueryCompletion
        && r.connection.as_deref() == Some("world")
        && r.rows == Some(10)));
}

/// pgjdbc (Debian libpostgresql-jdbc-java): DatabaseMetaData, a PreparedStatement with
/// parameters, and setFetchSize streaming (portals with a row limit inside a transaction).
const JDBC_SOURCE: &str = r#"
import java.sql.*;
import java.util.*;
public class SluiceJdbc {
    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "alice");
        p.setProperty("password", a[1]);
        p.setProperty("sslmode", "disable");
        try (Connection c = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + a[0] + "/world", p)) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[]{"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            if (!tables.equals(List.of("countries", "customers", "invoices", "orders"))) throw new AssertionError("tables " + tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME"));
            }
            if (!cols.contains("amount") || cols.contains("card_number")) throw new AssertionError("columns " + cols);
            try (PreparedStatement ps = c.prepareStatement("SELECT id, status FROM orders WHERE id <= ? AND status = ? ORDER BY id")) {
                for (int round = 0; round < 6; round++) {
                    ps.setInt(1, 50);
                    ps.setString(2, "paid");
                    int n = 0;
                    try (ResultSet rs = ps.executeQuery()) { while (rs.next()) n++; }
                    if (n == 0) throw new AssertionError("no paid orders");
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(25);
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT id FROM orders")) { while (rs.next()) n++; }
                if (n != 200) throw new AssertionError("rows " + n);
            }
            c.commit();
        }
        System.out.println("ok");
    }
}
"#;

#[tokio::test]
async fn pgjdbc_reads_metadata_binds_and_streams_with_a_fetch_size() {
    let w = world("wire_jdbc", "").await;
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).exists(),
        "{jar} is required (.ci/run installs libpostgresql-jdbc-java)"
    );
    let src = w.dir.path().join("SluiceJdbc.java");
    std::fs::write(&src, JDBC_SOURCE).unwrap();
    let out = run_ok(
        Command::new("java")
            .args(["-cp", jar])
            .arg(&src)
            .arg(w.port())
            .arg(token_as("alice", "A")),
    );
    assert!(out.contains("ok"), "{out}");
    // The fetch-size read streamed in portals of 25 rows: one query, 200 rows.
    let records = w.audit();
    assert!(records.iter().any(|r| r.event == Event::QueryCompletion
        && r.sql.as_deref() == Some("SELECT id FROM orders")
        && r.rows == Some(200)));
}

#[tokio::test]
async fn savepoints_nest_in_a_read_only_transaction_and_roll_back_a_failure() {
    let w = world("wire_savepoint", "").await;
    let alice = w.client("alice", "A").await;
    let e = alice.simple_query("SAVEPOINT a").await.unwrap_err();
    assert_eq!(code(&e), SqlState::NO_ACTIVE_SQL_TRANSACTION, "{e:?}");
    alice.simple_query("BEGIN").await.unwrap();
    alice.simple_query("SAVEPOINT a").await.unwrap();
    let e = alice
        .simple_query("SELECT * FROM orders_2024")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::UNDEFINED_TABLE, "{e:?}");
    // The failed block accepts only its end, or a rollback to a savepoint.
    let e = alice
        .simple_query("SELECT 1 FROM orders")
        .await
        .unwrap_err();
    assert_eq!(code(&e), SqlState::IN_FAILED_SQL_TRANSACTION, "{e:?}");
    alice.simple_query("ROLLBACK TO SAVEPOINT a").await.unwrap();
    let rows = simple_rows(&alice, "SELECT count(*) FROM orders").await;
    assert_eq!(rows[0][0].as_deref(), Some(A_ORDERS.to_string().as_str()));
    let e = alice.simple_query("RELEASE SAVEPOINT b").await.unwrap_err();
    assert_eq!(code(&e), SqlState::from_code("3B001"), "{e:?}");
    alice.simple_query("ROLLBACK").await.unwrap();
    alice.simple_query("BEGIN").await.unwrap();
    alice.simple_query("SAVEPOINT a").await.unwrap();
    alice.simple_query("RELEASE a").await.unwrap();
    let e = alice.simple_query("ROLLBACK TO a").await.unwrap_err();
    assert_eq!(code(&e), SqlState::from_code("3B001"), "released: {e:?}");
    alice.simple_query("COMMIT").await.unwrap();
}

/// A JWT of the world's issuer with its own `exp` and `jti`.
fn token_expiring(user: &str, tenant: &str, exp: u64, jti: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "tenant": tenant, "groups": ["analyst"], "aud": "sluice-world",
                "iss": "world-idp", "exp": exp, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_connection_verifies_its_jwt_once_and_stops_when_the_token_expires() {
    // Replay protection on and no leeway: the login consumes the token's `jti`, the
    // connection's statements reuse that verification (they used to be refused as replays),
    // another connection with the same token is a replay, and the held verification ends at
    // the token's `exp`.
    let w = world_with("wire_held", "", "require_jti = true\nleeway_secs = 0").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = token_expiring("alice", "A", now + 4, "held-1");
    let (c, conn) = tokio_postgres::connect(&w.conn_str("alice", &token, "world"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let n: i64 = c
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, A_ORDERS);
        let rows = c.simple_query("SELECT count(*) FROM orders").await.unwrap();
        assert!(!rows.is_empty());
    }
    let again = tokio_postgres::connect(&w.conn_str("alice", &token, "world"), NoTls)
        .await
        .err()
        .expect("a second login with the same jti was accepted");
    assert_eq!(code(&again), SqlState::INVALID_PASSWORD, "{again:?}");
    // Past `exp`: the next statement verifies the token again, which fails.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= now + 4
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = c
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect_err("a statement ran on an expired token");
    assert_eq!(code(&e), SqlState::INVALID_PASSWORD, "{e:?}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("expired")),
        "{e:?}"
    );
    let expired = w
        .audit()
        .into_iter()
        .filter(|r| r.code.as_deref() == Some("token_expired"))
        .count();
    assert!(expired >= 1, "the expired statement was not audited");
}
