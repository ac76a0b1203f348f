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
pub mod principal;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::AuthConfig;
pub use principal::{
    API_KEY_PREFIX, AuthError, AuthMethod, ClientInfo, MAX_ATTRIBUTES, MAX_GROUPS, MAX_NAME_LEN,
    MAX_TOKEN_BYTES, Principal, SERVICE_PREFIX, SESSION_PREFIX, TICKET_PREFIX, random_token,
    token_hash, unix_now, valid_name,
};
use store::{AuthStore, TokenKind, TokenRow};

/// Sessions kept in memory (beyond this, expired ones are dropped, then the oldest half).
const MAX_CACHED_SESSIONS: usize = 100_000;
/// A session's renewed expiry is written to the store at most this often.
const SESSION_PERSIST_EVERY_SECS: i64 = 60;
/// Longest a cached session is trusted without reading the store again: a revocation made by
/// another process (`sluice client delete`, `client rotate --overlap-hours 0`, another replica)
/// takes effect within this.
pub const SESSION_RECHECK_SECS: i64 = 5;

/// A credential as a front door received it, stripped of its protocol.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// A bearer token (`Authorization: Bearer ...`): a session, an API key or a JWT.
    Bearer(&'a str),
    /// A session token from a cookie. A cookie rides along with cross-site requests, so the
    /// front door says whether this request passed its origin check (`origin_checked`): one
    /// that changes state must carry an allowed origin.
    Cookie {
        /// The session token.
        token: &'a str,
        /// The request changes state (not a read such as HTTP `GET`).
        changes_state: bool,
        /// The request carried an origin the front door allowed.
        origin_checked: bool,
    },
    /// A user name and password, as a wire-protocol client sends them. The password is one of
    /// the bearer credentials (a session token, an API key or a JWT); the user name, when not
    /// empty, must be the verified principal's user.
    Password {
        /// The user name the client gave.
        user: &'a str,
        /// The password: a bearer credential.
        password: &'a str,
    },
}

/// A verified credential a connection keeps ([`Authenticator::authenticate_held`]).
pub struct Held {
    principal: Principal,
    reuse: jwt::Reuse,
}

/// One cached session.
struct CachedSession {
    principal: Principal,
    /// Idle expiry (renewed on use), capped by `max_expires`.
    expires: i64,
    max_expires: i64,
    /// When `expires` was last written to the store.
    persisted_at: i64,
    /// When the store was last read for it (revocations by other processes).
    checked_at: i64,
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

    /// Authenticates a caller of a data or audit endpoint: session (bearer, cookie or
    /// password), API key or JWT. Counts failures against the client (and principal) limits.
    pub async fn authenticate(
        &self,
        credential: Credential<'_>,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        self.authenticate_to_hold(credential, client)
            .await
            .map(|(p, _)| p)
    }

    /// [`Authenticator::authenticate`] for a connection that keeps its credential (the wire
    /// door): also what it may keep ([`Held`]) to skip verifying the same credential again for
    /// each statement. Only a JWT is held (its claims cannot change, and it cannot be revoked
    /// before it expires except by its key leaving the key set); sessions and API keys, which
    /// can be revoked at any time, are verified again every time.
    pub async fn authenticate_to_hold(
        &self,
        credential: Credential<'_>,
        client: &ClientInfo,
    ) -> Result<(Principal, Option<Held>), AuthError> {
        self.limiter.check_addr(client.addr)?;
        let result = self.authenticate_inner(credential, client.addr).await;
        if let Err(e) = &result
            && e.counts_as_failure()
        {
            self.limiter.fail_addr(client.addr);
        }
        result.map(|(principal, reuse)| {
            let held = reuse.map(|reuse| Held {
                principal: principal.clone(),
                reuse,
            });
            (principal, held)
        })
    }

