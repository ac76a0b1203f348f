//! SQL dialects: how each warehouse parses, folds identifiers, quotes, and binds parameters.

use sqlparser::ast::Ident;
use sqlparser::dialect::{
    BigQueryDialect, DatabricksDialect, Dialect as SqlparserDialect, PostgreSqlDialect,
    SnowflakeDialect,
};

/// The SQL dialect of a connection's warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL: unquoted identifiers fold to lower case.
    Postgres,
    /// The embedded DataFusion engine, configured with the PostgreSQL parser dialect:
    /// unquoted identifiers fold to lower case.
    DataFusion,
    /// Snowflake: unquoted identifiers fold to upper case.
    Snowflake,
    /// BigQuery: dataset and table names are case-sensitive, quoted with backticks.
    BigQuery,
    /// Databricks: identifiers are case-insensitive, quoted with backticks.
    Databricks,
}

/// How the tenant value travels to the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamStyle {
    /// `$1` (PostgreSQL, DataFusion).
    DollarNumbered,
    /// `:1` positional bindings (Snowflake SQL API).
    ColonNumbered,
    /// `@tenant` named parameters (BigQuery).
    AtNamed,
    /// `:tenant` named parameters (Databricks).
    ColonNamed,
    /// No bind parameters: a string literal built through the AST from a validated value.
    InlineLiteral,
}

/// Name of the tenant parameter for named parameter styles.
pub const TENANT_PARAM_NAME: &str = "sluice_tenant";

impl Dialect {
    /// The sqlparser dialect used to parse (and therefore to verify) this warehouse's SQL.
    pub fn parser_dialect(self) -> Box<dyn SqlparserDialect> {
        match self {
            Dialect::Postgres | Dialect::DataFusion => Box::new(PostgreSqlDialect {}),
            Dialect::Snowflake => Box::new(SnowflakeDialect {}),
            Dialect::BigQuery => Box::new(BigQueryDialect {}),
            Dialect::Databricks => Box::new(DatabricksDialect {}),
        }
    }

    /// The quote character for identifiers sluice emits.
    pub fn quote(self) -> char {
        match self {
            Dialect::Postgres | Dialect::DataFusion | Dialect::Snowflake => '"',
            Dialect::BigQuery | Dialect::Databricks => '`',
        }
    }

    /// The name the warehouse resolves `ident` to, in the form used for comparison.
    /// Declared names are stored in this same form (see [`Dialect::normalize_declared`]).
    /// PostgreSQL (in UTF-8 databases) and Snowflake fold unquoted names in ASCII only: the
    /// Kelvin sign stays itself, it does not become `k`. Databricks compares names the way
    /// Java's `toLowerCase` does (Unicode).
    pub fn normalize(self, ident: &Ident) -> String {
        match (self, ident.quote_style) {
            (Dialect::Postgres | Dialect::DataFusion, None) => ident.value.to_ascii_lowercase(),
            (Dialect::Snowflake, None) => ident.value.to_ascii_uppercase(),
            (Dialect::Databricks, _) => ident.value.to_lowercase(),
            _ => ident.value.clone(),
        }
    }

    /// The comparison form of a name declared in the configuration, which is written exactly as
    /// the warehouse stores it.
    pub fn normalize_declared(self, name: &str) -> String {
        match self {
            Dialect::Databricks => name.to_lowercase(),
            _ => name.to_string(),
        }
    }

    /// The default parameter style for this dialect.
    pub fn default_param_style(self) -> ParamStyle {
        match self {
            Dialect::Postgres | Dialect::DataFusion => ParamStyle::DollarNumbered,
            Dialect::Snowflake => ParamStyle::ColonNumbered,
            Dialect::BigQuery => ParamStyle::AtNamed,
            Dialect::Databricks => ParamStyle::ColonNamed,
        }
    }
}

/// Columns the warehouse adds to every table (PostgreSQL's system columns, BigQuery's and
/// Databricks' pseudo-columns, Snowflake's metadata columns): never readable through sluice,
/// whatever the table.
pub(crate) fn is_system_column(d: Dialect, normalized: &str) -> bool {
    match d {
        Dialect::Postgres | Dialect::DataFusion => {
            ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"].contains(&normalized)
        }
        Dialect::Snowflake => normalized.to_ascii_uppercase().starts_with("METADATA$"),
        Dialect::BigQuery => {
            let n = normalized.to_ascii_uppercase();
            n.starts_with("_PARTITION") || n == "_TABLE_SUFFIX" || n == "_FILE_NAME"
        }
        Dialect::Databricks => normalized.eq_ignore_ascii_case("_metadata"),
    }
}
