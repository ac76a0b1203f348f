//! With `audit.durability = "before_warehouse"`, no statement reaches a warehouse without its
//! attempt record committed first — run and explain, single-connection and federated, allowed
//! and refused. With either setting, no answer reaches the client unless its attempt record is
//! durable: when it cannot be committed, the caller gets `audit_unavailable`.
//!
//! sluice reaches the real PostgreSQL through a thin layer of this test that reads the
//! frontend protocol: each `Parse` or simple `Query` carrying a statement that reads a declared
//! table is held while the layer reads the audit log, which must already hold the current
//! request's `query_attempt` as its newest record. Per request, the statements the warehouse
//! received are counted against the request's audit records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::TestDb;
use serde_json::{Value, json};
use sluice_audit::{AuditRecord, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "audit-first-secret-for-tests-only-0123";

/// What the layer saw.
#[derive(Default)]
struct Seen {
    /// The request the test is sending now.
    request: String,
    /// Statements that read a declared table, with the request they arrived during.
    statements: Vec<(String, String)>,
    /// Statements that arrived before the current request's attempt record was committed.
    early: Vec<String>,
}

/// A statement that reads a declared table (sluice qualifies every one it sends), as opposed
/// to session management (`BEGIN READ ONLY`, `ROLLBACK`, `DISCARD ALL`, the login check).
fn reads_data(sql: &str) -> bool {
    sql.contains("\"public\".")
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn newest(audit: &Path) -> Option<AuditRecord> {
    let conn = sluice_audit::open_read_only(audit).ok()?;
    sluice_audit::read_all(&conn).ok()?.pop()
}

/// Forwards one client connection to PostgreSQL, reading the client's messages.
async fn relay(mut client: TcpStream, seen: Arc<Mutex<Seen>>, audit: PathBuf) {
    let mut server = TcpStream::connect("127.0.0.1:5432").await.unwrap();
    let (mut sr, mut sw) = server.split();
    let (mut cr, mut cw) = client.split();
    let down = tokio::io::copy(&mut sr, &mut cw);
    let up = async {
        // Startup (and an SSL request, refused by the server with 'N'): length-prefixed.
        loop {
            let mut len = [0u8; 4];
            if cr.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u32::from_be_bytes(len) as usize;
            let mut rest = vec![0u8; n - 4];
            cr.read_exact(&mut rest).await.unwrap();
            sw.write_all(&len).await.unwrap();
            sw.write_all(&rest).await.unwrap();
            if rest[..4] != [0x04, 0xd2, 0x16, 0x2f] {
                break;
            }
        }
        let mut prepared = std::collections::HashMap::<String, String>::new();
        let mut last_was_parse = false;
        loop {
            let mut head = [0u8; 5];
            if cr.read_exact(&mut head).await.is_err() {
                return;
            }
            let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; n - 4];
            cr.read_exact(&mut body).await.unwrap();
            // A statement prepared before runs again with a `Bind` naming it (sluice keeps
            // each session's statements): that reaches the warehouse as much as a `Parse`.
            let sql = match head[0] {
                b'Q' => Some(cstr(&body)),
                b'P' => {
                    let name_end = body.iter().position(|c| *c == 0).unwrap();
                    let sql = cstr(&body[name_end + 1..]);
                    let name = cstr(&body[..name_end]);
                    if !name.is_empty() {
                        prepared.insert(name, sql.clone());
                    }
                    Some(sql)
                }
                b'B' => {
                    let portal_end = body.iter().position(|c| *c == 0).unwrap();
                    let name = cstr(&body[portal_end + 1..]);
                    // Right behind its own `Parse` it is the same statement, counted once.
                    match (prepared.get(&name), last_was_parse) {
                        (Some(sql), false) => Some(sql.clone()),
                        _ => None,
                    }
                }
                _ => None,
            };
            last_was_parse = head[0] == b'P'
                || (head[0] == b'D' && last_was_parse)
                || (head[0] == b'S' && last_was_parse);
            if let Some(sql) = sql.filter(|s| reads_data(s)) {
                let request = seen.lock().unwrap().request.clone();
                let covered = newest(&audit)
                    .is_some_and(|r| r.event == Event::QueryAttempt && r.request_id == request);
                let mut s = seen.lock().unwrap();
                if !covered {
                    s.early.push(sql.clone());
                }
                s.statements.push((request, sql));
            }
            if sw.write_all(&head).await.is_err() || sw.write_all(&body).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

async fn layer(seen: Arc<Mutex<Seen>>, audit: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (c, _) = listener.accept().await.unwrap();
            tokio::spawn(relay(c, Arc::clone(&seen), audit.clone()));
        }
    });
    port
}

fn config(durability: &str) -> String {
    let tables = r#"
[[connections.tables]]
name = "public.countries"
access = "public"
columns = ["code", "name"]

[[connections.tables]]
name = "public.orders"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "customer_id", "amount", "status"]
"#;
    format!(
        r#"
[audit]
durability = "{durability}"

[auth.jwt]
algorithm = "HS256"
secret_env = "AUDIT_FIRST_JWT_SECRET"
issuer = "world-idp"
audience = "sluice-world"

[auth.jwt.claims]
user = "sub"
tenant = "tenant"
groups = "groups"

[[connections]]
id = "a"
kind = "postgres"
url_env = "AUDIT_FIRST_PG_URL"
default_schema = "public"
{tables}
[[connections]]
id = "b"
kind = "postgres"
url_env = "AUDIT_FIRST_PG_URL"
default_schema = "public"
{tables}"#
    )
}