    /// The principal of a credential a connection holds: the held verification while it
    /// still holds ([`jwt::JwtVerifier::still_valid`]: before the token's deadline, its key
    /// still in the key set), else a full verification of `credential` (which replaces
    /// `held`). A held credential is not one more guess, so the address's failure limit is
    /// not consulted for it.
    pub async fn authenticate_held(
        &self,
        credential: Credential<'_>,
        client: &ClientInfo,
        held: &Mutex<Option<Held>>,
    ) -> Result<Principal, AuthError> {
        {
            let guard = held.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(h), Some(v)) = (guard.as_ref(), self.jwt.as_ref())
                && v.still_valid(&h.reuse, unix_now())
            {
                return Ok(h.principal.clone());
            }
        }
        let (principal, fresh) = self.authenticate_to_hold(credential, client).await?;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(principal)
    }

    /// A credential the front door could not even read (a malformed header): a guess like any
    /// other, refused past the address's limit and counted against it.
    pub fn unreadable(&self, e: AuthError, client: &ClientInfo) -> AuthError {
        if let Err(limited) = self.limiter.check_addr(client.addr) {
            return limited;
        }
        if e.counts_as_failure() {
            self.limiter.fail_addr(client.addr);
        }
        e
    }

    async fn authenticate_inner(
        &self,
        credential: Credential<'_>,
        addr: Option<std::net::IpAddr>,
    ) -> Result<(Principal, Option<jwt::Reuse>), AuthError> {
        match credential {
            Credential::Bearer(token) => self.bearer(token, addr).await,
            Credential::Cookie {
                token,
                changes_state,
                origin_checked,
            } => {
                if !token.starts_with(SESSION_PREFIX) || token.len() > MAX_TOKEN_BYTES {
                    return Err(AuthError::SessionInvalid);
                }
                if changes_state && !origin_checked {
                    return Err(AuthError::OriginRequired);
                }
                self.session(token).await.map(|p| (p, None))
            }
            Credential::Password { user, password } => {
                let (principal, reuse) = self.bearer(password, addr).await?;
                if !user.is_empty() && user != principal.user {
                    return Err(AuthError::UserMismatch);
                }
                Ok((principal, reuse))
            }
        }
    }

    /// A bearer credential, told apart by its form (with how a JWT's verification may be
    /// reused).
    async fn bearer(
        &self,
        token: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<(Principal, Option<jwt::Reuse>), AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        if token.starts_with(SESSION_PREFIX) {
            self.session(token).await.map(|p| (p, None))
        } else if token.starts_with(API_KEY_PREFIX) {
            self.api_key(token, addr).await.map(|p| (p, None))
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
                Some(v) => v
                    .verify_for_reuse(token, &self.store)
                    .await
                    .map(|(p, r)| (p, Some(r))),
                None => Err(AuthError::Malformed),
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
        // A cached session due for a recheck: its renewed expiry is written, then the store read.
        let mut recheck = None;
        {
            let mut cache = lock(&self.sessions);
            if cache.get(&hash).is_some_and(|s| now >= s.expires) {
                cache.remove(&hash);
                return Err(AuthError::SessionExpired);
            }
            if let Some(s) = cache.get(&hash)
                && now - s.checked_at >= SESSION_RECHECK_SECS
            {
                recheck = Some((now + idle).min(s.max_expires));
                cache.remove(&hash);
            }
            if let Some(s) = cache.get_mut(&hash) {
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
            let renewed = recheck.take();
            let row = tokio::task::spawn_blocking(move || {
                if let Some(expires) = renewed {
                    store.touch(&hash, expires);
                }
                store.lookup(&hash, TokenKind::Session)
            })
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
                checked_at: now,
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

    async fn api_key(
        &self,
        key: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Principal, AuthError> {
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
        result.map_err(|e| self.limiter.fail_principal(&principal_key, addr, e))
    }
}

/// Poison-tolerant lock: the maps hold no invariant a panic could break half-way.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::auth::store::NewToken;

    fn authenticator(dir: &std::path::Path) -> (Authenticator, String, String) {
        let store = Arc::new(AuthStore::open(&dir.join("auth.sqlite")).unwrap());
        let principal = Principal {
            user: "alice".into(),
            tenant: "acme".into(),
            groups: vec!["analyst".into()],
            attributes: Default::default(),
            method: AuthMethod::TicketSession,
            session_id: Some("s1".into()),
        };
        let now = unix_now();
        let session = random_token(SESSION_PREFIX).unwrap();
        store
            .insert(&NewToken {
                kind: TokenKind::Session,
                token: &session,
                id: "s1",
                principal: &principal,
                client_id: None,
                now,
                expires: now + 600,
                max_expires: now + 3600,
            })
            .unwrap();
        let (_, key) = store.create_api_key("k", &principal, now, None).unwrap();
        let config: crate::config::Config =
            crate::config::Config::parse("[auth.api_keys]\nenabled = true\n").unwrap();
        (Authenticator::new(None, store, &config.auth), session, key)
    }

    #[tokio::test]
    async fn every_credential_form_ends_in_the_same_principal() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, session, key) = authenticator(dir.path());
        let client = ClientInfo::default();
        let by_bearer = auth
            .authenticate(Credential::Bearer(&session), &client)
            .await
            .unwrap();
        let by_cookie = auth
            .authenticate(
                Credential::Cookie {
                    token: &session,
                    changes_state: true,
                    origin_checked: true,
                },
                &client,
            )
            .await
            .unwrap();
        let by_password = auth
            .authenticate(
                Credential::Password {
                    user: "alice",
                    password: &session,
                },
                &client,
            )
            .await
            .unwrap();
        assert_eq!(by_bearer, by_cookie);
        assert_eq!(by_bearer, by_password);
        // An API key as a wire client's password, with or without the user name.
        for user in ["alice", ""] {
            let p = auth
                .authenticate(
                    Credential::Password {
                        user,
                        password: &key,
                    },
                    &client,
                )
                .await
                .unwrap();
            assert_eq!((p.user.as_str(), p.method), ("alice", AuthMethod::ApiKey));
        }
    }

    #[tokio::test]
    async fn revocable_credentials_are_never_held_by_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, session, key) = authenticator(dir.path());
        let client = ClientInfo::default();
        for password in [&session, &key] {
            let (_, held) = auth
                .authenticate_to_hold(
                    Credential::Password {
                        user: "alice",
                        password,
                    },
                    &client,
                )
                .await
                .unwrap();
            assert!(held.is_none(), "a session or API key was held");
        }
        // A wire session on an API key: the key's revocation stops its next statement.
        let held = Mutex::new(None);
        let password = Credential::Password {
            user: "alice",
            password: &key,
        };
        assert!(
            auth.authenticate_held(password, &client, &held)
                .await
                .is_ok()
        );
        let id = key.split('_').nth(1).unwrap();
        assert!(auth.store.revoke_api_key(id, unix_now()).unwrap());
        assert!(
            auth.authenticate_held(password, &client, &held)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_cookie_needs_the_origin_check_and_a_user_name_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, session, key) = authenticator(dir.path());
        let client = ClientInfo::default();
        let cookie = |changes_state, origin_checked| Credential::Cookie {
            token: &session,
            changes_state,
            origin_checked,
        };
        assert_eq!(
            auth.authenticate(cookie(true, false), &client).await,
            Err(AuthError::OriginRequired)
        );
        assert!(
            auth.authenticate(cookie(false, false), &client)
                .await
                .is_ok()
        );
        assert_eq!(
            auth.authenticate(
                Credential::Cookie {
                    token: "not-a-session",
                    changes_state: false,
                    origin_checked: true
                },
                &client
            )
            .await,
            Err(AuthError::SessionInvalid)
        );
        assert_eq!(
            auth.authenticate(
                Credential::Password {
                    user: "mallory",
                    password: &key
                },
                &client
            )
            .await,
            Err(AuthError::UserMismatch)
        );
        assert_eq!(
            auth.authenticate(Credential::Bearer("  "), &client).await,
            Err(AuthError::Malformed)
        );
    }
}
