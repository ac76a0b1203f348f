//! Federated queries: one query over tables of several connections, joined in an ephemeral
//! DataFusion workspace that lives for that query only.
//!
//! - **Naming.** With several connections declared and no `"connection"` in the request, tables
//!   are named `<connection>.<schema>.<table>`. If every table lives in one connection, the
//!   query goes to that warehouse whole, in its dialect, with the connection part removed
//!   ([`Route::Single`]): the normal path, same policy, same audit.
//! - **Per-source scans.** Otherwise each source table becomes a [`SourceTable`] in a fresh
//!   `SessionContext`. DataFusion plans the query; each scan sends its source a query in the
//!   source's dialect, with the projection, the filters it can express and the limit pushed
//!   down, **through the same policy rewrite and verifier as the direct path** (tenant
//!   predicate, grants, masks), with the user's own credential for that source.
//! - **Schemas** come from the sources themselves: a `WHERE 1 = 0` query per table (through
//!   the policy too), run in parallel before planning, so a masked column has the type the
//!   mask produces.
//! - **The workspace** has a memory limit (`[federation] memory_limit_mb`: beyond it the query
//!   fails with `resource_exhausted`), every source a row cap (`max_source_rows`), the query the
//!   usual deadline; nothing is kept after the query: no cache shared across users or tenants.
//! - Sub-queries start when the plan starts (each in its own task), so the sources work in
//!   parallel; dropping the answer drops them, which cancels them at the warehouses.
//! - Every sub-query is listed in the audit records (source, SQL as sent, and, on completion,
//!   the warehouse query id and rows).
//!
//! Not done: pushing a sub-plan that joins or aggregates several tables of the same source
//! down to that source whole (each table is scanned on its own, filters and projection pushed).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatchOptions;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, Session};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::sql::sqlparser;
use futures::StreamExt;
use sluice_audit::SubQuery;
use sluice_connectors::{ConnectorError, Param, QueryRequest};
use sluice_policy::{Caller, Catalog, Dialect, TableRule};
use tokio::sync::mpsc;

use crate::app::{AppState, Connection, Policy};
use crate::auth::Principal;
use crate::config::CredentialMode;
use crate::error::ApiError;

/// Batches buffered per source between its task and the workspace.
const CHANNEL_BATCHES: usize = 2;

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
    conn: Arc<Connection>,
    rule: TableRule,
    /// The schema and table names as the workspace resolves them (the query's own spelling,
    /// folded as DataFusion folds unquoted identifiers).
    schema: String,
    table: String,
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

/// The audit view of the sub-queries, shared with the scans that add to it.
pub(crate) type SubQueryLog = Arc<Mutex<Vec<SubQuery>>>;

fn unknown_table(name: &str) -> ApiError {
    ApiError::from(sluice_policy::PolicyError::UnknownRelation(
        name.to_string(),
    ))
}

