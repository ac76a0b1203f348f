//! `/v1/audit/...`: the compliance officer's surface. Every route requires the `compliance`
//! role. SQLite reads run on the blocking pool; exports stream as they are read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use sluice_audit::query::{self, ExportFormat, ExportHeader, Filter};
use tokio::sync::mpsc;

use crate::app::{AppState, AuditPaths};
use crate::error::{Error, Kind};
use crate::http::auth::{Who, audit_auth, authenticate_audited};

/// Default window of "who accessed" and of the anomaly baseline, in days.
const DEFAULT_DAYS: i64 = 7;
/// Longest window accepted, in days.
const MAX_DAYS: i64 = 3660;
/// Export chunks buffered between the reader thread and the response.
const EXPORT_CHUNKS: usize = 8;
/// Bytes per export chunk.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

fn forbidden() -> Error {
    Error::new(
        Kind::Forbidden,
        "forbidden_role",
        "the audit log is for the compliance role only",
    )
}

fn bad_params(e: QueryRejection) -> Error {
    Error::request(
        "invalid_request",
        format!("invalid query parameters: {}", e.body_text()),
    )
}

fn time(s: &Option<String>, name: &str) -> Result<Option<DateTime<Utc>>, Error> {
    s.as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    Error::request(
                        "invalid_request",
                        format!("{name} must be an RFC 3339 time"),
                    )
                })
        })
        .transpose()
}

/// Authenticates, requires the compliance role, then takes the query parameters.
async fn authorize<T>(
    state: &AppState,
    parts: &Parts,
    params: Result<Query<T>, QueryRejection>,
) -> Result<T, Error> {
    compliance(state, parts).await?;
    params.map(|Query(p)| p).map_err(bad_params)
}

/// Authenticates and requires the compliance role; failures are audited.
async fn compliance(state: &AppState, parts: &Parts) -> Result<(), Error> {
    let (principal, client) = authenticate_audited(state, parts).await?;
    if state.config.auth.roles.is_compliance(&principal.groups) {
        Ok(())
    } else {
        audit_auth(
            state,
            &client,
            sluice_audit::Event::AuthDenied,
            "forbidden_role",
            Who::Principal(&principal, None),
        )
        .await;
        Err(forbidden())
    }
}

async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, sluice_audit::AuditError> + Send + 'static,
) -> Result<T, Error> {
    let path = AuditPaths::of(&state.config).log;
    // What this process queued so far (completions are group-committed behind the answer) is
    // committed before it is read.
    let _ = state.audit.barrier().await;
    tokio::task::spawn_blocking(move || {
        let conn = sluice_audit::open_read_only(&path)?;
        f(&conn)
    })
    .await
    .map_err(|_| Error::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "audit read failed");
        Error::new(
            Kind::Audit,
            "audit_unavailable",
            "the audit log cannot be read",
        )
    })
}

/// Query parameters of `GET /v1/audit/records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    user: Option<String>,
    tenant: Option<String>,
    table: Option<String>,
    column: Option<String>,
    since: Option<String>,
    until: Option<String>,
    outcome: Option<String>,
    decision: Option<String>,
    event: Option<String>,
    #[serde(default)]
    denied_or_failed: bool,
    limit: Option<u64>,
}

