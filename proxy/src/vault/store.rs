//! The vault's storage (`<data_dir>/vault.sqlite`): one record per (tenant, user, connection),
//! its status, scopes and expiry in the clear, its secret material sealed ([`super::crypto`]).
//!
//! Every write bumps the record's version and re-seals under the current key with that version
//! in the associated data, and is a compare-and-set on the version read: two writers (a refresh
//! and a key rotation, say) cannot overwrite each other. Calls block: async callers run them on
//! the blocking pool. A shared PostgreSQL store can implement the same operations later.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::crypto::{Binding, CryptoError, Keyring, Sealed};

/// Name of the vault in the data directory.
pub const VAULT_FILE: &str = "vault.sqlite";
/// How long SQLite waits for a lock held by another process (the CLI).
const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS credentials (
    tenant         TEXT NOT NULL,
    user           TEXT NOT NULL,
    connection     TEXT NOT NULL,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    expires_at     INTEGER,
    refresh_due_at INTEGER,
    failures       INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL,
    key_id         TEXT NOT NULL,
    nonce          BLOB NOT NULL,
    ciphertext     BLOB NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant, user, connection)
);
CREATE INDEX IF NOT EXISTS credentials_due ON credentials(status, refresh_due_at);
CREATE TABLE IF NOT EXISTS retired_versions (
    tenant     TEXT NOT NULL,
    user       TEXT NOT NULL,
    connection TEXT NOT NULL,
    version    INTEGER NOT NULL,
    PRIMARY KEY (tenant, user, connection)
);
";

/// A vault failure.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// SQLite failed.
    #[error("vault store: {0}")]
    Store(String),
    /// A record could not be opened or sealed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Someone else wrote the record since it was read.
    #[error("the credential changed concurrently")]
    Conflict,
}

impl From<rusqlite::Error> for VaultError {
    fn from(e: rusqlite::Error) -> Self {
        VaultError::Store(e.to_string())
    }
}

/// Whose credential, for which connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Tenant.
    pub tenant: String,
    /// User.
    pub user: String,
    /// Connection id.
    pub connection: String,
}

impl Owner {
    fn binding(&self, version: i64) -> Binding<'_> {
        Binding {
            tenant: &self.tenant,
            user: &self.user,
            connection: &self.connection,
            version,
        }
    }
}

/// Lifecycle of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Usable.
    Connected,
    /// A refresh is in flight (its token is still usable until it expires).
    Refreshing,
    /// The refresh token no longer works: the user must authorize again.
    Expired,
    /// Disconnected by the user or an administrator.
    Revoked,
}

impl Status {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::Refreshing => "refreshing",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "connected" => Status::Connected,
            "refreshing" => Status::Refreshing,
            "revoked" => Status::Revoked,
            _ => Status::Expired,
        }
    }
}

/// The secret material of a credential; wiped from memory when dropped.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Secret {
    /// OAuth access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// OAuth refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// A per-user password (or key) for warehouses without OAuth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl Drop for Secret {
    fn drop(&mut self) {
        for s in [
            &mut self.access_token,
            &mut self.refresh_token,
            &mut self.password,
        ]
        .into_iter()
        .flatten()
        {
            s.zeroize();
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What is stored besides the secret.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// `oauth` or `password`.
    pub kind: String,
    /// Status.
    pub status: Status,
    /// Granted scopes, space-separated.
    pub scopes: String,
    /// Access-token expiry (Unix seconds).
    pub expires_at: Option<i64>,
    /// When the refresher acts next.
    pub refresh_due_at: Option<i64>,
    /// Consecutive failed refreshes.
    pub failures: i64,
    /// Record version.
    pub version: i64,
    /// Key that sealed it.
    pub key_id: String,
}

/// A record, opened.
#[derive(Debug)]
pub struct Record {
    /// The metadata.
    pub meta: Meta,
    /// The secret.
    pub secret: Secret,
}

/// A write.
pub struct Write<'a> {
    /// `oauth` or `password`.
    pub kind: &'a str,
    /// Status after the write.
    pub status: Status,
    /// Scopes.
    pub scopes: &'a str,
    /// Access-token expiry.
    pub expires_at: Option<i64>,
    /// Next refresh.
    pub refresh_due_at: Option<i64>,
    /// Consecutive failures.
    pub failures: i64,
    /// The secret.
    pub secret: &'a Secret,
}

/// The vault store.
pub struct VaultStore {
    conn: Mutex<Connection>,
}

type Row = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    String,
    Vec<u8>,
    Vec<u8>,
);

const COLUMNS: &str = "kind, status, scopes, expires_at, refresh_due_at, failures, version, \
                       key_id, nonce, ciphertext";
