//! `POST /v1/query`: the life of one query, top to bottom, as in design.md:
//! authenticate, parse and rewrite (policy), audit the attempt, execute, stream the answer,
//! audit the completion. Every step is a call into the crate that owns it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use serde::Deserialize;
use sluice_audit::{AuditLog, AuditRecord, Decision, Event};
use sluice_connectors::{ConnectorError, Param, QueryRequest, QueryStream, UserCredential};
use sluice_policy::RewrittenQuery;
use tokio::time::timeout_at;

use crate::app::{AppState, Connection};
use crate::auth::Principal;
use crate::config::CredentialMode;
use crate::conn::{ClientConn, unless_gone};
use crate::encode::{self, Encoder, Format, TrailingError};
use crate::error::{ApiError, current_request_id};

/// The request body of `/v1/query` and `/v1/policy/explain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryBody {
    /// The SQL text.
    pub(crate) sql: String,
    /// Target connection id; optional when exactly one is declared.
    pub(crate) connection: Option<String>,
}

/// The handler.
pub async fn handle_query(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let mut audit = QueryAudit::new(&state.audit, &req);
    match run_query(&state, req, &mut audit).await {
        Ok(response) => response,
        Err(err) => {
            audit.failed(&err).await;
            err.into_response()
        }
    }
}

