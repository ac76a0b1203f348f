//! Tampering through raw SQLite access (triggers dropped first) is detected by verification,
//! which names the first bad sequence number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_audit::chain::GENESIS;
use sluice_audit::{AuditLog, AuditOptions, AuditRecord, Decision, Event, Signer};

struct Log {
    _dir: tempfile::TempDir,
    db: PathBuf,
    checkpoints: PathBuf,
    public_key: Vec<u8>,
}

/// 50 records, a signed checkpoint every 10 (at 10, 20, 30, 40, 50).
async fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let signer = Arc::new(Signer::load_or_create(&dir.path().join("keys/signing.key")).unwrap());
    let public_key = signer.public_key();
    let (audit, writer) = AuditLog::open_with(
        &db,
        AuditOptions {
            signer: Some(signer),
            checkpoints_path: checkpoints.clone(),
            checkpoint_every: 10,
            checkpoint_interval: Duration::from_secs(3600),
        },
    )
    .unwrap();
    for i in 1..=50 {
        let mut r = AuditRecord::new(Event::QueryAttempt, format!("req-{i}"), Decision::Allow);
        r.user = Some(format!("user-{}", i % 3));
        r.tables = vec!["public.orders".into()];
        r.duration_ms = Some(f64::from(i) / 3.0);
        audit.append(r).await.unwrap();
    }
    drop(audit);
    writer.join();
    Log {
        _dir: dir,
        db,
        checkpoints,
        public_key,
    }
}

fn verify(l: &Log) -> sluice_audit::VerifyReport {
    sluice_audit::verify(&l.db, &l.checkpoints, &l.public_key).unwrap()
}

fn tamper(db: &Path, sql: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    c.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn an_untouched_log_verifies_with_its_checkpoints() {
    let l = log().await;
    let r = verify(&l);
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.records, r.checkpoints), (50, 5));
    let records = sluice_audit::read_all(&sluice_audit::open_read_only(&l.db).unwrap()).unwrap();
    assert_eq!(records[0].prev_hash, GENESIS);
    assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));
}

#[tokio::test]
async fn an_edited_record_is_found() {
    let l = log().await;
    tamper(
        &l.db,
        "UPDATE audit_log SET user = 'mallory' WHERE seq = 17",
    );
    assert_eq!(verify(&l).first_bad_seq, Some(17));
}

#[tokio::test]
async fn a_deleted_record_is_found() {
    let l = log().await;
    tamper(&l.db, "DELETE FROM audit_log WHERE seq = 23");
    assert_eq!(verify(&l).first_bad_seq, Some(23));
}

#[tokio::test]
async fn swapped_records_are_found() {
    let l = log().await;
    tamper(
        &l.db,
        "UPDATE audit_log SET seq = -1 WHERE seq = 30; UPDATE audit_log SET seq = 30 WHERE seq = 31;
         UPDATE audit_log SET seq = 31 WHERE seq = -1;",
    );
    assert_eq!(verify(&l).first_bad_seq, Some(30));
}

#[tokio::test]
async fn an_inserted_record_is_found() {
    let l = log().await;
    tamper(
        &l.db,
        "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 20; UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000;
         INSERT INTO audit_log (seq, ts, event, request_id, groups, params, tables, columns, decision, prev_hash, hash)
         SELECT 21, ts, event, 'forged', groups, params, tables, columns, decision, hash, hash FROM audit_log WHERE seq = 20;",
    );
    assert_eq!(verify(&l).first_bad_seq, Some(21));
}

#[tokio::test]
async fn a_tail_truncated_after_a_checkpoint_is_found() {
    let l = log().await;
    tamper(&l.db, "DELETE FROM audit_log WHERE seq > 44");
    let r = verify(&l);
    assert_eq!(r.first_bad_seq, Some(45), "{r:?}");
    assert!(r.problem.unwrap().contains("truncated"));
}

