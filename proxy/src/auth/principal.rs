//! Who a caller is once verified ([`Principal`]), how they proved it ([`AuthMethod`]), and why
//! they could not ([`AuthError`]): the types every authentication method, the vault and the
//! engine share.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};

/// Longest bearer token accepted (bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id, tenant, group name or attribute value accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most groups one principal may carry.
pub const MAX_GROUPS: usize = 256;
/// Most attributes one principal may carry.
pub const MAX_ATTRIBUTES: usize = 64;

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "sls_";
/// Prefix of one-time tickets.
pub const TICKET_PREFIX: &str = "slt_";
/// Prefix of service tokens.
pub const SERVICE_PREFIX: &str = "sst_";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "slk_";

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A customer-signed JWT bearer token.
    Jwt,
    /// A session made from a one-time web ticket.
    TicketSession,
    /// A session made by an SSO (OIDC) login.
    OidcSession,
    /// An API key.
    ApiKey,
}

impl AuthMethod {
    /// Stable name (audit log).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::TicketSession => "ticket_session",
            AuthMethod::OidcSession => "oidc_session",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// User id.
    pub user: String,
    /// Tenant id: bound into every protected table read.
    pub tenant: String,
    /// Groups (sluice roles derive from them, `[auth.roles]`).
    pub groups: Vec<String>,
    /// Further verified attributes, each of its declared type (`[auth.attributes]`): what
    /// row filters bind. (Principals stored before typed attributes hold strings: text.)
    #[serde(default)]
    pub attributes: BTreeMap<String, sluice_policy::AttributeValue>,
    /// How they authenticated.
    pub method: AuthMethod,
    /// The session id, for session-based methods (recorded in the audit log; not a secret).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Why authentication failed; each has its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("authentication required: send Authorization: Bearer <token> or a session cookie")]
    Missing,
    /// The header or token is not well-formed.
    #[error("the bearer token is malformed")]
    Malformed,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is older than the configured maximum age.
    #[error("the token was issued too long ago")]
    TooOld,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// The token names another algorithm than the configured one.
    #[error("the token's algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// Wrong `aud`.
    #[error("the token audience is not accepted")]
    BadAudience,
    /// Wrong `iss`.
    #[error("the token issuer is not accepted")]
    BadIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("invalid token claims: {0}")]
    BadClaims(String),
    /// The token's `kid` is not in the key set, even after a refetch.
    #[error("the token's key id is not known")]
    UnknownKid,
    /// The `jti` was seen before.
    #[error("the token was already used (jti replay)")]
    Replayed,
    /// The key set could not be fetched and no cached key fits.
    #[error("the signing keys cannot be fetched right now")]
    KeysUnavailable,
    /// The session token is unknown.
    #[error("the session is not valid")]
    SessionInvalid,
    /// The session expired (idle or absolute lifetime).
    #[error("the session has expired; sign in again")]
    SessionExpired,
    /// The session was signed out or revoked.
    #[error("the session was signed out or revoked")]
    SessionRevoked,
    /// The API key is unknown.
    #[error("the API key is not valid")]
    ApiKeyInvalid,
    /// The API key expired.
    #[error("the API key has expired")]
    ApiKeyExpired,
    /// The API key was revoked.
    #[error("the API key was revoked")]
    ApiKeyRevoked,
    /// API keys are turned off by configuration.
    #[error("API keys are disabled on this server")]
    ApiKeysDisabled,
    /// A credential of another kind than this endpoint takes.
    #[error("{0}")]
    WrongCredential(&'static str),
    /// The service client id or secret is wrong.
    #[error("the client id or secret is wrong")]
    InvalidClient,
    /// The service token is unknown, expired or revoked.
    #[error("the service token is not valid or has expired")]
    ServiceTokenInvalid,
    /// The ticket is unknown.
    #[error("the ticket is not valid")]
    TicketInvalid,
    /// The ticket was already exchanged.
    #[error("the ticket was already used")]
    TicketReplayed,
    /// The ticket's lifetime passed before it was exchanged.
    #[error("the ticket has expired")]
    TicketExpired,
    /// A service client asked for a tenant outside its scope.
    #[error("this service client may not mint tickets for tenant {0:?}")]
    TenantNotAllowed(String),
    /// A service client asked for a group outside its scope, or one that holds an admin or
    /// compliance role.
    #[error("this service client may not mint tickets with group {0:?}")]
    GroupNotAllowed(String),
    /// A service client asked for an attribute, or an attribute value, outside its scope.
    #[error("this service client may not mint tickets with attribute {0:?} (or this value of it)")]
    AttributeNotAllowed(String),
    /// A user name and password were given, and the user name is not the one the password
    /// (a bearer credential) belongs to.
    #[error("the user name does not match the credential")]
    UserMismatch,
    /// A cookie-authenticated request that changes state carried no allowed `Origin`.
    #[error("a cookie-authenticated request must carry an allowed Origin header")]
    OriginRequired,
    /// Too many failed attempts from this address or for this principal.
    #[error("too many failed authentication attempts; retry in {retry_after_secs} s")]
    TooManyFailures {
        /// Seconds until the window frees up.
        retry_after_secs: u64,
    },
    /// The credential store could not be read.
    #[error("authentication is unavailable right now")]
    StoreUnavailable,
}

