//! sluice-policy: parse a query in its warehouse's dialect, refuse what is not allowed, rewrite
//! every protected table into a tenant-filtered derived table, and verify the result.
//!
//! Pure: no I/O, no async, no clock. One entry point, [`rewrite`].

mod cache;
mod catalog;
mod dialect;
pub mod emit;
mod error;
mod filter;
mod functions;
mod leakproof;
mod limits;
mod mask;
mod metered;
mod params;
mod pgverify;
mod print;
mod pushdown;
mod rewrite;
mod verify;

use std::collections::BTreeSet;

use sqlparser::ast::{Expr, LimitClause, Query, Statement, Value};

pub use cache::{
    CacheStats, DEFAULT_REWRITE_CACHE_BYTES, DEFAULT_REWRITE_CACHE_ENTRIES, RewriteCache,
};
pub use catalog::{Access, Catalog, ColumnView, MaskKind, MaskRule, TableName, TableRule};
pub use dialect::{Dialect, ParamStyle, TENANT_PARAM_NAME};
pub use error::{CatalogError, PolicyError};
pub use filter::{
    AppliedFilter, AttributeType, AttributeValue, Attributes, BoundValue, FilterLiteral,
    FilterOperand, MAX_ATTRIBUTE_ITEMS, MAX_ATTRIBUTE_TEXT, NO_ATTRIBUTES, ParamSource, RowFilter,
    valid_attribute_name,
};
pub use leakproof::ColumnType;
pub use limits::{
    MAX_DEPTH_BOUND, MAX_SQL_BYTES, MAX_TOKENS, POLICY_STACK_BYTES, check_input, parse_statements,
    parses_on_this_thread, with_stack,
};

/// Deepest nesting the parser accepts; deeper input is refused, never a stack overflow.
pub const MAX_PARSE_DEPTH: usize = 64;
/// Longest tenant value accepted.
pub const MAX_TENANT_LEN: usize = 256;

/// A bind parameter sluice adds to a rewritten query: the tenant's, or a row filter's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindParam {
    /// The parameter's name for named styles (`sluice_tenant`, `sluice_a1`), `None` for
    /// positional ones.
    pub name: Option<String>,
    /// Where its value comes from.
    pub source: ParamSource,
    /// Its value.
    pub value: BoundValue,
}

/// What a query reads, after name resolution: recorded in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccessManifest {
    /// The declared tables the query reads.
    pub tables: Vec<TableName>,
    /// The columns it reads, as `table.column` (fully qualified table name). An
    /// over-approximation: a column named anywhere in the query, or covered by `*` or a
    /// whole-row reference, is listed; a column read is never missing.
    pub columns: Vec<String>,
}

/// Who is asking, as the policy needs it. Every field comes from a verified credential.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The tenant bound into every protected table read.
    pub tenant: &'a str,
    /// The caller's groups (table access, column grants, masks).
    pub groups: &'a [String],
    /// Row limit on the outermost query, from the caller's groups.
    pub row_limit: Option<u64>,
    /// The caller's verified attributes, which row filters bind ([`NO_ATTRIBUTES`]: none).
    pub attributes: &'a Attributes,
}

/// The output of the policy: the SQL to send, its parameters, and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenQuery {
    /// The rewritten SQL, serialized from the AST in the warehouse's dialect.
    pub sql: String,
    /// Bind parameters (the tenant, then the row filters' attributes), empty for inline
    /// literals.
    pub params: Vec<BindParam>,
    /// The relations read.
    pub manifest: AccessManifest,
    /// The row filters applied, one per table and filter.
    pub filters: Vec<AppliedFilter>,
}

/// How the tenant appears in rewritten SQL, beside the caller's own parameters.
pub(crate) enum TenantBinding {
    Placeholder {
        text: String,
        param: BindParam,
        caller: params::CallerParams,
        /// The row filters' attribute placeholders (filled in by the rewrite).
        attrs: filter::AttrBinding,
    },
    Literal(String),
}

