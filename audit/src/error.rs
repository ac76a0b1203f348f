//! Audit errors.

/// Why the audit log could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The SQLite file could not be opened, written or read.
    #[error("audit storage error: {0}")]
    Storage(String),
    /// The writer is not running (shut down, or its thread died).
    #[error("the audit writer is not running")]
    Closed,
    /// The queue of records waiting for the writer is full.
    #[error("the audit queue is full")]
    Backpressure,
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError::Storage(e.to_string())
    }
}
