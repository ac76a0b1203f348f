//! The audit log: durable appends, group commit, append-only enforcement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_audit::{AuditLog, AuditRecord, Decision, Event, open_read_only, read_all};

#[tokio::test]
async fn appends_are_durable_ordered_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = AuditRecord::new(Event::QueryDenied, format!("req-{i}"), Decision::Deny);
            r.code = Some("policy_denied".into());
            log.append(r).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    assert!(log.is_healthy());
    drop(log);
    writer.join();
    let records = read_all(&open_read_only(&path).unwrap()).unwrap();
    assert_eq!(records.len(), 500);
    assert!(
        records
            .iter()
            .all(|r| r.code.as_deref() == Some("policy_denied"))
    );
}

#[tokio::test]
async fn the_database_refuses_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    log.append(AuditRecord::new(Event::QueryAttempt, "r1", Decision::Allow))
        .await
        .unwrap();
    drop(log);
    writer.join();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let upd = conn.execute("UPDATE audit_log SET user = 'mallory'", []);
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = conn.execute("DELETE FROM audit_log", []);
    assert!(del.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn an_unwritable_log_fails_appends_and_reports_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, _writer) = AuditLog::open(&path).unwrap();
    log.append(AuditRecord::new(Event::QueryAttempt, "r1", Decision::Allow))
        .await
        .unwrap();
    // Another connection takes the write lock and holds it past the writer's busy timeout.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let res = log
        .append(AuditRecord::new(Event::QueryAttempt, "r2", Decision::Allow))
        .await;
    assert!(res.is_err());
    assert!(!log.is_healthy());
    blocker.execute_batch("ROLLBACK").unwrap();
    log.append(AuditRecord::new(Event::QueryAttempt, "r3", Decision::Allow))
        .await
        .unwrap();
    assert!(log.is_healthy());
}

#[tokio::test]
async fn sub_queries_round_trip_and_logs_without_the_column_get_it() {
    use sluice_audit::SubQuery;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    // A log written before federated queries existed: no sub_queries column.
    {
        let (log, writer) = AuditLog::open(&path).unwrap();
        log.append(AuditRecord::new(Event::QueryDenied, "old", Decision::Deny))
            .await
            .unwrap();
        drop(log);
        writer.join();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("ALTER TABLE audit_log DROP COLUMN sub_queries")
            .unwrap();
    }
    let (log, writer) = AuditLog::open(&path).unwrap();
    let mut r = AuditRecord::new(Event::QueryCompletion, "fed", Decision::Allow);
    r.sub_queries = vec![SubQuery {
        connection: "pg".into(),
        sql: "SELECT \"a\" FROM \"t\" WHERE \"tenant_id\" = $1".into(),
        warehouse_query_id: Some("q-1".into()),
        rows: Some(3),
        row_filters: vec![],
    }];
    log.append(r.clone()).await.unwrap();
    drop(log);
    writer.join();
    let records = read_all(&open_read_only(&path).unwrap()).unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].sub_queries.is_empty());
    assert_eq!(records[1].sub_queries, r.sub_queries);
    // Hashed only when present: records without sub-queries hash as they always did.
    let bytes = |r: &AuditRecord| String::from_utf8(r.canonical_bytes()).unwrap();
    assert!(!bytes(&records[0]).contains("sub_queries"));
    assert!(bytes(&records[1]).contains("\"sub_queries\":[{\"connection\":\"pg\""));
}

/// The WAL is checkpointed beside the writer while the log is open (not only by the commit that
/// happens to cross SQLite's automatic threshold, which stalls every query waiting for it):
/// the database file grows with what was committed, and every record is readable from it.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    let empty = std::fs::metadata(&path).unwrap().len();
    for i in 0..2_000 {
        let mut r = AuditRecord::new(Event::QueryDenied, format!("req-{i}"), Decision::Deny);
        r.sql = Some(format!("SELECT {i} FROM orders -- {}", "x".repeat(200)));
        log.append_lazy(r).unwrap();
    }
    log.barrier().await.unwrap();
    // ~0.6 MB committed, far below the writer's own checkpoint (16,384 pages): only the
    // checkpointer moves it into the database file, within a few of its periods.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size > empty + 256 * 1024 || std::time::Instant::now() > deadline {
            break size;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        grown > empty + 256 * 1024,
        "database file {empty} -> {grown} bytes: the WAL was not checkpointed"
    );
    assert_eq!(
        read_all(&open_read_only(&path).unwrap()).unwrap().len(),
        2_000
    );
    drop(log);
    writer.join();
}

/// A record nobody waits for is committed on its own within the lazy window (never held until
/// some other record comes), and one queued before a waited-for record is durable when that
/// one's append resolves (it rides the same commit, in queue order).
#[tokio::test]
async fn lazy_records_commit_alone_within_the_window_or_with_the_next_waited_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    log.append_lazy(AuditRecord::new(
        Event::QueryCompletion,
        "alone",
        Decision::Allow,
    ))
    .unwrap();
    let reader = open_read_only(&path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while read_all(&reader).unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(
        read_all(&reader).unwrap().len(),
        1,
        "a lazy record was held back"
    );

    log.append_lazy(AuditRecord::new(
        Event::QueryCompletion,
        "lazy",
        Decision::Allow,
    ))
    .unwrap();
    let seq = log
        .append(AuditRecord::new(
            Event::QueryAttempt,
            "waited",
            Decision::Allow,
        ))
        .await
        .unwrap();
    assert_eq!(seq, 3);
    let ids: Vec<String> = read_all(&reader)
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(ids, ["alone", "lazy", "waited"]);
    drop(log);
    writer.join();
}

/// One writer per log: a second one (another process, an overlapping restart) is refused with
/// a clear error while the first is open, and may open once it has stopped.
#[tokio::test]
async fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    let second = AuditLog::open(&path)
        .err()
        .expect("a second writer opened")
        .to_string();
    assert!(second.contains("already open for writing"), "{second}");
    // Readers are not writers.
    assert!(
        read_all(&open_read_only(&path).unwrap())
            .unwrap()
            .is_empty()
    );
    drop(log);
    writer.join();
    let (log, writer) = AuditLog::open(&path).unwrap();
    drop(log);
    writer.join();
}

/// When the writer is behind and the queue is full, `append_lazy` fails at once
/// (backpressure) but `queue_lazy` waits for room and gets in once the writer moves again.
#[tokio::test]
async fn queue_lazy_waits_for_room_where_append_lazy_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let (log, writer) = AuditLog::open(&path).unwrap();
    // Another connection holds the write lock: the writer's commit waits (up to its 5 s busy
    // timeout) and the queue fills up behind it.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let record =
        |i: u64| AuditRecord::new(Event::QueryCompletion, format!("r-{i}"), Decision::Allow);
    let mut i = 0;
    loop {
        i += 1;
        match log.append_lazy(record(i)) {
            Ok(()) => {}
            Err(sluice_audit::AuditError::Backpressure) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(i < 1_000_000, "the queue never filled");
    }
    let waiting = tokio::spawn({
        let log = log.clone();
        async move { log.queue_lazy(record(0)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "queued into a full queue");
    locker.execute_batch("ROLLBACK").unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("still waiting after the writer moved")
        .unwrap()
        .unwrap();
    drop(log);
    writer.join();
}
