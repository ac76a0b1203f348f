//! What PostgreSQL clients send on connect and between queries, answered by sluice itself and
//! never forwarded: harmless `SET`s, `SHOW`, read-only transaction control, `DISCARD`, and the
//! session functions (`version()`, `current_database()`...). Everything else goes to the engine
//! (where the policy's default deny decides).
//!
//! A statement is recognized from sqlparser's parse tree, never by matching text: a `SET` of a
//! parameter not listed in [`SETTABLE`] is refused (`42501`), a `SHOW` of an unknown one is
//! `42704`, `BEGIN READ WRITE` is `25006`.

use sqlparser::ast::{
    Expr, FunctionArguments, Ident, ObjectName, ObjectNamePart, SelectItem, SetExpr, Statement,
    TransactionAccessMode, TransactionMode, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::error::{Error, Kind};

/// What the server reports as its version (`server_version`, `SHOW server_version`): the
/// PostgreSQL dialect sluice speaks. Drivers read it to choose features.
pub const SERVER_VERSION: &str = "16.6";

/// Session parameters a client may `SET` (and `SHOW` back). They change nothing sluice sends:
/// answers are always encoded with ISO dates, UTF-8, and full float precision.
pub const SETTABLE: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "client_encoding",
    "timezone",
    "time zone",
    "intervalstyle",
    "client_min_messages",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "search_path",
    "bytea_output",
    "standard_conforming_strings",
    "jit",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_read_only",
    "transaction_read_only",
    "default_transaction_isolation",
    "transaction_isolation",
    "geqo",
    "enable_seqscan",
    "max_parallel_workers_per_gather",
];

/// Parameter values reported at startup and by `SHOW` until the client sets them.
pub fn defaults() -> Vec<(&'static str, String)> {
    vec![
        ("server_version", SERVER_VERSION.to_string()),
        ("server_encoding", "UTF8".into()),
        ("client_encoding", "UTF8".into()),
        ("DateStyle", "ISO, MDY".into()),
        ("IntervalStyle", "postgres".into()),
        ("TimeZone", "UTC".into()),
        ("integer_datetimes", "on".into()),
        ("standard_conforming_strings", "on".into()),
        ("is_superuser", "off".into()),
        ("default_transaction_read_only", "on".into()),
        ("in_hot_standby", "off".into()),
        ("search_path", "public".into()),
    ]
}

/// A statement answered locally.
#[derive(Debug, Clone, PartialEq)]
pub enum Local {
    /// `SET name = value` (name lower-cased; value as text).
    Set(String, String),
    /// A `SET` that changes nothing worth remembering (`SET SESSION CHARACTERISTICS AS
    /// TRANSACTION READ ONLY`, `SET TRANSACTION ISOLATION LEVEL ...`).
    SetNothing,
    /// `RESET name` / `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `SHOW name`.
    Show(String),
    /// `BEGIN` / `START TRANSACTION` (read only).
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT name` (a no-op in a read-only transaction, but its name is kept: drivers
    /// nest transactions with savepoints and roll back to them after an error).
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`: leaves a failed transaction block's error state.
    RollbackTo(String),
    /// `DISCARD ALL|PLANS|SEQUENCES|TEMP` (the tag's object).
    Discard(&'static str),
    /// A `SELECT` of session functions only, with no `FROM`: column names and values.
    Functions(Vec<(String, Option<String>)>),
}

impl Local {
    /// The command tag PostgreSQL answers the statement with (`SELECT` answers carry rows).
    pub fn tag(&self) -> String {
        match self {
            Local::Set(..) | Local::SetNothing => "SET".into(),
            Local::Reset(_) => "RESET".into(),
            Local::Show(_) => "SHOW".into(),
            Local::Begin => "BEGIN".into(),
            Local::Commit => "COMMIT".into(),
            Local::Rollback | Local::RollbackTo(_) => "ROLLBACK".into(),
            Local::Savepoint(_) => "SAVEPOINT".into(),
            Local::Release(_) => "RELEASE".into(),
            Local::Discard(what) => format!("DISCARD {what}"),
            Local::Functions(_) => "SELECT".into(),
        }
    }
}

/// What a statement text is: answered locally (each statement of it, in order), or for the
/// engine. A text that does not parse, or mixes local and other statements, goes to the engine
/// whole (which refuses what it must, with the policy's codes).
pub fn classify(sql: &str) -> Result<Option<Vec<Local>>, Error> {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    if statements.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(statements.len());
    for s in &statements {
        match one(s)? {
            Some(l) => out.push(l),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn refused(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(Kind::Policy, code, message)
}

/// A `SHOW` name: `SHOW TRANSACTION ISOLATION LEVEL` is `transaction_isolation`, as in
/// PostgreSQL; other multi-word names keep their spaces.
fn ident_name(parts: &[Ident]) -> String {
    let name = parts
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    match name.as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        _ => name,
    }
}

fn object_name(n: &ObjectName) -> String {
    n.0.iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
            other => other.to_string().to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A `SET` value as text (`'ISO'` → `ISO`, `3` → `3`, `DEFAULT` → `None`).
fn value_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(if *b { "on" } else { "off" }.into()),
            other => Some(other.to_string()),
        },
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => None,
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::UnaryOp { .. } => Some(e.to_string()),
        other => Some(other.to_string()),
    }
}

fn read_only_modes(modes: &[TransactionMode]) -> Result<(), Error> {
    if modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
        )
    }) {
        return Err(refused(
            "read_only",
            "sluice is read-only: transactions are READ ONLY",
        ));
    }
    Ok(())
}

