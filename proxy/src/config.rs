//! The configuration file: one TOML document, unknown keys rejected with their name.
//!
//! Loading is split in two: [`Config::load`] parses and [`Config::validate`]s without touching
//! the network or the data directory (that is all `sluice check-config` does); building the
//! running daemon from it happens in [`crate::app`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_policy::{
    AttributeType, Catalog, Dialect, MaskKind, MaskRule, RowFilter, TableName, TableRule,
};

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
/// Default time a connection gets to send a request's headers, counted from when it is ready
/// for a request (so an idle keep-alive connection is closed after it too).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default cap on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Default cap on open client connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
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
    /// Each user's own warehouse credentials, encrypted at rest.
    pub vault: Option<VaultConfig>,
    /// Queries that join tables of several connections.
    #[serde(default)]
    pub federation: FederationConfig,
    /// The PostgreSQL-wire front door (off unless `listen` is set).
    #[serde(default)]
    pub pgwire: PgWireConfig,
}

/// `[pgwire]`: BI tools and drivers connect to sluice as if it were PostgreSQL. The password is
/// a data credential (a signed JWT, a session token or an API key); the database name selects
/// the connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgWireConfig {
    /// Address to listen on, `host:port`; no listener when absent.
    pub listen: Option<String>,
    /// PEM certificate chain for TLS (`sslmode=require`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a password sent without TLS. Default: on, unless `listen` is a loopback address
    /// (a credential crossing a network in cleartext is refused before it is read).
    pub require_tls: Option<bool>,
}

impl PgWireConfig {
    /// Whether a password must arrive over TLS.
    pub fn requires_tls(&self) -> bool {
        self.require_tls.unwrap_or_else(|| {
            !self
                .listen
                .as_deref()
                .and_then(|l| l.parse::<SocketAddr>().ok())
                .is_some_and(|a| a.ip().is_loopback())
        })
    }
}

/// `[federation]`: the per-query DataFusion workspace that joins several connections' tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Memory one federated query's workspace may hold (joins, sorts, aggregates); beyond it
    /// the query fails with `resource_exhausted`, never the process.
    pub memory_limit_mb: u64,
    /// Most rows any one source may return into a federated query (`resource_exhausted`
    /// beyond).
    pub max_source_rows: u64,
    /// Parallelism of the workspace's operators.
    pub target_partitions: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            memory_limit_mb: 256,
            max_source_rows: 1_000_000,
            target_partitions: 2,
        }
    }
}

/// `[vault]`: where the key-encryption key comes from, and how tokens are refreshed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Environment variable holding the current key (32 random bytes, base64). Exactly one of
    /// this and `key_file`; never the key itself.
    pub key_env: Option<String>,
    /// File holding the current key.
    pub key_file: Option<PathBuf>,
    /// Earlier keys (files), still used to open records sealed before a rotation.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
    /// Earlier keys (environment variables).
    #[serde(default)]
    pub previous_key_envs: Vec<String>,
    /// Refresh a token when this share of its lifetime has passed (minus up to a tenth of it,
    /// at random, so tokens issued together are not refreshed together).
    #[serde(default = "default_refresh_percent")]
    pub refresh_at_percent: u8,
    /// How often the refresher looks for tokens due.
    #[serde(default = "default_refresh_check")]
    pub refresh_check_ms: u64,
    /// Refreshes in flight at once, across all users (the authorization server is not
    /// stampeded).
    #[serde(default = "default_refresh_concurrency")]
    pub max_concurrent_refreshes: usize,
}

fn default_refresh_percent() -> u8 {
    80
}
fn default_refresh_check() -> u64 {
    5_000
}
fn default_refresh_concurrency() -> usize {
    8
}

/// How a connection authenticates to its warehouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialMode {
    /// The connection's own configured credential (a service account), the same for every
    /// user: for public embeds. Explicitly marked as such.
    #[default]
    Service,
    /// Each user's own OAuth tokens from the vault (connect flow, background refresh).
    Oauth,
    /// Each user's own password or key, stored in the vault.
    Password,
    /// PostgreSQL: the connection's service login acts as the user's own role
    /// (`SET LOCAL ROLE <user>`) with the tenant in `sluice.tenant`, inside a read-only
    /// transaction, so the database's row-level security policies apply.
    Passthrough,
}

/// `[connections.oauth]`: the warehouse's OAuth 2.0 authorization server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientConfig {
    /// Authorization endpoint.
    pub authorize_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// RFC 7009 revocation endpoint, if the server has one.
    pub revocation_url: Option<String>,
    /// sluice's client id there.
    pub client_id: String,
    /// Environment variable holding the client secret (exactly one of this and the file).
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The callback registered there: `https://<sluice>/v1/connections/oauth/callback`.
    pub redirect_url: String,
    /// Accept `http://` endpoints (loopback development and tests only).
    #[serde(default)]
    pub allow_http: bool,
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
    /// Time a connection gets to send the headers of a request, counted from when it is ready
    /// for one: a connection that sends nothing (idle keep-alive, or silent after connecting)
    /// or trickles its headers (slowloris) is closed after it.
    pub header_read_timeout_ms: u64,
    /// Most client connections open at once; one more is answered `503 too_many_connections`
    /// and closed.
    pub max_connections: usize,
    /// Most client connections open at once from one IP address (the peer address of the TCP
    /// connection), so one client cannot take every slot.
    pub max_connections_per_address: usize,
    /// Origins (`https://host[:port]`) of the host apps that may embed sluice and call it from
    /// a browser: CORS answers and `Content-Security-Policy: frame-ancestors` list them, and a
    /// request carrying any other `Origin` is refused (`403 origin_not_allowed`).
    pub allowed_origins: Vec<String>,
    /// Proxies (addresses or CIDR ranges) in front of sluice whose `X-Forwarded-For` is
    /// believed: for a request from one of them, the client address (failure limits, the audit
    /// log) is the rightmost entry that is not itself a trusted proxy. Empty: the TCP peer
    /// always (the header is ignored).
    pub trusted_proxies: Vec<String>,
}

