//! PostgreSQL over its wire protocol (tokio-postgres): prepare, bind the tenant, stream rows
//! into Arrow batches.
//!
//! Credentials: the connection's configured role (service), the calling user's own login and
//! password from the vault, or passthrough — the service login switches to the user's role
//! (`SET LOCAL ROLE`) and passes the tenant (`set_config('sluice.tenant', ..., true)`) inside the
//! query's transaction, so the warehouse's own row-level security policies apply.
//! Connections are pooled per login identity ([`pool`]), never shared across users.
//!
//! Least privilege, as a second line behind the policy: every query runs in a read-only
//! transaction — every session starts `default_transaction_read_only` (a startup option, which
//! outranks role and database settings), with a `statement_timeout` and
//! `standard_conforming_strings` (the policy's printed SQL assumes a backslash is no escape in
//! `'...'`), and a session goes back to the pool only after a reset (`DISCARD ALL` but for the
//! prepared statements) succeeded, which returns it to those startup values, so nothing one
//! query set reaches the next (a query cannot make its own transaction writable: a transaction's
//! read-only state is fixed when it starts). The service login's and per-user logins' queries
//! run in their own implicit transaction (one statement, no `BEGIN`/`ROLLBACK` of their own:
//! two fewer statements for the server per query); passthrough opens `BEGIN READ ONLY` for its
//! `SET LOCAL ROLE` and tenant, ended by a `ROLLBACK` sent with the reset. A session keeps the
//! statements it prepared (per role), so a repeated query is one round trip. [`PostgresConnector::require_unprivileged_login`] refuses a service login
//! that is a superuser, has `BYPASSRLS` or can write a declared table. When the receiver of the
//! batches goes away (client left, row cap reached, timeout), the query is cancelled on the
//! server and its connection closed; sessions start with `client_connection_check_interval`
//! (PostgreSQL 14 or later is required), so a query whose session closed stops within a second
//! even when the cancel request lost its race with the statement.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, IntervalMonthDayNano, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use crate::{Connector, ConnectorError, QueryRequest, QueryStream, WarehouseKind};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 4096;
/// Batches buffered between the reader task and the response.
const CHANNEL_BATCHES: usize = 2;
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a PostgreSQL connection.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// libpq-style URL or key=value string.
    pub url: String,
    /// Server-side statement timeout.
    pub statement_timeout: Duration,
}

/// PostgreSQL.
pub struct PostgresConnector {
    config: tokio_postgres::Config,
    pool: Arc<crate::pool::Pool>,
    /// Set by [`PostgresConnector::require_unprivileged_login`]: the service login is checked
    /// before it runs a query.
    login_check: Option<LoginCheck>,
}

/// The service-login check of a connector: the declared tables, and the verdict once known.
struct LoginCheck {
    /// `(schema, table)` of every declared table.
    tables: Vec<(String, String)>,
    /// `(schema, table)` of the tables whose row security the connection relies on
    /// ([`PostgresConnector::require_row_security`]): each must have it enabled, with a policy.
    row_security: Vec<(String, String)>,
    /// `Ok`: the login is unprivileged; `Err`: why it is refused. Set only by a check that ran
    /// (one that could not reach the warehouse leaves it empty, so the next query checks again).
    verdict: tokio::sync::OnceCell<Result<(), String>>,
}

/// A service login with any of these privileges on a declared table could write it.
const WRITE_PRIVILEGES: &str = "INSERT, UPDATE, DELETE, TRUNCATE";

/// The service login's role attributes, and the declared tables (`$1` schemas, `$2` names,
/// pairwise) it may write, as `schema.table`. Tables that do not exist are not writable. The
/// lookup goes through the catalogs (not `to_regclass`), so a schema the login may not use is no
/// error; column-level INSERT/UPDATE grants count as writable.
const LOGIN_CHECK_SQL: &str = "\
SELECT r.rolsuper, r.rolbypassrls, \
       ARRAY(SELECT d.s || '.' || d.t \
               FROM unnest($1::text[], $2::text[]) AS d(s, t) \
               JOIN pg_catalog.pg_namespace n ON n.nspname = d.s \
               JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = d.t \
              WHERE pg_catalog.has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') \
                 OR pg_catalog.has_any_column_privilege(c.oid, 'INSERT, UPDATE') \
              ORDER BY 1), \
       ARRAY(SELECT d.s || '.' || d.t \
               FROM unnest($3::text[], $4::text[]) AS d(s, t) \
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n \
                                  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
                                 WHERE n.nspname = d.s AND c.relname = d.t \
                                   AND c.relrowsecurity \
                                   AND EXISTS (SELECT FROM pg_catalog.pg_policy p \
                                                WHERE p.polrelid = c.oid)) \
              ORDER BY 1) \
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user";

