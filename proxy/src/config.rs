//! The configuration file: one TOML document, unknown keys rejected with their name.
//!
//! Loading is split in two: [`Config::load`] parses and [`Config::validate`]s without touching
//! the network or the data directory (that is all `sluice check-config` does); building the
//! running daemon from it happens in [`crate::app`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default address the daemon listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (every SQLite file sluice writes lives here).
pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
/// Default cap on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default time allowed until response headers are sent.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default cap on rows returned by one query.
pub const DEFAULT_MAX_RESULT_ROWS: u64 = 100_000;
/// Default time a whole query (including streaming the answer) may take.
pub const DEFAULT_QUERY_TIMEOUT_MS: u64 = 300_000;
/// Default clock leeway for token times.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest clock leeway accepted.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest HS256 secret accepted, in bytes.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key, or wrong type (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml/serde said, with the key and position.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {field}: {message}")]
    Invalid {
        /// The dotted path of the offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// How callers authenticate.
    pub auth: AuthConfig,
    /// Limits applied to every query.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The audit log's tamper evidence and content.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The warehouses sluice fronts, with the tables each declares.
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, `host:port`. Overridden by `--listen`.
    pub listen: String,
    /// Directory for every SQLite file sluice writes (audit log, ...). Overridden by `--data-dir`.
    pub data_dir: PathBuf,
    /// Largest request body accepted; larger bodies get `413 payload_too_large`.
    pub max_body_bytes: usize,
    /// Time allowed until response headers are sent; then `504 timeout`.
    pub request_timeout_ms: u64,
    /// After SIGTERM, time in-flight requests get to finish before the process exits.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `sluice=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[auth]`: at least one method must be configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Signed JWT bearer tokens.
    pub jwt: Option<JwtConfig>,
    /// Which groups hold which of sluice's own roles.
    #[serde(default)]
    pub roles: RolesConfig,
}

/// `[auth.roles]`: groups per role; `"*"` means every authenticated principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// May run data queries and explain them. Default: everyone (`["*"]`).
    pub analyst: Vec<String>,
    /// May read the audit log (`/v1/audit/...`) and nothing else: a compliance principal
    /// cannot run data queries, even if also in an analyst group. Default: nobody.
    pub compliance: Vec<String>,
    /// Administration (keys, sessions, configuration). Default: nobody.
    pub admin: Vec<String>,
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig {
            analyst: vec!["*".into()],
            compliance: vec![],
            admin: vec![],
        }
    }
}

impl RolesConfig {
    fn holds(groups: &[String], allowed: &[String]) -> bool {
        allowed.iter().any(|a| a == "*" || groups.contains(a))
    }

    /// Whether a principal with `groups` may run data queries.
    pub fn may_query(&self, groups: &[String]) -> bool {
        Self::holds(groups, &self.analyst) && !self.is_compliance(groups)
    }

    /// Whether a principal with `groups` holds the compliance role.
    pub fn is_compliance(&self, groups: &[String]) -> bool {
        Self::holds(groups, &self.compliance)
    }
}

/// JWT signature algorithms; pinned by configuration, never taken from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The only algorithm accepted.
    pub algorithm: JwtAlgorithm,
    /// Name of the environment variable holding the HS256 secret (the secret itself never goes
    /// in this file). Exactly one of `secret_env` and `secret_file`.
    pub secret_env: Option<String>,
    /// A file holding the HS256 secret (for example a mounted Kubernetes secret).
    pub secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock leeway for `exp` and `nbf`, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Which claims carry the user, tenant and groups.
    #[serde(default)]
    pub claims: ClaimsConfig,
}

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY_SECS
}

/// `[auth.jwt.claims]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsConfig {
    /// Claim holding the user id (a string).
    pub user: String,
    /// Claim holding the tenant id (a string; any other type is refused).
    pub tenant: String,
    /// Claim holding the groups (an array of strings; absent means none).
    pub groups: String,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        ClaimsConfig {
            user: "sub".into(),
            tenant: "tenant".into(),
            groups: "groups".into(),
        }
    }
}

