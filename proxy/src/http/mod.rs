//! The HTTP front door: routes, request ids, timeouts, graceful shutdown
//! ([`server`]), and handlers that translate requests into calls of the engine, the
//! authenticator, the vault and the audit log, and their answers and errors back
//! ([`problem`]: the only place that knows HTTP status codes).

pub mod audit;
pub mod auth;
pub mod body;
pub mod conn;
pub mod embed;
pub mod encode;
pub mod oidc;
pub mod problem;
pub mod query;
pub mod server;
pub mod vault;

pub use server::router;
