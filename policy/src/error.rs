//! Policy errors. Every refusal has a stable `code` (shown to clients and recorded in the audit
//! log) and a finer `reason`; messages name the offending construct but never contain data.

/// Why the policy refused a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The SQL did not parse in the connection's dialect.
    #[error("SQL parse error: {0}")]
    Parse(String),
    /// The request held no statement at all.
    #[error("the query is empty")]
    Empty,
    /// More than one statement was sent.
    #[error("exactly one statement per request is allowed; found {0}")]
    MultipleStatements(usize),
    /// A statement kind other than a read-only query.
    #[error("{0} statements are not allowed: only read-only SELECT queries run")]
    StatementNotAllowed(String),
    /// A relation the catalog does not declare (default deny).
    #[error("relation {0} is not declared in the policy; undeclared relations cannot be read")]
    UnknownRelation(String),
    /// The caller's groups may not read this table.
    #[error("table {0} is not granted to your groups")]
    TableNotGranted(String),
    /// The caller's groups may not read this column.
    #[error("column {column} of table {table} is not granted to your groups")]
    ColumnNotGranted {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A function not on the dialect's allow-list.
    #[error("function {0} is not allowed")]
    FunctionNotAllowed(String),
    /// A construct the rewriter does not model (default deny).
    #[error("{0} is not supported by the policy")]
    Unsupported(String),
    /// A caller parameter placeholder that does not match the parameters sent (count, form,
    /// the tenant's), or one in a position the policy cannot bind safely.
    #[error("{0}")]
    Parameter(String),
    /// The query names the tenant's own placeholder, which only sluice binds.
    #[error("{0}")]
    TenantParameter(String),
    /// The tenant value of the principal cannot be used safely.
    #[error("the tenant value of this principal is not acceptable")]
    InvalidTenant,
    /// The query is longer, has more tokens or nests deeper than the policy accepts.
    #[error("the query is too complex: {0}")]
    TooComplex(String),
    /// A row filter of a table read needs an attribute the caller's credential does not carry.
    #[error(
        "table {table} is filtered on the attribute {attribute:?}, which your credential does not \
         carry"
    )]
    AttributeMissing {
        /// The table.
        table: String,
        /// The attribute.
        attribute: String,
    },
    /// The caller carries an attribute a filter needs, of another type than declared.
    #[error("the attribute {attribute:?} of your credential is not a valid {expected} value")]
    AttributeInvalid {
        /// The attribute.
        attribute: String,
        /// Its declared type.
        expected: &'static str,
    },
    /// The verifier refused the rewritten SQL: a rewriter bug became a refusal, not a leak.
    #[error("the rewritten query failed verification: {0}")]
    Verification(String),
}

impl PolicyError {
    /// Stable, client-visible error code.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Parse(_) => "sql_parse_error",
            PolicyError::Parameter(_) => "invalid_parameters",
            PolicyError::TooComplex(_) => "query_too_complex",
            PolicyError::Empty => "empty_query",
            PolicyError::MultipleStatements(_) => "multiple_statements",
            PolicyError::StatementNotAllowed(_) => "statement_not_allowed",
            PolicyError::AttributeMissing { .. } => "attribute_missing",
            PolicyError::AttributeInvalid { .. } => "attribute_invalid",
            PolicyError::UnknownRelation(_)
            | PolicyError::TableNotGranted(_)
            | PolicyError::ColumnNotGranted { .. }
            | PolicyError::FunctionNotAllowed(_)
            | PolicyError::Unsupported(_)
            | PolicyError::InvalidTenant
            | PolicyError::TenantParameter(_)
            | PolicyError::Verification(_) => "policy_denied",
        }
    }

    /// Finer-grained reason, fixed cardinality (for metrics and the audit log).
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Parse(_) => "parse_error",
            PolicyError::Parameter(_) => "parameter",
            PolicyError::TooComplex(_) => "too_complex",
            PolicyError::Empty => "empty",
            PolicyError::MultipleStatements(_) => "multiple_statements",
            PolicyError::StatementNotAllowed(_) => "statement_kind",
            PolicyError::UnknownRelation(_) => "unknown_relation",
            PolicyError::TableNotGranted(_) => "table_not_granted",
            PolicyError::ColumnNotGranted { .. } => "column_not_granted",
            PolicyError::FunctionNotAllowed(_) => "function_not_allowed",
            PolicyError::Unsupported(_) => "unsupported_syntax",
            PolicyError::InvalidTenant => "invalid_tenant",
            PolicyError::TenantParameter(_) => "tenant_parameter",
            PolicyError::AttributeMissing { .. } => "attribute_missing",
            PolicyError::AttributeInvalid { .. } => "attribute_invalid",
            PolicyError::Verification(_) => "verification_failed",
        }
    }
}

/// Errors in the declared catalog (found when the configuration is loaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A name that cannot be used as an identifier.
    #[error("invalid identifier {0:?}: {1}")]
    InvalidIdentifier(String, &'static str),
    /// The same table declared twice.
    #[error("table {0} is declared twice")]
    DuplicateTable(String),
    /// A table without columns.
    #[error("table {0} declares no columns")]
    NoColumns(String),
    /// The tenant column is not among the declared columns.
    #[error("table {0}: tenant column {1:?} is not among its declared columns")]
    TenantColumnNotDeclared(String, String),
    /// A grant or mask names a column that is not declared.
    #[error("table {0}: column {1:?} in a grant or mask is not among its declared columns")]
    UnknownColumn(String, String),
    /// A column declared twice.
    #[error("table {0}: column {1:?} is declared twice")]
    DuplicateColumn(String, String),
    /// A row filter on a public table, or on a column that is not declared.
    #[error("table {0}: row filter {1:?}: {2}")]
    BadFilter(String, String, &'static str),
}
