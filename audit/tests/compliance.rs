//! Each compliance question, answered on a generated log with known content.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use sluice_audit::query::{self, ExportFormat, ExportHeader, Filter};
use sluice_audit::{AuditLog, AuditOptions, AuditRecord, Decision, Event, Signer, open_read_only};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 30, 0).unwrap()
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn attempt(
    user: &str,
    tenant: &str,
    t: DateTime<Utc>,
    tables: &[&str],
    columns: &[&str],
) -> AuditRecord {
    let mut r = AuditRecord::new(
        Event::QueryAttempt,
        format!("{user}-{}", t.timestamp_millis()),
        Decision::Allow,
    );
    r.ts = at(t);
    r.user = Some(user.into());
    r.tenant = Some(tenant.into());
    r.tables = tables.iter().map(|s| s.to_string()).collect();
    r.columns = columns.iter().map(|s| s.to_string()).collect();
    r.sql = Some(format!("SELECT ... FROM {}", tables.join(", ")));
    r
}

fn completion(mut r: AuditRecord, outcome: &str) -> AuditRecord {
    r.event = Event::QueryCompletion;
    r.outcome = Some(outcome.into());
    r.rows = Some(3);
    r
}

fn denied(user: Option<&str>, addr: &str, t: DateTime<Utc>, code: &str) -> AuditRecord {
    let mut r = AuditRecord::new(
        Event::QueryDenied,
        format!("d-{}", t.timestamp_millis()),
        Decision::Deny,
    );
    r.ts = at(t);
    r.user = user.map(str::to_string);
    r.client_addr = Some(addr.into());
    r.code = Some(code.into());
    r
}

/// A week of activity:
/// - `steady` (tenant acme) reads public.orders every day at 10:00 for 7 days (28 queries);
///   then, within the last day, reads public.payroll (first access) at 03:00 (unusual hour);
/// - `burst` (tenant globex) reads public.orders once per day, then 40 times in the last hour;
/// - `mallory` is denied 6 times within two minutes; one of bob's queries fails.
fn records() -> Vec<AuditRecord> {
    let n = now();
    let mut v = Vec::new();
    for day in 1..=7 {
        for k in 0..4 {
            let t = (n - Duration::days(day))
                .date_naive()
                .and_hms_opt(10, k * 5, 0)
                .unwrap()
                .and_utc();
            let a = attempt(
                "steady",
                "acme",
                t,
                &["public.orders"],
                &["public.orders.amount", "public.orders.id"],
            );
            v.push(completion(a.clone(), "ok"));
            v.push(a);
        }
        let t = n - Duration::days(day) + Duration::minutes(7);
        v.push(attempt(
            "burst",
            "globex",
            t,
            &["public.orders"],
            &["public.orders.id"],
        ));
    }
    let t3 = n.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    v.push(attempt(
        "steady",
        "acme",
        t3,
        &["public.payroll"],
        &["public.payroll.salary"],
    ));
    for i in 0..40 {
        v.push(attempt(
            "burst",
            "globex",
            n - Duration::minutes(50) + Duration::seconds(i),
            &["public.orders"],
            &["public.orders.id"],
        ));
    }
    for i in 0..6 {
        v.push(denied(
            Some("mallory"),
            "10.0.0.9",
            n - Duration::minutes(20) + Duration::seconds(20 * i),
            "policy_denied",
        ));
    }
    let b = attempt(
        "bob",
        "acme",
        n - Duration::hours(2),
        &["public.customers"],
        &["public.customers.email"],
    );
    v.push(completion(b.clone(), "error"));
    v.push(b);
    v.sort_by(|a, b| a.ts.cmp(&b.ts));
    v
}

struct Log {
    _dir: tempfile::TempDir,
    conn: rusqlite::Connection,
    audit: AuditLog,
}

async fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let signer = Arc::new(Signer::load_or_create(&dir.path().join("k")).unwrap());
    let (audit, _writer) = AuditLog::open_with(
        &path,
        AuditOptions {
            signer: Some(signer),
            checkpoints_path: dir.path().join("cp.jsonl"),
            checkpoint_every: 1_000_000,
            checkpoint_interval: StdDuration::from_secs(3600),
        },
    )
    .unwrap();
    for r in records() {
        audit.append(r).await.unwrap();
    }
    Log {
        conn: open_read_only(&path).unwrap(),
        _dir: dir,
        audit,
    }
}