#[tokio::test]
async fn a_rewritten_chain_is_caught_by_the_signed_checkpoint() {
    // An attacker who edits record 17 and recomputes every later hash keeps the chain
    // consistent, but cannot sign: the checkpoint at 20 no longer matches.
    let l = log().await;
    let conn = rusqlite::Connection::open(&l.db).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_update;")
        .unwrap();
    let mut records = sluice_audit::read_all(&conn).unwrap();
    records[16].user = Some("mallory".into());
    let mut prev = records[15].hash.clone();
    for r in records.iter_mut().skip(16) {
        r.prev_hash = prev.clone();
        r.hash = sluice_audit::chain::record_hash(&prev, r);
        prev = r.hash.clone();
        conn.execute(
            "UPDATE audit_log SET user = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![r.user, r.prev_hash, r.hash, r.seq as i64],
        )
        .unwrap();
    }
    let r = verify(&l);
    assert_eq!(r.first_bad_seq, Some(20), "{r:?}");
}

#[tokio::test]
async fn a_forged_checkpoint_is_found() {
    let l = log().await;
    let text = std::fs::read_to_string(&l.checkpoints).unwrap();
    let forged = text.replacen("\"seq\":30", "\"seq\":31", 1);
    std::fs::write(&l.checkpoints, forged).unwrap();
    assert_eq!(verify(&l).first_bad_seq, Some(31));
}

#[tokio::test]
async fn the_chain_continues_across_restarts() {
    let l = log().await;
    let signer =
        Arc::new(Signer::load_or_create(&l.db.parent().unwrap().join("keys/signing.key")).unwrap());
    let (audit, writer) = AuditLog::open_with(
        &l.db,
        AuditOptions {
            signer: Some(signer),
            checkpoints_path: l.checkpoints.clone(),
            checkpoint_every: 10,
            checkpoint_interval: Duration::from_secs(3600),
        },
    )
    .unwrap();
    assert_eq!(
        audit
            .append(AuditRecord::new(
                Event::QueryDenied,
                "after",
                Decision::Deny
            ))
            .await
            .unwrap(),
        // The 50 attempts of the first run never got their completions: reopening the log
        // recorded them (51..=100, outcome `unknown`) before anything else.
        101
    );
    let cp = audit.checkpoint().await.unwrap().unwrap();
    assert_eq!(cp.seq, 101);
    drop(audit);
    writer.join();
    let r = verify(&l);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.records, 101);
    assert_eq!(
        (r.unknown_outcomes, r.unanswered_attempts),
        (50, 0),
        "{r:?}"
    );
    let records = sluice_audit::read_all(&sluice_audit::open_read_only(&l.db).unwrap()).unwrap();
    for (i, rec) in records[50..100].iter().enumerate() {
        assert_eq!(rec.event, Event::QueryCompletion);
        assert_eq!(rec.request_id, format!("req-{}", i + 1));
        assert_eq!(rec.outcome.as_deref(), Some(sluice_audit::OUTCOME_UNKNOWN));
        assert_eq!(rec.code.as_deref(), Some(sluice_audit::LOST_COMPLETION));
        // What the attempt said stays: who, which tables.
        assert_eq!(rec.user, records[i].user);
        assert_eq!(rec.tables, records[i].tables);
    }
    // Opening again finds nothing more to recover.
    let (audit, writer) = AuditLog::open(&l.db).unwrap();
    drop(audit);
    writer.join();
    assert_eq!(verify(&l).records, 101);
}

