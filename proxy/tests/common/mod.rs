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

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
