//! The BigQuery connector (REST API v2: `jobs.query`, `jobs.getQueryResults`, `jobs.cancel`)
//! against the `bqemulator` emulator (PyPI), behind a thin layer of our own for the documented
//! behaviours the emulator lacks:
//!
//! - bearer tokens: checked at the real OAuth server (`oidc-provider`'s userinfo); a token the
//!   test names, or one the server does not know, gets `401` in Google's error envelope;
//! - incomplete jobs: the emulator always answers `jobComplete: true`; the layer can answer
//!   `false` and make the client poll `getQueryResults`;
//! - the documented HTTP error for a failed query (`404 notFound` in Google's envelope): the
//!   emulator answers `200` with `errors`; both are exercised.
//!
//! Statements, named parameters, paging (`pageToken`), nested and repeated fields, cancel and
//! error reasons are the emulator's. Nothing here was verified against the real BigQuery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice::config::ConnectionKind;

const PROJECT: &str = "sluice-test";
/// Tenant A's rows: three pages of sluice's 10,000.
const A_ROWS: usize = 25_000;

#[derive(Default)]
struct Layer {
    emulator: String,
    userinfo: OnceLock<String>,
    reject: Mutex<Option<String>>,
    refused: AtomicUsize,
    /// `jobComplete: false` answers before a held job's result.
    incomplete_polls: AtomicUsize,
    polls: AtomicUsize,
    pages: AtomicUsize,
    cancels: AtomicUsize,
    errors_as_http: AtomicBool,
    held: Mutex<HashMap<String, (usize, Value)>>,
    last_body: Mutex<Value>,
    /// Each `jobs.query`: the token's subject at the OAuth server and the tenant parameter.
    callers: Mutex<Vec<(String, Value)>>,
    /// sluice's audit log, once known: each `jobs.query` is checked against it.
    audit: OnceLock<std::path::PathBuf>,
    /// `jobs.query` calls per request (the `sluice_request` label).
    by_request: Mutex<HashMap<String, usize>>,
    /// Statements that arrived before their request's attempt record was the newest record.
    early: Mutex<Vec<String>>,
}

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": status.as_u16(), "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
            "status": if status == StatusCode::UNAUTHORIZED { "UNAUTHENTICATED" } else { "NOT_FOUND" },
        }})),
    )
        .into_response()
}

/// The token's subject, or the 401 a refused token gets.
async fn authorized(layer: &Layer, headers: &HeaderMap) -> Result<String, Response> {
    match support::token_ok(layer.userinfo.get().unwrap(), headers).await {
        Some((t, sub)) if layer.reject.lock().unwrap().as_deref() != Some(t.as_str()) => Ok(sub),
        _ => {
            layer.refused.fetch_add(1, Ordering::SeqCst);
            Err(google_error(
                StatusCode::UNAUTHORIZED,
                "authError",
                "Request had invalid authentication credentials.",
            ))
        }
    }
}

async fn query(
    State(layer): State<Arc<Layer>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let subject = match authorized(&layer, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let sent: Value = serde_json::from_slice(&body).unwrap();
    layer
        .callers
        .lock()
        .unwrap()
        .push((subject, sent["queryParameters"].clone()));
    if let Some(audit) = layer.audit.get() {
        let request = sent["labels"]["sluice_request"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        use sluice_audit::Event;
        // The newest query record (a credential refreshed for a retry does not count).
        let newest = sluice_audit::read_all(&sluice_audit::open_read_only(audit).unwrap())
            .unwrap()
            .into_iter()
            .rev()
            .find(|r| {
                matches!(
                    r.event,
                    Event::QueryAttempt | Event::QueryCompletion | Event::QueryDenied
                )
            });
        let covered =
            newest.is_some_and(|r| r.event == Event::QueryAttempt && r.request_id == request);
        if !covered {
            layer.early.lock().unwrap().push(sent["query"].to_string());
        }
        *layer.by_request.lock().unwrap().entry(request).or_default() += 1;
    }
    *layer.last_body.lock().unwrap() = sent;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{project}/queries",
            layer.emulator
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    let failed = v["errors"].as_array().is_some_and(|e| !e.is_empty())
        && v["schema"]["fields"].as_array().is_none_or(Vec::is_empty);
    if failed && layer.errors_as_http.load(Ordering::SeqCst) {
        // The documented answer: an HTTP error in Google's envelope.
        let e = &v["errors"][0];
        return google_error(
            StatusCode::NOT_FOUND,
            e["reason"].as_str().unwrap(),
            e["message"].as_str().unwrap(),
        );
    }
    let pending = layer.incomplete_polls.load(Ordering::SeqCst);
    if pending > 0 && !failed {
        let job = v["jobReference"]["jobId"].as_str().unwrap().to_string();
        let reference = v["jobReference"].clone();
        layer.held.lock().unwrap().insert(job, (pending, v));
        return axum::Json(json!({"kind": "bigquery#queryResponse",
                                 "jobReference": reference, "jobComplete": false}))
        .into_response();
    }
    (
        StatusCode::from_u16(status.as_u16()).unwrap(),
        axum::Json(v),
    )
        .into_response()
}

async fn results(
    State(layer): State<Arc<Layer>>,
    Path((project, job)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    let query = query.unwrap_or_default();
    if query.contains("pageToken=") {
        layer.pages.fetch_add(1, Ordering::SeqCst);
    } else {
        layer.polls.fetch_add(1, Ordering::SeqCst);
        let mut held = layer.held.lock().unwrap();
        if let Some((left, v)) = held.get_mut(&job) {
            if *left > 0 {
                *left -= 1;
                return axum::Json(json!({"kind": "bigquery#getQueryResultsResponse",
                                         "jobReference": v["jobReference"],
                                         "jobComplete": false}))
                .into_response();
            }
            return axum::Json(v.clone()).into_response();
        }
    }
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/bigquery/v2/projects/{project}/queries/{job}?{query}",
            layer.emulator
        ))
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, axum::Json(resp.json::<Value>().await.unwrap())).into_response()
}

