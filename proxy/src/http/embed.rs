//! Embedding: which host pages may call sluice from a browser and frame it.
//!
//! `server.allowed_origins` lists the host apps' origins. A request whose `Origin` is neither
//! listed nor sluice's own is refused (`403 origin_not_allowed`) before any handler runs — that
//! also stops cross-site requests riding on the session cookie. Listed origins get CORS answers
//! (credentials allowed, preflight answered here), and every response carries
//! `Content-Security-Policy: frame-ancestors` with the same list (`'none'` when empty).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{Error, Kind};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;
/// Request headers a cross-origin caller may send.
const ALLOWED_HEADERS: &str = "authorization, content-type, accept, x-request-id, te";
/// Response headers a cross-origin caller may read.
const EXPOSED_HEADERS: &str =
    "x-request-id, sluice-row-limit, sluice-row-count, sluice-truncated, retry-after";

/// Whether `origin` is sluice's own (same scheme-less host and port as the request's `Host`).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((host, bare), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// The middleware.
pub async fn origins(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let allowed = &state.config.server.allowed_origins;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("invalid").to_string());
    let mut cors_origin = None;
    if let Some(o) = &origin {
        let listed = allowed.iter().any(|a| a == o);
        if !listed && !same_origin(o, req.headers()) {
            // Debug-quoted: a header value cannot forge fields of a text log line.
            tracing::info!(origin = ?o, "request from an origin not allowed");
            return with_frame_policy(
                Error::new(
                    Kind::Forbidden,
                    "origin_not_allowed",
                    "this origin may not call sluice (server.allowed_origins)",
                )
                .into_response(),
                allowed,
            );
        }
        if listed {
            cors_origin = Some(o.clone());
        }
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight && origin.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_SECS),
        );
        r
    } else {
        next.run(req).await
    };
    if let Some(o) = cors_origin
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    with_frame_policy(resp, allowed)
}

fn with_frame_policy(mut resp: Response, allowed: &[String]) -> Response {
    let policy = if allowed.is_empty() {
        "frame-ancestors 'none'".to_string()
    } else {
        format!("frame-ancestors 'self' {}", allowed.join(" "))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
