//! The web-ticket flow, sessions and their administration, over HTTP.
//!
//! 1. `POST /v1/auth/token`: the host's backend authenticates with its service client id and
//!    secret and gets a short-lived service token (`sst_...`).
//! 2. `POST /v1/tickets` (with the service token): a one-time ticket (`slt_...`) for one user
//!    of a tenant in the client's scope.
//! 3. `POST /v1/sessions` with the ticket: exchanged once for a session (`sls_...`), set as an
//!    HttpOnly cookie and returned as a bearer token.
//! 4. `DELETE /v1/sessions/current` signs out; `DELETE /v1/admin/users/{user}/sessions`
//!    (admin) revokes every session of a user.
//!
//! Every success and every failure is written to the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sluice_audit::{AuditRecord, Decision, Event};

use crate::app::AppState;
use crate::auth::Credential;
use crate::auth::principal::{
    API_KEY_PREFIX, AuthError, AuthMethod, ClientInfo, MAX_ATTRIBUTES, MAX_GROUPS, Principal,
    SERVICE_PREFIX, SESSION_PREFIX, TICKET_PREFIX, random_token, token_hash, unix_now, valid_name,
};
use crate::auth::store::{NewToken, TokenKind};
use crate::config::SameSite;
use crate::context::current_request_id;
use crate::error::{Error, Kind};
use crate::http::body::read_json_body_as;

/// How the audit log names this front door.
pub const FRONT_DOOR: &str = "http";

/// Largest body of the auth endpoints.
const MAX_AUTH_BODY_BYTES: usize = 16 * 1024;

/// Writes an authentication event (success or failure) to the audit log.
pub async fn audit_auth(
    state: &AppState,
    client: &ClientInfo,
    event: Event,
    code: &str,
    who: Who<'_>,
) {
    let decision = if event == Event::AuthDenied {
        Decision::Deny
    } else {
        Decision::Allow
    };
    let mut r = AuditRecord::new(event, current_request_id(), decision);
    r.code = Some(code.to_string());
    r.client_addr = client.addr.map(|a| a.to_string());
    r.user_agent = client.user_agent.clone();
    r.front_door = client.front_door.map(str::to_string);
    match who {
        Who::Principal(p, method) => {
            r.user = Some(p.user.clone());
            r.tenant = Some(p.tenant.clone());
            r.groups = p.groups.clone();
            r.session_id = p.session_id.clone();
            r.auth_method = Some(method.unwrap_or(p.method.as_str()).to_string());
        }
        Who::Claimed(user, method) => {
            r.user = user.map(str::to_string);
            r.auth_method = Some(method.to_string());
        }
    }
    if event == Event::AuthDenied {
        tracing::info!(code, "authentication refused");
    }
    if let Err(e) = state.audit.append(r).await {
        tracing::error!(error = %e, "audit record for an authentication event not written");
    }
}

/// Audits a refused authentication and answers it.
async fn deny(state: &AppState, client: &ClientInfo, e: AuthError, who: Who<'_>) -> Response {
    audit_auth(state, client, Event::AuthDenied, e.code(), who).await;
    Error::from(e).into_response()
}

/// Whom an authentication record is about.
pub enum Who<'a> {
    /// A verified principal, with the method to record (its own if `None`).
    Principal(&'a Principal, Option<&'a str>),
    /// A claimed (unverified) identity, if any, and the method tried.
    Claimed(Option<&'a str>, &'a str),
}

/// The method a bearer credential tries, for the audit log of a failure.
pub fn method_tried(headers: &HeaderMap, cookie_name: &str) -> &'static str {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match bearer {
        Some(t) if t.starts_with(SESSION_PREFIX) => "session",
        Some(t) if t.starts_with(API_KEY_PREFIX) => "api_key",
        Some(t) if t.starts_with(SERVICE_PREFIX) => "service_token",
        Some(t) if t.starts_with(TICKET_PREFIX) => "ticket",
        Some(_) => "jwt",
        None if cookie(headers, cookie_name).is_some() => "session",
        None => "none",
    }
}

