//! Authentication: every method ends in the same verified [`Principal`] — user, tenant, groups,
//! attributes — and the tenant always comes from a verified credential, never from the request
//! body or the SQL.
//!
//! Methods, told apart by the credential's form:
//! - `Authorization: Bearer sls_...` or the session cookie: a session, made from a one-time web
//!   ticket ([`web`]) or an SSO login ([`oidc`]);
//! - `Bearer slk_<id>_...`: an API key (`sluice apikey create`), when enabled;
//! - `Bearer sst_...`: a service token — only good for minting tickets (`POST /v1/tickets`);
//! - `Bearer slt_...`: a ticket — only good at `POST /v1/sessions`;
//! - any other bearer: a customer-signed JWT ([`jwt`]).
//!
//! Failed attempts count against the client address (and, where the credential names one, the
//! principal) in [`limiter`]; past the limit the request is refused before any verification.

pub mod jwks;
pub mod jwt;
pub mod limiter;
pub mod oidc;
pub mod store;
pub mod web;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::error::ApiError;
use store::{AuthStore, TokenKind, TokenRow};

/// Longest bearer token accepted (bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user id, tenant, group name or attribute value accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most groups one principal may carry.
pub const MAX_GROUPS: usize = 256;
/// Most attributes one principal may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Sessions kept in memory (beyond this, expired ones are dropped, then the oldest half).
const MAX_CACHED_SESSIONS: usize = 100_000;
/// A session's renewed expiry is written to the store at most this often.
const SESSION_PERSIST_EVERY_SECS: i64 = 60;

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
    /// Further verified attributes (string values).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
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

    fn status(&self) -> StatusCode {
        match self {
            AuthError::TenantNotAllowed(_)
            | AuthError::GroupNotAllowed(_)
            | AuthError::OriginRequired => StatusCode::FORBIDDEN,
            AuthError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::StoreUnavailable | AuthError::KeysUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let mut api = ApiError::new(e.status(), e.code(), e.to_string());
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
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
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

/// The credential a request carries.
enum Presented<'a> {
    Bearer(&'a str),
    Cookie(String),
}

/// One cached session.
struct CachedSession {
    principal: Principal,
    /// Idle expiry (renewed on use), capped by `max_expires`.
    expires: i64,
    max_expires: i64,
    /// When `expires` was last written to the store.
    persisted_at: i64,
}

/// The configured authentication methods and the state they share.
pub struct Authenticator {
    jwt: Option<jwt::JwtVerifier>,
    /// Sessions, tickets, service clients and tokens, API keys, seen `jti`s.
    pub store: Arc<AuthStore>,
    sessions: Mutex<HashMap<[u8; 32], CachedSession>>,
    /// Bumped (under the cache lock) by every revocation: a lookup that raced one does not
    /// cache what it read.
    revocations: std::sync::atomic::AtomicU64,
    /// Failed-attempt limits.
    pub limiter: limiter::FailureLimiter,
    config: AuthConfig,
}

impl Authenticator {
    /// Wraps the configured verifiers and the store.
    pub fn new(jwt: Option<jwt::JwtVerifier>, store: Arc<AuthStore>, config: &AuthConfig) -> Self {
        Authenticator {
            jwt,
            store,
            sessions: Mutex::new(HashMap::new()),
            revocations: std::sync::atomic::AtomicU64::new(0),
            limiter: limiter::FailureLimiter::new(&config.rate_limit),
            config: config.clone(),
        }
    }

    /// The authentication configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Authenticates a request to a data or audit endpoint: session (bearer or cookie), API
    /// key or JWT. Counts failures against the client (and principal) limits.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        self.limiter.check_addr(client.addr)?;
        let result = self.authenticate_inner(method, headers).await;
        if let Err(e) = &result
            && e.counts_as_failure()
        {
            self.limiter.fail_addr(client.addr);
        }
        result
    }

    async fn authenticate_inner(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Principal, AuthError> {
        match presented(headers, &self.config.sessions.cookie_name)? {
            Presented::Bearer(token) => {
                if token.starts_with(SESSION_PREFIX) {
                    self.session(token).await
                } else if token.starts_with(API_KEY_PREFIX) {
                    self.api_key(token).await
                } else if token.starts_with(SERVICE_PREFIX) {
                    Err(AuthError::WrongCredential(
                        "a service token only mints tickets (POST /v1/tickets)",
                    ))
                } else if token.starts_with(TICKET_PREFIX) {
                    Err(AuthError::WrongCredential(
                        "exchange the ticket for a session first (POST /v1/sessions)",
                    ))
                } else {
                    match &self.jwt {
                        Some(v) => v.verify(token, &self.store).await,
                        None => Err(AuthError::Malformed),
                    }
                }
            }
            Presented::Cookie(token) => {
                // A cookie rides along with cross-site requests: one that changes state must
                // come from an allowed page (the origin middleware refused any other Origin).
                if !matches!(*method, Method::GET | Method::HEAD)
                    && !headers.contains_key(header::ORIGIN)
                {
                    return Err(AuthError::OriginRequired);
                }
                self.session(&token).await
            }
        }
    }

    /// The session a token names: from memory, else from the store. Each use renews its idle
    /// lifetime up to its absolute cap.
    pub async fn session(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = token_hash(token);
        let now = unix_now();
        let idle = self.config.sessions.idle_ttl_secs as i64;
        let mut persist = None;
        {
            let mut cache = lock(&self.sessions);
            if let Some(s) = cache.get_mut(&hash) {
                if now >= s.expires {
                    cache.remove(&hash);
                    return Err(AuthError::SessionExpired);
                }
                s.expires = (now + idle).min(s.max_expires);
                if now - s.persisted_at >= SESSION_PERSIST_EVERY_SECS {
                    s.persisted_at = now;
                    persist = Some(s.expires);
                }
                let principal = s.principal.clone();
                drop(cache);
                if let Some(expires) = persist {
                    let store = Arc::clone(&self.store);
                    tokio::task::spawn_blocking(move || store.touch(&hash, expires));
                }
                return Ok(principal);
            }
        }
        for _ in 0..2 {
            let generation = self.revocations.load(std::sync::atomic::Ordering::SeqCst);
            let store = Arc::clone(&self.store);
            let row = tokio::task::spawn_blocking(move || store.lookup(&hash, TokenKind::Session))
                .await
                .map_err(|_| AuthError::StoreUnavailable)?
                .map_err(|_| AuthError::StoreUnavailable)?
                .ok_or(AuthError::SessionInvalid)?;
            if row.revoked {
                return Err(AuthError::SessionRevoked);
            }
            if now >= row.expires {
                return Err(AuthError::SessionExpired);
            }
            if self.cache_session(hash, &row, now, generation) {
                return Ok(row.principal);
            }
            // A revocation happened while this lookup ran: read the store again.
        }
        Err(AuthError::StoreUnavailable)
    }

    /// Caches a session read from the store, unless a revocation happened since `generation`
    /// was read (then it returns false and the caller reads again).
    fn cache_session(&self, hash: [u8; 32], row: &TokenRow, now: i64, generation: u64) -> bool {
        let mut cache = lock(&self.sessions);
        if self.revocations.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return false;
        }
        if cache.len() >= MAX_CACHED_SESSIONS {
            cache.retain(|_, s| s.expires > now);
            if cache.len() >= MAX_CACHED_SESSIONS {
                // Still full of live sessions: forget the older half (they reload on use).
                let mut ages: Vec<i64> = cache.values().map(|s| s.expires).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                cache.retain(|_, s| s.expires > cut);
            }
        }
        cache.insert(
            hash,
            CachedSession {
                principal: row.principal.clone(),
                expires: row.expires,
                max_expires: row.max_expires,
                persisted_at: now,
            },
        );
        true
    }

    /// Forgets cached sessions (after a revocation in the store).
    pub fn forget_sessions(&self, hashes: &[[u8; 32]]) {
        let mut cache = lock(&self.sessions);
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for h in hashes {
            cache.remove(h);
        }
    }

    async fn api_key(&self, key: &str) -> Result<Principal, AuthError> {
        if !self.config.api_keys.enabled {
            return Err(AuthError::ApiKeysDisabled);
        }
        // `slk_<id>_<secret>`: the id is not secret; failures count against it.
        let id = key
            .strip_prefix(API_KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id.to_string())
            .ok_or(AuthError::ApiKeyInvalid)?;
        let principal_key = format!("apikey:{id}");
        self.limiter.check_principal(&principal_key)?;
        let hash = token_hash(key);
        let store = Arc::clone(&self.store);
        let row = tokio::task::spawn_blocking(move || store.lookup_api_key(&hash))
            .await
            .map_err(|_| AuthError::StoreUnavailable)?
            .map_err(|_| AuthError::StoreUnavailable)?;
        let result = match row {
            None => Err(AuthError::ApiKeyInvalid),
            Some(k) if k.revoked => Err(AuthError::ApiKeyRevoked),
            Some(k) if k.expires.is_some_and(|e| unix_now() >= e) => Err(AuthError::ApiKeyExpired),
            Some(k) => Ok(k.principal),
        };
        if result.is_err() {
            self.limiter.fail_principal(&principal_key);
        }
        result
    }
}

/// Poison-tolerant lock: the maps hold no invariant a panic could break half-way.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bearer token, else the session cookie.
fn presented<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Result<Presented<'a>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?
            .trim();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        return Ok(Presented::Bearer(token));
    }
    match cookie(headers, cookie_name) {
        Some(v) if v.starts_with(SESSION_PREFIX) && v.len() <= MAX_TOKEN_BYTES => {
            Ok(Presented::Cookie(v))
        }
        Some(_) => Err(AuthError::SessionInvalid),
        None => Err(AuthError::Missing),
    }
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
        .get::<axum::extract::ConnectInfo<crate::conn::ClientConn>>()
        .map(|ci| ci.0.addr.ip());
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
    ClientInfo { addr, user_agent }
}