impl ServerConfig {
    /// The trusted proxies as networks (an address is a /32 or /128).
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{p:?} is not an IP address or CIDR range"))
            })
            .collect()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            allowed_origins: vec![],
            trusted_proxies: vec![],
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

/// `[auth]`: at least one method must be usable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Customer-signed JWT bearer tokens.
    pub jwt: Option<JwtConfig>,
    /// SSO for internal users (OIDC authorization code flow with PKCE).
    pub oidc: Option<OidcConfig>,
    /// Sessions (from web tickets or SSO).
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// The web-ticket flow (service clients, one-time tickets).
    #[serde(default)]
    pub tickets: TicketsConfig,
    /// API keys for development and automation.
    #[serde(default)]
    pub api_keys: ApiKeysConfig,
    /// Limits on failed authentications.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Which groups hold which of sluice's own roles.
    #[serde(default)]
    pub roles: RolesConfig,
    /// Declared caller attributes and their types (`region = "text"`, `accounts =
    /// "integer[]"`; types `text`, `integer`, `text[]`, `integer[]`): what row filters bind.
    /// A JWT carries the ones `auth.jwt.claims.attributes` copies (a claim listed there and not
    /// declared here is text); a ticket carries the ones its service client mints.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl AuthConfig {
    /// Every attribute a credential can carry, with its type: the declared ones, and the
    /// claims a JWT copies (text unless declared). Unknown type names are refused.
    pub fn attribute_types(&self) -> Result<BTreeMap<String, AttributeType>, String> {
        let mut out = BTreeMap::new();
        if let Some(jwt) = &self.jwt {
            for name in &jwt.claims.attributes {
                out.insert(name.clone(), AttributeType::Text);
            }
        }
        for (name, ty) in &self.attributes {
            if !sluice_policy::valid_attribute_name(name) {
                return Err(format!(
                    "auth.attributes: {name:?} is not an attribute name (letters, digits and _, \
                     at most 64)"
                ));
            }
            let t = AttributeType::parse(ty).ok_or_else(|| {
                format!(
                    "auth.attributes.{name}: unknown type {ty:?} (use text, integer, text[] or \
                     integer[])"
                )
            })?;
            out.insert(name.clone(), t);
        }
        Ok(out)
    }
}

/// Default idle lifetime of a session (renewed while in use).
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 3600;
/// Default absolute cap on a session's lifetime.
pub const DEFAULT_SESSION_MAX_SECS: u64 = 12 * 3600;
/// Default lifetime of a web ticket.
pub const DEFAULT_TICKET_TTL_SECS: u64 = 60;
/// Longest ticket lifetime accepted (configured or requested).
pub const MAX_TICKET_TTL_SECS: u64 = 300;
/// Default lifetime of a service token.
pub const DEFAULT_SERVICE_TOKEN_TTL_SECS: u64 = 600;
/// Default window of the failure rate limits.
pub const DEFAULT_RATE_WINDOW_SECS: u64 = 300;

/// `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SameSite {
    /// Sent only to same-site requests (default).
    Strict,
    /// Also sent on top-level navigations.
    Lax,
    /// Sent cross-site (embedding in another site's iframe); requires `Secure`. Cookie-borne
    /// requests that change state must then carry an allowed `Origin`.
    None,
}

/// `[auth.sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A session unused this long expires; each use renews it.
    pub idle_ttl_secs: u64,
    /// No session lives longer than this, however much it is used.
    pub max_ttl_secs: u64,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// `SameSite` of the session cookie.
    pub cookie_same_site: SameSite,
    /// Mark the cookie `Secure` (turn off only for plain-HTTP development).
    pub cookie_secure: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_ttl_secs: DEFAULT_SESSION_IDLE_SECS,
            max_ttl_secs: DEFAULT_SESSION_MAX_SECS,
            cookie_name: "sluice_session".into(),
            cookie_same_site: SameSite::Strict,
            cookie_secure: true,
        }
    }
}

/// `[auth.tickets]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    /// Whether the web-ticket endpoints are served.
    pub enabled: bool,
    /// Lifetime of a ticket (at most 300 s).
    pub ticket_ttl_secs: u64,
    /// Lifetime of a service token.
    pub service_token_ttl_secs: u64,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            enabled: true,
            ticket_ttl_secs: DEFAULT_TICKET_TTL_SECS,
            service_token_ttl_secs: DEFAULT_SERVICE_TOKEN_TTL_SECS,
        }
    }
}

/// `[auth.api_keys]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Whether API keys are accepted at all (default: no).
    pub enabled: bool,
}

/// `[auth.rate_limit]`: failed authentications per client address and per principal (service
/// client id, API key id) within a window; past the limit, requests get `429` until the window
/// moves on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Length of the window, in seconds.
    pub window_secs: u64,
    /// Failures allowed per client address in a window.
    pub max_failures_per_addr: u32,
    /// Failures allowed per principal in a window.
    pub max_failures_per_principal: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            window_secs: DEFAULT_RATE_WINDOW_SECS,
            max_failures_per_addr: 50,
            max_failures_per_principal: 10,
        }
    }
}

