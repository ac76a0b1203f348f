//! The PostgreSQL-wire front door: BI tools and drivers connect to sluice as if it were
//! PostgreSQL (`[pgwire] listen`). Translation only, like the HTTP door: the `pgwire` crate
//! speaks the protocol (messages, TLS negotiation, the startup timeout); every statement that is
//! not answered locally ([`local`]) is one engine request ([`crate::engine`]) with the same
//! authentication, policy, audit and warehouse credential as HTTP.
//!
//! - [`startup`]: TLS required (off loopback), cleartext password = a data credential;
//! - [`query`]: the simple and extended query protocols, streaming Arrow batches as DataRows;
//! - [`session`]: per-connection state, cancel requests, the "client gone" watcher;
//! - [`sqlstate`]: errors as SQLSTATEs.

pub mod copy;
pub mod local;
pub mod query;
pub mod session;
pub mod sqlstate;
pub mod startup;
mod text;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::{AppState, StartupError};
use crate::http::conn::{ACCEPT_BACKOFF, Admission};

pub use session::FRONT_DOOR;

/// The bound listener of the wire door, with its TLS configuration.
pub struct WireListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl WireListener {
    /// Binds `[pgwire] listen` (when set) and loads the TLS certificate. Must run inside the
    /// runtime. `None` when the door is not configured.
    pub fn bind(config: &crate::config::PgWireConfig) -> Result<Option<Self>, StartupError> {
        let Some(listen) = &config.listen else {
            return Ok(None);
        };
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let std = std::net::TcpListener::bind(listen)
            .map_err(|e| StartupError(format!("pgwire: cannot listen on {listen}: {e}")))?;
        std.set_nonblocking(true)
            .map_err(|e| StartupError(format!("pgwire: {e}")))?;
        let listener =
            TcpListener::from_std(std).map_err(|e| StartupError(format!("pgwire: {e}")))?;
        Ok(Some(WireListener { listener, tls }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener
            .local_addr()
            .map_err(|e| StartupError(format!("pgwire: {e}")))
    }
}

/// A rustls server configuration from PEM files (ring provider, TLS 1.2 and 1.3, ALPN
/// `postgresql` for PostgreSQL 17's direct TLS).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, StartupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        StartupError(format!("pgwire: {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read the certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cannot read the certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", cert, &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read the key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError(format!("pgwire: TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartupError(format!("pgwire: the certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The handlers one connection uses (shared by all).
pub(crate) struct Handlers {
    startup: Arc<startup::Startup>,
    query: Arc<query::Queries>,
    cancel: Arc<session::Cancels>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.query)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.query)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Serves the wire door until `shutdown` turns `true`; then stops accepting, gives open
/// connections `grace` to end, and closes the rest (a query cut off this way is recorded as
/// `cancelled`).
pub async fn serve(
    state: Arc<AppState>,
    wire: WireListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let cancels = Arc::new(session::Cancels::default());
    let queries = Arc::new(query::Queries::new(Arc::clone(&state)));
    let server = &state.config.server;
    let admission = Admission::new(server.max_connections, server.max_connections_per_address);
    let mut connections = JoinSet::new();
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = wire.listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "pgwire: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(place) = admission.admit(addr.ip()) else {
            tracing::debug!("pgwire: connection refused: too many connections");
            session::refuse(stream);
            continue;
        };
        let (stream, slot, watcher) = match session::watched(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pgwire: cannot prepare an accepted connection");
                continue;
            }
        };
        // Per connection: the startup handler carries this connection's cancel slot.
        let handlers = Handlers {
            startup: Arc::new(startup::Startup::new(
                Arc::clone(&state),
                Arc::clone(&cancels),
                slot,
            )),
            query: Arc::clone(&queries),
            cancel: Arc::clone(&cancels),
        };
        let tls = wire.tls.clone();
        connections.spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(stream, tls, handlers).await {
                tracing::debug!(error = %e, "pgwire: connection ended with an error");
            }
            // The watcher holds a second descriptor of the socket: the client sees the close
            // only when both are gone.
            watcher.abort();
            drop(place);
        });
    }
    drop(wire);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "pgwire: grace period over: closing remaining connections"
        );
        connections.shutdown().await;
    }
}