/// One query, start to finish. Returns once the answer starts streaming.
async fn run_query(
    state: &AppState,
    req: Request,
    audit: &mut QueryAudit,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let mut gone = parts
        .extensions
        .get::<ConnectInfo<ClientConn>>()
        .map(|c| c.0.gone.clone());
    let limits = &state.config.limits;
    let now = Instant::now();
    // The whole query (answer included) must end by `deadline`; its headers must be ready by
    // `header_deadline`.
    let deadline = now + Duration::from_millis(limits.query_timeout_ms);
    let header_deadline =
        deadline.min(now + Duration::from_millis(state.config.server.request_timeout_ms));

    // 1. What the client accepts, and who is asking.
    let format = encode::negotiate(&parts.headers)?;
    let client = crate::auth::client_info(&parts);
    let principal = match state
        .auth
        .authenticate(&parts.method, &parts.headers, &client)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let tried = crate::auth::web::method_tried(
                &parts.headers,
                &state.config.auth.sessions.cookie_name,
            );
            audit.record.auth_method = Some(tried.into());
            return Err(e.into());
        }
    };
    audit.principal(&principal);
    if !state.config.auth.roles.may_query(&principal.groups) {
        return Err(forbidden_role());
    }

    // 2. The request itself.
    // A client trickling its body in (slowloris) is bounded by the header deadline too.
    let max_body = state.config.server.max_body_bytes;
    let read = read_json_body::<QueryBody>(&parts.headers, body, max_body);
    let request = timeout_at(header_deadline.into(), read)
        .await
        .map_err(|_| timeout_error())??;
    audit.record.sql = Some(request.sql.clone());
    // The policy snapshot in force now decides the whole query.
    let policy = state.policy();
    // Without a "connection" among several, tables are named <connection>.<schema>.<table>:
    // one connection → that warehouse, whole; several → the federated workspace.
    let (conn, sql) = match request.connection.as_deref() {
        None if state.connections.len() > 1 => {
            match crate::federation::route(state, &policy, &request.sql)? {
                crate::federation::Route::Single { conn, sql } => (conn, sql),
                crate::federation::Route::Federated(sources) => {
                    let ctx = Federated {
                        principal: &principal,
                        sources,
                        sql: &request.sql,
                        policy,
                        format,
                        deadline,
                        header_deadline,
                    };
                    return run_federated(state, ctx, audit, gone.as_mut()).await;
                }
            }
        }
        id => (Arc::clone(connection(state, id)?), request.sql.clone()),
    };
    let conn = &*conn;
    audit.record.connection = Some(conn.id.clone());

    // 3. Policy: parse, refuse, rewrite, verify.
    let (catalog, caller) = policy
        .for_caller(&conn.id, &principal)
        .ok_or_else(ApiError::internal)?;
    audit.record.policy_version = Some(policy.version.clone());
    let redact = state
        .config
        .audit
        .redact_literals
        .then_some(catalog.dialect());
    if let Some(d) = redact {
        audit.record.sql = Some(sluice_policy::redact_literals(&request.sql, d));
    }
    let rewritten = sluice_policy::rewrite(&sql, catalog, &caller)?;
    audit.rewritten(&rewritten, redact);

    // 3b. The caller's own warehouse credential, when the connection uses one (never anyone
    // else's, never the service credential).
    let mut secret = user_credential(state, conn, &principal).await?;

    // 4. The attempt is durable before the warehouse sees anything (fail closed).
    timeout_at(header_deadline.into(), audit.attempt())
        .await
        .map_err(|_| timeout_error())??;

    // 5. Execute, and wait for the first batch so early failures are proper HTTP errors.
    let params: Vec<Param> = rewritten
        .params
        .iter()
        .map(|p| Param {
            name: p.name.clone(),
            value: p.value.clone(),
        })
        .collect();
    let request_id = current_request_id();
    let passthrough_role = passthrough_role(conn.credential, &principal)?;
    // A warehouse that refuses the user's token gets one refresh and one retry.
    let mut retried = false;
    let mut stream = loop {
        let credential = user_credential_ref(
            conn.credential,
            secret.as_ref(),
            &principal,
            &passthrough_role,
        );
        if credential.is_none() && conn.credential != CredentialMode::Service {
            // A per-user connection whose record lacks this mode's secret (the mode changed):
            // never fall back to the connection's own credential.
            return Err(crate::vault::web::reauth_required(&conn.id));
        }
        let execute = conn.connector.execute(QueryRequest {
            sql: &rewritten.sql,
            params: &params,
            request_id: &request_id,
            credential,
        });
        // Until the first batch nothing is written to the client, so its departure is watched
        // for: leaving stops the wait, and dropping the query cancels it on the warehouse.
        let execute = async {
            timeout_at(header_deadline.into(), execute)
                .await
                .map_err(|_| timeout_error())
        };
        match unless_gone(gone.as_mut(), client_gone, execute).await? {
            Ok(s) => break s,
            Err(ConnectorError::Unauthorized(_))
                if !retried && conn.credential == CredentialMode::Oauth =>
            {
                retried = true;
                tracing::info!("the warehouse refused the token: refreshing once and retrying");
                secret = Some(refreshed_credential(state, conn, &principal).await?);
            }
            Err(ConnectorError::Unauthorized(_)) if conn.credential == CredentialMode::Oauth => {
                return Err(crate::vault::web::reauth_required(&conn.id));
            }
            Err(e) => return Err(warehouse_error(&e)),
        }
    };
    audit.record.warehouse_query_id = stream.warehouse_query_id.clone();
    let first_batch = async {
        timeout_at(header_deadline.into(), stream.batches.next())
            .await
            .map_err(|_| timeout_error())?
            .transpose()
            .map_err(|e| warehouse_error(&e))
    };
    let first = unless_gone(gone.as_mut(), client_gone, first_batch).await?;

    // 6. Stream the answer; its end (or the client leaving) writes the completion record.
    let completion = audit.completion();
    let answer = Answer::start(
        format,
        stream,
        first,
        completion,
        limits.max_result_rows,
        deadline,
    )?;
    Ok(answer.into_response(format, limits.max_result_rows))
}

/// What a federated query needs besides the state and its audit.
struct Federated<'a> {
    principal: &'a Principal,
    sources: Vec<crate::federation::SourceRef>,
    sql: &'a str,
    policy: Arc<crate::app::Policy>,
    format: Format,
    deadline: Instant,
    header_deadline: Instant,
}

/// The `connection` recorded for federated queries (each sub-query names its own).
pub(crate) const FEDERATED: &str = "federated";

/// Each source connection's credential for the caller (never the service credential of a
/// per-user connection; `reauth_required` names the connection to connect).
pub(crate) async fn source_credentials(
    state: &AppState,
    principal: &Principal,
    sources: &[crate::federation::SourceRef],
) -> Result<std::collections::BTreeMap<String, crate::federation::SourceCredential>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for conn in sources.iter().map(crate::federation::SourceRef::connection) {
        if out.contains_key(&conn.id) {
            continue;
        }
        let secret = user_credential(state, conn, principal).await?;
        let passthrough_role = passthrough_role(conn.credential, principal)?;
        // A per-user connection whose record lacks this mode's secret: never the service
        // credential instead.
        if conn.credential != CredentialMode::Service
            && user_credential_ref(
                conn.credential,
                secret.as_ref(),
                principal,
                &passthrough_role,
            )
            .is_none()
        {
            return Err(crate::vault::web::reauth_required(&conn.id));
        }
        out.insert(
            conn.id.clone(),
            crate::federation::SourceCredential {
                secret: secret.map(Arc::new),
                passthrough_role,
            },
        );
    }
    Ok(out)
}

