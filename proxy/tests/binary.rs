//! The real `sluice` binary: the demo's printed curl line works as printed, a token for another
//! tenant sees only its rows, SIGTERM drains an answer in flight, and `check-config` names bad keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::BIN;

/// Pulls (url, token, body) out of `curl -s URL -H 'Authorization: Bearer T' ... -d 'BODY'`.
fn parse_curl(line: &str) -> (String, String, String) {
    let url = line.split_whitespace().nth(2).unwrap().to_string();
    let token = line
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let body = line
        .split("-d '")
        .nth(1)
        .unwrap()
        .trim_end_matches('\'')
        .to_string();
    (url, token, body)
}

#[tokio::test]
async fn demo_curl_works_and_sigterm_drains_in_flight_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (mut child, rx) = common::spawn(&["--demo"], &data_dir, &[]);
    let curl = format!("curl {}", common::line_after(&rx, "curl "));
    let other = common::line_after(&rx, "Token for another tenant: ");
    let (url, token, body) = parse_curl(&curl);
    let client = reqwest::Client::new();

    // The printed command, as printed.
    let resp = client
        .post(&url)
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["row_count"], 5);
    assert!(
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[0].as_str().unwrap().starts_with("acme-"))
    );

    // The printed way to get another tenant's token.
    let args: Vec<&str> = other
        .trim_start_matches("sluice ")
        .split_whitespace()
        .collect();
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success());
    let globex = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let resp = client
        .post(&url)
        .bearer_auth(&globex)
        .json(&json!({"sql": "SELECT DISTINCT tenant_id FROM customers"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["rows"],
        json!([["globex"]])
    );

    // A large answer in flight when SIGTERM arrives still completes.
    let resp = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"sql": "SELECT a.order_id, b.order_id FROM orders a CROSS JOIN orders b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["row_count"], 100_000);
    assert_eq!(answer["truncated"], true);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    // Every request left its records, flushed before exit.
    let conn = sluice_audit::open_read_only(&data_dir.join("audit.sqlite")).unwrap();
    let records = sluice_audit::read_all(&conn).unwrap();
    let completions: Vec<_> = records
        .iter()
        .filter(|r| r.event == sluice_audit::Event::QueryCompletion)
        .collect();
    assert_eq!(completions.len(), 3);
    assert_eq!(completions[2].outcome.as_deref(), Some("truncated"));

    // The log verifies (chain and the checkpoint written at shutdown) ...
    let verify = || {
        Command::new(BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], records.len());
    assert!(report["checkpoints"].as_u64().unwrap() >= 1);
    // ... and an edit through raw SQLite is caught, naming the record.
    drop(conn);
    let raw = edit_behind_the_triggers(&data_dir.join("audit.sqlite"), completions[1].seq);
    assert!(raw);
    let out = verify();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("first bad sequence number {}", completions[1].seq)),
        "{err}"
    );
}

/// What an attacker with file access does: drop the append-only trigger and edit one record
/// (through Python's sqlite3 module, so this test needs no SQLite dependency of its own).
fn edit_behind_the_triggers(db: &std::path::Path, seq: u64) -> bool {
    let sql = format!(
        "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET rows = 999999 WHERE seq = {seq};"
    );
    Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(db)
        .arg(sql)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn check_config_names_unknown_keys_and_accepts_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlistn = \"127.0.0.1:1\"\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"X\"\nissuer = \"i\"\naudience = \"a\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("listn"), "{err}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sluice.example.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("OK"));

    let out = Command::new(BIN).args(["serve"]).output().unwrap();
    assert!(!out.status.success());
}

