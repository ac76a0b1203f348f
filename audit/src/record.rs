//! The audit record.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A query was allowed and is about to reach the warehouse (committed before it does).
    QueryAttempt,
    /// An allowed query finished: ok, failed, truncated, timed out or cancelled.
    QueryCompletion,
    /// A request to the query endpoint was refused before reaching the warehouse.
    QueryDenied,
    /// An authentication attempt on any other endpoint failed (who tried, from where, why:
    /// `code`).
    AuthDenied,
    /// An authentication event that succeeded: a service token, ticket, session or API key
    /// issued or revoked (`code` says which).
    AuthEvent,
    /// A user's warehouse credential was connected, refreshed, failed to refresh, expired or
    /// was disconnected (`code` says which).
    CredentialEvent,
}

impl Event {
    /// Parses the stored text form.
    pub fn parse(s: &str) -> Option<Event> {
        Some(match s {
            "query_attempt" => Event::QueryAttempt,
            "query_completion" => Event::QueryCompletion,
            "query_denied" => Event::QueryDenied,
            "auth_denied" => Event::AuthDenied,
            "auth_event" => Event::AuthEvent,
            "credential_event" => Event::CredentialEvent,
            _ => return None,
        })
    }

    /// Stable text form stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::QueryAttempt => "query_attempt",
            Event::QueryCompletion => "query_completion",
            Event::QueryDenied => "query_denied",
            Event::AuthDenied => "auth_denied",
            Event::AuthEvent => "auth_event",
            Event::CredentialEvent => "credential_event",
        }
    }
}

/// Whether the request was allowed to reach the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused (authentication, bad input, or policy).
    Deny,
}

impl Decision {
    /// Stable text form stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// One audit record. Optional fields are absent when the request did not get that far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number, assigned by the log on append (0 before).
    pub seq: u64,
    /// Time of the event, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// What happened.
    pub event: Event,
    /// The request id (also sent to the client as `X-Request-Id`).
    pub request_id: String,
    /// The session the request belonged to, for session-based authentication.
    pub session_id: Option<String>,
    /// Authenticated user, if authentication succeeded.
    pub user: Option<String>,
    /// Tenant from the verified credential.
    pub tenant: Option<String>,
    /// Groups from the verified credential.
    pub groups: Vec<String>,
    /// How the caller authenticated (`jwt`, ...), or tried to.
    pub auth_method: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Target connection id.
    pub connection: Option<String>,
    /// The SQL as sent by the client.
    pub sql: Option<String>,
    /// The SQL sent to the warehouse.
    pub rewritten_sql: Option<String>,
    /// Bind parameters sent with it (the tenant).
    pub params: Vec<String>,
    /// Tables read (after name resolution).
    pub tables: Vec<String>,
    /// Columns read, as `table.column` (an over-approximation that never misses one).
    pub columns: Vec<String>,
    /// Version of the policy that decided (a digest of the configuration).
    pub policy_version: Option<String>,
    /// Allowed or refused.
    pub decision: Decision,
    /// Error code when refused or failed.
    pub code: Option<String>,
    /// Finer reason for a refusal.
    pub reason: Option<String>,
    /// Completion outcome: `ok`, `truncated`, `error`, `timeout`, `cancelled`.
    pub outcome: Option<String>,
    /// Rows returned to the client.
    pub rows: Option<u64>,
    /// Bytes returned to the client.
    pub bytes: Option<u64>,
    /// Duration from request to completion, in milliseconds.
    pub duration_ms: Option<f64>,
    /// Sanitized error message (never warehouse text or data).
    pub error: Option<String>,
    /// The warehouse's own query id.
    pub warehouse_query_id: Option<String>,
    /// A federated query's per-source sub-queries (empty otherwise; absent from the hashed
    /// bytes when empty, so records written before the field existed verify unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_queries: Vec<SubQuery>,
    /// The front door the request came in by (`http`, `pgwire`); absent from the hashed bytes
    /// when `None`, so records written before the field existed verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<String>,
    /// The row filters the query was filtered with, beside the tenant's, each with the
    /// attribute value it bound (absent from the hashed bytes when empty, so records written
    /// before the field existed verify unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_filters: Vec<RowFilterUse>,
    /// Hash of the previous record (hex SHA-256; 64 zeros for the first). Set by the log.
    pub prev_hash: String,
    /// `SHA-256(prev_hash || canonical bytes of this record)`, hex. Set by the log.
    pub hash: String,
}

/// One row filter a query was filtered with: why its user saw only some of the tenant's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFilterUse {
    /// The table filtered (`schema.table`).
    pub table: String,
    /// The filter as declared (`region = attr.region`).
    pub filter: String,
    /// The attribute it bound, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The attribute's value (`"?"` where the log redacts literals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// One source's part of a federated query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubQuery {
    /// The connection (source) it was sent to.
    pub connection: String,
    /// The SQL sent, after the policy's rewrite.
    pub sql: String,
    /// The source's own query id, once it answered.
    #[serde(default)]
    pub warehouse_query_id: Option<String>,
    /// Rows the source returned, once it finished.
    #[serde(default)]
    pub rows: Option<u64>,
    /// The row filters this source's sub-query was filtered with (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_filters: Vec<RowFilterUse>,
}

