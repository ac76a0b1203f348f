//! Connection hygiene against the real daemon: idle, silent and trickling (slowloris) sockets
//! cannot take it offline. Over the per-address cap a connection is refused with a clean `503`;
//! every idle socket is closed after the header timeout; a legitimate client (from another
//! address) is served throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "connections-secret-0123456789abcdef0123";
const PER_ADDRESS: usize = 20;

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("sales.csv"), "tenant_id,sale_id\nt1,1\nt2,2\n").unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
header_read_timeout_ms = 1000
max_connections = 100
max_connections_per_address = {PER_ADDRESS}

[auth.jwt]
algorithm = "HS256"
secret_env = "CONN_SECRET"
issuer = "conn"
audience = "sluice"

[[connections]]
id = "files"
kind = "embedded"

[[connections.tables]]
name = "public.sales"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "sale_id"]
path = "sales.csv"
format = "csv"
"#
        ),
    )
    .unwrap();
    path
}

fn token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "tenant": "t1", "groups": ["analyst"], "iss": "conn", "aud": "sluice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects to `addr` from the local address `from` (loopback has all of 127.0.0.0/8).
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// Whether the server closed `s` (end-of-file or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408/400 answer may come first; the close follows.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn idle_and_slow_sockets_cannot_take_the_daemon_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("CONN_SECRET", SECRET)],
    );
    let addr: std::net::SocketAddr = daemon.url.trim_start_matches("http://").parse().unwrap();

    // The attacker, from 127.0.0.1: silent sockets, and sockets that sent half a header.
    let mut idle = Vec::new();
    for i in 0..PER_ADDRESS {
        let mut s = connect_from("127.0.0.1", addr).await;
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    // Let the server accept them all before the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more from the same address: refused at once with a clean 503.
    let mut extra = connect_from("127.0.0.1", addr).await;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");

    // A legitimate client from another address is served meanwhile.
    let client = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/v1/query", daemon.url))
        .bearer_auth(token())
        .json(&json!({"sql": "SELECT sale_id FROM sales"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    // Every idle or trickling socket is closed after the header timeout (1 s).
    let started = Instant::now();
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a socket stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Their places are free again: the attacker's address may connect, and is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = connect_from("127.0.0.1", addr).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), again.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A keep-alive connection that stays idle after an answer is closed too.
    let mut keep = connect_from("127.0.0.3", addr).await;
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut keep, Duration::from_secs(5)).await);
    drop(daemon);
}
