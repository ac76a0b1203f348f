//! The authentication store (`<data_dir>/auth.sqlite`): service clients and their hashed
//! secrets, service tokens, one-time tickets, sessions, API keys and seen JWT ids.
//!
//! Only SHA-256 hashes of secrets are stored (every secret is 256 random bits). Single-use is a
//! conditional `UPDATE` inside one transaction, so a ticket can be exchanged once even when two
//! requests race. Calls block: async callers run them on the blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::principal::{AuthError, AuthMethod, Principal, token_hash};

/// Name of the store in the data directory.
pub const AUTH_FILE: &str = "auth.sqlite";
/// Used or expired tokens are kept this long after expiry (so a replay is told apart from a
/// forgery), then purged.
const KEEP_AFTER_EXPIRY_SECS: i64 = 24 * 3600;
/// How long SQLite waits for a lock held by another process (the CLI) before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service_clients (
    client_id  TEXT PRIMARY KEY,
    tenants    TEXT NOT NULL,
    groups     TEXT,
    created    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS service_secrets (
    secret_hash BLOB PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES service_clients(client_id) ON DELETE CASCADE,
    created     INTEGER NOT NULL,
    not_after   INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        BLOB PRIMARY KEY,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    user        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    client_id   TEXT,
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    max_expires INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens(user, kind);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    principal   TEXT NOT NULL,
    created     INTEGER NOT NULL,
    expires     INTEGER,
    revoked_at  INTEGER
);
CREATE TABLE IF NOT EXISTS seen_jti (
    jti     TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
);
";

/// A store failure (the message is for logs).
#[derive(Debug, thiserror::Error)]
#[error("auth store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Kinds of token kept in `tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A service token (mints tickets).
    Service,
    /// A one-time ticket.
    Ticket,
    /// A session.
    Session,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Service => "service",
            TokenKind::Ticket => "ticket",
            TokenKind::Session => "session",
        }
    }
}

/// A ticket or session as stored.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Public id (the session id).
    pub id: String,
    /// Who it is for.
    pub principal: Principal,
    /// Expiry (idle expiry for sessions).
    pub expires: i64,
    /// Absolute cap.
    pub max_expires: i64,
    /// Signed out or revoked.
    pub revoked: bool,
}

/// A service client.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceClient {
    /// Its id.
    pub client_id: String,
    /// Tenants it may mint tickets for (`*` for any).
    pub tenants: Vec<String>,
    /// Groups it may put in tickets (`None`: any group that holds no admin or compliance role).
    pub groups: Option<Vec<String>>,
    /// The attributes it may put in tickets, each with the values it may mint (`*`: any
    /// value; an integer is compared by its decimal text). `None`: any attribute, any value.
    pub attributes: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Live secrets (including ones in their rotation overlap).
    pub secrets: usize,
}

impl ServiceClient {
    /// Whether it may mint for `tenant`.
    pub fn may_mint_for(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }

    /// Whether it may put attribute `name` with `value` in a ticket: every element of a list
    /// must be allowed (so a list can only narrow what one value could show).
    pub fn may_mint_attribute(&self, name: &str, value: &sluice_policy::AttributeValue) -> bool {
        use sluice_policy::AttributeValue as A;
        let Some(scope) = &self.attributes else {
            return true;
        };
        let Some(allowed) = scope.get(name) else {
            return false;
        };
        if allowed.iter().any(|a| a == "*") {
            return true;
        }
        let ok = |v: &str| allowed.iter().any(|a| a == v);
        match value {
            A::Text(s) => ok(s),
            A::Integer(i) => ok(&i.to_string()),
            A::TextList(l) => l.iter().all(|s| ok(s)),
            A::IntegerList(l) => l.iter().all(|i| ok(&i.to_string())),
        }
    }
}

/// An API key as stored.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    /// Who it authenticates.
    pub principal: Principal,
    /// Expiry, if any.
    pub expires: Option<i64>,
    /// Revoked.
    pub revoked: bool,
}

