//! sluice-connectors: the [`Connector`] trait and one module per warehouse.
//!
//! Connectors know warehouses, not who may see what: they receive SQL that the policy already
//! rewrote and verified, with its bind parameters, and stream Arrow record batches back.

pub mod bigquery;
mod cancel;
pub mod databricks;
pub mod embedded;
mod error;
pub mod pool;
pub mod postgres;
pub mod snowflake;
mod text;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;

pub use error::ConnectorError;

/// The kind of warehouse behind a connector (and so its SQL dialect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarehouseKind {
    /// The embedded DataFusion engine over local files (PostgreSQL parser dialect).
    Embedded,
    /// PostgreSQL.
    Postgres,
    /// Snowflake (SQL API v2).
    Snowflake,
    /// BigQuery.
    BigQuery,
    /// Databricks SQL (Statement Execution API).
    Databricks,
}

/// Adapts a channel of batches into the stream a [`QueryStream`] carries.
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    use futures::StreamExt;
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
        .fuse()
        .boxed()
}

/// The HTTP client of a REST connector: one exchange may take `timeout`.
pub(crate) fn rest_client(timeout: std::time::Duration) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| ConnectorError::Config(e.to_string()))
}

/// The user's OAuth token for a REST warehouse, or why there is none.
pub(crate) fn bearer<'a>(
    request: &QueryRequest<'a>,
    warehouse: &str,
) -> Result<&'a str, ConnectorError> {
    match request.credential {
        Some(UserCredential::Bearer(token)) => Ok(token),
        _ => Err(ConnectorError::Config(format!(
            "a {warehouse} connection needs an OAuth token (credential = \"oauth\")"
        ))),
    }
}

/// Each named parameter as the warehouse's JSON (`shape(name, value)`); positional ones are
/// refused (the policy binds the tenant by name for these warehouses).
pub(crate) fn named_params(
    request: &QueryRequest<'_>,
    warehouse: &str,
    shape: impl Fn(&str, &ParamValue) -> serde_json::Value,
) -> Result<Vec<serde_json::Value>, ConnectorError> {
    request
        .params
        .iter()
        .map(|p| {
            if p.value.is_list() {
                return Err(ConnectorError::Plan(format!(
                    "{warehouse} takes no list parameters"
                )));
            }
            p.name
                .as_deref()
                .map(|name| shape(name, &p.value))
                .ok_or_else(|| {
                    ConnectorError::Plan(format!("{warehouse} takes named parameters only"))
                })
        })
        .collect()
}

/// One bind parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name for named styles; `None` for positional (`$1` is the first).
    pub name: Option<String>,
    /// Its value; the connector converts it to the type the warehouse expects (a value that
    /// does not convert is refused with [`ConnectorError::Parameter`]).
    pub value: ParamValue,
}

/// A bind parameter's value: the scalars a caller can send.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite floating-point number.
    Float(f64),
    /// Text (also how dates, timestamps, decimals and UUIDs are sent).
    Text(String),
    /// The session's tenant, bound strictly so that the mapping from tenant ids to the rows
    /// they select stays one-to-one: to text types as it is, or to integer types only when
    /// written canonically (`5`, never ` 5` or `05`).
    Tenant(String),
    /// A text attribute of the caller a row filter binds: as strictly as the tenant.
    Attribute(String),
    /// A list attribute of text values, bound as one array (PostgreSQL), each element as
    /// strictly as the tenant.
    TextList(Vec<String>),
    /// A list attribute of integers, bound as one array (PostgreSQL).
    IntList(Vec<i64>),
}

