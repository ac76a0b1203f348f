//! How a wire connection's statements are cancelled — by a CancelRequest on another connection (PostgreSQL's
//! BackendKeyData protocol) or by the client going away.
//!
//! "Gone" works as in the HTTP door: a watcher peeks (never reads) a second descriptor of the
//! same socket for end-of-file. pgwire reads the socket only between statements, so without it
//! a client that disconnects while its query waits for the warehouse would not be noticed
//! until the first row is written.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How the audit log names this front door.
pub const FRONT_DOOR: &str = "pgwire";

/// A connection's cancel signal: one watch channel for the connection's life (statements run
/// one at a time), reset to `false` when a statement starts, set by a CancelRequest (that
/// statement only) or by the client going away (for good).
pub struct CancelSlot {
    tx: watch::Sender<bool>,
    gone: AtomicBool,
}

impl CancelSlot {
    fn new() -> Arc<CancelSlot> {
        Arc::new(CancelSlot {
            tx: watch::channel(false).0,
            gone: AtomicBool::new(false),
        })
    }

    /// A statement starts: its cancel receiver (already `true` if the client has gone).
    pub fn begin(&self) -> watch::Receiver<bool> {
        if !self.gone.load(Ordering::Acquire) {
            self.tx.send_replace(false);
        }
        self.tx.subscribe()
    }

    /// A receiver of the current statement's signal (without resetting it).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Cancels the running statement (a no-op between statements: the next one resets it).
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the client has closed the connection.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    fn gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }
}

/// A connection's cancel key: its process id and secret key (as bytes).
type CancelKey = (i32, Vec<u8>);

/// Open connections by (process id, secret key), for CancelRequests.
#[derive(Default)]
pub struct Cancels {
    map: Mutex<HashMap<CancelKey, Weak<CancelSlot>>>,
}

impl Cancels {
    /// Registers a connection's key; unregistered when the returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: &pgwire::messages::startup::SecretKey,
        slot: &Arc<CancelSlot>,
    ) -> Registration {
        let key = (pid, secret.to_bytes().to_vec());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key.clone(), Arc::downgrade(slot));
        Registration {
            cancels: Arc::clone(self),
            key,
        }
    }
}

/// A registered cancel key; removed on drop (the connection ended).
pub struct Registration {
    cancels: Arc<Cancels>,
    key: CancelKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.cancels.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let slot = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&key).and_then(Weak::upgrade)
        };
        match slot {
            Some(slot) => {
                tracing::info!("pgwire: cancel request");
                slot.cancel();
            }
            // A wrong key says nothing (as PostgreSQL): no oracle for guessing keys.
            None => tracing::debug!("pgwire: cancel request for no connection"),
        }
    }
}

/// Prepares an accepted connection: `TCP_NODELAY`, its cancel slot, and its "gone" watcher
/// (abort it when the connection ends: it holds a second descriptor of the socket).
pub fn watched(stream: TcpStream) -> io::Result<(TcpStream, Arc<CancelSlot>, AbortHandle)> {
    stream.set_nodelay(true)?;
    let std = stream.into_std()?;
    let probe = TcpStream::from_std(std.try_clone()?)?;
    let stream = TcpStream::from_std(std)?;
    let slot = CancelSlot::new();
    let weak = Arc::downgrade(&slot);
    let task = tokio::spawn(async move {
        crate::http::conn::until_closed(&probe).await;
        if let Some(slot) = weak.upgrade() {
            slot.gone();
        }
    });
    Ok((stream, slot, task.abort_handle()))
}

/// Tells a connection over a cap why (an ErrorResponse, as PostgreSQL's "too many clients"),
/// without waiting on it, and closes it.
pub fn refuse(stream: TcpStream) {
    // 'E', length, then fields: severity, SQLSTATE 53300, message; terminator.
    let mut body = Vec::new();
    for (k, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        body.push(k);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&body);
    let _ = stream.try_write(&msg);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_statement_start_clears_an_earlier_cancel_but_not_gone() {
        let slot = CancelSlot::new();
        slot.cancel();
        let rx = slot.begin();
        assert!(!*rx.borrow(), "a cancel between statements is a no-op");
        slot.cancel();
        assert!(*rx.borrow());
        slot.gone();
        let rx = slot.begin();
        assert!(*rx.borrow(), "a gone client stays gone");
    }

    #[test]
    fn cancel_keys_are_removed_with_the_connection() {
        let cancels = Arc::new(Cancels::default());
        let slot = CancelSlot::new();
        let key = pgwire::messages::startup::SecretKey::I32(7);
        let reg = cancels.register(42, &key, &slot);
        assert_eq!(cancels.map.lock().unwrap().len(), 1);
        drop(reg);
        assert!(cancels.map.lock().unwrap().is_empty());
    }
}
