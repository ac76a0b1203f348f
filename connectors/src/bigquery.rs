//! BigQuery over its REST API v2, as documented by Google:
//!
//! - `POST /bigquery/v2/projects/{project}/queries` (`jobs.query`) with the statement in
//!   GoogleSQL (`useLegacySql: false`), named parameters (`parameterMode: NAMED`,
//!   `queryParameters[]`), the default dataset, a page size (`maxResults`), `timeoutMs`, a
//!   `requestId` (idempotent retries) and `formatOptions.useInt64Timestamp` (timestamps as
//!   integer microseconds, not floating-point seconds); `Authorization: Bearer <the user's
//!   OAuth token>`;
//! - `jobComplete: false`: `GET /bigquery/v2/projects/{project}/queries/{jobId}`
//!   (`jobs.getQueryResults`) is polled until it is true;
//! - further pages are fetched with the same call and `pageToken`, only as the client reads;
//! - dropping the stream before its end cancels the job (`POST …/jobs/{jobId}/cancel`);
//! - HTTP `401`/`403` are [`ConnectorError::Unauthorized`] (the query path refreshes the token
//!   once and retries); `429` and `5xx` are unavailability; other errors carry
//!   `error.errors[0].reason` (`invalidQuery`, `notFound`, …) and a message (audit log only).
//!
//! Rows arrive as `{"f": [{"v": …}]}`, typed by `schema.fields` — including `RECORD` (Arrow
//! struct) and `REPEATED` (Arrow list) fields, nested to any depth. The policy binds the
//! tenant as `@sluice_tenant`, BigQuery's named-parameter syntax: the statement is sent as
//! written.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::cancel::CancelOnDrop;
use crate::{Connector, ConnectorError, QueryRequest, QueryStream, WarehouseKind};

/// Batches buffered between the fetching task and the response.
const CHANNEL_BATCHES: usize = 2;
/// Time allowed for one HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows per page (one page is one batch).
const PAGE_ROWS: u32 = 10_000;
/// How long one call waits server-side for the job to complete.
const WAIT_MS: u64 = 10_000;
/// First and longest wait between two polls of an incomplete job.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(2);
/// The public API.
pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// Settings of a BigQuery connection.
#[derive(Debug, Clone)]
pub struct BigQueryOptions {
    /// The API root, [`DEFAULT_ENDPOINT`] unless testing.
    pub endpoint: String,
    /// The project that runs (and pays for) the jobs.
    pub project: String,
    /// The dataset of unqualified table names.
    pub dataset: Option<String>,
    /// The jobs' location (`US`, `EU`, `europe-west1`…), when not the default.
    pub location: Option<String>,
    /// Job timeout.
    pub timeout: Duration,
}

/// BigQuery.
pub struct BigQueryConnector {
    options: BigQueryOptions,
    http: reqwest::Client,
}

impl BigQueryConnector {
    /// A connector for a project.
    pub fn new(options: BigQueryOptions) -> Result<Self, ConnectorError> {
        let http = crate::rest_client(HTTP_TIMEOUT)?;
        Ok(BigQueryConnector {
            options: BigQueryOptions {
                endpoint: options.endpoint.trim_end_matches('/').to_string(),
                ..options
            },
            http,
        })
    }
}

/// `TableFieldSchema`.
#[derive(Debug, Clone, Deserialize)]
struct FieldSchema {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fields: Vec<FieldSchema>,
}