impl PostgresConnector {
    /// Parses the URL; connects lazily, per query. The service login is not checked (see
    /// [`PostgresConnector::require_unprivileged_login`]).
    pub fn new(options: &PostgresOptions) -> Result<Self, ConnectorError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| ConnectorError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("sluice");
        // Startup values: `RESET ALL` / `DISCARD ALL` (run before a session is reused) return to
        // exactly these.
        // `client_connection_check_interval` (PostgreSQL 14+): a backend whose client socket
        // closed stops its query within a second. A cancel request races the statement it
        // cancels (sent on another connection, it can reach the server before the abandoned
        // Execute does, and is then ignored); closing the session is the backstop.
        // The URL's own `options` (`?options=-c%20jit%3Doff`: the operator's session settings)
        // come first; sluice's follow and win where both set one (a later `-c` overrides).
        let operator = config
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        config.options(format!(
            "{operator}-c default_transaction_read_only=on -c statement_timeout={} \
             -c standard_conforming_strings=on -c client_connection_check_interval=1000",
            options.statement_timeout.as_millis()
        ));
        Ok(PostgresConnector {
            config,
            pool: Arc::new(crate::pool::Pool::default()),
            login_check: None,
        })
    }

    /// Refuses to run queries as the service login (the URL's user: `credential = "service"`
    /// and passthrough) while it is a superuser, has `BYPASSRLS` or may write (INSERT, UPDATE,
    /// DELETE, TRUNCATE) one of `declared_tables` (`(schema, table)`). The check runs once, on
    /// [`PostgresConnector::ensure_service_login`] or on the first service-login query, and its
    /// verdict is kept; a refused query gets [`ConnectorError::Unavailable`].
    #[must_use]
    pub fn require_unprivileged_login(mut self, declared_tables: Vec<(String, String)>) -> Self {
        self.login_check = Some(LoginCheck {
            tables: declared_tables,
            row_security: Vec::new(),
            verdict: tokio::sync::OnceCell::new(),
        });
        self
    }

    /// Also refuses queries (in the same check as
    /// [`PostgresConnector::require_unprivileged_login`], which must come first) unless each of
    /// `tables` (`(schema, table)`) has row-level security enabled and at least one policy:
    /// for a connection whose wrappers have no `OFFSET 0` fence (`tenant_fence =
    /// "row_security"`).
    #[must_use]
    pub fn require_row_security(mut self, tables: Vec<(String, String)>) -> Self {
        if let Some(check) = self.login_check.as_mut() {
            check.row_security = tables;
        }
        self
    }

    /// Idle pooled connections logged in as `user` (for tests and metrics).
    pub fn idle_connections(&self, user: &str) -> usize {
        self.pool.idle_for(user)
    }

    /// The user the connection's URL logs in as.
    fn service_user(&self) -> String {
        self.config.get_user().unwrap_or_default().to_string()
    }

    /// Checks the service login now, on a connection of its own pool: `Ok` when it is not a
    /// superuser, has no `BYPASSRLS` and may write none of `declared_tables` (`(schema, table)`;
    /// tables that do not exist count as not writable). A privileged login is
    /// [`ConnectorError::Config`] naming every reason (superuser, BYPASSRLS, the writable
    /// tables); a warehouse that cannot be reached is [`ConnectorError::Unavailable`]; a check
    /// that failed in the warehouse is its error. Nothing is cached.
    pub async fn check_service_login(
        &self,
        declared_tables: &[(String, String)],
    ) -> Result<(), ConnectorError> {
        self.service_login_verdict(declared_tables, &[])
            .await?
            .map_err(ConnectorError::Config)
    }

    /// The check of [`PostgresConnector::require_unprivileged_login`], run now unless its verdict
    /// is known (`Ok` when no check was required). Results as for
    /// [`PostgresConnector::check_service_login`]; only a check that ran is kept.
    pub async fn ensure_service_login(&self) -> Result<(), ConnectorError> {
        let Some(check) = &self.login_check else {
            return Ok(());
        };
        check
            .verdict
            .get_or_try_init(|| self.service_login_verdict(&check.tables, &check.row_security))
            .await?
            .clone()
            .map_err(ConnectorError::Config)
    }

    /// Runs the check on a service-login connection from the pool (given back, reset, after).
    async fn service_login_verdict(
        &self,
        tables: &[(String, String)],
        row_security: &[(String, String)],
    ) -> Result<Result<(), String>, ConnectorError> {
        let user = self.service_user();
        let key = crate::pool::PoolKey::new(&user, None);
        let _turn =
            self.pool.turn().await.ok_or_else(|| {
                ConnectorError::Unavailable("the connection pool is closed".into())
            })?;
        let conn = self
            .pool
            .checkout(&key, &self.config)
            .await
            .map_err(|e| ConnectorError::Unavailable(describe(&e)))?;
        let verdict = login_verdict(&conn.client, &user, tables, row_security).await?;
        if reset_session(&conn.client, false).await {
            self.pool.checkin(key, conn);
        }
        Ok(verdict)
    }
}

/// Whether `user` (the login of `client`) is privileged: `Ok(Err(reasons))` when it is.
async fn login_verdict(
    client: &tokio_postgres::Client,
    user: &str,
    tables: &[(String, String)],
    row_security: &[(String, String)],
) -> Result<Result<(), String>, ConnectorError> {
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    let rls_schemas: Vec<&str> = row_security.iter().map(|(s, _)| s.as_str()).collect();
    let rls_names: Vec<&str> = row_security.iter().map(|(_, t)| t.as_str()).collect();
    let rows = client
        .query_typed(
            LOGIN_CHECK_SQL,
            &[
                (&schemas as &(dyn ToSql + Sync), Type::TEXT_ARRAY),
                (&names as &(dyn ToSql + Sync), Type::TEXT_ARRAY),
                (&rls_schemas as &(dyn ToSql + Sync), Type::TEXT_ARRAY),
                (&rls_names as &(dyn ToSql + Sync), Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(|e| exec_error(&e))?;
    let row = rows.first().ok_or_else(|| {
        ConnectorError::Execution(format!("the login {user:?} is not in pg_roles"))
    })?;
    let superuser: bool = row.try_get(0).map_err(|e| exec_error(&e))?;
    let bypass_rls: bool = row.try_get(1).map_err(|e| exec_error(&e))?;
    let writable: Vec<String> = row.try_get(2).map_err(|e| exec_error(&e))?;
    let unprotected: Vec<String> = row.try_get(3).map_err(|e| exec_error(&e))?;
    if !unprotected.is_empty() {
        return Ok(Err(format!(
            "tenant_fence = \"row_security\", but the table(s) {} have no row-level \
             security (ALTER TABLE ... ENABLE ROW LEVEL SECURITY, and a policy filtering to \
             current_setting('sluice.tenant')) or do not exist",
            unprotected.join(", ")
        )));
    }
    let mut reasons = Vec::new();
    if superuser {
        reasons.push("is a superuser".to_string());
    }
    if bypass_rls {
        reasons.push("has BYPASSRLS".to_string());
    }
    // A superuser can write everything: naming each table would add nothing.
    if !superuser && !writable.is_empty() {
        reasons.push(format!(
            "can write (one of {WRITE_PRIVILEGES}) the declared table(s) {}",
            writable.join(", ")
        ));
    }
    Ok(if reasons.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the service login {user:?} {}; a least-privilege login needs SELECT only \
             (or set allow_privileged_login = true on the connection)",
            reasons.join(", ")
        ))
    })
}

/// What `DISCARD ALL` does, except deallocating prepared statements and plans (the session's
/// statement cache, which only ever serves the identity that prepared it): cursors, the session
/// user, every setting back to its startup value, listens, advisory locks, temporary tables,
/// sequence state. Sent as one message behind the `ROLLBACK`.
const RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
                     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// [`RESET`] behind the `ROLLBACK` that ends a query's explicit transaction, in one message.
const ROLLBACK_AND_RESET: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; \
                                  RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); \
                                  DISCARD TEMP; DISCARD SEQUENCES";

/// Resets the session ([`RESET`]: settings back to their startup values, role, cursors,
/// advisory locks, temporary tables...), so nothing one query set reaches the next query of
/// the session; `in_transaction`: first ends the query's explicit transaction (`ROLLBACK`, in
/// the same message). Pipelined behind the query's `Execute` (no round trip of its own). True
/// when it succeeded; otherwise the session must be closed, not reused.
async fn reset_session(client: &tokio_postgres::Client, in_transaction: bool) -> bool {
    let sql = if in_transaction {
        ROLLBACK_AND_RESET
    } else {
        RESET
    };
    if let Err(e) = client.batch_execute(sql).await {
        tracing::debug!(error = %describe(&e), "postgres session reset failed: closing it");
        return false;
    }
    true
}