#[tokio::test]
async fn searches_filter_by_user_tenant_table_column_time_and_outcome() {
    let l = log().await;
    let by = |f: Filter| query::search(&l.conn, &f).unwrap();
    let steady = by(Filter {
        user: Some("steady".into()),
        event: Some("query_attempt".into()),
        ..Filter::default()
    });
    assert_eq!(steady.len(), 29);
    assert_eq!(
        by(Filter {
            tenant: Some("globex".into()),
            ..Filter::default()
        })
        .len(),
        47
    );
    // A table by its short or qualified name; a column as table.column.
    assert_eq!(
        by(Filter {
            table: Some("payroll".into()),
            ..Filter::default()
        })
        .len(),
        1
    );
    assert_eq!(
        by(Filter {
            table: Some("public.payroll".into()),
            ..Filter::default()
        })
        .len(),
        1
    );
    assert_eq!(
        by(Filter {
            column: Some("customers.email".into()),
            ..Filter::default()
        })
        .len(),
        2
    );
    assert_eq!(
        by(Filter {
            outcome: Some("error".into()),
            ..Filter::default()
        })
        .len(),
        1
    );
    let last_day = by(Filter {
        since: Some(now() - Duration::days(1)),
        until: Some(now()),
        event: Some("query_attempt".into()),
        ..Filter::default()
    });
    assert_eq!(
        last_day.len(),
        43,
        "payroll + 40 burst + burst's daily read 23h ago + bob"
    );
    // Everything one user ran against one table.
    let f = Filter {
        user: Some("burst".into()),
        table: Some("orders".into()),
        ..Filter::default()
    };
    assert!(
        by(f)
            .iter()
            .all(|r| r.user.as_deref() == Some("burst") && r.tables == ["public.orders"])
    );
    // Denied and failed attempts.
    let bad = by(Filter {
        denied_or_failed: true,
        ..Filter::default()
    });
    assert_eq!(bad.len(), 7);
    assert!(
        bad.iter()
            .all(|r| r.decision == Decision::Deny || r.outcome.as_deref() == Some("error"))
    );
}

#[tokio::test]
async fn who_accessed_a_table_or_a_column_in_the_last_n_days() {
    let l = log().await;
    let a = query::who_accessed(&l.conn, "public.orders", None, now() - Duration::days(3)).unwrap();
    let summary: Vec<(String, u64)> = a.iter().map(|x| (x.user.clone(), x.queries)).collect();
    assert_eq!(
        summary,
        [("burst".to_string(), 43), ("steady".to_string(), 8)]
    );
    let a = query::who_accessed(
        &l.conn,
        "orders",
        Some("amount"),
        now() - Duration::days(30),
    )
    .unwrap();
    assert_eq!(
        a.iter().map(|x| x.user.as_str()).collect::<Vec<_>>(),
        ["steady"]
    );
    assert_eq!(a[0].queries, 28);
    let a = query::who_accessed(
        &l.conn,
        "customers",
        Some("email"),
        now() - Duration::days(1),
    )
    .unwrap();
    assert_eq!((a[0].user.as_str(), a[0].tenant.as_str()), ("bob", "acme"));
}

#[tokio::test]
async fn the_anomaly_report_applies_each_documented_rule() {
    let l = log().await;
    let report = query::anomalies(&l.conn, now(), 7).unwrap();
    let found: Vec<(&str, &str)> = report
        .iter()
        .map(|a| (a.rule, a.subject.as_str()))
        .collect();
    assert!(found.contains(&("rate_spike", "burst")), "{found:?}");
    assert!(found.contains(&("first_access", "steady")), "{found:?}");
    assert!(found.contains(&("unusual_hour", "steady")), "{found:?}");
    assert!(found.contains(&("denial_burst", "mallory")), "{found:?}");
    // No false alarms: steady's daily orders reads are neither a spike nor a first access.
    assert!(!found.contains(&("rate_spike", "steady")));
    assert_eq!(
        report
            .iter()
            .filter(|a| a.rule == "first_access" && a.subject == "steady")
            .count(),
        1
    );
}

#[tokio::test]
async fn exports_carry_the_checkpoint_that_covers_them() {
    let l = log().await;
    let cp = l.audit.checkpoint().await.unwrap().unwrap();
    let header = ExportHeader {
        export: "gdpr_subject_access".into(),
        subject: "bob".into(),
        generated_at: at(now()),
        checkpoint: Some(cp.clone()),
    };
    let mut out = Vec::new();
    let n = query::export(
        &l.conn,
        &Filter {
            user: Some("bob".into()),
            ..Filter::default()
        },
        &header,
        ExportFormat::JsonLines,
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["checkpoint"]["seq"], cp.seq);
    assert!(
        lines[1..]
            .iter()
            .all(|r| r["user"] == "bob" && r["seq"].as_u64().unwrap() <= cp.seq)
    );
    // Each exported record's hash is the chain's: recompute it from its predecessor's hash.
    let rec: sluice_audit::AuditRecord = serde_json::from_value(lines[1].clone()).unwrap();
    assert_eq!(
        sluice_audit::chain::record_hash(&rec.prev_hash, &rec),
        rec.hash
    );

    let header = ExportHeader {
        export: "hipaa_phi_access".into(),
        subject: "public.payroll".into(),
        generated_at: at(now()),
        checkpoint: Some(cp),
    };
    let mut out = Vec::new();
    let f = Filter {
        any_table: vec!["public.payroll".into(), "public.customers".into()],
        ..Filter::default()
    };
    let n = query::export(&l.conn, &f, &header, ExportFormat::Csv, &mut out).unwrap();
    assert_eq!(n, 3);
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("# {\"export\":\"hipaa_phi_access\"")
    );
    assert!(lines.next().unwrap().starts_with("seq,ts,event,request_id"));
    assert_eq!(lines.count(), 3);
}
