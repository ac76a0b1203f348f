//! Shared helpers for tests that need the real binary and a real PostgreSQL.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// The local PostgreSQL (trust auth). Tests that need it fail when it is not there.
pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// The least-privilege login of the test world's connections: LOGIN, NOSUPERUSER, NOBYPASSRLS,
/// no password (trust auth). Cluster-wide: `.ci/run` creates it, and [`grant_reader`] too if it
/// is missing; each test database grants it SELECT ([`grant_reader`]).
pub const READER: &str = "sluice_reader";

/// The URL of `db` logged in as [`READER`] (the service login sluice's connections should use).
pub fn reader_url(db: &str) -> String {
    format!("postgres://{READER}@127.0.0.1:5432/{db}")
}

/// Lets [`READER`] read every table of schema `public` of `db` (USAGE on the schema, SELECT on
/// its tables as they are now), creating the role first if it is missing. Nothing else: no
/// write, no other schema.
pub async fn grant_reader(db: &str) {
    grant_reader_on(db, &["public"]).await;
}

/// [`grant_reader`] for the given schemas.
pub async fn grant_reader_on(db: &str, schemas: &[&str]) {
    let c = connect(&format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={db}"
    ))
    .await;
    // Tests run in parallel: a concurrent CREATE ROLE of the same name is not an error here.
    c.batch_execute(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}') THEN
             CREATE ROLE {READER} LOGIN NOSUPERUSER NOBYPASSRLS;
           END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;"
    ))
    .await
    .unwrap();
    for schema in schemas {
        c.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA \"{schema}\" TO {READER};
             GRANT SELECT ON ALL TABLES IN SCHEMA \"{schema}\" TO {READER};"
        ))
        .await
        .unwrap();
    }
}

/// A fresh database, dropped when this guard is.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Creates a database named `sluice_test_<tag>_<pid>_<n>` and runs `sql` in it.
    pub async fn create(tag: &str, sql: &str) -> TestDb {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sluice_test_{tag}_{}_{n}", std::process::id());
        let admin = connect(PG_ADMIN).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let db = TestDb { name };
        if !sql.is_empty() {
            connect(&db.conn_str())
                .await
                .batch_execute(sql)
                .await
                .unwrap();
        }
        db
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }

    /// Its URL logged in as the `postgres` superuser (sluice refuses that as a service login
    /// unless the connection says `allow_privileged_login = true`: use [`TestDb::reader_url`]).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// Its URL logged in as [`READER`]; see [`grant_reader`].
    pub fn reader_url(&self) -> String {
        reader_url(&self.name)
    }

    /// [`grant_reader`] on this database.
    pub async fn grant_reader(&self) {
        grant_reader(&self.name).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at 127.0.0.1:5432 is required: {e}"));
    tokio::spawn(connection);
    client
}

/// The daemon as a child process; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub url: String,
}

/// Spawns `sluice serve <args> --listen 127.0.0.1:0 --data-dir <data_dir>` with `env`, and the
/// lines it prints.
pub fn spawn(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> (Child, Receiver<String>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    (child, rx)
}

/// Runs `sluice serve --config <config>` (ephemeral port, `data_dir`, `env`) expecting it to
/// refuse to start: its exit status and what it printed. Fails the test if it is still running
/// after 60 s.
pub fn serve_expecting_exit(
    config: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started (or hung) instead of refusing to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Waits (with a deadline) for a printed line starting with `prefix`; returns the rest of it.
pub fn line_after(rx: &Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
}

impl Daemon {
    /// Starts `sluice serve --config <config>` on an ephemeral port with `env`.
    pub fn start(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let config = config.to_str().unwrap();
        let (child, rx) = spawn(&["--config", config], data_dir, env);
        let url = line_after(&rx, "sluice listening on ");
        Daemon { child, url }
    }

    /// As [`Daemon::start`], for a configuration with `[pgwire] listen`: the daemon and the
    /// wire door's `host:port`.
    pub fn start_with_wire(
        config: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> (Daemon, String) {
        let config = config.to_str().unwrap();
        let (child, rx) = spawn(&["--config", config], data_dir, env);
        let url = line_after(&rx, "sluice listening on ");
        let wire = line_after(&rx, "sluice PostgreSQL wire protocol on ");
        (Daemon { child, url }, wire)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HS256 JWT of `claims` signed with `secret`, `exp` ten minutes from now.
pub fn sign_hs256(secret: &str, mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    claims["exp"] = exp.into();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Closed-loop load on `{url}/v1/query` from `workers` tasks until [`Load::stop`]: request `i`
/// of worker `w` is `body(w, i)` = (request id, JSON body). Records `(request id, status)` of
/// every answer received *whole* (only those reached the client), for tests that kill the
/// daemon mid-load.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        url: &str,
        token: &str,
        workers: usize,
        body: fn(usize, u64) -> (String, serde_json::Value),
    ) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|w| {
                let (url, token) = (url.to_string(), token.to_string());
                let (stop, answered) = (stop.clone(), answered.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        let (rid, json) = body(w, i);
                        let Ok(resp) = client
                            .post(format!("{url}/v1/query"))
                            .bearer_auth(&token)
                            .header("x-request-id", &rid)
                            .json(&json)
                            .send()
                            .await
                        else {
                            break;
                        };
                        let status = resp.status().as_u16();
                        if resp.bytes().await.is_ok() {
                            answered.lock().unwrap().push((rid, status));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            workers,
        }
    }

    /// Stops the workers and returns what was answered whole.
    pub async fn stop(self) -> Vec<(String, u16)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        self.answered.lock().unwrap().clone()
    }
}