/// `"ident"`, with embedded quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Largest precision decoded exactly (through `rust_decimal`); within Decimal128's 38 digits.
const MAX_DECODED_PRECISION: u8 = 28;

/// `numeric(p, s)` from the column's type modifier; `None` when unconstrained.
fn numeric_precision_scale(type_modifier: i32) -> Option<(u8, i8)> {
    if type_modifier < 4 {
        return None;
    }
    let m = type_modifier - 4;
    let (p, s) = ((m >> 16) & 0xffff, m & 0xffff);
    let (p, s) = (u8::try_from(p).ok()?, i8::try_from(s).ok()?);
    (p <= MAX_DECODED_PRECISION && s >= 0).then_some((p, s))
}

/// The Arrow type a PostgreSQL column maps to (`None`: not supported).
fn arrow_type(t: &Type, type_modifier: i32) -> Option<DataType> {
    let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        // numeric(p, s) is an exact decimal; unconstrained numeric stays exact as text.
        Type::NUMERIC => match numeric_precision_scale(type_modifier) {
            Some((p, s)) => DataType::Decimal128(p, s),
            None => DataType::Utf8,
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::JSON | Type::JSONB | Type::UUID => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        Type::BOOL_ARRAY => list(DataType::Boolean),
        Type::INT4_ARRAY => list(DataType::Int32),
        Type::INT8_ARRAY => list(DataType::Int64),
        Type::FLOAT8_ARRAY => list(DataType::Float64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => list(DataType::Utf8),
        _ => return None,
    })
}

/// PostgreSQL's binary `interval`: microseconds, days, months.
struct PgInterval {
    micros: i64,
    days: i32,
    months: i32,
}

impl<'a> tokio_postgres::types::FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 16] = raw.try_into().map_err(|_| "an interval is 16 bytes")?;
        let (micros, rest) = bytes.split_at(8);
        let (days, months) = rest.split_at(4);
        Ok(PgInterval {
            micros: i64::from_be_bytes(micros.try_into()?),
            days: i32::from_be_bytes(days.try_into()?),
            months: i32::from_be_bytes(months.try_into()?),
        })
    }

    fn accepts(t: &Type) -> bool {
        *t == Type::INTERVAL
    }
}