/// Recovery reads only the tail since the head it last settled, yet never misses a lost
/// completion and never records one twice, across several stops and request ids that repeat.
#[tokio::test]
async fn recovery_resumes_from_the_settled_head_across_several_stops() {
    let l = log().await; // 50 attempts, no completions
    let open = || AuditLog::open(&l.db).unwrap();
    let records = || sluice_audit::read_all(&sluice_audit::open_read_only(&l.db).unwrap()).unwrap();
    // First reopen: 50 unknown completions (51..=100).
    let (audit, writer) = open();
    // Then queries whose request ids repeat old ones: req-1 answered, req-2 and req-60 not.
    for (event, id) in [
        (Event::QueryAttempt, "req-1"),
        (Event::QueryAttempt, "req-2"),
        (Event::QueryCompletion, "req-1"),
        (Event::QueryAttempt, "req-60"),
    ] {
        audit
            .append(AuditRecord::new(event, id, Decision::Allow))
            .await
            .unwrap();
    }
    drop(audit);
    writer.join();
    assert_eq!(records().len(), 104);
    // Second reopen: exactly req-2 and req-60 are recovered, in attempt order.
    let (audit, writer) = open();
    drop(audit);
    writer.join();
    let all = records();
    assert_eq!(all.len(), 106, "{:?}", &all[100..]);
    let tail: Vec<(&str, Option<&str>)> = all[104..]
        .iter()
        .map(|r| (r.request_id.as_str(), r.outcome.as_deref()))
        .collect();
    assert_eq!(
        tail,
        [
            ("req-2", Some(sluice_audit::OUTCOME_UNKNOWN)),
            ("req-60", Some(sluice_audit::OUTCOME_UNKNOWN))
        ]
    );
    // Third reopen: nothing more.
    let (audit, writer) = open();
    drop(audit);
    writer.join();
    let r = verify(&l);
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        (r.records, r.unknown_outcomes, r.unanswered_attempts),
        (106, 52, 0),
        "{r:?}"
    );
}

/// Request ids are the caller's to choose: another caller sending someone's in-flight id does
/// not make its completion answer that someone's attempt. After a stop, the attempt left
/// without a completion is the victim's, recorded as `unknown` under the victim's name.
#[tokio::test]
async fn a_reused_request_id_does_not_answer_another_callers_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let record = |event, user: &str| {
        let mut r = AuditRecord::new(event, "shared-id", Decision::Allow);
        r.user = Some(user.into());
        r.tenant = Some("A".into());
        r
    };
    let (audit, writer) = AuditLog::open(&db).unwrap();
    audit
        .append(record(Event::QueryAttempt, "alice"))
        .await
        .unwrap();
    audit
        .append(record(Event::QueryAttempt, "mallory"))
        .await
        .unwrap();
    audit
        .append(record(Event::QueryCompletion, "mallory"))
        .await
        .unwrap();
    drop(audit);
    writer.join();
    let (audit, writer) = AuditLog::open(&db).unwrap();
    drop(audit);
    writer.join();
    let all = sluice_audit::read_all(&sluice_audit::open_read_only(&db).unwrap()).unwrap();
    let last = all.last().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        (last.user.as_deref(), last.outcome.as_deref()),
        (Some("alice"), Some(sluice_audit::OUTCOME_UNKNOWN))
    );
}

/// A log written before recovery kept its settled head (and while the hot table still had a
/// request-id index): it is recovered from the start once, the index is dropped (it is not part
/// of the chain), and every record still verifies.
#[tokio::test]
async fn a_log_from_before_the_settled_head_is_recovered_once_and_still_verifies() {
    let l = log().await;
    {
        let c = rusqlite::Connection::open(&l.db).unwrap();
        c.execute_batch(
            "DROP TABLE audit_settled; \
             CREATE INDEX audit_log_request ON audit_log (request_id);",
        )
        .unwrap();
    }
    let (audit, writer) = AuditLog::open(&l.db).unwrap();
    drop(audit);
    writer.join();
    let c = rusqlite::Connection::open(&l.db).unwrap();
    let index: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_log_request'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0);
    let settled: i64 = c
        .query_row("SELECT max(seq) FROM audit_settled", [], |r| r.get(0))
        .unwrap();
    assert_eq!(settled, 100);
    assert!(
        c.execute("DELETE FROM audit_settled", []).is_err(),
        "the settled heads are append-only"
    );
    let r = verify(&l);
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.records, r.unknown_outcomes), (100, 50));
}

/// A settled mark past the head (a row inserted behind the triggers' back) does not hide the
/// attempts after the head from recovery.
#[tokio::test]
async fn a_settled_mark_past_the_head_does_not_hide_lost_completions() {
    let l = log().await; // 50 unanswered attempts
    rusqlite::Connection::open(&l.db)
        .unwrap()
        .execute_batch("INSERT INTO audit_settled (seq, ts) VALUES (1000000, 'x')")
        .unwrap();
    let (audit, writer) = AuditLog::open(&l.db).unwrap();
    drop(audit);
    writer.join();
    let r = verify(&l);
    assert_eq!(
        (r.records, r.unknown_outcomes, r.unanswered_attempts),
        (100, 50, 0),
        "{r:?}"
    );
}

