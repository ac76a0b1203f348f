//! Databricks SQL over the Statement Execution API 2.0 (`/api/2.0/sql/statements`), as
//! documented by Databricks:
//!
//! - `POST /api/2.0/sql/statements` with the statement, its named `parameters`
//!   (`{name, value, type}`), the SQL warehouse id, catalog and schema, `wait_timeout` and
//!   `on_wait_timeout = CONTINUE`, `disposition = INLINE`, `format = JSON_ARRAY`;
//!   `Authorization: Bearer <the user's OAuth token>`;
//! - `status.state` `PENDING`/`RUNNING`: `GET /api/2.0/sql/statements/{id}` is polled (with
//!   backoff) until `SUCCEEDED`, `FAILED` (`status.error.error_code` and message), `CANCELED`
//!   or `CLOSED`;
//! - results come in chunks: the first inline, each naming the next
//!   (`next_chunk_internal_link`), fetched only as the client reads;
//! - dropping the stream before its end cancels the statement
//!   (`POST /api/2.0/sql/statements/{id}/cancel`);
//! - HTTP `401`/`403` are [`ConnectorError::Unauthorized`] (the query path refreshes the token
//!   once and retries); `429` and `5xx` are unavailability; other `4xx` carry `error_code` and a
//!   message (audit log only: it can quote data).
//!
//! Values arrive as JSON strings and are typed by `manifest.schema.columns[].type_name`
//! ([`arrow_type`]). The policy binds the tenant as `:sluice_tenant`, which is exactly the
//! API's named-parameter syntax: the statement is sent as written.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cancel::CancelOnDrop;
use crate::text;
use crate::{Connector, ConnectorError, QueryRequest, QueryStream, WarehouseKind};

/// Batches buffered between the fetching task and the response.
const CHANNEL_BATCHES: usize = 2;
/// Time allowed for one HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first request waits for a result before answering `PENDING`/`RUNNING`
/// (the API accepts 0 or 5–50 s).
const WAIT_TIMEOUT: &str = "10s";
/// First and longest wait between two status polls.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(2);

/// Settings of a Databricks connection.
#[derive(Debug, Clone)]
pub struct DatabricksOptions {
    /// The workspace URL, `https://<workspace>.cloud.databricks.com`.
    pub endpoint: String,
    /// The SQL warehouse id.
    pub warehouse_id: String,
    /// Unity Catalog catalog of unqualified names.
    pub catalog: Option<String>,
    /// Schema of unqualified names.
    pub schema: Option<String>,
}

/// Databricks SQL.
pub struct DatabricksConnector {
    options: DatabricksOptions,
    http: reqwest::Client,
}

impl DatabricksConnector {
    /// A connector for a workspace and SQL warehouse.
    pub fn new(options: DatabricksOptions) -> Result<Self, ConnectorError> {
        let http = crate::rest_client(HTTP_TIMEOUT)?;
        Ok(DatabricksConnector {
            options: DatabricksOptions {
                endpoint: options.endpoint.trim_end_matches('/').to_string(),
                ..options
            },
            http,
        })
    }
}

#[derive(Debug, Deserialize)]
struct Column {
    name: String,
    #[serde(default)]
    type_name: Option<String>,
    #[serde(default)]
    type_text: Option<String>,
    #[serde(default)]
    type_precision: Option<u8>,
    #[serde(default)]
    type_scale: Option<i8>,
}

#[derive(Debug, Default, Deserialize)]
struct ManifestSchema {
    #[serde(default)]
    columns: Vec<Column>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    schema: ManifestSchema,
}