/// Authenticates a request to a non-query endpoint, auditing a failure.
pub async fn authenticate_audited(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<(Principal, ClientInfo), Error> {
    let client = client_info(parts);
    match authenticate(state, parts, &client).await {
        Ok(p) => Ok((p, client)),
        Err(e) => {
            let method = method_tried(&parts.headers, &state.config.auth.sessions.cookie_name);
            audit_auth(
                state,
                &client,
                Event::AuthDenied,
                e.code(),
                Who::Claimed(None, method),
            )
            .await;
            Err(e.into())
        }
    }
}

fn json_status(status: StatusCode, v: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(v)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn tickets_enabled(state: &AppState) -> Result<(), Error> {
    if state.config.auth.tickets.enabled {
        Ok(())
    } else {
        Err(Error::new(
            Kind::Request,
            "not_found",
            "the web-ticket flow is disabled on this server",
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::auth::store::StoreError> + Send + 'static,
) -> Result<T, AuthError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "auth store failure");
            Err(AuthError::StoreUnavailable)
        }
        Err(_) => Err(AuthError::StoreUnavailable),
    }
}

// ---- 1. service token ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    client_id: String,
    client_secret: String,
}

/// `POST /v1/auth/token`: service client credentials (JSON body or HTTP Basic) for a
/// short-lived service token.
pub async fn service_token(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let client = client_info(&parts);
    let result = async {
        tickets_enabled(&state)?;
        let (id, secret) = match basic_credentials(&parts.headers) {
            Some(c) => c,
            None => {
                let b: TokenBody = read_json_body_as(
                    &parts.headers,
                    body,
                    MAX_AUTH_BODY_BYTES,
                    "{\"client_id\": string, \"client_secret\": string}",
                )
                .await?;
                (b.client_id, b.client_secret)
            }
        };
        Ok::<_, Error>((id, secret))
    }
    .await;
    let (id, secret) = match result {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match issue_service_token(&state, &client, &id, &secret).await {
        Ok(v) => json_status(StatusCode::OK, v),
        Err(e) => {
            let who = Who::Claimed(valid_name(&id).then_some(id.as_str()), "service_client");
            deny(&state, &client, e, who).await
        }
    }
}

async fn issue_service_token(
    state: &AppState,
    client: &ClientInfo,
    id: &str,
    secret: &str,
) -> Result<serde_json::Value, AuthError> {
    let limiter = &state.auth.limiter;
    limiter.check_addr(client.addr)?;
    let principal_key = format!("client:{id}");
    let now = unix_now();
    let found = if valid_name(id) && secret.len() <= crate::auth::principal::MAX_TOKEN_BYTES {
        let store = Arc::clone(&state.auth.store);
        let (id, secret) = (id.to_string(), secret.to_string());
        blocking(move || store.check_client(&id, &secret, now)).await?
    } else {
        None
    };
    let Some(found) = found else {
        limiter.fail_addr(client.addr);
        return Err(limiter.fail_principal(&principal_key, client.addr, AuthError::InvalidClient));
    };
    let ttl = state.config.auth.tickets.service_token_ttl_secs as i64;
    let token = random_token(SERVICE_PREFIX)?;
    let store = Arc::clone(&state.auth.store);
    let (t, cid) = (token.clone(), found.client_id.clone());
    blocking(move || store.insert_service_token(&t, &cid, now, now + ttl)).await?;
    let mut r = AuditRecord::new(Event::AuthEvent, current_request_id(), Decision::Allow);
    r.code = Some("service_token_issued".into());
    r.user = Some(found.client_id.clone());
    r.auth_method = Some("service_client".into());
    r.client_addr = client.addr.map(|a| a.to_string());
    r.user_agent = client.user_agent.clone();
    r.front_door = client.front_door.map(str::to_string);
    if let Err(e) = state.audit.append(r).await {
        tracing::error!(error = %e, "audit record not written");
    }
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
    }))
}

/// `Authorization: Basic` client id and secret.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

// ---- 2. tickets ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketBody {
    user: String,
    tenant: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, serde_json::Value>,
    ttl_secs: Option<u64>,
}