impl AuditRecord {
    /// Turns a query's attempt record into the completion recovery writes when that query's
    /// own completion was lost: outcome `unknown`, at `ts`.
    pub(crate) fn attempt_to_completion(&mut self, ts: &str) {
        self.seq = 0;
        self.ts = ts.to_string();
        self.event = Event::QueryCompletion;
        self.outcome = Some(crate::writer::OUTCOME_UNKNOWN.into());
        self.code = Some(crate::writer::LOST_COMPLETION.into());
        self.error = Some(
            "the process stopped before this query's completion was recorded: how it ended \
             is unknown"
                .into(),
        );
        self.rows = None;
        self.bytes = None;
        self.duration_ms = None;
        self.prev_hash.clear();
        self.hash.clear();
    }

    /// A record with only the required fields set.
    pub fn new(event: Event, request_id: impl Into<String>, decision: Decision) -> Self {
        AuditRecord {
            seq: 0,
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event,
            request_id: request_id.into(),
            session_id: None,
            user: None,
            tenant: None,
            groups: vec![],
            auth_method: None,
            client_addr: None,
            user_agent: None,
            connection: None,
            sql: None,
            rewritten_sql: None,
            params: vec![],
            tables: vec![],
            columns: vec![],
            policy_version: None,
            decision,
            code: None,
            reason: None,
            outcome: None,
            rows: None,
            bytes: None,
            duration_ms: None,
            error: None,
            warehouse_query_id: None,
            sub_queries: vec![],
            front_door: None,
            row_filters: vec![],
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The bytes the chain hashes: the record as JSON with its chain fields empty, fields in
    /// declaration order. Serialized from a borrowed view: no copy of the record.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let view = Canonical {
            seq: self.seq,
            ts: &self.ts,
            event: self.event,
            request_id: &self.request_id,
            session_id: self.session_id.as_deref(),
            user: self.user.as_deref(),
            tenant: self.tenant.as_deref(),
            groups: &self.groups,
            auth_method: self.auth_method.as_deref(),
            client_addr: self.client_addr.as_deref(),
            user_agent: self.user_agent.as_deref(),
            connection: self.connection.as_deref(),
            sql: self.sql.as_deref(),
            rewritten_sql: self.rewritten_sql.as_deref(),
            params: &self.params,
            tables: &self.tables,
            columns: &self.columns,
            policy_version: self.policy_version.as_deref(),
            decision: self.decision,
            code: self.code.as_deref(),
            reason: self.reason.as_deref(),
            outcome: self.outcome.as_deref(),
            rows: self.rows,
            bytes: self.bytes,
            duration_ms: self.duration_ms,
            error: self.error.as_deref(),
            warehouse_query_id: self.warehouse_query_id.as_deref(),
            sub_queries: &self.sub_queries,
            front_door: self.front_door.as_deref(),
            row_filters: &self.row_filters,
            prev_hash: "",
            hash: "",
        };
        serde_json::to_vec(&view).unwrap_or_default()
    }
}

/// [`AuditRecord`] borrowed, for hashing. Field names and order must stay those of
/// `AuditRecord` (a test checks the bytes are the same as serializing the record itself).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    ts: &'a str,
    event: Event,
    request_id: &'a str,
    session_id: Option<&'a str>,
    user: Option<&'a str>,
    tenant: Option<&'a str>,
    groups: &'a [String],
    auth_method: Option<&'a str>,
    client_addr: Option<&'a str>,
    user_agent: Option<&'a str>,
    connection: Option<&'a str>,
    sql: Option<&'a str>,
    rewritten_sql: Option<&'a str>,
    params: &'a [String],
    tables: &'a [String],
    columns: &'a [String],
    policy_version: Option<&'a str>,
    decision: Decision,
    code: Option<&'a str>,
    reason: Option<&'a str>,
    outcome: Option<&'a str>,
    rows: Option<u64>,
    bytes: Option<u64>,
    duration_ms: Option<f64>,
    error: Option<&'a str>,
    warehouse_query_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[SubQuery]>::is_empty")]
    sub_queries: &'a [SubQuery],
    #[serde(skip_serializing_if = "Option::is_none")]
    front_door: Option<&'a str>,
    #[serde(skip_serializing_if = "<[RowFilterUse]>::is_empty")]
    row_filters: &'a [RowFilterUse],
    prev_hash: &'a str,
    hash: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_view_serializes_exactly_like_the_record() {
        let mut r = AuditRecord::new(Event::QueryCompletion, "r-1", Decision::Allow);
        r.user = Some("alice".into());
        r.groups = vec!["a".into(), "b\"c".into()];
        r.tables = vec!["public.orders".into()];
        r.duration_ms = Some(1.25);
        r.rows = Some(7);
        r.sql = Some("SELECT 'x'".into());
        r.front_door = Some("pgwire".into());
        let mut plain = r.clone();
        r.prev_hash = "ab".into();
        r.hash = "cd".into();
        plain.prev_hash.clear();
        plain.hash.clear();
        assert_eq!(r.canonical_bytes(), serde_json::to_vec(&plain).unwrap());
    }
}
