//! Connections kept open between queries, keyed by the identity they logged in as: a
//! connection opened with one user's credential is only ever reused for that same credential
//! (never shared across users), and one whose query was abandoned is closed, not reused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// Idle connections kept per identity: as many as may be in flight, so a steady load at the
/// in-flight limit never closes and reopens sessions.
const MAX_IDLE_PER_KEY: usize = MAX_IN_FLIGHT;
/// Idle connections kept in all; beyond this the one idle longest (of any identity) is closed.
/// In use plus idle, a connector holds at most `MAX_IN_FLIGHT + MAX_IDLE` sessions.
const MAX_IDLE: usize = 2 * MAX_IN_FLIGHT;
/// Queries one connector runs on PostgreSQL at once; more wait for a turn (in the order they
/// came), so a burst of clients never exhausts the server's `max_connections`. Open
/// connections are at most this many in use plus the idle ones.
pub const MAX_IN_FLIGHT: usize = 32;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Identities with idle connections; beyond this the whole idle set is dropped.
const MAX_KEYS: usize = 1024;

/// Who a connection logged in as: the login user and a digest of its password, so a changed
/// password never reuses a session opened with the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    user: String,
    secret_digest: [u8; 32],
}

impl PoolKey {
    pub(crate) fn new(user: &str, password: Option<&[u8]>) -> PoolKey {
        let mut secret_digest = [0u8; 32];
        if let Some(p) = password {
            secret_digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, p).as_ref());
        }
        PoolKey {
            user: user.to_string(),
            secret_digest,
        }
    }
}

/// Statements one connection keeps prepared; the least recently used is closed beyond this.
pub(crate) const MAX_STATEMENTS_PER_CONN: usize = 256;
/// Longest SQL text a connection keeps prepared. The cache is bounded in entries, so without
/// this a caller sending many distinct large texts (up to the 1 MiB input limit, rewritten
/// larger) would pin 256 of them per session here and their plans in every backend; dashboards'
/// repeated queries are far shorter. A longer text is prepared for its one run and closed.
pub(crate) const MAX_CACHED_STATEMENT_BYTES: usize = 16 * 1024;

/// What a prepared statement is cached under on its connection: the text, and the role the
/// query ran as (passthrough switches the service login's role per query), so a statement is
/// only ever reused by the identity that prepared it, on a connection of that identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StatementKey {
    pub(crate) role: Option<String>,
    pub(crate) sql: String,
}

/// An open connection: the client, the task driving its socket, and its prepared statements
/// (dropping a `Statement` closes it on the server).
pub(crate) struct Conn {
    /// Shared with the session reset that may outlive the query's call (it is awaited after
    /// the answer has been handed over).
    pub(crate) client: std::sync::Arc<Client>,
    pub(crate) statements: hashlink::LruCache<StatementKey, tokio_postgres::Statement>,
    task: JoinHandle<()>,
    since: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Idle connections by identity, and the turns of the queries in flight.
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Conn>>>,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl Pool {
    /// A turn to run a query: held until its connection is returned or closed.
    pub(crate) async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        std::sync::Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .ok()
    }

    /// An idle connection for `key`, or a new one from `config`.
    pub(crate) async fn checkout(
        &self,
        key: &PoolKey,
        config: &tokio_postgres::Config,
    ) -> Result<Conn, tokio_postgres::Error> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(key).and_then(Vec::pop)
            };
            match candidate {
                Some(c) if !c.client.is_closed() && c.since.elapsed() < IDLE_TIMEOUT => {
                    return Ok(c);
                }
                Some(_) => continue,
                None => break,
            }
        }
        let (client, connection) = config.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(Conn {
            client: std::sync::Arc::new(client),
            statements: hashlink::LruCache::new(MAX_STATEMENTS_PER_CONN),
            task,
            since: Instant::now(),
        })
    }

    /// Returns a connection whose query ran to its end.
    pub(crate) fn checkin(&self, key: PoolKey, mut conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        conn.since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_KEYS && !idle.contains_key(&key) {
            idle.clear();
        }
        let list = idle.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            return;
        }
        list.push(conn);
        if idle.values().map(Vec::len).sum::<usize>() > MAX_IDLE {
            // Close the connection idle longest (each list is oldest first).
            let oldest = idle
                .iter()
                .filter_map(|(k, v)| v.first().map(|c| (c.since, k.clone())))
                .min_by_key(|(since, _)| *since)
                .map(|(_, k)| k);
            if let Some(k) = oldest
                && let Some(v) = idle.get_mut(&k)
            {
                v.remove(0);
                if v.is_empty() {
                    idle.remove(&k);
                }
            }
        }
    }

    /// Idle connections kept for `key` (tests).
    pub fn idle_for(&self, user: &str) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.iter()
            .filter(|(k, _)| k.user == user)
            .map(|(_, v)| v.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_max_in_flight_turns_are_handed_out() {
        let pool = Pool::default();
        let mut turns = vec![];
        for _ in 0..MAX_IN_FLIGHT {
            turns.push(pool.turn().await);
        }
        assert!(turns.iter().all(Option::is_some));
        // The next query waits for a turn...
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.turn()).await;
        assert!(waiting.is_err(), "a turn beyond the limit was handed out");
        // ...until one is given back.
        turns.pop();
        let next = tokio::time::timeout(Duration::from_secs(1), pool.turn()).await;
        assert!(next.is_ok_and(|t| t.is_some()));
    }
}
