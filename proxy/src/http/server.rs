//! The HTTP server: routes, request ids, timeouts, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::app::{App, AppState, StartupError};
use crate::context::REQUEST_ID;
use crate::error::{Error, Kind};
use crate::http::conn::{ACCEPT_BACKOFF, Admission, ClientConn};
use crate::http::query::{handle_explain, handle_query};

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest client-supplied request id kept (longer ones are replaced).
const MAX_REQUEST_ID_LEN: usize = 128;
/// How long shutdown waits for the audit writer to drain.
const AUDIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes, with their middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let request_timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    // The query endpoint enforces its own deadlines (so it can audit a timeout); every other
    // route gets the generic one.
    let other = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/me", get(crate::http::auth::me))
        .route("/v1/auth/token", post(crate::http::auth::service_token))
        .route("/v1/tickets", post(crate::http::auth::mint_ticket))
        .route("/v1/sessions", post(crate::http::auth::create_session))
        .route(
            "/v1/sessions/current",
            delete(crate::http::auth::delete_current),
        )
        .route(
            "/v1/admin/users/{user}/sessions",
            delete(crate::http::auth::revoke_user),
        )
        .route("/v1/auth/oidc/login", get(crate::http::oidc::login))
        .route("/v1/auth/oidc/callback", get(crate::http::oidc::callback))
        .route("/v1/connections", get(crate::http::vault::list))
        .route(
            "/v1/connections/oauth/callback",
            get(crate::http::vault::callback),
        )
        .route(
            "/v1/connections/{id}/authorize",
            get(crate::http::vault::authorize),
        )
        .route(
            "/v1/connections/{id}/credential",
            delete(crate::http::vault::disconnect).put(crate::http::vault::put_password),
        )
        .route_layer(middleware::from_fn_with_state(request_timeout, timeout));
    Router::new()
        .route("/v1/query", post(handle_query))
        .route("/v1/policy/explain", post(handle_explain))
        .route("/v1/audit/records", get(crate::http::audit::records))
        .route("/v1/audit/access", get(crate::http::audit::access))
        .route("/v1/audit/anomalies", get(crate::http::audit::anomalies))
        .route("/v1/audit/verify", get(crate::http::audit::verify))
        .route(
            "/v1/audit/export/subject",
            get(crate::http::audit::export_subject),
        )
        .route("/v1/audit/export/phi", get(crate::http::audit::export_phi))
        .merge(other)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::http::embed::origins,
        ))
        .with_state(Arc::clone(&state))
        .layer(middleware::map_response(no_store))
        .layer(middleware::from_fn_with_state(
            Arc::new(state.config.server.trusted_networks().unwrap_or_default()),
            client_address,
        ))
        .layer(middleware::from_fn(request_context))
}

/// Sets the request's [`ClientAddr`](crate::http::conn::ClientAddr): the TCP peer, or what the
/// trusted proxies in front of sluice say (`server.trusted_proxies`).
async fn client_address(
    State(trusted): State<Arc<Vec<ipnet::IpNet>>>,
    mut req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::http::conn::ClientConn>>()
        .map(|ci| ci.0.addr.ip());
    if let Some(peer) = peer {
        let addr = crate::http::conn::client_addr(peer, req.headers(), &trusted);
        req.extensions_mut()
            .insert(crate::http::conn::ClientAddr(addr));
    }
    next.run(req).await
}

/// Every answer is for one caller: never kept by a shared cache (answers, audit records,
/// connections, explain documents, errors alike).
async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let why = if state.shutting_down.load(Ordering::Relaxed) {
            "shutting down"
        } else {
            "the audit log cannot be written"
        };
        Error::new(Kind::Unavailable, "not_ready", why).into_response()
    }
}

async fn not_found() -> Response {
    Error::new(Kind::Request, "not_found", "no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    Error::new(
        Kind::Request,
        "method_not_allowed",
        "method not allowed here",
    )
    .into_response()
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_REQUEST_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    ok.then(|| s.to_string())
}

/// Assigns the request id (the client's if well-formed, else a new one), puts it in the logs,
/// errors and response, and logs one line per request.
async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let mut resp = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "response"
        )
    });
    resp
}