async fn cancel(
    State(layer): State<Arc<Layer>>,
    Path((project, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&layer, &headers).await {
        return r;
    }
    layer.cancels.fetch_add(1, Ordering::SeqCst);
    layer.held.lock().unwrap().remove(&job);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{project}/jobs/{job}/cancel",
            layer.emulator
        ))
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, axum::Json(resp.json::<Value>().await.unwrap())).into_response()
}

/// The fault layer in front of the emulator, on a free port: the layer and its URL.
async fn start_layer(bq: &sluice_tests::Bqemulator) -> (Arc<Layer>, String) {
    let layer = Arc::new(Layer {
        emulator: bq.url.clone(),
        ..Layer::default()
    });
    let app = axum::Router::new()
        .route(
            "/bigquery/v2/projects/{project}/queries",
            axum::routing::post(query),
        )
        .route(
            "/bigquery/v2/projects/{project}/queries/{job}",
            axum::routing::get(results),
        )
        .route(
            "/bigquery/v2/projects/{project}/jobs/{job}/cancel",
            axum::routing::post(cancel),
        )
        .with_state(Arc::clone(&layer));
    let layer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", layer_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(layer_listener, app).await });

    (layer, endpoint)
}

#[tokio::test]
async fn bigquery_rest_api_with_the_users_own_token_against_bqemulator() {
    let bq = sluice_tests::Bqemulator::start(PROJECT).await;
    for sql in [
        "CREATE SCHEMA ds".to_string(),
        "CREATE TABLE ds.orders (tenant_id STRING, id INT64, amount NUMERIC, placed DATE, \
         placed_at TIMESTAMP, tags ARRAY<STRING>, addr STRUCT<city STRING, zip INT64>)"
            .into(),
        format!(
            "INSERT INTO ds.orders SELECT IF(i < {A_ROWS}, 'A', 'B'), i, CAST(i AS NUMERIC) / 4, \
             DATE_ADD(DATE '2024-01-01', INTERVAL MOD(i, 365) DAY), \
             TIMESTAMP_SECONDS(1700000000 + i), [CONCAT('t', CAST(i AS STRING)), 'x'], \
             STRUCT('Oslo' AS city, i AS zip) \
             FROM UNNEST(GENERATE_ARRAY(0, {})) AS i",
            A_ROWS + 499
        ),
    ] {
        bq.sql(&sql).await.unwrap();
    }
    for sql in [
        "CREATE TABLE ds.sales (tenant_id STRING, id INT64, region STRING, account_id INT64)"
            .to_string(),
        format!("INSERT INTO ds.sales VALUES {}", support::SALES_ROWS),
    ] {
        bq.sql(&sql).await.unwrap();
    }

    let (layer, endpoint) = start_layer(&bq).await;
    let mut conn = support::rest_connection(
        "bq",
        ConnectionKind::Bigquery,
        r#"
[[connections.tables]]
name = "ds.orders"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id", "amount", "placed", "placed_at", "tags", "addr"]
[[connections.tables]]
name = "ds.missing"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "id"]
"#,
    );
    conn.tables.extend(support::tables(&support::sales_table(
        "ds.sales",
        ["tenant_id", "id", "region", "account_id"],
    )));
    conn.endpoint = Some(endpoint);
    conn.default_catalog = Some(PROJECT.into());
    conn.default_schema = "ds".into();
    conn.location = Some("US".into());
    let sluice = support::OauthSluice::start(conn, 30_000).await;
    layer
        .userinfo
        .set(format!("{}/me", sluice.idp.issuer))
        .unwrap();
    let alice = sluice.token("alice", "A");

    let r = sluice.query(&alice, "SELECT id FROM orders").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "reauth_required");
    sluice.connect("bq", &alice, "alice").await;

    // 0. Row filters from alice's attributes: named parameters after the tenant's, a list
    // element by element, each of its type; her answers are BigQuery's to the explicit
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
    let statement = sent["query"].as_str().unwrap();
    assert!(
        statement
            .contains("(`region` = @sluice_a1) AND (`account_id` IN (@sluice_a2_1, @sluice_a2_2))"),
        "{statement}"
    );
    let params: Vec<(Value, Value, Value)> = sent["queryParameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].clone(),
                p["parameterType"]["type"].clone(),
                p["parameterValue"]["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        params,
        vec![
            (json!("sluice_tenant"), json!("STRING"), json!("A")),
            (json!("sluice_a1"), json!("STRING"), json!("emea")),
            (json!("sluice_a2_1"), json!("INT64"), json!("1")),
            (json!("sluice_a2_2"), json!("INT64"), json!("3")),
        ]
    );

    // 1. The tenant bound as a named parameter; schema types, nested and repeated fields.
    let sql = "SELECT tenant_id, id, amount, placed, placed_at, tags, addr FROM orders WHERE id < 3 ORDER BY id";
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
        types[..5],
        [
            DataType::Utf8,
            DataType::Int64,
            DataType::Decimal128(38, 9),
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ]
    );
    assert!(matches!(types[5], DataType::List(_)), "{:?}", types[5]);
    assert!(matches!(types[6], DataType::Struct(_)), "{:?}", types[6]);
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let b = &batches[0];
    assert_eq!(b.num_rows(), 3);
    let tags = b.column(5).as_list::<i32>();
    assert_eq!(tags.value(1).as_string::<i32>().value(0), "t1");
    let addr = b.column(6).as_struct();
    assert_eq!(addr.column(0).as_string::<i32>().value(2), "Oslo");
    assert!(!addr.is_null(0));
    let sent = layer.last_body.lock().unwrap().clone();
    let statement = sent["query"].as_str().unwrap();
    assert!(statement.contains("@sluice_tenant"), "{statement}");
    assert!(!statement.contains("'A'"), "{statement}");
    assert_eq!(sent["parameterMode"], "NAMED");
    assert_eq!(
        sent["queryParameters"],
        json!([{"name": "sluice_tenant", "parameterType": {"type": "STRING"},
                "parameterValue": {"value": "A"}}])
    );
    assert_eq!(sent["useLegacySql"], false);
    assert_eq!(sent["location"], "US");
    let records = sluice.audit_records();
    let done = records
        .iter()
        .rev()
        .find(|r| r.event == sluice_audit::Event::QueryCompletion)
        .unwrap();
    assert!(done.warehouse_query_id.is_some());

    // 1b. Caller parameters: BigQuery's own named syntax, `@p1`, `@p2` for the first and second
    // values, typed; the tenant keeps its reserved name, which the caller cannot write.
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id, tenant_id FROM orders WHERE id >= @p1 AND id < @p2 ORDER BY id",
            json!([1, 3]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[1, "A"], [2, "A"]]));
    let sent = layer.last_body.lock().unwrap().clone();
    assert_eq!(
        sent["queryParameters"],
        json!([{"name": "p1", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "1"}},
               {"name": "p2", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "3"}},
               {"name": "sluice_tenant", "parameterType": {"type": "STRING"},
                "parameterValue": {"value": "A"}}])
    );
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id FROM orders WHERE tenant_id = @sluice_tenant",
            json!([]),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("policy_denied")),
        "{body}"
    );
    let (status, body) = sluice
        .query_params(
            &alice,
            "SELECT id FROM orders WHERE id = @p1",
            json!([1, 2]),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_parameters")),
        "{body}"
    );

    // 2. Paging: 25,000 rows of tenant A in pages of 10,000, fetched as read.
    let r = sluice
        .query(&alice, "SELECT tenant_id, id FROM orders")
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), A_ROWS);
    assert!(rows.iter().all(|r| r[0] == "A"));
    assert_eq!(layer.pages.load(Ordering::SeqCst), 2);

    // BigQuery's star modifiers over the wrapper's columns: EXCEPT drops columns, REPLACE
    // computes one from the caller's rows.
    let r = sluice
        .query(
            &alice,
            "SELECT * EXCEPT (tenant_id, placed, placed_at, tags, addr) REPLACE (amount * 2 AS amount) \
             FROM orders WHERE id < 3 ORDER BY id",
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let names = sluice_tests::column_names(&body);
    assert_eq!(names, ["id", "amount"], "{body}");
    let amounts: Vec<f64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| sluice_tests::number(&r[1]).unwrap())
        .collect();
    assert_eq!(amounts, [0.0, 0.5, 1.0], "{body}");

    // 3. An incomplete job: the client polls getQueryResults until it completes.
    layer.incomplete_polls.store(2, Ordering::SeqCst);
    let r = sluice
        .query(&alice, "SELECT id FROM orders WHERE id < 4 ORDER BY id")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["rows"],
        json!([[0], [1], [2], [3]])
    );
    assert_eq!(
        layer.polls.load(Ordering::SeqCst),
        3,
        "polled until complete"
    );

    // 4. The client leaves while the job runs: sluice cancels the job.
    layer.incomplete_polls.store(10_000, Ordering::SeqCst);
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
    layer.incomplete_polls.store(0, Ordering::SeqCst);

    // 5. BigQuery refuses the token the vault holds: one refresh at the real server, retry.
    *layer.reject.lock().unwrap() = Some(sluice.held_token("A", "alice", "bq"));
    let r = sluice
        .query(&alice, "SELECT id FROM orders WHERE id = 7")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rows"], json!([[7]]));
    assert_eq!(layer.refused.load(Ordering::SeqCst), 1);

    // 6. A failed query, as the emulator answers it (200 + errors) and as documented (HTTP
    // error): warehouse_error with the reason, never the text (it names the table).
    for as_http in [false, true] {
        layer.errors_as_http.store(as_http, Ordering::SeqCst);
        let r = sluice.query(&alice, "SELECT id FROM missing").await;
        assert_eq!(r.status(), 502);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "warehouse_error");
        assert_eq!(body["warehouse_code"], "notFound", "{body}");
        assert!(!body.to_string().contains("missing"), "{body}");
    }

    sluice.stop().await;
}

