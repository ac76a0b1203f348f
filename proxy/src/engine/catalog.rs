//! The virtual catalog: what a PostgreSQL client introspects with (`pg_catalog.*`,
//! `information_schema.*`, `format_type()`...), answered by sluice from the caller's visible
//! catalog only, never forwarded to a warehouse.
//!
//! A catalog query runs in an ephemeral DataFusion session that holds, for each table the
//! caller may read, an **empty** table with exactly the columns the caller may read (granted
//! columns; masked columns keep their name and take the type the warehouse gives the masked
//! expression). `datafusion-pg-catalog` derives `pg_class`, `pg_attribute`, `pg_namespace`,
//! `pg_type`... from that session and rewrites the SQL psql, SQLAlchemy, pgjdbc and DBeaver
//! send into SQL DataFusion plans. A table the caller may not read, or a column not granted to
//! them, does not exist in the session, so it does not exist for them.
//!
//! The column types come from the warehouse: each visible table is probed once per session and
//! policy version (`SELECT <granted columns> FROM <table> WHERE 1 = 0`, through the policy's
//! rewrite, with the caller's own credential; the probes are the request's `sub_queries` in
//! the audit log). Every catalog query is audited like any other: attempt (durable before any
//! probe), completion, connection `catalog`.
//!
//! What is a catalog query ([`is_catalog_query`]) is decided on sqlparser's parse tree: one
//! `SELECT` whose every relation is in `pg_catalog` or `information_schema` (or an unqualified
//! `pg_*` relation), or which names no relation but calls a PostgreSQL catalog function. A
//! query mixing catalog and data relations is not one: it goes to the policy, which refuses it
//! (default deny). The session is read-only (no DDL, DML or `SET`), bounded in memory
//! (`CATALOG_MEMORY_BYTES`), rows (`limits.max_result_rows`) and time (the query's deadline).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, Statement, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use datafusion_pg_catalog::setup_pg_catalog;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{StreamExt, TryStreamExt};
use sluice_audit::SubQuery;
use sluice_connectors::{ConnectorError, ParamValue, QueryStream};

use crate::error::{Error, Kind};

/// The connection a catalog query's audit record names.
pub const CATALOG: &str = "catalog";

/// Memory one catalog query may use (its tables are empty: only the catalog relations and
/// what the query computes from them take any).
const CATALOG_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// How many visible tables are probed at once.
pub(crate) const PROBE_CONCURRENCY: usize = 4;

/// The rewrites that turn what PostgreSQL clients send into SQL DataFusion plans (built once:
/// it tokenizes its substitution table).
static COMPAT: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// `pg_catalog`'s static relations, decoded once for every session.
static STATIC_TABLES: LazyLock<Option<Arc<PgCatalogStaticTables>>> = LazyLock::new(|| {
    PgCatalogStaticTables::try_new()
        .map(Arc::new)
        .map_err(|e| tracing::warn!(error = %e, "virtual catalog: static tables not decoded"))
        .ok()
});

/// A table as one caller sees it: where it lives, and the columns they may read with the types
/// the warehouse gives them.
#[derive(Debug, Clone)]
pub struct VisibleTable {
    /// The connection it belongs to.
    pub connection: String,
    /// Its schema, as declared.
    pub schema: String,
    /// Its name, as declared.
    pub table: String,
    /// The caller's columns (every one nullable).
    pub columns: SchemaRef,
}

/// What one caller sees, for one policy version: the tables, and the DataFusion session over
/// them (built on first use and kept, so the object ids a client reads in one catalog query,
/// such as `pg_class.oid`, name the same objects in its next one).
pub(crate) struct Visible {
    policy_version: String,
    groups: Vec<String>,
    tables: Vec<VisibleTable>,
    /// Several connections are in view: each is a catalog of its own
    /// (`<connection>.<schema>.<table>`).
    qualified: bool,
    session: OnceLock<SessionContext>,
}