/// When every record was archived, the next writer continues the chain from the anchor (not
/// from sequence 1), and the segments and the live log still link.
#[tokio::test]
async fn after_everything_is_archived_the_chain_continues_from_the_anchor() {
    let l = log().await;
    let dir = l.db.parent().unwrap().to_path_buf();
    let signer = Signer::load_or_create(&dir.join("keys/signing.key")).unwrap();
    let archive_dir = dir.join("archive");
    let (audit, writer) = AuditLog::open(&l.db).unwrap(); // recovery: 51..=100
    drop(audit);
    writer.join();
    sluice_audit::archive::archive(&l.db, &l.checkpoints, &archive_dir, &signer, 100).unwrap();
    let (audit, writer) = AuditLog::open(&l.db).unwrap();
    let seq = audit
        .append(AuditRecord::new(Event::QueryDenied, "next", Decision::Deny))
        .await
        .unwrap();
    drop(audit);
    writer.join();
    assert_eq!(seq, 101);
    let all = sluice_audit::verify_all(&l.db, &l.checkpoints, &archive_dir, &l.public_key).unwrap();
    assert!(all.ok(), "{all:?}");
    assert_eq!(all.records, 101);
}

#[tokio::test]
async fn archiving_keeps_the_rest_verifiable_and_segments_verify_on_their_own() {
    let l = log().await;
    let dir = l.db.parent().unwrap().to_path_buf();
    let signer = Signer::load_or_create(&dir.join("keys/signing.key")).unwrap();
    let archive_dir = dir.join("archive");
    // The 50 attempts have no completion yet (the writer stopped without a restart since):
    // sealing them would leave them unanswered for good.
    let refused = sluice_audit::archive::archive(&l.db, &l.checkpoints, &archive_dir, &signer, 20)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("record 1 is a query attempt without its completion"),
        "{refused}"
    );
    // The next start records them as outcome `unknown` (51..=100); then they may be sealed.
    let (audit, writer) = AuditLog::open(&l.db).unwrap();
    drop(audit);
    writer.join();
    let seg =
        sluice_audit::archive::archive(&l.db, &l.checkpoints, &archive_dir, &signer, 20).unwrap();
    assert_eq!((seg.first, seg.last), (1, 20));
    let seg2 =
        sluice_audit::archive::archive(&l.db, &l.checkpoints, &archive_dir, &signer, 35).unwrap();
    assert_eq!((seg2.first, seg2.last), (21, 35));
    let all = sluice_audit::verify_all(&l.db, &l.checkpoints, &archive_dir, &l.public_key).unwrap();
    assert!(all.ok(), "{all:?}");
    assert_eq!(all.records, 100);
    assert!(verify(&l).ok());
    let live = sluice_audit::read_all(&sluice_audit::open_read_only(&l.db).unwrap()).unwrap();
    assert_eq!(live.first().unwrap().seq, 36);

    // An edit inside a sealed segment is found in it.
    let c = rusqlite::Connection::open(&seg2.path).unwrap();
    c.execute_batch(
        "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET user = 'mallory' WHERE seq = 30",
    )
    .unwrap();
    drop(c);
    let all = sluice_audit::verify_all(&l.db, &l.checkpoints, &archive_dir, &l.public_key).unwrap();
    assert_eq!(all.first_bad_seq, Some(30), "{all:?}");
}

#[tokio::test]
async fn a_forged_anchor_cannot_excuse_deleted_records() {
    let l = log().await;
    tamper(
        &l.db,
        "CREATE TABLE audit_anchor (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, segment TEXT NOT NULL, checkpoint TEXT NOT NULL);
         INSERT INTO audit_anchor SELECT seq, hash, 'none', '{}' FROM audit_log WHERE seq = 10;
         DELETE FROM audit_log WHERE seq <= 10;",
    );
    assert_eq!(verify(&l).first_bad_seq, Some(11));
}
