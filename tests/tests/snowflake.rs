//! The Snowflake connector (SQL API v2) against the `snowduck` emulator (PyPI), behind a thin
//! layer of our own for what the emulator lacks: it checks every bearer token at the real OAuth
//! server (`oidc-provider`'s userinfo) and answers 401 when that fails or for a token the test
//! names, can answer `202` and make the client poll (snowduck's own async mode never
//! completes), and counts cancels and partition fetches. Everything else — statements, bind
//! variables, result partitions of 10,000 rows, cancel, 422 error bodies — is snowduck's.
//! Nothing here was verified against the real Snowflake service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Tenant A's rows: three partitions of snowduck's 10,000.
const A_ROWS: usize = 25_000;

#[derive(Default)]
struct Layer {
    snowduck: String,
    /// The OAuth server's userinfo endpoint (set once the server runs).
    userinfo: std::sync::OnceLock<String>,
    reject: Mutex<Option<String>>,
    refused: AtomicUsize,
    force_202: AtomicBool,
    polls: AtomicUsize,
    cancels: AtomicUsize,
    partitions: AtomicUsize,
    held: Mutex<HashMap<String, (usize, Value)>>,
    last_body: Mutex<Value>,
    /// sluice's audit log, once known: each statement is checked against it.
    audit: std::sync::OnceLock<std::path::PathBuf>,
    /// Statements received (authorized).
    statements: AtomicUsize,
    /// Statements that arrived while the newest audit record was not a query attempt.
    early: Mutex<Vec<String>>,
}

async fn token_ok(layer: &Layer, headers: &HeaderMap) -> bool {
    if headers
        .get("x-snowflake-authorization-token-type")
        .map(|v| v.as_bytes())
        != Some(b"OAUTH")
    {
        return false;
    }
    match support::token_ok(layer.userinfo.get().unwrap(), headers).await {
        Some((token, _)) => layer.reject.lock().unwrap().as_deref() != Some(token.as_str()),
        None => false,
    }
}

fn unauthorized(layer: &Layer) -> Response {
    layer.refused.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"code": "390303", "message": "Invalid OAuth access token."})),
    )
        .into_response()
}

async fn forward(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let body = resp.bytes().await.unwrap();
    (status, [("content-type", "application/json")], body).into_response()
}

async fn submit(
    State(layer): State<Arc<Layer>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !token_ok(&layer, &headers).await {
        return unauthorized(&layer);
    }
    *layer.last_body.lock().unwrap() = serde_json::from_slice(&body).unwrap();
    if let Some(audit) = layer.audit.get() {
        layer.statements.fetch_add(1, Ordering::SeqCst);
        if !support::attempt_is_newest(audit) {
            layer
                .early
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
        }
    }
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/statements?{}",
            layer.snowduck,
            query.unwrap_or_default()
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    if layer.force_202.load(Ordering::SeqCst) && resp.status().is_success() {
        // Documented: a statement still running answers 202 with its handle; poll its URL.
        let v: Value = resp.json().await.unwrap();
        let handle = v["statementHandle"].as_str().unwrap().to_string();
        layer.held.lock().unwrap().insert(handle.clone(), (1, v));
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "code": "333334", "message": "Asynchronous execution in progress.",
                "statementHandle": handle,
                "statementStatusUrl": format!("/api/v2/statements/{handle}"),
            })),
        )
            .into_response();
    }
    forward(resp).await
}

async fn status(
    State(layer): State<Arc<Layer>>,
    Path(handle): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !token_ok(&layer, &headers).await {
        return unauthorized(&layer);
    }
    let query = query.unwrap_or_default();
    if query.contains("partition=") {
        layer.partitions.fetch_add(1, Ordering::SeqCst);
    } else {
        layer.polls.fetch_add(1, Ordering::SeqCst);
        let mut held = layer.held.lock().unwrap();
        if let Some((pending, v)) = held.get_mut(&handle) {
            if *pending > 0 {
                *pending -= 1;
                return (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"code": "333334", "statementHandle": handle,
                                      "statementStatusUrl": format!("/api/v2/statements/{handle}")})),
                )
                    .into_response();
            }
            return (StatusCode::OK, axum::Json(v.clone())).into_response();
        }
    }
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v2/statements/{handle}?{query}",
            layer.snowduck
        ))
        .send()
        .await
        .unwrap();
    forward(resp).await
}

