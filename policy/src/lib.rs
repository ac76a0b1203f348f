//! sluice-policy: parse a query in its warehouse's dialect, refuse what is not allowed, rewrite
//! every protected table into a tenant-filtered derived table, and verify the result.
//!
//! Pure: no I/O, no async, no clock. One entry point, [`rewrite`].

mod catalog;
mod dialect;
mod error;
mod functions;
mod rewrite;
mod verify;

use sqlparser::ast::{Expr, Value};
use sqlparser::parser::Parser;

pub use catalog::{Access, Catalog, TableName, TableRule};
pub use dialect::{Dialect, ParamStyle, TENANT_PARAM_NAME};
pub use error::{CatalogError, PolicyError};

/// Deepest nesting the parser accepts; deeper input is refused, never a stack overflow.
pub const MAX_PARSE_DEPTH: usize = 64;
/// Longest tenant value accepted.
pub const MAX_TENANT_LEN: usize = 256;

/// A bind parameter sluice adds to a rewritten query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindParam {
    /// The parameter's name for named styles (`sluice_tenant`), `None` for positional ones.
    pub name: Option<String>,
    /// Its value.
    pub value: String,
}

/// What a query reads, after name resolution: recorded in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccessManifest {
    /// The declared tables the query reads.
    pub tables: Vec<TableName>,
}

/// The output of the policy: the SQL to send, its parameters, and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenQuery {
    /// The rewritten SQL, serialized from the AST in the warehouse's dialect.
    pub sql: String,
    /// Bind parameters (the tenant), empty for inline literals.
    pub params: Vec<BindParam>,
    /// The relations read.
    pub manifest: AccessManifest,
}

/// How the tenant appears in rewritten SQL.
pub(crate) enum TenantBinding {
    Placeholder { text: String, param: BindParam },
    Literal(String),
}

fn check_tenant(tenant: &str, style: ParamStyle) -> Result<(), PolicyError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && !tenant.chars().any(char::is_control)
        && (style != ParamStyle::InlineLiteral
            || tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:@ ".contains(c)));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::InvalidTenant)
    }
}

/// Parses `sql` in the catalog's dialect, refuses anything outside the allow-lists, rewrites each
/// protected table to carry `tenant`, and verifies the result before returning it.
pub fn rewrite(sql: &str, catalog: &Catalog, tenant: &str) -> Result<RewrittenQuery, PolicyError> {
    let style = catalog.param_style();
    check_tenant(tenant, style)?;
    let dialect = catalog.dialect().parser_dialect();
    let mut statements = Parser::new(&*dialect)
        .with_recursion_limit(MAX_PARSE_DEPTH)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    let mut statement = match statements.len() {
        0 => return Err(PolicyError::Empty),
        1 => statements.remove(0),
        n => return Err(PolicyError::MultipleStatements(n)),
    };

    let binding = match style.placeholder() {
        Some(text) => TenantBinding::Placeholder {
            param: BindParam {
                name: matches!(style, ParamStyle::AtNamed | ParamStyle::ColonNamed)
                    .then(|| TENANT_PARAM_NAME.to_string()),
                value: tenant.to_string(),
            },
            text,
        },
        None => TenantBinding::Literal(tenant.to_string()),
    };
    let tenant_expr = match &binding {
        TenantBinding::Placeholder { text, .. } => Expr::value(Value::Placeholder(text.clone())),
        TenantBinding::Literal(t) => Expr::value(Value::SingleQuotedString(t.clone())),
    };

    let mut rewriter = rewrite::Rewriter::new(catalog, tenant_expr);
    rewriter.statement(&mut statement)?;
    let sql = statement.to_string();
    verify::verify(&sql, catalog, &binding)?;

    let params = match binding {
        TenantBinding::Placeholder { param, .. } if sql_uses_params(&rewriter) => vec![param],
        _ => vec![],
    };
    Ok(RewrittenQuery {
        sql,
        params,
        manifest: AccessManifest {
            tables: rewriter.tables.into_iter().collect(),
        },
    })
}

/// Whether any protected table was wrapped (and so the tenant parameter appears).
fn sql_uses_params(rewriter: &rewrite::Rewriter<'_>) -> bool {
    rewriter.wrapped > 0
}