#[derive(Debug, Default, Deserialize)]
struct Chunk {
    #[serde(default)]
    data_array: Option<Vec<Vec<Value>>>,
    #[serde(default)]
    next_chunk_index: Option<u64>,
    #[serde(default)]
    next_chunk_internal_link: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct StatusError {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<StatusError>,
    #[serde(default)]
    sql_state: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    statement_id: Option<String>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    manifest: Option<Manifest>,
    #[serde(default)]
    result: Option<Chunk>,
}

/// The HTTP error body: `{"error_code": "...", "message": "..."}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The Arrow type of a manifest column, from the documented `type_name`s and the DuckDB names
/// the `minilake` emulator reports (`INTEGER`, `VARCHAR`, `DECIMAL(10,2)`); anything else
/// (INTERVAL, ARRAY, MAP, STRUCT, sent as JSON text) is text.
fn arrow_type(c: &Column) -> DataType {
    let name = c
        .type_name
        .as_deref()
        .or(c.type_text.as_deref())
        .unwrap_or_default()
        .to_ascii_uppercase();
    let (base, args) = match name.split_once('(') {
        Some((b, rest)) => (b.trim().to_string(), rest.trim_end_matches(')').to_string()),
        None => (name.clone(), String::new()),
    };
    match base.as_str() {
        "BOOLEAN" => DataType::Boolean,
        "BYTE" | "TINYINT" => DataType::Int8,
        "SHORT" | "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "LONG" | "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "DECIMAL" => {
            // type_precision/type_scale, else the `DECIMAL(p,s)` of the type's text.
            let text = c.type_text.as_deref().unwrap_or(&name).to_string();
            let from_text = text
                .split_once('(')
                .map(|(_, r)| r.trim_end_matches(')').to_string())
                .unwrap_or(args);
            let mut parts = from_text.split(',').map(|p| p.trim().parse::<u8>().ok());
            let (p, s) = (
                c.type_precision.or(parts.next().flatten()),
                c.type_scale
                    .or(parts.next().flatten().and_then(|s| i8::try_from(s).ok())),
            );
            match (p, s) {
                (Some(p), Some(s)) if (1..=38).contains(&p) && s >= 0 && s as u8 <= p => {
                    DataType::Decimal128(p, s)
                }
                _ => DataType::Utf8,
            }
        }
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    }
}

impl DatabricksConnector {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.options.endpoint)
    }

    /// One exchange: the parsed body, or the error its status means.
    async fn exchange<T: serde::de::DeserializeOwned>(
        req: reqwest::RequestBuilder,
        token: &str,
    ) -> Result<T, ConnectorError> {
        let resp = req
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("User-Agent", "sluice/0.1")
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("databricks: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(ConnectorError::Unauthorized(format!(
                "databricks answered {status}"
            )));
        }
        if status == 429 || status >= 500 {
            return Err(ConnectorError::Unavailable(format!(
                "databricks answered {status}"
            )));
        }
        if status >= 400 {
            let body: ErrorBody = resp.json().await.unwrap_or_default();
            return Err(ConnectorError::Warehouse {
                code: body.error_code.unwrap_or_else(|| status.to_string()),
                message: body.message.unwrap_or_default(),
            });
        }
        resp.json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("databricks: bad answer: {e}")))
    }
}

/// A statement that ended without a result → its error.
fn ended(status: Status) -> ConnectorError {
    match status.state.as_str() {
        "FAILED" => {
            let e = status.error.unwrap_or_default();
            let code = match (e.error_code, status.sql_state) {
                (Some(c), Some(s)) => format!("{c}/{s}"),
                (Some(c), None) => c,
                (None, Some(s)) => s,
                (None, None) => "FAILED".into(),
            };
            ConnectorError::Warehouse {
                code,
                message: e.message.unwrap_or_default(),
            }
        }
        "CANCELED" | "CLOSED" => {
            ConnectorError::Execution(format!("databricks: statement {}", status.state))
        }
        other => ConnectorError::Execution(format!("databricks: unexpected state {other:?}")),
    }
}

/// A chunk's rows and the path of the next chunk (the internal link, else built from the
/// next chunk's index). Only these links are followed: `manifest.chunks` is not iterated.
fn rows(chunk: Option<Chunk>, id: &str) -> (Vec<Vec<Option<String>>>, Option<String>) {
    let chunk = chunk.unwrap_or_default();
    let next = chunk.next_chunk_internal_link.or_else(|| {
        chunk
            .next_chunk_index
            .map(|n| format!("/api/2.0/sql/statements/{id}/result/chunks/{n}"))
    });
    let rows = chunk
        .data_array
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.into_iter().map(text::cell_text).collect())
        .collect();
    (rows, next)
}

