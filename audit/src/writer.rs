//! The group-commit writer and the SQLite schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

use crate::chain::{Checkpoint, GENESIS, Signer, append_checkpoint, record_hash};
use crate::{AuditError, AuditRecord, Decision, Event};

/// Records waiting for the writer before appends fail with [`AuditError::Backpressure`].
const QUEUE_CAPACITY: usize = 65_536;
/// Most records committed in one transaction.
const MAX_BATCH: usize = 4_096;
/// Page cache of the writer connection, KiB.
const CACHE_KIB: i64 = 64 * 1024;
/// WAL pages between automatic checkpoints (SQLite's default is 1,000).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// How long a connection waits on a lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_log (
    seq                INTEGER PRIMARY KEY,
    ts                 TEXT NOT NULL,
    event              TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    session_id         TEXT,
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
    columns            TEXT NOT NULL,
    policy_version     TEXT,
    decision           TEXT NOT NULL,
    code               TEXT,
    reason             TEXT,
    outcome            TEXT,
    rows               INTEGER,
    bytes              INTEGER,
    duration_ms        REAL,
    error              TEXT,
    warehouse_query_id TEXT,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL,
    sub_queries        TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS audit_log_request ON audit_log (request_id);
CREATE INDEX IF NOT EXISTS audit_log_user ON audit_log (user, seq);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#;

type Ack = oneshot::Sender<Result<u64, AuditError>>;

enum Job {
    Append {
        record: Box<AuditRecord>,
        ack: Option<Ack>,
    },
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, AuditError>>),
}

/// How checkpoints are made.
pub struct AuditOptions {
    /// The signing key; without one no checkpoints are written (the chain still is).
    pub signer: Option<Arc<Signer>>,
    /// The checkpoint file (JSON lines).
    pub checkpoints_path: PathBuf,
    /// Checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or once this much time has passed since the last one and records were written.
    pub checkpoint_interval: Duration,
}

impl AuditOptions {
    /// The checkpoint file conventionally beside a log: `<log>.checkpoints.jsonl`.
    pub fn checkpoints_beside(log: &Path) -> PathBuf {
        let mut name = log.file_name().unwrap_or_default().to_os_string();
        name.push(".checkpoints.jsonl");
        log.with_file_name(name)
    }
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
    /// Waits until every queued record is committed (and the final checkpoint written) and the
    /// thread has exited. Call after the last [`AuditLog`] clone is dropped.
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
    // A larger page cache and rarer WAL checkpoints: the writer appends in large batches.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.execute_batch(SCHEMA)?;
    // Logs created before federated queries lack the sub-query column: add it (existing rows
    // get `[]`, which is what they hashed as).
    let has_sub_queries: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('audit_log') WHERE name = 'sub_queries'",
        [],
        |r| r.get(0),
    )?;
    if !has_sub_queries {
        conn.execute_batch(
            "ALTER TABLE audit_log ADD COLUMN sub_queries TEXT NOT NULL DEFAULT '[]'",
        )?;
    }
    Ok(conn)
}

/// Opens the log read-only (for queries, exports and verification).
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

impl AuditLog {
    /// Opens (creating if needed) the log at `path`, without checkpoints.
    pub fn open(path: &Path) -> Result<(AuditLog, AuditWriter), AuditError> {
        Self::open_with(
            path,
            AuditOptions {
                signer: None,
                checkpoints_path: AuditOptions::checkpoints_beside(path),
                checkpoint_every: u64::MAX,
                checkpoint_interval: Duration::MAX,
            },
        )
    }

    /// Opens (creating if needed) the log at `path` and starts its writer thread.
    pub fn open_with(
        path: &Path,
        options: AuditOptions,
    ) -> Result<(AuditLog, AuditWriter), AuditError> {
        let conn = open_writer(path)?;
        let head: (u64, String) = match conn.query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        ) {
            Ok(h) => h,
            Err(rusqlite::Error::QueryReturnedNoRows) => (0, GENESIS.to_string()),
            Err(e) => return Err(e.into()),
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer_loop(conn, rx, flag, head, options))
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
            .try_send(Job::Append {
                record: Box::new(record),
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
        if let Err(e) = self.tx.try_send(Job::Append {
            record: Box::new(record),
            ack: None,
        }) {
            tracing::error!(error = %e, "audit record could not be queued");
        }
    }

    /// Makes a signed checkpoint of the current head now (`None` without a signing key or
    /// records). Exports carry it, so a reader can verify what they were given.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Checkpoint(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Whether the last commit succeeded. `/readyz` reports unready when it did not.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }
}

struct Head {
    seq: u64,
    hash: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    healthy: Arc<AtomicBool>,
    (seq, hash): (u64, String),
    options: AuditOptions,
) {
    let mut head = Head {
        seq,
        hash,
        since_checkpoint: 0,
        last_checkpoint: Instant::now(),
    };
    let mut batch: Vec<(AuditRecord, Option<Ack>)> = Vec::with_capacity(MAX_BATCH);
    let mut checkpoint_requests = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append { record, ack } => batch.push((*record, ack)),
                Job::Checkpoint(ack) => checkpoint_requests.push(ack),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let result = write_batch(&mut conn, &mut batch, &head);
            healthy.store(result.is_ok(), Ordering::Relaxed);
            match result {
                Ok(()) => {
                    if let Some((last, _)) = batch.last() {
                        head.seq = last.seq;
                        head.hash = last.hash.clone();
                    }
                    head.since_checkpoint += batch.len() as u64;
                    for (r, ack) in batch.drain(..) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(r.seq));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "audit commit failed");
                    for (_, ack) in batch.drain(..) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        let due = head.since_checkpoint >= options.checkpoint_every
            || (head.since_checkpoint > 0
                && head.last_checkpoint.elapsed() >= options.checkpoint_interval);
        if due || !checkpoint_requests.is_empty() {
            let cp = make_checkpoint(&options, &mut head);
            for ack in checkpoint_requests.drain(..) {
                let _ = ack.send(cp.clone());
            }
        }
    }
    if head.since_checkpoint > 0 {
        let _ = make_checkpoint(&options, &mut head);
    }
}