/// A query over several connections: credentials, the attempt record, the workspace (schema
/// probes, planning: each scan's sub-query through the policy), then the answer as usual.
async fn run_federated(
    state: &AppState,
    f: Federated<'_>,
    audit: &mut QueryAudit,
    mut gone: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> Result<Response, ApiError> {
    audit.record.connection = Some(FEDERATED.into());
    audit.record.policy_version = Some(f.policy.version.clone());
    audit.record.tables = f
        .sources
        .iter()
        .map(crate::federation::SourceRef::audit_name)
        .collect();
    let credentials = source_credentials(state, f.principal, &f.sources).await?;
    // The attempt is durable before any source sees anything (schema probes included).
    timeout_at(f.header_deadline.into(), audit.attempt())
        .await
        .map_err(|_| timeout_error())??;
    let request_id = current_request_id();
    let planning = async {
        timeout_at(
            f.header_deadline.into(),
            crate::federation::plan(
                state,
                Arc::clone(&f.policy),
                f.principal,
                f.sources,
                credentials,
                f.sql,
                &request_id,
            ),
        )
        .await
        .map_err(|_| timeout_error())?
    };
    let planned = unless_gone(gone.as_deref_mut(), client_gone, planning).await?;
    audit.record.sub_queries = planned.log.lock().map(|l| l.clone()).unwrap_or_default();
    let log = Arc::clone(&planned.log);
    let mut stream =
        crate::federation::execute(planned, state.config.federation.target_partitions)?;
    let first_batch = async {
        timeout_at(f.header_deadline.into(), stream.batches.next())
            .await
            .map_err(|_| timeout_error())?
            .transpose()
            .map_err(|e| match e {
                // A source refused the user's token: that connection needs re-authorization
                // (no refresh-and-retry inside a federated query).
                ConnectorError::Unauthorized(id) if state.connections.contains_key(&id) => {
                    crate::vault::web::reauth_required(&id)
                }
                e => warehouse_error(&e),
            })
    };
    let first = unless_gone(gone, client_gone, first_batch).await?;
    let mut completion = audit.completion();
    completion.sub_queries = Some(log);
    let limits = &state.config.limits;
    let max_rows = f
        .policy
        .row_limit(&f.principal.groups)
        .map_or(limits.max_result_rows, |g| g.min(limits.max_result_rows));
    let answer = Answer::start(f.format, stream, first, completion, max_rows, f.deadline)?;
    Ok(answer.into_response(f.format, max_rows))
}

/// The form a connector takes a per-user secret in.
pub(crate) fn user_credential_ref<'a>(
    mode: CredentialMode,
    secret: Option<&'a crate::vault::store::Secret>,
    principal: &'a Principal,
    passthrough_role: &'a str,
) -> Option<UserCredential<'a>> {
    let user = principal.user.as_str();
    match (mode, secret) {
        (CredentialMode::Passthrough, _) => Some(UserCredential::Passthrough {
            role: passthrough_role,
            tenant: &principal.tenant,
        }),
        (CredentialMode::Oauth, Some(s)) => s.access_token.as_deref().map(UserCredential::Bearer),
        (CredentialMode::Password, Some(s)) => s
            .password
            .as_deref()
            .map(|password| UserCredential::Password { user, password }),
        _ => None,
    }
}

/// The database role a passthrough query acts as: `<tenant>.<user>`, so a user id can only
/// ever reach a role of its own tenant (a service client scoped to one tenant cannot mint a
/// ticket that acts as another tenant's role). Tenants with a `.` are refused, which keeps the
/// mapping one-to-one.
fn passthrough_role(mode: CredentialMode, principal: &Principal) -> Result<String, ApiError> {
    if mode != CredentialMode::Passthrough {
        return Ok(String::new());
    }
    if principal.tenant.contains('.') {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_tenant",
            "passthrough connections need tenant ids without '.'",
        ));
    }
    Ok(format!("{}.{}", principal.tenant, principal.user))
}

