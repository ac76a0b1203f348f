//! The compliance questions: filtered searches, who accessed a table or column, denials and
//! failures, an anomaly report, and the GDPR / HIPAA-style exports. Read-only, over a read-only
//! connection; every search streams rows in sequence order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use chrono::{DateTime, Duration, Timelike, Utc};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde::Serialize;

use crate::chain::Checkpoint;
use crate::writer::record_from_row;
use crate::{AuditError, AuditRecord};

/// Most records one search returns unless the caller asks for fewer.
pub const MAX_SEARCH_RESULTS: u64 = 10_000;

/// Which records a question is about. Every field narrows; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// User id.
    pub user: Option<String>,
    /// Tenant id.
    pub tenant: Option<String>,
    /// A table read: `schema.table`, `catalog.schema.table`, or just `table`.
    pub table: Option<String>,
    /// A column read: `table.column` (any qualification of the table).
    pub column: Option<String>,
    /// Records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records before this time.
    pub until: Option<DateTime<Utc>>,
    /// Completion outcome (`ok`, `error`, `timeout`, `cancelled`, `truncated`).
    pub outcome: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// `query_attempt`, `query_completion`, `query_denied`, `auth_denied` or `auth_event`.
    pub event: Option<String>,
    /// Denied requests and failed queries only.
    pub denied_or_failed: bool,
    /// Any of these tables (used by the PHI report).
    pub any_table: Vec<String>,
    /// Records up to this sequence number (what a checkpoint covers).
    pub max_seq: Option<u64>,
    /// At most this many records.
    pub limit: Option<u64>,
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Matches a recorded qualified name against a possibly shorter one.
const NAME_MATCH: &str = "(value = ? OR value LIKE '%.' || ?)";

impl Filter {
    fn sql(&self, columns: &str) -> (String, Vec<SqlValue>) {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<SqlValue> = Vec::new();
        let mut eq = |col: &str, v: &Option<String>, clauses: &mut Vec<String>| {
            if let Some(v) = v {
                clauses.push(format!("{col} = ?"));
                params.push(SqlValue::Text(v.clone()));
            }
        };
        eq("user", &self.user, &mut clauses);
        eq("tenant", &self.tenant, &mut clauses);
        eq("outcome", &self.outcome, &mut clauses);
        eq("decision", &self.decision, &mut clauses);
        eq("event", &self.event, &mut clauses);
        if let Some(t) = &self.table {
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM json_each(audit_log.tables) WHERE {NAME_MATCH})"
            ));
            params.push(SqlValue::Text(t.clone()));
            params.push(SqlValue::Text(t.clone()));
        }
        if let Some(c) = &self.column {
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM json_each(audit_log.columns) WHERE {NAME_MATCH})"
            ));
            params.push(SqlValue::Text(c.clone()));
            params.push(SqlValue::Text(c.clone()));
        }
        if !self.any_table.is_empty() {
            let ors = vec![NAME_MATCH; self.any_table.len()].join(" OR ");
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM json_each(audit_log.tables) WHERE {ors})"
            ));
            for t in &self.any_table {
                params.push(SqlValue::Text(t.clone()));
                params.push(SqlValue::Text(t.clone()));
            }
        }
        if let Some(s) = &self.since {
            clauses.push("ts >= ?".into());
            params.push(SqlValue::Text(ts(s)));
        }
        if let Some(u) = &self.until {
            clauses.push("ts < ?".into());
            params.push(SqlValue::Text(ts(u)));
        }
        if self.denied_or_failed {
            clauses
                .push("(decision = 'deny' OR outcome IN ('error', 'timeout', 'unknown'))".into());
        }
        if let Some(m) = self.max_seq {
            clauses.push("seq <= ?".into());
            params.push(SqlValue::Integer(m as i64));
        }
        let mut sql = format!("SELECT {columns} FROM audit_log");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(l) = self.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        (sql, params)
    }
}

/// Calls `f` for every record matching `filter`, in sequence order, without collecting them.
pub fn for_each(
    conn: &Connection,
    filter: &Filter,
    mut f: impl FnMut(AuditRecord) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let columns = crate::writer::select_columns(conn)?;
    let (sql, params) = filter.sql(&columns);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        f(record_from_row(row)?)?;
        n += 1;
    }
    Ok(n)
}