/// Default number of records between signed checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Default longest time between signed checkpoints while records are written.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 60;

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Ed25519 key that signs checkpoints (hex PKCS#8; created on first start). Keep it apart
    /// from the log, on another volume, in production. Default `<data_dir>/keys/audit-signing.key`.
    pub signing_key_file: Option<PathBuf>,
    /// Where signed checkpoints are appended. Default `<data_dir>/audit.sqlite.checkpoints.jsonl`.
    pub checkpoints_file: Option<PathBuf>,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or after this many seconds while records are written.
    pub checkpoint_interval_secs: u64,
    /// Replace every literal of the recorded SQL (original and rewritten) by `?`. The tenant
    /// stays visible in the recorded parameters.
    pub redact_literals: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key_file: None,
            checkpoints_file: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_secs: DEFAULT_CHECKPOINT_INTERVAL_SECS,
            redact_literals: false,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most rows one query returns; the answer says when it was truncated.
    pub max_result_rows: u64,
    /// Time a whole query may take, including streaming its answer.
    pub query_timeout_ms: u64,
    /// Row limit per group, applied to the outermost query (`LIMIT`). A caller in several
    /// listed groups gets the largest; a caller in none gets no group limit.
    pub group_max_rows: BTreeMap<String, u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_result_rows: DEFAULT_MAX_RESULT_ROWS,
            query_timeout_ms: DEFAULT_QUERY_TIMEOUT_MS,
            group_max_rows: BTreeMap::new(),
        }
    }
}

/// Kinds of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// The embedded DataFusion engine over local Parquet/CSV files.
    Embedded,
    /// PostgreSQL.
    Postgres,
    /// Snowflake (policy and explain only in this build: queries answer `warehouse_unavailable`).
    Snowflake,
    /// BigQuery (policy and explain only in this build).
    Bigquery,
    /// Databricks (policy and explain only in this build).
    Databricks,
}

/// `[[connections]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Identifier used in requests (`"connection": "<id>"`): letters, digits, `_` and `-`.
    pub id: String,
    /// Warehouse kind.
    pub kind: ConnectionKind,
    /// Schema (dataset) that one-part table names resolve in.
    #[serde(default = "default_schema")]
    pub default_schema: String,
    /// Catalog (database, project) that one- and two-part names resolve in.
    pub default_catalog: Option<String>,
    /// PostgreSQL: the environment variable holding the connection URL (never the URL itself,
    /// which may hold a password).
    pub url_env: Option<String>,
    /// PostgreSQL: server-side statement timeout.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// Engine threads (embedded only).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Declared tables. Anything not declared cannot be read.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
}

fn default_schema() -> String {
    "public".into()
}

fn default_statement_timeout() -> u64 {
    DEFAULT_QUERY_TIMEOUT_MS
}

fn default_threads() -> usize {
    2
}

/// How a table may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessKind {
    /// Readable by every tenant, unfiltered.
    Public,
    /// Filtered to the caller's tenant on `tenant_column`.
    Protected,
}

/// File formats of embedded tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormatConfig {
    /// Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
}

/// How a masked column is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKindConfig {
    /// MD5 hex digest of the value's text.
    Hash,
    /// NULL.
    Null,
    /// `****` and the last four characters.
    Last4,
    /// The constant `value`.
    Constant,
}

/// `[connections.tables.masks.<column>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// `hash`, `null`, `last4` or `constant`.
    pub mask: MaskKindConfig,
    /// The constant shown, for `mask = "constant"`.
    pub value: Option<String>,
    /// Groups that see the raw value.
    #[serde(default)]
    pub except: Vec<String>,
}