/// The caller's token, refreshed now (the warehouse refused the one it had).
async fn refreshed_credential(
    state: &AppState,
    conn: &Connection,
    principal: &Principal,
) -> Result<crate::vault::store::Secret, ApiError> {
    let vault = state.vault.as_ref().ok_or_else(ApiError::internal)?;
    let owner = crate::vault::web::owner(principal, &conn.id);
    vault
        .force_refresh(&owner, &state.audit)
        .await
        .map_err(|a| access_error(a, &conn.id))
}

fn access_error(a: crate::vault::Access, connection: &str) -> ApiError {
    match a {
        crate::vault::Access::ReauthRequired => crate::vault::web::reauth_required(connection),
        crate::vault::Access::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "vault_unavailable",
            "the credential vault cannot be used right now",
        ),
        crate::vault::Access::RefreshFailing => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credential_refresh_failing",
            "your warehouse token expired and its authorization server cannot renew it right now; \
             retry shortly",
        ),
    }
}

/// The caller's own credential for a connection with per-user credentials, from the vault.
async fn user_credential(
    state: &AppState,
    conn: &Connection,
    principal: &Principal,
) -> Result<Option<crate::vault::store::Secret>, ApiError> {
    if matches!(
        conn.credential,
        CredentialMode::Service | CredentialMode::Passthrough
    ) {
        return Ok(None);
    }
    let vault = state.vault.as_ref().ok_or_else(ApiError::internal)?;
    let owner = crate::vault::web::owner(principal, &conn.id);
    vault
        .credential(&owner, &state.audit)
        .await
        .map(Some)
        .map_err(|a| access_error(a, &conn.id))
}

/// Reads and checks a query body (`{"sql", "connection"?}`).
pub(crate) async fn read_json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
) -> Result<T, ApiError> {
    read_json_body_as(
        headers,
        body,
        max_bytes,
        "{\"sql\": string, \"connection\": string?}",
    )
    .await
}

/// Reads and checks a JSON body: media type, size, encoding, JSON shape (`shape` names the
/// expected one in the error).
pub(crate) async fn read_json_body_as<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
    shape: &str,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {max_bytes} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, max_bytes).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if is_limit {
            too_large()
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_encoding",
            format!(
                "the request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_request", format!("the body must be {shape}: {e}"))
        }
        _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

pub(crate) fn connection<'a>(
    state: &'a AppState,
    id: Option<&str>,
) -> Result<&'a Arc<Connection>, ApiError> {
    match id {
        Some(id) => state.connections.get(id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                format!("no connection named {id:?} is declared"),
            )
        }),
        None if state.connections.len() == 1 => state
            .connections
            .values()
            .next()
            .ok_or_else(ApiError::internal),
        None => Err(ApiError::bad_request(
            "connection_required",
            "several connections are declared: name one with \"connection\"",
        )),
    }
}

/// The principal's role does not allow data queries (compliance principals never may).
pub(crate) fn forbidden_role() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_role",
        "your role may not run data queries (compliance principals read the audit log only)",
    )
}

/// The client closed its connection before the answer started (nginx's 499).
fn client_gone() -> ApiError {
    let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(
        status,
        "client_disconnected",
        "the client closed the connection",
    )
}

fn timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "the query took longer than allowed",
    )
}

pub(crate) fn warehouse_error(e: &ConnectorError) -> ApiError {
    tracing::warn!(kind = e.kind(), error = %e.log_message(), "warehouse error");
    match e {
        ConnectorError::Plan(_) => ApiError::bad_request("invalid_query", e.client_message()),
        ConnectorError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "warehouse_unavailable",
            e.client_message(),
        ),
        ConnectorError::ResourceExhausted(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "resource_exhausted",
            e.client_message(),
        ),
        _ => {
            let mut err = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "warehouse_error",
                e.client_message(),
            );
            let extra = err.extra_mut();
            extra.warehouse_code = e.warehouse_code().map(str::to_string);
            extra.audit_detail = Some(e.to_string());
            err
        }
    }
}