/// The records matching `filter` (at most [`MAX_SEARCH_RESULTS`]).
pub fn search(conn: &Connection, filter: &Filter) -> Result<Vec<AuditRecord>, AuditError> {
    let mut f = filter.clone();
    f.limit = Some(
        f.limit
            .unwrap_or(MAX_SEARCH_RESULTS)
            .min(MAX_SEARCH_RESULTS),
    );
    let mut out = Vec::new();
    for_each(conn, &f, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// One principal's accesses to a table (or column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accessor {
    /// User id.
    pub user: String,
    /// Tenant id.
    pub tenant: String,
    /// Allowed queries that read it.
    pub queries: u64,
    /// First access in the window.
    pub first: String,
    /// Last access in the window.
    pub last: String,
}

/// "Who accessed table X (or column X.c) since T": allowed attempts, grouped by principal.
pub fn who_accessed(
    conn: &Connection,
    table: &str,
    column: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<Accessor>, AuditError> {
    let filter = Filter {
        table: Some(table.to_string()),
        column: column.map(|c| {
            if c.contains('.') {
                c.to_string()
            } else {
                format!("{table}.{c}")
            }
        }),
        since: Some(since),
        event: Some("query_attempt".into()),
        ..Filter::default()
    };
    let mut by: BTreeMap<(String, String), Accessor> = BTreeMap::new();
    for_each(conn, &filter, |r| {
        let key = (
            r.user.clone().unwrap_or_default(),
            r.tenant.clone().unwrap_or_default(),
        );
        let a = by.entry(key.clone()).or_insert_with(|| Accessor {
            user: key.0,
            tenant: key.1,
            queries: 0,
            first: r.ts.clone(),
            last: r.ts.clone(),
        });
        a.queries += 1;
        a.last = r.ts;
        Ok(())
    })?;
    Ok(by.into_values().collect())
}

/// Limits of the anomaly rules (documented in the README).
pub mod rules {
    /// `rate_spike`: attempts in the last hour above this many times the user's hourly average...
    pub const RATE_FACTOR: f64 = 10.0;
    /// ...and above this absolute floor.
    pub const RATE_FLOOR: u64 = 20;
    /// `denial_burst`: this many denials...
    pub const BURST_DENIALS: usize = 5;
    /// ...within this many seconds.
    pub const BURST_WINDOW_SECS: i64 = 300;
    /// `unusual_hour`: only judged when the baseline holds at least this many queries.
    pub const HOUR_BASELINE_MIN: usize = 20;
    /// `first_access`: a first read of a table within this many hours of the report.
    pub const FIRST_ACCESS_HOURS: i64 = 24;
}

/// One finding of the anomaly report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// `rate_spike`, `first_access`, `denial_burst` or `unusual_hour`.
    pub rule: &'static str,
    /// Who (user, or client address for unauthenticated denials).
    pub subject: String,
    /// When (the latest record involved).
    pub ts: String,
    /// What, in words.
    pub detail: String,
}

/// The anomaly report over the `baseline_days` before `now` (see [`rules`]).
pub fn anomalies(
    conn: &Connection,
    now: DateTime<Utc>,
    baseline_days: i64,
) -> Result<Vec<Anomaly>, AuditError> {
    let start = now - Duration::days(baseline_days.max(1));
    let records = {
        let mut v = Vec::new();
        let f = Filter {
            since: Some(start),
            ..Filter::default()
        };
        for_each(conn, &f, |r| {
            v.push(r);
            Ok(())
        })?;
        v
    };
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .ok()
    };
    let mut out = Vec::new();
    let last_hour = now - Duration::hours(1);
    let first_window = now - Duration::hours(rules::FIRST_ACCESS_HOURS);

    // Per user: attempts with their times.
    let mut attempts: HashMap<String, Vec<(DateTime<Utc>, &AuditRecord)>> = HashMap::new();
    let mut denials: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for r in &records {
        let Some(t) = parse(&r.ts) else { continue };
        match r.event {
            crate::Event::QueryAttempt => {
                attempts
                    .entry(r.user.clone().unwrap_or_default())
                    .or_default()
                    .push((t, r));
            }
            crate::Event::QueryDenied | crate::Event::AuthDenied => {
                let who = r
                    .user
                    .clone()
                    .or_else(|| r.client_addr.clone())
                    .unwrap_or_default();
                denials.entry(who).or_default().push(t);
            }
            crate::Event::QueryCompletion
            | crate::Event::AuthEvent
            | crate::Event::CredentialEvent => {}
        }
    }
    let baseline_hours = (now - start).num_hours().max(1) as f64;
    let earlier_tables = earlier_table_reads(conn, start)?;
    for (user, list) in &attempts {
        let recent = list.iter().filter(|(t, _)| *t >= last_hour).count() as u64;
        let before = list.iter().filter(|(t, _)| *t < last_hour).count() as f64;
        let avg = before / (baseline_hours - 1.0).max(1.0);
        if recent > rules::RATE_FLOOR && recent as f64 > rules::RATE_FACTOR * avg {
            out.push(Anomaly {
                rule: "rate_spike",
                subject: user.clone(),
                ts: ts(&now),
                detail: format!(
                    "{recent} queries in the last hour against an average of {avg:.1} per hour"
                ),
            });
        }
        let mut seen: HashSet<&str> = earlier_tables
            .get(user)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for (t, r) in list {
            for table in &r.tables {
                if seen.insert(table.as_str()) && *t >= first_window {
                    out.push(Anomaly {
                        rule: "first_access",
                        subject: user.clone(),
                        ts: r.ts.clone(),
                        detail: format!("first read of {table}"),
                    });
                }
            }
        }
        let baseline: Vec<u32> = list
            .iter()
            .filter(|(t, _)| *t < first_window)
            .map(|(t, _)| t.hour())
            .collect();
        if baseline.len() >= rules::HOUR_BASELINE_MIN {
            let hours: HashSet<u32> = baseline.into_iter().collect();
            for (t, r) in list.iter().filter(|(t, _)| *t >= first_window) {
                if !hours.contains(&t.hour()) {
                    out.push(Anomaly {
                        rule: "unusual_hour",
                        subject: user.clone(),
                        ts: r.ts.clone(),
                        detail: format!(
                            "a query at {:02}:00 UTC, an hour with no activity in the baseline",
                            t.hour()
                        ),
                    });
                }
            }
        }
    }
    for (who, mut times) in denials {
        times.sort();
        let window = Duration::seconds(rules::BURST_WINDOW_SECS);
        if let Some(end) = times
            .windows(rules::BURST_DENIALS)
            .find(|w| w[w.len() - 1] - w[0] <= window)
        {
            out.push(Anomaly {
                rule: "denial_burst",
                subject: who,
                ts: ts(&end[end.len() - 1]),
                detail: format!(
                    "{} denied requests within {} seconds",
                    rules::BURST_DENIALS,
                    rules::BURST_WINDOW_SECS
                ),
            });
        }
    }
    out.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.rule.cmp(b.rule)));
    Ok(out)
}