fn naming() -> ApiError {
    ApiError::bad_request(
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
pub(crate) fn route(state: &AppState, policy: &Policy, sql: &str) -> Result<Route, ApiError> {
    sluice_policy::check_input(sql, Dialect::Postgres)?;
    sluice_policy::with_stack(|| route_bounded(state, policy, sql))
}

fn route_bounded(state: &AppState, policy: &Policy, sql: &str) -> Result<Route, ApiError> {
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
        let conn = state.connections.get(&df_name(c)).ok_or_else(naming)?;
        let catalog = policy
            .catalogs
            .get(&conn.id)
            .ok_or_else(ApiError::internal)?;
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
        let catalog = policy
            .catalogs
            .get(&conn.id)
            .ok_or_else(ApiError::internal)?;
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
fn strip_connection(sql: &str, dialect: Dialect, id: &str) -> Result<String, ApiError> {
    sluice_policy::check_input(sql, dialect)?;
    strip_connection_bounded(sql, dialect, id)
}

fn strip_connection_bounded(sql: &str, dialect: Dialect, id: &str) -> Result<String, ApiError> {
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

/// A source's credential for one query, owned so the source's task can use it.
#[derive(Clone)]
pub(crate) struct SourceCredential {
    pub(crate) secret: Option<Arc<crate::vault::store::Secret>>,
    pub(crate) passthrough_role: String,
}

/// What the caller is, as every source's policy rewrite needs it.
#[derive(Clone)]
struct Who {
    principal: Arc<Principal>,
    request_id: String,
}

/// Quotes an identifier for `dialect` (declared names hold no quote characters).
fn quote(dialect: Dialect, name: &str) -> String {
    let q = dialect.quote();
    format!("{q}{name}{q}")
}

/// The declared table's name as the source spells it.
fn qualified(dialect: Dialect, rule: &TableRule) -> String {
    let mut parts = vec![];
    if let Some(c) = &rule.name.catalog {
        parts.push(quote(dialect, c));
    }
    parts.push(quote(dialect, &rule.name.schema));
    parts.push(quote(dialect, &rule.name.table));
    parts.join(".")
}

/// A string literal `dialect` reads back as exactly `s`, or `None` when it is safer not to push
/// the value down (backslashes mean escapes in BigQuery and Databricks).
fn string_literal(dialect: Dialect, s: &str) -> Option<String> {
    if s.chars().any(char::is_control)
        || (matches!(dialect, Dialect::BigQuery | Dialect::Databricks) && s.contains('\\'))
    {
        return None;
    }
    Some(format!("'{}'", s.replace('\'', "''")))
}

fn literal(dialect: Dialect, v: &ScalarValue) -> Option<String> {
    Some(match v {
        ScalarValue::Boolean(Some(b)) => b.to_string().to_uppercase(),
        ScalarValue::Int8(Some(x)) => x.to_string(),
        ScalarValue::Int16(Some(x)) => x.to_string(),
        ScalarValue::Int32(Some(x)) => x.to_string(),
        ScalarValue::Int64(Some(x)) => x.to_string(),
        ScalarValue::UInt8(Some(x)) => x.to_string(),
        ScalarValue::UInt16(Some(x)) => x.to_string(),
        ScalarValue::UInt32(Some(x)) => x.to_string(),
        ScalarValue::UInt64(Some(x)) => x.to_string(),
        ScalarValue::Float64(Some(x)) if x.is_finite() => format!("{x:?}"),
        ScalarValue::Float32(Some(x)) if x.is_finite() => format!("{x:?}"),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => string_literal(dialect, s)?,
        _ => return None,
    })
}

/// A filter as the source's SQL, when it is one of the simple shapes every warehouse reads
/// alike (comparisons of a column with a literal, `IS [NOT] NULL`, `IN` lists, `BETWEEN`,
/// `LIKE`, combined with `AND`/`OR`/`NOT`); `None` leaves the filter to the workspace.
fn filter_sql(dialect: Dialect, columns: &[String], e: &Expr) -> Option<String> {
    let col = |e: &Expr| match e {
        Expr::Column(c) if columns.contains(&c.name) => Some(quote(dialect, &c.name)),
        _ => None,
    };
    let lit = |e: &Expr| match e {
        Expr::Literal(v, _) => literal(dialect, v),
        _ => None,
    };
    let operand = |e: &Expr| col(e).or_else(|| lit(e));
    match e {
        Expr::BinaryExpr(b) => {
            let op = match b.op {
                Operator::And => "AND",
                Operator::Or => "OR",
                Operator::Eq => "=",
                Operator::NotEq => "<>",
                Operator::Lt => "<",
                Operator::LtEq => "<=",
                Operator::Gt => ">",
                Operator::GtEq => ">=",
                _ => return None,
            };
            if matches!(b.op, Operator::And | Operator::Or) {
                let l = filter_sql(dialect, columns, &b.left)?;
                let r = filter_sql(dialect, columns, &b.right)?;
                return Some(format!("({l} {op} {r})"));
            }
            // Exactly one column and one literal. Text is pushed for equality only: `<` on
            // text follows the source's collation, which can order differently from the
            // workspace and so drop rows the workspace would keep.
            let (l, r) = (operand(&b.left)?, operand(&b.right)?);
            let text = [&b.left, &b.right].iter().any(|e| {
                matches!(
                    e.as_ref(),
                    Expr::Literal(ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_), _)
                )
            });
            let ordered = !matches!(b.op, Operator::Eq | Operator::NotEq);
            (col(&b.left).is_some() != col(&b.right).is_some() && !(text && ordered))
                .then(|| format!("({l} {op} {r})"))
        }
        Expr::Not(inner) => Some(format!("(NOT {})", filter_sql(dialect, columns, inner)?)),
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", col(inner)?)),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", col(inner)?)),
        Expr::InList(l) if !l.list.is_empty() => {
            let items = l.list.iter().map(lit).collect::<Option<Vec<_>>>()?;
            let not = if l.negated { " NOT" } else { "" };
            Some(format!(
                "({}{not} IN ({}))",
                col(&l.expr)?,
                items.join(", ")
            ))
        }
        Expr::Between(b) => {
            // Numbers only (text ranges follow the source's collation).
            let numeric = |e: &Expr| matches!(e, Expr::Literal(v, _) if v.data_type().is_numeric());
            if !numeric(&b.low) || !numeric(&b.high) {
                return None;
            }
            let not = if b.negated { " NOT" } else { "" };
            Some(format!(
                "({}{not} BETWEEN {} AND {})",
                col(&b.expr)?,
                lit(&b.low)?,
                lit(&b.high)?
            ))
        }
        // Patterns without backslashes only: sources disagree on the default escape.
        Expr::Like(l)
            if !l.case_insensitive
                && l.escape_char.is_none()
                && matches!(l.pattern.as_ref(), Expr::Literal(ScalarValue::Utf8(Some(p)), _)
                    if !p.contains('\\')) =>
        {
            let not = if l.negated { " NOT" } else { "" };
            Some(format!(
                "({}{not} LIKE {})",
                col(&l.expr)?,
                lit(&l.pattern)?
            ))
        }
        _ => None,
    }
}

/// One source table in the workspace.
struct SourceTable {
    source: SourceRef,
    /// The policy snapshot of the query (the same one the attempt record names).
    policy: Arc<Policy>,
    /// The columns the caller may read, in table order; the table's schema.
    columns: Vec<String>,
    schema: SchemaRef,
    who: Who,
    credential: SourceCredential,
    log: SubQueryLog,
    max_rows: u64,
}

impl fmt::Debug for SourceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceTable")
            .field("connection", &self.source.conn.id)
            .field("table", &self.source.rule.name)
            .finish_non_exhaustive()
    }
}

