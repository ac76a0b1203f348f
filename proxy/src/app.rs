//! Building the running daemon from a validated configuration: secrets, connectors, catalogs,
//! the audit log. Everything a request needs lives in [`AppState`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_audit::{AuditLog, AuditOptions, AuditWriter, Signer};
use sluice_connectors::embedded::{EmbeddedConnector, EmbeddedOptions, EmbeddedTable, FileFormat};
use sluice_connectors::postgres::{PostgresConnector, PostgresOptions};
use sluice_connectors::{Connector, ConnectorError};
use sluice_policy::Catalog;

use crate::auth::Authenticator;
use crate::auth::jwt::JwtVerifier;
use crate::auth::oidc::Oidc;
use crate::auth::store::{AUTH_FILE, AuthStore};
use crate::config::{Config, ConnectionConfig, ConnectionKind, FileFormatConfig};
use crate::engine::Engine;
use crate::engine::connection::Connection;
pub use crate::engine::policy::Policy;

/// Name of the audit log file in the data directory.
pub const AUDIT_FILE: &str = "audit.sqlite";

/// The daemon could not start; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Everything a request needs.
pub struct AppState {
    /// The configuration the daemon started with.
    pub config: Arc<Config>,
    /// Where it came from (for reloads); `None` for the demo.
    pub config_path: Option<PathBuf>,
    /// Authentication methods and their store.
    pub auth: Authenticator,
    /// SSO, when configured.
    pub oidc: Option<Oidc>,
    /// Users' own warehouse credentials, when `[vault]` is configured.
    pub vault: Option<Arc<crate::vault::Vault>>,
    /// The query engine: connections, the policy in force, every query's life.
    pub engine: Engine,
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

    /// Re-reads the configuration file and swaps in its policy (tables, grants, masks, limits).
    /// Connections themselves (their ids and kinds) cannot change without a restart; on any
    /// error the running policy stays in force.
    pub fn reload_policy(&self) -> Result<(), String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("no configuration file to reload")?;
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let running: Vec<(&str, ConnectionKind)> = self
            .config
            .connections
            .iter()
            .map(|c| (c.id.as_str(), c.kind))
            .collect();
        let new: Vec<(&str, ConnectionKind)> = config
            .connections
            .iter()
            .map(|c| (c.id.as_str(), c.kind))
            .collect();
        if running != new {
            return Err("connections changed: restart to apply".into());
        }
        self.engine.set_policy(Policy::from_config(&config)?);
        Ok(())
    }
}

/// Where the audit log, its checkpoints and its signing key live.
pub struct AuditPaths {
    /// The SQLite log.
    pub log: PathBuf,
    /// The signed checkpoints (JSON lines).
    pub checkpoints: PathBuf,
    /// The checkpoint signing key.
    pub signing_key: PathBuf,
    /// Sealed archive segments.
    pub archive_dir: PathBuf,
}

impl AuditPaths {
    /// The paths a configuration names (or their defaults in the data directory).
    pub fn of(config: &Config) -> AuditPaths {
        let dir = &config.server.data_dir;
        let log = dir.join(AUDIT_FILE);
        AuditPaths {
            checkpoints: config
                .audit
                .checkpoints_file
                .clone()
                .unwrap_or_else(|| AuditOptions::checkpoints_beside(&log)),
            signing_key: config
                .audit
                .signing_key_file
                .clone()
                .unwrap_or_else(|| dir.join("keys").join("audit-signing.key")),
            archive_dir: dir.join("archive"),
            log,
        }
    }
}

/// A built daemon: its state and the audit writer to join on shutdown.
pub struct App {
    /// Shared state.
    pub state: Arc<AppState>,
    /// The audit writer thread.
    pub audit_writer: AuditWriter,
}

