//! The group-commit writer and the SQLite schema.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

use crate::{AuditError, AuditRecord, Decision, Event};

/// Records waiting for the writer before appends fail with [`AuditError::Backpressure`].
const QUEUE_CAPACITY: usize = 65_536;
/// Most records committed in one transaction.
const MAX_BATCH: usize = 4_096;
/// How long a reader waits on a write lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_log (
    seq                INTEGER PRIMARY KEY,
    ts                 TEXT NOT NULL,
    event              TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    user               TEXT,
    tenant             TEXT,
    groups             TEXT NOT NULL,
    auth_method        TEXT,
    client_addr        TEXT,
    user_agent         TEXT,
    connection         TEXT,
    sql                TEXT,
    rewritten_sql      TEXT,
    params             TEXT NOT NULL,
    tables             TEXT NOT NULL,
    decision           TEXT NOT NULL,
    code               TEXT,
    reason             TEXT,
    outcome            TEXT,
    rows               INTEGER,
    bytes              INTEGER,
    duration_ms        REAL,
    error              TEXT,
    warehouse_query_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_request ON audit_log (request_id);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#;

type Ack = oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    record: AuditRecord,
    ack: Option<Ack>,
}

/// Handle for appending records. Cheap to clone; the writer stops when every clone is dropped.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
}

/// The writer thread; [`AuditWriter::join`] waits for it to drain and exit.
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Waits until every queued record is committed and the thread has exited. Call after the
    /// last [`AuditLog`] clone is dropped.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Opens the log read-only (for queries, exports and tests).
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

impl AuditLog {
    /// Opens (creating if needed) the log at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<(AuditLog, AuditWriter), AuditError> {
        let conn = open_writer(path)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer_loop(conn, rx, flag))
            .map_err(|e| AuditError::Storage(format!("cannot start writer: {e}")))?;
        Ok((
            AuditLog { tx, healthy },
            AuditWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Appends a record and waits until it is durably committed; returns its sequence number.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .try_send(Job {
                record,
                ack: Some(ack),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Backpressure,
                mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
            })?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues a record without waiting (for paths that cannot await, such as a dropped
    /// response). Failures are logged by the writer.
    pub fn append_detached(&self, record: AuditRecord) {
        if let Err(e) = self.tx.try_send(Job { record, ack: None }) {
            tracing::error!(error = %e, "audit record could not be queued");
        }
    }

    /// Whether the last commit succeeded. `/readyz` reports unready when it did not.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, healthy: Arc<AtomicBool>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = write_batch(&mut conn, &batch);
        healthy.store(result.is_ok(), Ordering::Relaxed);
        match result {
            Ok(first_seq) => {
                for (i, job) in batch.drain(..).enumerate() {
                    if let Some(ack) = job.ack {
                        let _ = ack.send(Ok(first_seq + i as u64));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit commit failed");
                for job in batch.drain(..) {
                    if let Some(ack) = job.ack {
                        let _ = ack.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Writes the batch in one transaction; returns the sequence number of its first record.
fn write_batch(conn: &mut Connection, batch: &[Job]) -> Result<u64, AuditError> {
    let tx = conn.transaction()?;
    let next: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log", [], |r| {
        r.get(0)
    })?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit_log (seq, ts, event, request_id, user, tenant, groups, auth_method,
                client_addr, user_agent, connection, sql, rewritten_sql, params, tables, decision,
                code, reason, outcome, rows, bytes, duration_ms, error, warehouse_query_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
        )?;
        for (i, job) in batch.iter().enumerate() {
            let r = &job.record;
            let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
            stmt.execute(params![
                next + i as i64,
                r.ts,
                r.event.as_str(),
                r.request_id,
                r.user,
                r.tenant,
                json(&r.groups),
                r.auth_method,
                r.client_addr,
                r.user_agent,
                r.connection,
                r.sql,
                r.rewritten_sql,
                json(&r.params),
                json(&r.tables),
                r.decision.as_str(),
                r.code,
                r.reason,
                r.outcome,
                r.rows.map(|v| v as i64),
                r.bytes.map(|v| v as i64),
                r.duration_ms,
                r.error,
                r.warehouse_query_id,
            ])?;
        }
    }
    tx.commit()?;
    Ok(next as u64)
}

/// Reads every record in sequence order (small logs: tests and the CLI).
pub fn read_all(conn: &Connection) -> Result<Vec<AuditRecord>, AuditError> {
    let mut stmt = conn.prepare(
        "SELECT seq, ts, event, request_id, user, tenant, groups, auth_method, client_addr,
            user_agent, connection, sql, rewritten_sql, params, tables, decision, code, reason,
            outcome, rows, bytes, duration_ms, error, warehouse_query_id
         FROM audit_log ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |row| {
        let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
        let event: String = row.get(2)?;
        let decision: String = row.get(15)?;
        Ok(AuditRecord {
            seq: row.get::<_, i64>(0)? as u64,
            ts: row.get(1)?,
            event: match event.as_str() {
                "query_attempt" => Event::QueryAttempt,
                "query_completion" => Event::QueryCompletion,
                _ => Event::QueryDenied,
            },
            request_id: row.get(3)?,
            user: row.get(4)?,
            tenant: row.get(5)?,
            groups: list(row.get(6)?),
            auth_method: row.get(7)?,
            client_addr: row.get(8)?,
            user_agent: row.get(9)?,
            connection: row.get(10)?,
            sql: row.get(11)?,
            rewritten_sql: row.get(12)?,
            params: list(row.get(13)?),
            tables: list(row.get(14)?),
            decision: if decision == "allow" {
                Decision::Allow
            } else {
                Decision::Deny
            },
            code: row.get(16)?,
            reason: row.get(17)?,
            outcome: row.get(18)?,
            rows: row.get::<_, Option<i64>>(19)?.map(|v| v as u64),
            bytes: row.get::<_, Option<i64>>(20)?.map(|v| v as u64),
            duration_ms: row.get(21)?,
            error: row.get(22)?,
            warehouse_query_id: row.get(23)?,
        })
    })?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(AuditError::from)
}