impl SourceTable {
    fn catalog(&self) -> Result<&Catalog, DataFusionError> {
        self.policy
            .catalogs
            .get(&self.source.conn.id)
            .ok_or_else(|| DataFusionError::Internal("a source without a catalog".into()))
    }

    fn caller(&self) -> Caller<'_> {
        // No group row limit on a source: it applies to the federated answer.
        Caller {
            tenant: &self.who.principal.tenant,
            groups: &self.who.principal.groups,
            row_limit: None,
        }
    }
}

/// A policy refusal inside planning, carried through DataFusion to the handler.
#[derive(Debug)]
struct Refused(ApiError);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Refused {}

#[async_trait::async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        let dialect = self.catalog()?.dialect();
        Ok(filters
            .iter()
            .map(|f| {
                // Inexact: the workspace applies the filter again, so a source that compares
                // differently can only return more rows, never fewer.
                if filter_sql(dialect, &self.columns, f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let catalog = self.catalog()?;
        let dialect = catalog.dialect();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let projected = Arc::new(self.schema.project(&wanted)?);
        // `COUNT(*)` reads no column: ask for the first one and keep only the row count.
        let select: Vec<String> = if wanted.is_empty() {
            vec![quote(dialect, &self.columns[0])]
        } else {
            wanted
                .iter()
                .map(|i| quote(dialect, &self.columns[*i]))
                .collect()
        };
        let mut sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            qualified(dialect, &self.source.rule)
        );
        let pushed: Vec<String> = filters
            .iter()
            .filter_map(|f| filter_sql(dialect, &self.columns, f))
            .collect();
        if !pushed.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&pushed.join(" AND "));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let rewritten = sluice_policy::rewrite(&sql, catalog, &self.caller())
            .map_err(|e| DataFusionError::External(Box::new(Refused(e.into()))))?;
        let index = {
            let mut log = self
                .log
                .lock()
                .map_err(|_| DataFusionError::Internal("the sub-query log is poisoned".into()))?;
            log.push(SubQuery {
                connection: self.source.conn.id.clone(),
                sql: rewritten.sql.clone(),
                warehouse_query_id: None,
                rows: None,
            });
            log.len() - 1
        };
        let partition = SourcePartition {
            conn: Arc::clone(&self.source.conn),
            sql: rewritten.sql,
            params: rewritten
                .params
                .into_iter()
                .map(|p| Param {
                    name: p.name,
                    value: p.value,
                })
                .collect(),
            schema: Arc::clone(&projected),
            who: self.who.clone(),
            credential: self.credential.clone(),
            log: Arc::clone(&self.log),
            index,
            max_rows: self.max_rows,
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            projected,
            vec![Arc::new(partition)],
            None,
            vec![],
            false,
            None,
        )?))
    }
}