/// A federated join of the demo's embedded engine with BigQuery (the emulator), as two users
/// of two tenants: each gets their tenant's rows; BigQuery receives each user's own token (the
/// layer records the token's subject at the OAuth server) with that user's tenant bound; the
/// sub-queries, with the BigQuery job id, are in the audit log.
#[tokio::test]
async fn federated_join_of_the_embedded_engine_with_bigquery_per_user() {
    let bq = sluice_tests::Bqemulator::start(PROJECT).await;
    for sql in [
        "CREATE SCHEMA ds",
        "CREATE TABLE ds.stock (tenant_id STRING, product_id INT64, qty INT64)",
        "INSERT INTO ds.stock SELECT t, p, IF(t = 'acme', p, 100 + p) \
         FROM UNNEST(GENERATE_ARRAY(1, 60)) AS p CROSS JOIN UNNEST(['acme', 'globex']) AS t",
    ] {
        bq.sql(sql).await.unwrap();
    }
    let (layer, endpoint) = start_layer(&bq).await;
    let mut conn = support::rest_connection(
        "bq",
        ConnectionKind::Bigquery,
        r#"
[[connections.tables]]
name = "ds.stock"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "qty"]
"#,
    );
    conn.endpoint = Some(endpoint);
    conn.default_catalog = Some(PROJECT.into());
    conn.default_schema = "ds".into();
    let sluice = support::OauthSluice::start_with_demo(conn, 10_000).await;
    layer
        .userinfo
        .set(format!("{}/me", sluice.idp.issuer))
        .unwrap();
    layer
        .audit
        .set(sluice.data_dir.join(sluice::app::AUDIT_FILE))
        .unwrap();
    let federated = "SELECT o.product_id, count(*) AS n, max(s.qty) AS qty \
                     FROM demo.public.orders o JOIN bq.ds.stock s ON s.product_id = o.product_id \
                     WHERE o.product_id <= 3 GROUP BY o.product_id ORDER BY o.product_id";
    for (user, tenant, offset) in [("alice", "acme", 0), ("bob", "globex", 100)] {
        let token = sluice.token(user, tenant);
        sluice.connect("bq", &token, user).await;
        // The expected counts, from the embedded engine alone.
        let r = sluice
            .http
            .post(format!("{}/v1/query", sluice.base))
            .bearer_auth(&token)
            .json(
                &json!({"connection": "demo", "sql": "SELECT product_id, count(*) AS n FROM orders \
                           WHERE product_id <= 3 GROUP BY product_id ORDER BY product_id"}),
            )
            .send()
            .await
            .unwrap();
        let direct: Value = r.json().await.unwrap();
        let expected: Vec<Value> = direct["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!([r[0], r[1], r[0].as_i64().unwrap() + offset]))
            .collect();
        assert!(!expected.is_empty());
        layer.callers.lock().unwrap().clear();
        let r = sluice.query(&token, federated).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["rows"], json!(expected), "{user}: {body}");
        // BigQuery saw this user's own token and this user's tenant, bound.
        let callers = layer.callers.lock().unwrap().clone();
        assert!(!callers.is_empty());
        for (subject, params) in callers {
            assert_eq!(subject, user);
            assert_eq!(params[0]["parameterValue"]["value"], tenant);
        }
        let done = sluice
            .audit_records()
            .into_iter()
            .rev()
            .find(|r| {
                r.event == sluice_audit::Event::QueryCompletion && r.user.as_deref() == Some(user)
            })
            .unwrap();
        assert_eq!(done.connection.as_deref(), Some("federated"));
        let bq_sub = done
            .sub_queries
            .iter()
            .find(|s| s.connection == "bq")
            .unwrap();
        assert!(bq_sub.sql.contains("@sluice_tenant"), "{}", bq_sub.sql);
        assert!(bq_sub.warehouse_query_id.is_some(), "{bq_sub:?}");
        // Only this tenant's 60 stock rows left BigQuery (the table holds 120).
        assert!(bq_sub.rows.is_some_and(|n| n <= 60), "{bq_sub:?}");
        assert!(done.sub_queries.iter().any(|s| s.connection == "demo"));
    }

    // What BigQuery received, per request, against the request's audit records: explain and
    // run, federated and single, allowed and refused. (The layer also checked, on each
    // statement, that the request's attempt record was already the newest record.)
    use sluice_audit::Event::{QueryAttempt as A, QueryCompletion as C, QueryDenied as D};
    let alice = sluice.token("alice", "acme");
    let cases = [
        // The schema probe only: planning reads no rows.
        ("/v1/policy/explain", federated, 200, 1, vec![A, C]),
        // The probe and the scan.
        ("/v1/query", federated, 200, 2, vec![A, C]),
        (
            "/v1/query",
            "SELECT o.id FROM demo.public.orders o JOIN bq.ds.nope n ON true",
            403,
            0,
            vec![D],
        ),
        (
            "/v1/policy/explain",
            "SELECT qty FROM bq.ds.stock",
            200,
            0,
            vec![A, C],
        ),
        (
            "/v1/query",
            "SELECT qty FROM bq.ds.stock WHERE product_id = 1",
            200,
            1,
            vec![A, C],
        ),
        ("/v1/query", "DELETE FROM bq.ds.stock", 403, 0, vec![D]),
    ];
    for (i, (path, sql, status, statements, events)) in cases.into_iter().enumerate() {
        let request = format!("bq-audit-{i}");
        let r = sluice
            .http
            .post(format!("{}{path}", sluice.base))
            .bearer_auth(&alice)
            .header("x-request-id", &request)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{sql}");
        let _ = r.bytes().await.unwrap();
        let got = layer
            .by_request
            .lock()
            .unwrap()
            .get(&request)
            .copied()
            .unwrap_or(0);
        assert_eq!(got, statements, "{path} {sql}");
        let records: Vec<_> = sluice
            .audit_records()
            .into_iter()
            .filter(|r| r.request_id == request)
            .map(|r| r.event)
            .collect();
        assert_eq!(records, events, "{path} {sql}");
    }
    assert!(
        layer.early.lock().unwrap().is_empty(),
        "{:?}",
        layer.early.lock().unwrap()
    );
    assert!(layer.by_request.lock().unwrap().values().sum::<usize>() >= 8);
    sluice.stop().await;
}