/// An API key, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    /// Its id (the part after `slk_`).
    pub id: String,
    /// Its label.
    pub name: String,
    /// User.
    pub user: String,
    /// Tenant.
    pub tenant: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Created (Unix seconds).
    pub created: i64,
    /// Expiry (Unix seconds).
    pub expires: Option<i64>,
    /// Revoked.
    pub revoked: bool,
}

/// What to store for a new ticket or session.
pub struct NewToken<'a> {
    /// Kind.
    pub kind: TokenKind,
    /// The secret token (only its hash is stored).
    pub token: &'a str,
    /// Public id.
    pub id: &'a str,
    /// Who it is for.
    pub principal: &'a Principal,
    /// The service client that minted it.
    pub client_id: Option<&'a str>,
    /// Now.
    pub now: i64,
    /// Expiry.
    pub expires: i64,
    /// Absolute cap.
    pub max_expires: i64,
}

/// The SQLite-backed store.
pub struct AuthStore {
    conn: Mutex<Connection>,
}

impl AuthStore {
    /// Opens (creating) the store.
    pub fn open(path: &Path) -> Result<AuthStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        // Stores made before attribute scopes lack the column (NULL: any attribute, as then).
        let scoped: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('service_clients') WHERE name = 'attributes'",
            [],
            |r| r.get(0),
        )?;
        if !scoped {
            conn.execute_batch("ALTER TABLE service_clients ADD COLUMN attributes TEXT")?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(AuthStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- service clients ----

    /// Creates a service client and returns its first secret (shown once).
    pub fn create_client(
        &self,
        client_id: &str,
        tenants: &[String],
        groups: Option<&[String]>,
        attributes: Option<&std::collections::BTreeMap<String, Vec<String>>>,
        now: i64,
    ) -> Result<String, StoreError> {
        let secret =
            super::principal::random_token("scs_").map_err(|e| StoreError(e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM service_clients WHERE client_id = ?",
                [client_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError(format!("client {client_id:?} exists")));
        }
        tx.execute(
            "INSERT INTO service_clients (client_id, tenants, groups, created, attributes)
             VALUES (?, ?, ?, ?, ?)",
            params![
                client_id,
                serde_json::to_string(tenants)?,
                groups.map(serde_json::to_string).transpose()?,
                now,
                attributes.map(serde_json::to_string).transpose()?,
            ],
        )?;
        tx.execute(
            "INSERT INTO service_secrets (secret_hash, client_id, created) VALUES (?, ?, ?)",
            params![token_hash(&secret).as_slice(), client_id, now],
        )?;
        tx.commit()?;
        Ok(secret)
    }

    /// Adds a new secret; every older secret stops working `overlap_secs` from now (so the
    /// backend can roll over without downtime). Returns the new secret.
    pub fn rotate_client_secret(
        &self,
        client_id: &str,
        overlap_secs: i64,
        now: i64,
    ) -> Result<String, StoreError> {
        let secret =
            super::principal::random_token("scs_").map_err(|e| StoreError(e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE service_secrets SET not_after = MIN(COALESCE(not_after, ?1), ?1)
             WHERE client_id = ?2",
            params![now + overlap_secs, client_id],
        )?;
        if n == 0 {
            return Err(StoreError(format!("no client {client_id:?}")));
        }
        // Tokens minted with the old secrets die now (the backend gets a fresh one with either
        // secret during the overlap): a leaked secret's tokens do not outlive the rotation.
        tx.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE kind = 'service' AND client_id = ?2
               AND revoked_at IS NULL",
            params![now, client_id],
        )?;
        // With no overlap the rotation answers a leak: the tickets and sessions the client
        // minted (perhaps with the leaked secret) end too.
        if overlap_secs <= 0 {
            tx.execute(
                "UPDATE tokens SET revoked_at = ?1
                 WHERE kind IN ('ticket', 'session') AND client_id = ?2 AND revoked_at IS NULL",
                params![now, client_id],
            )?;
        }
        tx.execute(
            "INSERT INTO service_secrets (secret_hash, client_id, created) VALUES (?, ?, ?)",
            params![token_hash(&secret).as_slice(), client_id, now],
        )?;
        tx.commit()?;
        Ok(secret)
    }

    /// Deletes a client, its secrets and its live service tokens.
    pub fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM tokens WHERE client_id = ?
               AND (kind = 'service' OR (kind = 'ticket' AND used_at IS NULL))",
            [client_id],
        )?;
        // Its sessions end with it (revoked, not deleted: a later use is told `session_revoked`).
        conn.execute(
            "UPDATE tokens SET revoked_at = ?2
             WHERE kind = 'session' AND client_id = ?1 AND revoked_at IS NULL",
            params![client_id, super::principal::unix_now()],
        )?;
        Ok(conn.execute(
            "DELETE FROM service_clients WHERE client_id = ?",
            [client_id],
        )? > 0)
    }

    /// Every client.
    pub fn list_clients(&self, now: i64) -> Result<Vec<ServiceClient>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.client_id, c.tenants, c.groups, c.attributes,
                    (SELECT COUNT(*) FROM service_secrets s
                      WHERE s.client_id = c.client_id AND (s.not_after IS NULL OR s.not_after > ?))
             FROM service_clients c ORDER BY c.client_id",
        )?;
        let rows = stmt.query_map([now], client_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Checks a client's id and secret.
    pub fn check_client(
        &self,
        client_id: &str,
        secret: &str,
        now: i64,
    ) -> Result<Option<ServiceClient>, StoreError> {
        let conn = self.conn();
        let hash = token_hash(secret);
        let found: Option<String> = conn
            .query_row(
                "SELECT client_id FROM service_secrets
                 WHERE secret_hash = ? AND (not_after IS NULL OR not_after > ?)",
                params![hash.as_slice(), now],
                |r| r.get(0),
            )
            .optional()?;
        if found.as_deref() != Some(client_id) {
            return Ok(None);
        }
        Ok(conn
            .query_row(
                "SELECT client_id, tenants, groups, attributes, 1 FROM service_clients
                 WHERE client_id = ?",
                [client_id],
                client_from_row,
            )
            .optional()?)
    }

    /// Stores a service token for a client.
    pub fn insert_service_token(
        &self,
        token: &str,
        client_id: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.conn().execute(
            "INSERT INTO tokens (hash, kind, id, user, tenant, principal, client_id, created,
                                 expires, max_expires)
             VALUES (?, 'service', ?, ?, '', 'null', ?, ?, ?, ?)",
            params![
                token_hash(token).as_slice(),
                id,
                client_id,
                client_id,
                now,
                expires,
                expires
            ],
        )?;
        Ok(())
    }

    /// The client behind a live service token.
    pub fn service_token_client(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<ServiceClient>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT c.client_id, c.tenants, c.groups, c.attributes, 1
                 FROM tokens t JOIN service_clients c ON c.client_id = t.client_id
                 WHERE t.hash = ? AND t.kind = 'service' AND t.expires > ?
                   AND t.revoked_at IS NULL",
                params![hash.as_slice(), now],
                client_from_row,
            )
            .optional()?)
    }

    // ---- tickets and sessions ----

    /// Stores a ticket or session.
    pub fn insert(&self, t: &NewToken<'_>) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tokens (hash, kind, id, user, tenant, principal, client_id, created,
                                 expires, max_expires)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                token_hash(t.token).as_slice(),
                t.kind.as_str(),
                t.id,
                t.principal.user,
                t.principal.tenant,
                serde_json::to_string(t.principal)?,
                t.client_id,
                t.now,
                t.expires,
                t.max_expires
            ],
        )?;
        Ok(())
    }

    /// Exchanges a ticket for a session, once: marks the ticket used and stores the session in
    /// one transaction. `session` receives the ticket's principal and returns the session to
    /// store.
    pub fn exchange_ticket(
        &self,
        ticket: &str,
        now: i64,
        session: impl FnOnce(&Principal) -> Result<(String, Principal, i64, i64), AuthError>,
    ) -> Result<Result<Principal, AuthError>, StoreError> {
        let hash = token_hash(ticket);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // principal, expiry, used, revoked, the client that minted it.
        type TicketRow = (String, i64, Option<i64>, Option<i64>, Option<String>);
        let row: Option<TicketRow> = tx
            .query_row(
                "SELECT principal, expires, used_at, revoked_at, client_id FROM tokens
                 WHERE hash = ? AND kind = 'ticket'",
                [hash.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((principal, expires, used_at, revoked_at, client_id)) = row else {
            return Ok(Err(AuthError::TicketInvalid));
        };
        if used_at.is_some() {
            return Ok(Err(AuthError::TicketReplayed));
        }
        if revoked_at.is_some() {
            return Ok(Err(AuthError::TicketInvalid));
        }
        if now >= expires {
            return Ok(Err(AuthError::TicketExpired));
        }
        let principal: Principal = serde_json::from_str(&principal)?;
        let (token, session_principal, expires, max_expires) = match session(&principal) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let changed = tx.execute(
            "UPDATE tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL",
            params![now, hash.as_slice()],
        )?;
        if changed != 1 {
            return Ok(Err(AuthError::TicketReplayed));
        }
        let id = session_principal.session_id.clone().unwrap_or_default();
        // The session remembers the service client that minted its ticket: deleting the
        // client, or rotating its secret with no overlap, revokes it.
        tx.execute(
            "INSERT INTO tokens (hash, kind, id, user, tenant, principal, client_id, created,
                                 expires, max_expires)
             VALUES (?, 'session', ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                token_hash(&token).as_slice(),
                id,
                session_principal.user,
                session_principal.tenant,
                serde_json::to_string(&session_principal)?,
                client_id,
                now,
                expires,
                max_expires
            ],
        )?;
        tx.commit()?;
        Ok(Ok(session_principal))
    }

    /// A ticket or session by the hash of its token.
    pub fn lookup(&self, hash: &[u8; 32], kind: TokenKind) -> Result<Option<TokenRow>, StoreError> {
        let conn = self.conn();
        let row: Option<(String, String, i64, i64, Option<i64>)> = conn
            .query_row(
                "SELECT id, principal, expires, max_expires, revoked_at FROM tokens
                 WHERE hash = ? AND kind = ?",
                params![hash.as_slice(), kind.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        row.map(|(id, principal, expires, max_expires, revoked)| {
            Ok(TokenRow {
                id,
                principal: serde_json::from_str(&principal)?,
                expires,
                max_expires,
                revoked: revoked.is_some(),
            })
        })
        .transpose()
    }

    /// Writes a session's renewed idle expiry (never past its cap).
    pub fn touch(&self, hash: &[u8; 32], expires: i64) {
        if let Err(e) = self.conn().execute(
            "UPDATE tokens SET expires = MIN(?, max_expires) WHERE hash = ? AND kind = 'session'",
            params![expires, hash.as_slice()],
        ) {
            tracing::warn!(error = %e, "session renewal not stored");
        }
    }

    /// Revokes one session; returns whether it was live.
    pub fn revoke(&self, hash: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE tokens SET revoked_at = ? WHERE hash = ? AND kind = 'session'
               AND revoked_at IS NULL",
            params![now, hash.as_slice()],
        )? > 0)
    }

    /// Revokes every live session (and unused ticket) of a user, optionally in one tenant.
    /// Returns the hashes revoked, so caches can drop them.
    pub fn revoke_user(
        &self,
        user: &str,
        tenant: Option<&str>,
        now: i64,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let hashes = {
            let mut stmt = tx.prepare(
                "SELECT hash FROM tokens WHERE user = ?1 AND revoked_at IS NULL
                   AND (kind = 'session' OR (kind = 'ticket' AND used_at IS NULL))
                   AND (?2 IS NULL OR tenant = ?2)",
            )?;
            let rows = stmt.query_map(params![user, tenant], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for h in rows {
                let h = h?;
                let mut a = [0u8; 32];
                if h.len() == 32 {
                    a.copy_from_slice(&h);
                    out.push(a);
                }
            }
            out
        };
        tx.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE user = ?2 AND revoked_at IS NULL
               AND (kind = 'session' OR (kind = 'ticket' AND used_at IS NULL))
               AND (?3 IS NULL OR tenant = ?3)",
            params![now, user, tenant],
        )?;
        tx.commit()?;
        Ok(hashes)
    }

    // ---- API keys ----

    /// Creates an API key; returns its id and the key (shown once).
    pub fn create_api_key(
        &self,
        name: &str,
        principal: &Principal,
        now: i64,
        expires: Option<i64>,
    ) -> Result<(String, String), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let secret = super::principal::random_token("").map_err(|e| StoreError(e.to_string()))?;
        let key = format!("{}{id}_{secret}", super::principal::API_KEY_PREFIX);
        let mut stored = principal.clone();
        stored.method = AuthMethod::ApiKey;
        stored.session_id = None;
        self.conn().execute(
            "INSERT INTO api_keys (id, hash, name, principal, created, expires)
             VALUES (?, ?, ?, ?, ?, ?)",
            params![
                id,
                token_hash(&key).as_slice(),
                name,
                serde_json::to_string(&stored)?,
                now,
                expires
            ],
        )?;
        Ok((id, key))
    }

    /// An API key by the hash of the whole key.
    pub fn lookup_api_key(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, StoreError> {
        let conn = self.conn();
        let row: Option<(String, Option<i64>, Option<i64>)> = conn
            .query_row(
                "SELECT principal, expires, revoked_at FROM api_keys WHERE hash = ?",
                [hash.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(p, expires, revoked)| {
            Ok(ApiKeyRow {
                principal: serde_json::from_str(&p)?,
                expires,
                revoked: revoked.is_some(),
            })
        })
        .transpose()
    }

    /// Revokes an API key; returns whether it existed and was live.
    pub fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            params![now, id],
        )? > 0)
    }

    /// Every API key (never the secret).
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, principal, created, expires, revoked_at FROM api_keys ORDER BY created",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, p, created, expires, revoked) = row?;
            let p: Principal = serde_json::from_str(&p)?;
            out.push(ApiKeyInfo {
                id,
                name,
                user: p.user,
                tenant: p.tenant,
                groups: p.groups,
                created,
                expires,
                revoked: revoked.is_some(),
            });
        }
        Ok(out)
    }

    // ---- JWT replay ----

    /// Remembers a `jti` until `expires`; false if it was already seen.
    pub fn remember_jti(&self, jti: &str, expires: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO seen_jti (jti, expires) VALUES (?, ?)",
            params![jti, expires],
        )? == 1)
    }

    /// Deletes what can no longer matter: long-expired tokens, past `jti`s, secrets past their
    /// overlap window.
    pub fn purge(&self, now: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM tokens WHERE max_expires < ?",
            [now - KEEP_AFTER_EXPIRY_SECS],
        )?;
        conn.execute("DELETE FROM seen_jti WHERE expires < ?", [now])?;
        conn.execute(
            "DELETE FROM service_secrets WHERE not_after IS NOT NULL AND not_after < ?",
            [now],
        )?;
        Ok(())
    }
}