/// Answers `504 timeout` when no response is ready in time.
async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Error::new(
            Kind::Timeout,
            "timeout",
            "the request took longer than allowed",
        )
        .into_response(),
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish for
/// the configured grace period, and flushes the audit log.
pub async fn serve(
    app: App,
    listener: TcpListener,
    wire: Option<crate::wire::WireListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let App {
        state,
        audit_writer,
    } = app;
    let grace = Duration::from_millis(state.config.server.shutdown_grace_ms);
    // The PostgreSQL-wire door, when configured: the same state, stopped with this server.
    let (wire_stop, wire_stopped) = tokio::sync::watch::channel(false);
    let wire = wire.map(|w| {
        tokio::spawn(crate::wire::serve(
            Arc::clone(&state),
            w,
            wire_stopped,
            grace,
        ))
    });
    let purge = tokio::spawn(purge_auth_store(Arc::clone(&state)));
    let refresher = state
        .vault
        .as_ref()
        .map(|v| tokio::spawn(Arc::clone(v).refresher(state.audit.clone())));
    let server = &state.config.server;
    let admission = Admission::new(server.max_connections, server.max_connections_per_address);
    warn_if_few_descriptors(server.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper starts the header timer whenever the connection waits for a request: silent,
    // idle keep-alive and trickling (slowloris) connections are all closed after it.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.header_read_timeout_ms))
        .keep_alive(true);
    let app = router(Arc::clone(&state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(place) = admission.admit(addr.ip()) else {
            tracing::debug!("connection refused: too many connections");
            crate::http::conn::refuse(stream);
            continue;
        };
        let (io, gone) = match crate::http::conn::client_stream(stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare an accepted connection");
                continue;
            }
        };
        let info = ClientConn { addr, gone };
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(info.clone()));
                req
            },
        );
        let conn = http.serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    state.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = wire_stop.send(true);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over: closing remaining connections");
        }
    }
    if let Some(w) = wire {
        let _ = w.await;
    }
    purge.abort();
    if let Some(r) = refresher {
        r.abort();
    }
    drop(state);
    let joined = tokio::task::spawn_blocking(move || audit_writer.join());
    if tokio::time::timeout(AUDIT_DRAIN_TIMEOUT, joined)
        .await
        .is_err()
    {
        tracing::error!("audit writer did not drain in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Logs a warning when the process may open fewer files than the connection cap needs (each
/// connection holds one descriptor; the audit log, stores and warehouse connections need more).
fn warn_if_few_descriptors(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < max_connections.saturating_add(FD_RESERVE)
    {
        tracing::warn!(
            open_files_limit = soft,
            max_connections,
            "the open-files limit is below server.max_connections plus {FD_RESERVE}: raise it \
             (LimitNOFILE in the systemd unit) or lower max_connections"
        );
    }
}

/// Descriptors kept aside beyond client connections (stores, audit, warehouse connections).
const FD_RESERVE: usize = 256;

/// How often expired tickets, sessions and seen `jti`s are deleted.
const AUTH_PURGE_EVERY: Duration = Duration::from_secs(600);

async fn purge_auth_store(state: Arc<AppState>) {
    let mut every = tokio::time::interval(AUTH_PURGE_EVERY);
    loop {
        every.tick().await;
        let store = Arc::clone(&state.auth.store);
        let now = crate::auth::principal::unix_now();
        match tokio::task::spawn_blocking(move || store.purge(now)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "auth store purge failed"),
            Err(e) => tracing::warn!(error = %e, "auth store purge task failed"),
        }
    }
}

/// A daemon running in this process (tests and embedding): its address and a shutdown switch.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The PostgreSQL-wire door's address, when `[pgwire] listen` is set.
    pub wire_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), StartupError>>,
}

impl RunningServer {
    /// Binds `listen` (use port 0 for an ephemeral port) and serves `app` in the background.
    pub async fn start(app: App, listen: &str) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StartupError(format!("cannot listen on {listen}: {e}")))?;
        Self::start_on(app, listener)
    }

    /// Serves `app` on a listener bound earlier (when the address must be known before the
    /// configuration is complete, as for an OAuth redirect URL).
    pub fn start_on(app: App, listener: TcpListener) -> Result<Self, StartupError> {
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError(format!("cannot read the bound address: {e}")))?;
        let wire = crate::wire::WireListener::bind(&app.state.config.pgwire)?;
        let wire_addr = wire.as_ref().map(|w| w.local_addr()).transpose()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(serve(app, listener, wire, async move {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
            wire_addr,
            shutdown: Some(tx),
            handle,
        })
    }

    /// Base URL, `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Triggers graceful shutdown and waits for it.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle
            .await
            .map_err(|e| StartupError(format!("server task: {e}")))?
    }
}
