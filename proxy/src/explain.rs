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
    let conn = connection(state, request.connection.as_deref())?;
    let policy = state.policy();
    let (catalog, caller) = policy
        .for_caller(&conn.id, &principal)
        .ok_or_else(ApiError::internal)?;
    Ok(explain(catalog, &caller, &request.sql))
}
