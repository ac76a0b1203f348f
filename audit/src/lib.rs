//! sluice-audit: the append-only audit log.
//!
//! Records are appended by one dedicated writer thread that batches whatever is queued into a
//! single SQLite transaction (group commit), so durability costs one fsync per batch rather than
//! per record. [`AuditLog::append`] resolves only once its record is committed: the query path
//! awaits the attempt record before the warehouse sees the query.

pub mod chain;
mod error;
pub mod query;
mod record;
mod writer;

pub use chain::{Checkpoint, Signer, VerifyReport};
pub use error::AuditError;
pub use record::{AuditRecord, Decision, Event};
pub use writer::{AuditLog, AuditOptions, AuditWriter, open_read_only, read_all};

/// Verifies the log at `log` and its checkpoint file against `public_key`.
pub fn verify(
    log: &std::path::Path,
    checkpoints: &std::path::Path,
    public_key: &[u8],
) -> Result<VerifyReport, AuditError> {
    let conn = open_read_only(log)?;
    let records = read_all(&conn)?;
    let cps = chain::read_checkpoints(checkpoints)?;
    Ok(chain::verify_records(&records, &cps, public_key, None))
}