async fn cancel(
    State(layer): State<Arc<Layer>>,
    Path(handle): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !token_ok(&layer, &headers).await {
        return unauthorized(&layer);
    }
    layer.cancels.fetch_add(1, Ordering::SeqCst);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/statements/{handle}/cancel",
            layer.snowduck
        ))
        .send()
        .await
        .unwrap();
    forward(resp).await
}

#[tokio::test]
async fn snowflake_sql_api_with_the_users_own_token_against_snowduck() {
    let snowduck = sluice_tests::Snowduck::start().await;
    for sql in [
        "CREATE DATABASE ANALYTICS".to_string(),
        "CREATE SCHEMA ANALYTICS.PUBLIC".into(),
        "CREATE TABLE ANALYTICS.PUBLIC.ORDERS (TENANT_ID TEXT, ID INTEGER, AMOUNT NUMBER(10,2))"
            .into(),
        format!(
            "INSERT INTO ANALYTICS.PUBLIC.ORDERS SELECT CASE WHEN seq4() < {A_ROWS} THEN 'A' ELSE 'B' END, \
             seq4(), seq4() * 0.25 FROM TABLE(GENERATOR(ROWCOUNT => {}))",
            A_ROWS + 500
        ),
    ] {
        snowduck.sql(&sql).await.unwrap();
    }
    for sql in [
        "CREATE TABLE ANALYTICS.PUBLIC.SALES (TENANT_ID TEXT, ID INTEGER, REGION TEXT, ACCOUNT_ID INTEGER)".to_string(),
        format!("INSERT INTO ANALYTICS.PUBLIC.SALES VALUES {}", support::SALES_ROWS),
    ] {
        snowduck.sql(&sql).await.unwrap();
    }

    let layer = Arc::new(Layer {
        snowduck: snowduck.url.clone(),
        ..Layer::default()
    });
    let app = axum::Router::new()
        .route("/api/v2/statements", axum::routing::post(submit))
        .route("/api/v2/statements/{handle}", axum::routing::get(status))
        .route(
            "/api/v2/statements/{handle}/cancel",
            axum::routing::post(cancel),
        )
        .with_state(Arc::clone(&layer));
    let layer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", layer_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(layer_listener, app).await });

    let mut conn = support::rest_connection(
        "sf",
        sluice::config::ConnectionKind::Snowflake,
        r#"
[[connections.tables]]
name = "ANALYTICS.PUBLIC.ORDERS"
access = "protected"
tenant_column = "TENANT_ID"
columns = ["TENANT_ID", "ID", "AMOUNT"]
[[connections.tables]]
name = "ANALYTICS.PUBLIC.MISSING"
access = "protected"
tenant_column = "TENANT_ID"
columns = ["TENANT_ID", "ID"]
"#,
    );
    conn.tables.extend(support::tables(&support::sales_table(
        "ANALYTICS.PUBLIC.SALES",
        ["TENANT_ID", "ID", "REGION", "ACCOUNT_ID"],
    )));
    conn.endpoint = Some(endpoint);
    conn.default_catalog = Some("ANALYTICS".into());
    conn.default_schema = "PUBLIC".into();
    let sluice = support::OauthSluice::start(conn, 12_000).await;
    layer
        .userinfo
        .set(format!("{}/me", sluice.idp.issuer))
        .unwrap();
    layer
        .audit
        .set(sluice.data_dir.join(sluice::app::AUDIT_FILE))
        .unwrap();
    let alice = sluice.token("alice", "A");
    let query = |sql: &'static str| sluice.query(&alice, sql);

    // Without a connected account: where to connect.
    let r = query("SELECT ID FROM ORDERS").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "reauth_required");

    // Connect alice's Snowflake account (OAuth code flow at the real server).
    sluice.connect("sf", &alice, "alice").await;

    // 0. Row filters from alice's attributes: bound as variables after the tenant's, a list
    // element by element; her answers are the warehouse's to the explicit predicate.
    sluice
        .assert_row_filters("SALES", ["TENANT_ID", "ID", "REGION", "ACCOUNT_ID"])
        .await;
    let regional = sluice.regional();
    let r = sluice
        .query(&regional, "SELECT ID FROM SALES ORDER BY ID")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["rows"],
        json!([["1"], ["3"], ["6"], ["7"]])
    );
    let sent = layer.last_body.lock().unwrap().clone();
    let statement = sent["statement"].as_str().unwrap();
    assert!(
        statement.contains(r#"("REGION" = ?) AND ("ACCOUNT_ID" IN (?, ?))"#),
        "{statement}"
    );
    assert_eq!(
        sent["bindings"],
        json!({"1": {"type": "TEXT", "value": "A"}, "2": {"type": "TEXT", "value": "emea"},
               "3": {"type": "FIXED", "value": "1"}, "4": {"type": "FIXED", "value": "3"}})
    );

    // 1. Tenant A's rows only, across result partitions, tenant bound as a variable.
    let sql = "SELECT TENANT_ID, ID, AMOUNT FROM ORDERS WHERE ID >= 0 ORDER BY ID";
    let r = query(sql).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12_000, "{}", body["row_count"]);
    assert!(rows.iter().all(|r| r[0] == "A"));
    assert_eq!(rows[3][1], "3");
    let sent = layer.last_body.lock().unwrap().clone();
    let statement = sent["statement"].as_str().unwrap();
    assert!(statement.contains("\"TENANT_ID\" = ?"), "{statement}");
    assert!(!statement.contains("'A'"), "{statement}");
    assert_eq!(sent["bindings"]["1"], json!({"type": "TEXT", "value": "A"}));
    assert!(
        layer.partitions.load(Ordering::SeqCst) >= 1,
        "a second partition was fetched"
    );
    // The answer was cut at 12,000 rows: the rest of the statement is cancelled.
    support::wait_for(Duration::from_secs(10), "a cancel", || {
        layer.cancels.load(Ordering::SeqCst) >= 1
    })
    .await;

    // 1b. Caller parameters (`:1`, `:2`), bound by position; the tenant's placeholder comes
    // after them and is bound by sluice alone. Each `?` gets its own binding, in text order.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT ID, TENANT_ID FROM ORDERS WHERE ID >= :1 AND ID < :2 ORDER BY ID",
            json!([3, 5]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([["3", "A"], ["4", "A"]]));
    let sent = layer.last_body.lock().unwrap().clone();
    assert_eq!(
        sent["bindings"],
        json!({"1": {"type": "TEXT", "value": "A"},
               "2": {"type": "FIXED", "value": "3"},
               "3": {"type": "FIXED", "value": "5"}}),
        "{}",
        sent["statement"]
    );
    // A parameter naming another tenant filters within the caller's rows, never beside them.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT ID FROM ORDERS WHERE TENANT_ID = :1",
            json!(["B"]),
        )
        .await;
    assert_eq!(
        (status, body["row_count"].clone()),
        (200, json!(0)),
        "{body}"
    );
    // The tenant's own placeholder (`:2` with one parameter) is not the caller's to write.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT ID FROM ORDERS WHERE TENANT_ID = :2",
            json!(["B"]),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("policy_denied")),
        "{body}"
    );

    // 2. 202, then polling the statement's status URL.
    layer.force_202.store(true, Ordering::SeqCst);
    let r = query("SELECT ID FROM ORDERS WHERE ID < 5 ORDER BY ID").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rows"], json!([["0"], ["1"], ["2"], ["3"], ["4"]]));
    assert!(layer.polls.load(Ordering::SeqCst) >= 2, "polled until done");
    layer.force_202.store(false, Ordering::SeqCst);

    // Snowflake's star modifiers over the wrapper's columns: EXCLUDE drops one, REPLACE
    // computes one from the caller's rows.
    let r = query(
        "SELECT * EXCLUDE (TENANT_ID) REPLACE (AMOUNT * 2 AS AMOUNT) FROM ORDERS WHERE ID < 3 ORDER BY ID",
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let names = sluice_tests::column_names(&body);
    assert_eq!(names, ["ID", "AMOUNT"], "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{body}");
    let amount = |v: &Value| sluice_tests::number(v).unwrap();
    assert_eq!(amount(&rows[1][1]), 0.5, "{body}");
    assert_eq!(amount(&rows[2][1]), 1.0, "{body}");

    // 3. Snowflake refuses the token the vault holds: one refresh at the real server, retry.
    let held = sluice.held_token("A", "alice", "sf");
    *layer.reject.lock().unwrap() = Some(held);
    let r = query("SELECT ID FROM ORDERS WHERE ID = 7").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rows"], json!([["7"]]));
    assert_eq!(layer.refused.load(Ordering::SeqCst), 1);

    // 4. A Snowflake error (422 with code and SQLSTATE): the caller gets warehouse_error, never
    // the warehouse's text.
    let r = query("SELECT ID FROM MISSING").await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "warehouse_error");
    assert_eq!(body["warehouse_code"], "002003/42000", "{body}");
    // The table name is quoted in snowduck's message: redacted for the caller.
    assert!(!body.to_string().contains("MISSING"), "{body}");

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
