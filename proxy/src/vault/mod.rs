//! Each user's own warehouse credentials: sealed at rest ([`crypto`], [`store`]), obtained by
//! an OAuth 2.0 authorization code flow with PKCE ([`web`]), refreshed in the background before
//! they expire, and handed to the query path only for their owner.
//!
//! Refresh: a token is due at `refresh_at_percent` of its lifetime, minus up to a tenth of it at
//! random. The refresher claims each due record with a compare-and-set (one refresh per
//! credential, even across processes), runs at most `max_concurrent_refreshes` at a time,
//! stores rotated refresh tokens, retries transient failures with exponential backoff while the
//! current token is still valid, and marks the credential `expired` on `invalid_grant`. A query
//! that needs a missing, expired or revoked credential gets `401 reauth_required` with the URL
//! that starts the authorize flow — never another user's or a service credential.

pub mod crypto;
pub mod flows;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, RedirectUrl,
    RefreshToken, RequestTokenError, RevocationUrl, TokenResponse, TokenUrl,
};
use sluice_audit::{AuditLog, AuditRecord, Decision, Event};
use zeroize::Zeroizing;

use crate::auth::principal::Principal;
use crate::config::{Config, ConnectionConfig, CredentialMode, VaultConfig};
use crate::error::{Error, Kind};
use crypto::Keyring;
use store::{CredentialStore, Owner, Secret, Status, VaultError, VaultStore, Write};

/// Time allowed for each call to an authorization server.
const AS_TIMEOUT: Duration = Duration::from_secs(10);
/// A token this close to expiry is refreshed inline before a query uses it.
const INLINE_REFRESH_MARGIN_SECS: i64 = 5;
/// Longest wait between retries of a failing refresh.
const MAX_BACKOFF_SECS: i64 = 300;
/// Records looked at per refresher pass.
const DUE_BATCH: usize = 1_000;
/// Lifetime assumed when a token response names none.
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 3600;

/// The OAuth client of one connection.
pub type OAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointSet>;

/// Why a query cannot have its user's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// None, or expired, or revoked: the user must (re)authorize.
    ReauthRequired,
    /// The vault could not be read.
    Unavailable,
    /// The token expired and the authorization server cannot refresh it right now (the
    /// credential is kept; retried in the background).
    RefreshFailing,
}

impl Access {
    /// The error a query gets for it, naming the connection to (re)authorize.
    pub fn error(&self, connection: &str) -> Error {
        match self {
            Access::ReauthRequired => reauth_required(connection),
            Access::Unavailable => Error::new(
                Kind::Unavailable,
                "vault_unavailable",
                "the credential vault cannot be used right now",
            ),
            Access::RefreshFailing => Error::new(
                Kind::Credential,
                "credential_refresh_failing",
                "your warehouse token expired and its authorization server cannot renew it right \
                 now; retry shortly",
            ),
        }
    }
}

/// The error a query gets when its user must (re)authorize a connection.
pub fn reauth_required(connection: &str) -> Error {
    let mut e = Error::new(
        Kind::Credential,
        "reauth_required",
        format!(
            "connect your account for {connection:?} first: GET /v1/connections/{connection}/authorize"
        ),
    );
    e.extra_mut().authorize_url = Some(format!("/v1/connections/{connection}/authorize"));
    e
}

/// The owner of a principal's credential for a connection.
pub fn owner(p: &Principal, connection: &str) -> Owner {
    Owner {
        tenant: p.tenant.clone(),
        user: p.user.clone(),
        connection: connection.to_string(),
    }
}

/// Outcome of one refresh attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// New tokens stored.
    Ok,
    /// `invalid_grant`: marked expired.
    Expired,
    /// A transient failure: retried later.
    Retry,
    /// Someone else is refreshing it, or it changed.
    Skipped,
}

/// The vault.
pub struct Vault {
    /// Storage.
    pub store: Arc<dyn CredentialStore>,
    keys: Arc<Keyring>,
    /// OAuth clients by connection id.
    pub clients: BTreeMap<String, (OAuthClient, Vec<String>)>,
    http: reqwest::Client,
    config: VaultConfig,
    inflight: Mutex<HashSet<Owner>>,
    limit: Arc<tokio::sync::Semaphore>,
    /// Connect flows in progress.
    pub pending: flows::PendingFlows,
}

