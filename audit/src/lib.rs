//! sluice-audit: the append-only audit log.
//!
//! Records are appended by one dedicated writer thread that batches whatever is queued into a
//! single SQLite transaction (group commit), so durability costs one fsync per batch rather than
//! per record. [`AuditLog::append`] resolves only once its record is committed: the query path
//! awaits the attempt record before the warehouse sees the query.

mod error;
mod record;
mod writer;

pub use error::AuditError;
pub use record::{AuditRecord, Decision, Event};
pub use writer::{AuditLog, AuditWriter, open_read_only, read_all};
