//! Errors, protocol-free. Every error has three faces:
//!
//! - a [`Kind`] of fixed cardinality, for metrics and logs (never a user, tenant or SQL);
//! - a stable `code` (the README lists them), for clients and the audit log;
//! - a `message` safe to show any client (warehouse text, tokens and secrets never reach it).
//!
//! No status code lives here: each front door maps kind and code to its own (HTTP in
//! [`crate::http::problem`]; a PostgreSQL-wire front door maps the same errors to SQLSTATEs).

/// What sort of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request itself is malformed: body, media type, size, parameters, unknown names.
    Request,
    /// The caller could not be authenticated.
    Auth,
    /// Authenticated, but this caller may not do this (role, tenant form, origin).
    Forbidden,
    /// The SQL policy refused the query (statement kind, default-deny catalog, grants).
    Policy,
    /// Too many attempts: retry later.
    RateLimit,
    /// The caller's own warehouse credential is missing, expired or cannot be renewed.
    Credential,
    /// The warehouse (or a federated source) failed or refused the query.
    Warehouse,
    /// The audit log cannot be written, so nothing may run.
    Audit,
    /// A dependency of sluice itself (credential store, vault, identity provider) cannot be
    /// used right now.
    Unavailable,
    /// The query (or request) ran out of time.
    Timeout,
    /// The client went away before the answer started.
    ClientGone,
    /// A bug or an invariant that does not hold; details are logged, never shown.
    Internal,
}

impl Kind {
    /// Stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Auth => "auth",
            Kind::Forbidden => "forbidden",
            Kind::Policy => "policy",
            Kind::RateLimit => "rate_limit",
            Kind::Credential => "credential",
            Kind::Warehouse => "warehouse",
            Kind::Audit => "audit",
            Kind::Unavailable => "unavailable",
            Kind::Timeout => "timeout",
            Kind::ClientGone => "client_gone",
            Kind::Internal => "internal",
        }
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct Error {
    /// What sort of failure.
    pub kind: Kind,
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
    /// Seconds after which to retry (rate limits).
    pub retry_after: Option<u64>,
    /// Where to (re)authorize a warehouse credential (`reauth_required`).
    pub authorize_url: Option<String>,
    /// The warehouse's own error code (`warehouse_error`).
    pub warehouse_code: Option<String>,
    /// The full text for the audit log only (never the response, never the server log).
    pub audit_detail: Option<String>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// A new error.
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
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

    /// A malformed request.
    pub fn request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Request, code, message)
    }

    /// An internal error without detail (the cause is logged by the caller).
    pub fn internal() -> Self {
        Self::new(Kind::Internal, "internal", "internal error")
    }

    /// The query took longer than allowed.
    pub fn timeout() -> Self {
        Self::new(
            Kind::Timeout,
            "timeout",
            "the query took longer than allowed",
        )
    }

    /// The client closed its connection before the answer started.
    pub fn client_gone() -> Self {
        Self::new(
            Kind::ClientGone,
            "client_disconnected",
            "the client closed the connection",
        )
    }

    /// The audit log cannot be written, so nothing may run.
    pub fn audit_unavailable() -> Self {
        Self::new(
            Kind::Audit,
            "audit_unavailable",
            "the audit log cannot be written, so no query can run",
        )
    }
}

impl From<sluice_policy::PolicyError> for Error {
    fn from(e: sluice_policy::PolicyError) -> Self {
        Error {
            kind: Kind::Policy,
            code: e.code(),
            message: e.to_string(),
            reason: Some(e.reason()),
            extra: None,
        }
    }
}