fn read_key(
    field: &str,
    env: Option<&String>,
    file: Option<&std::path::PathBuf>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = match (env, file) {
        (Some(var), _) => Zeroizing::new(
            std::env::var(var)
                .map_err(|_| format!("{field}: environment variable {var} is not set"))?,
        ),
        (None, Some(path)) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))?,
        ),
        (None, None) => return Err(format!("{field}: no key configured")),
    };
    crypto::decode_key(&text).map_err(|e| format!("{field}: {e}"))
}

/// The keyring a configuration names.
pub fn keyring(config: &VaultConfig) -> Result<Keyring, String> {
    let current = read_key("vault", config.key_env.as_ref(), config.key_file.as_ref())?;
    let mut previous = Vec::new();
    for f in &config.previous_key_files {
        previous.push(read_key("vault.previous_key_files", None, Some(f))?);
    }
    for e in &config.previous_key_envs {
        previous.push(read_key("vault.previous_key_envs", Some(e), None)?);
    }
    let refs: Vec<&[u8]> = previous.iter().map(|k| k.as_slice()).collect();
    Keyring::new(&current, &refs).map_err(|e| e.to_string())
}

fn oauth_client(c: &ConnectionConfig) -> Result<Option<(OAuthClient, Vec<String>)>, String> {
    let (CredentialMode::Oauth, Some(o)) = (c.credential, &c.oauth) else {
        return Ok(None);
    };
    let secret = match (&o.client_secret_env, &o.client_secret_file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| format!("connection {}: environment variable {var} is not set", c.id))?,
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("connection {}: cannot read {}: {e}", c.id, f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => return Err(format!("connection {}: no OAuth client secret", c.id)),
    };
    let bad = |e: oauth2::url::ParseError| format!("connection {}: {e}", c.id);
    let revocation = o
        .revocation_url
        .as_ref()
        .map(|u| RevocationUrl::new(u.clone()))
        .transpose()
        .map_err(bad)?;
    let client = BasicClient::new(ClientId::new(o.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret))
        .set_auth_uri(AuthUrl::new(o.authorize_url.clone()).map_err(bad)?)
        .set_token_uri(TokenUrl::new(o.token_url.clone()).map_err(bad)?)
        .set_redirect_uri(RedirectUrl::new(o.redirect_url.clone()).map_err(bad)?)
        .set_revocation_url_option(revocation);
    Ok(Some((client, o.scopes.clone())))
}

fn now() -> i64 {
    crate::auth::principal::unix_now()
}

/// A random number in `0..=max`.
fn jitter(max: i64) -> i64 {
    let mut b = [0u8; 4];
    if max <= 0 || getrandom::fill(&mut b).is_err() {
        return 0;
    }
    i64::from(u32::from_le_bytes(b)) % (max + 1)
}

impl Vault {
    /// Opens the vault of a configuration (`None` without `[vault]`).
    pub fn from_config(config: &Config) -> Result<Option<Vault>, String> {
        let Some(vc) = &config.vault else {
            return Ok(None);
        };
        let keys = keyring(vc)?;
        std::fs::create_dir_all(&config.server.data_dir).map_err(|e| e.to_string())?;
        let store = VaultStore::open(&config.server.data_dir.join(store::VAULT_FILE))
            .map_err(|e| e.to_string())?;
        let mut clients = BTreeMap::new();
        for c in &config.connections {
            if let Some(client) = oauth_client(c)? {
                clients.insert(c.id.clone(), client);
            }
        }
        let http = reqwest::Client::builder()
            .timeout(AS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Some(Vault {
            store: Arc::new(store),
            keys: Arc::new(keys),
            clients,
            http,
            limit: Arc::new(tokio::sync::Semaphore::new(vc.max_concurrent_refreshes)),
            config: vc.clone(),
            inflight: Mutex::new(HashSet::new()),
            pending: flows::PendingFlows::default(),
        }))
    }