/// Collects what the audit log records about one request, so that every way out of
/// [`run_query`] writes exactly one denied record, or an attempt and a completion.
struct QueryAudit {
    log: AuditLog,
    record: AuditRecord,
    started: Instant,
    attempted: bool,
    /// Set once the final record of this stage is handed over (to `failed` or `completion`).
    finished: bool,
}

impl QueryAudit {
    fn new(log: &AuditLog, req: &Request) -> Self {
        let mut record = AuditRecord::new(Event::QueryDenied, current_request_id(), Decision::Deny);
        record.client_addr = req
            .extensions()
            .get::<ConnectInfo<ClientConn>>()
            .map(|ci| ci.0.addr.ip().to_string());
        record.user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| truncate(s, 256));
        QueryAudit {
            log: log.clone(),
            record,
            started: Instant::now(),
            attempted: false,
            finished: false,
        }
    }

    fn principal(&mut self, p: &Principal) {
        self.record.user = Some(p.user.clone());
        self.record.tenant = Some(p.tenant.clone());
        self.record.groups = p.groups.clone();
        self.record.auth_method = Some(p.method.as_str().into());
        self.record.session_id = p.session_id.clone();
    }

    fn rewritten(&mut self, r: &RewrittenQuery, redact: Option<sluice_policy::Dialect>) {
        self.record.rewritten_sql = Some(match redact {
            Some(d) => sluice_policy::redact_literals(&r.sql, d),
            None => r.sql.clone(),
        });
        self.record.columns = r.manifest.columns.clone();
        self.record.params = r.params.iter().map(|p| p.value.clone()).collect();
        self.record.tables = r.manifest.tables.iter().map(|t| t.to_string()).collect();
    }

    /// Commits the attempt record; refuses the query if the log cannot be written.
    async fn attempt(&mut self) -> Result<(), ApiError> {
        let mut record = self.record.clone();
        record.event = Event::QueryAttempt;
        record.decision = Decision::Allow;
        record.ts = now();
        self.log.append(record).await.map_err(|e| {
            tracing::error!(error = %e, "audit attempt not recorded: refusing the query");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log cannot be written, so no query can run",
            )
        })?;
        self.attempted = true;
        Ok(())
    }

    /// Records a request that ended in an error before its answer started.
    async fn failed(mut self, err: &ApiError) {
        self.finished = true;
        let mut record = std::mem::replace(
            &mut self.record,
            AuditRecord::new(Event::QueryDenied, "", Decision::Deny),
        );
        record.ts = now();
        record.code = Some(err.code.to_string());
        record.reason = err.reason.map(str::to_string);
        record.error = Some(
            err.extra
                .as_ref()
                .and_then(|e| e.audit_detail.clone())
                .unwrap_or_else(|| err.message.clone()),
        );
        record.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if self.attempted {
            record.event = Event::QueryCompletion;
            record.decision = Decision::Allow;
            record.outcome = Some(
                match err.code {
                    "timeout" => "timeout",
                    "client_disconnected" => "cancelled",
                    _ => "error",
                }
                .into(),
            );
        }
        tracing::info!(code = err.code, "query refused or failed");
        if let Err(e) = self.log.append(record).await {
            tracing::error!(error = %e, "audit record for a failed request not written");
        }
    }

    fn completion(&mut self) -> Completion {
        self.finished = true;
        let mut record = self.record.clone();
        record.event = Event::QueryCompletion;
        record.decision = Decision::Allow;
        Completion {
            log: self.log.clone(),
            record: Some(record),
            started: self.started,
            rows: 0,
            bytes: 0,
            sub_queries: None,
        }
    }
}