#[derive(Debug, Default, Deserialize)]
struct TableSchema {
    #[serde(default)]
    fields: Vec<FieldSchema>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobReference {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    location: Option<String>,
}

/// `QueryResponse` and `GetQueryResultsResponse` share these fields.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    schema: Option<TableSchema>,
    #[serde(default)]
    job_reference: Option<JobReference>,
    #[serde(default)]
    job_complete: Option<bool>,
    #[serde(default)]
    rows: Option<Vec<Value>>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    errors: Option<Vec<ErrorProto>>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorProto {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

/// The Arrow type of a leaf field (documented GoogleSQL and legacy names).
fn leaf_type(kind: &str) -> DataType {
    match kind.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT64" => DataType::Int64,
        "FLOAT" | "FLOAT64" => DataType::Float64,
        "NUMERIC" => DataType::Decimal128(38, 9),
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "DATETIME" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "BYTES" => DataType::Binary,
        // STRING, BIGNUMERIC (76 digits), TIME, JSON, GEOGRAPHY, INTERVAL, RANGE: text.
        _ => DataType::Utf8,
    }
}

/// The Arrow field of a `TableFieldSchema`: RECORD → struct, REPEATED → list.
fn arrow_field(f: &FieldSchema) -> Field {
    let inner = match f.kind.to_ascii_uppercase().as_str() {
        "RECORD" | "STRUCT" => DataType::Struct(Fields::from(
            f.fields.iter().map(arrow_field).collect::<Vec<_>>(),
        )),
        other => leaf_type(other),
    };
    if f.mode.as_deref() == Some("REPEATED") {
        Field::new(
            f.name.clone(),
            DataType::List(Arc::new(Field::new("item", inner, true))),
            true,
        )
    } else {
        Field::new(f.name.clone(), inner, true)
    }
}

/// One `v` of a leaf, as the JSON the Arrow decoder reads for the field's type.
fn leaf(kind: &str, v: Value) -> Result<Value, String> {
    let Value::String(s) = v else {
        return Ok(v);
    };
    Ok(match kind.to_ascii_uppercase().as_str() {
        "BOOLEAN" | "BOOL" => Value::Bool(match s.as_str() {
            "true" | "TRUE" => true,
            "false" | "FALSE" => false,
            _ => return Err(format!("not a boolean: {s:?}")),
        }),
        // useInt64Timestamp: integer microseconds; without it (a server that ignores the
        // option), floating-point seconds such as `1.705314600123456E9`.
        "TIMESTAMP" => Value::from(match s.parse::<i64>() {
            Ok(micros) => micros,
            Err(_) => s
                .parse::<f64>()
                .ok()
                .filter(|secs| secs.is_finite())
                .map(|secs| (secs * 1e6).round() as i64)
                .ok_or_else(|| format!("not a timestamp: {s:?}"))?,
        }),
        // Arrow's JSON decoder reads binary as hex.
        "BYTES" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .map_err(|e| format!("not base64: {e}"))?;
            let mut hex = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            Value::String(hex)
        }
        // DATETIME comes as `2024-01-01T10:00:00` or with a space; both parse.
        _ => Value::String(s),
    })
}