enum Column {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Text(StringBuilder),
    Numeric(StringBuilder),
    Decimal(Decimal128Builder, u32),
    Json(StringBuilder),
    Uuid(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
    TsTz(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    BoolList(ListBuilder<BooleanBuilder>),
    I32List(ListBuilder<Int32Builder>),
    I64List(ListBuilder<Int64Builder>),
    F64List(ListBuilder<Float64Builder>),
    TextList(ListBuilder<StringBuilder>),
}

/// Days from 0001-01-01 (CE) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn list_push<B: arrow::array::ArrayBuilder, T>(
    b: &mut ListBuilder<B>,
    v: Option<Vec<Option<T>>>,
    mut push: impl FnMut(&mut B, Option<T>),
) {
    match v {
        None => b.append(false),
        Some(items) => {
            for i in items {
                push(b.values(), i);
            }
            b.append(true);
        }
    }
}

impl Column {
    fn new(t: &Type, type_modifier: i32) -> Option<Self> {
        Some(match arrow_type(t, type_modifier)? {
            DataType::Boolean => Column::Bool(BooleanBuilder::new()),
            DataType::Int16 => Column::I16(Int16Builder::new()),
            DataType::Int32 => Column::I32(Int32Builder::new()),
            DataType::Int64 => Column::I64(Int64Builder::new()),
            DataType::Float32 => Column::F32(Float32Builder::new()),
            DataType::Float64 => Column::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => Column::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(p, s)
                    .ok()?,
                u32::try_from(s).ok()?,
            ),
            DataType::Utf8 => match *t {
                Type::NUMERIC => Column::Numeric(StringBuilder::new()),
                Type::JSON | Type::JSONB => Column::Json(StringBuilder::new()),
                Type::UUID => Column::Uuid(StringBuilder::new()),
                _ => Column::Text(StringBuilder::new()),
            },
            DataType::Binary => Column::Bytea(BinaryBuilder::new()),
            DataType::Date32 => Column::Date(Date32Builder::new()),
            DataType::Time64(_) => Column::Time(Time64MicrosecondBuilder::new()),
            DataType::Timestamp(_, None) => Column::Ts(TimestampMicrosecondBuilder::new()),
            DataType::Timestamp(_, Some(_)) => {
                Column::TsTz(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            DataType::Interval(_) => Column::Interval(IntervalMonthDayNanoBuilder::new()),
            DataType::List(f) => match f.data_type() {
                DataType::Boolean => Column::BoolList(ListBuilder::new(BooleanBuilder::new())),
                DataType::Int32 => Column::I32List(ListBuilder::new(Int32Builder::new())),
                DataType::Int64 => Column::I64List(ListBuilder::new(Int64Builder::new())),
                DataType::Float64 => Column::F64List(ListBuilder::new(Float64Builder::new())),
                _ => Column::TextList(ListBuilder::new(StringBuilder::new())),
            },
            _ => return None,
        })
    }

    fn push(
        &mut self,
        row: &Row,
        i: usize,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self {
            Column::Bool(b) => b.append_option(row.try_get::<_, Option<bool>>(i)?),
            Column::I16(b) => b.append_option(row.try_get::<_, Option<i16>>(i)?),
            Column::I32(b) => b.append_option(row.try_get::<_, Option<i32>>(i)?),
            Column::I64(b) => b.append_option(row.try_get::<_, Option<i64>>(i)?),
            Column::F32(b) => b.append_option(row.try_get::<_, Option<f32>>(i)?),
            Column::F64(b) => b.append_option(row.try_get::<_, Option<f64>>(i)?),
            Column::Text(b) => b.append_option(row.try_get::<_, Option<&str>>(i)?),
            Column::Numeric(b) => b.append_option(
                row.try_get::<_, Option<rust_decimal::Decimal>>(i)?
                    .map(|d| d.to_string()),
            ),
            Column::Decimal(b, scale) => {
                match row.try_get::<_, Option<rust_decimal::Decimal>>(i)? {
                    None => b.append_null(),
                    Some(mut d) => {
                        d.rescale(*scale);
                        b.append_value(d.mantissa());
                    }
                }
            }
            Column::Json(b) => b.append_option(
                row.try_get::<_, Option<serde_json::Value>>(i)?
                    .map(|v| v.to_string()),
            ),
            Column::Uuid(b) => b.append_option(
                row.try_get::<_, Option<uuid::Uuid>>(i)?
                    .map(|u| u.to_string()),
            ),
            Column::Bytea(b) => b.append_option(row.try_get::<_, Option<&[u8]>>(i)?),
            Column::Date(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDate>>(i)?
                    .map(|d| chrono::Datelike::num_days_from_ce(&d) - UNIX_EPOCH_DAYS_FROM_CE),
            ),
            Column::Time(b) => {
                b.append_option(row.try_get::<_, Option<chrono::NaiveTime>>(i)?.map(|t| {
                    i64::from(chrono::Timelike::num_seconds_from_midnight(&t)) * 1_000_000
                        + i64::from(chrono::Timelike::nanosecond(&t) / 1_000)
                }))
            }
            Column::Ts(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDateTime>>(i)?
                    .map(|t| t.and_utc().timestamp_micros()),
            ),
            Column::TsTz(b) => b.append_option(
                row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?
                    .map(|t| t.timestamp_micros()),
            ),
            Column::Interval(b) => {
                b.append_option(row.try_get::<_, Option<PgInterval>>(i)?.map(|v| {
                    IntervalMonthDayNano::new(v.months, v.days, v.micros.saturating_mul(1_000))
                }))
            }
            Column::BoolList(b) => list_push(b, row.try_get(i)?, |v, x| v.append_option(x)),
            Column::I32List(b) => list_push(b, row.try_get(i)?, |v, x| v.append_option(x)),
            Column::I64List(b) => list_push(b, row.try_get(i)?, |v, x| v.append_option(x)),
            Column::F64List(b) => list_push(b, row.try_get(i)?, |v, x| v.append_option(x)),
            Column::TextList(b) => list_push(
                b,
                row.try_get::<_, Option<Vec<Option<String>>>>(i)?,
                |v, x| v.append_option(x),
            ),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Text(b) | Column::Numeric(b) | Column::Json(b) | Column::Uuid(b) => {
                Arc::new(b.finish())
            }
            Column::Decimal(b, _) => Arc::new(b.finish()),
            Column::Bytea(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::Ts(b) | Column::TsTz(b) => Arc::new(ArrayBuilder::finish(b)),
            Column::Interval(b) => Arc::new(b.finish()),
            Column::BoolList(b) => Arc::new(b.finish()),
            Column::I32List(b) => Arc::new(b.finish()),
            Column::I64List(b) => Arc::new(b.finish()),
            Column::F64List(b) => Arc::new(b.finish()),
            Column::TextList(b) => Arc::new(b.finish()),
        }
    }
}

/// A database error's message for the logs; the client only ever sees a generic text for
/// execution errors.
/// A failed statement: the server's SQLSTATE and message when it sent them.
fn exec_error(e: &tokio_postgres::Error) -> ConnectorError {
    match e.as_db_error() {
        Some(db) => ConnectorError::Warehouse {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
        },
        None => ConnectorError::Execution(e.to_string()),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A session ready for one statement: its turn, pool key, connection and transaction opening.
struct Session<'r> {
    turn: tokio::sync::OwnedSemaphorePermit,
    key: crate::pool::PoolKey,
    conn: crate::pool::Conn,
    /// The explicit transaction's opening (passthrough), if any.
    begin: Option<String>,
    tenant: Option<&'r str>,
    role: Option<String>,
}

impl PostgresConnector {
    /// A pooled session of the request's identity (its turn taken, the service login checked),
    /// and the opening of its transaction.
    async fn session<'r>(&self, request: &QueryRequest<'r>) -> Result<Session<'r>, ConnectorError> {
        // Per-user passwords log in as that user, so the warehouse's own grants apply.
        let per_user;
        let service_user = self.service_user();
        let (key, config, service_login) = match request.credential {
            Some(crate::UserCredential::Password { user, password }) => {
                let mut c = self.config.clone();
                c.user(user).password(password);
                per_user = c;
                (
                    crate::pool::PoolKey::new(user, Some(password.as_bytes())),
                    &per_user,
                    false,
                )
            }
            Some(crate::UserCredential::Bearer(_)) => {
                // PostgreSQL takes no OAuth token here: never fall back to the service login.
                return Err(ConnectorError::Config(
                    "PostgreSQL connections take a password or passthrough, not an OAuth token"
                        .into(),
                ));
            }
            Some(crate::UserCredential::Passthrough { role, .. }) if role == service_user => {
                return Err(ConnectorError::Unauthorized(
                    "passthrough may not act as the service login itself".into(),
                ));
            }
            None | Some(crate::UserCredential::Passthrough { .. }) => (
                crate::pool::PoolKey::new(&service_user, None),
                &self.config,
                true,
            ),
        };
        // Waits for a turn when MAX_IN_FLIGHT queries already run (the caller's deadline
        // bounds the wait).
        let turn =
            self.pool.turn().await.ok_or_else(|| {
                ConnectorError::Unavailable("the connection pool is closed".into())
            })?;
        let conn = self
            .pool
            .checkout(&key, config)
            .await
            .map_err(|e| ConnectorError::Unavailable(describe(&e)))?;
        let client = &conn.client;
        // A required check of the service login runs before it runs anything else (once: the
        // verdict is kept; a check that could not run is tried again by the next query).
        if service_login && let Some(check) = &self.login_check {
            let fresh = !check.verdict.initialized();
            let verdict = check
                .verdict
                .get_or_try_init(|| {
                    login_verdict(client, &service_user, &check.tables, &check.row_security)
                })
                .await
                .map_err(|e| {
                    ConnectorError::Unavailable(format!("cannot verify the service login: {e}"))
                })?;
            if let Err(reason) = verdict {
                if fresh {
                    tracing::error!(%reason, "refusing every query of this connection");
                }
                return Err(ConnectorError::Unavailable(reason.clone()));
            }
        }
        // Every query runs in a read-only transaction: the session's own (every session starts
        // `default_transaction_read_only`, and the reset after each query restores it), or,
        // for passthrough, an explicit `BEGIN READ ONLY` in which the service login acts as the
        // user's role, with the tenant visible to RLS policies, for this transaction only.
        let (begin, tenant, role) = match request.credential {
            Some(crate::UserCredential::Passthrough { role, tenant }) => (
                Some(format!(
                    "BEGIN READ ONLY; SET LOCAL ROLE {}",
                    quote_ident(role)
                )),
                Some(tenant),
                Some(role.to_string()),
            ),
            _ => (None, None, None),
        };
        Ok(Session {
            turn,
            key,
            conn,
            begin,
            tenant,
            role,
        })
    }
}

#[async_trait::async_trait]
impl Connector for PostgresConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::Postgres
    }