impl Drop for QueryAudit {
    /// The request was dropped before it ended (the client disconnected while it was being
    /// processed): record that too.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut record = self.record.clone();
        record.ts = now();
        record.code = Some("client_disconnected".into());
        record.error = Some("the client disconnected before the answer started".into());
        record.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if self.attempted {
            record.event = Event::QueryCompletion;
            record.decision = Decision::Allow;
            record.outcome = Some("cancelled".into());
        }
        self.log.append_detached(record);
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The completion record of a streaming answer. Written when the answer ends; if the response
/// is dropped first (the client left), written on drop with outcome `cancelled`.
struct Completion {
    log: AuditLog,
    record: Option<AuditRecord>,
    started: Instant,
    rows: u64,
    bytes: u64,
    /// A federated query's sub-queries, completed by the scans as they run (warehouse query
    /// ids, rows).
    sub_queries: Option<crate::federation::SubQueryLog>,
}

impl Completion {
    fn fill(&mut self, outcome: &str, error: Option<(&str, &str)>) -> Option<AuditRecord> {
        let mut r = self.record.take()?;
        if let Some(log) = &self.sub_queries
            && let Ok(l) = log.lock()
        {
            r.sub_queries = l.clone();
        }
        r.ts = now();
        r.outcome = Some(outcome.into());
        r.rows = Some(self.rows);
        r.bytes = Some(self.bytes);
        r.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
        if let Some((code, message)) = error {
            r.code = Some(code.into());
            r.error = Some(message.into());
        }
        Some(r)
    }