/// The stream of one sub-query.
#[derive(Clone)]
struct SourcePartition {
    conn: Arc<Connection>,
    sql: String,
    params: Vec<Param>,
    schema: SchemaRef,
    who: Who,
    credential: SourceCredential,
    log: SubQueryLog,
    index: usize,
    max_rows: u64,
}

impl fmt::Debug for SourcePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourcePartition({})", self.conn.id)
    }
}

fn external(e: ConnectorError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl SourcePartition {
    /// Runs the sub-query and forwards its batches, renamed to the workspace's schema.
    async fn run(self, tx: mpsc::Sender<datafusion::common::Result<RecordBatch>>) {
        let SourcePartition {
            conn,
            sql,
            params,
            schema,
            who,
            credential,
            log,
            index,
            max_rows,
        } = self;
        let user_credential = crate::query::user_credential_ref(
            conn.credential,
            credential.secret.as_deref(),
            &who.principal,
            &credential.passthrough_role,
        );
        if user_credential.is_none() && conn.credential != CredentialMode::Service {
            // Checked when the credentials were gathered; never the service login instead.
            let _ = tx
                .send(Err(external(ConnectorError::Unauthorized(conn.id.clone()))))
                .await;
            return;
        }
        let stream = conn
            .connector
            .execute(QueryRequest {
                sql: &sql,
                params: &params,
                request_id: &who.request_id,
                credential: user_credential,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(ConnectorError::Unauthorized(_)) => {
                // The handler turns this into `reauth_required` for this connection.
                let _ = tx
                    .send(Err(external(ConnectorError::Unauthorized(conn.id.clone()))))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(external(e))).await;
                return;
            }
        };
        if let Ok(mut l) = log.lock()
            && let Some(entry) = l.get_mut(index)
        {
            entry.warehouse_query_id = stream.warehouse_query_id.clone();
        }
        let mut rows: u64 = 0;
        while let Some(next) = stream.batches.next().await {
            let out = next.map_err(external).and_then(|b| {
                rows += b.num_rows() as u64;
                if rows > max_rows {
                    return Err(external(ConnectorError::ResourceExhausted(format!(
                        "source {} returned more than {max_rows} rows, the most one source may \
                         return into a federated query ([federation] max_source_rows)",
                        conn.id
                    ))));
                }
                conform(&schema, b)
            });
            let failed = out.is_err();
            if tx.send(out).await.is_err() || failed {
                return;
            }
        }
        if let Ok(mut l) = log.lock()
            && let Some(entry) = l.get_mut(index)
        {
            entry.rows = Some(rows);
        }
    }
}

/// A source's batch under the workspace's names and nullability (same types: the schema came
/// from the same source).
fn conform(schema: &SchemaRef, b: RecordBatch) -> datafusion::common::Result<RecordBatch> {
    if schema.fields().is_empty() {
        let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            vec![],
            &options,
        )?);
    }
    Ok(RecordBatch::try_new(
        Arc::clone(schema),
        b.columns().to_vec(),
    )?)
}

impl PartitionStream for SourcePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        // Started now, not when first polled: every source of the plan runs in parallel.
        tokio::spawn(self.clone().run(tx));
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
    }
}

/// The workspace of one federated query, planned and ready to run.
pub(crate) struct Planned {
    /// The physical plan.
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    /// Its context (dropped with the answer: nothing outlives the query).
    pub(crate) ctx: SessionContext,
    /// The sub-queries the scans will send.
    pub(crate) log: SubQueryLog,
    /// Tables read, for the audit record.
    pub(crate) tables: Vec<String>,
}