/// `[[connections.tables]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table` (or `catalog.schema.table`), written as the warehouse stores it.
    pub name: String,
    /// `public` or `protected`.
    pub access: AccessKind,
    /// The tenant column (protected tables only).
    pub tenant_column: Option<String>,
    /// The columns sluice exposes, in table order; others are never read.
    pub columns: Vec<String>,
    /// Groups that may read the table at all; absent means every authenticated caller.
    pub groups: Option<Vec<String>>,
    /// Columns restricted to some groups (`column = ["group", ...]`); unlisted columns are
    /// visible to every reader of the table.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// Masked columns (`column = { mask = "hash", except = ["group"] }`), masked inside the
    /// tenant wrapper so no predicate sees the raw value.
    #[serde(default)]
    pub masks: BTreeMap<String, MaskConfig>,
    /// Compliance tags (for example `phi`): the HIPAA-style access report covers tables
    /// tagged `phi`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Embedded only: file or directory, relative to the config file.
    pub path: Option<PathBuf>,
    /// Embedded only: `parquet` or `csv`.
    pub format: Option<FileFormatConfig>,
}

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        for p in [
            &mut self.audit.signing_key_file,
            &mut self.audit.checkpoints_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(jwt) = &mut self.auth.jwt
            && let Some(f) = &mut jwt.secret_file
        {
            fix(f);
        }
        for c in &mut self.connections {
            for t in &mut c.tables {
                if let Some(p) = &mut t.path {
                    fix(p);
                }
            }
        }
    }

    /// Pure checks: no network, no files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("server.listen", format!("{:?}: {e}", self.server.listen)))?;
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be positive"));
        }
        if self.server.request_timeout_ms == 0 || self.limits.query_timeout_ms == 0 {
            return Err(invalid("timeouts", "must be positive"));
        }
        if self.limits.max_result_rows == 0 {
            return Err(invalid("limits.max_result_rows", "must be positive"));
        }
        let Some(jwt) = &self.auth.jwt else {
            return Err(invalid(
                "auth",
                "configure at least one method ([auth.jwt])",
            ));
        };
        match (&jwt.secret_env, &jwt.secret_file) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "auth.jwt",
                    "set exactly one of secret_env and secret_file",
                ));
            }
        }
        if jwt.issuer.is_empty() || jwt.audience.is_empty() {
            return Err(invalid("auth.jwt", "issuer and audience are required"));
        }
        if jwt.leeway_secs > MAX_LEEWAY_SECS {
            return Err(invalid("auth.jwt.leeway_secs", "at most 300"));
        }
        let mut ids = HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let field = format!("connections[{i}]");
            if c.id.is_empty()
                || c.id.len() > 64
                || !c
                    .id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(invalid(
                    format!("{field}.id"),
                    "use 1-64 letters, digits, _ or -",
                ));
            }
            if !ids.insert(c.id.as_str()) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("duplicate id {:?}", c.id),
                ));
            }
            if c.kind == ConnectionKind::Postgres && c.url_env.is_none() {
                return Err(invalid(
                    format!("{field}.url_env"),
                    "postgres connections need url_env",
                ));
            }
            if c.threads == 0 {
                return Err(invalid(format!("{field}.threads"), "must be positive"));
            }
            for (j, t) in c.tables.iter().enumerate() {
                let tf = format!("{field}.tables[{j}]");
                match (t.access, &t.tenant_column) {
                    (AccessKind::Protected, None) => {
                        return Err(invalid(tf, "protected tables need tenant_column"));
                    }
                    (AccessKind::Public, Some(_)) => {
                        return Err(invalid(tf, "public tables have no tenant_column"));
                    }
                    _ => {}
                }
                if c.kind == ConnectionKind::Embedded && (t.path.is_none() || t.format.is_none()) {
                    return Err(invalid(tf, "embedded tables need path and format"));
                }
                if c.kind != ConnectionKind::Embedded && (t.path.is_some() || t.format.is_some()) {
                    return Err(invalid(tf, "path and format are for embedded tables only"));
                }
                for (col, m) in &t.masks {
                    if (m.mask == MaskKindConfig::Constant) != m.value.is_some() {
                        return Err(invalid(
                            format!("{tf}.masks.{col}"),
                            "value is required with mask = \"constant\" and only then",
                        ));
                    }
                }
            }
            crate::app::catalog_for(c).map_err(|e| invalid(field, e))?;
        }
        Ok(())
    }
}