    /// When a token of `lifetime` seconds, issued now, should be refreshed.
    fn due_at(&self, issued: i64, lifetime: i64) -> i64 {
        let ahead = lifetime * i64::from(self.config.refresh_at_percent) / 100;
        issued + (ahead - jitter(lifetime / 10)).max(1)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn CredentialStore, &Keyring) -> Result<T, VaultError> + Send + 'static,
    ) -> Result<T, VaultError> {
        let (store, keys) = (Arc::clone(&self.store), Arc::clone(&self.keys));
        tokio::task::spawn_blocking(move || f(store.as_ref(), &keys))
            .await
            .map_err(|e| VaultError::Store(e.to_string()))?
    }

    /// The HTTP client token requests use.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Stores a freshly granted OAuth token for its owner.
    pub async fn store_grant(
        &self,
        owner: &Owner,
        access_token: String,
        refresh_token: Option<String>,
        expires_in: Option<Duration>,
        scopes: String,
    ) -> Result<i64, VaultError> {
        let lifetime = expires_in.map_or(DEFAULT_TOKEN_LIFETIME_SECS, |d| d.as_secs() as i64);
        let secret = Secret {
            access_token: Some(access_token),
            refresh_token,
            password: None,
        };
        self.store_tokens(owner, secret, scopes, lifetime, None)
            .await
    }

    /// Seals new OAuth tokens, due for refresh at their scheduled time; a compare-and-set on
    /// `expected_version` when given.
    async fn store_tokens(
        &self,
        owner: &Owner,
        secret: Secret,
        scopes: String,
        lifetime: i64,
        expected_version: Option<i64>,
    ) -> Result<i64, VaultError> {
        let issued = now();
        let due = self.due_at(issued, lifetime);
        let owner = owner.clone();
        self.blocking(move |store, keys| {
            let write = Write {
                kind: "oauth",
                status: Status::Connected,
                scopes: &scopes,
                expires_at: Some(issued + lifetime),
                refresh_due_at: Some(due),
                failures: 0,
                secret: &secret,
            };
            store.put(&owner, keys, &write, expected_version, issued)
        })
        .await
    }

    /// Stores a per-user password (or key).
    pub async fn store_password(&self, owner: &Owner, password: String) -> Result<i64, VaultError> {
        let owner = owner.clone();
        self.blocking(move |store, keys| {
            let secret = Secret {
                access_token: None,
                refresh_token: None,
                password: Some(password),
            };
            let write = Write {
                kind: "password",
                status: Status::Connected,
                scopes: "",
                expires_at: None,
                refresh_due_at: None,
                failures: 0,
                secret: &secret,
            };
            store.put(&owner, keys, &write, None, now())
        })
        .await
    }

    /// The owner's usable credential for a query. A token about to expire is refreshed inline
    /// (single-flight with the background refresher).
    pub async fn credential(&self, owner: &Owner, audit: &AuditLog) -> Result<Secret, Access> {
        let mut last = None;
        for _ in 0..3 {
            let o = owner.clone();
            let rec = self
                .blocking(move |store, keys| store.get(&o, keys))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "vault read failed");
                    Access::Unavailable
                })?
                .ok_or(Access::ReauthRequired)?;
            if matches!(rec.meta.status, Status::Expired | Status::Revoked) {
                return Err(Access::ReauthRequired);
            }
            let expires = rec.meta.expires_at;
            if expires.is_none_or(|e| e > now() + INLINE_REFRESH_MARGIN_SECS) {
                return Ok(rec.secret);
            }
            match self.refresh(owner, rec.meta.version, audit).await {
                Refreshed::Expired => return Err(Access::ReauthRequired),
                Refreshed::Ok => {}
                // Someone else is refreshing it: give them a moment.
                Refreshed::Skipped => tokio::time::sleep(Duration::from_millis(200)).await,
                // The authorization server is failing: the current token, while it lasts.
                Refreshed::Retry => {
                    if expires.is_some_and(|e| e > now()) {
                        return Ok(rec.secret);
                    }
                    return Err(Access::RefreshFailing);
                }
            }
            last = Some(rec);
        }
        match last {
            Some(rec) if rec.meta.expires_at.is_some_and(|e| e > now()) => Ok(rec.secret),
            _ => Err(Access::RefreshFailing),
        }
    }

    /// Refreshes a credential now, whatever its schedule (the warehouse refused its token), and
    /// returns the result.
    pub async fn force_refresh(&self, owner: &Owner, audit: &AuditLog) -> Result<Secret, Access> {
        let o = owner.clone();
        let meta = self
            .blocking(move |store, _| store.meta(&o))
            .await
            .map_err(|_| Access::Unavailable)?
            .ok_or(Access::ReauthRequired)?;
        match self.refresh(owner, meta.version, audit).await {
            Refreshed::Expired => return Err(Access::ReauthRequired),
            Refreshed::Retry => return Err(Access::RefreshFailing),
            Refreshed::Ok | Refreshed::Skipped => {}
        }
        let o = owner.clone();
        let rec = self
            .blocking(move |store, keys| store.get(&o, keys))
            .await
            .map_err(|_| Access::Unavailable)?
            .ok_or(Access::ReauthRequired)?;
        match rec.meta.status {
            Status::Expired | Status::Revoked => Err(Access::ReauthRequired),
            _ => Ok(rec.secret),
        }
    }

    /// Refreshes one credential: claims it, calls the token endpoint, stores the outcome.
    pub async fn refresh(&self, owner: &Owner, version: i64, audit: &AuditLog) -> Refreshed {
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if !inflight.insert(owner.clone()) {
                return Refreshed::Skipped;
            }
        }
        let outcome = self.refresh_claimed(owner, version, audit).await;
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(owner);
        outcome
    }

    async fn refresh_claimed(&self, owner: &Owner, version: i64, audit: &AuditLog) -> Refreshed {
        let Some((client, _)) = self.clients.get(&owner.connection) else {
            return Refreshed::Skipped;
        };
        let o = owner.clone();
        let claimed = self
            .blocking(move |store, keys| {
                if !store.claim(&o, version)? {
                    return Ok(None);
                }
                store.get(&o, keys)
            })
            .await;
        let rec = match claimed {
            Ok(Some(rec)) => rec,
            Ok(None) => return Refreshed::Skipped,
            Err(e) => {
                tracing::warn!(error = %e, "vault: cannot claim a credential for refresh");
                return Refreshed::Skipped;
            }
        };
        let failures = rec.meta.failures;
        let Some(refresh_token) = rec.secret.refresh_token.clone() else {
            return self.expire(owner, version, failures, audit).await;
        };
        let response = client
            .exchange_refresh_token(&RefreshToken::new(refresh_token))
            .request_async(&self.http)
            .await;
        match response {
            Ok(tokens) => {
                let lifetime = tokens
                    .expires_in()
                    .map_or(DEFAULT_TOKEN_LIFETIME_SECS, |d| d.as_secs() as i64);
                let secret = Secret {
                    access_token: Some(tokens.access_token().secret().clone()),
                    // Rotation: keep the new refresh token when the server sends one.
                    refresh_token: tokens
                        .refresh_token()
                        .map(|t| t.secret().clone())
                        .or_else(|| rec.secret.refresh_token.clone()),
                    password: None,
                };
                let scopes = tokens.scopes().map_or(rec.meta.scopes.clone(), |s| {
                    s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")
                });
                let stored = self
                    .store_tokens(owner, secret, scopes, lifetime, Some(version))
                    .await;
                match stored {
                    Ok(_) => {
                        credential_audit(audit, owner, "credential_refreshed", None).await;
                        Refreshed::Ok
                    }
                    Err(e) => {
                        // The new tokens are lost; the old refresh token may be dead (rotation).
                        tracing::error!(error = %e, "vault: refreshed tokens not stored");
                        Refreshed::Retry
                    }
                }
            }
            Err(RequestTokenError::ServerResponse(r))
                if *r.error() == BasicErrorResponseType::InvalidGrant =>
            {
                self.expire(owner, version, failures, audit).await
            }
            Err(e) => {
                let failures = failures + 1;
                let backoff = (1i64 << failures.min(9)).min(MAX_BACKOFF_SECS);
                tracing::warn!(connection = %owner.connection, failures, error = %e, "token refresh failed; will retry");
                self.finish(
                    owner,
                    version,
                    Status::Connected,
                    Some(now() + backoff),
                    failures,
                    audit,
                    "credential_refresh_failed",
                )
                .await;
                Refreshed::Retry
            }
        }
    }

    /// The refresh token no longer works: the user must authorize again.
    async fn expire(
        &self,
        owner: &Owner,
        version: i64,
        failures: i64,
        audit: &AuditLog,
    ) -> Refreshed {
        self.finish(
            owner,
            version,
            Status::Expired,
            None,
            failures,
            audit,
            "credential_expired",
        )
        .await;
        Refreshed::Expired
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        owner: &Owner,
        version: i64,
        status: Status,
        due: Option<i64>,
        failures: i64,
        audit: &AuditLog,
        code: &str,
    ) {
        let o = owner.clone();
        if let Err(e) = self
            .blocking(move |store, _| store.set_status(&o, version, status, due, failures))
            .await
        {
            tracing::warn!(error = %e, "vault: status not stored");
        }
        credential_audit(audit, owner, code, None).await;
    }

    /// Runs the background refresher until the task is aborted.
    pub async fn refresher(self: Arc<Self>, audit: AuditLog) {
        if let Err(e) = self.blocking(|store, _| store.recover(now())).await {
            tracing::warn!(error = %e, "vault: cannot recover interrupted refreshes");
        }
        let mut every = tokio::time::interval(Duration::from_millis(self.config.refresh_check_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let due = match self.blocking(|store, _| store.due(now(), DUE_BATCH)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "vault: cannot list due credentials");
                    continue;
                }
            };
            for (owner, version) in due {
                let Ok(permit) = Arc::clone(&self.limit).acquire_owned().await else {
                    return;
                };
                let (vault, audit) = (Arc::clone(&self), audit.clone());
                tokio::spawn(async move {
                    vault.refresh(&owner, version, &audit).await;
                    drop(permit);
                });
            }
        }
    }

    /// Deletes a credential, revoking its refresh token at the server when it can.
    pub async fn disconnect(&self, owner: &Owner, audit: &AuditLog) -> Result<bool, VaultError> {
        let o = owner.clone();
        let rec = self.blocking(move |store, keys| store.get(&o, keys)).await;
        if let (Ok(Some(rec)), Some((client, _))) = (&rec, self.clients.get(&owner.connection))
            && let Some(rt) = &rec.secret.refresh_token
        {
            let token = oauth2::StandardRevocableToken::RefreshToken(RefreshToken::new(rt.clone()));
            match client.revoke_token(token) {
                Ok(req) => {
                    if let Err(e) = req.request_async(&self.http).await {
                        tracing::warn!(error = %e, "revocation at the authorization server failed");
                    }
                }
                Err(_) => tracing::info!("no revocation endpoint: the token is only deleted"),
            }
        }
        let o = owner.clone();
        let deleted = self.blocking(move |store, _| store.delete(&o)).await?;
        if deleted {
            credential_audit(audit, owner, "credential_disconnected", None).await;
        }
        Ok(deleted)
    }
}

/// Writes a credential event.
pub async fn credential_audit(
    audit: &AuditLog,
    owner: &Owner,
    code: &str,
    auth_method: Option<&str>,
) {
    let mut r = AuditRecord::new(
        Event::CredentialEvent,
        crate::context::current_request_id(),
        Decision::Allow,
    );
    r.user = Some(owner.user.clone());
    r.tenant = Some(owner.tenant.clone());
    r.connection = Some(owner.connection.clone());
    r.code = Some(code.to_string());
    r.auth_method = auth_method.map(str::to_string);
    if let Err(e) = audit.append(r).await {
        tracing::error!(error = %e, "credential audit record not written");
    }
}