/// Reads a secret from the environment variable or file a config names (never the config).
fn read_secret_from(
    field: &str,
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Option<Vec<u8>>, StartupError> {
    match (env, file) {
        (Some(var), _) => std::env::var(var)
            .map(|v| Some(v.into_bytes()))
            .map_err(|_| StartupError(format!("{field}: environment variable {var} is not set"))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartupError(format!("{field}: cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(
                text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
            ))
        }
        (None, None) => Ok(None),
    }
}

fn jwt_verifier(config: &Config) -> Result<Option<JwtVerifier>, StartupError> {
    let Some(jwt) = &config.auth.jwt else {
        return Ok(None);
    };
    let secret = read_secret_from(
        "auth.jwt",
        jwt.secret_env.as_ref(),
        jwt.secret_file.as_ref(),
    )?;
    let pem = match &jwt.public_key_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            StartupError(format!(
                "auth.jwt.public_key_file: cannot read {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let types = config
        .auth
        .attribute_types()
        .map_err(|e| StartupError(format!("auth.attributes: {e}")))?;
    JwtVerifier::new(jwt, secret.as_deref(), pem.as_deref())
        .map(|v| Some(v.with_attribute_types(types)))
        .map_err(|e| StartupError(format!("auth.jwt: {e}")))
}

fn oidc(config: &Config) -> Result<Option<Oidc>, StartupError> {
    let Some(o) = &config.auth.oidc else {
        return Ok(None);
    };
    let secret = read_secret_from(
        "auth.oidc",
        o.client_secret_env.as_ref(),
        o.client_secret_file.as_ref(),
    )?
    .ok_or_else(|| StartupError("auth.oidc: no client secret".into()))?;
    let secret = String::from_utf8(secret)
        .map_err(|_| StartupError("auth.oidc: the client secret is not UTF-8".into()))?;
    Oidc::new(o, secret)
        .map(Some)
        .map_err(|e| StartupError(format!("auth.oidc: {e}")))
}

/// Opens the authentication store of a data directory.
pub fn open_auth_store(data_dir: &Path) -> Result<AuthStore, StartupError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StartupError(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(AUTH_FILE);
    AuthStore::open(&path).map_err(|e| StartupError(format!("cannot open {}: {e}", path.display())))
}

async fn embedded(
    c: &ConnectionConfig,
    catalog: &Catalog,
) -> Result<Arc<dyn Connector>, StartupError> {
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
    Ok(Arc::new(engine))
}

/// How long the start waits for a PostgreSQL warehouse to answer the service-login check before
/// it goes on (the check then runs on the first query).
const LOGIN_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL connector whose service login (the URL's user) is refused while privileged —
/// a superuser, `BYPASSRLS`, or allowed to write a declared table — unless the connection says
/// `allow_privileged_login = true`. Checked now: a privileged login stops the start, naming the
/// connection and the reason; a warehouse that cannot be reached now is logged, and the
/// connector checks on its first service-login query (refusing queries while privileged).
async fn checked_service_login(
    c: &ConnectionConfig,
    catalog: &Catalog,
    connector: PostgresConnector,
) -> Result<PostgresConnector, StartupError> {
    if c.allow_privileged_login {
        tracing::warn!(
            connection = %c.id,
            "allow_privileged_login = true: the service login is not checked for superuser, \
             BYPASSRLS or write privileges"
        );
        return Ok(connector);
    }
    let tables = catalog
        .tables()
        .iter()
        .map(|t| (t.name.schema.clone(), t.name.table.clone()))
        .collect();
    let mut connector = connector.require_unprivileged_login(tables);
    if c.tenant_fence == crate::config::TenantFence::RowSecurity {
        let protected = catalog
            .tables()
            .iter()
            .filter(|t| matches!(t.access, sluice_policy::Access::Protected { .. }))
            .map(|t| (t.name.schema.clone(), t.name.table.clone()))
            .collect();
        connector = connector.require_row_security(protected);
    }
    let checked = tokio::time::timeout(LOGIN_CHECK_TIMEOUT, connector.ensure_service_login()).await;
    match checked {
        Ok(Ok(())) => Ok(connector),
        Ok(Err(ConnectorError::Config(reason))) => Err(StartupError(format!(
            "connection {}: refusing the service login: {reason}",
            c.id
        ))),
        Ok(Err(e)) => {
            tracing::warn!(
                connection = %c.id,
                error = %e.log_message(),
                "cannot check the service login now: it is checked on the first query, and \
                 queries are refused while it is privileged"
            );
            Ok(connector)
        }
        Err(_) => {
            tracing::warn!(
                connection = %c.id,
                "the warehouse did not answer the service-login check in time: it is checked on \
                 the first query, and queries are refused while it is privileged"
            );
            Ok(connector)
        }
    }
}

async fn build_connection(
    c: &ConnectionConfig,
    catalog: &Catalog,
) -> Result<Connection, StartupError> {
    let connector: Arc<dyn Connector> = match c.kind {
        ConnectionKind::Embedded => embedded(c, catalog).await?,
        ConnectionKind::Postgres => {
            let var = c.url_env.as_deref().unwrap_or_default();
            let url = std::env::var(var).map_err(|_| {
                StartupError(format!(
                    "connection {}: environment variable {var} is not set",
                    c.id
                ))
            })?;
            let options = PostgresOptions {
                url,
                statement_timeout: Duration::from_millis(c.statement_timeout_ms),
            };
            let connector = PostgresConnector::new(&options)
                .map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?;
            Arc::new(checked_service_login(c, catalog, connector).await?)
        }
        ConnectionKind::Snowflake => Arc::new(
            sluice_connectors::snowflake::SnowflakeConnector::new(
                sluice_connectors::snowflake::SnowflakeOptions {
                    endpoint: c.endpoint.clone().unwrap_or_default(),
                    database: c.default_catalog.clone(),
                    schema: Some(c.default_schema.clone()),
                    warehouse: c.warehouse.clone(),
                    role: c.role.clone(),
                    timeout: Duration::from_millis(c.statement_timeout_ms),
                },
            )
            .map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?,
        ),
        ConnectionKind::Bigquery => Arc::new(
            sluice_connectors::bigquery::BigQueryConnector::new(
                sluice_connectors::bigquery::BigQueryOptions {
                    endpoint: c.endpoint.clone().unwrap_or_else(|| {
                        sluice_connectors::bigquery::DEFAULT_ENDPOINT.to_string()
                    }),
                    project: c.default_catalog.clone().unwrap_or_default(),
                    dataset: Some(c.default_schema.clone()),
                    location: c.location.clone(),
                    timeout: Duration::from_millis(c.statement_timeout_ms),
                },
            )
            .map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?,
        ),
        ConnectionKind::Databricks => Arc::new(
            sluice_connectors::databricks::DatabricksConnector::new(
                sluice_connectors::databricks::DatabricksOptions {
                    endpoint: c.endpoint.clone().unwrap_or_default(),
                    warehouse_id: c.warehouse.clone().unwrap_or_default(),
                    catalog: c.default_catalog.clone(),
                    schema: Some(c.default_schema.clone()),
                },
            )
            .map_err(|e| StartupError(format!("connection {}: {e}", c.id)))?,
        ),
    };
    Ok(Connection {
        id: c.id.clone(),
        connector,
        credential: c.credential,
    })
}

/// Builds the daemon: reads secrets, opens the audit log in the data directory, starts the
/// connectors. `config_path` is kept for policy reloads.
pub async fn build(config: Config) -> Result<App, StartupError> {
    build_from(config, None).await
}

/// [`build`], remembering the file the configuration came from.
pub async fn build_from(config: Config, config_path: Option<PathBuf>) -> Result<App, StartupError> {
    build_with_connectors(config, config_path, BTreeMap::new()).await
}

/// [`build_from`], with some connections served by the given connectors instead of the ones
/// their configuration names (embedding, and tests that need a warehouse double).
pub async fn build_with_connectors(
    config: Config,
    config_path: Option<PathBuf>,
    mut overrides: BTreeMap<String, Arc<dyn Connector>>,
) -> Result<App, StartupError> {
    config.validate().map_err(|e| StartupError(e.to_string()))?;
    let policy = Policy::from_config(&config).map_err(StartupError)?;
    let jwt = jwt_verifier(&config)?;
    let oidc = oidc(&config)?;
    let vault = crate::vault::Vault::from_config(&config)
        .map_err(StartupError)?
        .map(Arc::new);
    let data_dir: &Path = &config.server.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StartupError(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let store = Arc::new(open_auth_store(data_dir)?);
    let paths = AuditPaths::of(&config);
    let signer =
        Signer::load_or_create(&paths.signing_key).map_err(|e| StartupError(e.to_string()))?;
    let options = AuditOptions {
        signer: Some(Arc::new(signer)),
        checkpoints_path: paths.checkpoints.clone(),
        checkpoint_every: config.audit.checkpoint_every.max(1),
        checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_secs.max(1)),
    };
    let (audit, audit_writer) = AuditLog::open_with(&paths.log, options).map_err(|e| {
        StartupError(format!(
            "cannot open audit log {}: {e}",
            paths.log.display()
        ))
    })?;
    let mut connections = BTreeMap::new();
    for c in &config.connections {
        let catalog = policy
            .catalogs
            .get(&c.id)
            .ok_or_else(|| StartupError(format!("connection {}: no catalog", c.id)))?;
        let connection = match overrides.remove(&c.id) {
            Some(connector) => Connection {
                id: c.id.clone(),
                connector,
                credential: c.credential,
            },
            None => build_connection(c, catalog).await?,
        };
        connections.insert(c.id.clone(), Arc::new(connection));
    }
    let config = Arc::new(config);
    let engine = Engine::new(
        Arc::clone(&config),
        connections,
        policy,
        vault.clone(),
        audit.clone(),
    );
    let state = AppState {
        auth: Authenticator::new(jwt, store, &config.auth),
        oidc,
        vault,
        engine,
        audit,
        shutting_down: AtomicBool::new(false),
        config_path,
        config,
    };
    Ok(App {
        state: Arc::new(state),
        audit_writer,
    })
}