/// Tables each user read before `before` (for `first_access`).
fn earlier_table_reads(
    conn: &Connection,
    before: DateTime<Utc>,
) -> Result<HashMap<String, HashSet<String>>, AuditError> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT user, value FROM audit_log, json_each(audit_log.tables)
         WHERE event = 'query_attempt' AND ts < ?",
    )?;
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    let rows = stmt.query_map([ts(&before)], |r| {
        Ok((r.get::<_, Option<String>>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (u, t) = row?;
        out.entry(u.unwrap_or_default()).or_default().insert(t);
    }
    Ok(out)
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line; the first line describes the export and its checkpoint.
    JsonLines,
    /// CSV with a header row; the first line is `# ` and the export description as JSON.
    Csv,
}

/// What an export is, and the checkpoint that covers every record in it.
#[derive(Debug, Clone, Serialize)]
pub struct ExportHeader {
    /// `gdpr_subject_access` or `hipaa_phi_access`.
    pub export: String,
    /// The subject (GDPR) or the PHI tables (HIPAA).
    pub subject: String,
    /// When it was made.
    pub generated_at: String,
    /// The signed checkpoint; every exported record has `seq <= checkpoint.seq`, and its hash
    /// can be checked against the log's chain up to this signed head.
    pub checkpoint: Option<Checkpoint>,
}

const CSV_HEADER: [&str; 32] = [
    "seq",
    "ts",
    "event",
    "request_id",
    "session_id",
    "user",
    "tenant",
    "groups",
    "auth_method",
    "client_addr",
    "user_agent",
    "connection",
    "sql",
    "rewritten_sql",
    "params",
    "tables",
    "columns",
    "policy_version",
    "decision",
    "code",
    "reason",
    "outcome",
    "rows",
    "bytes",
    "duration_ms",
    "error",
    "warehouse_query_id",
    "prev_hash",
    "hash",
    "sub_queries",
    "front_door",
    "row_filters",
];

/// A CSV cell a spreadsheet will not run: one that begins with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (OWASP's list for CSV injection) gets a leading `'`, which spreadsheets read
/// as "text" and do not show. Audit fields carry caller-controlled text (SQL, `User-Agent`,
/// refused requests' input), and exports are opened by compliance officers.
fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

fn csv_row(r: &AuditRecord) -> Vec<String> {
    csv_fields(r).into_iter().map(spreadsheet_safe).collect()
}

fn csv_fields(r: &AuditRecord) -> Vec<String> {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let n = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let j = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
    vec![
        r.seq.to_string(),
        r.ts.clone(),
        r.event.as_str().into(),
        r.request_id.clone(),
        o(&r.session_id),
        o(&r.user),
        o(&r.tenant),
        j(&r.groups),
        o(&r.auth_method),
        o(&r.client_addr),
        o(&r.user_agent),
        o(&r.connection),
        o(&r.sql),
        o(&r.rewritten_sql),
        j(&r.params),
        j(&r.tables),
        j(&r.columns),
        o(&r.policy_version),
        r.decision.as_str().into(),
        o(&r.code),
        o(&r.reason),
        o(&r.outcome),
        n(r.rows),
        n(r.bytes),
        r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
        o(&r.error),
        o(&r.warehouse_query_id),
        r.prev_hash.clone(),
        r.hash.clone(),
        if r.sub_queries.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&r.sub_queries).unwrap_or_default()
        },
        o(&r.front_door),
        if r.row_filters.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&r.row_filters).unwrap_or_default()
        },
    ]
}

