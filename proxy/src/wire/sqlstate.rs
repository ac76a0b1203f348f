//! Errors as PostgreSQL clients read them: a SQLSTATE, the same message as the HTTP door, and
//! sluice's own code in the detail (`sluice: policy_denied (table_not_granted)`), so a client
//! and the audit log name one refusal alike.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::{Error, Kind};

/// The SQLSTATE of an error.
pub fn sqlstate(e: &Error) -> &'static str {
    match (e.kind, e.code, e.reason) {
        (_, "sql_parse_error" | "multiple_statements", _) => "42601",
        (_, _, Some("unknown_relation")) => "42P01",
        (_, "query_too_complex", _) => "54001",
        (_, "read_only", _) => "25006",
        (_, "resource_exhausted", _) => "53400",
        (_, "query_cancelled", _) => "57014",
        (_, "unknown_setting", _) => "42704",
        (_, "in_failed_transaction", _) => "25P02",
        (_, "no_transaction", _) => "25P01",
        (_, "unknown_savepoint", _) => "3B001",
        (_, "unknown_database", _) => "3D000",
        (_, "tls_required", _) => "28000",
        (_, "not_supported", _) => "0A000",
        (_, "invalid_query", _) => "42000",
        (Kind::Policy | Kind::Forbidden, _, _) => "42501",
        (Kind::Request, _, _) => "22023",
        (Kind::Auth, _, _) => "28P01",
        (Kind::RateLimit, _, _) => "53400",
        (Kind::Credential, _, _) => "28000",
        (Kind::Warehouse, "warehouse_unavailable", _) => "08006",
        (Kind::Warehouse, _, _) => e
            .extra
            .as_ref()
            .and_then(|x| x.warehouse_code.as_deref())
            .and_then(as_sqlstate)
            .unwrap_or("XX000"),
        (Kind::Audit, _, _) => "58000",
        (Kind::Unavailable, _, _) => "57P03",
        (Kind::Timeout | Kind::ClientGone, _, _) => "57014",
        (Kind::Internal, _, _) => "XX000",
    }
}

/// A warehouse's code when it is a SQLSTATE (five digits or capital letters), from a fixed
/// list of classes a client acts on: the text itself comes from the warehouse, so only a
/// well-formed value is passed on.
fn as_sqlstate(code: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "22012", "22003", "22P02", "22007", "22008", "22001", "42703", "42P01", "42883", "42804",
        "42501", "57014", "53100", "53200", "53300", "40001", "40P01", "25006", "0A000",
    ];
    KNOWN.iter().copied().find(|k| *k == code)
}

/// The error message the client gets.
pub fn error_info(e: &Error, severity: &str) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        severity.to_string(),
        sqlstate(e).to_string(),
        e.message.clone(),
    );
    info.detail = Some(match e.reason {
        Some(r) => format!("sluice: {} ({r})", e.code),
        None => format!("sluice: {}", e.code),
    });
    if let Some(x) = &e.extra {
        if let Some(url) = &x.authorize_url {
            info.hint = Some(format!("authorize the connection: {url}"));
        } else if let Some(s) = x.retry_after {
            info.hint = Some(format!("retry after {s} s"));
        }
    }
    info
}

/// An error for the rest of the statement (the session goes on).
pub fn error(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, "ERROR")))
}

/// An error that ends the session (authentication).
pub fn fatal(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, "FATAL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_issue_table() {
        let policy = Error {
            reason: Some("table_not_granted"),
            ..Error::new(Kind::Policy, "policy_denied", "x")
        };
        assert_eq!(sqlstate(&policy), "42501");
        let unknown = Error {
            reason: Some("unknown_relation"),
            ..Error::new(Kind::Policy, "policy_denied", "x")
        };
        assert_eq!(sqlstate(&unknown), "42P01");
        assert_eq!(
            sqlstate(&Error::new(Kind::Policy, "sql_parse_error", "x")),
            "42601"
        );
        assert_eq!(sqlstate(&Error::timeout()), "57014");
        assert_eq!(sqlstate(&Error::audit_unavailable()), "58000");
        assert_eq!(
            sqlstate(&Error::new(Kind::Warehouse, "resource_exhausted", "x")),
            "53400"
        );
        let mut wh = Error::new(Kind::Warehouse, "warehouse_error", "x");
        wh.extra_mut().warehouse_code = Some("22012".into());
        assert_eq!(sqlstate(&wh), "22012");
        wh.extra_mut().warehouse_code = Some("'; DROP".into());
        assert_eq!(sqlstate(&wh), "XX000");
        let info = error_info(&policy, "ERROR");
        assert_eq!(
            info.detail.as_deref(),
            Some("sluice: policy_denied (table_not_granted)")
        );
    }
}