impl Visible {
    /// The session over these tables (`database`: the catalog the client connected to).
    fn session(&self, database: &str) -> Result<SessionContext, Error> {
        if let Some(ctx) = self.session.get() {
            return Ok(ctx.clone());
        }
        let ctx = session(database, &self.tables, self.qualified).map_err(|e| unsupported(&e))?;
        Ok(self.session.get_or_init(|| ctx).clone())
    }
}

/// A wire session's memory of what its caller sees (probing every table for every `\d`
/// would be one warehouse round trip per table per catalog query). Invalidated when the
/// policy changes or the caller's groups do.
#[derive(Default)]
pub struct CatalogCache {
    inner: Mutex<Option<Arc<Visible>>>,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache").finish_non_exhaustive()
    }
}

impl CatalogCache {
    pub(crate) fn get(&self, policy_version: &str, groups: &[String]) -> Option<Arc<Visible>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .as_ref()
            .filter(|v| v.policy_version == policy_version && v.groups == groups)
            .cloned()
    }

    pub(crate) fn put(
        &self,
        policy_version: &str,
        groups: &[String],
        tables: Vec<VisibleTable>,
        qualified: bool,
    ) -> Arc<Visible> {
        let visible = Arc::new(Visible {
            policy_version: policy_version.to_string(),
            groups: groups.to_vec(),
            tables,
            qualified,
            session: OnceLock::new(),
        });
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner = Some(Arc::clone(&visible));
        visible
    }
}

/// A probe's SQL, for the audit record.
pub(crate) fn probe_record(connection: &str, sql: String, ok: bool) -> SubQuery {
    SubQuery {
        connection: connection.to_string(),
        sql,
        warehouse_query_id: None,
        rows: ok.then_some(0),
        row_filters: vec![],
    }
}

/// The schemas a relation name belongs to the catalog by.
fn catalog_schema(part: &str) -> bool {
    part.eq_ignore_ascii_case("pg_catalog") || part.eq_ignore_ascii_case("information_schema")
}

fn ident_parts(name: &ObjectName) -> Option<Vec<&str>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i.value.as_str()),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Whether a relation name is a catalog relation: `[db.]pg_catalog.x`,
/// `[db.]information_schema.x`, or an unqualified `pg_*` (a data table named `pg_...` must be
/// named with its schema).
fn catalog_relation(name: &ObjectName) -> bool {
    match ident_parts(name).as_deref() {
        Some([t]) => t.len() > 3 && t[..3].eq_ignore_ascii_case("pg_"),
        Some([s, _]) | Some([_, s, _]) => catalog_schema(s),
        _ => false,
    }
}

/// Functions whose use alone (with no relation) makes a query a catalog query.
fn catalog_function(name: &ObjectName) -> bool {
    let Some(parts) = ident_parts(name) else {
        return false;
    };
    match parts.as_slice() {
        [s, _] if catalog_schema(s) => true,
        [f] => {
            let f = f.to_ascii_lowercase();
            f.starts_with("pg_")
                || matches!(
                    f.as_str(),
                    "format_type"
                        | "current_schemas"
                        | "has_table_privilege"
                        | "has_schema_privilege"
                        | "has_database_privilege"
                        | "has_any_column_privilege"
                        | "obj_description"
                        | "col_description"
                        | "shobj_description"
                )
        }
        _ => false,
    }
}

#[derive(Default)]
struct Names {
    relations: Vec<ObjectName>,
    ctes: Vec<String>,
    catalog_functions: bool,
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| c.alias.name.value.clone()));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.push(relation.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && catalog_function(&f.name)
        {
            self.catalog_functions = true;
        }
        ControlFlow::Continue(())
    }
}