fn make_checkpoint(
    options: &AuditOptions,
    head: &mut Head,
) -> Result<Option<Checkpoint>, AuditError> {
    let Some(signer) = &options.signer else {
        return Ok(None);
    };
    if head.seq == 0 {
        return Ok(None);
    }
    let cp = signer.checkpoint(head.seq, &head.hash);
    append_checkpoint(&options.checkpoints_path, &cp)
        .inspect_err(|e| tracing::error!(error = %e, "audit checkpoint not written"))?;
    head.since_checkpoint = 0;
    head.last_checkpoint = Instant::now();
    Ok(Some(cp))
}

/// Chains and writes the batch in one transaction. On success every record carries its
/// sequence number and hashes; on failure the head does not move.
fn write_batch(
    conn: &mut Connection,
    batch: &mut [(AuditRecord, Option<Ack>)],
    head: &Head,
) -> Result<(), AuditError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit_log (seq, ts, event, request_id, session_id, user, tenant, groups,
                auth_method, client_addr, user_agent, connection, sql, rewritten_sql, params,
                tables, columns, policy_version, decision, code, reason, outcome, rows, bytes,
                duration_ms, error, warehouse_query_id, prev_hash, hash, sub_queries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)",
        )?;
        let mut prev = head.hash.clone();
        for (i, (r, _)) in batch.iter_mut().enumerate() {
            r.seq = head.seq + 1 + i as u64;
            r.prev_hash = prev;
            r.hash = record_hash(&r.prev_hash, r);
            prev = r.hash.clone();
            let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
            stmt.execute(params![
                r.seq as i64,
                r.ts,
                r.event.as_str(),
                r.request_id,
                r.session_id,
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
                json(&r.columns),
                r.policy_version,
                r.decision.as_str(),
                r.code,
                r.reason,
                r.outcome,
                r.rows.map(|v| v as i64),
                r.bytes.map(|v| v as i64),
                r.duration_ms,
                r.error,
                r.warehouse_query_id,
                r.prev_hash,
                r.hash,
                serde_json::to_string(&r.sub_queries).unwrap_or_else(|_| "[]".into()),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The columns of `audit_log` in record order, for readers.
pub(crate) const SELECT_COLUMNS: &str = "seq, ts, event, request_id, session_id, user, tenant, \
    groups, auth_method, client_addr, user_agent, connection, sql, rewritten_sql, params, tables, \
    columns, policy_version, decision, code, reason, outcome, rows, bytes, duration_ms, error, \
    warehouse_query_id, prev_hash, hash, sub_queries";

/// Maps a row selected with [`SELECT_COLUMNS`].
pub(crate) fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    let event: String = row.get(2)?;
    let decision: String = row.get(18)?;
    Ok(AuditRecord {
        seq: row.get::<_, i64>(0)? as u64,
        ts: row.get(1)?,
        event: Event::parse(&event).unwrap_or(Event::QueryDenied),
        request_id: row.get(3)?,
        session_id: row.get(4)?,
        user: row.get(5)?,
        tenant: row.get(6)?,
        groups: list(row.get(7)?),
        auth_method: row.get(8)?,
        client_addr: row.get(9)?,
        user_agent: row.get(10)?,
        connection: row.get(11)?,
        sql: row.get(12)?,
        rewritten_sql: row.get(13)?,
        params: list(row.get(14)?),
        tables: list(row.get(15)?),
        columns: list(row.get(16)?),
        policy_version: row.get(17)?,
        decision: if decision == "allow" {
            Decision::Allow
        } else {
            Decision::Deny
        },
        code: row.get(19)?,
        reason: row.get(20)?,
        outcome: row.get(21)?,
        rows: row.get::<_, Option<i64>>(22)?.map(|v| v as u64),
        bytes: row.get::<_, Option<i64>>(23)?.map(|v| v as u64),
        duration_ms: row.get(24)?,
        error: row.get(25)?,
        warehouse_query_id: row.get(26)?,
        prev_hash: row.get(27)?,
        hash: row.get(28)?,
        sub_queries: serde_json::from_str(&row.get::<_, String>(29)?).unwrap_or_default(),
    })
}

/// Reads every record in sequence order.
pub fn read_all(conn: &Connection) -> Result<Vec<AuditRecord>, AuditError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SELECT_COLUMNS} FROM audit_log ORDER BY seq"
    ))?;
    let rows = stmt.query_map([], record_from_row)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(AuditError::from)
}