/// An error of planning or running the workspace → the caller's error.
pub(crate) fn api_error(e: &DataFusionError) -> ApiError {
    match connector_error(e) {
        Found::Refused(api) => api,
        Found::Connector(c) => crate::query::warehouse_error(&c),
    }
}

enum Found {
    Refused(ApiError),
    Connector(ConnectorError),
}

/// The cause of a DataFusion error, as the query path knows causes.
fn connector_error(e: &DataFusionError) -> Found {
    let mut cur = e;
    loop {
        match cur {
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                cur = inner;
            }
            DataFusionError::Shared(inner) => cur = inner,
            DataFusionError::External(b) => {
                if let Some(r) = b.downcast_ref::<Refused>() {
                    return Found::Refused(r.0.clone());
                }
                if let Some(c) = b.downcast_ref::<ConnectorError>() {
                    return Found::Connector(clone_connector_error(c));
                }
                if let Some(inner) = b.downcast_ref::<DataFusionError>() {
                    cur = inner;
                    continue;
                }
                return Found::Connector(ConnectorError::Execution(b.to_string()));
            }
            DataFusionError::ResourcesExhausted(m) => {
                tracing::info!(detail = %m, "federated workspace out of memory");
                // DataFusion's text names operators and sizes, never data.
                return Found::Connector(ConnectorError::ResourceExhausted(format!(
                    "the federated query needed more memory than its workspace may use \
                     ([federation] memory_limit_mb): {m}"
                )));
            }
            DataFusionError::Plan(m) => {
                return Found::Refused(ApiError::bad_request("invalid_query", m.clone()));
            }
            DataFusionError::SQL(e, _) => {
                return Found::Refused(ApiError::bad_request("invalid_query", e.to_string()));
            }
            DataFusionError::SchemaError(e, _) => {
                return Found::Refused(ApiError::bad_request("invalid_query", e.to_string()));
            }
            DataFusionError::NotImplemented(m) => {
                return Found::Refused(ApiError::bad_request(
                    "invalid_query",
                    format!("not supported in federated queries: {m}"),
                ));
            }
            other => {
                return Found::Connector(ConnectorError::Execution(other.to_string()));
            }
        }
    }
}

fn clone_connector_error(c: &ConnectorError) -> ConnectorError {
    match c {
        ConnectorError::Plan(m) => ConnectorError::Plan(m.clone()),
        ConnectorError::Execution(m) => ConnectorError::Execution(m.clone()),
        ConnectorError::Unavailable(m) => ConnectorError::Unavailable(m.clone()),
        ConnectorError::Config(m) => ConnectorError::Config(m.clone()),
        ConnectorError::Warehouse { code, message } => ConnectorError::Warehouse {
            code: code.clone(),
            message: message.clone(),
        },
        ConnectorError::Unauthorized(m) => ConnectorError::Unauthorized(m.clone()),
        ConnectorError::ResourceExhausted(m) => ConnectorError::ResourceExhausted(m.clone()),
    }
}