/// Starts the daemon with `audit.durability = durability` in `dir`, its PostgreSQL at `pg_url`.
fn start(dir: &Path, durability: &str, pg_url: &str) -> common::Daemon {
    let config_file = dir.join("sluice.toml");
    std::fs::write(&config_file, config(durability)).unwrap();
    common::Daemon::start(
        &config_file,
        &dir.join("data"),
        &[
            ("AUDIT_FIRST_PG_URL", pg_url),
            ("AUDIT_FIRST_JWT_SECRET", SECRET),
        ],
    )
}

fn token() -> String {
    common::sign_hs256(
        SECRET,
        json!({"sub": "alice", "tenant": "A", "groups": ["analyst"], "aud": "sluice-world",
               "iss": "world-idp"}),
    )
}

#[tokio::test]
async fn no_statement_reaches_the_warehouse_before_its_attempt_record() {
    let db = TestDb::create(
        "audit_first",
        include_str!("../../../shared/security/world.sql"),
    )
    .await;
    db.grant_reader().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let audit = data_dir.join(sluice::app::AUDIT_FILE);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = layer(Arc::clone(&seen), audit.clone()).await;
    let url = format!("postgres://{}@127.0.0.1:{port}/{}", common::READER, db.name);
    let daemon = start(dir.path(), "before_warehouse", &url);
    let base = daemon.url.clone();
    let http = reqwest::Client::new();
    let token = token();

    // (path, body, status, statements the warehouse gets, the request's audit events)
    use Event::{QueryAttempt as A, QueryCompletion as C, QueryDenied as D};
    let single = "SELECT id FROM a.public.orders WHERE id < 3";
    let federated = "SELECT o.id, c.name FROM a.public.orders o JOIN b.public.countries c \
                     ON c.code = o.status WHERE o.id < 3";
    let cases: Vec<(&str, Value, u16, usize, Vec<Event>)> = vec![
        ("/v1/query", json!({"sql": single}), 200, 1, vec![A, C]),
        (
            "/v1/query",
            json!({"sql": "SELECT id FROM orders", "connection": "a"}),
            200,
            1,
            vec![A, C],
        ),
        (
            "/v1/query",
            json!({"sql": "SELECT * FROM a.public.secrets"}),
            403,
            0,
            vec![D],
        ),
        (
            "/v1/query",
            json!({"sql": "DELETE FROM orders", "connection": "a"}),
            403,
            0,
            vec![D],
        ),
        // Federated: two schema probes, then one scan per source.
        ("/v1/query", json!({"sql": federated}), 200, 4, vec![A, C]),
        (
            "/v1/query",
            json!({"sql": "SELECT x FROM a.public.orders o JOIN b.public.nope n ON true"}),
            403,
            0,
            vec![D],
        ),
        // Parameters with a federated query: refused before any source is asked anything.
        (
            "/v1/query",
            json!({"sql": federated, "params": [1]}),
            400,
            0,
            vec![D],
        ),
        // Explain: no statement for one connection; the probes (only) for a federated query.
        (
            "/v1/policy/explain",
            json!({"sql": single}),
            200,
            0,
            vec![A, C],
        ),
        (
            "/v1/policy/explain",
            json!({"sql": federated}),
            200,
            2,
            vec![A, C],
        ),
        (
            "/v1/policy/explain",
            json!({"sql": "DELETE FROM orders", "connection": "a"}),
            200,
            0,
            vec![D],
        ),
        // The same text again: a session that prepared it runs it with `Bind` alone.
        ("/v1/query", json!({"sql": single}), 200, 1, vec![A, C]),
        ("/v1/query", json!({"sql": single}), 200, 1, vec![A, C]),
    ];
    for (i, (path, body, status, statements, events)) in cases.into_iter().enumerate() {
        let request = format!("audit-first-{i}");
        seen.lock().unwrap().request = request.clone();
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("x-request-id", &request)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let answer: Value = r.json().await.unwrap();
        let got = seen
            .lock()
            .unwrap()
            .statements
            .iter()
            .filter(|(r, _)| *r == request)
            .count();
        assert_eq!(got, statements, "{body}: {answer}");
        let records: Vec<Event> = {
            let conn = sluice_audit::open_read_only(&audit).unwrap();
            sluice_audit::read_settled(&conn, std::time::Duration::from_secs(5))
                .unwrap()
                .into_iter()
                .filter(|r| r.request_id == request)
                .map(|r| r.event)
                .collect()
        };
        assert_eq!(records, events, "{body}: {answer}");
    }
    let s = seen.lock().unwrap();
    assert!(
        s.early.is_empty(),
        "statements before their attempt: {:?}",
        s.early
    );
    assert!(s.statements.len() >= 8);
    drop(s);
    drop(daemon);
}

