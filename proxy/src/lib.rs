//! sluice: a zero-ingestion federated query proxy.
//!
//! The daemon and CLI as a library, so everything is testable in-process. The life of a query
//! reads top to bottom in [`query`]; the crates it calls own each step: `sluice-policy` (parse,
//! rewrite, verify), `sluice-connectors` (warehouses), `sluice-audit` (the log).

pub mod app;
pub mod audit_api;
pub mod audit_cli;
pub mod auth;
pub mod auth_cli;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
pub mod embed;
pub mod encode;
pub mod error;
pub mod explain;
pub mod federation;
pub mod logging;
pub mod query;
pub mod server;
pub mod vault;