/// Whether `text` contains `needle` (ASCII, any case), without copying the text: every
/// statement of the wire door's simple protocol passes here.
fn contains_ci(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a statement text is a catalog query (see the module documentation). Cheap for data
/// queries: a text that names neither `pg_` nor `information_schema` is not parsed.
pub fn is_catalog_query(sql: &str) -> bool {
    if !contains_ci(sql, "pg_") && !contains_ci(sql, "information_schema") {
        return false;
    }
    // The client's own text decides when it parses; else the text after the compatibility
    // rewrites (which replace some well-known client queries with equivalent ones DataFusion
    // plans, possibly without any relation left).
    let (statements, rewritten) = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => (s, false),
        Err(_) => match COMPAT.parse(sql) {
            Ok(s) => (s, true),
            Err(_) => return false,
        },
    };
    let [Statement::Query(query)] = statements.as_slice() else {
        return false;
    };
    let mut names = Names::default();
    let _ = query.visit(&mut names);
    if rewritten && names.relations.is_empty() && contains_ci(sql, "pg_catalog.") {
        return true;
    }
    let relations: Vec<&ObjectName> = names
        .relations
        .iter()
        .filter(|r| match ident_parts(r).as_deref() {
            Some([one]) => !names.ctes.iter().any(|c| c == one),
            _ => true,
        })
        .collect();
    if relations.is_empty() {
        names.catalog_functions
    } else {
        relations.iter().all(|r| catalog_relation(r))
    }
}

/// The quoted name in a DataFusion message (`table 'x' not found`, `Invalid function 'f'`).
fn quoted(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('\'')?;
    Some(rest[..end].to_string())
}

fn unsupported(e: &DataFusionError) -> Error {
    // A relation or a function the virtual catalog does not have is refused as the policy
    // refuses an undeclared one (the same code on every front door).
    if let DataFusionError::Plan(m) = e.find_root() {
        if let Some(name) = quoted(m, "table '") {
            return sluice_policy::PolicyError::UnknownRelation(name).into();
        }
        if let Some(name) = quoted(m, "Invalid function '") {
            return sluice_policy::PolicyError::FunctionNotAllowed(name).into();
        }
    }
    // The message names catalog relations and columns only (the session holds nothing else).
    let message = match e.find_root() {
        DataFusionError::Plan(m) | DataFusionError::NotImplemented(m) => m.clone(),
        DataFusionError::SQL(e, _) => e.to_string(),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        other => {
            tracing::warn!(error = %other, "virtual catalog: query failed");
            "the virtual catalog could not answer this query".to_string()
        }
    };
    Error::new(
        Kind::Request,
        "not_supported",
        format!("catalog query not supported by sluice's virtual catalog: {message}"),
    )
}

fn refused_statement() -> Error {
    Error::new(
        Kind::Policy,
        "read_only",
        "the virtual catalog answers SELECT queries only",
    )
}

/// A catalog query, planned in its session over the caller's visible tables.
pub(crate) struct Planned {
    ctx: SessionContext,
    plan: LogicalPlan,
}

impl Planned {
    /// The answer's schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    /// Runs it: the answer as a stream (the session lives as long as the stream).
    pub(crate) async fn execute(self) -> Result<QueryStream, Error> {
        let df = self
            .ctx
            .execute_logical_plan(self.plan)
            .await
            .map_err(|e| unsupported(&e))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(|e| unsupported(&e))?;
        let batches = stream
            .map_err(|e| match e {
                DataFusionError::ResourcesExhausted(m) => ConnectorError::ResourceExhausted(m),
                other => ConnectorError::Execution(unsupported(&other).message),
            })
            .boxed();
        Ok(QueryStream {
            schema,
            batches,
            warehouse_query_id: None,
        })
    }
}

