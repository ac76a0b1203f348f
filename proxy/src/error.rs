//! Errors at the HTTP boundary: RFC 7807 `application/problem+json` with a stable `code`.
//!
//! Every error has two faces: what the client sees (code and a safe message) and what is logged.
//! Warehouse text, tokens and secrets never reach the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

tokio::task_local! {
    /// The current request's id, set by the request-id middleware for the handler's task.
    pub static REQUEST_ID: String;
}

/// The current request id, if called inside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message, safe to show.
    pub message: String,
    /// Finer reason (policy refusals), fixed cardinality.
    pub reason: Option<&'static str>,
    /// What only some errors carry (boxed: errors travel in every `Result` of a request).
    pub extra: Option<Box<ErrorExtra>>,
}

/// The rarer parts of an error answer.
#[derive(Debug, Clone, Default)]
pub struct ErrorExtra {
    /// Seconds after which to retry (`429`), sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// Where to (re)authorize a warehouse credential (`reauth_required`).
    pub authorize_url: Option<String>,
    /// The warehouse's own error code (`warehouse_error`).
    pub warehouse_code: Option<String>,
    /// The full text for the audit log only (never the response, never the server log).
    pub audit_detail: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reason: None,
            extra: None,
        }
    }

    /// The rarer parts, created on first use.
    pub fn extra_mut(&mut self) -> &mut ErrorExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 with a code; the response carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 500 without detail (the cause is logged by the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The problem+json body.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "type": format!("urn:sluice:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.message,
            "request_id": request_id,
        });
        if let (Some(reason), Some(obj)) = (self.reason, v.as_object_mut()) {
            obj.insert("reason".into(), reason.into());
        }
        if let (Some(extra), Some(obj)) = (&self.extra, v.as_object_mut()) {
            if let Some(url) = &extra.authorize_url {
                obj.insert("authorize_url".into(), url.clone().into());
            }
            if let Some(code) = &extra.warehouse_code {
                obj.insert("warehouse_code".into(), code.clone().into());
            }
        }
        v
    }
}

impl From<sluice_policy::PolicyError> for ApiError {
    fn from(e: sluice_policy::PolicyError) -> Self {
        let status = match e.code() {
            "statement_not_allowed" | "policy_denied" => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            reason: Some(e.reason()),
            extra: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body(&current_request_id()).to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.extra.as_ref().and_then(|e| e.retry_after) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
