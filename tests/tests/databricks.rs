//! The Databricks connector (SQL Statement Execution API 2.0) against the `minilake` emulator
//! (PyPI), behind a thin layer of our own for the documented behaviours minilake lacks:
//!
//! - bearer tokens: checked at the real OAuth server (`oidc-provider`'s userinfo); a token the
//!   test names, or one the server does not know, gets `401`;
//! - named parameters: minilake drops `parameters` and cannot parse `:name`; the layer binds
//!   each documented `{name, value, type}` as a quoted literal before forwarding (the test
//!   checks what sluice sent: the marker and the parameter, never the tenant in the text);
//! - asynchronous execution: minilake always answers synchronously; the layer can answer
//!   `PENDING`, then `RUNNING`, and make the client poll the statement;
//! - result chunks: minilake puts every row in the first answer; the layer cuts it to chunk 0
//!   with `next_chunk_index`/`next_chunk_internal_link` as documented, and minilake serves the
//!   chunks themselves;
//! - the documented failure shape (`200` with `status.state = FAILED` and `status.error`):
//!   minilake answers SQL errors with HTTP 400 instead; both are exercised.
//!
//! Statements, types, chunk contents, cancel and error codes are minilake's. Nothing here was
//! verified against the real Databricks service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, TimeUnit};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice::config::ConnectionKind;

#[derive(Default)]
struct Layer {
    minilake: String,
    /// The OAuth server's userinfo endpoint (set once the server runs).
    userinfo: std::sync::OnceLock<String>,
    reject: Mutex<Option<String>>,
    refused: AtomicUsize,
    /// RUNNING answers before a held statement's result.
    pending_polls: AtomicUsize,
    polls: AtomicUsize,
    cancels: AtomicUsize,
    chunks: AtomicUsize,
    fail_as_200: AtomicBool,
    held: Mutex<HashMap<String, (usize, Value)>>,
    total_chunks: Mutex<HashMap<String, u64>>,
    last_body: Mutex<Value>,
    /// sluice's audit log, once known: each statement is checked against it.
    audit: std::sync::OnceLock<std::path::PathBuf>,
    /// Statements received (authorized).
    statements: AtomicUsize,
    /// Statements that arrived while the newest audit record was not a query attempt.
    early: Mutex<Vec<String>>,
}

async fn authorized(layer: &Layer, headers: &HeaderMap) -> Result<(), Response> {
    let token = support::token_ok(layer.userinfo.get().unwrap(), headers).await;
    match token {
        Some((t, _)) if layer.reject.lock().unwrap().as_deref() != Some(t.as_str()) => Ok(()),
        _ => {
            layer.refused.fetch_add(1, Ordering::SeqCst);
            Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error_code": "UNAUTHENTICATED",
                                  "message": "Invalid access token."})),
            )
                .into_response())
        }
    }
}

fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Cuts a synchronous answer holding every row down to its first chunk, as documented.
fn first_chunk_only(layer: &Layer, mut v: Value) -> Value {
    let id = v["statement_id"].as_str().unwrap_or_default().to_string();
    let total = v["manifest"]["total_chunk_count"].as_u64().unwrap_or(1);
    if total > 1 {
        let first = v["manifest"]["chunks"][0]["row_count"].as_u64().unwrap() as usize;
        layer.total_chunks.lock().unwrap().insert(id.clone(), total);
        let result = &mut v["result"];
        result["data_array"].as_array_mut().unwrap().truncate(first);
        result["chunk_index"] = json!(0);
        result["next_chunk_index"] = json!(1);
        result["next_chunk_internal_link"] =
            json!(format!("/api/2.0/sql/statements/{id}/result/chunks/1"));
    }
    v
}