const SELECT_ONE: &str = "SELECT kind, status, scopes, expires_at, refresh_due_at, failures, \
                          version, key_id, nonce, ciphertext FROM credentials \
                          WHERE tenant = ? AND user = ? AND connection = ?";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn split(row: Row) -> (Meta, Sealed) {
    let (kind, status, scopes, expires_at, refresh_due_at, failures, version, key_id, nonce, ct) =
        row;
    (
        Meta {
            kind,
            status: Status::parse(&status),
            scopes,
            expires_at,
            refresh_due_at,
            failures,
            version,
            key_id: key_id.clone(),
        },
        Sealed {
            key_id,
            nonce,
            ciphertext: ct,
        },
    )
}

impl VaultStore {
    /// Opens (creating) the store.
    pub fn open(path: &Path) -> Result<VaultStore, VaultError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(VaultStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One owner's row (a cached statement: this runs on every per-user query).
    fn row(&self, owner: &Owner) -> Result<Option<Row>, VaultError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(SELECT_ONE)?;
        Ok(stmt
            .query_row(
                params![owner.tenant, owner.user, owner.connection],
                read_row,
            )
            .optional()?)
    }
}

/// The operations of a vault backend, with their compare-and-set semantics. SQLite
/// ([`VaultStore`]) is the single-node backend; a shared PostgreSQL store (horizontal
/// deployments) implements the same trait.
pub trait CredentialStore: Send + Sync {
    /// The metadata of a record (nothing is decrypted).
    fn meta(&self, owner: &Owner) -> Result<Option<Meta>, VaultError>;
    /// A record, opened with `keys`.
    fn get(&self, owner: &Owner, keys: &Keyring) -> Result<Option<Record>, VaultError>;
    /// Writes a record: a compare-and-set on `expected_version` (`None`: whatever is there).
    /// Re-seals under the current key with the new version. Returns the new version.
    fn put(
        &self,
        owner: &Owner,
        keys: &Keyring,
        write: &Write<'_>,
        expected_version: Option<i64>,
        now: i64,
    ) -> Result<i64, VaultError>;
    /// Changes status and schedule (compare-and-set on version; the secret is untouched).
    fn set_status(
        &self,
        owner: &Owner,
        version: i64,
        status: Status,
        refresh_due_at: Option<i64>,
        failures: i64,
    ) -> Result<(), VaultError>;
    /// Claims a connected record for refresh; only one claimant wins.
    fn claim(&self, owner: &Owner, version: i64) -> Result<bool, VaultError>;
    /// Records whose refresh is due, oldest first.
    fn due(&self, now: i64, limit: usize) -> Result<Vec<(Owner, i64)>, VaultError>;
    /// Puts records left `refreshing` by a crash back to `connected`, due now.
    fn recover(&self, now: i64) -> Result<usize, VaultError>;
    /// Every record of one user in one tenant (metadata only).
    fn list(&self, tenant: &str, user: &str) -> Result<Vec<(String, Meta)>, VaultError>;
    /// Deletes a record; returns whether there was one.
    fn delete(&self, owner: &Owner) -> Result<bool, VaultError>;
    /// Owners of records sealed with another key than `current_id`.
    fn sealed_with_other_keys(&self, current_id: &str) -> Result<Vec<Owner>, VaultError>;

