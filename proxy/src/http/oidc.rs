//! The SSO endpoints: `GET /v1/auth/oidc/login` and `GET /v1/auth/oidc/callback` (the flow is
//! described in [`crate::auth::oidc`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, Scope};
use serde::Deserialize;
use sluice_audit::Event;

use crate::app::AppState;
use crate::auth::oidc::{FLOW_TTL, Pending, STATE_COOKIE, SsoError, random_b64, safe_return_to};
use crate::error::{Error, Kind};
use crate::http::auth::{Who, audit_auth, client_info, cookie, new_session, session_started};

fn sso_disabled() -> Response {
    Error::new(
        Kind::Request,
        "not_found",
        "SSO is not configured on this server",
    )
    .into_response()
}

/// Query of `/v1/auth/oidc/login`.
#[derive(Deserialize)]
pub struct LoginParams {
    return_to: Option<String>,
}

/// `GET /v1/auth/oidc/login`: redirects to the provider.
pub async fn login(
    State(state): State<Arc<AppState>>,
    params: Result<Query<LoginParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let addr = client_info(&req.into_parts().0).addr;
    let params = params
        .map(|Query(p)| p)
        .unwrap_or(LoginParams { return_to: None });
    let Some(oidc) = &state.oidc else {
        return sso_disabled();
    };
    let provider = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = ?e, "OIDC discovery failed");
            return e.api().into_response();
        }
    };
    let nonce = match random_b64(32) {
        Ok(n) => n,
        Err(e) => return Error::from(e).into_response(),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = provider
        .client
        .authorize_url(CsrfToken::new_random)
        .add_extra_param("nonce", nonce.clone())
        .set_pkce_challenge(challenge)
        .add_scope(Scope::new("openid".into()));
    for s in oidc.config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, csrf) = request.url();
    let flow_state = csrf.secret().clone();
    let kept = oidc.remember(
        flow_state.clone(),
        Pending {
            verifier: verifier.secret().clone(),
            nonce,
            return_to: safe_return_to(
                params.return_to.as_deref(),
                &oidc.config.post_login_redirect,
            ),
            started: Instant::now(),
            addr,
        },
    );
    if !kept {
        let mut e = Error::new(
            Kind::RateLimit,
            "too_many_logins",
            "too many sign-ins in progress; finish one or retry in a few minutes",
        );
        e.extra_mut().retry_after = Some(60);
        return e.into_response();
    }
    let secure = if state.config.auth.sessions.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    // Lax: the provider's redirect back is a top-level cross-site navigation.
    let binding = format!(
        "{STATE_COOKIE}={flow_state}; Path=/v1/auth/oidc; HttpOnly{secure}; SameSite=Lax; Max-Age={}",
        FLOW_TTL.as_secs()
    );
    let mut resp = StatusCode::FOUND.into_response();
    if let (Ok(loc), Ok(c)) = (
        HeaderValue::from_str(url.as_str()),
        HeaderValue::from_str(&binding),
    ) {
        resp.headers_mut().insert(header::LOCATION, loc);
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /v1/auth/oidc/callback`: completes the login and starts a session.
pub async fn callback(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let Some(oidc) = &state.oidc else {
        return sso_disabled();
    };
    let (parts, _) = req.into_parts();
    let client = client_info(&parts);
    let params = Query::<CallbackParams>::try_from_uri(&parts.uri)
        .map(|Query(p)| p)
        .map_err(|_| SsoError::State);
    let result = async {
        let params = params?;
        state
            .auth
            .limiter
            .check_addr(client.addr)
            .map_err(SsoError::Auth)?;
        if let Some(e) = params.error {
            let detail = params.error_description.unwrap_or_default();
            return Err(SsoError::Denied(format!("{e} {detail}").trim().to_string()));
        }
        let (Some(code), Some(flow_state)) = (params.code, params.state) else {
            return Err(SsoError::State);
        };
        // The state must be the one this browser was given, and still pending.
        if cookie(&parts.headers, STATE_COOKIE).as_deref() != Some(flow_state.as_str()) {
            return Err(SsoError::State);
        }
        let pending = oidc.take(&flow_state).ok_or(SsoError::State)?;
        let provider = oidc.provider().await?;
        let tokens = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&oidc.http)
            .await
            .map_err(|e| SsoError::Provider(format!("token exchange: {e}")))?;
        let id_token = tokens
            .extra_fields()
            .id_token
            .as_deref()
            .ok_or_else(|| SsoError::IdToken("the token response has no id_token".into()))?;
        let principal = oidc.principal(&provider, id_token, &pending.nonce).await?;
        let (token, principal) = new_session(&state, &principal)
            .await
            .map_err(SsoError::Auth)?;
        Ok((token, principal, pending.return_to))
    }
    .await;
    match result {
        Ok((token, principal, return_to)) => {
            let mut resp =
                session_started(&state, &client, StatusCode::SEE_OTHER, &token, &principal).await;
            let headers = resp.headers_mut();
            if let Ok(loc) = HeaderValue::from_str(&return_to) {
                headers.insert(header::LOCATION, loc);
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{STATE_COOKIE}=; Path=/v1/auth/oidc; HttpOnly; SameSite=Lax; Max-Age=0"
            )) {
                headers.append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            if let SsoError::Provider(m) | SsoError::IdToken(m) = &e {
                // Debug-quoted: the provider's text cannot forge fields of a text log line.
                tracing::warn!(error = ?m, "SSO login failed");
            }
            if !matches!(e, SsoError::Provider(_)) {
                state.auth.limiter.fail_addr(client.addr);
            }
            audit_auth(
                &state,
                &client,
                Event::AuthDenied,
                e.code(),
                Who::Claimed(None, "oidc"),
            )
            .await;
            e.api().into_response()
        }
    }
}