fn client_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceClient> {
    let tenants: String = r.get(1)?;
    let groups: Option<String> = r.get(2)?;
    let attributes: Option<String> = r.get(3)?;
    Ok(ServiceClient {
        client_id: r.get(0)?,
        tenants: serde_json::from_str(&tenants).unwrap_or_default(),
        groups: groups.and_then(|g| serde_json::from_str(&g).ok()),
        // A scope that does not read back allows nothing (never everything).
        attributes: attributes.map(|a| serde_json::from_str(&a).unwrap_or_default()),
        secrets: r.get::<_, i64>(4)? as usize,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn principal() -> Principal {
        Principal {
            user: "u".into(),
            tenant: "t".into(),
            groups: vec![],
            attributes: Default::default(),
            method: AuthMethod::TicketSession,
            session_id: None,
        }
    }

    #[test]
    fn rotated_secrets_overlap_then_stop() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuthStore::open(&dir.path().join("a.sqlite")).unwrap();
        let old = s
            .create_client("c", &["t".into()], None, None, 100)
            .unwrap();
        let new = s.rotate_client_secret("c", 50, 110).unwrap();
        assert!(s.check_client("c", &old, 150).unwrap().is_some());
        assert!(s.check_client("c", &new, 150).unwrap().is_some());
        assert!(s.check_client("c", &old, 160).unwrap().is_none());
        assert!(s.check_client("c", &new, 10_000).unwrap().is_some());
        // A secret is only good with its own client id.
        s.create_client("d", &["t".into()], None, None, 100)
            .unwrap();
        assert!(s.check_client("d", &new, 150).unwrap().is_none());
    }

    #[test]
    fn rotation_revokes_service_tokens_and_deletion_revokes_unused_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuthStore::open(&dir.path().join("a.sqlite")).unwrap();
        s.create_client("c", &["t".into()], None, None, 100)
            .unwrap();
        s.insert_service_token("sst_old", "c", 100, 1000).unwrap();
        assert!(
            s.service_token_client(&token_hash("sst_old"), 110)
                .unwrap()
                .is_some()
        );
        s.rotate_client_secret("c", 3600, 120).unwrap();
        // Tokens minted with the leaked secret die with the rotation.
        assert!(
            s.service_token_client(&token_hash("sst_old"), 130)
                .unwrap()
                .is_none()
        );

        let p = principal();
        s.insert(&NewToken {
            kind: TokenKind::Ticket,
            token: "slt_pending",
            id: "t1",
            principal: &p,
            client_id: Some("c"),
            now: 130,
            expires: 190,
            max_expires: 190,
        })
        .unwrap();
        assert!(s.delete_client("c").unwrap());
        let mk = |p: &Principal| {
            let mut p = p.clone();
            p.session_id = Some("s".into());
            Ok(("sls_s".to_string(), p, 200, 300))
        };
        assert_eq!(
            s.exchange_ticket("slt_pending", 140, mk).unwrap(),
            Err(AuthError::TicketInvalid)
        );
    }

    #[test]
    fn a_ticket_exchanges_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = AuthStore::open(&dir.path().join("a.sqlite")).unwrap();
        let p = principal();
        s.insert(&NewToken {
            kind: TokenKind::Ticket,
            token: "slt_x",
            id: "i1",
            principal: &p,
            client_id: Some("c"),
            now: 0,
            expires: 60,
            max_expires: 60,
        })
        .unwrap();
        let mk = |n: &str| {
            let n = n.to_string();
            move |p: &Principal| {
                let mut p = p.clone();
                p.session_id = Some(n.clone());
                Ok((format!("sls_{n}"), p, 100, 200))
            }
        };
        assert!(s.exchange_ticket("slt_x", 10, mk("a")).unwrap().is_ok());
        assert_eq!(
            s.exchange_ticket("slt_x", 11, mk("b")).unwrap(),
            Err(AuthError::TicketReplayed)
        );
        assert_eq!(
            s.exchange_ticket("slt_y", 11, mk("c")).unwrap(),
            Err(AuthError::TicketInvalid)
        );
        let row = s
            .lookup(&token_hash("sls_a"), TokenKind::Session)
            .unwrap()
            .unwrap();
        assert_eq!(row.principal.session_id.as_deref(), Some("a"));
        assert!(
            s.lookup(&token_hash("sls_b"), TokenKind::Session)
                .unwrap()
                .is_none()
        );
    }
}
