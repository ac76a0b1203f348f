//! The group-commit writer and the SQLite schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

use crate::chain::{
    Checkpoint, GENESIS, PairKey, Signer, Unanswered, append_checkpoint, record_hash,
};
use crate::{AuditError, AuditRecord, Decision, Event};

/// Records waiting for the writer before appends fail with [`AuditError::Backpressure`].
const QUEUE_CAPACITY: usize = 65_536;
/// Most records committed in one transaction.
const MAX_BATCH: usize = 4_096;
/// Page cache of the writer connection, KiB. Small on purpose: SQLite walks the whole page
/// cache's hash table at the end of every write transaction (`pcache1Truncate`), so a large
/// cache makes every commit dearer (measured: 4 % of the daemon's CPU at one query at a time
/// with 64 MiB); appends touch only the B-trees' right edges, which a few MiB hold.
const CACHE_KIB: i64 = 4 * 1024;
/// WAL pages after which the writer checkpoints, between two of its own transactions (SQLite's
/// default is 1,000). Only a checkpoint there can finish with nothing new behind it, which is
/// what lets the next commit restart the WAL from its beginning: the checkpointer below, racing
/// a writer that never stops, cannot (measured: left to it alone, with this threshold raised, the
/// WAL kept growing and one query at a time lost a quarter of its rate to fsyncs of a file that
/// keeps extending).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// How often the checkpointer copies what the writer committed back into the database file,
/// beside the writer and passively (never blocking the writer or a reader). The writer's own
/// checkpoint then finds most frames already copied: the commit that runs it, and the queries
/// waiting for that commit, stall for less (measured: attempt p99 at 512 in flight 80 -> 53 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);
/// How long a connection waits on a lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Longest a record nobody waits for (a query's completion) is held back so that it shares an
/// fsync with the next record someone does wait for (the next query's attempt), instead of
/// costing one of its own that the next attempt would queue behind.
const LAZY_COMMIT_WINDOW: Duration = Duration::from_millis(5);

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
    sub_queries        TEXT NOT NULL DEFAULT '[]',
    front_door         TEXT,
    row_filters        TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_user ON audit_log (user, seq);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_settled (
    seq INTEGER PRIMARY KEY,
    ts  TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_settled_no_update BEFORE UPDATE ON audit_settled
BEGIN SELECT RAISE(ABORT, 'audit_settled is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_settled_no_delete BEFORE DELETE ON audit_settled
BEGIN SELECT RAISE(ABORT, 'audit_settled is append-only'); END;
"#;

/// Logs written before the hot table lost its request-id index had one: an index is not part of
/// the chain, so dropping it changes no record. (Request ids are random UUIDs: every record
/// landed on a different leaf of that index, so a group commit of n records wrote ~n index pages
/// to the WAL; without it the writer does ~2x the records per second. Nothing reads by request
/// id but recovery, which now scans only the tail since the last settled head.)
const DROP_RANDOM_KEY_INDEX: &str = "DROP INDEX IF EXISTS audit_log_request;";

type Ack = oneshot::Sender<Result<u64, AuditError>>;

enum Job {
    Append {
        record: Box<AuditRecord>,
        ack: Option<Ack>,
        /// Nobody waits for it: it may wait (up to [`LAZY_COMMIT_WINDOW`]) to share the commit
        /// of the next record someone does wait for.
        lazy: bool,
    },
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, AuditError>>),
    /// Acknowledged once everything queued before it is committed.
    Barrier(oneshot::Sender<()>),
}

/// The outcome of [`LOST_COMPLETION`] recovery, written at open for an attempt whose completion
/// never became durable (the process stopped first).
pub const OUTCOME_UNKNOWN: &str = "unknown";
/// The code of a completion written by recovery.
pub const LOST_COMPLETION: &str = "completion_lost";

/// A record queued for commit: awaiting it waits until it is durable (its sequence number).
pub struct Pending(oneshot::Receiver<Result<u64, AuditError>>);

impl std::future::Future for Pending {
    type Output = Result<u64, AuditError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AuditError::Closed)))
    }
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
    // A modest page cache and rarer WAL checkpoints: the writer appends in large batches.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(DROP_RANDOM_KEY_INDEX)?;
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
    // Logs created before the PostgreSQL-wire front door lack its column (existing rows get
    // NULL, which they hashed as: absent).
    if !has_column(&conn, "front_door")? {
        conn.execute_batch("ALTER TABLE audit_log ADD COLUMN front_door TEXT")?;
    }
    // And logs created before attribute row filters lack theirs (NULL: none, as hashed).
    if !has_column(&conn, "row_filters")? {
        conn.execute_batch("ALTER TABLE audit_log ADD COLUMN row_filters TEXT")?;
    }
    Ok(conn)
}