async fn submit(State(layer): State<Arc<Layer>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    let mut body: Value = serde_json::from_slice(&body).unwrap();
    *layer.last_body.lock().unwrap() = body.clone();
    if let Some(audit) = layer.audit.get() {
        layer.statements.fetch_add(1, Ordering::SeqCst);
        if !support::attempt_is_newest(audit) {
            layer.early.lock().unwrap().push(body.to_string());
        }
    }
    // Documented named parameters, which minilake lacks: bind them here.
    if let Some(params) = body.as_object_mut().unwrap().remove("parameters") {
        let mut statement = body["statement"].as_str().unwrap().to_string();
        // Longest names first, so `:p1` never replaces the start of `:p10`.
        let mut params = params.as_array().unwrap().clone();
        params.sort_by_key(|p| std::cmp::Reverse(p["name"].as_str().unwrap().len()));
        for p in &params {
            let marker = format!(":{}", p["name"].as_str().unwrap());
            // A parameter without a value is NULL; typed values as the type says.
            let value = match (p["type"].as_str().unwrap(), &p["value"]) {
                (_, Value::Null) => "NULL".to_string(),
                ("STRING", v) => sql_literal(v.as_str().unwrap()),
                ("BIGINT" | "DOUBLE" | "BOOLEAN", v) => v.as_str().unwrap().to_string(),
                (other, _) => panic!("parameter type {other}"),
            };
            statement = statement.replace(&marker, &value);
        }
        body["statement"] = json!(statement);
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/2.0/sql/statements", layer.minilake))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    if status == 400 && layer.fail_as_200.load(Ordering::SeqCst) {
        // The documented shape of a statement that failed while executing.
        return axum::Json(json!({
            "statement_id": "01f0-failed",
            "status": {"state": "FAILED", "sql_state": "42P01",
                       "error": {"error_code": "BAD_REQUEST", "message": v["message"]}},
        }))
        .into_response();
    }
    if status != 200 {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response();
    }
    let v = first_chunk_only(&layer, v);
    let pending = layer.pending_polls.load(Ordering::SeqCst);
    if pending > 0 {
        let id = v["statement_id"].as_str().unwrap().to_string();
        layer.held.lock().unwrap().insert(id.clone(), (pending, v));
        return axum::Json(json!({"statement_id": id, "status": {"state": "PENDING"}}))
            .into_response();
    }
    axum::Json(v).into_response()
}

async fn status(
    State(layer): State<Arc<Layer>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    layer.polls.fetch_add(1, Ordering::SeqCst);
    let mut held = layer.held.lock().unwrap();
    let Some((left, v)) = held.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error_code": "NOT_FOUND", "message": "no such statement"})),
        )
            .into_response();
    };
    if *left > 0 {
        *left -= 1;
        return axum::Json(json!({"statement_id": id, "status": {"state": "RUNNING"}}))
            .into_response();
    }
    axum::Json(v.clone()).into_response()
}

async fn chunk(
    State(layer): State<Arc<Layer>>,
    Path((id, n)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    layer.chunks.fetch_add(1, Ordering::SeqCst);
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/2.0/sql/statements/{id}/result/chunks/{n}",
            layer.minilake
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let mut v: Value = resp.json().await.unwrap();
    let total = layer.total_chunks.lock().unwrap().get(&id).copied();
    if status == 200 && total.is_some_and(|t| n + 1 < t) {
        v["next_chunk_index"] = json!(n + 1);
        v["next_chunk_internal_link"] = json!(format!(
            "/api/2.0/sql/statements/{id}/result/chunks/{}",
            n + 1
        ));
    }
    (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response()
}

async fn cancel(
    State(layer): State<Arc<Layer>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    layer.cancels.fetch_add(1, Ordering::SeqCst);
    if layer.held.lock().unwrap().remove(&id).is_some() {
        return axum::Json(json!({})).into_response();
    }
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/2.0/sql/statements/{id}/cancel",
            layer.minilake
        ))
        .send()
        .await
        .unwrap();
    (
        StatusCode::from_u16(resp.status().as_u16()).unwrap(),
        axum::Json(resp.json::<Value>().await.unwrap()),
    )
        .into_response()
}

/// Tenant A's rows: two chunks of minilake's 100,000 and a part.
const A_ROWS: usize = 130_000;

