//! Snowflake over the SQL API v2 (`/api/v2/statements`), as documented by Snowflake:
//!
//! - `POST /api/v2/statements?requestId=<uuid>` with the statement, its bindings, timeout,
//!   database, schema, warehouse and role; `Authorization: Bearer <the user's OAuth token>` and
//!   `X-Snowflake-Authorization-Token-Type: OAUTH`;
//! - `200` carries the result's first partition; `202` means "still running": the statement's
//!   status URL is polled (with backoff) until it answers `200`;
//! - further partitions are fetched with `GET /api/v2/statements/{handle}?partition=N` as the
//!   client reads (never the whole result at once);
//! - dropping the stream before its end cancels the statement
//!   (`POST /api/v2/statements/{handle}/cancel`);
//! - `401` is [`ConnectorError::Unauthorized`] (the query path refreshes the token once and
//!   retries); `403` (the role lacks a privilege) and `422` carry `code`, `sqlState` and a
//!   message (audit log only: it can quote data); `408`, `429` and `5xx` are unavailability.
//!
//! Values arrive as strings (`jsonv2`) and are typed by `resultSetMetaData.rowType`.
//! Placeholders: the policy writes the tenant as `:1`; the SQL API documents `?` with one
//! binding per placeholder, so the statement is re-serialized through sqlparser's AST with each
//! `:1` turned into `?` and bound in order.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cancel::CancelOnDrop;
use crate::{Connector, ConnectorError, QueryRequest, QueryStream, UserCredential, WarehouseKind};

/// The header that says the bearer token is an OAuth token.
const TOKEN_TYPE: &[(&str, &str)] = &[("X-Snowflake-Authorization-Token-Type", "OAUTH")];
/// Batches buffered between the fetching task and the response.
const CHANNEL_BATCHES: usize = 2;
/// Time allowed for one HTTP exchange with Snowflake.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// First and longest wait between two status polls of a running statement.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(2);
/// Largest precision decoded into Decimal128 (Snowflake's NUMBER goes to 38).
const MAX_DECIMAL_PRECISION: u8 = 38;

/// Settings of a Snowflake connection.
#[derive(Debug, Clone)]
pub struct SnowflakeOptions {
    /// The account URL, `https://<account>.snowflakecomputing.com`.
    pub endpoint: String,
    /// Database of unqualified names.
    pub database: Option<String>,
    /// Schema of unqualified names.
    pub schema: Option<String>,
    /// Virtual warehouse.
    pub warehouse: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Statement timeout.
    pub timeout: Duration,
}

/// Snowflake.
pub struct SnowflakeConnector {
    options: SnowflakeOptions,
    http: reqwest::Client,
}

impl SnowflakeConnector {
    /// A connector for an account.
    pub fn new(options: SnowflakeOptions) -> Result<Self, ConnectorError> {
        let http = crate::rest_client(HTTP_TIMEOUT)?;
        Ok(SnowflakeConnector {
            options: SnowflakeOptions {
                endpoint: options.endpoint.trim_end_matches('/').to_string(),
                ..options
            },
            http,
        })
    }
}