/// `[auth.oidc]`: SSO for internal users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; discovery is read from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// This client's id at the provider.
    pub client_id: String,
    /// Environment variable holding the client secret (exactly one of this and `client_secret_file`).
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// The callback URL registered at the provider (`.../v1/auth/oidc/callback`).
    pub redirect_url: String,
    /// Scopes requested (`openid` is always included).
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Claim holding the user id.
    #[serde(default = "default_sub")]
    pub user_claim: String,
    /// Claim holding the groups (an array of strings), mapped to sluice roles by `[auth.roles]`.
    #[serde(default = "default_groups")]
    pub groups_claim: String,
    /// Claim holding the tenant; or set `tenant` for a fixed one. Exactly one of the two.
    pub tenant_claim: Option<String>,
    /// The tenant of every SSO user.
    pub tenant: Option<String>,
    /// Where the browser goes after login when it did not ask for a page (a path on sluice).
    #[serde(default = "default_root")]
    pub post_login_redirect: String,
    /// Accept an `http://` issuer (loopback development and tests only).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_sub() -> String {
    "sub".into()
}
fn default_groups() -> String {
    "groups".into()
}
fn default_root() -> String {
    "/".into()
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

    /// Whether a principal with `groups` holds the admin role.
    pub fn is_admin(&self, groups: &[String]) -> bool {
        Self::holds(groups, &self.admin)
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
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The only algorithm accepted.
    pub algorithm: JwtAlgorithm,
    /// HS256: name of the environment variable holding the secret (the secret itself never
    /// goes in this file). Exactly one key source.
    pub secret_env: Option<String>,
    /// HS256: a file holding the secret (for example a mounted Kubernetes secret).
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256/EdDSA: a PEM file with the public key.
    pub public_key_file: Option<PathBuf>,
    /// RS256/ES256/EdDSA: a JWKS URL (cached; refetched on an unknown `kid`, at most once per
    /// `jwks_min_refetch_secs`).
    pub jwks_url: Option<String>,
    /// Seconds a fetched JWKS is used before it is fetched again.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl_secs: u64,
    /// Shortest time between two fetches of the JWKS (unknown `kid`s do not stampede it).
    #[serde(default = "default_jwks_refetch")]
    pub jwks_min_refetch_secs: u64,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// If set, `iat` is required and may be at most this old.
    pub max_age_secs: Option<u64>,
    /// Require a `jti` and refuse a token whose `jti` was seen before (until its `exp`).
    #[serde(default)]
    pub require_jti: bool,
    /// Which claims carry the user, tenant, groups and attributes.
    #[serde(default)]
    pub claims: ClaimsConfig,
}

fn default_leeway() -> u64 {
    DEFAULT_LEEWAY_SECS
}
fn default_jwks_ttl() -> u64 {
    600
}
fn default_jwks_refetch() -> u64 {
    10
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
    /// Claims copied into the principal's attributes (string values only; others refused).
    pub attributes: Vec<String>,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        ClaimsConfig {
            user: "sub".into(),
            tenant: "tenant".into(),
            groups: "groups".into(),
            attributes: vec![],
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
    /// When a query's attempt record must be durable (see [`Durability`]).
    pub durability: Durability,
}

/// `audit.durability`: the order of a query's attempt record and its first steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The default. The warehouse may start as soon as the attempt record is queued; no byte
    /// of the answer leaves before the record is durable (if it cannot be made durable, the
    /// warehouse query is cancelled and the caller gets `audit_unavailable`). The completion
    /// record is group-committed without holding the answer's end; one lost in a crash is
    /// recorded with outcome `unknown` when the log is next opened.
    #[default]
    BeforeAnswer,
    /// Stricter: the attempt is durable before any warehouse or source sees the query, and the
    /// completion is durable before the answer's last frame (one fsync-bound wait more on the
    /// path of every query, and one at its end).
    BeforeWarehouse,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key_file: None,
            checkpoints_file: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_secs: DEFAULT_CHECKPOINT_INTERVAL_SECS,
            redact_literals: false,
            durability: Durability::BeforeAnswer,
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
    /// Most verified rewrites the policy cache keeps (least recently used evicted first);
    /// 0 turns the cache off.
    pub rewrite_cache_entries: usize,
    /// About how many bytes the policy cache keeps (SQL in and out, groups, manifests).
    pub rewrite_cache_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_result_rows: DEFAULT_MAX_RESULT_ROWS,
            query_timeout_ms: DEFAULT_QUERY_TIMEOUT_MS,
            group_max_rows: BTreeMap::new(),
            rewrite_cache_entries: sluice_policy::DEFAULT_REWRITE_CACHE_ENTRIES,
            rewrite_cache_bytes: sluice_policy::DEFAULT_REWRITE_CACHE_BYTES,
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
    /// Snowflake, over the SQL API v2 with each user's own OAuth token.
    Snowflake,
    /// BigQuery, over its REST API v2 with each user's own OAuth token.
    Bigquery,
    /// Databricks SQL, over the Statement Execution API 2.0 with each user's own OAuth token.
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
    /// REST warehouses: the API root. Snowflake: the account URL
    /// (`https://<account>.snowflakecomputing.com`); Databricks: the workspace URL
    /// (`https://<workspace>.cloud.databricks.com`); BigQuery: `https://bigquery.googleapis.com`
    /// when absent. `http://` only on loopback (tests, emulators).
    pub endpoint: Option<String>,
    /// Snowflake: the virtual warehouse. Databricks: the SQL warehouse id (required).
    pub warehouse: Option<String>,
    /// Snowflake: the role.
    pub role: Option<String>,
    /// BigQuery: the jobs' location (`US`, `EU`, a region), when not the project's default.
    pub location: Option<String>,
    /// PostgreSQL: server-side statement timeout.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// Engine threads (embedded only).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Whose credential reaches the warehouse: `service` (the connection's own, for public
    /// embeds), `oauth` or `password` (each user's own, from the vault).
    #[serde(default)]
    pub credential: CredentialMode,
    /// The OAuth authorization server, for `credential = "oauth"`.
    pub oauth: Option<OAuthClientConfig>,
    /// PostgreSQL: let the service login (the URL's user) be privileged — a superuser, a role
    /// with `BYPASSRLS`, or one that may write (INSERT, UPDATE, DELETE, TRUNCATE) a declared
    /// table. `false` (the default): such a login is refused, at start when the warehouse can be
    /// reached (the daemon does not start), otherwise on the first query (queries get
    /// `warehouse_unavailable`). Give sluice a login with SELECT only instead.
    #[serde(default)]
    pub allow_privileged_login: bool,
    /// PostgreSQL: what keeps a user predicate that can raise an error from seeing another
    /// tenant's row. `offset` (the default): every protected table's wrapper ends in `OFFSET 0`,
    /// PostgreSQL's optimization fence. `row_security`: no fence — the database's own row-level
    /// security does it (PostgreSQL evaluates a policy's condition before any predicate of the
    /// query that is not leakproof), which lets the planner push joins and correlations into
    /// the scans. Only with `credential = "passthrough"` (each query runs as the user's role,
    /// subject to the policies, with the tenant in `sluice.tenant`), and checked at start:
    /// every protected table must have row security enabled and at least one policy. The
    /// policies must filter each table to `current_setting('sluice.tenant')` on its tenant
    /// column (sluice cannot prove that): a weaker policy reopens the error oracle for the
    /// rows it lets through.
    #[serde(default)]
    pub tenant_fence: TenantFence,
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

/// What keeps other tenants' rows from a user predicate on PostgreSQL
/// (`connections[].tenant_fence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantFence {
    /// `OFFSET 0` in every protected table's wrapper.
    #[default]
    Offset,
    /// The database's own row-level security (passthrough connections).
    RowSecurity,
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

/// `[[connections.tables.row_filters]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilterConfig {
    /// `<column> = attr.<name>`, `<column> IN attr.<name>`, `<column> = <constant>` or
    /// `<column> IN (<constant>, ...)`.
    pub filter: String,
    /// Only callers in one of these groups are filtered (absent: every caller).
    pub groups: Option<Vec<String>>,
    /// Callers in any of these groups are exempt.
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
    /// Column types (`column = "int4"`, PostgreSQL names), optional and only for PostgreSQL
    /// connections: a correlated or join comparison between two columns is copied inside a
    /// tenant wrapper (where the planner can use an index) only when both columns' types are
    /// declared and their comparison operators are leakproof. They must match the warehouse.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Row filters from the caller's attributes (protected tables only), combined with the
    /// tenant predicate by `AND`: `[[connections.tables.row_filters]]` with `filter =
    /// "region = attr.region"` (or `col IN attr.list`, `col = 'constant'`, `col IN ('a', 'b')`),
    /// optionally `groups` (only these are filtered) and `except` (these are exempt).
    #[serde(default)]
    pub row_filters: Vec<RowFilterConfig>,
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
        if let Some(jwt) = &mut self.auth.jwt {
            for f in [&mut jwt.secret_file, &mut jwt.public_key_file]
                .into_iter()
                .flatten()
            {
                fix(f);
            }
        }
        if let Some(oidc) = &mut self.auth.oidc
            && let Some(f) = &mut oidc.client_secret_file
        {
            fix(f);
        }
        if let Some(v) = &mut self.vault {
            for f in v.key_file.iter_mut().chain(v.previous_key_files.iter_mut()) {
                fix(f);
            }
        }
        for c in &mut self.connections {
            if let Some(o) = &mut c.oauth
                && let Some(f) = &mut o.client_secret_file
            {
                fix(f);
            }
        }
        for c in &mut self.connections {
            for t in &mut c.tables {
                if let Some(p) = &mut t.path {
                    fix(p);
                }
            }
        }
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.jwt.is_none()
            && auth.oidc.is_none()
            && !auth.tickets.enabled
            && !auth.api_keys.enabled
        {
            return Err(invalid(
                "auth",
                "configure at least one method ([auth.jwt], [auth.oidc], tickets or api_keys)",
            ));
        }
        if let Some(jwt) = &auth.jwt {
            let sources = [
                jwt.secret_env.is_some(),
                jwt.secret_file.is_some(),
                jwt.public_key_file.is_some(),
                jwt.jwks_url.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(invalid(
                    "auth.jwt",
                    "set exactly one of secret_env, secret_file, public_key_file and jwks_url",
                ));
            }
            let symmetric = jwt.secret_env.is_some() || jwt.secret_file.is_some();
            if symmetric != (jwt.algorithm == JwtAlgorithm::HS256) {
                return Err(invalid(
                    "auth.jwt",
                    "HS256 takes secret_env or secret_file; RS256, ES256 and EdDSA take \
                     public_key_file or jwks_url",
                ));
            }
            if let Some(url) = &jwt.jwks_url
                && !(url.starts_with("https://") || is_loopback_http(url))
            {
                return Err(invalid(
                    "auth.jwt.jwks_url",
                    "must be https:// (plain http only on a loopback address)",
                ));
            }
            if jwt.issuer.is_empty() || jwt.audience.is_empty() {
                return Err(invalid("auth.jwt", "issuer and audience are required"));
            }
            if jwt.leeway_secs > MAX_LEEWAY_SECS {
                return Err(invalid("auth.jwt.leeway_secs", "at most 300"));
            }
            if jwt.jwks_ttl_secs == 0 {
                return Err(invalid("auth.jwt.jwks_ttl_secs", "must be positive"));
            }
        }
        if let Some(o) = &auth.oidc {
            if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
                return Err(invalid(
                    "auth.oidc",
                    "set exactly one of client_secret_env and client_secret_file",
                ));
            }
            if o.tenant.is_some() == o.tenant_claim.is_some() {
                return Err(invalid(
                    "auth.oidc",
                    "set exactly one of tenant and tenant_claim",
                ));
            }
            for (field, url) in [("issuer", &o.issuer), ("redirect_url", &o.redirect_url)] {
                let ok =
                    url.starts_with("https://") || (o.allow_http && url.starts_with("http://"));
                if !ok {
                    return Err(invalid(
                        format!("auth.oidc.{field}"),
                        "must be https:// (http:// needs allow_http = true)",
                    ));
                }
            }
            if !o.post_login_redirect.starts_with('/') || o.post_login_redirect.starts_with("//") {
                return Err(invalid(
                    "auth.oidc.post_login_redirect",
                    "must be a path on sluice (starting with one /)",
                ));
            }
        }
        let s = &auth.sessions;
        if s.idle_ttl_secs == 0 || s.max_ttl_secs < s.idle_ttl_secs {
            return Err(invalid(
                "auth.sessions",
                "idle_ttl_secs must be positive and at most max_ttl_secs",
            ));
        }
        if s.cookie_same_site == SameSite::None && !s.cookie_secure {
            return Err(invalid(
                "auth.sessions.cookie_same_site",
                "SameSite=None needs cookie_secure = true",
            ));
        }
        if s.cookie_name.is_empty()
            || !s
                .cookie_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "auth.sessions.cookie_name",
                "use letters, digits, _ or -",
            ));
        }
        let t = &auth.tickets;
        if t.ticket_ttl_secs == 0 || t.ticket_ttl_secs > MAX_TICKET_TTL_SECS {
            return Err(invalid("auth.tickets.ticket_ttl_secs", "between 1 and 300"));
        }
        if t.service_token_ttl_secs == 0 || t.service_token_ttl_secs > 24 * 3600 {
            return Err(invalid(
                "auth.tickets.service_token_ttl_secs",
                "between 1 and 86400",
            ));
        }
        let r = &auth.rate_limit;
        if r.window_secs == 0 || r.max_failures_per_addr == 0 || r.max_failures_per_principal == 0 {
            return Err(invalid("auth.rate_limit", "values must be positive"));
        }
        Ok(())
    }

    /// Pure checks: no network, no files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(v) = &self.vault {
            if v.key_env.is_some() == v.key_file.is_some() {
                return Err(invalid("vault", "set exactly one of key_env and key_file"));
            }
            if !(10..=95).contains(&v.refresh_at_percent) {
                return Err(invalid("vault.refresh_at_percent", "between 10 and 95"));
            }
            if v.refresh_check_ms == 0 || v.max_concurrent_refreshes == 0 {
                return Err(invalid(
                    "vault",
                    "refresh_check_ms and max_concurrent_refreshes must be positive",
                ));
            }
        }
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
        if self.server.header_read_timeout_ms == 0 {
            return Err(invalid("server.header_read_timeout_ms", "must be positive"));
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_address == 0 {
            return Err(invalid(
                "server.max_connections",
                "max_connections and max_connections_per_address must be positive",
            ));
        }
        if self.limits.max_result_rows == 0 {
            return Err(invalid("limits.max_result_rows", "must be positive"));
        }
        if let Some(listen) = &self.pgwire.listen {
            listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("pgwire.listen", format!("{listen:?}: {e}")))?;
            let p = &self.pgwire;
            if p.tls_cert_file.is_some() != p.tls_key_file.is_some() {
                return Err(invalid(
                    "pgwire",
                    "set both tls_cert_file and tls_key_file, or neither",
                ));
            }
            if p.requires_tls() && p.tls_cert_file.is_none() {
                return Err(invalid(
                    "pgwire.require_tls",
                    "TLS is required (listen is not a loopback address, or require_tls = true) \
                     but no tls_cert_file/tls_key_file is set",
                ));
            }
        }
        self.validate_auth()?;
        self.server
            .trusted_networks()
            .map_err(|e| invalid("server.trusted_proxies", e))?;
        for (i, o) in self.server.allowed_origins.iter().enumerate() {
            if !valid_origin(o) {
                return Err(invalid(
                    format!("server.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        let attribute_types = self
            .auth
            .attribute_types()
            .map_err(|e| invalid("auth.attributes", e))?;
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
            let endpoint_ok = |e: &String| e.starts_with("https://") || is_loopback_http(e);
            match c.kind {
                ConnectionKind::Snowflake | ConnectionKind::Databricks => {
                    if !c.endpoint.as_ref().is_some_and(endpoint_ok) {
                        return Err(invalid(
                            format!("{field}.endpoint"),
                            "snowflake and databricks connections need an https:// endpoint \
                             (the account or workspace URL)",
                        ));
                    }
                }
                ConnectionKind::Bigquery => {
                    if c.endpoint.as_ref().is_some_and(|e| !endpoint_ok(e)) {
                        return Err(invalid(
                            format!("{field}.endpoint"),
                            "must be an https:// URL",
                        ));
                    }
                    if c.default_catalog.is_none() {
                        return Err(invalid(
                            format!("{field}.default_catalog"),
                            "bigquery connections need default_catalog = \"<project id>\"",
                        ));
                    }
                }
                ConnectionKind::Embedded | ConnectionKind::Postgres => {
                    if c.endpoint.is_some() || c.warehouse.is_some() {
                        return Err(invalid(
                            format!("{field}.endpoint"),
                            "endpoint and warehouse are for REST warehouses",
                        ));
                    }
                }
            }
            if c.kind == ConnectionKind::Databricks && c.warehouse.is_none() {
                return Err(invalid(
                    format!("{field}.warehouse"),
                    "databricks connections need warehouse = \"<SQL warehouse id>\"",
                ));
            }
            if c.role.is_some() && c.kind != ConnectionKind::Snowflake {
                return Err(invalid(
                    format!("{field}.role"),
                    "role is for snowflake connections",
                ));
            }
            if c.allow_privileged_login && c.kind != ConnectionKind::Postgres {
                return Err(invalid(
                    format!("{field}.allow_privileged_login"),
                    "allow_privileged_login is for postgres connections",
                ));
            }
            if c.tenant_fence == TenantFence::RowSecurity
                && (c.kind != ConnectionKind::Postgres
                    || c.credential != CredentialMode::Passthrough
                    || c.allow_privileged_login)
            {
                return Err(invalid(
                    format!("{field}.tenant_fence"),
                    "row_security needs a postgres connection with credential = \"passthrough\" \
                     (queries run as the user's role, under the database's policies) and the \
                     service-login check (not allow_privileged_login)",
                ));
            }
            if c.location.is_some() && c.kind != ConnectionKind::Bigquery {
                return Err(invalid(
                    format!("{field}.location"),
                    "location is for bigquery connections",
                ));
            }
            let fits = match c.credential {
                CredentialMode::Service => true,
                CredentialMode::Passthrough | CredentialMode::Password => {
                    c.kind == ConnectionKind::Postgres
                }
                // The embedded engine takes no credential: oauth there only gates queries.
                CredentialMode::Oauth => c.kind != ConnectionKind::Postgres,
            };
            if !fits {
                return Err(invalid(
                    format!("{field}.credential"),
                    "postgres takes service, password or passthrough; REST warehouses take \
                     service or oauth",
                ));
            }
            if c.credential == CredentialMode::Passthrough && c.kind != ConnectionKind::Postgres {
                return Err(invalid(
                    format!("{field}.credential"),
                    "passthrough is for postgres connections",
                ));
            }
            if matches!(
                c.credential,
                CredentialMode::Oauth | CredentialMode::Password
            ) && self.vault.is_none()
            {
                return Err(invalid(
                    format!("{field}.credential"),
                    "per-user credentials need a [vault]",
                ));
            }
            match (&c.oauth, c.credential) {
                (None, CredentialMode::Oauth) => {
                    return Err(invalid(
                        format!("{field}.oauth"),
                        "credential = \"oauth\" needs [connections.oauth]",
                    ));
                }
                (
                    Some(_),
                    CredentialMode::Service
                    | CredentialMode::Password
                    | CredentialMode::Passthrough,
                ) => {
                    return Err(invalid(
                        format!("{field}.oauth"),
                        "only for credential = \"oauth\"",
                    ));
                }
                (Some(o), CredentialMode::Oauth) => {
                    if o.client_secret_env.is_some() == o.client_secret_file.is_some() {
                        return Err(invalid(
                            format!("{field}.oauth"),
                            "set exactly one of client_secret_env and client_secret_file",
                        ));
                    }
                    let urls = [
                        ("authorize_url", Some(&o.authorize_url)),
                        ("token_url", Some(&o.token_url)),
                        ("revocation_url", o.revocation_url.as_ref()),
                        ("redirect_url", Some(&o.redirect_url)),
                    ];
                    for (name, url) in urls {
                        if let Some(url) = url
                            && !(url.starts_with("https://")
                                || (o.allow_http && url.starts_with("http://")))
                        {
                            return Err(invalid(
                                format!("{field}.oauth.{name}"),
                                "must be https:// (http:// needs allow_http = true)",
                            ));
                        }
                    }
                }
                (None, _) => {}
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
                for (k, f) in t.row_filters.iter().enumerate() {
                    // An empty list would make the filter apply to no one: silently off.
                    if f.groups.as_ref().is_some_and(Vec::is_empty) {
                        return Err(invalid(
                            format!("{tf}.row_filters[{k}].groups"),
                            "an empty list filters no one: leave groups out to filter everyone",
                        ));
                    }
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
            let catalog = catalog_for(c, &attribute_types).map_err(|e| invalid(&field, e))?;
            // A filter on an attribute no JWT can carry would refuse every JWT caller.
            if let Some(jwt) = &self.auth.jwt {
                for (name, _) in catalog.filter_attributes() {
                    if !jwt.claims.attributes.contains(name) {
                        return Err(invalid(
                            field,
                            format!(
                                "a row filter binds the attribute {name:?}, which \
                                 auth.jwt.claims.attributes does not copy from tokens (add it)"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with no path, query or trailing slash.
fn valid_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

/// `http://127.x.x.x`, `http://localhost` or `http://[::1]`, with any port and path.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

pub(crate) fn parse_table_name(name: &str) -> Result<TableName, String> {
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

/// The SQL dialect of a connection kind.
pub fn dialect_of(kind: ConnectionKind) -> Dialect {
    match kind {
        ConnectionKind::Embedded => Dialect::DataFusion,
        ConnectionKind::Postgres => Dialect::Postgres,
        ConnectionKind::Snowflake => Dialect::Snowflake,
        ConnectionKind::Bigquery => Dialect::BigQuery,
        ConnectionKind::Databricks => Dialect::Databricks,
    }
}

/// The policy catalog a connection declares.
pub fn catalog_for(
    c: &ConnectionConfig,
    attributes: &BTreeMap<String, AttributeType>,
) -> Result<Catalog, String> {
    let dialect = dialect_of(c.kind);
    let mut tables = Vec::with_capacity(c.tables.len());
    for t in &c.tables {
        let name = parse_table_name(&t.name)?;
        let mut rule = match (t.access, &t.tenant_column) {
            (AccessKind::Public, _) => TableRule::public(name, t.columns.clone()),
            (AccessKind::Protected, Some(col)) => {
                TableRule::protected(name, col, t.columns.clone())
            }
            (AccessKind::Protected, None) => {
                return Err(format!("{}: protected tables need tenant_column", t.name));
            }
        };
        rule.readers = t.groups.clone();
        rule.column_groups = t.grants.clone();
        if !t.types.is_empty() && dialect != Dialect::Postgres {
            return Err(format!(
                "{}: column types are for PostgreSQL connections only",
                t.name
            ));
        }
        for (col, ty) in &t.types {
            let parsed = sluice_policy::ColumnType::parse(ty).ok_or_else(|| {
                format!(
                    "{}: column {col}: unknown type {ty:?} (use a PostgreSQL name: int4, \
                     bigint, text, varchar(n), date, timestamptz, numeric, ...)",
                    t.name
                )
            })?;
            rule.types.insert(col.clone(), parsed);
        }
        for f in &t.row_filters {
            let mut filter = RowFilter::parse(&f.filter, &|name| attributes.get(name).copied())
                .map_err(|e| format!("{}: row filter {:?}: {e}", t.name, f.filter))?;
            filter.groups = f.groups.clone();
            filter.except = f.except.clone();
            rule.filters.push(filter);
        }
        for (col, m) in &t.masks {
            let kind = match m.mask {
                MaskKindConfig::Hash => MaskKind::Hash,
                MaskKindConfig::Null => MaskKind::Null,
                MaskKindConfig::Last4 => MaskKind::Last4,
                MaskKindConfig::Constant => MaskKind::Constant(m.value.clone().unwrap_or_default()),
            };
            rule.masks.insert(
                col.clone(),
                MaskRule {
                    kind,
                    except: m.except.clone(),
                },
            );
        }
        tables.push(rule);
    }
    let catalog = Catalog::new(
        dialect,
        dialect.default_param_style(),
        c.default_catalog.clone(),
        c.default_schema.clone(),
        tables,
    )
    .map_err(|e| e.to_string())?;
    Ok(match c.tenant_fence {
        TenantFence::Offset => catalog,
        TenantFence::RowSecurity => catalog.relying_on_row_security(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const AUTH: &str =
        "[auth.jwt]\nalgorithm = \"HS256\"\nsecret_env = \"S\"\nissuer = \"i\"\naudience = \"a\"\n";

    fn check(extra: &str) -> Result<(), String> {
        Config::parse(&format!("{AUTH}{extra}"))?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn per_user_credentials_fit_their_warehouse_and_need_a_vault() {
        let pg = |cred: &str| {
            format!(
                "[[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\ncredential = \"{cred}\"\n"
            )
        };
        let vault = "[vault]\nkey_env = \"K\"\n";
        assert!(check(&pg("service")).is_ok());
        assert!(check(&pg("passthrough")).is_ok());
        assert!(check(&format!("{vault}{}", pg("password"))).is_ok());
        // A password needs somewhere safe to live.
        let e = check(&pg("password")).unwrap_err();
        assert!(e.contains("need a [vault]"), "{e}");
        // PostgreSQL takes no OAuth token: never a silent fallback to the service login.
        let e = check(&format!("{vault}{}", pg("oauth"))).unwrap_err();
        assert!(
            e.contains("postgres takes service, password or passthrough"),
            "{e}"
        );
        // Passthrough is PostgreSQL's.
        let sf = "[[connections]]\nid = \"sf\"\nkind = \"snowflake\"\nendpoint = \"https://a.snowflakecomputing.com\"\ncredential = \"passthrough\"\n";
        assert!(check(sf).is_err());
    }

    #[test]
    fn row_security_is_for_passthrough_postgres_connections_with_the_login_check() {
        let pg = "[[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\n";
        let c = Config::parse(&format!("{AUTH}{pg}")).unwrap();
        assert_eq!(c.connections[0].tenant_fence, TenantFence::Offset);
        let rs = "tenant_fence = \"row_security\"\n";
        assert!(check(&format!("{pg}credential = \"passthrough\"\n{rs}")).is_ok());
        for bad in [
            format!("{pg}{rs}"),
            format!("{pg}credential = \"passthrough\"\nallow_privileged_login = true\n{rs}"),
            format!("[[connections]]\nid = \"e\"\nkind = \"embedded\"\n{rs}"),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains("tenant_fence"), "{e}");
        }
        assert!(
            Config::parse(&format!("{AUTH}{pg}tenant_fence = \"none\"\n")).is_err(),
            "an unknown fence parsed"
        );
    }

    #[test]
    fn column_types_are_postgres_names_of_declared_columns() {
        let table = |types: &str| {
            format!(
                "[[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\n\
                 [[connections.tables]]\nname = \"public.t\"\naccess = \"protected\"\n\
                 tenant_column = \"tenant_id\"\ncolumns = [\"id\", \"tenant_id\"]\ntypes = {types}\n"
            )
        };
        assert!(check(&table("{ id = \"bigint\", tenant_id = \"varchar(20)\" }")).is_ok());
        let e = check(&table("{ id = \"integr\" }")).unwrap_err();
        assert!(e.contains("unknown type"), "{e}");
        let e = check(&table("{ missing = \"int4\" }")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn row_filters_name_declared_attributes_that_tokens_carry() {
        let table = |attrs: &str, claims: &str, filter: &str| {
            format!(
                "[auth.attributes]\n{attrs}\n[auth.jwt.claims]\nattributes = {claims}\n\
                 [[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\n\
                 [[connections.tables]]\nname = \"public.t\"\naccess = \"protected\"\n\
                 tenant_column = \"tenant_id\"\ncolumns = [\"id\", \"tenant_id\", \"region\"]\n\
                 [[connections.tables.row_filters]]\nfilter = \"{filter}\"\nexcept = [\"managers\"]\n"
            )
        };
        let ok = table(
            "region = \"text\"\nids = \"integer[]\"",
            "[\"region\", \"ids\"]",
            "region = attr.region",
        );
        assert!(check(&ok).is_ok(), "{:?}", check(&ok));
        let c = Config::parse(&format!("{AUTH}{ok}")).unwrap();
        let catalog = catalog_for(&c.connections[0], &c.auth.attribute_types().unwrap()).unwrap();
        let f = &catalog.tables()[0].filters[0];
        assert_eq!(f.except, vec!["managers".to_string()]);
        assert_eq!(f.attribute(), Some(("region", AttributeType::Text)));
        // A claim copied but not declared is text.
        assert!(check(&table("", "[\"region\"]", "region = attr.region")).is_ok());
        for (bad, why) in [
            // Not copied from tokens: every JWT caller would be refused.
            (
                table("region = \"text\"", "[]", "region = attr.region"),
                "does not copy",
            ),
            // Not declared anywhere.
            (table("", "[]", "region = attr.nope"), "not declared"),
            // A list compared with =, an unknown type, a bad name, a column not declared.
            (
                table("ids = \"integer[]\"", "[\"ids\"]", "id = attr.ids"),
                "compare it with IN",
            ),
            (
                table(
                    "region = \"string\"",
                    "[\"region\"]",
                    "region = attr.region",
                ),
                "unknown type",
            ),
            (
                table("\"a-b\" = \"text\"", "[]", "region = 'x'"),
                "not an attribute name",
            ),
            (
                table("region = \"text\"", "[\"region\"]", "nope = attr.region"),
                "not among the declared columns",
            ),
            (table("", "[]", "region = 'x' OR true"), "unexpected text"),
            (
                format!("{}groups = []\n", table("", "[]", "region = 'x'")),
                "filters no one",
            ),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn allow_privileged_login_is_off_by_default_and_postgres_only() {
        let pg = "[[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\n";
        let c = Config::parse(&format!("{AUTH}{pg}")).unwrap();
        assert!(!c.connections[0].allow_privileged_login);
        let c = Config::parse(&format!("{AUTH}{pg}allow_privileged_login = true\n")).unwrap();
        assert!(c.connections[0].allow_privileged_login);
        assert!(check(&format!("{pg}allow_privileged_login = true\n")).is_ok());
        let emb =
            "[[connections]]\nid = \"e\"\nkind = \"embedded\"\nallow_privileged_login = true\n";
        let e = check(emb).unwrap_err();
        assert!(e.contains("allow_privileged_login"), "{e}");
    }

    #[test]
    fn snowflake_needs_an_https_endpoint_and_only_snowflake_takes_one() {
        let sf = |endpoint: &str| {
            format!("[[connections]]\nid = \"sf\"\nkind = \"snowflake\"\n{endpoint}")
        };
        assert!(check(&sf("endpoint = \"https://a.snowflakecomputing.com\"\n")).is_ok());
        assert!(check(&sf("endpoint = \"http://127.0.0.1:9000\"\n")).is_ok());
        for bad in ["", "endpoint = \"http://a.snowflakecomputing.com\"\n"] {
            let e = check(&sf(bad)).unwrap_err();
            assert!(e.contains("endpoint"), "{e}");
        }
        let pg = "[[connections]]\nid = \"pg\"\nkind = \"postgres\"\nurl_env = \"U\"\nwarehouse = \"W\"\n";
        assert!(check(pg).unwrap_err().contains("for REST warehouses"));
    }

    #[test]
    fn databricks_and_bigquery_need_what_their_apis_need() {
        let dbx =
            |extra: &str| format!("[[connections]]\nid = \"dbx\"\nkind = \"databricks\"\n{extra}");
        let ok = "endpoint = \"https://w.cloud.databricks.com\"\nwarehouse = \"abc\"\n";
        assert!(check(&dbx(ok)).is_ok());
        let e = check(&dbx("endpoint = \"https://w.cloud.databricks.com\"\n")).unwrap_err();
        assert!(e.contains("warehouse"), "{e}");
        assert!(
            check(&dbx("warehouse = \"abc\"\n"))
                .unwrap_err()
                .contains("endpoint")
        );
        assert!(check(&dbx(&format!("{ok}role = \"R\"\n"))).is_err());
        let bq =
            |extra: &str| format!("[[connections]]\nid = \"bq\"\nkind = \"bigquery\"\n{extra}");
        // The public endpoint by default; the project is required.
        assert!(check(&bq("default_catalog = \"p\"\nlocation = \"EU\"\n")).is_ok());
        let e = check(&bq("")).unwrap_err();
        assert!(e.contains("default_catalog"), "{e}");
        let e = check(&bq(
            "default_catalog = \"p\"\nendpoint = \"http://bq.example\"\n",
        ))
        .unwrap_err();
        assert!(e.contains("https"), "{e}");
    }
}