/// Streams the records matching `filter` (capped at the header's checkpoint) to `out`.
pub fn export(
    conn: &Connection,
    filter: &Filter,
    header: &ExportHeader,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let io = |e: std::io::Error| AuditError::Storage(format!("export: {e}"));
    let mut filter = filter.clone();
    filter.max_seq = Some(header.checkpoint.as_ref().map(|c| c.seq).unwrap_or(0));
    let head = serde_json::to_string(header).map_err(|e| AuditError::Storage(e.to_string()))?;
    match format {
        ExportFormat::JsonLines => {
            writeln!(out, "{head}").map_err(io)?;
            for_each(conn, &filter, |r| {
                let line =
                    serde_json::to_string(&r).map_err(|e| AuditError::Storage(e.to_string()))?;
                writeln!(out, "{line}").map_err(io)
            })
        }
        ExportFormat::Csv => {
            writeln!(out, "# {head}").map_err(io)?;
            let mut w = csv::Writer::from_writer(out);
            let csv_err = |e: csv::Error| AuditError::Storage(format!("export: {e}"));
            w.write_record(CSV_HEADER).map_err(csv_err)?;
            let n = for_each(conn, &filter, |r| {
                w.write_record(csv_row(&r)).map_err(csv_err)
            })?;
            w.flush().map_err(io)?;
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralized() {
        let mut r = AuditRecord::new(
            crate::Event::QueryDenied,
            "r".to_string(),
            crate::Decision::Deny,
        );
        r.user_agent = Some("=HYPERLINK(\"http://evil\",\"x\")".into());
        r.sql = Some("+cmd|' /C calc'!A0".into());
        r.error = Some("@SUM(1+1)".into());
        r.user = Some("-2+3".into());
        r.code = Some("\tx".into());
        let row = csv_row(&r);
        for cell in [&row[10], &row[12], &row[25], &row[5], &row[19]] {
            assert!(cell.starts_with('\''), "{cell}");
        }
        assert_eq!(row[2], "query_denied");
    }
}
