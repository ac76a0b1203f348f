//! Building the running daemon from a validated configuration: secrets, connectors, catalogs,
//! the audit log. Everything a request needs lives in [`AppState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_audit::{AuditLog, AuditWriter};
use sluice_connectors::Connector;
use sluice_connectors::embedded::{EmbeddedConnector, EmbeddedOptions, EmbeddedTable, FileFormat};
use sluice_policy::{Access, Catalog, Dialect, TableName, TableRule};

use crate::auth::{Authenticator, JwtVerifier};
use crate::config::{AccessKind, Config, ConnectionConfig, ConnectionKind, FileFormatConfig};

/// Name of the audit log file in the data directory.
pub const AUDIT_FILE: &str = "audit.sqlite";

/// The daemon could not start; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// One declared warehouse connection.
pub struct Connection {
    /// Its id.
    pub id: String,
    /// What it declares (policy input).
    pub catalog: Catalog,
    /// How to reach it.
    pub connector: Arc<dyn Connector>,
}

/// Everything a request needs.
pub struct AppState {
    /// The configuration in force.
    pub config: Config,
    /// Authentication methods.
    pub auth: Authenticator,
    /// Connections by id.
    pub connections: BTreeMap<String, Arc<Connection>>,
    /// The audit log.
    pub audit: AuditLog,
    /// Set once SIGTERM arrived: `/readyz` turns unready while in-flight requests drain.
    pub shutting_down: AtomicBool,
}

impl AppState {
    /// Whether the daemon should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.audit.is_healthy() && !self.shutting_down.load(Ordering::Relaxed)
    }
}

/// A built daemon: its state and the audit writer to join on shutdown.
pub struct App {
    /// Shared state.
    pub state: Arc<AppState>,
    /// The audit writer thread.
    pub audit_writer: AuditWriter,
}

fn parse_table_name(name: &str) -> Result<TableName, String> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [s, t] => Ok(TableName {
            catalog: None,
            schema: s.to_string(),
            table: t.to_string(),
        }),
        [c, s, t] => Ok(TableName {
            catalog: Some(c.to_string()),
            schema: s.to_string(),
            table: t.to_string(),
        }),
        _ => Err(format!(
            "table name {name:?} must be schema.table or catalog.schema.table"
        )),
    }
}

/// The policy catalog a connection declares.
pub fn catalog_for(c: &ConnectionConfig) -> Result<Catalog, String> {
    let dialect = match c.kind {
        ConnectionKind::Embedded => Dialect::DataFusion,
    };
    let mut tables = Vec::with_capacity(c.tables.len());
    for t in &c.tables {
        let access = match (t.access, &t.tenant_column) {
            (AccessKind::Public, _) => Access::Public,
            (AccessKind::Protected, Some(col)) => Access::Protected {
                tenant_column: col.clone(),
            },
            (AccessKind::Protected, None) => {
                return Err(format!("{}: protected tables need tenant_column", t.name));
            }
        };
        tables.push(TableRule {
            name: parse_table_name(&t.name)?,
            access,
            columns: t.columns.clone(),
        });
    }
    Catalog::new(
        dialect,
        dialect.default_param_style(),
        None,
        c.default_schema.clone(),
        tables,
    )
    .map_err(|e| e.to_string())
}

fn read_secret(config: &Config) -> Result<Option<Vec<u8>>, StartupError> {
    let Some(jwt) = &config.auth.jwt else {
        return Ok(None);
    };
    let secret = match (&jwt.secret_env, &jwt.secret_file) {
        (Some(var), _) => std::env::var(var)
            .map_err(|_| {
                StartupError(format!(
                    "auth.jwt.secret_env: environment variable {var} is not set"
                ))
            })?
            .into_bytes(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartupError(format!(
                    "auth.jwt.secret_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            text.trim_end_matches(['\n', '\r']).as_bytes().to_vec()
        }
        (None, None) => return Err(StartupError("auth.jwt: no secret configured".into())),
    };
    Ok(Some(secret))
}

async fn build_connection(c: &ConnectionConfig) -> Result<Connection, StartupError> {
    let catalog = catalog_for(c).map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?;
    let connector: Arc<dyn Connector> = match c.kind {
        ConnectionKind::Embedded => {
            let mut tables = Vec::with_capacity(c.tables.len());
            for (t, rule) in c.tables.iter().zip(catalog.tables()) {
                let (Some(path), Some(format)) = (&t.path, t.format) else {
                    return Err(StartupError(format!(
                        "{}: embedded tables need path and format",
                        t.name
                    )));
                };
                tables.push(EmbeddedTable {
                    schema: rule.name.schema.clone(),
                    table: rule.name.table.clone(),
                    path: path.clone(),
                    format: match format {
                        FileFormatConfig::Parquet => FileFormat::Parquet,
                        FileFormatConfig::Csv => FileFormat::Csv,
                    },
                });
            }
            let engine = EmbeddedConnector::new(&tables, EmbeddedOptions { threads: c.threads })
                .await
                .map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?;
            // Every declared column must exist, or queries would fail at random later.
            for rule in catalog.tables() {
                let schema = engine
                    .table_schema(&rule.name.schema, &rule.name.table)
                    .await
                    .ok_or_else(|| {
                        StartupError(format!(
                            "connection {}: {} is not readable",
                            c.id, rule.name
                        ))
                    })?;
                for col in &rule.columns {
                    if schema.field_with_name(col).is_err() {
                        return Err(StartupError(format!(
                            "connection {}: {} has no column {col:?} (declared in the config)",
                            c.id, rule.name
                        )));
                    }
                }
            }
            Arc::new(engine)
        }
    };
    Ok(Connection {
        id: c.id.clone(),
        catalog,
        connector,
    })
}

/// Builds the daemon: reads secrets, opens the audit log in the data directory, starts the
/// connectors.
pub async fn build(config: Config) -> Result<App, StartupError> {
    config.validate().map_err(|e| StartupError(e.to_string()))?;
    let secret = read_secret(&config)?;
    let jwt = match (&config.auth.jwt, secret) {
        (Some(c), Some(s)) => {
            Some(JwtVerifier::new(c, &s).map_err(|e| StartupError(format!("auth.jwt: {e}")))?)
        }
        _ => None,
    };
    let data_dir: &Path = &config.server.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StartupError(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let audit_path: PathBuf = data_dir.join(AUDIT_FILE);
    let (audit, audit_writer) = AuditLog::open(&audit_path).map_err(|e| {
        StartupError(format!(
            "cannot open audit log {}: {e}",
            audit_path.display()
        ))
    })?;
    let mut connections = BTreeMap::new();
    for c in &config.connections {
        connections.insert(c.id.clone(), Arc::new(build_connection(c).await?));
    }
    let state = AppState {
        auth: Authenticator::new(jwt),
        connections,
        audit,
        shutting_down: AtomicBool::new(false),
        config,
    };
    Ok(App {
        state: Arc::new(state),
        audit_writer,
    })
}