    async fn describe(
        &self,
        request: QueryRequest<'_>,
    ) -> Result<Option<crate::Described>, ConnectorError> {
        let Session {
            turn,
            key,
            mut conn,
            begin,
            tenant,
            role,
        } = self.session(&request).await?;
        let _turn = turn;
        let statement_key = crate::pool::StatementKey {
            role,
            sql: request.sql.to_string(),
        };
        let statement = match conn.statements.get(&statement_key).cloned() {
            Some(s) => s,
            None => {
                // Prepared inside the query's opening (the role and tenant of passthrough), then
                // the transaction is rolled back; the statement is kept for the Execute that
                // usually follows (one round trip then).
                let opening = Opening {
                    client: &conn.client,
                    begin: begin.as_deref(),
                    tenant,
                    passthrough: tenant.is_some(),
                };
                let (begun, tenant_set, prepared) = futures::future::join3(
                    opening.begin(),
                    opening.set_tenant(),
                    conn.client.prepare(request.sql),
                )
                .await;
                begun.map_err(|e| opening.opening_error(&e))?;
                tenant_set.map_err(|e| exec_error(&e))?;
                let statement = prepared.map_err(|e| ConnectorError::Plan(describe(&e)))?;
                if statement_key.sql.len() <= crate::pool::MAX_CACHED_STATEMENT_BYTES {
                    conn.statements.insert(statement_key, statement.clone());
                }
                statement
            }
        };
        let schema = schema_of(&statement)?;
        let param_oids = statement.params().iter().map(Type::oid).collect();
        if reset_session(&conn.client, begin.is_some()).await {
            self.pool.checkin(key, conn);
        }
        Ok(Some(crate::Described { param_oids, schema }))
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        let Session {
            turn,
            key,
            mut conn,
            begin,
            tenant,
            role,
        } = self.session(&request).await?;
        let client = &conn.client;
        let statement_key = crate::pool::StatementKey {
            role,
            sql: request.sql.to_string(),
        };
        let opening = Opening {
            client,
            begin: begin.as_deref(),
            tenant,
            passthrough: tenant.is_some(),
        };
        // A statement this connection prepared before (for this role) runs in one round trip:
        // the transaction, the tenant, Bind and Execute are pipelined. A new text is prepared
        // first (two round trips), then kept.
        let cached = conn.statements.get(&statement_key).cloned();
        let (statement, rows, fresh) = match cached {
            Some(statement) => match opening.run_prepared(&statement, request.params).await {
                Ok(rows) => (statement, rows, false),
                // The table changed under a cached plan (PostgreSQL refuses a plan whose
                // result columns changed): forget the statement, end the failed transaction,
                // and prepare it again.
                Err(Stale) => {
                    if !opening.rollback().await {
                        return Err(ConnectorError::Unavailable(
                            "the PostgreSQL session could not be reset".into(),
                        ));
                    }
                    let (statement, rows) = opening.prepare_and_run(request).await?;
                    (statement, rows, true)
                }
                Err(Failed(e)) => return Err(e),
            },
            None => {
                let (statement, rows) = opening.prepare_and_run(request).await?;
                (statement, rows, true)
            }
        };
        let (rows, cancel) = rows;
        let schema = schema_of(&statement)?;
        let mut builders: Vec<Column> = statement
            .columns()
            .iter()
            .map(|c| Column::new(c.type_(), c.type_modifier()))
            .collect::<Option<_>>()
            .ok_or_else(|| ConnectorError::Plan("unsupported column type".into()))?;
        if fresh && statement_key.sql.len() <= crate::pool::MAX_CACHED_STATEMENT_BYTES {
            conn.statements.insert(statement_key, statement);
        }

        // The session's reset is pipelined behind the statement: its first poll queues its
        // messages, before any row is read, so PostgreSQL runs it as soon as the statement
        // ends, in the same round trip. It owns a handle on the client, so it can be awaited
        // after the answer has been handed over.
        let mut reset: futures::future::BoxFuture<'static, bool> = {
            let client = Arc::clone(&conn.client);
            let in_transaction = begin.is_some();
            Box::pin(async move { reset_session(&client, in_transaction).await })
        };
        let early = futures::poll!(reset.as_mut());
        // The first batch is read here, on the caller's task: an answer that fits in one batch
        // (a point query) needs no task and no channel between the rows and the caller. If this
        // call is abandoned while it reads (deadline, client gone), the guard cancels the query
        // on the server.
        let guard = CancelOnDrop(Some(cancel.clone()));
        let mut rows = Box::pin(rows);
        let first = read_batch(rows.as_mut(), &schema, &mut builders).await;
        guard.disarm();
        let first = match first {
            Ok(f) => f,
            Err(e) => {
                if matches!(e, ConnectorError::Execution(_)) {
                    // A value that could not be decoded: the rest is of no use.
                    let _ = cancel.cancel_query(NoTls).await;
                }
                return Err(e);
            }
        };
        let pool = Arc::clone(&self.pool);
        let batches = match first {
            Read::Ended(last) => {
                // The session goes back to the pool once its reset succeeded (the reset's
                // answer follows the rows; it is not waited for here).
                drop(rows);
                match early {
                    std::task::Poll::Ready(true) => pool.checkin(key, conn),
                    std::task::Poll::Ready(false) => {}
                    std::task::Poll::Pending => {
                        tokio::spawn(async move {
                            let _turn = turn;
                            if reset.await {
                                pool.checkin(key, conn);
                            }
                        });
                    }
                }
                futures::stream::iter(last.map(Ok)).boxed()
            }
            Read::Full(batch) => {
                let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
                let batch_schema = Arc::clone(&schema);
                tokio::spawn(async move {
                    // Owns the connection (and the turn) while the rest of the rows stream. The
                    // answer ends (the sender is dropped) as soon as the last row is sent; the
                    // session goes back to the pool only when the query ran to its end and the
                    // reset succeeded. A query that failed or was abandoned (cancelled on the
                    // server) does not wait for its reset: the session is closed at once, and
                    // the turn freed.
                    let _turn = turn;
                    let finished = stream_rows(rows, tx, batch_schema, builders, cancel).await;
                    let reset = match early {
                        _ if !finished => false,
                        std::task::Poll::Ready(ok) => ok,
                        std::task::Poll::Pending => reset.await,
                    };
                    if reset {
                        pool.checkin(key, conn);
                    }
                });
                futures::stream::once(async { Ok(batch) })
                    .chain(crate::receiver_stream(rx))
                    .boxed()
            }
        };
        Ok(QueryStream {
            schema,
            batches,
            warehouse_query_id: None,
        })
    }
}