/// The daemon killed with SIGKILL under load: every query whose answer reached the client has
/// its attempt (or its denial) durable in the log; after the next open, a completion too (its
/// own, or outcome `unknown` where it was lost in the kill), and the chain verifies.
#[tokio::test]
async fn sigkill_under_load_loses_no_record_of_an_answered_query() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (mut child, rx) = common::spawn(&["--demo"], &data_dir, &[]);
    let url = common::line_after(&rx, "sluice listening on ");
    let token = sluice::demo::token(&data_dir, "loader", "acme", &["analyst".into()]).unwrap();
    let load = common::Load::start(&url, &token, 8, |w, i| {
        let sql = if i % 5 == 0 {
            "SELECT * FROM secrets"
        } else {
            "SELECT count(*) FROM orders"
        };
        (format!("load-{w}-{i}"), json!({ "sql": sql }))
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let _ = child.wait();
    let answered = load.stop().await;
    assert!(answered.len() > 20, "too little load: {}", answered.len());

    let log = data_dir.join("audit.sqlite");
    let events_of = |records: &[sluice_audit::AuditRecord], rid: &str| {
        records
            .iter()
            .filter(|r| r.request_id == rid)
            .map(|r| r.event)
            .collect::<Vec<_>>()
    };
    // As killed: every answered query's attempt (or denial) is durable.
    let conn = sluice_audit::open_read_only(&log).unwrap();
    let records = sluice_audit::read_all(&conn).unwrap();
    for (rid, status) in &answered {
        let events = events_of(&records, rid);
        if *status == 200 {
            assert_eq!(
                events.first(),
                Some(&sluice_audit::Event::QueryAttempt),
                "{rid}"
            );
        } else {
            assert_eq!(events, vec![sluice_audit::Event::QueryDenied], "{rid}");
        }
    }
    drop(conn);
    // The next start records every completion lost in the kill as outcome `unknown`.
    let (audit_log, writer) = sluice_audit::AuditLog::open(&log).unwrap();
    drop(audit_log);
    writer.join();
    let conn = sluice_audit::open_read_only(&log).unwrap();
    let records = sluice_audit::read_all(&conn).unwrap();
    for (rid, status) in &answered {
        let expected = if *status == 200 {
            vec![
                sluice_audit::Event::QueryAttempt,
                sluice_audit::Event::QueryCompletion,
            ]
        } else {
            vec![sluice_audit::Event::QueryDenied]
        };
        assert_eq!(events_of(&records, rid), expected, "{rid} ({status})");
    }
    drop(conn);
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "sigkill: {} answered queries, all recorded; {} records in the log",
        answered.len(),
        records.len()
    );

    // The questions from the command line, on this log.
    let ask = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["audit"])
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let denied = ask(&["search", "--denied-or-failed", "--user", "loader"]);
    let denials = answered.iter().filter(|(_, s)| *s != 200).count();
    assert!(denied.lines().count() >= denials);
    // Denials, and the completions lost in the kill (outcome `unknown`), which count as failed.
    assert!(
        denied
            .lines()
            .all(|l| l.contains("\"code\":\"policy_denied\"")
                || (l.contains("\"code\":\"completion_lost\"")
                    && l.contains("\"outcome\":\"unknown\"")))
    );
    let access: Value =
        serde_json::from_str(ask(&["access", "--table", "orders", "--days", "1"]).trim()).unwrap();
    assert_eq!(access["user"], "loader");
    let export = ask(&["export", "gdpr", "--user", "loader", "--format", "csv"]);
    assert!(export.starts_with("# {\"export\":\"gdpr_subject_access\""));
    ask(&["anomalies", "--days", "1"]);

    // Retention: seal the first half; the live log and the segment both verify.
    let half = (records.len() / 2).to_string();
    let sealed: Value =
        serde_json::from_str(ask(&["archive", "--upto-seq", &half]).trim()).unwrap();
    assert_eq!(sealed["first"], 1);
    let report: Value = serde_json::from_str(ask(&["verify"]).trim()).unwrap();
    assert_eq!(report["records"], records.len());
    assert_eq!(report["first_bad_seq"], Value::Null);
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn apikey_and_client_commands_print_secrets_once_and_they_work() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (mut child, rx) = common::spawn(&["--demo"], &data_dir, &[]);
    let url = common::line_after(&rx, "sluice listening on ");
    let dd = data_dir.to_str().unwrap();
    let http = reqwest::Client::new();

    // An API key, created while the daemon runs, works at once.
    let (ok, key, _) = run_cli(&[
        "apikey",
        "create",
        "--data-dir",
        dd,
        "--user",
        "ci-bot",
        "--tenant",
        "globex",
        "--groups",
        "analyst",
        "--expires-in-days",
        "30",
        "--name",
        "ci",
    ]);
    assert!(ok);
    let key = key.trim().to_string();
    assert!(key.starts_with("slk_"));
    let me: Value = http
        .get(format!("{url}/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["user"].as_str(), me["tenant"].as_str()),
        (Some("ci-bot"), Some("globex"))
    );
    let (ok, listed, _) = run_cli(&["apikey", "list", "--data-dir", dd]);
    assert!(ok && listed.contains("ci-bot") && !listed.contains(&key));
    let id = key.trim_start_matches("slk_").split('_').next().unwrap();
    assert!(run_cli(&["apikey", "revoke", "--data-dir", dd, id]).0);
    let resp = http
        .get(format!("{url}/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!run_cli(&["apikey", "revoke", "--data-dir", dd, id]).0);

    // A service client: its secret mints service tokens; rotation with no overlap retires it.
    let (ok, secret, _) = run_cli(&[
        "client",
        "create",
        "--data-dir",
        dd,
        "--id",
        "backend",
        "--tenants",
        "acme,globex",
    ]);
    assert!(ok);
    let token = |s: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/v1/auth/token"))
                .json(&json!({"client_id": "backend", "client_secret": s}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(token(secret.trim().to_string()).await, 200);
    let (ok, newer, _) = run_cli(&[
        "client",
        "rotate",
        "--data-dir",
        dd,
        "--id",
        "backend",
        "--overlap-hours",
        "0",
    ]);
    assert!(ok);
    assert_eq!(token(secret.trim().to_string()).await, 401);
    assert_eq!(token(newer.trim().to_string()).await, 200);
    let (ok, listed, _) = run_cli(&["client", "list", "--data-dir", dd]);
    assert!(ok && listed.contains("\"backend\"") && !listed.contains(newer.trim()));
    let _ = child.kill();
    let _ = child.wait();
}