/// The ephemeral session: `database` is the catalog the client connected to; with one
/// connection in view its tables are `<schema>.<table>` there, with several each connection is
/// a catalog of its own (`<connection>.<schema>.<table>`, as the router names them).
fn session(
    database: &str,
    tables: &[VisibleTable],
    qualified: bool,
) -> Result<SessionContext, DataFusionError> {
    let database = if database.is_empty() {
        "sluice"
    } else {
        database
    };
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(CATALOG_MEMORY_BYTES, 1.0)
        .build_arc()?;
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(true)
        .with_default_catalog_and_schema(database, "public");
    config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    // How many connections are in view (not how many answered their probes): it fixes how
    // tables are named, as the router names them.
    let one = !qualified;
    let mut catalogs: BTreeMap<String, Arc<dyn CatalogProvider>> = BTreeMap::new();
    for t in tables {
        let name = if one {
            database.to_string()
        } else {
            t.connection.clone()
        };
        let catalog = match catalogs.get(&name) {
            Some(c) => Arc::clone(c),
            None => {
                let c = match ctx.catalog(&name) {
                    Some(c) => c,
                    None => {
                        let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
                        ctx.register_catalog(&name, Arc::clone(&c));
                        c
                    }
                };
                catalogs.insert(name.clone(), Arc::clone(&c));
                c
            }
        };
        let schema = match catalog.schema(&t.schema) {
            Some(s) => s,
            None => {
                let s = Arc::new(MemorySchemaProvider::new());
                catalog.register_schema(&t.schema, Arc::clone(&s) as _)?;
                s
            }
        };
        let table = MemTable::try_new(Arc::clone(&t.columns), vec![vec![]])?;
        schema.register_table(t.table.clone(), Arc::new(table))?;
    }
    setup_pg_catalog(&ctx, database, EmptyContextProvider).map_err(|e| *e)?;
    // The static relations (pg_type, pg_proc... ~5 MB decoded) are shared by every session:
    // the `pg_catalog` schema `setup_pg_catalog` registered is replaced by one over them.
    if let (Some(shared), Some(catalog)) = (STATIC_TABLES.as_ref(), ctx.catalog(database)) {
        let provider = PgCatalogSchemaProvider::try_new(
            ctx.state().catalog_list().clone(),
            Arc::clone(shared),
            EmptyContextProvider,
        )?;
        catalog.register_schema("pg_catalog", Arc::new(provider))?;
    }
    ctx.register_udf(to_regtype());
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
    ] {
        ctx.register_udf(always_visible(name));
    }
    Ok(ctx)
}

/// `pg_*_is_visible(oid)`: every object of the virtual catalog is on the search path (as
/// `pg_table_is_visible` is in `datafusion-pg-catalog`).
fn always_visible(name: &str) -> datafusion::logical_expr::ScalarUDF {
    use arrow::array::{ArrayRef, BooleanArray};
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let func = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let n = arrays.first().map_or(1, |a| a.len());
        Ok(ColumnarValue::Array(
            Arc::new(BooleanArray::from(vec![true; n])) as ArrayRef,
        ))
    };
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(func),
    )
}

/// The built-in types `to_regtype` knows, by their PostgreSQL names and the SQL aliases
/// clients spell them with.
fn type_oid(name: &str) -> Option<i32> {
    use pgwire::api::Type;
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let alias = match name {
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "real" => "float4",
        "double precision" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" => "bpchar",
        "decimal" => "numeric",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        other => other,
    };
    [
        Type::BOOL,
        Type::BYTEA,
        Type::CHAR,
        Type::NAME,
        Type::INT8,
        Type::INT2,
        Type::INT4,
        Type::TEXT,
        Type::OID,
        Type::JSON,
        Type::XML,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::BPCHAR,
        Type::VARCHAR,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::TIMETZ,
        Type::NUMERIC,
        Type::UUID,
        Type::JSONB,
        Type::INET,
    ]
    .iter()
    .find(|t| t.name() == alias)
    .and_then(|t| i32::try_from(t.oid()).ok())
}

/// `to_regtype(text)`: the OID of a built-in type, NULL for any other name (psycopg asks it
/// for `hstore` on connect; there are no extension types here).
fn to_regtype() -> datafusion::logical_expr::ScalarUDF {
    use arrow::array::{Array, ArrayRef, Int32Array, StringArray};
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let func = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let Some(names) = arrays
            .first()
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        else {
            return Err(DataFusionError::Plan(
                "to_regtype takes one text argument".into(),
            ));
        };
        let oids: Int32Array = (0..names.len())
            .map(|i| {
                (!names.is_null(i))
                    .then(|| type_oid(names.value(i)))
                    .flatten()
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(oids) as ArrayRef))
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(func),
    )
}

