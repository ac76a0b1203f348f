//! Waiting while the caller is still there.

use tokio::sync::watch;

use crate::error::Error;

/// Runs `f` unless the caller leaves first (`cancel` turns `true`); then returns
/// `client_disconnected` and drops `f`, which cancels what it was waiting for.
pub(crate) async fn unless_cancelled<T>(
    cancel: Option<&mut watch::Receiver<bool>>,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(cancel) = cancel else { return f.await };
    tokio::select! {
        r = f => r,
        _ = cancel.wait_for(|gone| *gone) => Err(Error::client_gone()),
    }
}