/// What one read of up to [`BATCH_ROWS`] rows found.
enum Read {
    /// The answer ended: its last batch (`None` when no rows were left).
    Ended(Option<RecordBatch>),
    /// A full batch; more rows may follow.
    Full(RecordBatch),
}

/// Reads the next batch of at most [`BATCH_ROWS`] rows.
async fn read_batch(
    mut rows: std::pin::Pin<&mut tokio_postgres::RowStream>,
    schema: &SchemaRef,
    builders: &mut [Column],
) -> Result<Read, ConnectorError> {
    let mut n = 0usize;
    loop {
        match rows.next().await {
            Some(Ok(row)) => {
                for (i, b) in builders.iter_mut().enumerate() {
                    b.push(&row, i)
                        .map_err(|e| ConnectorError::Execution(e.to_string()))?;
                }
                n += 1;
                if n == BATCH_ROWS {
                    return finish_batch(schema, builders).map(Read::Full);
                }
            }
            Some(Err(e)) => return Err(exec_error(&e)),
            None if n == 0 => return Ok(Read::Ended(None)),
            None => return finish_batch(schema, builders).map(|b| Read::Ended(Some(b))),
        }
    }
}

/// Streams the rest of `rows` to `tx`, a batch at a time, then drops `tx` (which ends the
/// answer) and the rows (which closes the statement). True when the query ran to its end;
/// false when it failed, or nobody reads any more (the query is then cancelled on the server).
async fn stream_rows(
    mut rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
    tx: mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    schema: SchemaRef,
    mut builders: Vec<Column>,
    cancel: tokio_postgres::CancelToken,
) -> bool {
    loop {
        let read = tokio::select! {
            () = tx.closed() => {
                // Nobody reads any more: stop the query on the server.
                let _ = cancel.cancel_query(NoTls).await;
                return false;
            }
            read = read_batch(rows.as_mut(), &schema, &mut builders) => read,
        };
        match read {
            Ok(Read::Full(batch)) => {
                if tx.send(Ok(batch)).await.is_err() {
                    let _ = cancel.cancel_query(NoTls).await;
                    return false;
                }
            }
            Ok(Read::Ended(last)) => {
                if let Some(batch) = last {
                    let _ = tx.send(Ok(batch)).await;
                }
                return true;
            }
            Err(e) => {
                let decode = matches!(e, ConnectorError::Execution(_));
                let _ = tx.send(Err(e)).await;
                if decode {
                    // The rest of the answer is of no use: stop it on the server.
                    let _ = cancel.cancel_query(NoTls).await;
                }
                return false;
            }
        }
    }
}

/// Cancels the running query on the server when dropped, unless disarmed.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl CancelOnDrop {
    fn disarm(mut self) -> Option<tokio_postgres::CancelToken> {
        self.0.take()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(token), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = token.cancel_query(NoTls).await;
            });
        }
    }
}

/// The rows of a running query, and the token that cancels it.
type Running = (tokio_postgres::RowStream, tokio_postgres::CancelToken);

/// Why running a cached statement failed.
enum RunError {
    /// Its plan is stale (the table's columns changed): prepare it again.
    Stale,
    /// Anything else: the query's error.
    Failed(ConnectorError),
}
use RunError::{Failed, Stale};

impl From<ConnectorError> for RunError {
    fn from(e: ConnectorError) -> Self {
        Failed(e)
    }
}

/// Opens a query's transaction on a session, pipelined with the statement: for passthrough,
/// `BEGIN READ ONLY`, the role and the tenant; otherwise nothing (the statement runs in its own
/// implicit transaction, read-only by the session's default).
struct Opening<'a> {
    client: &'a tokio_postgres::Client,
    begin: Option<&'a str>,
    tenant: Option<&'a str>,
    passthrough: bool,
}

impl Opening<'_> {
    /// Opens the explicit transaction, when there is one.
    async fn begin(&self) -> Result<(), tokio_postgres::Error> {
        match self.begin {
            Some(begin) => self.client.batch_execute(begin).await,
            None => Ok(()),
        }
    }

    async fn set_tenant(&self) -> Result<(), tokio_postgres::Error> {
        match self.tenant {
            Some(tenant) => {
                let value: &(dyn ToSql + Sync) = &tenant;
                self.client
                    .query_typed(
                        "SELECT set_config('sluice.tenant', $1, true)",
                        &[(value, Type::TEXT)],
                    )
                    .await
                    .map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// The transaction's opening failed: a refused role is the user's authorization failing.
    fn opening_error(&self, e: &tokio_postgres::Error) -> ConnectorError {
        if self.passthrough {
            ConnectorError::Unauthorized(describe(e))
        } else {
            exec_error(e)
        }
    }

    /// Runs a statement this session prepared before, in one round trip: tokio-postgres
    /// pipelines the requests in flight at once, and `join3` first polls them in argument
    /// order, so the transaction, the tenant, and Bind/Execute reach the server in that order.
    /// If the opening fails, the transaction is aborted and the statement fails with it (and
    /// every session is `default_transaction_read_only` besides); its error is the one
    /// reported.
    async fn run_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[crate::Param],
    ) -> Result<Running, RunError> {
        let values = values_for(statement, params)?;
        // PostgreSQL does not flush BindComplete while it runs the pipelined Execute, so this
        // await can last as long as the query does. If it is abandoned (deadline, client
        // gone), the guard cancels the query on the server; dropping the client alone would
        // not.
        let guard = CancelOnDrop(Some(self.client.cancel_token()));
        let (begun, tenant_set, rows) = futures::future::join3(
            self.begin(),
            self.set_tenant(),
            self.client.query_raw(
                statement,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            ),
        )
        .await;
        begun.map_err(|e| self.opening_error(&e))?;
        tenant_set.map_err(|e| exec_error(&e))?;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) if stale_plan(&e) => {
                guard.disarm();
                return Err(Stale);
            }
            Err(e) => return Err(Failed(exec_error(&e))),
        };
        let cancel = guard.disarm().unwrap_or_else(|| self.client.cancel_token());
        Ok((rows, cancel))
    }

    /// Prepares the query (pipelined behind the transaction's opening: one round trip), then
    /// binds and executes it (a second).
    async fn prepare_and_run(
        &self,
        request: QueryRequest<'_>,
    ) -> Result<(tokio_postgres::Statement, Running), ConnectorError> {
        let (begun, tenant_set, prepared) = futures::future::join3(
            self.begin(),
            self.set_tenant(),
            self.client.prepare(request.sql),
        )
        .await;
        begun.map_err(|e| self.opening_error(&e))?;
        tenant_set.map_err(|e| exec_error(&e))?;
        // Planning reads no rows, so its message names only what the query itself says.
        let statement = prepared.map_err(|e| ConnectorError::Plan(describe(&e)))?;
        schema_of(&statement)?;
        let values = values_for(&statement, request.params)?;
        let guard = CancelOnDrop(Some(self.client.cancel_token()));
        let rows = self
            .client
            .query_raw(
                &statement,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            )
            .await
            .map_err(|e| exec_error(&e))?;
        let cancel = guard.disarm().unwrap_or_else(|| self.client.cancel_token());
        Ok((statement, (rows, cancel)))
    }

    /// Ends a failed transaction so the session can run the next one.
    async fn rollback(&self) -> bool {
        match self.begin {
            Some(_) => self.client.batch_execute("ROLLBACK").await.is_ok(),
            // The implicit transaction ended with the failed statement's Sync.
            None => true,
        }
    }
}