/// One cell `{"v": …}` of `f` → plain JSON.
fn cell(f: &FieldSchema, v: Value) -> Result<Value, String> {
    let value = match v {
        Value::Object(mut o) => o.remove("v").unwrap_or(Value::Null),
        other => other,
    };
    if value.is_null() {
        return Ok(Value::Null);
    }
    if f.mode.as_deref() == Some("REPEATED") {
        let Value::Array(items) = value else {
            return Err(format!("{}: a repeated field without a list", f.name));
        };
        return items
            .into_iter()
            .map(|item| single(f, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    single(f, value)
}

/// A value of `f` without its repetition: a record or a leaf.
fn single(f: &FieldSchema, value: Value) -> Result<Value, String> {
    let value = match value {
        Value::Object(mut o) if o.contains_key("v") && o.len() == 1 => {
            o.remove("v").unwrap_or(Value::Null)
        }
        other => other,
    };
    if value.is_null() {
        return Ok(Value::Null);
    }
    match f.kind.to_ascii_uppercase().as_str() {
        "RECORD" | "STRUCT" => record(&f.fields, value).map(Value::Object),
        kind => leaf(kind, value),
    }
}

/// `{"f": [...]}` of `fields` → a JSON object keyed by field name.
fn record(fields: &[FieldSchema], row: Value) -> Result<Map<String, Value>, String> {
    let cells = match row {
        Value::Object(mut o) => match o.remove("f") {
            Some(Value::Array(cells)) => cells,
            _ => return Err("a row without f".into()),
        },
        _ => return Err("a row that is not an object".into()),
    };
    let mut out = Map::with_capacity(fields.len());
    for (f, c) in fields.iter().zip(cells) {
        out.insert(f.name.clone(), cell(f, c)?);
    }
    Ok(out)
}

/// One page of rows → one batch.
fn batch(
    schema: &SchemaRef,
    fields: &[FieldSchema],
    rows: Vec<Value>,
) -> Result<RecordBatch, ConnectorError> {
    let bad = |e: String| ConnectorError::Execution(format!("bigquery: undecodable row: {e}"));
    let objects = rows
        .into_iter()
        .map(|r| record(fields, r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(objects.len().max(1))
        .build_decoder()
        .map_err(|e| bad(e.to_string()))?;
    decoder
        .serialize(&objects)
        .map_err(|e| bad(e.to_string()))?;
    Ok(decoder
        .flush()
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

impl BigQueryConnector {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/bigquery/v2/projects/{}{path}",
            self.options.endpoint, self.options.project
        )
    }

    /// One exchange: the parsed answer, or the error its status means.
    async fn exchange(req: reqwest::RequestBuilder, token: &str) -> Result<Answer, ConnectorError> {
        let resp = req
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("User-Agent", "sluice/0.1")
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("bigquery: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            // 403 is also BigQuery's answer for quota and billing problems: the body says which.
            let body: ErrorBody = resp.json().await.unwrap_or_default();
            let reason = body
                .error
                .as_ref()
                .and_then(|e| e.errors.first())
                .and_then(|e| e.reason.clone())
                .unwrap_or_default();
            if status == 403 && (reason.contains("Exceeded") || reason == "quotaExceeded") {
                return Err(ConnectorError::Unavailable(format!("bigquery: {reason}")));
            }
            return Err(ConnectorError::Unauthorized(format!(
                "bigquery answered {status}"
            )));
        }
        if status == 429 || status >= 500 {
            return Err(ConnectorError::Unavailable(format!(
                "bigquery answered {status}"
            )));
        }
        if status >= 400 {
            let body: ErrorBody = resp.json().await.unwrap_or_default();
            let detail = body.error.unwrap_or_default();
            let first = detail.errors.into_iter().next().unwrap_or_default();
            return Err(ConnectorError::Warehouse {
                code: first
                    .reason
                    .or(detail.status)
                    .unwrap_or_else(|| status.to_string()),
                message: detail.message.or(first.message).unwrap_or_default(),
            });
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("bigquery: bad answer: {e}")))?;
        // `errors` in a 200 can be warnings; with no result schema the job failed (the
        // documented answer is an HTTP error; emulators answer 200 this way).
        let no_schema = answer.schema.as_ref().is_none_or(|s| s.fields.is_empty());
        if let Some(first) = answer.errors.as_ref().and_then(|e| e.first())
            && answer.job_complete == Some(true)
            && no_schema
        {
            return Err(ConnectorError::Warehouse {
                code: first.reason.clone().unwrap_or_else(|| "jobFailed".into()),
                message: first.message.clone().unwrap_or_default(),
            });
        }
        Ok(answer)
    }
}

/// `getQueryResults` of a job: the query string of one call.
fn results_query(location: Option<&str>, page_token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("maxResults", PAGE_ROWS.to_string()),
        ("timeoutMs", WAIT_MS.to_string()),
        ("formatOptions.useInt64Timestamp", "true".into()),
    ];
    if let Some(l) = location {
        q.push(("location", l.to_string()));
    }
    if let Some(t) = page_token {
        q.push(("pageToken", t.to_string()));
    }
    q
}

#[async_trait::async_trait]
impl Connector for BigQueryConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::BigQuery
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        let token = crate::bearer(&request, "BigQuery")?;
        let parameters = crate::named_params(&request, "BigQuery", |name, value| {
            use crate::ParamValue as V;
            let kind = match value {
                V::Null | V::Text(_) | V::Tenant(_) | V::Attribute(_) => "STRING",
                // Refused before (lists are bound element by element here).
                V::TextList(_) | V::IntList(_) => "STRING",
                V::Bool(_) => "BOOL",
                V::Int(_) => "INT64",
                V::Float(_) => "FLOAT64",
            };
            json!({"name": name, "parameterType": {"type": kind},
                   "parameterValue": {"value": value.text()}})
        })?;
        let o = &self.options;
        let mut body = json!({
            "query": request.sql,
            "useLegacySql": false,
            "maxResults": PAGE_ROWS,
            "timeoutMs": WAIT_MS,
            "requestId": uuid::Uuid::new_v4().to_string(),
            "formatOptions": {"useInt64Timestamp": true},
            "jobTimeoutMs": o.timeout.as_millis().to_string(),
            "labels": {"sluice_request": label(request.request_id)},
        });
        if let Some(obj) = body.as_object_mut() {
            if !parameters.is_empty() {
                obj.insert("parameterMode".into(), json!("NAMED"));
                obj.insert("queryParameters".into(), Value::Array(parameters));
            }
            if let Some(d) = &o.dataset {
                obj.insert(
                    "defaultDataset".into(),
                    json!({"projectId": o.project, "datasetId": d}),
                );
            }
            if let Some(l) = &o.location {
                obj.insert("location".into(), json!(l));
            }
        }
        let mut answer =
            Self::exchange(self.http.post(self.url("/queries")).json(&body), token).await?;
        let job = answer.job_reference.take().unwrap_or_default();
        let job_id = job.job_id.unwrap_or_default();
        let location = job.location.or_else(|| o.location.clone());
        // From here on, leaving early cancels the job.
        let mut cancel = CancelOnDrop::new(
            &self.http,
            (!job_id.is_empty()).then(|| {
                let mut u = self.url(&format!("/jobs/{job_id}/cancel"));
                if let Some(l) = &location {
                    u.push_str(&format!("?location={l}"));
                }
                u
            }),
            token,
            &[],
        );
        let results_url = self.url(&format!("/queries/{job_id}"));
        let mut wait = POLL_FIRST;
        while answer.job_complete != Some(true) {
            if job_id.is_empty() {
                return Err(ConnectorError::Execution(
                    "bigquery: an incomplete job without a job id".into(),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
            answer = Self::exchange(
                self.http
                    .get(&results_url)
                    .query(&results_query(location.as_deref(), None)),
                token,
            )
            .await?;
        }
        let fields = answer.schema.take().unwrap_or_default().fields;
        let schema: SchemaRef = Arc::new(Schema::new(
            fields.iter().map(arrow_field).collect::<Vec<_>>(),
        ));
        let first = answer.rows.take().unwrap_or_default();
        let mut page_token = answer.page_token.take();
        if page_token.is_none() {
            cancel.disarm();
        }

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (http, token, schema_c) = (self.http.clone(), token.to_string(), Arc::clone(&schema));
        tokio::spawn(async move {
            let mut cancel = cancel;
            if tx.send(batch(&schema_c, &fields, first)).await.is_err() {
                return;
            }
            while let Some(t) = page_token.take() {
                let req = http
                    .get(&results_url)
                    .query(&results_query(location.as_deref(), Some(&t)));
                let mut page = match Self::exchange(req, &token).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                page_token = page.page_token.take();
                let rows = page.rows.take().unwrap_or_default();
                if tx.send(batch(&schema_c, &fields, rows)).await.is_err() {
                    return;
                }
            }
            // Every page was read: nothing to cancel.
            cancel.disarm();
        });
        Ok(QueryStream {
            schema,
            batches: crate::receiver_stream(rx),
            warehouse_query_id: (!job_id.is_empty()).then_some(job_id),
        })
    }
}

/// A label value: lowercase letters, digits, `_` and `-`, at most 63 characters.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    fn schema_of(v: Value) -> Vec<FieldSchema> {
        serde_json::from_value::<TableSchema>(v).unwrap().fields
    }

    #[test]
    fn nested_and_repeated_fields_decode_into_structs_and_lists() {
        let fields = schema_of(json!({"fields": [
            {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "ok", "type": "BOOLEAN"},
            {"name": "at", "type": "TIMESTAMP"},
            {"name": "raw", "type": "BYTES"},
            {"name": "amount", "type": "NUMERIC"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "addr", "type": "RECORD", "fields": [
                {"name": "city", "type": "STRING"},
                {"name": "zips", "type": "INTEGER", "mode": "REPEATED"}
            ]}
        ]}));
        let schema: SchemaRef = Arc::new(Schema::new(
            fields.iter().map(arrow_field).collect::<Vec<_>>(),
        ));
        let rows = vec![
            json!({"f": [
                {"v": "7"}, {"v": "true"}, {"v": "1700000000000001"}, {"v": "aGk="},
                {"v": "12.5"}, {"v": [{"v": "a"}, {"v": "b"}]},
                {"v": {"f": [{"v": "Oslo"}, {"v": [{"v": "150"}]}]}}
            ]}),
            json!({"f": [{"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": null},
                         {"v": []}, {"v": null}]}),
        ];
        let b = batch(&schema, &fields, rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(b.column(1).as_boolean().value(0));
        assert_eq!(
            b.column(2)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_000_001
        );
        assert_eq!(b.column(3).as_binary::<i32>().value(0), b"hi");
        let tags = b.column(5).as_list::<i32>();
        assert_eq!(tags.value(0).as_string::<i32>().value(1), "b");
        let addr = b.column(6).as_struct();
        assert_eq!(addr.column(0).as_string::<i32>().value(0), "Oslo");
        assert!(addr.is_null(1) && b.column(0).is_null(1));
        // A value that is not its type is an error, never a silent null.
        let bad = vec![
            json!({"f": [{"v": "x"}, {"v": null}, {"v": null}, {"v": null},
                                    {"v": null}, {"v": []}, {"v": null}]}),
        ];
        assert!(batch(&schema, &fields, bad).is_err());
    }

    #[test]
    fn labels_are_valid_label_values() {
        assert_eq!(label("Req:ABC/1"), "req_abc_1");
        assert_eq!(label(&"x".repeat(100)).len(), 63);
    }
}
