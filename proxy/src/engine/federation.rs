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
use futures::StreamExt;
use sluice_audit::SubQuery;
use sluice_connectors::{ConnectorError, Param, QueryRequest};
use sluice_policy::{Caller, Catalog, Dialect};
use tokio::sync::mpsc;

use crate::auth::principal::Principal;
use crate::config::FederationConfig;
use crate::engine::connection::{Connection, RunAs, bind, warehouse_error};
use crate::engine::policy::Policy;
use crate::engine::route::SourceRef;
use crate::error::Error;

/// Batches buffered per source between its task and the workspace.
const CHANNEL_BATCHES: usize = 2;

/// The audit view of the sub-queries, shared with the scans that add to it.
pub(crate) type SubQueryLog = Arc<Mutex<Vec<SubQuery>>>;

/// What the caller is, as every source's policy rewrite needs it.
#[derive(Clone)]
pub(crate) struct Who {
    pub(crate) principal: Arc<Principal>,
    pub(crate) request_id: String,
    /// Whether the audit log redacts literals (and so the row filters' attribute values).
    pub(crate) redact: bool,
}

fn quote(dialect: Dialect, name: &str) -> String {
    sluice_policy::emit::ident(dialect, name)
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
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            sluice_policy::emit::string(dialect, s)?
        }
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
    credential: RunAs,
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
            attributes: &self.who.principal.attributes,
        }
    }
}

/// A policy refusal inside planning, carried through DataFusion to the handler.
#[derive(Debug)]
struct Refused(Error);

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
        let select: Vec<&str> = if wanted.is_empty() {
            vec![self.columns[0].as_str()]
        } else {
            wanted.iter().map(|i| self.columns[*i].as_str()).collect()
        };
        let pushed: Vec<String> = filters
            .iter()
            .filter_map(|f| filter_sql(dialect, &self.columns, f))
            .collect();
        let sql = sluice_policy::emit::select(dialect, &self.source.rule, &select, &pushed, limit);
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
                row_filters: crate::engine::filters::row_filters(&rewritten, self.who.redact),
            });
            log.len() - 1
        };
        let partition = SourcePartition {
            conn: Arc::clone(&self.source.conn),
            sql: rewritten.sql,
            params: bind(&rewritten.params),
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
    credential: RunAs,
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
        let Ok(user_credential) = credential.credential() else {
            // Checked when the credentials were chosen; never the service login instead.
            let _ = tx
                .send(Err(external(ConnectorError::Unauthorized(conn.id.clone()))))
                .await;
            return;
        };
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
pub(crate) fn api_error(e: &DataFusionError) -> Error {
    match connector_error(e) {
        Found::Refused(api) => api,
        Found::Connector(c) => warehouse_error(&c),
    }
}

enum Found {
    Refused(Error),
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
                return Found::Refused(Error::request("invalid_query", m.clone()));
            }
            DataFusionError::SQL(e, _) => {
                return Found::Refused(Error::request("invalid_query", e.to_string()));
            }
            DataFusionError::SchemaError(e, _) => {
                return Found::Refused(Error::request("invalid_query", e.to_string()));
            }
            DataFusionError::NotImplemented(m) => {
                return Found::Refused(Error::request(
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
        ConnectorError::Parameter(m) => ConnectorError::Parameter(m.clone()),
    }
}

/// Asks one source for its table's schema (as the caller sees it: granted columns, masks),
/// through the policy: the declared column names, their schema, and the SQL sent.
pub(crate) async fn probe(
    source: &SourceRef,
    policy: &Policy,
    who: &Who,
    credential: &RunAs,
) -> Result<(Vec<String>, SchemaRef, String), Error> {
    let catalog = policy
        .catalogs
        .get(&source.conn.id)
        .ok_or_else(Error::internal)?;
    let dialect = catalog.dialect();
    let groups = &who.principal.groups;
    if !source.rule.readable_by(groups) {
        return Err(
            sluice_policy::PolicyError::TableNotGranted(source.rule.name.to_string()).into(),
        );
    }
    let columns: Vec<String> = source
        .rule
        .view(groups)
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    if columns.is_empty() {
        return Err(
            sluice_policy::PolicyError::TableNotGranted(source.rule.name.to_string()).into(),
        );
    }
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let sql = sluice_policy::emit::select(dialect, &source.rule, &names, &["1 = 0".into()], None);
    let caller = Caller {
        tenant: &who.principal.tenant,
        groups,
        row_limit: None,
        attributes: &who.principal.attributes,
    };
    let rewritten = sluice_policy::rewrite(&sql, catalog, &caller)?;
    let params = bind(&rewritten.params);
    let stream = source
        .conn
        .connector
        .execute(QueryRequest {
            sql: &rewritten.sql,
            params: &params,
            request_id: &who.request_id,
            credential: credential.credential()?,
        })
        .await
        .map_err(|e| match e {
            ConnectorError::Unauthorized(_) => crate::vault::reauth_required(&source.conn.id),
            e => warehouse_error(&e),
        })?;
    if stream.schema.fields().len() != columns.len() {
        return Err(Error::internal());
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
    Ok((columns, Arc::new(schema), rewritten.sql))
}

/// Builds the workspace: asks every source for its schema (in parallel), registers the
/// sources, and plans the query. Nothing runs at the sources beyond the schema probes until
/// the plan is executed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    fed: &FederationConfig,
    policy: Arc<Policy>,
    principal: &Arc<Principal>,
    sources: Vec<SourceRef>,
    credentials: BTreeMap<String, RunAs>,
    sql: &str,
    request_id: &str,
    redact: bool,
) -> Result<Planned, Error> {
    let who = Who {
        principal: Arc::clone(principal),
        request_id: request_id.to_string(),
        redact,
    };
    let credential = |id: &str| credentials.get(id).cloned().ok_or_else(Error::internal);
    let probes = sources.iter().map(|s| {
        let who = &who;
        let policy = &policy;
        async move {
            let (columns, schema, _) = probe(s, policy, who, &credential(&s.conn.id)?).await?;
            Ok::<_, Error>((columns, schema))
        }
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
fn workspace_runtime(threads: usize) -> Result<&'static tokio::runtime::Runtime, Error> {
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
            Error::internal()
        })?;
    // A racing first call builds a second runtime: it is dropped here, off any async context.
    let _ = RUNTIME.set(rt);
    RUNTIME.get().ok_or_else(Error::internal)
}

/// Runs a planned workspace on its own runtime: the answer's batches (over a bounded channel,
/// so a slow client back-pressures the plan, and dropping the answer stops it and its
/// sub-queries), errors mapped to the query path's.
pub(crate) fn execute(
    planned: Planned,
    threads: usize,
) -> Result<sluice_connectors::QueryStream, Error> {
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