/// `regproc` columns of the catalog relations: `datafusion-pg-catalog` holds them as the
/// function's name (`-` for none), where PostgreSQL compares them with OIDs.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
];

/// Rewrites `<regproc column> = 0` / `<> 0` (no function; the ADBC driver's type query asks
/// `typreceive != 0`) into comparisons with `'-'`, how the catalog spells "no function".
fn regproc_zero(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Value, visit_expressions_mut};
    fn regproc(e: &Expr) -> bool {
        let name = match e {
            Expr::Identifier(i) => &i.value,
            Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(i) => &i.value,
                None => return false,
            },
            _ => return false,
        };
        REGPROC_COLUMNS.iter().any(|c| name.eq_ignore_ascii_case(c))
    }
    fn zero(e: &Expr) -> bool {
        matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "0"))
    }
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::BinaryOp { left, op, right } = e
            && matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
        {
            let none = || Box::new(Expr::value(Value::SingleQuotedString("-".into())));
            if regproc(left) && zero(right) {
                *right = none();
            } else if zero(left) && regproc(right) {
                *left = none();
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A caller's value for a placeholder the plan typed: cast when it can be.
fn scalar(v: &ParamValue, ty: Option<&DataType>) -> ScalarValue {
    let raw = match v {
        ParamValue::Null => ScalarValue::Null,
        ParamValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
        ParamValue::Int(i) => ScalarValue::Int64(Some(*i)),
        ParamValue::Float(f) => ScalarValue::Float64(Some(*f)),
        ParamValue::Text(s) | ParamValue::Tenant(s) | ParamValue::Attribute(s) => {
            ScalarValue::Utf8(Some(s.clone()))
        }
        // Callers send scalars only (`params::from_json`).
        ParamValue::TextList(_) | ParamValue::IntList(_) => ScalarValue::Null,
    };
    match ty {
        Some(t) if raw.data_type() != *t => raw.cast_to(t).unwrap_or(raw),
        _ => raw,
    }
}

/// Plans a catalog query (with the caller's parameters) over the visible tables.
pub(crate) async fn plan(
    sql: &str,
    params: &[ParamValue],
    database: &str,
    visible: &Visible,
) -> Result<Planned, Error> {
    let statements = COMPAT
        .parse(sql)
        .map_err(|e| Error::new(Kind::Request, "sql_parse_error", e.to_string()))?;
    let statement = match <[Statement; 1]>::try_from(statements) {
        Ok([mut s @ Statement::Query(_)]) => {
            regproc_zero(&mut s);
            s
        }
        Ok(_) => return Err(refused_statement()),
        Err(_) => {
            return Err(Error::new(
                Kind::Policy,
                "multiple_statements",
                "one statement per query",
            ));
        }
    };
    let ctx = visible.session(database)?;
    let state = ctx.state();
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await
        .map_err(|e| unsupported(&e))?;
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|_| refused_statement())?;
    let types = plan.get_parameter_types().map_err(|e| unsupported(&e))?;
    let values: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ty = types.get(&format!("${}", i + 1)).and_then(Option::as_ref);
            scalar(v, ty).into()
        })
        .collect();
    let plan = if values.is_empty() {
        plan
    } else {
        plan.with_param_values(ParamValues::List(values))
            .map_err(|e| unsupported(&e))?
    };
    Ok(Planned { ctx, plan })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn catalog_queries_are_told_from_data_queries_on_the_parse_tree() {
        for sql in [
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM pg_type",
            "SELECT pg_catalog.format_type(23, NULL)",
            "WITH t AS (SELECT oid FROM pg_class) SELECT * FROM t",
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
            // psql's \d: the compatibility layer answers it with a query of no relation.
            "SELECT pol.polname, pol.polpermissive, CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END, pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid), CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' END AS cmd FROM pg_catalog.pg_policy pol WHERE pol.polrelid = '1262' ORDER BY 1",
        ] {
            assert!(is_catalog_query(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM orders",
            "SELECT 1",
            "SELECT 'pg_class' FROM orders",
            // Mixed: the policy refuses it (default deny), the catalog does not answer it.
            "SELECT * FROM pg_catalog.pg_class, orders",
            "SELECT * FROM orders WHERE id IN (SELECT oid FROM pg_catalog.pg_class)",
            "WITH pg_x AS (SELECT * FROM orders) SELECT * FROM pg_x",
            "SELECT * FROM public.pg_orders",
            "DELETE FROM pg_catalog.pg_class",
            "SELECT 1; SELECT * FROM pg_class",
        ] {
            assert!(!is_catalog_query(sql), "{sql}");
        }
    }

    fn orders() -> Vec<VisibleTable> {
        vec![VisibleTable {
            connection: "pg".into(),
            schema: "public".into(),
            table: "orders".into(),
            columns: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("amount", DataType::Float64, true),
            ])),
        }]
    }

    fn visible() -> Arc<Visible> {
        CatalogCache::default().put("v1", &[], orders(), false)
    }

    async fn strings(sql: &str, params: &[ParamValue]) -> Vec<String> {
        let planned = plan(sql, params, "pg", &visible()).await.unwrap();
        let mut stream = planned.execute().await.unwrap();
        let mut out = vec![];
        while let Some(b) = stream.batches.next().await {
            let b = b.unwrap();
            let col = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let col = col.as_any().downcast_ref::<StringArray>().unwrap();
            out.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
        out
    }

    #[tokio::test]
    async fn only_visible_tables_and_columns_exist() {
        let tables = strings(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
             ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[ParamValue::Text("public".into())],
        )
        .await;
        assert_eq!(tables, vec!["orders"]);
        let columns = strings(
            "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c \
             ON c.oid = a.attrelid WHERE c.relname = 'orders' AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await;
        assert_eq!(columns, vec!["id", "amount"]);
        let types = strings(
            "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 'orders' \
             AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await;
        assert_eq!(types, vec!["bigint", "double precision"]);
    }

    #[tokio::test]
    async fn what_the_catalog_lacks_is_refused_like_an_undeclared_name() {
        for (sql, reason) in [
            ("SELECT * FROM pg_catalog.pg_shadow", "unknown_relation"),
            ("SELECT * FROM pg_stats", "unknown_relation"),
            ("SELECT pg_get_viewdef(1)", "function_not_allowed"),
        ] {
            let e = match plan(sql, &[], "pg", &visible()).await {
                Ok(p) => p.execute().await.err().unwrap(),
                Err(e) => e,
            };
            assert_eq!(e.code, "policy_denied", "{sql}: {e:?}");
            assert_eq!(e.reason, Some(reason), "{sql}: {e:?}");
        }
    }

    #[tokio::test]
    async fn with_several_connections_in_view_each_is_a_catalog() {
        let visible = CatalogCache::default().put("v1", &[], orders(), true);
        let sql = "SELECT table_catalog FROM information_schema.tables WHERE table_name = 'orders'";
        let mut stream = plan(sql, &[], "sluice", &visible)
            .await
            .unwrap()
            .execute()
            .await
            .unwrap();
        let b = stream.batches.next().await.unwrap().unwrap();
        let col = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            col.value(0),
            "pg",
            "named as the router names it: pg.public.orders"
        );
    }

    #[tokio::test]
    async fn the_session_is_read_only() {
        for sql in [
            "CREATE TABLE pg_catalog.x (a int)",
            "INSERT INTO orders VALUES (1, 2.0)",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(plan(sql, &[], "pg", &visible()).await.is_err(), "{sql}");
        }
    }
}