/// `POST /v1/tickets` (service token): a one-time ticket for one user.
pub async fn mint_ticket(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let client = client_info(&parts);
    if let Err(e) = tickets_enabled(&state) {
        return e.into_response();
    }
    // The caller: a live service token.
    let service = match service_caller(&state, &parts.headers, &client).await {
        Ok(s) => s,
        Err(e) => return deny(&state, &client, e, Who::Claimed(None, "service_token")).await,
    };
    let request: TicketBody = match read_json_body_as(
        &parts.headers,
        body,
        MAX_AUTH_BODY_BYTES,
        "{\"user\": string, \"tenant\": string, \"groups\": [string]?, \"attributes\": {string: string | integer | [string] | [integer]}?, \"ttl_secs\": number?}",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let method = format!("service_token:{}", service.client_id);
    match ticket_for(&state, &service, request).await {
        Ok((ticket, principal, ttl)) => {
            audit_auth(
                &state,
                &client,
                Event::AuthEvent,
                "ticket_issued",
                Who::Principal(&principal, Some(&method)),
            )
            .await;
            json_status(
                StatusCode::CREATED,
                json!({ "ticket": ticket, "expires_in": ttl }),
            )
        }
        Err(e) => {
            audit_auth(
                &state,
                &client,
                Event::AuthDenied,
                e.code,
                Who::Claimed(Some(&service.client_id), &method),
            )
            .await;
            e.into_response()
        }
    }
}

async fn service_caller(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Result<crate::auth::store::ServiceClient, AuthError> {
    state.auth.limiter.check_addr(client.addr)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(AuthError::Missing)?;
    if !token.starts_with(SERVICE_PREFIX) || token.len() > crate::auth::principal::MAX_TOKEN_BYTES {
        state.auth.limiter.fail_addr(client.addr);
        return Err(AuthError::WrongCredential(
            "tickets are minted with a service token (POST /v1/auth/token)",
        ));
    }
    let hash = token_hash(token);
    let store = Arc::clone(&state.auth.store);
    let now = unix_now();
    let found = blocking(move || store.service_token_client(&hash, now)).await?;
    found.ok_or_else(|| {
        state.auth.limiter.fail_addr(client.addr);
        AuthError::ServiceTokenInvalid
    })
}

async fn ticket_for(
    state: &AppState,
    service: &crate::auth::store::ServiceClient,
    request: TicketBody,
) -> Result<(String, Principal, u64), Error> {
    let bad = |m: String| Error::request("invalid_request", m);
    if !valid_name(&request.user) {
        return Err(bad(
            "user must be a non-empty string of at most 256 characters".into(),
        ));
    }
    if !valid_name(&request.tenant) {
        return Err(bad(
            "tenant must be a non-empty string of at most 256 characters".into(),
        ));
    }
    if request.groups.len() > MAX_GROUPS || !request.groups.iter().all(|g| valid_name(g)) {
        return Err(bad("groups must be at most 256 non-empty strings".into()));
    }
    if request.attributes.len() > MAX_ATTRIBUTES {
        return Err(bad(format!("at most {MAX_ATTRIBUTES} attributes")));
    }
    // Each attribute of its declared type (`[auth.attributes]`; text when not declared).
    let types = state.config.auth.attribute_types().unwrap_or_default();
    let mut attributes = BTreeMap::new();
    for (name, v) in &request.attributes {
        if !valid_name(name) {
            return Err(bad("attribute names must be non-empty strings".into()));
        }
        let value = crate::auth::jwt::attribute_value(name, v, &types)
            .map_err(|why| bad(format!("attributes.{why}")))?;
        attributes.insert(name.clone(), value);
    }
    if !service.may_mint_for(&request.tenant) {
        return Err(AuthError::TenantNotAllowed(request.tenant).into());
    }
    // A customer's backend mints only the attribute values it is allowed to.
    for (name, value) in &attributes {
        if !service.may_mint_attribute(name, value) {
            return Err(AuthError::AttributeNotAllowed(name.clone()).into());
        }
    }
    let roles = &state.config.auth.roles;
    let policy = state.engine.policy();
    for g in &request.groups {
        // Without a group scope a client mints any group, except one that exempts its members
        // from a row filter: that must be granted to the client by name (`--groups`).
        let in_scope = match &service.groups {
            Some(allowed) => allowed.iter().any(|a| a == g),
            None => !policy.exempts(g),
        };
        // A customer's backend mints end users: never sluice administrators or auditors.
        let privileged =
            roles.is_admin(std::slice::from_ref(g)) || roles.is_compliance(std::slice::from_ref(g));
        if !in_scope || privileged {
            return Err(AuthError::GroupNotAllowed(g.clone()).into());
        }
    }
    if roles.is_admin(&request.groups) || roles.is_compliance(&request.groups) {
        // A role granted to everyone ("*") would make every ticket privileged.
        return Err(AuthError::GroupNotAllowed("*".into()).into());
    }
    let max = state.config.auth.tickets.ticket_ttl_secs;
    let ttl = request.ttl_secs.unwrap_or(max);
    if ttl == 0 || ttl > max {
        return Err(bad(format!("ttl_secs must be between 1 and {max}")));
    }
    let principal = Principal {
        user: request.user,
        tenant: request.tenant,
        groups: request.groups,
        attributes,
        method: AuthMethod::TicketSession,
        session_id: None,
    };
    let ticket = random_token(TICKET_PREFIX)?;
    let now = unix_now();
    let store = Arc::clone(&state.auth.store);
    let (t, p, cid) = (ticket.clone(), principal.clone(), service.client_id.clone());
    blocking(move || {
        store.insert(&NewToken {
            kind: TokenKind::Ticket,
            token: &t,
            id: &uuid::Uuid::new_v4().to_string(),
            principal: &p,
            client_id: Some(&cid),
            now,
            expires: now + ttl as i64,
            max_expires: now + ttl as i64,
        })
    })
    .await?;
    Ok((ticket, principal, ttl))
}

// ---- 3. sessions ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    ticket: String,
}

/// `POST /v1/sessions`: a ticket, exchanged once, for a session.
pub async fn create_session(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let client = client_info(&parts);
    if let Err(e) = tickets_enabled(&state) {
        return e.into_response();
    }
    let request: SessionBody = match read_json_body_as(
        &parts.headers,
        body,
        MAX_AUTH_BODY_BYTES,
        "{\"ticket\": string}",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match exchange(&state, &client, &request.ticket).await {
        Ok((token, principal)) => {
            session_started(&state, &client, StatusCode::CREATED, &token, &principal).await
        }
        Err(e) => deny(&state, &client, e, Who::Claimed(None, "ticket")).await,
    }
}

async fn exchange(
    state: &AppState,
    client: &ClientInfo,
    ticket: &str,
) -> Result<(String, Principal), AuthError> {
    state.auth.limiter.check_addr(client.addr)?;
    if !ticket.starts_with(TICKET_PREFIX) || ticket.len() > crate::auth::principal::MAX_TOKEN_BYTES
    {
        state.auth.limiter.fail_addr(client.addr);
        return Err(AuthError::TicketInvalid);
    }
    let token = random_token(SESSION_PREFIX)?;
    let sessions = &state.config.auth.sessions;
    let (idle, max) = (sessions.idle_ttl_secs as i64, sessions.max_ttl_secs as i64);
    let now = unix_now();
    let store = Arc::clone(&state.auth.store);
    let (ticket, t) = (ticket.to_string(), token.clone());
    let result = blocking(move || {
        store.exchange_ticket(&ticket, now, |p| {
            let mut s = p.clone();
            s.method = AuthMethod::TicketSession;
            s.session_id = Some(uuid::Uuid::new_v4().to_string());
            Ok((t, s, now + idle.min(max), now + max))
        })
    })
    .await?;
    match result {
        Ok(p) => Ok((token, p)),
        Err(e) => {
            state.auth.limiter.fail_addr(client.addr);
            Err(e)
        }
    }
}

/// Stores a new session for a principal (SSO logins); returns its token.
pub async fn new_session(
    state: &AppState,
    principal: &Principal,
) -> Result<(String, Principal), AuthError> {
    let token = random_token(SESSION_PREFIX)?;
    let sessions = &state.config.auth.sessions;
    let (idle, max) = (sessions.idle_ttl_secs as i64, sessions.max_ttl_secs as i64);
    let now = unix_now();
    let mut p = principal.clone();
    p.session_id = Some(uuid::Uuid::new_v4().to_string());
    let store = Arc::clone(&state.auth.store);
    let (t, stored) = (token.clone(), p.clone());
    blocking(move || {
        store.insert(&NewToken {
            kind: TokenKind::Session,
            token: &t,
            id: stored.session_id.as_deref().unwrap_or_default(),
            principal: &stored,
            client_id: None,
            now,
            expires: now + idle.min(max),
            max_expires: now + max,
        })
    })
    .await?;
    Ok((token, p))
}

/// The `Set-Cookie` value carrying a session (or clearing it, with `None`).
pub fn session_cookie(state: &AppState, token: Option<&str>) -> String {
    let s = &state.config.auth.sessions;
    let same_site = match s.cookie_same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    };
    let secure = if s.cookie_secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{}={t}; Path=/; HttpOnly{secure}; SameSite={same_site}; Max-Age={}",
            s.cookie_name, s.max_ttl_secs
        ),
        None => format!(
            "{}=; Path=/; HttpOnly{secure}; SameSite={same_site}; Max-Age=0",
            s.cookie_name
        ),
    }
}

