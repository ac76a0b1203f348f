//! Connections that know when their client has gone.
//!
//! The HTTP server only learns that a client closed its connection when it next writes to it.
//! A query still waiting for its first batch writes nothing, so without help it would keep the
//! warehouse busy until its deadline. Each accepted connection therefore gets a small watcher on
//! a duplicate of the socket that peeks (never reads) for end-of-file, and publishes "gone";
//! the query path stops waiting, and dropping the query cancels it on the warehouse.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Pause before retrying after a failed `accept` (for example, out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Pause while bytes the server has not read yet are waiting (the next keep-alive request).
const PEEK_BACKOFF: Duration = Duration::from_millis(50);

/// A TCP listener whose connections carry a "client gone" signal.
pub struct WatchedListener {
    inner: TcpListener,
}

impl WatchedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener) -> Self {
        WatchedListener { inner }
    }
}

/// An accepted connection and its watcher.
pub struct WatchedStream {
    inner: TcpStream,
    gone: watch::Receiver<bool>,
    watcher: AbortHandle,
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// What a handler knows of its connection: the client's address and whether it has gone.
#[derive(Clone, Debug)]
pub struct ClientConn {
    /// The client's address.
    pub addr: SocketAddr,
    /// Becomes `true` when the client closes or resets the connection.
    pub gone: watch::Receiver<bool>,
}

impl Connected<IncomingStream<'_, WatchedListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, WatchedListener>) -> Self {
        ClientConn {
            addr: *stream.remote_addr(),
            gone: stream.io().gone.clone(),
        }
    }
}

fn watched(stream: TcpStream) -> io::Result<WatchedStream> {
    // Answers are written as several small frames (head, batches, end): without TCP_NODELAY,
    // Nagle's algorithm holds each behind the client's delayed ACK (~40 ms per request).
    stream.set_nodelay(true)?;
    let std = stream.into_std()?;
    let dup = std.try_clone()?;
    let inner = TcpStream::from_std(std)?;
    let probe = TcpStream::from_std(dup)?;
    let (tx, gone) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        loop {
            match probe.peek(&mut byte).await {
                Ok(0) => break,
                Ok(_) => tokio::time::sleep(PEEK_BACKOFF).await,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(true);
    });
    Ok(WatchedStream {
        inner,
        gone,
        watcher: task.abort_handle(),
    })
}

impl Listener for WatchedListener {
    type Io = WatchedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match watched(stream) {
                    Ok(s) => return (s, addr),
                    Err(e) => tracing::warn!(error = %e, "cannot watch an accepted connection"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Runs `f` unless the client leaves first; then returns `Err(on_gone())` and drops `f`.
pub async fn unless_gone<T, E>(
    gone: Option<&mut watch::Receiver<bool>>,
    on_gone: impl FnOnce() -> E,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(gone) = gone else { return f.await };
    tokio::select! {
        r = f => r,
        _ = gone.wait_for(|g| *g) => Err(on_gone()),
    }
}

#[cfg(test)]
mod nodelay_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_frames_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap());
        let watched = watched(stream).unwrap();
        assert!(watched.inner.nodelay().unwrap(), "TCP_NODELAY is set");
    }
}
