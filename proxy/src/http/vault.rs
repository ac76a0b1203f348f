//! The connect flow over HTTP.
//!
//! - `GET /v1/connections`: the caller's connections and the status of their credential.
//! - `GET /v1/connections/{id}/authorize`: starts the authorization code flow with PKCE and
//!   state at that warehouse's authorization server (302; the state is also set in a
//!   short-lived cookie, binding the flow to this browser and this principal).
//! - `GET /v1/connections/oauth/callback`: exchanges the code, seals the tokens for the
//!   principal that started the flow.
//! - `PUT /v1/connections/{id}/credential` `{"password"}`: a per-user password (password mode).
//! - `DELETE /v1/connections/{id}/credential`: disconnects (revoking at the server when it
//!   supports RFC 7009).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope, TokenResponse,
};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::config::CredentialMode;
use crate::error::{Error, Kind};
use crate::http::auth::{authenticate_audited, cookie};
use crate::http::body::read_json_body_as;
use crate::vault::flows::{FLOW_TTL, Pending};
use crate::vault::{Vault, credential_audit, owner};

/// Cookie binding a connect flow to its browser.
const STATE_COOKIE: &str = "sluice_connect_state";
/// Largest password body.
const MAX_PASSWORD_BODY: usize = 8 * 1024;

fn vault(state: &AppState) -> Result<&Vault, Error> {
    state.vault.as_deref().ok_or_else(|| {
        Error::new(
            Kind::Request,
            "not_found",
            "no vault is configured on this server",
        )
    })
}

fn mode(state: &AppState, id: &str) -> Result<CredentialMode, Error> {
    state
        .config
        .connections
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.credential)
        .ok_or_else(|| {
            Error::new(
                Kind::Request,
                "unknown_connection",
                format!("no connection named {id:?} is declared"),
            )
        })
}

fn store_error(e: crate::vault::store::VaultError) -> Error {
    tracing::error!(error = %e, "vault failure");
    Error::new(
        Kind::Unavailable,
        "vault_unavailable",
        "the credential vault cannot be used right now",
    )
}