/// Takes the exclusive lock `<log>.lock` (an advisory `flock`, released by the kernel when the
/// process ends, however it ends), held for the writer's lifetime. Readers never take it.
fn lock_writer(path: &Path) -> Result<std::fs::File, AuditError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuditError::Storage(format!("{}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Storage(format!(
            "the audit log {} is already open for writing by another process or writer \
             (lock {} held): one writer per log",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::Storage(format!(
            "{}: cannot lock: {e}",
            lock_path.display()
        ))),
    }
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
        // One writer per log: a second one (an overlapping restart, two daemons on one data
        // directory) would fork the chain and take the first one's running queries for lost.
        let lock = lock_writer(path)?;
        let conn = open_writer(path)?;
        let head: (u64, String) = match conn.query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        ) {
            Ok(h) => h,
            // Empty: new, or every record archived (the chain goes on from the anchor).
            Err(rusqlite::Error::QueryReturnedNoRows) => crate::archive::anchor(&conn)?
                .map(|(seq, hash, _)| (seq, hash))
                .unwrap_or((0, GENESIS.to_string())),
            Err(e) => return Err(e.into()),
        };
        let mut conn = conn;
        let (head, recovered) = recover_lost_completions(&mut conn, head)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let db = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let checkpointer = Checkpointer::start(&db);
                writer_loop(conn, rx, flag, head, recovered, options);
                drop(checkpointer);
                drop(lock);
            })
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
        self.submit(record)?.await
    }

    /// Queues a record for the next group commit and returns at once; the [`Pending`] resolves
    /// when it is durable. Records are committed in the order they were queued.
    pub fn submit(&self, record: AuditRecord) -> Result<Pending, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .try_send(Job::Append {
                record: Box::new(record),
                ack: Some(ack),
                lazy: false,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Backpressure,
                mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
            })?;
        Ok(Pending(done))
    }

    /// Waits until every record queued before this call is committed (readers of the log that
    /// must see what this process has written so far: audit queries and exports).
    pub async fn barrier(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Barrier(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)
    }

    /// Queues a record without waiting (for paths that cannot await, such as a dropped
    /// response). Failures are logged by the writer.
    pub fn append_detached(&self, record: AuditRecord) {
        if let Err(e) = self.append_lazy(record) {
            tracing::error!(error = %e, "audit record could not be queued");
        }
    }

    /// Queues a record nobody waits for (a query's completion): it is committed with the next
    /// record someone waits for, or within a few milliseconds. A commit that fails is logged by
    /// the writer.
    pub fn append_lazy(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.tx
            .try_send(Job::Append {
                record: Box::new(record),
                ack: None,
                lazy: true,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Backpressure,
                mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
            })
    }

    /// [`AuditLog::append_lazy`], but when the queue is full it waits for room instead of
    /// failing (a query's completion must not be dropped because the writer is behind; the
    /// caller bounds the wait).
    pub async fn queue_lazy(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.tx
            .send(Job::Append {
                record: Box::new(record),
                ack: None,
                lazy: true,
            })
            .await
            .map_err(|_| AuditError::Closed)
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

/// The thread that checkpoints the WAL beside the writer (see [`CHECKPOINT_EVERY`]). Dropping
/// it stops and joins the thread.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts it; `None` (logged) if it cannot, in which case the writer's own automatic
    /// checkpoint still bounds the WAL.
    fn start(db: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open(db).and_then(|c| {
            c.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpointer not started");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-audit-ckpt".into())
            .spawn(move || {
                // A passive checkpoint with nothing new to copy only reads the WAL index.
                let mut failing = false;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(CHECKPOINT_EVERY);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let ran = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    match ran {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "audit checkpoint failed");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            });
        match thread {
            Ok(t) => Some(Checkpointer {
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpointer not started");
                None
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
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
    recovered: u64,
    options: AuditOptions,
) {
    let mut head = Head {
        seq,
        hash,
        // What recovery wrote is covered by the next checkpoint like anything else.
        since_checkpoint: recovered,
        last_checkpoint: Instant::now(),
    };
    let mut batch: Vec<(AuditRecord, Option<Ack>)> = Vec::with_capacity(MAX_BATCH);
    let mut checkpoint_requests = Vec::new();
    let mut barriers = Vec::new();
    // Only for waiting on the queue with a deadline (the lazy window).
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .inspect_err(
            |e| tracing::warn!(error = %e, "audit writer: no timer, lazy records commit at once"),
        )
        .ok();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        // Whether someone waits for this batch (else it may wait for company).
        let mut urgent = false;
        let mut lazy_since: Option<Instant> = None;
        loop {
            while let Some(job) = next.take() {
                match job {
                    Job::Append { record, ack, lazy } => {
                        urgent |= !lazy;
                        if lazy {
                            lazy_since.get_or_insert_with(Instant::now);
                        }
                        batch.push((*record, ack));
                    }
                    Job::Checkpoint(ack) => {
                        urgent = true;
                        checkpoint_requests.push(ack);
                    }
                    Job::Barrier(ack) => {
                        urgent = true;
                        barriers.push(ack);
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let waited = lazy_since.map_or(Duration::MAX, |t| t.elapsed());
            if urgent || batch.len() >= MAX_BATCH || waited >= LAZY_COMMIT_WINDOW {
                break;
            }
            // Only records nobody waits for: hold them briefly for the next one someone does,
            // asleep until it comes or the window ends (without a timer, commit them now).
            let Some(timer) = &timer else { break };
            let rest = LAZY_COMMIT_WINDOW.saturating_sub(waited);
            match timer.block_on(async { tokio::time::timeout(rest, rx.recv()).await }) {
                Ok(Some(job)) => next = Some(job),
                Ok(None) | Err(_) => break,
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
        for ack in barriers.drain(..) {
            let _ = ack.send(());
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

/// Writes, for every query attempt whose completion is not in the log, a completion with
/// outcome [`OUTCOME_UNKNOWN`]: the process stopped (crash, SIGKILL, power loss) before that
/// completion was durable, and nobody can now say how the query ended. Runs when the writer
/// opens the log, before anything else is appended, so nothing is in flight; the recovery
/// records are chained like any other. Returns the new head.
///
/// Only the tail is read: after each recovery the head is recorded in `audit_settled` (every
/// attempt up to it has its completion), so the next one starts there; a log without that
/// table (written before it existed) is read from the start once. Tampering with
/// `audit_settled` can only make recovery skip attempts, which `verify` still counts as
/// unanswered: the chain, not this table, is the record.
fn recover_lost_completions(
    conn: &mut Connection,
    (seq, hash): (u64, String),
) -> Result<((u64, String), u64), AuditError> {
    // A mark past the head is no record's position (a row inserted by hand): ignored.
    let settled: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM audit_settled WHERE seq <= ?1",
        [seq as i64],
        |r| r.get(0),
    )?;
    let mut open = Unanswered::default();
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT {SELECT_COLUMNS} FROM audit_log WHERE seq > ?1 \
             AND event IN ('query_attempt', 'query_completion') ORDER BY seq"
        ))?;
        for r in stmt.query_map([settled], record_from_row)? {
            let r = r?;
            // The key borrows the record the attempt keeps: copy the few fields it needs.
            let (id, user, tenant, session) = (
                r.request_id.clone(),
                r.user.clone(),
                r.tenant.clone(),
                r.session_id.clone(),
            );
            let who = PairKey {
                request_id: &id,
                user: user.as_deref(),
                tenant: tenant.as_deref(),
                session_id: session.as_deref(),
            };
            open.see(r.event, who, || r);
        }
    }
    let mut lost: Vec<AuditRecord> = open.into_items().collect();
    lost.sort_by_key(|r| r.seq);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let recovered = lost.len() as u64;
    let head = if lost.is_empty() {
        (seq, hash)
    } else {
        let mut batch: Vec<(AuditRecord, Option<Ack>)> = lost
            .into_iter()
            .map(|attempt| {
                let mut r = attempt;
                r.attempt_to_completion(&now);
                (r, None)
            })
            .collect();
        tracing::warn!(
            queries = batch.len(),
            "audit: queries whose completion was lost when the process stopped are recorded \
             with outcome unknown"
        );
        let head = Head {
            seq,
            hash,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        };
        write_batch(conn, &mut batch, &head)?;
        batch
            .last()
            .map(|(r, _)| (r.seq, r.hash.clone()))
            .unwrap_or((head.seq, head.hash))
    };
    if head.0 as i64 > settled {
        conn.execute(
            "INSERT OR IGNORE INTO audit_settled (seq, ts) VALUES (?1, ?2)",
            params![head.0 as i64, now],
        )?;
    }
    Ok((head, recovered))
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
                duration_ms, error, warehouse_query_id, prev_hash, hash, sub_queries, front_door,
                row_filters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)",
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
                r.front_door,
                (!r.row_filters.is_empty())
                    .then(|| serde_json::to_string(&r.row_filters).unwrap_or_default()),
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
    warehouse_query_id, prev_hash, hash, sub_queries, front_door, row_filters";

/// [`SELECT_COLUMNS`] for a table that may predate the `front_door` or `row_filters` column
/// (a sealed archive segment is read-only: it is not migrated).
pub(crate) fn select_columns(conn: &Connection) -> Result<String, AuditError> {
    let mut columns = SELECT_COLUMNS.to_string();
    for c in ["front_door", "row_filters"] {
        if !has_column(conn, c)? {
            columns = columns.replace(&format!(", {c}"), &format!(", NULL AS {c}"));
        }
    }
    Ok(columns)
}

fn has_column(conn: &Connection, name: &str) -> Result<bool, AuditError> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('audit_log') WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

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
        front_door: row.get(30)?,
        row_filters: row
            .get::<_, Option<String>>(31)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
    })
}

/// Reads every record in sequence order.
pub fn read_all(conn: &Connection) -> Result<Vec<AuditRecord>, AuditError> {
    let columns = select_columns(conn)?;
    let mut stmt = conn.prepare(&format!("SELECT {columns} FROM audit_log ORDER BY seq"))?;
    let rows = stmt.query_map([], record_from_row)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(AuditError::from)
}

/// Reads every record once every query attempt has its completion, or after `within` (whatever
/// the log holds then). Completions are group-committed behind the answers, so a reader that
/// wants the records of queries whose answers it has seen end (tests, scripts) waits a moment.
pub fn read_settled(conn: &Connection, within: Duration) -> Result<Vec<AuditRecord>, AuditError> {
    let deadline = Instant::now() + within;
    loop {
        let records = read_all(conn)?;
        let mut open = Unanswered::default();
        for r in &records {
            open.see(r.event, PairKey::of(r), || ());
        }
        if open.len() == 0 || Instant::now() >= deadline {
            return Ok(records);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