    /// Re-seals every record under the current key, one compare-and-set each, so queries and
    /// refreshes go on meanwhile (a record written concurrently is simply retried). Returns how
    /// many records were re-sealed.
    fn rotate(&self, keys: &Keyring, now: i64) -> Result<usize, VaultError> {
        let mut done = 0;
        for _round in 0..10 {
            let pending = self.sealed_with_other_keys(keys.current_id())?;
            if pending.is_empty() {
                return Ok(done);
            }
            for owner in pending {
                let Some(rec) = self.get(&owner, keys)? else {
                    continue;
                };
                let m = &rec.meta;
                let write = Write {
                    kind: &m.kind,
                    status: m.status,
                    scopes: &m.scopes,
                    expires_at: m.expires_at,
                    refresh_due_at: m.refresh_due_at,
                    failures: m.failures,
                    secret: &rec.secret,
                };
                match self.put(&owner, keys, &write, Some(m.version), now) {
                    Ok(_) => done += 1,
                    Err(VaultError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(VaultError::Conflict)
    }
}

impl CredentialStore for VaultStore {
    /// The metadata of a record (nothing is decrypted).
    fn meta(&self, owner: &Owner) -> Result<Option<Meta>, VaultError> {
        Ok(self.row(owner)?.map(|r| split(r).0))
    }

    /// A record, opened with `keys`.
    fn get(&self, owner: &Owner, keys: &Keyring) -> Result<Option<Record>, VaultError> {
        let row = self.row(owner)?;
        let Some(row) = row else { return Ok(None) };
        let (meta, sealed) = split(row);
        let plain = keys.open(&sealed, &owner.binding(meta.version))?;
        let secret: Secret = serde_json::from_slice(&plain)
            .map_err(|_| VaultError::Crypto(CryptoError::Tampered))?;
        Ok(Some(Record { meta, secret }))
    }

    /// Writes a record: a compare-and-set on `expected_version` (`None`: the record must not
    /// exist, or is replaced whatever its version). Returns the new version.
    fn put(
        &self,
        owner: &Owner,
        keys: &Keyring,
        write: &Write<'_>,
        expected_version: Option<i64>,
        now: i64,
    ) -> Result<i64, VaultError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM credentials WHERE tenant = ? AND user = ? AND connection = ?",
                params![owner.tenant, owner.user, owner.connection],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(expected) = expected_version
            && current != Some(expected)
        {
            return Err(VaultError::Conflict);
        }
        // Versions never repeat for an owner, even across a disconnect: an old sealed row
        // restored into the file cannot match a version in use again.
        let retired: Option<i64> = tx
            .query_row(
                "SELECT version FROM retired_versions
                 WHERE tenant = ? AND user = ? AND connection = ?",
                params![owner.tenant, owner.user, owner.connection],
                |r| r.get(0),
            )
            .optional()?;
        let version = current.unwrap_or(0).max(retired.unwrap_or(0)) + 1;
        let plain = Zeroizing::new(
            serde_json::to_vec(write.secret).map_err(|e| VaultError::Store(e.to_string()))?,
        );
        let sealed = keys.seal(&plain, &owner.binding(version))?;
        tx.execute(
            "INSERT INTO credentials (tenant, user, connection, kind, status, scopes, expires_at,
                 refresh_due_at, failures, version, key_id, nonce, ciphertext, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (tenant, user, connection) DO UPDATE SET
                 kind = ?4, status = ?5, scopes = ?6, expires_at = ?7, refresh_due_at = ?8,
                 failures = ?9, version = ?10, key_id = ?11, nonce = ?12, ciphertext = ?13,
                 updated_at = ?14",
            params![
                owner.tenant,
                owner.user,
                owner.connection,
                write.kind,
                write.status.as_str(),
                write.scopes,
                write.expires_at,
                write.refresh_due_at,
                write.failures,
                version,
                sealed.key_id,
                sealed.nonce,
                sealed.ciphertext,
                now
            ],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Changes status and schedule without touching the secret (compare-and-set on version;
    /// the version is kept, so the ciphertext still opens).
    fn set_status(
        &self,
        owner: &Owner,
        version: i64,
        status: Status,
        refresh_due_at: Option<i64>,
        failures: i64,
    ) -> Result<(), VaultError> {
        let n = self.conn().execute(
            "UPDATE credentials SET status = ?, refresh_due_at = ?, failures = ?
             WHERE tenant = ? AND user = ? AND connection = ? AND version = ?",
            params![
                status.as_str(),
                refresh_due_at,
                failures,
                owner.tenant,
                owner.user,
                owner.connection,
                version
            ],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(VaultError::Conflict)
        }
    }

    /// Claims a connected record for refresh (status → refreshing), if its version is still
    /// `version`. Only one claimant wins.
    fn claim(&self, owner: &Owner, version: i64) -> Result<bool, VaultError> {
        Ok(self.conn().execute(
            "UPDATE credentials SET status = 'refreshing'
             WHERE tenant = ? AND user = ? AND connection = ? AND version = ?
               AND status = 'connected'",
            params![owner.tenant, owner.user, owner.connection, version],
        )? == 1)
    }

    /// Records whose refresh is due, oldest first.
    fn due(&self, now: i64, limit: usize) -> Result<Vec<(Owner, i64)>, VaultError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tenant, user, connection, version FROM credentials
             WHERE status = 'connected' AND kind = 'oauth' AND refresh_due_at <= ?
             ORDER BY refresh_due_at LIMIT ?",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok((
                Owner {
                    tenant: r.get(0)?,
                    user: r.get(1)?,
                    connection: r.get(2)?,
                },
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts records left `refreshing` by a crash back to `connected`, due now.
    fn recover(&self, now: i64) -> Result<usize, VaultError> {
        Ok(self.conn().execute(
            "UPDATE credentials SET status = 'connected', refresh_due_at = ?
             WHERE status = 'refreshing'",
            [now],
        )?)
    }

    /// Every record of one user in one tenant (metadata only).
    fn list(&self, tenant: &str, user: &str) -> Result<Vec<(String, Meta)>, VaultError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS}, connection FROM credentials WHERE tenant = ? AND user = ?"
        ))?;
        let rows = stmt.query_map(params![tenant, user], |r| {
            Ok((r.get::<_, String>(10)?, read_row(r)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (c, row) = row?;
            out.push((c, split(row).0));
        }
        Ok(out)
    }

    /// Deletes a record; returns whether there was one.
    fn delete(&self, owner: &Owner) -> Result<bool, VaultError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO retired_versions (tenant, user, connection, version)
             SELECT tenant, user, connection, version FROM credentials
             WHERE tenant = ?1 AND user = ?2 AND connection = ?3
             ON CONFLICT (tenant, user, connection) DO UPDATE SET version = excluded.version",
            params![owner.tenant, owner.user, owner.connection],
        )?;
        let n = tx.execute(
            "DELETE FROM credentials WHERE tenant = ? AND user = ? AND connection = ?",
            params![owner.tenant, owner.user, owner.connection],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Owners of records sealed with another key than `current_id`.
    fn sealed_with_other_keys(&self, current_id: &str) -> Result<Vec<Owner>, VaultError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT tenant, user, connection FROM credentials WHERE key_id != ?")?;
        let rows = stmt.query_map([current_id], |r| {
            Ok(Owner {
                tenant: r.get(0)?,
                user: r.get(1)?,
                connection: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner(user: &str) -> Owner {
        Owner {
            tenant: "acme".into(),
            user: user.into(),
            connection: "wh".into(),
        }
    }

    fn secret(t: &str) -> Secret {
        Secret {
            access_token: Some(t.into()),
            refresh_token: Some(format!("r-{t}")),
            password: None,
        }
    }

    fn write<'a>(s: &'a Secret) -> Write<'a> {
        Write {
            kind: "oauth",
            status: Status::Connected,
            scopes: "read",
            expires_at: Some(100),
            refresh_due_at: Some(80),
            failures: 0,
            secret: s,
        }
    }

    #[test]
    fn rows_swapped_between_users_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite");
        let v = VaultStore::open(&path).unwrap();
        let k = Keyring::new(&[9u8; 32], &[]).unwrap();
        let (a, b) = (secret("alice-token"), secret("bob-token"));
        v.put(&owner("alice"), &k, &write(&a), None, 0).unwrap();
        v.put(&owner("bob"), &k, &write(&b), None, 0).unwrap();
        // An attacker with write access to the file copies bob's sealed secret into alice's row.
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE credentials SET (nonce, ciphertext) =
               (SELECT nonce, ciphertext FROM credentials WHERE user = 'bob')
             WHERE user = 'alice'",
            [],
        )
        .unwrap();
        assert!(matches!(
            v.get(&owner("alice"), &k),
            Err(VaultError::Crypto(CryptoError::Tampered))
        ));
        assert_eq!(
            v.get(&owner("bob"), &k)
                .unwrap()
                .unwrap()
                .secret
                .access_token
                .as_deref(),
            Some("bob-token")
        );
        // Rolling a row back to an older version is caught too.
        let v2 = v
            .put(&owner("bob"), &k, &write(&secret("bob-2")), None, 1)
            .unwrap();
        c.execute(
            "UPDATE credentials SET version = ? WHERE user = 'bob'",
            [v2 - 1],
        )
        .unwrap();
        assert!(v.get(&owner("bob"), &k).is_err());
        // Nothing readable is stored in the clear.
        let raw = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("alice-token") && !text.contains("bob-token"));
    }

    #[test]
    fn versions_do_not_repeat_after_a_disconnect() {
        let dir = tempfile::tempdir().unwrap();
        let v = VaultStore::open(&dir.path().join("v.sqlite")).unwrap();
        let k = Keyring::new(&[9u8; 32], &[]).unwrap();
        let s = secret("t");
        let v1 = v.put(&owner("u"), &k, &write(&s), None, 0).unwrap();
        assert!(v.delete(&owner("u")).unwrap());
        let v2 = v.put(&owner("u"), &k, &write(&s), None, 0).unwrap();
        assert!(v2 > v1, "{v2} after {v1}");
    }

    #[test]
    fn compare_and_set_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let v = VaultStore::open(&dir.path().join("v.sqlite")).unwrap();
        let k = Keyring::new(&[9u8; 32], &[]).unwrap();
        let s = secret("t");
        let v1 = v.put(&owner("u"), &k, &write(&s), None, 0).unwrap();
        assert!(v.claim(&owner("u"), v1).unwrap());
        assert!(
            !v.claim(&owner("u"), v1).unwrap(),
            "a second claim must lose"
        );
        assert!(matches!(
            v.put(&owner("u"), &k, &write(&s), Some(v1 + 5), 0),
            Err(VaultError::Conflict)
        ));
        assert_eq!(
            v.put(&owner("u"), &k, &write(&s), Some(v1), 0).unwrap(),
            v1 + 1
        );
    }
}