/// Audits a new session and answers with it.
pub async fn session_started(
    state: &AppState,
    client: &ClientInfo,
    status: StatusCode,
    token: &str,
    principal: &Principal,
) -> Response {
    audit_auth(
        state,
        client,
        Event::AuthEvent,
        "session_created",
        Who::Principal(principal, None),
    )
    .await;
    session_response(state, status, token, principal)
}

/// The answer of a new session: cookie and bearer token.
pub fn session_response(
    state: &AppState,
    status: StatusCode,
    token: &str,
    principal: &Principal,
) -> Response {
    let s = &state.config.auth.sessions;
    let mut resp = json_status(
        status,
        json!({
            "session_token": token,
            "token_type": "Bearer",
            "session_id": principal.session_id,
            "expires_in": s.idle_ttl_secs.min(s.max_ttl_secs),
            "max_expires_in": s.max_ttl_secs,
            "user": principal.user,
            "tenant": principal.tenant,
            "groups": principal.groups,
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&session_cookie(state, Some(token))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

// ---- 4. sign out, revoke ----

/// `DELETE /v1/sessions/current`: signs the caller's session out.
pub async fn delete_current(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (principal, client) = match authenticate_audited(&state, &parts).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| cookie(&parts.headers, &state.config.auth.sessions.cookie_name));
    let Some(token) = token.filter(|t| t.starts_with(SESSION_PREFIX)) else {
        return Error::request(
            "not_a_session",
            "only a session can be signed out; this credential is not one",
        )
        .into_response();
    };
    let hash = token_hash(&token);
    let store = Arc::clone(&state.auth.store);
    let now = unix_now();
    if let Err(e) = blocking(move || store.revoke(&hash, now)).await {
        return Error::from(e).into_response();
    }
    state.auth.forget_sessions(&[hash]);
    audit_auth(
        &state,
        &client,
        Event::AuthEvent,
        "session_revoked",
        Who::Principal(&principal, None),
    )
    .await;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&state, None)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Query of the revoke endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeParams {
    tenant: Option<String>,
}

/// `DELETE /v1/admin/users/{user}/sessions[?tenant=T]` (admin): revokes every session and
/// unused ticket of a user.
pub async fn revoke_user(
    State(state): State<Arc<AppState>>,
    Path(user): Path<String>,
    params: Result<Query<RevokeParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (admin, client) = match authenticate_audited(&state, &parts).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !state.config.auth.roles.is_admin(&admin.groups) {
        audit_auth(
            &state,
            &client,
            Event::AuthDenied,
            "forbidden_role",
            Who::Principal(&admin, None),
        )
        .await;
        return Error::new(
            Kind::Forbidden,
            "forbidden_role",
            "revoking sessions needs the admin role",
        )
        .into_response();
    }
    let tenant = match params {
        Ok(Query(p)) => p.tenant,
        Err(e) => {
            return Error::request("invalid_request", e.body_text()).into_response();
        }
    };
    if !valid_name(&user) {
        return Error::request("invalid_request", "invalid user id").into_response();
    }
    let store = Arc::clone(&state.auth.store);
    let now = unix_now();
    let (u, t) = (user.clone(), tenant.clone());
    let hashes = match blocking(move || store.revoke_user(&u, t.as_deref(), now)).await {
        Ok(h) => h,
        Err(e) => return Error::from(e).into_response(),
    };
    state.auth.forget_sessions(&hashes);
    let subject = Principal {
        user: user.clone(),
        tenant: tenant.clone().unwrap_or_default(),
        groups: vec![],
        attributes: Default::default(),
        method: admin.method,
        session_id: None,
    };
    let method = format!("admin:{}", admin.user);
    audit_auth(
        &state,
        &client,
        Event::AuthEvent,
        "sessions_revoked",
        Who::Principal(&subject, Some(&method)),
    )
    .await;
    json_status(
        StatusCode::OK,
        json!({ "user": user, "tenant": tenant, "revoked": hashes.len() }),
    )
}

/// `GET /v1/me`: the caller's verified principal and roles.
pub async fn me(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (p, _) = match authenticate_audited(&state, &parts).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let roles = &state.config.auth.roles;
    let mut held = Vec::new();
    if roles.may_query(&p.groups) {
        held.push("analyst");
    }
    if roles.is_compliance(&p.groups) {
        held.push("compliance");
    }
    if roles.is_admin(&p.groups) {
        held.push("admin");
    }
    json_status(
        StatusCode::OK,
        json!({
            "user": p.user,
            "tenant": p.tenant,
            "groups": p.groups,
            "attributes": p.attributes,
            "method": p.method.as_str(),
            "session_id": p.session_id,
            "roles": held,
        }),
    )
}

/// The credential an HTTP request carries: the bearer token, else the session cookie (with
/// whether the request changes state and carried an `Origin`, which the origin middleware
/// has already checked against the allowed ones).
pub fn credential<'a>(
    parts: &'a axum::http::request::Parts,
    cookie_name: &str,
    session_cookie: &'a mut Option<String>,
) -> Result<Credential<'a>, AuthError> {
    let headers = &parts.headers;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?;
        return Ok(Credential::Bearer(token));
    }
    *session_cookie = cookie(headers, cookie_name);
    match session_cookie.as_deref() {
        Some(token) => Ok(Credential::Cookie {
            token,
            changes_state: !matches!(parts.method, Method::GET | Method::HEAD),
            origin_checked: headers.contains_key(header::ORIGIN),
        }),
        None => Err(AuthError::Missing),
    }
}

/// Authenticates an HTTP request: its credential, then the authenticator.
pub async fn authenticate(
    state: &AppState,
    parts: &axum::http::request::Parts,
    client: &ClientInfo,
) -> Result<Principal, AuthError> {
    let mut cookie_value = None;
    let credential = match credential(
        parts,
        &state.config.auth.sessions.cookie_name,
        &mut cookie_value,
    ) {
        Ok(c) => c,
        Err(e) => return Err(state.auth.unreadable(e, client)),
    };
    state.auth.authenticate(credential, client).await
}

/// The value of a cookie, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// The client address and user agent of a request.
pub fn client_info(parts: &axum::http::request::Parts) -> ClientInfo {
    let addr = parts
        .extensions
        .get::<crate::http::conn::ClientAddr>()
        .map(|a| a.0)
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::http::conn::ClientConn>>()
                .map(|ci| ci.0.addr.ip())
        });
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            let mut end = s.len().min(256);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        });
    ClientInfo {
        addr,
        user_agent,
        front_door: Some(FRONT_DOOR),
    }
}