/// PostgreSQL refused to run a cached plan whose result columns changed since it was prepared
/// (`cached plan must not change result type`, SQLSTATE 0A000).
fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        d.code() == &tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED
            && d.message()
                .contains("cached plan must not change result type")
    })
}

/// The Arrow schema of a prepared statement's answer; a column of a type not decoded is refused.
fn schema_of(statement: &tokio_postgres::Statement) -> Result<SchemaRef, ConnectorError> {
    let mut fields = Vec::with_capacity(statement.columns().len());
    for c in statement.columns() {
        let t = arrow_type(c.type_(), c.type_modifier()).ok_or_else(|| {
            ConnectorError::Plan(format!(
                "column {} has unsupported type {}",
                c.name(),
                c.type_()
            ))
        })?;
        fields.push(Field::new(c.name(), t, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Every parameter's value, as the type PostgreSQL inferred for it.
fn values_for(
    statement: &tokio_postgres::Statement,
    params: &[crate::Param],
) -> Result<Vec<Box<dyn ToSql + Send + Sync>>, ConnectorError> {
    if statement.params().len() != params.len() {
        return Err(ConnectorError::Plan(format!(
            "the statement takes {} parameters, {} given",
            statement.params().len(),
            params.len()
        )));
    }
    params
        .iter()
        .zip(statement.params())
        .enumerate()
        .map(|(i, (p, t))| bind(i + 1, &p.value, t))
        .collect()
}

fn finish_batch(
    schema: &SchemaRef,
    builders: &mut [Column],
) -> Result<RecordBatch, ConnectorError> {
    let columns: Vec<ArrayRef> = builders.iter_mut().map(Column::finish).collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| ConnectorError::Execution(e.to_string()))
}

/// `NULL` of whatever type the server inferred for the parameter.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(tokio_postgres::types::IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Parameter `$n`'s value as the type PostgreSQL inferred for it. Numbers go to numeric types,
/// booleans to `boolean`, text to text types and to the types whose values are written as
/// text (dates, timestamps, `numeric`, `uuid`, `json`); anything else is refused, naming the
/// parameter and the types (never the value).
fn bind(
    n: usize,
    v: &crate::ParamValue,
    t: &Type,
) -> Result<Box<dyn ToSql + Send + Sync>, ConnectorError> {
    use crate::ParamValue as V;
    let wrong = || {
        ConnectorError::Parameter(format!(
            "parameter ${n}: {} does not fit the type {t} the query gives it",
            v.kind()
        ))
    };
    let unreadable =
        || ConnectorError::Parameter(format!("parameter ${n}: the text is not a valid {t} value"));
    let range = || {
        ConnectorError::Parameter(format!(
            "parameter ${n}: the integer does not fit the type {t}"
        ))
    };
    let canonical = |s: &str, i: i64| i.to_string() == s;
    let value: Box<dyn ToSql + Send + Sync> = match (v, t.clone()) {
        // The tenant: as it is into text, canonical integers into integer columns, nothing
        // else (one tenant id, one set of rows).
        // A text attribute of a row filter binds the same way.
        (
            V::Tenant(s) | V::Attribute(s),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME,
        ) => Box::new(s.clone()),
        (V::Tenant(s) | V::Attribute(s), Type::INT4) => match s.parse::<i32>() {
            Ok(i) if canonical(s, i64::from(i)) => Box::new(i),
            _ => return Err(unreadable()),
        },
        (V::Tenant(s) | V::Attribute(s), Type::INT8) => match s.parse::<i64>() {
            Ok(i) if canonical(s, i) => Box::new(i),
            _ => return Err(unreadable()),
        },
        (V::Tenant(_), _) => {
            return Err(ConnectorError::Plan(format!(
                "unsupported tenant column type {t}"
            )));
        }
        (V::Attribute(_), _) => return Err(wrong()),
        // List attributes: one array of the column's type (`= ANY($n)`), each element as
        // strict as the tenant.
        (
            V::TextList(l),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY | Type::NAME_ARRAY,
        ) => Box::new(l.clone()),
        // An empty list reads back from a stored session as a text list, whatever its type.
        (V::TextList(l), Type::INT2_ARRAY | Type::NUMERIC_ARRAY) if l.is_empty() => {
            return bind(n, &V::IntList(vec![]), t);
        }
        (V::TextList(l), Type::INT4_ARRAY) => Box::new(
            l.iter()
                .map(|s| match s.parse::<i32>() {
                    Ok(i) if canonical(s, i64::from(i)) => Ok(i),
                    _ => Err(unreadable()),
                })
                .collect::<Result<Vec<i32>, _>>()?,
        ),
        (V::TextList(l), Type::INT8_ARRAY) => Box::new(
            l.iter()
                .map(|s| match s.parse::<i64>() {
                    Ok(i) if canonical(s, i) => Ok(i),
                    _ => Err(unreadable()),
                })
                .collect::<Result<Vec<i64>, _>>()?,
        ),
        (V::IntList(l), Type::INT2_ARRAY) => Box::new(
            l.iter()
                .map(|i| i16::try_from(*i).map_err(|_| range()))
                .collect::<Result<Vec<i16>, _>>()?,
        ),
        (V::IntList(l), Type::INT4_ARRAY) => Box::new(
            l.iter()
                .map(|i| i32::try_from(*i).map_err(|_| range()))
                .collect::<Result<Vec<i32>, _>>()?,
        ),
        (V::IntList(l), Type::INT8_ARRAY) => Box::new(l.clone()),
        (V::IntList(l), Type::NUMERIC_ARRAY) => Box::new(
            l.iter()
                .map(|i| rust_decimal::Decimal::from(*i))
                .collect::<Vec<_>>(),
        ),
        (
            V::IntList(l),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY | Type::NAME_ARRAY,
        ) => Box::new(l.iter().map(i64::to_string).collect::<Vec<_>>()),
        (V::TextList(_) | V::IntList(_), _) => return Err(wrong()),
        (V::Null, _) => Box::new(Null),
        (V::Bool(b), Type::BOOL) => Box::new(*b),
        (V::Int(i), Type::INT2) => Box::new(i16::try_from(*i).map_err(|_| range())?),
        (V::Int(i), Type::INT4) => Box::new(i32::try_from(*i).map_err(|_| range())?),
        (V::Int(i), Type::INT8) => Box::new(*i),
        (V::Int(i), Type::FLOAT4) => Box::new(*i as f32),
        (V::Int(i), Type::FLOAT8) => Box::new(*i as f64),
        (V::Int(i), Type::NUMERIC) => Box::new(rust_decimal::Decimal::from(*i)),
        (V::Float(f), Type::FLOAT4) => Box::new(*f as f32),
        (V::Float(f), Type::FLOAT8) => Box::new(*f),
        (V::Float(f), Type::NUMERIC) => {
            Box::new(rust_decimal::Decimal::try_from(*f).map_err(|_| wrong())?)
        }
        (V::Text(s), Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) => Box::new(s.clone()),
        // Text is read as PostgreSQL reads a text-format parameter of the inferred type.
        (V::Text(s), Type::INT2) => Box::new(s.trim().parse::<i16>().map_err(|_| unreadable())?),
        (V::Text(s), Type::INT4) => Box::new(s.trim().parse::<i32>().map_err(|_| unreadable())?),
        (V::Text(s), Type::INT8) => Box::new(s.trim().parse::<i64>().map_err(|_| unreadable())?),
        (V::Text(s), Type::FLOAT8) => Box::new(s.trim().parse::<f64>().map_err(|_| unreadable())?),
        (V::Text(s), Type::BOOL) => Box::new(match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "on" | "1" => true,
            "false" | "f" | "no" | "off" | "0" => false,
            _ => return Err(unreadable()),
        }),
        (V::Text(s), Type::DATE) => {
            Box::new(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| unreadable())?)
        }
        (V::Text(s), Type::TIMESTAMP) => Box::new(
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
                .map_err(|_| unreadable())?,
        ),
        (V::Text(s), Type::TIMESTAMPTZ) => Box::new(
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&chrono::Utc))
                .map_err(|_| unreadable())?,
        ),
        (V::Text(s), Type::NUMERIC) => Box::new(
            s.parse::<rust_decimal::Decimal>()
                .map_err(|_| unreadable())?,
        ),
        (V::Text(s), Type::UUID) => Box::new(s.parse::<uuid::Uuid>().map_err(|_| unreadable())?),
        (V::Text(s), Type::JSON | Type::JSONB) => {
            Box::new(serde_json::from_str::<serde_json::Value>(s).map_err(|_| unreadable())?)
        }
        _ => return Err(wrong()),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ParamValue as V;

    #[test]
    fn attribute_lists_bind_as_arrays_of_the_columns_type_strictly() {
        assert!(bind(2, &V::Attribute("emea".into()), &Type::TEXT).is_ok());
        assert!(bind(2, &V::Attribute("05".into()), &Type::INT4).is_err());
        assert!(bind(2, &V::Attribute("x".into()), &Type::DATE).is_err());
        assert!(bind(3, &V::IntList(vec![1, 2]), &Type::INT4_ARRAY).is_ok());
        assert!(bind(3, &V::IntList(vec![1, 2]), &Type::INT8_ARRAY).is_ok());
        assert!(bind(3, &V::IntList(vec![1]), &Type::TEXT_ARRAY).is_ok());
        assert!(bind(3, &V::IntList(vec![i64::MAX]), &Type::INT4_ARRAY).is_err());
        assert!(bind(3, &V::IntList(vec![]), &Type::INT4_ARRAY).is_ok());
        assert!(bind(3, &V::TextList(vec!["a".into()]), &Type::VARCHAR_ARRAY).is_ok());
        assert!(bind(3, &V::TextList(vec!["7".into()]), &Type::INT8_ARRAY).is_ok());
        assert!(bind(3, &V::TextList(vec![" 7".into()]), &Type::INT8_ARRAY).is_err());
        assert!(bind(3, &V::TextList(vec![]), &Type::INT4_ARRAY).is_ok());
        assert!(bind(3, &V::TextList(vec![]), &Type::NUMERIC_ARRAY).is_ok());
        assert!(bind(3, &V::TextList(vec!["1".into()]), &Type::NUMERIC_ARRAY).is_err());
        // Never a scalar where an array is, or an array of another kind.
        assert!(bind(3, &V::TextList(vec!["a".into()]), &Type::TEXT).is_err());
        assert!(bind(3, &V::IntList(vec![1]), &Type::DATE_ARRAY).is_err());
    }

    #[test]
    fn the_tenant_binds_strictly_and_caller_values_as_postgres_reads_them() {
        // One tenant id, one set of rows: no other spelling of the same integer.
        assert!(bind(3, &V::Tenant("5".into()), &Type::INT4).is_ok());
        for other in [" 5", "05", "+5", "5.0"] {
            assert!(
                bind(3, &V::Tenant(other.into()), &Type::INT4).is_err(),
                "{other}"
            );
        }
        assert!(bind(3, &V::Tenant("A".into()), &Type::TEXT).is_ok());
        assert!(
            bind(
                3,
                &V::Tenant("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                &Type::UUID
            )
            .is_err()
        );
        // Caller values: typed, or text read as the inferred type; refusals name the types.
        assert!(bind(1, &V::Int(5), &Type::INT2).is_ok());
        assert!(bind(1, &V::Int(70_000), &Type::INT2).is_err());
        assert!(bind(1, &V::Text("2024-02-29".into()), &Type::DATE).is_ok());
        assert!(bind(1, &V::Null, &Type::JSONB).is_ok());
        let e = bind(2, &V::Bool(true), &Type::INT4).err().unwrap();
        assert_eq!(
            e.to_string(),
            "parameter $2: a boolean does not fit the type int4 the query gives it"
        );
    }
}