#[async_trait::async_trait]
impl Connector for DatabricksConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::Databricks
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        let token = crate::bearer(&request, "Databricks")?;
        let parameters = crate::named_params(&request, "Databricks", |name, value| {
            use crate::ParamValue as V;
            let kind = match value {
                V::Null | V::Text(_) | V::Tenant(_) | V::Attribute(_) => "STRING",
                // Refused before (lists are bound element by element here).
                V::TextList(_) | V::IntList(_) => "STRING",
                V::Bool(_) => "BOOLEAN",
                V::Int(_) => "BIGINT",
                V::Float(_) => "DOUBLE",
            };
            // A parameter without a value is NULL.
            match value.text() {
                Some(v) => json!({"name": name, "value": v, "type": kind}),
                None => json!({"name": name, "type": kind}),
            }
        })?;
        let o = &self.options;
        let mut body = json!({
            "warehouse_id": o.warehouse_id,
            "statement": request.sql,
            "wait_timeout": WAIT_TIMEOUT,
            "on_wait_timeout": "CONTINUE",
            "disposition": "INLINE",
            "format": "JSON_ARRAY",
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(c) = &o.catalog {
                obj.insert("catalog".into(), json!(c));
            }
            if let Some(s) = &o.schema {
                obj.insert("schema".into(), json!(s));
            }
            if !parameters.is_empty() {
                obj.insert("parameters".into(), Value::Array(parameters));
            }
        }
        let mut answer: Answer = Self::exchange(
            self.http
                .post(self.url("/api/2.0/sql/statements"))
                .json(&body),
            token,
        )
        .await?;
        let id = answer.statement_id.clone().unwrap_or_default();
        // From here on, leaving early cancels the statement.
        let mut cancel = CancelOnDrop::new(
            &self.http,
            (!id.is_empty()).then(|| self.url(&format!("/api/2.0/sql/statements/{id}/cancel"))),
            token,
            &[],
        );
        let mut wait = POLL_FIRST;
        while matches!(answer.status.state.as_str(), "PENDING" | "RUNNING") {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
            answer = Self::exchange(
                self.http
                    .get(self.url(&format!("/api/2.0/sql/statements/{id}"))),
                token,
            )
            .await?;
        }
        if answer.status.state != "SUCCEEDED" {
            cancel.disarm();
            return Err(ended(answer.status));
        }
        let columns = answer
            .manifest
            .map(|m| m.schema.columns)
            .unwrap_or_default();
        let schema: SchemaRef = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c.name.clone(), arrow_type(c), true))
                .collect::<Vec<_>>(),
        ));
        let (first, mut next) = rows(answer.result, &id);

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (http, token, schema_c) = (self.http.clone(), token.to_string(), Arc::clone(&schema));
        let base = self.options.endpoint.clone();
        let id_c = id.clone();
        tokio::spawn(async move {
            let mut cancel = cancel;
            if tx.send(text::batch(&schema_c, &first)).await.is_err() {
                return;
            }
            while let Some(link) = next.take() {
                let req = http.get(format!("{base}{link}"));
                let chunk: Chunk = match Self::exchange(req, &token).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let (rows, following) = rows(Some(chunk), &id_c);
                next = following;
                if tx.send(text::batch(&schema_c, &rows)).await.is_err() {
                    return;
                }
            }
            // Every chunk was read: nothing to cancel.
            cancel.disarm();
        });
        Ok(QueryStream {
            schema,
            batches: crate::receiver_stream(rx),
            warehouse_query_id: (!id.is_empty()).then_some(id),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn documented_type_names_map_to_arrow() {
        let c = |t: &str, p: Option<u8>, s: Option<i8>| Column {
            name: "c".into(),
            type_name: Some(t.into()),
            type_text: None,
            type_precision: p,
            type_scale: s,
        };
        // minilake's DuckDB names, precision and scale in the text.
        assert_eq!(
            arrow_type(&c("DECIMAL(10,2)", None, None)),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(arrow_type(&c("VARCHAR", None, None)), DataType::Utf8);
        assert_eq!(
            arrow_type(&c("TIMESTAMP WITH TIME ZONE", None, None)),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(arrow_type(&c("INT", None, None)), DataType::Int32);
        assert_eq!(arrow_type(&c("LONG", None, None)), DataType::Int64);
        assert_eq!(arrow_type(&c("BIGINT", None, None)), DataType::Int64);
        assert_eq!(
            arrow_type(&c("DECIMAL", Some(10), Some(2))),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(arrow_type(&c("DECIMAL", None, None)), DataType::Utf8);
        assert_eq!(arrow_type(&c("STRING", None, None)), DataType::Utf8);
        assert_eq!(
            arrow_type(&c("TIMESTAMP_NTZ", None, None)),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(arrow_type(&c("ARRAY", None, None)), DataType::Utf8);
    }

    #[test]
    fn failed_statements_carry_the_warehouse_code() {
        let e = ended(Status {
            state: "FAILED".into(),
            error: Some(StatusError {
                error_code: Some("BAD_REQUEST".into()),
                message: Some("[TABLE_OR_VIEW_NOT_FOUND] secret_table".into()),
            }),
            sql_state: Some("42P01".into()),
        });
        match e {
            ConnectorError::Warehouse { code, message } => {
                assert_eq!(code, "BAD_REQUEST/42P01");
                assert!(message.contains("secret_table"));
            }
            other => panic!("{other:?}"),
        }
    }
}