/// `GET /v1/audit/records`: records matching every given filter, in sequence order.
pub async fn records(
    State(state): State<Arc<AppState>>,
    params: Result<Query<SearchParams>, QueryRejection>,
    parts: Parts,
) -> Response {
    let run = async {
        let p = authorize(&state, &parts, params).await?;
        let filter = Filter {
            since: time(&p.since, "since")?,
            until: time(&p.until, "until")?,
            user: p.user,
            tenant: p.tenant,
            table: p.table,
            column: p.column,
            outcome: p.outcome,
            decision: p.decision,
            event: p.event,
            denied_or_failed: p.denied_or_failed,
            limit: p.limit,
            ..Filter::default()
        };
        let records = read(&state, move |c| query::search(c, &filter)).await?;
        Ok::<_, Error>(axum::Json(serde_json::json!({ "records": records })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Query parameters of `GET /v1/audit/access`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessParams {
    table: String,
    column: Option<String>,
    days: Option<i64>,
}

/// `GET /v1/audit/access?table=X[&column=c][&days=N]`: who read it in the last N days.
pub async fn access(
    State(state): State<Arc<AppState>>,
    params: Result<Query<AccessParams>, QueryRejection>,
    parts: Parts,
) -> Response {
    let run = async {
        let p = authorize(&state, &parts, params).await?;
        let days = p.days.unwrap_or(DEFAULT_DAYS).clamp(1, MAX_DAYS);
        let since = Utc::now() - Duration::days(days);
        let accessors = read(&state, move |c| {
            query::who_accessed(c, &p.table, p.column.as_deref(), since)
        })
        .await?;
        Ok::<_, Error>(
            axum::Json(serde_json::json!({ "since": since.to_rfc3339(), "accessors": accessors }))
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Query parameters of `GET /v1/audit/anomalies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    days: Option<i64>,
}

/// `GET /v1/audit/anomalies[?days=N]`: the anomaly report (rules in the README).
pub async fn anomalies(
    State(state): State<Arc<AppState>>,
    params: Result<Query<AnomalyParams>, QueryRejection>,
    parts: Parts,
) -> Response {
    let run = async {
        let p = authorize(&state, &parts, params).await?;
        let days = p.days.unwrap_or(DEFAULT_DAYS).clamp(1, MAX_DAYS);
        let found = read(&state, move |c| query::anomalies(c, Utc::now(), days)).await?;
        Ok::<_, Error>(
            axum::Json(serde_json::json!({ "baseline_days": days, "anomalies": found }))
                .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/audit/verify`: the chain and checkpoints, verified now.
pub async fn verify(State(state): State<Arc<AppState>>, parts: Parts) -> Response {
    let run = async {
        compliance(&state, &parts).await?;
        let paths = AuditPaths::of(&state.config);
        let _ = state.audit.barrier().await;
        let report = tokio::task::spawn_blocking(move || {
            let key = sluice_audit::Signer::load_or_create(&paths.signing_key)?.public_key();
            sluice_audit::verify_all(&paths.log, &paths.checkpoints, &paths.archive_dir, &key)
        })
        .await
        .map_err(|_| Error::internal())?
        .map_err(|_| {
            Error::new(
                Kind::Audit,
                "audit_unavailable",
                "the audit log cannot be read",
            )
        })?;
        Ok::<_, Error>(axum::Json(report).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Query parameters of the exports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    user: Option<String>,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

/// `GET /v1/audit/export/subject?user=U[&format=csv|jsonl]`: everything recorded about one user
/// (GDPR subject access).
pub async fn export_subject(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, QueryRejection>,
    parts: Parts,
) -> Response {
    let run = async {
        let p = authorize(&state, &parts, params).await?;
        let user = p
            .user
            .clone()
            .ok_or_else(|| Error::request("invalid_request", "user is required"))?;
        let filter = Filter {
            user: Some(user.clone()),
            since: time(&p.since, "since")?,
            until: time(&p.until, "until")?,
            ..Filter::default()
        };
        export(
            &state,
            filter,
            "gdpr_subject_access",
            user,
            p.format.as_deref(),
        )
        .await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/audit/export/phi[?since&until&format]`: every access to tables tagged `phi`
/// (HIPAA-style access report).
pub async fn export_phi(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, QueryRejection>,
    parts: Parts,
) -> Response {
    let run = async {
        let p = authorize(&state, &parts, params).await?;
        let tables = state.engine.policy().phi_tables.clone();
        if tables.is_empty() {
            return Err(Error::request(
                "no_phi_tables",
                "no table is tagged \"phi\" in the policy",
            ));
        }
        let filter = Filter {
            any_table: tables.clone(),
            since: time(&p.since, "since")?,
            until: time(&p.until, "until")?,
            event: Some("query_attempt".into()),
            ..Filter::default()
        };
        export(
            &state,
            filter,
            "hipaa_phi_access",
            tables.join(","),
            p.format.as_deref(),
        )
        .await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// A `Write` that ships chunks to the response body.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client left"))?;
        }
        Ok(())
    }
}

async fn export(
    state: &AppState,
    filter: Filter,
    kind: &str,
    subject: String,
    format: Option<&str>,
) -> Result<Response, Error> {
    let (format, content_type) = match format.unwrap_or("jsonl") {
        "jsonl" => (ExportFormat::JsonLines, "application/x-ndjson"),
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        other => {
            return Err(Error::request(
                "invalid_request",
                format!("format {other:?}: use jsonl or csv"),
            ));
        }
    };
    // A fresh signed checkpoint covers every record written so far, so the export is complete.
    let checkpoint = state.audit.checkpoint().await.map_err(|e| {
        tracing::error!(error = %e, "no checkpoint for an export");
        Error::new(
            Kind::Audit,
            "audit_unavailable",
            "cannot checkpoint the audit log",
        )
    })?;
    let header = ExportHeader {
        export: kind.to_string(),
        subject,
        generated_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        checkpoint: checkpoint.clone(),
    };
    let path = AuditPaths::of(&state.config).log;
    let (tx, rx) = mpsc::channel(EXPORT_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let result = sluice_audit::open_read_only(&path)
            .and_then(|c| query::export(&c, &filter, &header, format, &mut w))
            .and_then(|_| {
                std::io::Write::flush(&mut w)
                    .map_err(|e| sluice_audit::AuditError::Storage(e.to_string()))
            });
        if let Err(e) = result {
            tracing::error!(error = %e, "export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cp) = checkpoint
        && let Ok(v) = HeaderValue::from_str(&format!(
            "seq={}; hash={}; key={}",
            cp.seq, cp.head_hash, cp.key_id
        ))
    {
        h.insert("sluice-audit-checkpoint", v);
    }
    Ok(resp)
}