    async fn finish(&mut self, outcome: &str, error: Option<(&str, &str)>) {
        if let Some(r) = self.fill(outcome, error)
            && let Err(e) = self.log.append(r).await
        {
            tracing::error!(error = %e, "audit completion record not written");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(r) = self.fill("cancelled", None) {
            self.log.append_detached(r);
        }
    }
}

/// Where a streaming answer is.
enum Phase {
    Streaming,
    Finishing(Option<(&'static str, String)>),
    Trailers,
    Done,
}

/// A streaming answer.
struct Answer {
    format: Format,
    encoder: Encoder,
    head: Option<Bytes>,
    batches: Option<futures::stream::BoxStream<'static, Result<RecordBatch, ConnectorError>>>,
    pending: Option<RecordBatch>,
    max_rows: u64,
    truncated: bool,
    deadline: Instant,
    completion: Completion,
    phase: Phase,
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

impl Answer {
    fn start(
        format: Format,
        stream: QueryStream,
        first: Option<RecordBatch>,
        completion: Completion,
        max_rows: u64,
        deadline: Instant,
    ) -> Result<Self, ApiError> {
        let request_id = current_request_id();
        let (encoder, head) = Encoder::start(format, &stream.schema, &request_id).map_err(|e| {
            tracing::error!(error = %e, "cannot encode the answer");
            ApiError::internal()
        })?;
        Ok(Answer {
            format,
            encoder,
            head: Some(head),
            // No first batch means the answer is empty and the stream has ended: never poll it
            // again.
            batches: first.is_some().then_some(stream.batches),
            pending: first,
            max_rows,
            truncated: false,
            deadline,
            completion,
            phase: Phase::Streaming,
        })
    }

    fn into_response(self, format: Format, max_rows: u64) -> Response {
        let stream = futures::stream::unfold(self, |mut a| async move {
            let frame = a.step().await?;
            Some((frame, a))
        });
        let mut resp = Body::new(http_body_util::StreamBody::new(stream)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("sluice-row-limit", HeaderValue::from(max_rows));
        if format != Format::Json {
            h.insert(
                header::TRAILER,
                HeaderValue::from_static("sluice-row-count, sluice-truncated"),
            );
        }
        resp
    }

    /// Produces the next frame, or `None` at the end.
    async fn step(&mut self) -> Option<FrameResult> {
        if let Some(head) = self.head.take() {
            self.completion.bytes += head.len() as u64;
            return Some(Ok(Frame::data(head)));
        }
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Streaming => {
                    self.phase = Phase::Streaming;
                    match self.next_batch().await {
                        Ok(Some(batch)) => {
                            if let Some(bytes) = self.encode(batch) {
                                return Some(bytes);
                            }
                        }
                        Ok(None) => self.phase = Phase::Finishing(None),
                        Err(e) => self.phase = Phase::Finishing(Some(e)),
                    }
                }
                Phase::Finishing(error) => return Some(self.finish(error).await),
                Phase::Trailers => {
                    let mut t = HeaderMap::new();
                    t.insert("sluice-row-count", HeaderValue::from(self.completion.rows));
                    t.insert(
                        "sluice-truncated",
                        HeaderValue::from_static(if self.truncated { "true" } else { "false" }),
                    );
                    return Some(Ok(Frame::trailers(t)));
                }
                Phase::Done => return None,
            }
        }
    }

    /// The next non-empty batch, honouring the deadline and the row cap.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, (&'static str, String)> {
        loop {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => {
                    let Some(batches) = self.batches.as_mut() else {
                        return Ok(None);
                    };
                    // `timeout_at` polls its future first, so a source that always has a batch
                    // ready would never time out: check the deadline explicitly.
                    if Instant::now() >= self.deadline {
                        self.batches = None;
                        return Err(("timeout", "the query took longer than allowed".into()));
                    }
                    match timeout_at(self.deadline.into(), batches.next()).await {
                        Err(_) => {
                            self.batches = None;
                            return Err(("timeout", "the query took longer than allowed".into()));
                        }
                        Ok(None) => return Ok(None),
                        Ok(Some(Err(e))) => {
                            self.batches = None;
                            let api = warehouse_error(&e);
                            return Err((api.code, api.message));
                        }
                        Ok(Some(Ok(b))) => b,
                    }
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let remaining = self.max_rows.saturating_sub(self.completion.rows);
            if remaining == 0 {
                // More rows exist beyond the cap: stop the warehouse query by dropping it.
                self.truncated = true;
                self.batches = None;
                return Ok(None);
            }
            if batch.num_rows() as u64 > remaining {
                self.truncated = true;
                self.batches = None;
                return Ok(Some(batch.slice(0, remaining as usize)));
            }
            return Ok(Some(batch));
        }
    }

    fn encode(&mut self, batch: RecordBatch) -> Option<FrameResult> {
        match self.encoder.batch(&batch) {
            Ok(bytes) => {
                self.completion.rows += batch.num_rows() as u64;
                self.completion.bytes += bytes.len() as u64;
                if bytes.is_empty() {
                    None
                } else {
                    Some(Ok(Frame::data(bytes)))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding failed");
                self.phase =
                    Phase::Finishing(Some(("internal", "the answer could not be encoded".into())));
                None
            }
        }
    }

    async fn finish(&mut self, error: Option<(&'static str, String)>) -> FrameResult {
        self.batches = None;
        let trailing = error
            .as_ref()
            .map(|(code, message)| TrailingError { code, message });
        let tail = self
            .encoder
            .finish(self.completion.rows, self.truncated, trailing);
        let outcome = match (&error, self.truncated) {
            (Some(("timeout", _)), _) => "timeout",
            (Some(_), _) => "error",
            (None, true) => "truncated",
            (None, false) => "ok",
        };
        let tail_len = tail.as_ref().map(|t| t.len() as u64).unwrap_or(0);
        self.completion.bytes += tail_len;
        self.completion
            .finish(outcome, error.as_ref().map(|(c, m)| (*c, m.as_str())))
            .await;
        match (tail, &error, self.format) {
            // Arrow and CSV have no place for an error: abort the body so the client sees an
            // incomplete transfer rather than a short answer that looks complete.
            (_, Some((code, _)), Format::Arrow | Format::Csv) => {
                self.phase = Phase::Done;
                Err(std::io::Error::other(format!(
                    "query failed mid-stream: {code}"
                )))
            }
            (Ok(bytes), _, Format::Json) => {
                self.phase = Phase::Done;
                Ok(Frame::data(bytes))
            }
            (Ok(bytes), None, _) => {
                self.phase = Phase::Trailers;
                Ok(Frame::data(bytes))
            }
            (Err(e), _, _) => {
                self.phase = Phase::Done;
                Err(std::io::Error::other(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::AuthMethod;

    fn principal(tenant: &str) -> Principal {
        Principal {
            user: "alice".into(),
            tenant: tenant.into(),
            groups: vec![],
            attributes: Default::default(),
            method: AuthMethod::Jwt,
            session_id: None,
        }
    }

    #[test]
    fn passthrough_roles_carry_the_tenant_and_stay_one_to_one() {
        assert_eq!(
            passthrough_role(CredentialMode::Passthrough, &principal("acme")).unwrap(),
            "acme.alice"
        );
        // "a.b" + "c" and "a" + "b.c" would both be "a.b.c": such tenants are refused.
        let e = passthrough_role(CredentialMode::Passthrough, &principal("a.b")).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "invalid_tenant")
        );
        assert_eq!(
            passthrough_role(CredentialMode::Service, &principal("a.b")).unwrap(),
            ""
        );
    }
}
