//! Retention: seal the oldest records into an archive segment (its own SQLite file carrying its
//! final signed checkpoint) and remove them from the live log, leaving an anchor (the sealed
//! head's sequence number and hash) from which the live chain continues. Verification of what
//! remains still works, and each segment verifies on its own and links to the next.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::chain::{Checkpoint, GENESIS, Signer, append_checkpoint, verify_records};
use crate::writer::{SCHEMA, SELECT_COLUMNS, record_from_row, select_columns};
use crate::{AuditError, VerifyReport};

/// The anchor table in the live log and the seal table in a segment.
pub(crate) const ARCHIVE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_anchor (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    segment    TEXT NOT NULL,
    checkpoint TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_anchor_no_update BEFORE UPDATE ON audit_anchor
BEGIN SELECT RAISE(ABORT, 'audit_anchor is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_anchor_no_delete BEFORE DELETE ON audit_anchor
BEGIN SELECT RAISE(ABORT, 'audit_anchor is append-only'); END;
"#;

const SEAL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_seal (checkpoint TEXT NOT NULL);";

/// One sealed segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its file.
    pub path: PathBuf,
    /// First sequence number in it.
    pub first: u64,
    /// Last sequence number in it.
    pub last: u64,
    /// The signed checkpoint of its last record.
    pub checkpoint: Checkpoint,
}

/// The live log's latest anchor `(seq, hash, signed checkpoint)`, if records were archived.
pub fn anchor(conn: &Connection) -> Result<Option<(u64, String, String)>, AuditError> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_anchor'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT seq, hash, checkpoint FROM audit_anchor ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Seals every record up to `upto_seq` into a segment file under `archive_dir`, signs its final
/// checkpoint, and removes those records from the live log. The live log must verify first.
pub fn archive(
    log: &Path,
    checkpoints: &Path,
    archive_dir: &Path,
    signer: &Signer,
    upto_seq: u64,
) -> Result<Segment, AuditError> {
    let report = crate::verify(log, checkpoints, &signer.public_key())?;
    if let Some(seq) = report.first_bad_seq {
        return Err(AuditError::Storage(format!(
            "the log is not intact at {seq}: nothing archived"
        )));
    }
    let conn = Connection::open(log)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Never seal an attempt whose completion is not in the log yet (a query running now, or
    // one lost with a process not restarted since, which the next start records as `unknown`):
    // sealed, it would stay unanswered for good.
    let mut open = crate::chain::Unanswered::default();
    {
        let mut stmt = conn.prepare(
            "SELECT seq, event, request_id, user, tenant, session_id FROM audit_log \
             WHERE event IN ('query_attempt', 'query_completion') ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, event): (i64, String) = (r.get(0)?, r.get(1)?);
            let (id, user, tenant, session): (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
            if let Some(event) = crate::Event::parse(&event) {
                let who = crate::chain::PairKey {
                    request_id: &id,
                    user: user.as_deref(),
                    tenant: tenant.as_deref(),
                    session_id: session.as_deref(),
                };
                open.see(event, who, || seq as u64);
            }
        }
    }
    if let Some(first) = open.into_items().min()
        && first <= upto_seq
    {
        return Err(AuditError::Storage(format!(
            "record {first} is a query attempt without its completion yet (running, or lost \
             with a process that has not been restarted since): archive up to {} at most",
            first - 1
        )));
    }
    conn.execute_batch(ARCHIVE_SCHEMA)?;
    let (first, last_hash): (Option<i64>, Option<String>) = conn.query_row(
        "SELECT (SELECT MIN(seq) FROM audit_log), (SELECT hash FROM audit_log WHERE seq = ?1)",
        [upto_seq as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(first), Some(last_hash)) = (first, last_hash) else {
        return Err(AuditError::Storage(format!(
            "no record {upto_seq} in the live log"
        )));
    };
    let first = first as u64;
    std::fs::create_dir_all(archive_dir).map_err(|e| AuditError::Storage(e.to_string()))?;
    let path = archive_dir.join(format!("audit-{first:012}-{upto_seq:012}.sqlite"));
    let checkpoint = signer.checkpoint(upto_seq, &last_hash);
    {
        let seg = Connection::open(&path)?;
        seg.pragma_update(None, "synchronous", "FULL")?;
        seg.execute_batch(SCHEMA)?;
        seg.execute_batch(SEAL_SCHEMA)?;
        let json =
            serde_json::to_string(&checkpoint).map_err(|e| AuditError::Storage(e.to_string()))?;
        seg.execute("INSERT INTO audit_seal (checkpoint) VALUES (?1)", [json])?;
    }
    let columns = select_columns(&conn)?;
    conn.execute("ATTACH DATABASE ?1 AS seg", [path.to_string_lossy()])?;
    conn.execute(
        &format!("INSERT INTO seg.audit_log ({SELECT_COLUMNS}) SELECT {columns} FROM main.audit_log WHERE seq <= ?1"),
        [upto_seq as i64],
    )?;
    conn.execute("DETACH DATABASE seg", [])?;
    append_checkpoint(checkpoints, &checkpoint)?;
    // The only deletion the log ever sees: sealed records, in one transaction with their anchor.
    let json =
        serde_json::to_string(&checkpoint).map_err(|e| AuditError::Storage(e.to_string()))?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<(), AuditError> {
        conn.execute(
            "INSERT INTO audit_anchor (seq, hash, segment, checkpoint) VALUES (?1, ?2, ?3, ?4)",
            params![
                upto_seq as i64,
                last_hash,
                path.file_name().map(|f| f.to_string_lossy().to_string()),
                json
            ],
        )?;
        conn.execute_batch("DROP TRIGGER audit_log_no_delete;")?;
        conn.execute("DELETE FROM audit_log WHERE seq <= ?1", [upto_seq as i64])?;
        conn.execute_batch(
            "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(Segment {
        path,
        first,
        last: upto_seq,
        checkpoint,
    })
}

/// Verifies every segment under `archive_dir` (each chain, its seal, the links between them)
/// and returns the last sealed `(seq, hash)` for verifying the live log.
pub fn verify_segments(
    archive_dir: &Path,
    public_key: &[u8],
) -> Result<(VerifyReport, Option<(u64, String)>), AuditError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(archive_dir) {
        Ok(d) => d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
            .collect(),
        Err(_) => vec![],
    };
    files.sort();
    let mut report = VerifyReport::default();
    let mut prev: Option<(u64, String)> = None;
    for f in files {
        let conn = Connection::open_with_flags(&f, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let columns = select_columns(&conn)?;
        let mut stmt = conn.prepare(&format!("SELECT {columns} FROM audit_log ORDER BY seq"))?;
        let records = stmt
            .query_map([], record_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let seal: String = conn.query_row("SELECT checkpoint FROM audit_seal", [], |r| r.get(0))?;
        let seal: Checkpoint =
            serde_json::from_str(&seal).map_err(|e| AuditError::Storage(e.to_string()))?;
        let anchor = prev.clone().or_else(|| {
            // The first segment starts the chain: genesis before its first record.
            records.first().map(|r| (r.seq - 1, GENESIS.to_string()))
        });
        let r = verify_records(
            &records,
            std::slice::from_ref(&seal),
            public_key,
            anchor.filter(|(s, _)| *s > 0),
        );
        report.records += r.records;
        report.checkpoints += 1;
        report.unknown_outcomes += r.unknown_outcomes;
        if r.first_bad_seq.is_some() {
            return Ok((
                VerifyReport {
                    first_bad_seq: r.first_bad_seq,
                    problem: r.problem.map(|p| format!("{}: {p}", f.display())),
                    ..report
                },
                None,
            ));
        }
        if records.last().map(|r| r.seq) != Some(seal.seq) {
            return Ok((
                VerifyReport {
                    first_bad_seq: Some(seal.seq),
                    problem: Some(format!(
                        "{}: its seal does not match its last record",
                        f.display()
                    )),
                    ..report
                },
                None,
            ));
        }
        prev = Some((seal.seq, seal.head_hash.clone()));
    }
    Ok((report, prev))
}