impl AuthError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Malformed => "invalid_token",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::TooOld => "token_too_old",
            AuthError::BadSignature => "invalid_signature",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::BadAudience => "invalid_audience",
            AuthError::BadIssuer => "invalid_issuer",
            AuthError::BadClaims(_) => "invalid_claims",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::Replayed => "token_replayed",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::SessionInvalid => "invalid_session",
            AuthError::SessionExpired => "session_expired",
            AuthError::SessionRevoked => "session_revoked",
            AuthError::ApiKeyInvalid => "invalid_api_key",
            AuthError::ApiKeyExpired => "api_key_expired",
            AuthError::ApiKeyRevoked => "api_key_revoked",
            AuthError::ApiKeysDisabled => "api_keys_disabled",
            AuthError::WrongCredential(_) => "wrong_credential",
            AuthError::InvalidClient => "invalid_client",
            AuthError::ServiceTokenInvalid => "invalid_service_token",
            AuthError::TicketInvalid => "invalid_ticket",
            AuthError::TicketReplayed => "ticket_replayed",
            AuthError::TicketExpired => "ticket_expired",
            AuthError::TenantNotAllowed(_) => "tenant_not_allowed",
            AuthError::GroupNotAllowed(_) => "group_not_allowed",
            AuthError::AttributeNotAllowed(_) => "attribute_not_allowed",
            AuthError::UserMismatch => "user_mismatch",
            AuthError::OriginRequired => "origin_required",
            AuthError::TooManyFailures { .. } => "too_many_failures",
            AuthError::StoreUnavailable => "auth_unavailable",
        }
    }

    /// Whether this failure counts toward the rate limits (a missing credential does not: it is
    /// not a guess).
    pub fn counts_as_failure(&self) -> bool {
        !matches!(
            self,
            AuthError::Missing
                | AuthError::TooManyFailures { .. }
                | AuthError::StoreUnavailable
                | AuthError::KeysUnavailable
        )
    }

    /// Its kind: rate limits and unavailable stores are not the caller's fault; scope and
    /// origin refusals are about what an authenticated caller may do.
    pub fn kind(&self) -> Kind {
        match self {
            AuthError::TenantNotAllowed(_)
            | AuthError::GroupNotAllowed(_)
            | AuthError::AttributeNotAllowed(_)
            | AuthError::OriginRequired => Kind::Forbidden,
            AuthError::TooManyFailures { .. } => Kind::RateLimit,
            AuthError::StoreUnavailable | AuthError::KeysUnavailable => Kind::Unavailable,
            _ => Kind::Auth,
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        let mut api = Error::new(e.kind(), e.code(), e.to_string());
        if let AuthError::TooManyFailures { retry_after_secs } = e {
            api.extra_mut().retry_after = Some(retry_after_secs);
        }
        api
    }
}

/// Who is on the other end of the connection (for rate limits and the audit log).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Peer address.
    pub addr: Option<IpAddr>,
    /// `User-Agent` (HTTP) or `application_name` (PostgreSQL wire), truncated.
    pub user_agent: Option<String>,
    /// The front door the client came in by (`http`, `pgwire`), for the audit log.
    pub front_door: Option<&'static str>,
}

/// A fresh random secret: 32 bytes from the OS, base64url, behind `prefix`.
pub fn random_token(prefix: &str) -> Result<String, AuthError> {
    use base64::Engine;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| AuthError::StoreUnavailable)?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// SHA-256 of a token: what the store keeps and looks up. The tokens are 256-bit random
/// values, so a fast hash is enough (slow password hashes are for low-entropy secrets).
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Checks a user id, tenant or group name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}
