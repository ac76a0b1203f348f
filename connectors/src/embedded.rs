//! The embedded warehouse: DataFusion over local Parquet and CSV files declared in the config.
//!
//! Queries run on a dedicated runtime so a CPU-heavy plan never stalls the HTTP server's
//! runtime; batches cross over a bounded channel, so a slow client back-pressures execution and
//! a dropped response cancels it.

/// Stack of each engine thread (virtual memory; only what is touched is used).
const ENGINE_STACK_BYTES: usize = 256 << 20;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{Connector, ConnectorError, QueryRequest, QueryStream, WarehouseKind};

/// Batches buffered between the engine and the HTTP response.
const CHANNEL_BATCHES: usize = 2;
/// Rows per record batch produced by the engine.
const BATCH_ROWS: usize = 8192;
/// The catalog under which declared schemas are registered.
pub const DEFAULT_CATALOG: &str = "datafusion";

/// A file format the embedded engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
}

/// One table served by the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedTable {
    /// Schema it is registered under.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// A file, or a directory of files of the same format.
    pub path: PathBuf,
    /// File format.
    pub format: FileFormat,
}

/// Options of the embedded engine.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// Worker threads of the engine's own runtime.
    pub threads: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { threads: 2 }
    }
}

/// Owns the engine's runtime; shuts it down without blocking when dropped.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// DataFusion over local files.
pub struct EmbeddedConnector {
    ctx: SessionContext,
    runtime: EngineRuntime,
}

fn plan_err(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Plan(e.to_string())
}

impl EmbeddedConnector {
    /// Registers every table. Fails if a file is missing or unreadable.
    pub async fn new(
        tables: &[EmbeddedTable],
        options: EmbeddedOptions,
    ) -> Result<Self, ConnectorError> {
        let config = SessionConfig::new()
            .with_target_partitions(options.threads.max(1))
            .with_batch_size(BATCH_ROWS)
            .with_information_schema(false)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_str(
                "datafusion.execution.parquet.schema_force_view_types",
                "false",
            )
            .set_str("datafusion.catalog.default_catalog", DEFAULT_CATALOG);
        let ctx = SessionContext::new_with_config(config);
        let catalog = ctx
            .catalog(DEFAULT_CATALOG)
            .ok_or_else(|| ConnectorError::Config("default catalog missing".into()))?;
        for t in tables {
            if catalog.schema(&t.schema).is_none() {
                catalog
                    .register_schema(&t.schema, Arc::new(MemorySchemaProvider::new()))
                    .map_err(|e| ConnectorError::Config(e.to_string()))?;
            }
            let path = t.path.to_str().ok_or_else(|| {
                ConnectorError::Config(format!("path of {}.{} is not UTF-8", t.schema, t.table))
            })?;
            if !t.path.exists() {
                return Err(ConnectorError::Config(format!(
                    "{}.{}: {} does not exist",
                    t.schema,
                    t.table,
                    t.path.display()
                )));
            }
            let name = TableReference::partial(t.schema.as_str(), t.table.as_str());
            let result = match t.format {
                FileFormat::Parquet => {
                    ctx.register_parquet(name, path, ParquetReadOptions::default())
                        .await
                }
                FileFormat::Csv => ctx.register_csv(name, path, CsvReadOptions::new()).await,
            };
            result.map_err(|e| ConnectorError::Config(format!("{}.{}: {e}", t.schema, t.table)))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("sluice-embedded")
            // DataFusion parses, plans and executes recursively; the policy admits trees up to
            // a bounded depth (`sluice_policy::MAX_DEPTH_BOUND`), which fit in this.
            .thread_stack_size(ENGINE_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::Config(format!("engine runtime: {e}")))?;
        Ok(EmbeddedConnector {
            ctx,
            runtime: EngineRuntime(Some(runtime)),
        })
    }

    /// The Arrow schema of a registered table, for validating declared columns at startup.
    pub async fn table_schema(&self, schema: &str, table: &str) -> Option<SchemaRef> {
        let provider = self
            .ctx
            .table_provider(TableReference::partial(schema, table))
            .await
            .ok()?;
        Some(provider.schema())
    }
}

#[async_trait::async_trait]
impl Connector for EmbeddedConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::Embedded
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        // Defense in depth: the policy admits only queries, and the engine refuses the rest too.
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(request.sql, options)
            .await
            .map_err(plan_err)?;

        if !request.params.is_empty() {
            let types = df.logical_plan().get_parameter_types().map_err(plan_err)?;
            let mut values = Vec::with_capacity(request.params.len());
            for (i, p) in request.params.iter().enumerate() {
                if p.name.is_some() {
                    return Err(ConnectorError::Plan(
                        "named parameters are not supported".into(),
                    ));
                }
                use crate::ParamValue as V;
                let given = match &p.value {
                    V::Null => ScalarValue::Null,
                    V::Bool(b) => ScalarValue::Boolean(Some(*b)),
                    V::Int(x) => ScalarValue::Int64(Some(*x)),
                    V::Float(x) => ScalarValue::Float64(Some(*x)),
                    V::Text(s) | V::Tenant(s) | V::Attribute(s) => {
                        ScalarValue::Utf8(Some(s.clone()))
                    }
                    V::TextList(_) | V::IntList(_) => {
                        return Err(ConnectorError::Plan(
                            "list parameters are not supported".into(),
                        ));
                    }
                };
                let value = match types.get(&format!("${}", i + 1)) {
                    Some(Some(t)) => given.cast_to(t).map_err(|_| {
                        ConnectorError::Parameter(format!(
                            "parameter ${}: {} does not fit the type {t} the query gives it",
                            i + 1,
                            p.value.kind()
                        ))
                    })?,
                    _ => given,
                };
                values.push(value);
            }
            let df = df
                .with_param_values(ParamValues::from(values))
                .map_err(plan_err)?;
            return self.run(df).await;
        }
        self.run(df).await
    }
}

impl EmbeddedConnector {
    async fn run(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<QueryStream, ConnectorError> {
        let schema: SchemaRef = Arc::clone(df.schema().inner());
        let Some(rt) = self.runtime.0.as_ref() else {
            return Err(ConnectorError::Unavailable("engine is shut down".into()));
        };
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let mut stream = match df.execute_stream().await {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(plan_err(e)));
                    return;
                }
            };
            loop {
                // Stop as soon as the receiver is gone (client left, limit reached, timeout),
                // even while a long operator is still working on its first batch: dropping
                // the stream cancels the remaining work.
                let item = tokio::select! {
                    () = tx.closed() => return,
                    item = stream.next() => item,
                };
                let Some(item) = item else { return };
                let item = item.map_err(|e| ConnectorError::Execution(e.to_string()));
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        ready_rx
            .await
            .map_err(|_| ConnectorError::Execution("engine task ended early".into()))??;
        let batches = crate::receiver_stream(rx);
        Ok(QueryStream {
            schema,
            batches,
            warehouse_query_id: None,
        })
    }
}