fn one(s: &Statement) -> Result<Option<Local>, Error> {
    use sqlparser::ast::Set;
    Ok(Some(match s {
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = object_name(variable);
                if !SETTABLE.contains(&name.as_str()) {
                    return Err(refused(
                        "statement_not_allowed",
                        format!("SET {name} is not supported by sluice"),
                    ));
                }
                if name == "default_transaction_read_only" || name == "transaction_read_only" {
                    let v = values.first().and_then(value_text).unwrap_or_default();
                    if matches!(v.to_ascii_lowercase().as_str(), "off" | "false" | "0") {
                        return Err(refused(
                            "read_only",
                            "sluice is read-only: transactions are READ ONLY",
                        ));
                    }
                }
                let value = values
                    .iter()
                    .filter_map(value_text)
                    .collect::<Vec<_>>()
                    .join(", ");
                Local::Set(name, value)
            }
            Set::SetTimeZone { value, .. } => {
                Local::Set("timezone".into(), value_text(value).unwrap_or_default())
            }
            Set::SetNames { charset_name, .. } => {
                Local::Set("client_encoding".into(), charset_name.value.clone())
            }
            Set::SetTransaction { modes, .. } => {
                read_only_modes(modes)?;
                Local::SetNothing
            }
            _ => {
                return Err(refused(
                    "statement_not_allowed",
                    "this form of SET is not supported by sluice",
                ));
            }
        },
        Statement::ShowVariable { variable } => Local::Show(ident_name(variable)),
        Statement::StartTransaction { modes, .. } => {
            read_only_modes(modes)?;
            Local::Begin
        }
        Statement::Commit { .. } => Local::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Local::Rollback,
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Local::RollbackTo(name.value.clone()),
        Statement::Savepoint { name } => Local::Savepoint(name.value.clone()),
        Statement::ReleaseSavepoint { name } => Local::Release(name.value.clone()),
        Statement::Discard { object_type } => {
            use sqlparser::ast::DiscardObject as D;
            Local::Discard(match object_type {
                D::ALL => "ALL",
                D::PLANS => "PLANS",
                D::SEQUENCES => "SEQUENCES",
                D::TEMP => "TEMP",
            })
        }
        Statement::Query(q) => match functions_only(q) {
            Some(cols) => Local::Functions(cols),
            None => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

/// `SELECT version(), current_database() [AS x]` — session functions only, no `FROM`, no
/// clauses. The values need the session: placeholders here, filled by [`fill`].
fn functions_only(q: &sqlparser::ast::Query) -> Option<Vec<(String, Option<String>)>> {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return None;
    };
    if !sel.from.is_empty() || sel.selection.is_some() || sel.projection.is_empty() {
        return None;
    }
    let mut cols = Vec::new();
    for item in &sel.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => return None,
        };
        let name = session_function(expr)?;
        cols.push((alias.unwrap_or_else(|| name.to_string()), Some(name.into())));
    }
    Some(cols)
}