impl TenantBinding {
    /// The parameter's text in the SQL, if the tenant is bound as a parameter.
    pub(crate) fn placeholder(&self) -> Option<&str> {
        match self {
            TenantBinding::Placeholder { text, .. } => Some(text),
            TenantBinding::Literal(_) => None,
        }
    }

    /// The caller's parameters (none when the tenant is an inline literal).
    pub(crate) fn caller(&self) -> params::CallerParams {
        match self {
            TenantBinding::Placeholder { caller, .. } => *caller,
            TenantBinding::Literal(_) => params::CallerParams {
                count: 0,
                style: ParamStyle::InlineLiteral,
            },
        }
    }

    /// The row filters' attribute placeholders.
    pub(crate) fn attrs(&self) -> Option<&filter::AttrBinding> {
        match self {
            TenantBinding::Placeholder { attrs, .. } => Some(attrs),
            TenantBinding::Literal(_) => None,
        }
    }

    /// Whether `text` is a placeholder the rewritten SQL may carry: the tenant's, a row
    /// filter's, or a caller parameter sent.
    pub(crate) fn allows(&self, text: &str) -> bool {
        self.placeholder() == Some(text)
            || self.caller().index(text).is_some()
            || self.attrs().is_some_and(|a| a.allows(text))
    }
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
/// protected table to carry the caller's tenant and only their granted (masked) columns, caps
/// the rows, prints the result canonically and verifies that text before returning it.
///
/// Work is bounded before anything recursive runs ([`check_input`]: length, tokens, a depth
/// bound), and the recursive passes run where the deepest admitted tree cannot overflow the
/// stack ([`with_stack`]), whatever thread calls this.
pub fn rewrite(
    sql: &str,
    catalog: &Catalog,
    caller: &Caller<'_>,
) -> Result<RewrittenQuery, PolicyError> {
    rewrite_with_params(sql, catalog, caller, 0)
}

/// [`rewrite`] of a query that carries `params` caller parameters, positional, in the
/// dialect's placeholder syntax (`$1` … in PostgreSQL; see the `params` module for each
/// dialect). The query must use each of them; the tenant's placeholder follows them (numbered
/// styles) or keeps its reserved name, and the caller can never write it. The returned
/// [`RewrittenQuery::params`] holds the tenant only: the caller's values are bound by the
/// caller of this function, under [`caller_param_name`]s.
pub fn rewrite_with_params(
    sql: &str,
    catalog: &Catalog,
    caller: &Caller<'_>,
    params: usize,
) -> Result<RewrittenQuery, PolicyError> {
    check_tenant(caller.tenant, catalog.param_style())?;
    let tokens = limits::scan(sql, catalog.dialect())?;
    with_stack(|| rewrite_bounded(sql, tokens, catalog, caller, params))
}

/// The name a named parameter style gives caller parameter `i` (1-based: `p1`, `p2` …), or
/// `None` for positional styles.
pub fn caller_param_name(style: ParamStyle, i: usize) -> Option<String> {
    matches!(style, ParamStyle::AtNamed | ParamStyle::ColonNamed).then(|| format!("p{i}"))
}

fn rewrite_bounded(
    sql: &str,
    tokens: usize,
    catalog: &Catalog,
    caller: &Caller<'_>,
    params: usize,
) -> Result<RewrittenQuery, PolicyError> {
    let style = catalog.param_style();
    let dialect = catalog.dialect().parser_dialect();
    let mut statements = limits::parse_metered(sql, dialect, tokens, MAX_PARSE_DEPTH)?;
    let mut statement = match statements.len() {
        0 => return Err(PolicyError::Empty),
        1 => statements.remove(0),
        n => return Err(PolicyError::MultipleStatements(n)),
    };

    let caller_params = params::CallerParams {
        count: params,
        style,
    };
    let mut binding = match caller_params.tenant() {
        Some(text) => TenantBinding::Placeholder {
            param: BindParam {
                name: matches!(style, ParamStyle::AtNamed | ParamStyle::ColonNamed)
                    .then(|| TENANT_PARAM_NAME.to_string()),
                source: ParamSource::Tenant,
                value: BoundValue::Tenant(caller.tenant.to_string()),
            },
            text,
            caller: caller_params,
            // Attribute placeholders follow the caller's and the tenant's.
            attrs: filter::AttrBinding::starting_at(params + 2),
        },
        None if params > 0 => {
            return Err(PolicyError::Parameter(
                "this connection binds the tenant inline and takes no parameters".into(),
            ));
        }
        None => TenantBinding::Literal(caller.tenant.to_string()),
    };
    let tenant_expr = match &binding {
        // BigQuery's parser reads `@name` as an identifier; emit it in the form it re-parses to.
        TenantBinding::Placeholder { text, .. } if style == ParamStyle::AtNamed => {
            Expr::Identifier(sqlparser::ast::Ident::new(text.clone()))
        }
        TenantBinding::Placeholder { text, .. } => Expr::value(Value::Placeholder(text.clone())),
        TenantBinding::Literal(t) => Expr::value(Value::SingleQuotedString(t.clone())),
    };

    let mut rewriter =
        rewrite::Rewriter::new(catalog, caller, tenant_expr, binding.caller(), &statement);
    rewriter.statement(&mut statement)?;
    if let TenantBinding::Placeholder { attrs, .. } = &mut binding {
        *attrs = std::mem::take(&mut rewriter.attrs);
    }
    binding.caller().all_used(&rewriter.params_used)?;
    check_column_grants(&rewriter, catalog, caller.groups)?;
    if let (Some(limit), Statement::Query(q)) = (caller.row_limit, &mut statement) {
        apply_row_limit(q, limit)?;
    }
    let sql = print::statement(&statement, catalog.dialect(), &binding)?;
    drop(statement);
    verify::verify(&sql, catalog, &binding, caller)?;

    let columns = manifest_columns(&rewriter, catalog, caller.groups);
    let params = match binding {
        TenantBinding::Placeholder { param, attrs, .. } if rewriter.wrapped > 0 => {
            let mut all = vec![param];
            all.extend(attrs.params(style));
            all
        }
        _ => vec![],
    };
    Ok(RewrittenQuery {
        sql,
        params,
        manifest: AccessManifest {
            tables: rewriter.tables.into_iter().collect(),
            columns,
        },
        filters: rewriter.applied,
    })
}

/// Refuses a query that names a column the caller may not see, naming it. (The wrapper exposes
/// only granted columns anyway, so this is for a clear error, not the guarantee.) A name that
/// is also a visible column of another table read, or defined by the query itself, is allowed.
fn check_column_grants(
    rw: &rewrite::Rewriter<'_>,
    catalog: &Catalog,
    groups: &[String],
) -> Result<(), PolicyError> {
    let d = catalog.dialect();
    let mut visible = BTreeSet::new();
    for (_, rule) in &rw.uses {
        for c in rule.view(groups) {
            visible.insert(d.normalize_declared(c.name));
        }
    }
    for (_, rule) in &rw.uses {
        let view: Vec<&str> = rule.view(groups).iter().map(|c| c.name).collect();
        for col in rule.columns.iter().filter(|c| !view.contains(&c.as_str())) {
            let n = d.normalize_declared(col);
            if rw.referenced.contains(&n) && !visible.contains(&n) && !rw.aliases.contains(&n) {
                return Err(PolicyError::ColumnNotGranted {
                    table: rule.name.to_string(),
                    column: col.clone(),
                });
            }
        }
    }
    Ok(())
}

fn manifest_columns(
    rw: &rewrite::Rewriter<'_>,
    catalog: &Catalog,
    groups: &[String],
) -> Vec<String> {
    let d = catalog.dialect();
    let mut out = BTreeSet::new();
    for (alias, rule) in &rw.uses {
        let whole = rw.wildcard || rw.referenced.contains(alias);
        for c in rule.view(groups) {
            if whole || rw.referenced.contains(&d.normalize_declared(c.name)) {
                out.insert(format!("{}.{}", rule.name, c.name));
            }
        }
    }
    out.into_iter().collect()
}

/// Caps the outermost query at `limit` rows: adds `LIMIT`, or lowers a larger literal one. A
/// computed limit under a row limit is refused.
fn apply_row_limit(q: &mut Query, limit: u64) -> Result<(), PolicyError> {
    let cap = || Expr::value(rewrite::number(&limit.to_string()));
    let computed =
        || PolicyError::Unsupported("a computed LIMIT or FETCH count under a row limit".into());
    // A parameter's value is not known here, so the cap cannot be checked against it.
    let param_count = |e: &Expr| {
        matches!(e, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)))
            || matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.starts_with('@'))
    };
    let counted = |e: Option<&Expr>| match e {
        Some(e) if param_count(e) => PolicyError::Parameter(
            "a parameter cannot be the LIMIT or FETCH count of a query under a row limit".into(),
        ),
        _ => computed(),
    };
    if let Some(fetch) = &mut q.fetch {
        if fetch.with_ties {
            // Every row tying with the last one counts: no number of rows is capped.
            return Err(PolicyError::Unsupported(
                "FETCH ... WITH TIES under a row limit".into(),
            ));
        }
        match fetch.quantity.as_ref().map(literal_u64) {
            Some(Some(n)) if n <= limit && !fetch.percent => {}
            Some(None) => return Err(counted(fetch.quantity.as_ref())),
            _ => {
                fetch.quantity = Some(cap());
                fetch.percent = false;
            }
        }
        return Ok(());
    }
    match &mut q.limit_clause {
        None => {
            q.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(cap()),
                offset: None,
                limit_by: vec![],
            });
        }
        Some(LimitClause::LimitOffset { limit: l, .. }) => match l.as_ref().map(literal_u64) {
            Some(Some(n)) if n <= limit => {}
            Some(None) => return Err(counted(l.as_ref())),
            _ => *l = Some(cap()),
        },
        Some(LimitClause::OffsetCommaLimit { limit: l, .. }) => match literal_u64(l) {
            Some(n) if n <= limit => {}
            Some(_) => *l = cap(),
            None => return Err(counted(Some(l))),
        },
    }
    Ok(())
}

