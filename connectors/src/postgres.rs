//! PostgreSQL over its wire protocol (tokio-postgres): prepare, bind the tenant, stream rows
//! into Arrow batches.
//!
//! This is the first, basic connector: one connection per query, authenticated with the
//! connection's configured role (per-user credentials come with the vault). Every session is
//! read-only (`default_transaction_read_only`) and has a `statement_timeout`, as a second line
//! behind the policy. When the receiver of the batches goes away (client left, row cap reached,
//! timeout), the query is cancelled on the server.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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
}

impl PostgresConnector {
    /// Parses the URL; connects lazily, per query.
    pub fn new(options: &PostgresOptions) -> Result<Self, ConnectorError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| ConnectorError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("sluice");
        config.options(format!(
            "-c default_transaction_read_only=on -c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        Ok(PostgresConnector { config })
    }
}

/// The Arrow type a PostgreSQL type maps to.
fn arrow_type(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        // Exact decimal text: no precision is lost on the way to the client.
        Type::NUMERIC => DataType::Utf8,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::JSON | Type::JSONB => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
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
    Json(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    TsTz(TimestampMicrosecondBuilder),
}

/// Days from 0001-01-01 (CE) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl Column {
    fn new(t: &Type) -> Option<Self> {
        Some(match *t {
            Type::BOOL => Column::Bool(BooleanBuilder::new()),
            Type::INT2 => Column::I16(Int16Builder::new()),
            Type::INT4 => Column::I32(Int32Builder::new()),
            Type::INT8 => Column::I64(Int64Builder::new()),
            Type::FLOAT4 => Column::F32(Float32Builder::new()),
            Type::FLOAT8 => Column::F64(Float64Builder::new()),
            Type::NUMERIC => Column::Numeric(StringBuilder::new()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Column::Text(StringBuilder::new())
            }
            Type::JSON | Type::JSONB => Column::Json(StringBuilder::new()),
            Type::DATE => Column::Date(Date32Builder::new()),
            Type::TIMESTAMP => Column::Ts(TimestampMicrosecondBuilder::new()),
            Type::TIMESTAMPTZ => {
                Column::TsTz(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => return None,
        })
    }

    fn push(&mut self, row: &Row, i: usize) -> Result<(), tokio_postgres::Error> {
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
            Column::Json(b) => b.append_option(
                row.try_get::<_, Option<serde_json::Value>>(i)?
                    .map(|v| v.to_string()),
            ),
            Column::Date(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDate>>(i)?
                    .map(|d| chrono::Datelike::num_days_from_ce(&d) - UNIX_EPOCH_DAYS_FROM_CE),
            ),
            Column::Ts(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDateTime>>(i)?
                    .map(|t| t.and_utc().timestamp_micros()),
            ),
            Column::TsTz(b) => b.append_option(
                row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?
                    .map(|t| t.timestamp_micros()),
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
            Column::Text(b) | Column::Numeric(b) | Column::Json(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Ts(b) | Column::TsTz(b) => Arc::new(ArrayBuilder::finish(b)),
        }
    }
}

/// A database error's message for the logs; the client only ever sees a generic text for
/// execution errors.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[async_trait::async_trait]
impl Connector for PostgresConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::Postgres
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| ConnectorError::Unavailable(describe(&e)))?;
        let connection_task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        // Planning reads no rows, so its message names only what the query itself says.
        let statement = client
            .prepare(request.sql)
            .await
            .map_err(|e| ConnectorError::Plan(describe(&e)))?;
        let mut fields = Vec::with_capacity(statement.columns().len());
        for c in statement.columns() {
            let t = arrow_type(c.type_()).ok_or_else(|| {
                ConnectorError::Plan(format!(
                    "column {} has unsupported type {}",
                    c.name(),
                    c.type_()
                ))
            })?;
            fields.push(Field::new(c.name(), t, true));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        if statement.params().len() != request.params.len() {
            return Err(ConnectorError::Plan(format!(
                "the statement takes {} parameters, {} given",
                statement.params().len(),
                request.params.len()
            )));
        }
        let mut values: Vec<Box<dyn ToSql + Send + Sync>> =
            Vec::with_capacity(request.params.len());
        for (p, t) in request.params.iter().zip(statement.params()) {
            let v: Box<dyn ToSql + Send + Sync> = match *t {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(p.value.clone()),
                Type::INT4 => Box::new(p.value.parse::<i32>().map_err(|_| {
                    ConnectorError::Plan("the tenant value is not an integer".into())
                })?),
                Type::INT8 => Box::new(p.value.parse::<i64>().map_err(|_| {
                    ConnectorError::Plan("the tenant value is not an integer".into())
                })?),
                _ => {
                    return Err(ConnectorError::Plan(format!(
                        "unsupported tenant column type {t}"
                    )));
                }
            };
            values.push(v);
        }
        // PostgreSQL does not flush BindComplete while it runs the pipelined Execute, so this
        // await can last as long as the query does. If it is abandoned (deadline, client gone),
        // the guard cancels the query on the server; dropping the client alone would not.
        let guard = CancelOnDrop(Some(client.cancel_token()));
        let rows = client
            .query_raw(
                &statement,
                values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
            )
            .await
            .map_err(|e| ConnectorError::Execution(describe(&e)))?;
        let cancel = guard.disarm().unwrap_or_else(|| client.cancel_token());
        let builders: Vec<Column> = statement
            .columns()
            .iter()
            .map(|c| Column::new(c.type_()))
            .collect::<Option<_>>()
            .ok_or_else(|| ConnectorError::Plan("unsupported column type".into()))?;

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let batch_schema = Arc::clone(&schema);
        tokio::spawn(async move {
            // Keeps the client (and so the connection) alive while rows stream.
            let _client = client;
            let mut builders = builders;
            let mut rows = std::pin::pin!(rows);
            let mut n = 0usize;
            loop {
                let next = tokio::select! {
                    () = tx.closed() => {
                        // Nobody reads any more: stop the query on the server.
                        let _ = cancel.cancel_query(NoTls).await;
                        break;
                    }
                    next = rows.next() => next,
                };
                match next {
                    Some(Ok(row)) => {
                        for (i, b) in builders.iter_mut().enumerate() {
                            if let Err(e) = b.push(&row, i) {
                                let _ = tx.send(Err(ConnectorError::Execution(describe(&e)))).await;
                                return;
                            }
                        }
                        n += 1;
                        if n == BATCH_ROWS {
                            n = 0;
                            if send_batch(&tx, &batch_schema, &mut builders).await.is_err() {
                                let _ = cancel.cancel_query(NoTls).await;
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(ConnectorError::Execution(describe(&e)))).await;
                        break;
                    }
                    None => {
                        if n > 0 {
                            let _ = send_batch(&tx, &batch_schema, &mut builders).await;
                        }
                        break;
                    }
                }
            }
            connection_task.abort();
        });
        Ok(QueryStream {
            schema,
            batches: crate::receiver_stream(rx),
            warehouse_query_id: None,
        })
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

async fn send_batch(
    tx: &mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    schema: &SchemaRef,
    builders: &mut [Column],
) -> Result<(), ()> {
    let columns: Vec<ArrayRef> = builders.iter_mut().map(Column::finish).collect();
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| ConnectorError::Execution(e.to_string()));
    tx.send(batch).await.map_err(|_| ())
}