/// `:k` placeholders → `?` (the SQL API binds `?` by position), in text order: returns the SQL
/// and, for each `?` in order, the number `k` it stood for. The placeholders are located by
/// the tokenizer (text order, byte spans) and checked against the parse tree's, so a value can
/// never be bound to another placeholder's position (the tenant's least of all).
pub fn positional(sql: &str) -> Result<(String, Vec<usize>), ConnectorError> {
    use sqlparser::ast::{Expr, Value as SqlValue, Visit, Visitor};
    use sqlparser::tokenizer::{Token, Tokenizer};
    use std::ops::ControlFlow;
    let lost = || ConnectorError::Plan("the statement's parameters could not be located".into());
    struct Numbers(Vec<usize>, bool);
    impl Visitor for Numbers {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && let SqlValue::Placeholder(p) = &v.value
            {
                match p.strip_prefix(':').and_then(|k| k.parse::<usize>().ok()) {
                    Some(k) => self.0.push(k),
                    None => self.1 = true,
                }
            }
            ControlFlow::Continue(())
        }
    }
    let dialect = sqlparser::dialect::SnowflakeDialect {};
    let statements = sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| ConnectorError::Plan(format!("cannot re-parse the statement: {e}")))?;
    let mut in_tree = Numbers(vec![], false);
    let _ = statements.visit(&mut in_tree);
    if in_tree.1 {
        return Err(ConnectorError::Plan(
            "Snowflake statements take numbered parameters (:1, :2 ...) only".into(),
        ));
    }
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| ConnectorError::Plan(format!("cannot re-read the statement: {e}")))?;
    // Byte offsets of token locations, in one forward pass (tokens come in text order).
    let mut cursor = Cursor {
        sql,
        byte: 0,
        line: 1,
        column: 1,
    };
    // (start, end, k) of each `:k`, in text order.
    let mut found: Vec<(usize, usize, usize)> = vec![];
    for w in tokens.windows(2) {
        if let (Token::Colon, Token::Number(n, false)) = (&w[0].token, &w[1].token)
            && w[0].span.end == w[1].span.start
        {
            let k: usize = n.parse().map_err(|_| lost())?;
            let start = cursor.seek(w[0].span.start).ok_or_else(lost)?;
            let digits = cursor.seek(w[1].span.start).ok_or_else(lost)?;
            found.push((start, digits + n.len(), k));
        }
    }
    let mut a: Vec<usize> = found.iter().map(|f| f.2).collect();
    let mut b = in_tree.0.clone();
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        return Err(lost());
    }
    let mut text = String::with_capacity(sql.len());
    let mut at = 0;
    for (start, end, _) in &found {
        text.push_str(sql.get(at..*start).ok_or_else(lost)?);
        text.push('?');
        at = *end;
    }
    text.push_str(sql.get(at..).ok_or_else(lost)?);
    Ok((text, found.into_iter().map(|f| f.2).collect()))
}

/// Walks a text forward from line/column locations (1-based, in characters) to byte offsets.
struct Cursor<'a> {
    sql: &'a str,
    byte: usize,
    line: u64,
    column: u64,
}

impl Cursor<'_> {
    /// The byte offset of `to`, which must not be before the cursor.
    fn seek(&mut self, to: sqlparser::tokenizer::Location) -> Option<usize> {
        if (to.line, to.column) < (self.line, self.column) {
            return None;
        }
        let mut chars = self.sql.get(self.byte..)?.chars();
        while (self.line, self.column) < (to.line, to.column) {
            let c = chars.next()?;
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        Some(self.byte)
    }
}

