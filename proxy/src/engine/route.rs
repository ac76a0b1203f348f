//! Routing: where a query goes. With a `"connection"`, there; without one among several
//! connections, tables are named `<connection>.<schema>.<table>`: if every table lives in one
//! connection the query goes to that warehouse whole, in its dialect, with the connection part
//! removed ([`Route::Single`]); otherwise to the federated workspace ([`Route::Federated`]).
//! Undeclared tables are refused here (default-deny).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::sql::sqlparser;
use sluice_policy::{Dialect, TableRule};

use crate::engine::connection::Connection;
use crate::engine::policy::Policy;
use crate::error::Error;

/// Connections by id.
pub type Connections = BTreeMap<String, Arc<Connection>>;

/// The connection a query names, or the only one.
pub(crate) fn named<'a>(
    connections: &'a Connections,
    id: Option<&str>,
) -> Result<&'a Arc<Connection>, Error> {
    match id {
        Some(id) => connections.get(id).ok_or_else(|| {
            Error::request(
                "unknown_connection",
                format!("no connection named {id:?} is declared"),
            )
        }),
        None if connections.len() == 1 => connections.values().next().ok_or_else(Error::internal),
        None => Err(Error::request(
            "connection_required",
            "several connections are declared: name one with \"connection\"",
        )),
    }
}

/// Where a query without a `"connection"` goes.
pub(crate) enum Route {
    /// Every table lives in this connection: the query, its connection part removed.
    Single {
        /// The connection.
        conn: Arc<Connection>,
        /// The query in the connection's own naming.
        sql: String,
    },
    /// Tables of several connections: the workspace plans it.
    Federated(Vec<SourceRef>),
}

/// A declared table named by a federated query.
#[derive(Clone)]
pub(crate) struct SourceRef {
    pub(crate) conn: Arc<Connection>,
    pub(crate) rule: TableRule,
    /// The schema and table names as the workspace resolves them (the query's own spelling,
    /// folded as DataFusion folds unquoted identifiers).
    pub(crate) schema: String,
    pub(crate) table: String,
}

impl SourceRef {
    /// Its connection.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// `<connection>.<declared table>`, as audit records name it.
    pub(crate) fn audit_name(&self) -> String {
        format!("{}.{}", self.conn.id, self.rule.name)
    }
}

fn unknown_table(name: &str) -> Error {
    Error::from(sluice_policy::PolicyError::UnknownRelation(
        name.to_string(),
    ))
}

fn naming() -> Error {
    Error::request(
        "connection_required",
        "several connections are declared: name one with \"connection\", or name every table \
         as <connection>.<schema>.<table>",
    )
}

/// DataFusion's folding of a name: unquoted identifiers are lower-cased.
fn df_name(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// Decides where a query without a `"connection"` goes, and resolves its tables against the
/// declared catalogs (default-deny: an undeclared table is refused here).
///
/// Federated SQL is PostgreSQL syntax: it is bounded like any query ([`sluice_policy::check_input`])
/// before anything recursive reads it, and read on a stack the deepest admitted tree fits.
pub(crate) fn route(connections: &Connections, policy: &Policy, sql: &str) -> Result<Route, Error> {
    sluice_policy::check_input(sql, Dialect::Postgres)?;
    sluice_policy::with_stack(|| route_bounded(connections, policy, sql))
}

fn route_bounded(connections: &Connections, policy: &Policy, sql: &str) -> Result<Route, Error> {
    use sqlparser::ast::{ObjectNamePart, Statement, visit_relations};
    use std::ops::ControlFlow;
    let statements = sluice_policy::parse_statements(
        sql,
        Box::new(sqlparser::dialect::GenericDialect {}),
        Dialect::Postgres,
    )?;
    match statements.as_slice() {
        [Statement::Query(_)] => {}
        [] => return Err(sluice_policy::PolicyError::Empty.into()),
        [_] => {
            let kind = statements
                .first()
                .map(|s| s.to_string())
                .and_then(|s| s.split_whitespace().next().map(str::to_uppercase))
                .unwrap_or_default();
            return Err(sluice_policy::PolicyError::StatementNotAllowed(kind).into());
        }
        more => {
            return Err(sluice_policy::PolicyError::MultipleStatements(more.len()).into());
        }
    }
    let ctes = cte_names(&statements);
    let mut names: Vec<Vec<sqlparser::ast::Ident>> = vec![];
    let _ = visit_relations(&statements, |name| {
        names.push(
            name.0
                .iter()
                .filter_map(ObjectNamePart::as_ident)
                .cloned()
                .collect(),
        );
        ControlFlow::<()>::Continue(())
    });
    let mut sources: Vec<SourceRef> = vec![];
    for parts in names {
        let text = parts
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let [c, s, t] = parts.as_slice() else {
            if parts.len() == 1 && ctes.contains(&df_name(&parts[0])) {
                continue;
            }
            return Err(if parts.len() > 3 {
                unknown_table(&text)
            } else {
                naming()
            });
        };
        let conn = connections.get(&df_name(c)).ok_or_else(naming)?;
        let catalog = policy.catalogs.get(&conn.id).ok_or_else(Error::internal)?;
        let d = catalog.dialect();
        let rule = catalog
            .tables()
            .iter()
            .find(|r| {
                d.normalize_declared(&r.name.schema) == d.normalize(s)
                    && d.normalize_declared(&r.name.table) == d.normalize(t)
            })
            .ok_or_else(|| unknown_table(&text))?;
        let (schema, table) = (df_name(s), df_name(t));
        if !sources
            .iter()
            .any(|x| x.conn.id == conn.id && x.schema == schema && x.table == table)
        {
            sources.push(SourceRef {
                conn: Arc::clone(conn),
                rule: rule.clone(),
                schema,
                table,
            });
        }
    }
    let Some(first) = sources.first() else {
        return Err(naming());
    };
    if sources.iter().all(|s| s.conn.id == first.conn.id) {
        let conn = Arc::clone(&first.conn);
        let catalog = policy.catalogs.get(&conn.id).ok_or_else(Error::internal)?;
        let sql = strip_connection(sql, catalog.dialect(), &conn.id)?;
        return Ok(Route::Single { conn, sql });
    }
    Ok(Route::Federated(sources))
}

/// Names the query's CTEs define (folded as DataFusion folds them).
fn cte_names(statements: &[sqlparser::ast::Statement]) -> Vec<String> {
    use sqlparser::ast::{Query, Visit, Visitor};
    use std::ops::ControlFlow;
    struct Ctes(Vec<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                self.0
                    .extend(with.cte_tables.iter().map(|c| df_name(&c.alias.name)));
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(vec![]);
    for s in statements {
        let _ = s.visit(&mut v);
    }
    v.0
}

/// The query re-parsed in the connection's dialect with `<connection>.` removed from every
/// table name.
fn strip_connection(sql: &str, dialect: Dialect, id: &str) -> Result<String, Error> {
    sluice_policy::check_input(sql, dialect)?;
    strip_connection_bounded(sql, dialect, id)
}

fn strip_connection_bounded(sql: &str, dialect: Dialect, id: &str) -> Result<String, Error> {
    use sqlparser::ast::{ObjectNamePart, visit_relations_mut};
    use std::ops::ControlFlow;
    let mut statements = sluice_policy::parse_statements(sql, dialect.parser_dialect(), dialect)?;
    let _ = visit_relations_mut(&mut statements, |name| {
        if name.0.len() == 3
            && name
                .0
                .first()
                .and_then(ObjectNamePart::as_ident)
                .map(df_name)
                == Some(id.into())
        {
            name.0.remove(0);
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; "))
}
