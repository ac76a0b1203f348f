//! Errors at the HTTP boundary: RFC 7807 `application/problem+json` with the error's stable
//! `code`. The only place that knows HTTP status codes: every error of the engine, the
//! authenticator and the vault maps here by its code (the few codes with their own status) or
//! else its kind.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::context::current_request_id;
use crate::error::{Error, Kind};

/// The status an error is answered with.
pub fn status(e: &Error) -> StatusCode {
    let by_code = match e.code {
        "payload_too_large" => Some(StatusCode::PAYLOAD_TOO_LARGE),
        "unsupported_media_type" => Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "not_acceptable" => Some(StatusCode::NOT_ACCEPTABLE),
        "method_not_allowed" => Some(StatusCode::METHOD_NOT_ALLOWED),
        "not_found" | "unknown_connection" | "no_credential" => Some(StatusCode::NOT_FOUND),
        // The policy's refusals of what the caller may do, as opposed to malformed SQL.
        "statement_not_allowed" | "policy_denied" | "attribute_missing" | "attribute_invalid" => {
            Some(StatusCode::FORBIDDEN)
        }
        "resource_exhausted" => Some(StatusCode::UNPROCESSABLE_ENTITY),
        // An identity provider or authorization server answered wrongly.
        "sso_provider_error" | "authorization_server_error" => Some(StatusCode::BAD_GATEWAY),
        "warehouse_unavailable" => Some(StatusCode::SERVICE_UNAVAILABLE),
        // A refused or expired warehouse credential: the user must (re)authorize it.
        "reauth_required" => Some(StatusCode::UNAUTHORIZED),
        _ => None,
    };
    by_code.unwrap_or(match e.kind {
        Kind::Request | Kind::Policy => StatusCode::BAD_REQUEST,
        Kind::Auth => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::RateLimit => StatusCode::TOO_MANY_REQUESTS,
        Kind::Credential | Kind::Audit | Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Warehouse => StatusCode::BAD_GATEWAY,
        Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        // nginx's 499: the client closed the connection.
        Kind::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    })
}

/// The problem+json body.
pub fn body(e: &Error, request_id: &str) -> serde_json::Value {
    let status = status(e);
    let mut v = serde_json::json!({
        "type": format!("urn:sluice:problem:{}", e.code),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": e.code,
        "detail": e.message,
        "request_id": request_id,
    });
    if let (Some(reason), Some(obj)) = (e.reason, v.as_object_mut()) {
        obj.insert("reason".into(), reason.into());
    }
    if let (Some(extra), Some(obj)) = (&e.extra, v.as_object_mut()) {
        if let Some(url) = &extra.authorize_url {
            obj.insert("authorize_url".into(), url.clone().into());
        }
        if let Some(code) = &extra.warehouse_code {
            obj.insert("warehouse_code".into(), code.clone().into());
        }
    }
    v
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        let text = body(&self, &current_request_id()).to_string();
        let mut resp = (status, text).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.extra.as_ref().and_then(|e| e.retry_after) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_with_their_own_status_and_kinds_for_the_rest() {
        let s = |k, c| status(&Error::new(k, c, ""));
        assert_eq!(s(Kind::Policy, "unknown_relation"), StatusCode::BAD_REQUEST);
        assert_eq!(s(Kind::Policy, "policy_denied"), StatusCode::FORBIDDEN);
        assert_eq!(
            s(Kind::Request, "payload_too_large"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            s(Kind::Credential, "reauth_required"),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            s(Kind::Credential, "vault_unavailable"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            s(Kind::Warehouse, "warehouse_error"),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(s(Kind::ClientGone, "client_disconnected").as_u16(), 499);
        assert_eq!(
            s(Kind::RateLimit, "too_many_failures"),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