/// The audit log cannot commit (another process holds its write lock past the writer's busy
/// timeout): in both durability modes the caller gets `audit_unavailable` and no row; with
/// `before_warehouse` the warehouse never saw the statement, with `before_answer` it may have
/// (it started while the attempt was being committed) and its query was abandoned.
#[tokio::test]
async fn an_attempt_that_cannot_be_made_durable_means_no_answer() {
    let db = TestDb::create(
        "audit_locked",
        include_str!("../../../shared/security/world.sql"),
    )
    .await;
    db.grant_reader().await;
    for durability in ["before_answer", "before_warehouse"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let audit = data_dir.join(sluice::app::AUDIT_FILE);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let port = layer(Arc::clone(&seen), audit.clone()).await;
        let url = format!("postgres://{}@127.0.0.1:{port}/{}", common::READER, db.name);
        let daemon = start(dir.path(), durability, &url);
        let http = reqwest::Client::new();
        let query = |request: &'static str| {
            http.post(format!("{}/v1/query", daemon.url))
                .bearer_auth(token())
                .header("x-request-id", request)
                .json(&json!({"sql": "SELECT id FROM orders WHERE id < 3", "connection": "a"}))
                .send()
        };
        // Warm: the session exists and the statement is prepared.
        let r = query("warm").await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.bytes().await;

        let reader = sluice_audit::open_read_only(&audit).unwrap();
        sluice_audit::read_settled(&reader, std::time::Duration::from_secs(5)).unwrap();
        seen.lock().unwrap().request = "locked".into();
        let locker = rusqlite::Connection::open(&audit).unwrap();
        locker
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Held past the attempt's commit (which gives up after the writer's 5 s lock wait),
        // then released, so the refusal's own record can be written.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(6500));
            locker.execute_batch("ROLLBACK").unwrap();
        });
        let r = query("locked").await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        release.join().unwrap();
        assert_eq!(status, 503, "{durability}: {body}");
        assert_eq!(body["code"], "audit_unavailable", "{durability}: {body}");
        assert!(body.get("rows").is_none(), "{durability}: {body}");
        let reached = seen
            .lock()
            .unwrap()
            .statements
            .iter()
            .filter(|(r, _)| r == "locked")
            .count();
        if durability == "before_warehouse" {
            assert_eq!(
                reached, 0,
                "the warehouse saw a query whose attempt is not durable"
            );
        }
        // The log is whole again: later queries are audited and the chain verifies.
        seen.lock().unwrap().request = "after".into();
        let r = query("after").await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{durability}");
        let _ = r.bytes().await;
        let conn = sluice_audit::open_read_only(&audit).unwrap();
        let records = sluice_audit::read_settled(&conn, std::time::Duration::from_secs(5)).unwrap();
        let after: Vec<Event> = records
            .iter()
            .filter(|r| r.request_id == "after")
            .map(|r| r.event)
            .collect();
        assert_eq!(after, vec![Event::QueryAttempt, Event::QueryCompletion]);
        // The refused query is a refusal: no completion of an attempt the log never held.
        let locked: Vec<(Event, Option<&str>)> = records
            .iter()
            .filter(|r| r.request_id == "locked")
            .map(|r| (r.event, r.code.as_deref()))
            .collect();
        assert_eq!(
            locked,
            vec![(Event::QueryDenied, Some("audit_unavailable"))],
            "{durability}"
        );
        drop(daemon);
    }
}