/// `GET /v1/connections`
pub async fn list(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let run = async {
        let (p, _) = authenticate_audited(&state, &parts).await?;
        let records = match &state.vault {
            Some(v) => {
                let (store, t, u) = (Arc::clone(&v.store), p.tenant.clone(), p.user.clone());
                tokio::task::spawn_blocking(move || store.list(&t, &u))
                    .await
                    .map_err(|_| Error::internal())?
                    .map_err(store_error)?
            }
            None => vec![],
        };
        let out: Vec<_> = state
            .config
            .connections
            .iter()
            .map(|c| {
                let rec = records.iter().find(|(id, _)| *id == c.id).map(|(_, m)| m);
                let (status, expires_at, scopes) = match (c.credential, rec) {
                    (CredentialMode::Service, _) => ("service".to_string(), None, None),
                    (CredentialMode::Passthrough, _) => ("passthrough".to_string(), None, None),
                    (_, None) => ("missing".to_string(), None, None),
                    (_, Some(m)) => (
                        m.status.as_str().to_string(),
                        m.expires_at,
                        Some(m.scopes.clone()),
                    ),
                };
                let credential = match c.credential {
                    CredentialMode::Service => "service",
                    CredentialMode::Oauth => "oauth",
                    CredentialMode::Password => "password",
                    CredentialMode::Passthrough => "passthrough",
                };
                json!({
                    "id": c.id,
                    "credential": credential,
                    "status": status,
                    "expires_at": expires_at,
                    "scopes": scopes,
                    "authorize_url": (c.credential == CredentialMode::Oauth)
                        .then(|| format!("/v1/connections/{}/authorize", c.id)),
                })
            })
            .collect();
        Ok::<_, Error>(axum::Json(json!({ "connections": out })).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/connections/{id}/authorize`
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let run = async {
        let (p, _) = authenticate_audited(&state, &parts).await?;
        let v = vault(&state)?;
        if mode(&state, &id)? != CredentialMode::Oauth {
            return Err(Error::request(
                "not_oauth",
                format!("connection {id:?} does not use per-user OAuth"),
            ));
        }
        let (client, scopes) = v.clients.get(&id).ok_or_else(Error::internal)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        for s in scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, csrf) = request.url();
        let flow = csrf.secret().clone();
        v.pending
            .put(
                flow.clone(),
                Pending {
                    owner: owner(&p, &id),
                    verifier: verifier.secret().clone(),
                    started: Instant::now(),
                },
            )
            .map_err(|_| {
                let mut e = Error::new(
                    Kind::RateLimit,
                    "too_many_connect_flows",
                    "too many account connections are in progress; finish one or retry in a few \
                     minutes",
                );
                e.extra_mut().retry_after = Some(60);
                e
            })?;
        let secure = if state.config.auth.sessions.cookie_secure {
            "; Secure"
        } else {
            ""
        };
        let binding = format!(
            "{STATE_COOKIE}={flow}; Path=/v1/connections; HttpOnly{secure}; SameSite=Lax; Max-Age={}",
            FLOW_TTL.as_secs()
        );
        let mut resp = (
            StatusCode::FOUND,
            axum::Json(json!({ "authorize_url": url.as_str() })),
        )
            .into_response();
        let h = resp.headers_mut();
        if let (Ok(loc), Ok(c)) = (
            HeaderValue::from_str(url.as_str()),
            HeaderValue::from_str(&binding),
        ) {
            h.insert(header::LOCATION, loc);
            h.insert(header::SET_COOKIE, c);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /v1/connections/oauth/callback`
pub async fn callback(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let run = async {
        let v = vault(&state)?;
        let bad_state = || {
            Error::request(
                "invalid_state",
                "the connect state is unknown, expired, or belongs to another browser; start again",
            )
        };
        let params = axum::extract::Query::<CallbackParams>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|_| bad_state())?;
        let flow = params.state.ok_or_else(bad_state)?;
        if cookie(&parts.headers, STATE_COOKIE).as_deref() != Some(flow.as_str()) {
            return Err(bad_state());
        }
        let pending = v.pending.take(&flow).ok_or_else(bad_state)?;
        if let Some(e) = params.error {
            credential_audit(
                &state.audit,
                &pending.owner,
                "credential_connect_denied",
                None,
            )
            .await;
            return Err(Error::new(
                Kind::Auth,
                "authorization_denied",
                format!("the authorization server refused: {e}"),
            ));
        }
        let code = params.code.ok_or_else(bad_state)?;
        let (client, _) = v
            .clients
            .get(&pending.owner.connection)
            .ok_or_else(Error::internal)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(v.http())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "authorization code exchange failed");
                Error::new(
                    Kind::Unavailable,
                    "authorization_server_error",
                    "the authorization server did not grant a token",
                )
            })?;
        let scopes = tokens.scopes().map_or(String::new(), |s| {
            s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")
        });
        v.store_grant(
            &pending.owner,
            tokens.access_token().secret().clone(),
            tokens.refresh_token().map(|t| t.secret().clone()),
            tokens.expires_in(),
            scopes,
        )
        .await
        .map_err(store_error)?;
        credential_audit(
            &state.audit,
            &pending.owner,
            "credential_connected",
            Some("oauth"),
        )
        .await;
        let mut resp = axum::Json(json!({
            "connection": pending.owner.connection,
            "status": "connected",
        }))
        .into_response();
        if let Ok(c) = HeaderValue::from_str(&format!(
            "{STATE_COOKIE}=; Path=/v1/connections; HttpOnly; SameSite=Lax; Max-Age=0"
        )) {
            resp.headers_mut().insert(header::SET_COOKIE, c);
        }
        Ok(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

/// `PUT /v1/connections/{id}/credential`: a per-user password, sealed.
pub async fn put_password(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let run = async {
        let (p, _) = authenticate_audited(&state, &parts).await?;
        let v = vault(&state)?;
        if mode(&state, &id)? != CredentialMode::Password {
            return Err(Error::request(
                "not_password",
                format!("connection {id:?} does not use per-user passwords"),
            ));
        }
        let b: PasswordBody = read_json_body_as(
            &parts.headers,
            body,
            MAX_PASSWORD_BODY,
            "{\"password\": string}",
        )
        .await?;
        if b.password.is_empty() {
            return Err(Error::request("invalid_request", "empty password"));
        }
        let o = owner(&p, &id);
        v.store_password(&o, b.password)
            .await
            .map_err(store_error)?;
        credential_audit(&state.audit, &o, "credential_connected", Some("password")).await;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /v1/connections/{id}/credential`
pub async fn disconnect(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let run = async {
        let (p, _) = authenticate_audited(&state, &parts).await?;
        let v = vault(&state)?;
        mode(&state, &id)?;
        let deleted = v
            .disconnect(&owner(&p, &id), &state.audit)
            .await
            .map_err(store_error)?;
        if deleted {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(Error::new(
                Kind::Request,
                "no_credential",
                format!("you have no credential for {id:?}"),
            ))
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