/// The value of a non-negative integer literal.
pub(crate) fn literal_u64(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The row cap of the outermost query, as the verifier reads it back.
pub(crate) fn outer_limit(q: &Query) -> Option<u64> {
    if let Some(f) = &q.fetch {
        return if f.percent || f.with_ties {
            None
        } else {
            f.quantity.as_ref().and_then(literal_u64)
        };
    }
    match &q.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(l), .. }) => literal_u64(l),
        Some(LimitClause::OffsetCommaLimit { limit, .. }) => literal_u64(limit),
        _ => None,
    }
}

/// `sql` with every literal replaced by `?`, for audit logs that must not keep the values a user
/// typed. SQL that does not parse is not kept at all.
pub fn redact_literals(sql: &str, dialect: Dialect) -> String {
    let Ok(tokens) = limits::scan(sql, dialect) else {
        return "<SQL over the policy's limits: redacted>".to_string();
    };
    with_stack(|| redact_bounded(sql, tokens, dialect))
}

fn redact_bounded(sql: &str, tokens: usize, dialect: Dialect) -> String {
    use sqlparser::ast::{VisitMut, VisitorMut};
    struct Redact;
    impl VisitorMut for Redact {
        type Break = ();
        fn pre_visit_value(
            &mut self,
            v: &mut sqlparser::ast::ValueWithSpan,
        ) -> std::ops::ControlFlow<()> {
            if !matches!(v.value, Value::Placeholder(_)) {
                v.value = Value::Placeholder("?".into());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    match limits::parse_metered(sql, dialect.parser_dialect(), tokens, MAX_PARSE_DEPTH) {
        Ok(mut statements) => {
            let _ = statements.visit(&mut Redact);
            statements
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        }
        Err(_) => "<SQL that does not parse: redacted>".to_string(),
    }
}