/// The daemon killed with SIGKILL under load, in both durability modes: every query whose
/// answer reached the client has a durable attempt; with `before_warehouse` its completion too.
/// Opening the log afterwards (as the next start does) records every attempt left without a
/// completion as outcome `unknown`, so none is silently missing, and the chain verifies.
#[tokio::test]
async fn sigkill_under_load_every_answer_has_a_durable_attempt() {
    let db = TestDb::create(
        "audit_sigkill",
        include_str!("../../../shared/security/world.sql"),
    )
    .await;
    db.grant_reader().await;
    for durability in ["before_answer", "before_warehouse"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let audit = data_dir.join(sluice::app::AUDIT_FILE);
        let mut daemon = start(dir.path(), durability, &db.reader_url());
        let load = common::Load::start(&daemon.url, &token(), 8, |w, i| {
            let body = if i % 7 == 0 {
                json!({"sql": "SELECT * FROM secrets", "connection": "a"})
            } else {
                json!({"sql": "SELECT id, amount FROM orders WHERE id = $1",
                       "params": [i % 5 + 1], "connection": "a"})
            };
            (format!("kill-{w}-{i}"), body)
        });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        daemon.child.kill().unwrap();
        let _ = daemon.child.wait();
        let answered = load.stop().await;
        assert!(answered.len() > 20, "{durability}: too little load");

        let events_of = |records: &[AuditRecord], rid: &str| -> Vec<(Event, Option<String>)> {
            records
                .iter()
                .filter(|r| r.request_id == rid)
                .map(|r| (r.event, r.outcome.clone()))
                .collect()
        };
        let before = {
            let conn = sluice_audit::open_read_only(&audit).unwrap();
            sluice_audit::read_all(&conn).unwrap()
        };
        for (rid, status) in &answered {
            let events = events_of(&before, rid);
            if *status != 200 {
                assert_eq!(
                    events,
                    vec![(Event::QueryDenied, None)],
                    "{durability} {rid}"
                );
                continue;
            }
            assert_eq!(
                events.first(),
                Some(&(Event::QueryAttempt, None)),
                "{durability} {rid}: an answered query without a durable attempt"
            );
            if durability == "before_warehouse" {
                assert_eq!(
                    events.get(1),
                    Some(&(Event::QueryCompletion, Some("ok".into()))),
                    "{durability} {rid}"
                );
            }
        }
        // What the next start does first.
        let (log, writer) = sluice_audit::AuditLog::open(&audit).unwrap();
        drop(log);
        writer.join();
        let after = {
            let conn = sluice_audit::open_read_only(&audit).unwrap();
            sluice_audit::read_all(&conn).unwrap()
        };
        let report = sluice_audit::chain::verify_records(&after, &[], &[], None);
        assert!(report.ok(), "{durability}: {report:?}");
        assert_eq!(report.unanswered_attempts, 0, "{durability}: {report:?}");
        let mut unknown = 0;
        for (rid, status) in answered.iter().filter(|(_, s)| *s == 200) {
            let events = events_of(&after, rid);
            assert_eq!(events.len(), 2, "{durability} {rid}: {events:?}");
            assert_eq!(events[0], (Event::QueryAttempt, None));
            let outcome = events[1].1.as_deref();
            assert_eq!(events[1].0, Event::QueryCompletion);
            assert!(
                matches!(outcome, Some("ok" | "unknown")),
                "{durability} {rid} ({status}): {outcome:?}"
            );
            unknown += usize::from(outcome == Some("unknown"));
        }
        println!(
            "sigkill ({durability}): {} answered, {unknown} with a completion lost, {} unknown \
             outcomes in the log",
            answered.len(),
            report.unknown_outcomes
        );
    }
}
