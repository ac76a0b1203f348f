//! sluice-audit: the append-only audit log.
//!
//! Records are appended by one dedicated writer thread that batches whatever is queued into a
//! single SQLite transaction (group commit), so durability costs one fsync per batch rather than
//! per record. [`AuditLog::append`] resolves only once its record is committed: the query path
//! awaits the attempt record before the warehouse sees the query.

pub mod archive;
pub mod chain;
mod error;
pub mod query;
mod record;
mod writer;

pub use chain::{Checkpoint, Signer, VerifyReport};
pub use error::AuditError;
pub use record::{AuditRecord, Decision, Event, RowFilterUse, SubQuery};
pub use writer::{
    AuditLog, AuditOptions, AuditWriter, LOST_COMPLETION, OUTCOME_UNKNOWN, Pending, open_read_only,
    read_all, read_settled,
};

/// Verifies the live log at `log` and its checkpoint file against `public_key`. If older records
/// were archived, the chain starts from the anchor, which must carry a valid signed checkpoint.
pub fn verify(
    log: &std::path::Path,
    checkpoints: &std::path::Path,
    public_key: &[u8],
) -> Result<VerifyReport, AuditError> {
    let conn = open_read_only(log)?;
    let records = read_all(&conn)?;
    let cps = chain::read_checkpoints(checkpoints)?;
    let anchor = match archive::anchor(&conn)? {
        None => None,
        Some((seq, hash, cp)) => {
            let signed = serde_json::from_str::<Checkpoint>(&cp)
                .is_ok_and(|c| c.seq == seq && c.head_hash == hash && c.verify(public_key));
            if !signed {
                return Ok(VerifyReport {
                    records: records.len() as u64,
                    checkpoints: cps.len() as u64,
                    first_bad_seq: Some(seq + 1),
                    problem: Some(format!(
                        "the archive anchor at {seq} is not signed: records may have been removed"
                    )),
                    ..VerifyReport::default()
                });
            }
            Some((seq, hash))
        }
    };
    Ok(chain::verify_records(&records, &cps, public_key, anchor))
}

/// [`verify`] plus every archive segment under `archive_dir`, and the link from the last
/// segment to the live log.
pub fn verify_all(
    log: &std::path::Path,
    checkpoints: &std::path::Path,
    archive_dir: &std::path::Path,
    public_key: &[u8],
) -> Result<VerifyReport, AuditError> {
    let (segments, sealed) = archive::verify_segments(archive_dir, public_key)?;
    if !segments.ok() {
        return Ok(segments);
    }
    let mut live = verify(log, checkpoints, public_key)?;
    let anchor = archive::anchor(&open_read_only(log)?)?.map(|(s, h, _)| (s, h));
    if live.ok() && anchor != sealed {
        let seq = anchor.as_ref().map(|(s, _)| *s).unwrap_or(0);
        live.first_bad_seq = Some(seq + 1);
        live.problem = Some("the archive segments do not link to the live log".into());
    }
    live.records += segments.records;
    live.unknown_outcomes += segments.unknown_outcomes;
    live.checkpoints += segments.checkpoints;
    Ok(live)
}