/// Asks one source for its table's schema (as the caller sees it: granted columns, masks),
/// through the policy.
async fn probe(
    source: &SourceRef,
    policy: &Policy,
    who: &Who,
    credential: &SourceCredential,
) -> Result<(Vec<String>, SchemaRef), ApiError> {
    let catalog = policy
        .catalogs
        .get(&source.conn.id)
        .ok_or_else(ApiError::internal)?;
    let dialect = catalog.dialect();
    let groups = &who.principal.groups;
    if !source.rule.readable_by(groups) {
        return Err(
            sluice_policy::PolicyError::TableNotGranted(source.rule.name.to_string()).into(),
        );
    }
    let columns: Vec<String> = source
        .rule
        .columns
        .iter()
        .filter(|c| {
            source
                .rule
                .column_groups
                .get(*c)
                .is_none_or(|g| groups.iter().any(|x| g.contains(x)))
        })
        .cloned()
        .collect();
    if columns.is_empty() {
        return Err(
            sluice_policy::PolicyError::TableNotGranted(source.rule.name.to_string()).into(),
        );
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE 1 = 0",
        columns
            .iter()
            .map(|c| quote(dialect, c))
            .collect::<Vec<_>>()
            .join(", "),
        qualified(dialect, &source.rule)
    );
    let caller = Caller {
        tenant: &who.principal.tenant,
        groups,
        row_limit: None,
    };
    let rewritten = sluice_policy::rewrite(&sql, catalog, &caller)?;
    let params: Vec<Param> = rewritten
        .params
        .into_iter()
        .map(|p| Param {
            name: p.name,
            value: p.value,
        })
        .collect();
    let stream = source
        .conn
        .connector
        .execute(QueryRequest {
            sql: &rewritten.sql,
            params: &params,
            request_id: &who.request_id,
            credential: crate::query::user_credential_ref(
                source.conn.credential,
                credential.secret.as_deref(),
                &who.principal,
                &credential.passthrough_role,
            ),
        })
        .await
        .map_err(|e| match e {
            ConnectorError::Unauthorized(_) => crate::vault::web::reauth_required(&source.conn.id),
            e => crate::query::warehouse_error(&e),
        })?;
    if stream.schema.fields().len() != columns.len() {
        return Err(ApiError::internal());
    }
    // The declared names (the source may fold them), every column nullable.
    let schema = Schema::new(
        stream
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, name)| Field::new(name.clone(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    Ok((columns, Arc::new(schema)))
}

/// Builds the workspace: asks every source for its schema (in parallel), registers the
/// sources, and plans the query. Nothing runs at the sources beyond the schema probes until
/// the plan is executed.
pub(crate) async fn plan(
    state: &AppState,
    policy: Arc<Policy>,
    principal: &Principal,
    sources: Vec<SourceRef>,
    credentials: BTreeMap<String, SourceCredential>,
    sql: &str,
    request_id: &str,
) -> Result<Planned, ApiError> {
    let fed = &state.config.federation;
    let who = Who {
        principal: Arc::new(principal.clone()),
        request_id: request_id.to_string(),
    };
    let credential = |id: &str| credentials.get(id).cloned().ok_or_else(ApiError::internal);
    let probes = sources.iter().map(|s| {
        let who = &who;
        let policy = &policy;
        async move { probe(s, policy, who, &credential(&s.conn.id)?).await }
    });
    let schemas = futures::future::try_join_all(probes).await?;

    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(
            usize::try_from(fed.memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
            1.0,
        )
        .build_arc()
        .map_err(|e| api_error(&e))?;
    let mut config = SessionConfig::new()
        .with_target_partitions(fed.target_partitions.max(1))
        .with_information_schema(false)
        .with_default_catalog_and_schema("sluice_federation", "none");
    config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    // A sort sets memory aside for merging its spills (10 MB by default): a sixteenth of the
    // workspace at most, or a small workspace could not sort at all.
    let limit_bytes =
        usize::try_from(fed.memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let execution = &mut config.options_mut().execution;
    execution.sort_spill_reservation_bytes =
        execution.sort_spill_reservation_bytes.min(limit_bytes / 16);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let log: SubQueryLog = Arc::new(Mutex::new(vec![]));
    let mut catalogs: BTreeMap<String, Arc<MemoryCatalogProvider>> = BTreeMap::new();
    let mut tables = vec![];
    for (source, (columns, schema)) in sources.into_iter().zip(schemas) {
        let id = source.conn.id.clone();
        let catalog = catalogs.entry(id.clone()).or_insert_with(|| {
            let c = Arc::new(MemoryCatalogProvider::new());
            ctx.register_catalog(&id, Arc::clone(&c) as Arc<dyn CatalogProvider>);
            c
        });
        let schema_provider = match catalog.schema(&source.schema) {
            Some(s) => s,
            None => {
                let s = Arc::new(MemorySchemaProvider::new());
                catalog
                    .register_schema(&source.schema, Arc::clone(&s) as _)
                    .map_err(|e| api_error(&e))?;
                s
            }
        };
        tables.push(source.audit_name());
        let table = SourceTable {
            credential: credential(&id)?,
            policy: Arc::clone(&policy),
            columns,
            schema,
            who: who.clone(),
            log: Arc::clone(&log),
            max_rows: fed.max_source_rows,
            source: source.clone(),
        };
        schema_provider
            .register_table(source.table.clone(), Arc::new(table))
            .map_err(|e| api_error(&e))?;
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(|e| api_error(&e))?;
    let plan = df.create_physical_plan().await.map_err(|e| api_error(&e))?;
    Ok(Planned {
        plan,
        ctx,
        log,
        tables,
    })
}

/// Where the join runs, for explain: the workspace's physical plan.
pub(crate) fn display(plan: &Arc<dyn ExecutionPlan>) -> String {
    datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string()
}

/// The runtime federated workspaces run on: joins and aggregates are CPU work, kept off the
/// HTTP server's runtime (as the embedded engine's are). Created on first use; its threads live
/// as long as the process.
fn workspace_runtime(threads: usize) -> Result<&'static tokio::runtime::Runtime, ApiError> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("sluice-federation")
        // DataFusion plans and executes recursively: the deepest tree the policy admits fits.
        .thread_stack_size(sluice_policy::POLICY_STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the federation runtime");
            ApiError::internal()
        })?;
    // A racing first call builds a second runtime: it is dropped here, off any async context.
    let _ = RUNTIME.set(rt);
    RUNTIME.get().ok_or_else(ApiError::internal)
}

/// Runs a planned workspace on its own runtime: the answer's batches (over a bounded channel,
/// so a slow client back-pressures the plan, and dropping the answer stops it and its
/// sub-queries), errors mapped to the query path's.
pub(crate) fn execute(
    planned: Planned,
    threads: usize,
) -> Result<sluice_connectors::QueryStream, ApiError> {
    let runtime = workspace_runtime(threads)?;
    let schema = planned.plan.schema();
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, ConnectorError>>(CHANNEL_BATCHES);
    runtime.spawn(async move {
        let Planned { plan, ctx, .. } = planned;
        let map = |e: DataFusionError| match connector_error(&e) {
            Found::Connector(c) => c,
            Found::Refused(api) => ConnectorError::Plan(api.message),
        };
        let mut stream = match datafusion::physical_plan::execute_stream(plan, ctx.task_ctx()) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(map(e))).await;
                return;
            }
        };
        while let Some(next) = stream.next().await {
            let failed = next.is_err();
            if tx.send(next.map_err(map)).await.is_err() || failed {
                // The answer was dropped, or failed: dropping the plan stops every source.
                return;
            }
        }
    });
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(sluice_connectors::QueryStream {
        schema,
        batches: batches.boxed(),
        warehouse_query_id: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn only_filters_every_source_reads_alike_are_pushed_down() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let pg = |e: Expr| filter_sql(Dialect::Postgres, &cols, &e);
        assert_eq!(
            pg(col("id").lt_eq(lit(3)).and(col("name").eq(lit("o'k")))).as_deref(),
            Some("((\"id\" <= 3) AND (\"name\" = 'o''k'))")
        );
        assert_eq!(
            pg(col("id").in_list(vec![lit(1), lit(2)], true)).as_deref(),
            Some("(\"id\" NOT IN (1, 2))")
        );
        assert_eq!(
            pg(col("id").between(lit(1), lit(9))).as_deref(),
            Some("(\"id\" BETWEEN 1 AND 9)")
        );
        // Text ranges follow the source's collation: kept in the workspace.
        assert_eq!(pg(col("name").gt(lit("m"))), None);
        assert_eq!(pg(col("name").between(lit("a"), lit("m"))), None);
        // Columns of other tables, two columns, functions: kept in the workspace.
        assert_eq!(pg(col("other").eq(lit(1))), None);
        assert_eq!(pg(col("id").eq(col("id"))), None);
        assert_eq!(
            pg(datafusion::functions::expr_fn::upper(col("name")).eq(lit("A"))),
            None
        );
        // Backslashes mean escapes in BigQuery and Databricks string literals.
        let bq = |e: Expr| filter_sql(Dialect::BigQuery, &cols, &e);
        assert_eq!(bq(col("name").eq(lit("a\\' OR 1=1 --"))), None);
        assert_eq!(
            bq(col("name").eq(lit("x"))).as_deref(),
            Some("(`name` = 'x')")
        );
        assert_eq!(pg(col("name").like(lit("a\\%"))), None);
        assert_eq!(
            pg(col("name").like(lit("a%"))).as_deref(),
            Some("(\"name\" LIKE 'a%')")
        );
    }
}