/// The session functions answered locally (by their unqualified or `pg_catalog.` name).
const SESSION_FUNCTIONS: &[&str] = &[
    "version",
    "current_database",
    "current_schema",
    "current_user",
    "session_user",
    "user",
    "current_catalog",
    "pg_backend_pid",
];

fn session_function(e: &Expr) -> Option<&'static str> {
    let name = match e {
        Expr::Function(f) => {
            if !matches!(&f.args, FunctionArguments::None)
                && !matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty())
            {
                return None;
            }
            let parts: Vec<String> = f
                .name
                .0
                .iter()
                .map(|p| p.to_string().to_ascii_lowercase())
                .collect();
            match parts.as_slice() {
                [n] => n.clone(),
                [s, n] if s == "pg_catalog" => n.clone(),
                _ => return None,
            }
        }
        // `SELECT current_user` (a keyword, no parentheses)
        Expr::Identifier(i) => i.value.to_ascii_lowercase(),
        _ => return None,
    };
    SESSION_FUNCTIONS.iter().copied().find(|f| *f == name)
}

/// What the session functions return for this session.
pub struct SessionFacts<'a> {
    /// The verified user.
    pub user: &'a str,
    /// The database name the client connected to.
    pub database: &'a str,
    /// The process id told to the client (BackendKeyData).
    pub pid: i32,
}

/// The value of a session function.
pub fn function_value(name: &str, facts: &SessionFacts<'_>) -> Option<String> {
    Some(match name {
        "version" => format!(
            "PostgreSQL {SERVER_VERSION} (sluice {}, a read-only query proxy)",
            env!("CARGO_PKG_VERSION")
        ),
        "current_database" | "current_catalog" => facts.database.to_string(),
        "current_schema" => "public".into(),
        "current_user" | "session_user" | "user" => facts.user.to_string(),
        "pg_backend_pid" => facts.pid.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn one_local(sql: &str) -> Local {
        let mut v = classify(sql).unwrap().unwrap();
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0)
    }

    #[test]
    fn what_drivers_send_on_connect_is_answered_locally() {
        assert_eq!(
            one_local("SET extra_float_digits = 3"),
            Local::Set("extra_float_digits".into(), "3".into())
        );
        assert_eq!(
            one_local("SET application_name = 'PostgreSQL JDBC Driver'"),
            Local::Set("application_name".into(), "PostgreSQL JDBC Driver".into())
        );
        assert_eq!(
            one_local("SET DateStyle TO ISO"),
            Local::Set("datestyle".into(), "ISO".into())
        );
        assert_eq!(
            one_local("SHOW transaction_isolation"),
            Local::Show("transaction_isolation".into())
        );
        assert_eq!(
            one_local("show transaction isolation level"),
            Local::Show("transaction_isolation".into())
        );
        assert_eq!(one_local("BEGIN"), Local::Begin);
        assert_eq!(one_local("BEGIN READ ONLY"), Local::Begin);
        assert_eq!(one_local("COMMIT"), Local::Commit);
        assert_eq!(one_local("ROLLBACK"), Local::Rollback);
        assert_eq!(one_local("DISCARD ALL"), Local::Discard("ALL"));
        assert_eq!(
            one_local("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            Local::SetNothing
        );
        match one_local("select pg_catalog.version(), current_database() AS db") {
            Local::Functions(cols) => {
                assert_eq!(cols[0].0, "version");
                assert_eq!(cols[1].0, "db");
            }
            other => panic!("{other:?}"),
        }
        let both = classify("SET application_name = 'a'; SET extra_float_digits = 3");
        assert_eq!(both.unwrap().unwrap().len(), 2);
    }

    #[test]
    fn writes_and_unknown_settings_are_refused() {
        for sql in [
            "SET session_replication_role = replica",
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "BEGIN READ WRITE",
            "SET default_transaction_read_only = off",
            "SET TRANSACTION READ WRITE",
        ] {
            assert!(classify(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn everything_else_goes_to_the_engine() {
        for sql in [
            "SELECT * FROM orders",
            "SELECT version() FROM orders",
            "SELECT 1",
            "SELECT version(), 1",
            "not sql at all",
            "SET application_name = 'x'; SELECT * FROM orders",
            "SELECT current_setting('x')",
        ] {
            assert!(classify(sql).unwrap().is_none(), "{sql}");
        }
    }
}
