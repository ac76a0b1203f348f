//! Policy explain: what the policy would send for a query, without running it.
//! `POST /v1/policy/explain` (for the authenticated caller) and `sluice policy explain`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_policy::{Caller, Catalog};

use crate::app::AppState;
use crate::error::ApiError;
use crate::query::{QueryBody, connection, read_json_body};

/// The explain document: `{"decision":"allow","sql",..,"params",..,"manifest":{..}}` or
/// `{"decision":"reject","code",..,"message",..}`.
pub fn explain(catalog: &Catalog, caller: &Caller<'_>, sql: &str) -> Value {
    match sluice_policy::rewrite(sql, catalog, caller) {
        Ok(r) => json!({
            "decision": "allow",
            "sql": r.sql,
            "params": r.params.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
            "manifest": {
                "tables": r.manifest.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "columns": r.manifest.columns,
            },
        }),
        Err(e) => json!({
            "decision": "reject",
            "code": e.code(),
            "reason": e.reason(),
            "message": e.to_string(),
        }),
    }
}

/// `POST /v1/policy/explain`: the same body as `/v1/query`; the caller's own principal.
pub async fn handle_explain(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match run(&state, req).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, req: Request) -> Result<Value, ApiError> {
    let (parts, body) = req.into_parts();
    let (principal, _) = crate::auth::web::authenticate_audited(state, &parts).await?;
    if !state.config.auth.roles.may_query(&principal.groups) {
        return Err(crate::query::forbidden_role());
    }
    let request: QueryBody =
        read_json_body(&parts.headers, body, state.config.server.max_body_bytes).await?;
    let policy = state.policy();
    let reject = |e: ApiError| json!({"decision": "reject", "code": e.code, "reason": e.reason, "message": e.message});
    let (conn, sql) = match request.connection.as_deref() {
        None if state.connections.len() > 1 => {
            match crate::federation::route(state, &policy, &request.sql) {
                Err(e) => return Ok(reject(e)),
                Ok(crate::federation::Route::Single { conn, sql }) => (conn, sql),
                Ok(crate::federation::Route::Federated(sources)) => {
                    return federated(state, &principal, policy, sources, &request.sql)
                        .await
                        .or_else(|e| Ok(reject(e)));
                }
            }
        }
        id => (Arc::clone(connection(state, id)?), request.sql.clone()),
    };
    let (catalog, caller) = policy
        .for_caller(&conn.id, &principal)
        .ok_or_else(ApiError::internal)?;
    let mut v = explain(catalog, &caller, &sql);
    v["connection"] = json!(conn.id);
    Ok(v)
}

/// A federated query's explain: each source's sub-query as the policy rewrote it, and the
/// workspace's plan (where the join runs). Planning asks each source for its table's schema
/// (a `WHERE 1 = 0` query through the policy, with the caller's own credential); no rows are
/// read.
async fn federated(
    state: &AppState,
    principal: &crate::auth::Principal,
    policy: Arc<crate::app::Policy>,
    sources: Vec<crate::federation::SourceRef>,
    sql: &str,
) -> Result<Value, ApiError> {
    let credentials = crate::query::source_credentials(state, principal, &sources).await?;
    let request_id = crate::error::current_request_id();
    let planned = crate::federation::plan(
        state,
        policy,
        principal,
        sources,
        credentials,
        sql,
        &request_id,
    )
    .await?;
    let sub_queries = planned.log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(json!({
        "decision": "allow",
        "connection": crate::query::FEDERATED,
        "tables": planned.tables,
        "sub_queries": sub_queries
            .iter()
            .map(|s| json!({"connection": s.connection, "sql": s.sql}))
            .collect::<Vec<_>>(),
        "plan": crate::federation::display(&planned.plan),
    }))
}