#[tokio::test]
async fn databricks_statement_api_with_the_users_own_token_against_minilake() {
    let lake = sluice_tests::Minilake::start("lake").await;
    for sql in [
        "CREATE SCHEMA lake.sales".to_string(),
        "CREATE TABLE lake.sales.orders (tenant_id VARCHAR, id INTEGER, amount DECIMAL(10,2), \
         placed DATE, placed_at TIMESTAMP, ok BOOLEAN)"
            .into(),
        format!(
            "INSERT INTO lake.sales.orders SELECT CASE WHEN i < {A_ROWS} THEN 'A' ELSE 'B' END, \
             i, i * 0.25, DATE '2024-01-01' + CAST(i % 365 AS INTEGER), \
             TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i), i % 2 = 0 \
             FROM range({}) t(i)",
            A_ROWS + 500
        ),
    ] {
        lake.sql(&sql).await.unwrap();
    }
    for sql in [
        "CREATE TABLE lake.sales.sales (tenant_id VARCHAR, id INTEGER, region VARCHAR, \
         account_id INTEGER)"
            .to_string(),
        format!(
            "INSERT INTO lake.sales.sales VALUES {}",
            support::SALES_ROWS
        ),
    ] {
        lake.sql(&sql).await.unwrap();
    }

    let layer = Arc::new(Layer {
        minilake: lake.url.clone(),
        ..Layer::default()
    });
    let app = axum::Router::new()
        .route("/api/2.0/sql/statements", axum::routing::post(submit))
        .route("/api/2.0/sql/statements/{id}", axum::routing::get(status))
        .route(
            "/api/2.0/sql/statements/{id}/result/chunks/{n}",
            axum::routing::get(chunk),
        )
        .route(
            "/api/2.0/sql/statements/{id}/cancel",
            axum::routing::post(cancel),
        )
        .with_state(Arc::clone(&layer));
    let layer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", layer_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(layer_listener, app).await });

    let mut conn = support::rest_connection(
        "dbx",
        ConnectionKind::Databricks,
        r#"
[[connections.tables]]
name = "lake.sales.orders"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id", "amount", "placed", "placed_at", "ok"]
[[connections.tables]]
name = "lake.sales.missing"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id"]
"#,
    );
    conn.tables.extend(support::tables(&support::sales_table(
        "lake.sales.sales",
        ["tenant_id", "id", "region", "account_id"],
    )));
    conn.endpoint = Some(endpoint);
    conn.warehouse = Some(lake.warehouse_id.clone());
    conn.default_catalog = Some("lake".into());
    conn.default_schema = "sales".into();
    let sluice = support::OauthSluice::start(conn, 150_000).await;
    layer
        .userinfo
        .set(format!("{}/me", sluice.idp.issuer))
        .unwrap();
    layer
        .audit
        .set(sluice.data_dir.join(sluice::app::AUDIT_FILE))
        .unwrap();
    let alice = sluice.token("alice", "A");

    // Without a connected account: where to connect.
    let r = sluice.query(&alice, "SELECT id FROM orders").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "reauth_required");
    sluice.connect("dbx", &alice, "alice").await;

    // 0. Row filters from alice's attributes: named parameters after the tenant's, a list
    // element by element, each of its type; her answers are the warehouse's to the explicit
    // predicate.
    sluice
        .assert_row_filters("sales", ["tenant_id", "id", "region", "account_id"])
        .await;
    let regional = sluice.regional();
    let r = sluice
        .query(&regional, "SELECT id FROM sales ORDER BY id")
        .await;
    assert_eq!(r.status(), 200);
    let sent = layer.last_body.lock().unwrap().clone();
    let statement = sent["statement"].as_str().unwrap();
    assert!(
        statement
            .contains("(`region` = :sluice_a1) AND (`account_id` IN (:sluice_a2_1, :sluice_a2_2))"),
        "{statement}"
    );
    assert_eq!(
        sent["parameters"],
        json!([
            {"name": "sluice_tenant", "value": "A", "type": "STRING"},
            {"name": "sluice_a1", "value": "emea", "type": "STRING"},
            {"name": "sluice_a2_1", "value": "1", "type": "BIGINT"},
            {"name": "sluice_a2_2", "value": "3", "type": "BIGINT"},
        ])
    );

    // 1. Tenant A's rows, the tenant bound as a named parameter, the documented types.
    let sql =
        "SELECT tenant_id, id, amount, placed, placed_at, ok FROM orders WHERE id < 3 ORDER BY id";
    let r = sluice
        .http
        .post(format!("{}/v1/query", sluice.base))
        .bearer_auth(&alice)
        .header("Accept", "application/vnd.apache.arrow.stream")
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let schema = reader.schema();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Utf8,
            DataType::Int32,
            DataType::Decimal128(10, 2),
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Boolean,
        ]
    );
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let sent = layer.last_body.lock().unwrap().clone();
    let statement = sent["statement"].as_str().unwrap();
    assert!(statement.contains(":sluice_tenant"), "{statement}");
    assert!(!statement.contains("'A'"), "{statement}");
    assert_eq!(
        sent["parameters"],
        json!([{"name": "sluice_tenant", "value": "A", "type": "STRING"}])
    );
    assert_eq!(sent["warehouse_id"], lake.warehouse_id.as_str());
    assert_eq!(sent["catalog"], "lake");
    assert_eq!(sent["format"], "JSON_ARRAY");
    // The statement id is the warehouse query id of the audit record.
    let records = sluice.audit_records();
    let done = records
        .iter()
        .rev()
        .find(|r| r.event == sluice_audit::Event::QueryCompletion)
        .unwrap();
    assert!(
        done.warehouse_query_id
            .as_deref()
            .is_some_and(|id| id.len() >= 32)
    );

    // Caller parameters: Databricks' own named syntax, `:p1`, `:p2`, typed; the tenant keeps
    // its reserved name.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id, tenant_id FROM orders WHERE id >= :p1 AND tenant_id = :p2 ORDER BY id LIMIT 2",
            json!([1, "A"]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(2), "{body}");
    let sent = layer.last_body.lock().unwrap().clone();
    assert_eq!(
        sent["parameters"],
        json!([{"name": "p1", "value": "1", "type": "BIGINT"},
               {"name": "p2", "value": "A", "type": "STRING"},
               {"name": "sluice_tenant", "value": "A", "type": "STRING"}])
    );
    // Another tenant's id as a parameter: filtered within the caller's rows.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id FROM orders WHERE tenant_id = :p1",
            json!(["B"]),
        )
        .await;
    assert_eq!(
        (status, body["row_count"].clone()),
        (200, json!(0)),
        "{body}"
    );
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id FROM orders WHERE tenant_id = :sluice_tenant",
            json!([]),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("policy_denied")),
        "{body}"
    );

    // 2. Chunks: 130,000 rows of tenant A in two chunks, the second fetched as read.
    let r = sluice
        .query(&alice, "SELECT tenant_id, id FROM orders")
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), A_ROWS);
    assert!(rows.iter().all(|r| r[0] == "A"));
    assert_eq!(layer.chunks.load(Ordering::SeqCst), 1);

    // 3. PENDING, then RUNNING, then the result: the client polls the statement.
    layer.pending_polls.store(2, Ordering::SeqCst);
    let r = sluice
        .query(&alice, "SELECT id FROM orders WHERE id < 4 ORDER BY id")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["rows"],
        json!([[0], [1], [2], [3]])
    );
    assert_eq!(layer.polls.load(Ordering::SeqCst), 3, "polled until done");

    // 4. The client leaves while the statement runs: sluice cancels it on the warehouse.
    layer.pending_polls.store(10_000, Ordering::SeqCst);
    let gone = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap()
        .post(format!("{}/v1/query", sluice.base))
        .bearer_auth(&alice)
        .json(&json!({"sql": "SELECT id FROM orders WHERE id = 1"}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    support::wait_for(Duration::from_secs(10), "a cancel", || {
        layer.cancels.load(Ordering::SeqCst) == 1
    })
    .await;
    layer.pending_polls.store(0, Ordering::SeqCst);

    // 5. Databricks refuses the token the vault holds: one refresh at the real server, retry.
    *layer.reject.lock().unwrap() = Some(sluice.held_token("A", "alice", "dbx"));
    let r = sluice
        .query(&alice, "SELECT id FROM orders WHERE id = 7")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rows"], json!([[7]]));
    assert_eq!(layer.refused.load(Ordering::SeqCst), 1);

    // 6. Errors: minilake's HTTP 400 and the documented 200 + FAILED both reach the caller as
    // warehouse_error with the code, never the warehouse's text (it names the table).
    for (as_200, code) in [(false, "INVALID_REQUEST"), (true, "BAD_REQUEST/42P01")] {
        layer.fail_as_200.store(as_200, Ordering::SeqCst);
        let r = sluice.query(&alice, "SELECT id FROM missing").await;
        assert_eq!(r.status(), 502);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "warehouse_error");
        assert_eq!(body["warehouse_code"], code, "{body}");
        assert!(!body.to_string().contains("missing"), "{body}");
    }
    // The full text is in the audit log.
    let failed = sluice.audit_records();
    let last = failed.last().unwrap();
    assert!(
        last.error.as_deref().is_some_and(|e| e.contains("missing")),
        "{:?}",
        last.error
    );

    // Every statement the warehouse received came after an attempt record (checked by the
    // layer as each arrived); every attempt reached it.
    assert!(
        layer.early.lock().unwrap().is_empty(),
        "{:?}",
        layer.early.lock().unwrap()
    );
    let attempts = sluice
        .audit_records()
        .iter()
        .filter(|r| r.event == sluice_audit::Event::QueryAttempt)
        .count();
    assert!(attempts > 0);
    assert!(layer.statements.load(Ordering::SeqCst) >= attempts);
    sluice.stop().await;
}