impl ParamValue {
    /// What kind of value it is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamValue::Null => "null",
            ParamValue::Bool(_) => "a boolean",
            ParamValue::Int(_) => "an integer",
            ParamValue::Float(_) => "a number",
            ParamValue::Text(_) => "text",
            ParamValue::Tenant(_) => "the tenant",
            ParamValue::Attribute(_) => "an attribute",
            ParamValue::TextList(_) => "a text list",
            ParamValue::IntList(_) => "an integer list",
        }
    }

    /// The value as text (`None` for `NULL`): what warehouses whose APIs take string-typed
    /// parameters are sent.
    pub fn text(&self) -> Option<String> {
        match self {
            ParamValue::Null => None,
            ParamValue::Bool(b) => Some(b.to_string()),
            ParamValue::Int(i) => Some(i.to_string()),
            ParamValue::Float(f) => Some(format!("{f:?}")),
            ParamValue::Text(s) | ParamValue::Tenant(s) | ParamValue::Attribute(s) => {
                Some(s.clone())
            }
            ParamValue::TextList(l) => Some(serde_json::json!(l).to_string()),
            ParamValue::IntList(l) => Some(serde_json::json!(l).to_string()),
        }
    }

    /// Whether it is a list (bound as an array: PostgreSQL only).
    pub fn is_list(&self) -> bool {
        matches!(self, ParamValue::TextList(_) | ParamValue::IntList(_))
    }
}

/// A query to run: already rewritten and verified by the policy.
#[derive(Debug, Clone, Copy)]
pub struct QueryRequest<'a> {
    /// SQL in the warehouse's dialect.
    pub sql: &'a str,
    /// Bind parameters referenced by `sql`.
    pub params: &'a [Param],
    /// The request id, passed to the warehouse where it can tag queries.
    pub request_id: &'a str,
    /// The calling user's own credential (from the vault) when the connection uses per-user
    /// credentials; `None`: the connection's own configured credential.
    pub credential: Option<UserCredential<'a>>,
}

/// A user's own warehouse credential, decrypted for the duration of one call.
#[derive(Clone, Copy)]
pub enum UserCredential<'a> {
    /// An OAuth access token (REST warehouses send it as a bearer token).
    Bearer(&'a str),
    /// A database user and password (PostgreSQL logs in as that user).
    Password {
        /// Database user.
        user: &'a str,
        /// Its password.
        password: &'a str,
    },
    /// The connection's service login acts as the user's role, with the tenant passed to the
    /// warehouse's row-level security (PostgreSQL passthrough).
    Passthrough {
        /// The user's database role.
        role: &'a str,
        /// The caller's tenant.
        tenant: &'a str,
    },
}

impl std::fmt::Debug for UserCredential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserCredential::Bearer(_) => f.write_str("Bearer(..)"),
            UserCredential::Password { user, .. } => write!(f, "Password({user}, ..)"),
            UserCredential::Passthrough { role, tenant } => {
                write!(f, "Passthrough({role}, {tenant})")
            }
        }
    }
}

/// A running query's result: its schema and a stream of batches. Dropping the stream cancels
/// the query on the warehouse.
pub struct QueryStream {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The batches, in order.
    pub batches: BoxStream<'static, Result<RecordBatch, ConnectorError>>,
    /// The warehouse's own id for this query, when it has one (recorded in the audit log).
    pub warehouse_query_id: Option<String>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .field("warehouse_query_id", &self.warehouse_query_id)
            .finish_non_exhaustive()
    }
}

/// What a statement takes and returns, found without running it.
#[derive(Debug, Clone)]
pub struct Described {
    /// The PostgreSQL type OID the warehouse gives each bind parameter, in order.
    pub param_oids: Vec<u32>,
    /// The schema of its answer.
    pub schema: SchemaRef,
}

/// A warehouse. Small on purpose: execute a query and say what kind of warehouse this is.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The kind of warehouse, which fixes the SQL dialect and parameter style.
    fn kind(&self) -> WarehouseKind;

    /// Runs a query, returning once the schema is known and the first batch can be awaited.
    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError>;

    /// Plans a query without running it: its parameters' types and its answer's schema
    /// (`None`: this warehouse cannot say without running it).
    async fn describe(
        &self,
        _request: QueryRequest<'_>,
    ) -> Result<Option<Described>, ConnectorError> {
        Ok(None)
    }
}