/// A parameter as a Snowflake SQL API binding.
fn binding(v: &crate::ParamValue) -> Value {
    use crate::ParamValue as V;
    let kind = match v {
        V::Null | V::Text(_) | V::Tenant(_) | V::Attribute(_) => "TEXT",
        // Refused before (lists are bound element by element here).
        V::TextList(_) | V::IntList(_) => "TEXT",
        V::Bool(_) => "BOOLEAN",
        V::Int(_) => "FIXED",
        V::Float(_) => "REAL",
    };
    json!({"type": kind, "value": v.text()})
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowType {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    precision: Option<u32>,
    #[serde(default)]
    scale: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    row_type: Vec<RowType>,
    #[serde(default)]
    partition_info: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    statement_handle: Option<String>,
    #[serde(default)]
    statement_status_url: Option<String>,
    #[serde(default)]
    result_set_meta_data: Option<Meta>,
    #[serde(default)]
    data: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    sql_state: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The Arrow type of a rowType entry (documented type names; anything else is text).
fn arrow_type(t: &RowType) -> DataType {
    match t.kind.to_ascii_lowercase().as_str() {
        "fixed" => match (t.scale.unwrap_or(0), t.precision.unwrap_or(38)) {
            (0, p) if p <= 18 => DataType::Int64,
            (s, p) if p as u8 <= MAX_DECIMAL_PRECISION && (0..=37).contains(&s) => {
                DataType::Decimal128(p as u8, s as i8)
            }
            _ => DataType::Utf8,
        },
        "real" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "timestamp_ltz" | "timestamp_tz" => {
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        }
        "binary" => DataType::Binary,
        // text, time, variant, object, array, and emulators' own names.
        _ => DataType::Utf8,
    }
}

/// `"1700000000.123456789"` (optionally followed by a time-zone offset) → nanoseconds.
fn epoch_nanos(s: &str) -> Option<i64> {
    let s = s.split_whitespace().next()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().ok()?;
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: i64 = frac.parse().ok()?;
    let signed = if secs < 0 || s.starts_with('-') {
        -nanos
    } else {
        nanos
    };
    secs.checked_mul(1_000_000_000)?.checked_add(signed)
}

/// A decimal string at `scale` → the Decimal128 integer.
fn decimal(s: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut frac = frac.to_string();
    let scale = usize::try_from(scale).ok()?;
    if frac.len() > scale {
        return None;
    }
    while frac.len() < scale {
        frac.push('0');
    }
    let v: i128 = format!("{int}{frac}").parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Builds one batch from `jsonv2` rows.
fn batch(schema: &SchemaRef, rows: &[Vec<Option<String>>]) -> Result<RecordBatch, ConnectorError> {
    let bad = |c: &str| ConnectorError::Execution(format!("undecodable value in column {c}"));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let cell = |r: &Vec<Option<String>>| r.get(i).cloned().flatten();
        let array: ArrayRef = match f.data_type() {
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Some(v) => b.append_value(v.parse().map_err(|_| bad(f.name()))?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Decimal128(p, s) => {
                let mut b = Decimal128Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Some(v) => b.append_value(decimal(&v, *s).ok_or_else(|| bad(f.name()))?),
                        None => b.append_null(),
                    }
                }
                Arc::new(
                    b.finish()
                        .with_precision_and_scale(*p, *s)
                        .map_err(|e| ConnectorError::Execution(e.to_string()))?,
                )
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Some(v) => b.append_value(v.parse().map_err(|_| bad(f.name()))?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for r in rows {
                    match cell(r).map(|v| v.to_ascii_lowercase()) {
                        Some(v) if v == "true" || v == "1" => b.append_value(true),
                        Some(v) if v == "false" || v == "0" => b.append_value(false),
                        Some(_) => return Err(bad(f.name())),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Date32 => {
                let mut b = Date32Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Some(v) => b.append_value(v.parse().map_err(|_| bad(f.name()))?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(_, tz) => {
                let mut b = TimestampNanosecondBuilder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Some(v) => b.append_value(epoch_nanos(&v).ok_or_else(|| bad(f.name()))?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish().with_timezone_opt(tz.clone()))
            }
            DataType::Binary => {
                let mut b = BinaryBuilder::new();
                for r in rows {
                    match cell(r) {
                        Some(v) => {
                            let bytes = (0..v.len())
                                .step_by(2)
                                .map(|k| {
                                    v.get(k..k + 2).and_then(|h| u8::from_str_radix(h, 16).ok())
                                })
                                .collect::<Option<Vec<u8>>>()
                                .ok_or_else(|| bad(f.name()))?;
                            b.append_value(bytes);
                        }
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for r in rows {
                    b.append_option(cell(r));
                }
                Arc::new(b.finish())
            }
        };
        columns.push(array);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| ConnectorError::Execution(e.to_string()))
}

impl SnowflakeConnector {
    fn headers(&self, req: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
        req.bearer_auth(token)
            .header("X-Snowflake-Authorization-Token-Type", "OAUTH")
            .header("Accept", "application/json")
            .header("User-Agent", "sluice/0.1")
    }

    /// One exchange: the parsed answer and its status.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Answer), ConnectorError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("snowflake: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(ConnectorError::Unauthorized(format!(
                "snowflake answered {status}"
            )));
        }
        if status == 408 || status == 429 || status >= 500 {
            return Err(ConnectorError::Unavailable(format!(
                "snowflake answered {status}"
            )));
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("snowflake: bad answer: {e}")))?;
        if status >= 400 {
            return Err(ConnectorError::Warehouse {
                code: format!(
                    "{}/{}",
                    answer.code.as_deref().unwrap_or("?"),
                    answer.sql_state.as_deref().unwrap_or("?")
                ),
                message: answer.message.unwrap_or_default(),
            });
        }
        Ok((status, answer))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.options.endpoint)
        }
    }
}

#[async_trait::async_trait]
impl Connector for SnowflakeConnector {
    fn kind(&self) -> WarehouseKind {
        WarehouseKind::Snowflake
    }

    async fn execute(&self, request: QueryRequest<'_>) -> Result<QueryStream, ConnectorError> {
        let Some(UserCredential::Bearer(token)) = request.credential else {
            return Err(ConnectorError::Config(
                "a Snowflake connection needs an OAuth token (credential = \"oauth\")".into(),
            ));
        };
        let (statement, order) = positional(request.sql)?;
        let mut bindings = serde_json::Map::new();
        for (j, k) in order.iter().enumerate() {
            let p = k
                .checked_sub(1)
                .and_then(|i| request.params.get(i))
                .ok_or_else(|| {
                    ConnectorError::Plan(format!("the statement's parameter :{k} has no value"))
                })?;
            if p.value.is_list() {
                return Err(ConnectorError::Plan(
                    "Snowflake takes no list parameters".into(),
                ));
            }
            bindings.insert((j + 1).to_string(), binding(&p.value));
        }
        let o = &self.options;
        let mut body = json!({
            "statement": statement,
            "timeout": o.timeout.as_secs().max(1),
            "database": o.database,
            "schema": o.schema,
            "warehouse": o.warehouse,
            "role": o.role,
            "parameters": {"MULTI_STATEMENT_COUNT": "1"},
        });
        if !bindings.is_empty()
            && let Some(obj) = body.as_object_mut()
        {
            obj.insert("bindings".into(), Value::Object(bindings));
        }
        let request_id = uuid::Uuid::new_v4();
        let post = self
            .http
            .post(self.url(&format!("/api/v2/statements?requestId={request_id}")))
            .json(&body);
        let (mut status, mut answer) = self.exchange(self.headers(post, token)).await?;
        let handle = answer.statement_handle.clone().unwrap_or_default();
        // From here on, leaving early cancels the statement.
        let cancel = CancelOnDrop::new(
            &self.http,
            (!handle.is_empty()).then(|| self.url(&format!("/api/v2/statements/{handle}/cancel"))),
            token,
            TOKEN_TYPE,
        );
        let mut wait = POLL_FIRST;
        while status == 202 {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
            let url = answer
                .statement_status_url
                .clone()
                .unwrap_or_else(|| format!("/api/v2/statements/{handle}"));
            (status, answer) = self
                .exchange(self.headers(self.http.get(self.url(&url)), token))
                .await?;
        }
        let meta = answer
            .result_set_meta_data
            .take()
            .ok_or_else(|| ConnectorError::Execution("snowflake: no result metadata".into()))?;
        let schema: SchemaRef = Arc::new(Schema::new(
            meta.row_type
                .iter()
                .map(|t| Field::new(t.name.clone(), arrow_type(t), true))
                .collect::<Vec<_>>(),
        ));
        let partitions = meta.partition_info.as_ref().map_or(1, Vec::len).max(1);
        let first = answer.data.take().unwrap_or_default();

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (http, token, schema_c) = (self.http.clone(), token.to_string(), Arc::clone(&schema));
        let partition_url = move |n: usize| format!("/api/v2/statements/{handle}?partition={n}");
        let base = self.options.endpoint.clone();
        tokio::spawn(async move {
            let mut cancel = cancel;
            let send = |rows: Vec<Vec<Option<String>>>| {
                let tx = tx.clone();
                let schema = Arc::clone(&schema_c);
                async move { tx.send(batch(&schema, &rows)).await.is_ok() }
            };
            if !send(first).await {
                return;
            }
            for n in 1..partitions {
                let req = http
                    .get(format!("{base}{}", partition_url(n)))
                    .bearer_auth(&token)
                    .header("X-Snowflake-Authorization-Token-Type", "OAUTH")
                    .header("Accept", "application/json");
                let rows = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        match r.json::<Answer>().await.map(|a| a.data.unwrap_or_default()) {
                            Ok(rows) => rows,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(ConnectorError::Execution(format!(
                                        "partition {n}: {e}"
                                    ))))
                                    .await;
                                return;
                            }
                        }
                    }
                    Ok(r) => {
                        let _ = tx
                            .send(Err(ConnectorError::Execution(format!(
                                "partition {n}: status {}",
                                r.status()
                            ))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(ConnectorError::Unavailable(format!(
                                "partition {n}: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                if !send(rows).await {
                    return;
                }
            }
            // Every partition was read: nothing to cancel.
            cancel.disarm();
        });
        Ok(QueryStream {
            schema,
            batches: crate::receiver_stream(rx),
            warehouse_query_id: Some(request_id.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn placeholders_become_positional_through_the_ast() {
        let (sql, order) = positional(
            "SELECT a FROM (SELECT a FROM t WHERE tenant = :1) AS x JOIN (SELECT a FROM u WHERE tenant = :1) AS y ON x.a = y.a WHERE x.a <> ':1'",
        )
        .unwrap();
        assert_eq!(order, [1, 1]);
        assert!(sql.contains("tenant = ?") && sql.contains("':1'"), "{sql}");
        // Caller parameters and the tenant (after them): each `?` knows its number, in text
        // order, whatever order the numbers come in.
        let (sql, order) = positional(
            "SELECT a FROM (SELECT a FROM t WHERE tenant = :3) AS x WHERE x.a = :2 AND x.b = ':1'\n AND x.c = :1",
        )
        .unwrap();
        assert_eq!(order, [3, 2, 1]);
        assert_eq!(
            sql,
            "SELECT a FROM (SELECT a FROM t WHERE tenant = ?) AS x WHERE x.a = ? AND x.b = ':1'\n AND x.c = ?"
        );
    }

    #[test]
    fn documented_row_types_map_to_arrow() {
        let rt = |k: &str, p: u32, s: i64| RowType {
            name: "c".into(),
            kind: k.into(),
            precision: Some(p),
            scale: Some(s),
        };
        assert_eq!(arrow_type(&rt("fixed", 18, 0)), DataType::Int64);
        assert_eq!(arrow_type(&rt("fixed", 12, 2)), DataType::Decimal128(12, 2));
        assert_eq!(arrow_type(&rt("real", 0, 0)), DataType::Float64);
        assert_eq!(arrow_type(&rt("TEXT", 0, 0)), DataType::Utf8);
        assert_eq!(
            arrow_type(&rt("timestamp_ltz", 0, 9)),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        assert_eq!(epoch_nanos("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            epoch_nanos("1700000000.000000001 1440"),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(decimal("-12.5", 2), Some(-1250));
        assert_eq!(decimal("1.234", 2), None);
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(12, 2), true),
            Field::new("b", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let b = batch(
            &schema,
            &[
                vec![
                    Some("7".into()),
                    Some("1.50".into()),
                    Some("true".into()),
                    Some("19723".into()),
                ],
                vec![None, None, None, None],
            ],
        )
        .unwrap();
        assert_eq!(b.num_rows(), 2);
        assert!(batch(&schema, &[vec![Some("x".into()), None, None, None]]).is_err());
    }
}
