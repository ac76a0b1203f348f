//! sluice: a zero-ingestion federated query proxy.
//!
//! The daemon and CLI as a library, so everything is testable in-process. Dependencies point
//! one way (checked by `proxy/tests/module_graph.rs`):
//!
//! ```text
//! cli, demo ──▶ http, wire (front doors) ──▶ app (built state) ──▶ engine ──▶ auth, vault ──▶
//!                                                                      config, error, context
//! ```
//!
//! The life of a query reads top to bottom in [`engine`]; the crates it calls own each step:
//! `sluice-policy` (parse, rewrite, verify), `sluice-connectors` (warehouses), `sluice-audit`
//! (the log).

pub mod app;
pub mod audit_cli;
pub mod auth;
pub mod auth_cli;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod engine;
pub mod error;
pub mod http;
pub mod logging;
pub mod vault;
pub mod wire;
