//! Client connections: admission (a global and a per-address cap), and a "client gone" signal.
//!
//! The HTTP server only learns that a client closed its connection when it next writes to it.
//! A query still waiting for its first batch writes nothing, so without help it would keep the
//! warehouse busy until its deadline. Each accepted connection therefore gets a small watcher
//! that peeks (never reads) the same socket for end-of-file, and publishes "gone"; the query
//! path stops waiting, and dropping the query cancels it on the warehouse. The server and the
//! watcher share one socket (one file descriptor per connection): the server reads and writes
//! it through readiness, the watcher only peeks.
//!
//! Admission: at most `max_connections` connections are open at once, and at most
//! `max_connections_per_address` from one IP address; a connection over either cap is answered
//! `503 too_many_connections` (one non-blocking write) and closed at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::AbortHandle;

/// Pause before retrying after a failed `accept` (for example, out of file descriptors).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Pause while bytes the server has not read yet are waiting (the next keep-alive request).
const PEEK_BACKOFF: Duration = Duration::from_millis(50);

/// What a connection over a cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/problem+json\r\n\
Connection: close\r\n\
Retry-After: 1\r\n\
Content-Length: 155\r\n\r\n\
{\"type\":\"urn:sluice:problem:too_many_connections\",\"title\":\"Service Unavailable\",\"status\":503,\"code\":\"too_many_connections\",\"detail\":\"too many connections\"}";

/// The connection caps, and the connections open now.
pub struct Admission {
    global: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
}

/// An admitted connection's place: released when dropped.
pub struct Admitted {
    _global: OwnedSemaphorePermit,
    ip: IpAddr,
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Caps of `max` connections, `max_per_address` from one IP address.
    pub fn new(max: usize, max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            global: Arc::new(Semaphore::new(max)),
            per_address: Mutex::new(HashMap::new()),
            max_per_address,
        })
    }

    /// A place for a connection from `ip`, if both caps allow one.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let global = Arc::clone(&self.global).try_acquire_owned().ok()?;
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(Admitted {
            _global: global,
            ip,
            admission: Arc::clone(self),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        let map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        map.values().sum()
    }
}

/// Tells a connection over a cap why, without waiting on it, and closes it.
pub fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
    drop(stream);
}

/// An accepted connection, read and written by the server, peeked by its watcher.
pub struct ClientStream {
    socket: Arc<TcpStream>,
    watcher: AbortHandle,
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The client's address as sluice believes it (see [`client_addr`]), set on every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The client address of a request from `peer`: the peer itself, unless it is a trusted proxy;
/// then the rightmost `X-Forwarded-For` entry that is not a trusted proxy (entries to its left
/// were written by the client and prove nothing). An entry that does not parse ends the walk at
/// the nearest trusted hop.
pub fn client_addr(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |a: &std::net::IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut hop = peer;
    for entry in entries.iter().rev() {
        match entry.trim().parse::<std::net::IpAddr>() {
            Ok(a) if is_trusted(&a) => hop = a,
            Ok(a) => return a,
            Err(_) => break,
        }
    }
    hop
}

/// What a handler knows of its connection: the client's address and whether it has gone.
#[derive(Clone, Debug)]
pub struct ClientConn {
    /// The client's address.
    pub addr: SocketAddr,
    /// Becomes `true` when the client closes or resets the connection.
    pub gone: watch::Receiver<bool>,
}

/// Prepares an accepted connection: `TCP_NODELAY`, and its watcher.
pub fn client_stream(stream: TcpStream) -> io::Result<(ClientStream, watch::Receiver<bool>)> {
    // Answers are written as several small frames (head, batches, end): without TCP_NODELAY,
    // Nagle's algorithm holds each behind the client's delayed ACK (~40 ms per request).
    stream.set_nodelay(true)?;
    let socket = Arc::new(stream);
    let probe = Arc::clone(&socket);
    let (tx, gone) = watch::channel(false);
    let task = tokio::spawn(async move {
        until_closed(&probe).await;
        let _ = tx.send(true);
    });
    Ok((
        ClientStream {
            socket,
            watcher: task.abort_handle(),
        },
        gone,
    ))
}

/// Returns when the peer has closed or reset `socket`, peeking (never reading) for end-of-file;
/// while unread bytes wait (the next request), it checks again every [`PEEK_BACKOFF`]. Shared by
/// both front doors' "client gone" watchers.
pub async fn until_closed(socket: &TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match socket.peek(&mut byte).await {
            Ok(0) => return,
            Ok(_) => tokio::time::sleep(PEEK_BACKOFF).await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            match self.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Half-close: the peer sees end-of-file; the watcher still owns a reference.
        Poll::Ready(
            socket2::SockRef::from(self.socket.as_ref()).shutdown(std::net::Shutdown::Write),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn accepted_connections_send_small_frames_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap());
        let (watched, _) = client_stream(stream).unwrap();
        assert!(watched.socket.nodelay().unwrap(), "TCP_NODELAY is set");
    }

    #[tokio::test]
    async fn one_socket_serves_reads_writes_and_the_watcher() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (mut server, mut gone) = client_stream(stream).unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert!(!*gone.borrow());
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g))
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_caps_hold_globally_and_per_address() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let adm = Admission::new(3, 2);
        let a1 = adm.admit(a).unwrap();
        let _a2 = adm.admit(a).unwrap();
        assert!(adm.admit(a).is_none(), "per address");
        let _b1 = adm.admit(b).unwrap();
        assert!(adm.admit(b).is_none(), "global");
        drop(a1);
        assert_eq!(adm.open(), 2);
        assert!(adm.admit(b).is_some());
    }

    #[test]
    fn the_refusal_is_a_well_formed_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
    }
}

#[cfg(test)]
mod client_addr_tests {
    #![allow(clippy::unwrap_used)]
    use super::client_addr;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_only_rightmost() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = |v: &[&str]| {
            let mut m = axum::http::HeaderMap::new();
            for x in v {
                m.append("x-forwarded-for", x.parse().unwrap());
            }
            m
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // From a trusted proxy: the rightmost untrusted entry (the client's own are ignored).
        assert_eq!(
            client_addr(ip("10.1.1.1"), &h(&["1.2.3.4, 203.0.113.5"]), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &h(&["203.0.113.5, 10.2.2.2"]), &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &h(&["9.9.9.9", "203.0.113.5"]), &trusted),
            ip("203.0.113.5")
        );
        // Garbage stops the walk at the nearest trusted hop; no header: the proxy.
        assert_eq!(
            client_addr(
                ip("10.1.1.1"),
                &h(&["203.0.113.5, junk, 10.2.2.2"]),
                &trusted
            ),
            ip("10.2.2.2")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &h(&[]), &trusted),
            ip("10.1.1.1")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_addr(ip("198.51.100.1"), &h(&["203.0.113.5"]), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_addr(ip("10.1.1.1"), &h(&["203.0.113.5"]), &[]),
            ip("10.1.1.1")
        );
    }
}
