//! End-to-end: the daemon on an ephemeral port, spoken to over real HTTP, with the embedded demo
//! warehouse. Checks answers in every format, tenant isolation, refusals with their codes, and
//! that every request leaves its audit records (and refused ones never reach the engine).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::http::server::RunningServer;
use sluice_audit::{AuditRecord, Event, open_read_only, read_settled};

struct Daemon {
    server: RunningServer,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

async fn start_with(edit: impl FnOnce(&mut sluice::config::Config)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    edit(&mut config);
    let app = sluice::app::build(config).await.unwrap();
    let server = RunningServer::start(app, "127.0.0.1:0").await.unwrap();
    Daemon {
        server,
        data_dir,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

async fn start() -> Daemon {
    start_with(|_| {}).await
}

impl Daemon {
    fn token(&self, tenant: &str) -> String {
        sluice::demo::token(&self.data_dir, "alice", tenant, &["analyst".into()]).unwrap()
    }

    fn sign(&self, claims: Value) -> String {
        let secret = sluice::demo::secret(&self.data_dir).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    }

    fn post(&self, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.client.post(format!("{}/v1/query", self.server.url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn query(&self, tenant: &str, sql: &str) -> (StatusCode, Value) {
        let resp = self
            .post(Some(&self.token(tenant)))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Stops the daemon (flushing the audit log) and returns every record.
    async fn stop_and_read_audit(self) -> Vec<AuditRecord> {
        self.server.stop().await.unwrap();
        let conn = open_read_only(&self.data_dir.join(sluice::app::AUDIT_FILE)).unwrap();
        read_settled(&conn, std::time::Duration::from_secs(5)).unwrap()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn column(body: &Value, i: usize) -> Vec<Value> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[i].clone())
        .collect()
}

#[tokio::test]
async fn json_answer_has_the_documented_shape_and_only_the_callers_rows() {
    let d = start().await;
    let (status, body) = d
        .query(
            "acme",
            "SELECT order_id, tenant_id, amount FROM orders ORDER BY order_id",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["columns"],
        json!([{"name":"order_id","type":"Int64"},{"name":"tenant_id","type":"Utf8"},{"name":"amount","type":"Float64"}])
    );
    assert_eq!(body["row_count"], 3000);
    assert_eq!(body["truncated"], false);
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(column(&body, 1).iter().all(|t| t == "acme"));

    // Another tenant sees only its own rows, even when it asks for someone else's.
    let (_, body) = d
        .query("globex", "SELECT DISTINCT tenant_id FROM orders")
        .await;
    assert_eq!(body["rows"], json!([["globex"]]));
    let (_, body) = d
        .query(
            "globex",
            "SELECT count(*) FROM orders WHERE tenant_id = 'acme'",
        )
        .await;
    assert_eq!(body["rows"], json!([[0]]));
    // Joins, subqueries and CTEs are filtered on every side.
    let (_, body) = d
        .query(
            "initech",
            "WITH o AS (SELECT * FROM orders) SELECT DISTINCT c.tenant_id, o.tenant_id FROM o \
             JOIN customers c ON c.customer_id = o.customer_id \
             WHERE o.customer_id IN (SELECT customer_id FROM customers)",
        )
        .await;
    assert_eq!(body["rows"], json!([["initech", "initech"]]));
    // Public tables are readable by every tenant, unfiltered.
    let (_, body) = d.query("acme", "SELECT count(*) FROM products").await;
    assert_eq!(body["rows"], json!([[40]]));
    d.server.stop().await.unwrap();
}

#[tokio::test]
async fn arrow_and_csv_answers_carry_the_same_rows() {
    let d = start().await;
    let sql = json!({"sql": "SELECT order_id, status FROM orders WHERE order_id <= 1000 ORDER BY order_id"});
    let token = d.token("acme");

    let resp = d
        .post(Some(&token))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .json(&sql)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = resp.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
    assert_eq!(batches[0].schema().field(1).name(), "status");

    let resp = d
        .post(Some(&token))
        .header("Accept", "text/csv")
        .json(&sql)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "order_id,status");
    assert_eq!(lines.len(), 1001);
    assert!(lines[1].starts_with("1,"));

    // An Accept we cannot serve is refused before anything runs.
    let resp = d
        .post(Some(&token))
        .header("Accept", "image/png")
        .json(&sql)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
    d.server.stop().await.unwrap();
}

#[tokio::test]
async fn the_row_limit_truncates_and_says_so() {
    let d = start_with(|c| c.limits.max_result_rows = 250).await;
    let (status, body) = d.query("acme", "SELECT order_id FROM orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["row_count"], 250);
    assert_eq!(body["rows"].as_array().unwrap().len(), 250);
    assert_eq!(body["truncated"], true);
    // Exactly at the limit is not truncated.
    let (_, body) = d
        .query("acme", "SELECT order_id FROM orders LIMIT 250")
        .await;
    assert_eq!(
        (body["row_count"].clone(), body["truncated"].clone()),
        (json!(250), json!(false))
    );
    let resp = d
        .post(Some(&d.token("acme")))
        .header("Accept", "text/csv")
        .json(&json!({"sql": "SELECT order_id FROM orders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["sluice-row-limit"], "250");
    assert_eq!(resp.text().await.unwrap().lines().count(), 251);
    let records = d.stop_and_read_audit().await;
    let outcomes: Vec<_> = records
        .iter()
        .filter(|r| r.event == Event::QueryCompletion)
        .map(|r| (r.outcome.clone().unwrap(), r.rows.unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("truncated".to_string(), 250),
            ("ok".to_string(), 250),
            ("truncated".to_string(), 250)
        ]
    );
}

/// Each bad request gets its own status and code, and never reaches the engine: the audit log
/// holds a `query_denied` record for it and no `query_attempt`.
#[tokio::test]
async fn bad_input_gets_precise_codes_and_never_reaches_the_engine() {
    let d = start().await;
    let good = d.token("acme");
    let t = now();
    let expired =
        d.sign(json!({"sub":"a","tenant":"acme","iss":"sluice-demo","aud":"sluice","exp":t-3600}));
    let not_yet = d.sign(json!({"sub":"a","tenant":"acme","iss":"sluice-demo","aud":"sluice","exp":t+3600,"nbf":t+1800}));
    let wrong_aud =
        d.sign(json!({"sub":"a","tenant":"acme","iss":"sluice-demo","aud":"other","exp":t+3600}));
    let wrong_iss =
        d.sign(json!({"sub":"a","tenant":"acme","iss":"evil","aud":"sluice","exp":t+3600}));
    let numeric_tenant =
        d.sign(json!({"sub":"a","tenant":7,"iss":"sluice-demo","aud":"sluice","exp":t+3600}));
    let array_tenant = d.sign(json!({"sub":"a","tenant":["acme","globex"],"iss":"sluice-demo","aud":"sluice","exp":t+3600}));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub":"a","tenant":"acme","iss":"sluice-demo","aud":"sluice","exp":t+3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
    )
    .unwrap();
    // alg=none: header {"alg":"none","typ":"JWT"}, valid claims, empty signature.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&json!({"sub":"a","tenant":"acme","iss":"sluice-demo","aud":"sluice","exp":t+3600}))
    );
    let ten_mb = format!("{{\"sql\":\"SELECT '{}'\"}}", "x".repeat(10 * 1024 * 1024));

    let q = |sql: &str| json!({ "sql": sql }).to_string();
    /// (name, bearer token, content type, body, expected status, expected code)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "missing token",
            None,
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "garbage token",
            Some("abc.def"),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "expired token",
            Some(&expired),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            "nbf in the future",
            Some(&not_yet),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "token_not_yet_valid",
        ),
        (
            "forged token",
            Some(&forged),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        ),
        (
            "alg none",
            Some(&alg_none),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "algorithm_not_allowed",
        ),
        (
            "wrong audience",
            Some(&wrong_aud),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_audience",
        ),
        (
            "wrong issuer",
            Some(&wrong_iss),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_issuer",
        ),
        (
            "numeric tenant",
            Some(&numeric_tenant),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_claims",
        ),
        (
            "array tenant",
            Some(&array_tenant),
            "application/json",
            q("SELECT 1").into(),
            StatusCode::UNAUTHORIZED,
            "invalid_claims",
        ),
        (
            "malformed JSON",
            Some(&good),
            "application/json",
            b"{\"sql\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong JSON shape",
            Some(&good),
            "application/json",
            br#"{"query":"SELECT 1"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "sql not a string",
            Some(&good),
            "application/json",
            br#"{"sql":42}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            Some(&good),
            "application/json",
            b"{\"sql\":\"SELECT '\xff\xfe'\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_encoding",
        ),
        (
            "not JSON media type",
            Some(&good),
            "text/plain",
            q("SELECT 1").into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "10 MB body",
            Some(&good),
            "application/json",
            ten_mb.into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "empty SQL",
            Some(&good),
            "application/json",
            q("   ").into(),
            StatusCode::BAD_REQUEST,
            "empty_query",
        ),
        (
            "parse error",
            Some(&good),
            "application/json",
            q("SELEC order_id FROM orders").into(),
            StatusCode::BAD_REQUEST,
            "sql_parse_error",
        ),
        (
            "two statements",
            Some(&good),
            "application/json",
            q("SELECT 1; SELECT 2").into(),
            StatusCode::BAD_REQUEST,
            "multiple_statements",
        ),
        (
            "INSERT",
            Some(&good),
            "application/json",
            q("INSERT INTO orders (order_id) VALUES (1)").into(),
            StatusCode::FORBIDDEN,
            "statement_not_allowed",
        ),
        (
            "DROP",
            Some(&good),
            "application/json",
            q("DROP TABLE orders").into(),
            StatusCode::FORBIDDEN,
            "statement_not_allowed",
        ),
        (
            "undeclared table",
            Some(&good),
            "application/json",
            q("SELECT * FROM secrets").into(),
            StatusCode::FORBIDDEN,
            "policy_denied",
        ),
        (
            "catalog",
            Some(&good),
            "application/json",
            q("SELECT * FROM information_schema.tables").into(),
            StatusCode::FORBIDDEN,
            "policy_denied",
        ),
        (
            "file read",
            Some(&good),
            "application/json",
            q("SELECT * FROM 'demo/orders.parquet'").into(),
            StatusCode::FORBIDDEN,
            "policy_denied",
        ),
        (
            "unknown connection",
            Some(&good),
            "application/json",
            json!({"sql":"SELECT 1","connection":"nope"})
                .to_string()
                .into(),
            StatusCode::NOT_FOUND,
            "unknown_connection",
        ),
    ];

    let mut denied_ids = Vec::new();
    for (name, token, content_type, body, status, code) in cases {
        let mut req = d
            .post(token)
            .header("Content-Type", content_type)
            .body(body);
        let rid = format!("bad-{}", name.replace(' ', "-"));
        req = req.header("X-Request-Id", &rid);
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{name}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        assert_eq!(resp.headers()["x-request-id"], rid.as_str(), "{name}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], code, "{name}: {problem}");
        assert_eq!(problem["status"], status.as_u16(), "{name}");
        assert_eq!(problem["request_id"], rid.as_str(), "{name}");
        assert!(
            problem["detail"].as_str().is_some_and(|m| m.len() > 10),
            "{name}: {problem}"
        );
        denied_ids.push(rid);
    }

    let records = d.stop_and_read_audit().await;
    for rid in &denied_ids {
        let mine: Vec<_> = records.iter().filter(|r| &r.request_id == rid).collect();
        assert_eq!(mine.len(), 1, "{rid}: {mine:?}");
        assert_eq!(mine[0].event, Event::QueryDenied, "{rid}");
        assert!(mine[0].code.is_some(), "{rid}");
    }
    assert!(
        records.iter().all(|r| r.event == Event::QueryDenied),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn every_query_is_audited_with_its_context() {
    let d = start().await;
    let token = d.token("acme");
    let ok = d
        .post(Some(&token))
        .header("X-Request-Id", "req-ok-1")
        .header("User-Agent", "bi-tool/1.0")
        .json(&json!({"sql": "SELECT order_id FROM orders LIMIT 7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.headers()["x-request-id"], "req-ok-1");
    assert_eq!(ok.json::<Value>().await.unwrap()["request_id"], "req-ok-1");
    let denied = d
        .post(Some(&token))
        .header("X-Request-Id", "req-denied-1")
        .json(&json!({"sql": "SELECT * FROM pg_catalog.pg_tables"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let failed = d
        .post(Some(&token))
        .header("X-Request-Id", "req-failed-1")
        .json(&json!({"sql": "SELECT no_such_column FROM orders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        failed.json::<Value>().await.unwrap()["code"],
        "invalid_query"
    );

    let records = d.stop_and_read_audit().await;
    let by = |rid: &str| {
        records
            .iter()
            .filter(|r| r.request_id == rid)
            .cloned()
            .collect::<Vec<_>>()
    };

    let ok = by("req-ok-1");
    assert_eq!(
        ok.iter().map(|r| r.event).collect::<Vec<_>>(),
        [Event::QueryAttempt, Event::QueryCompletion]
    );
    let done = &ok[1];
    assert_eq!(done.user.as_deref(), Some("alice"));
    assert_eq!(done.tenant.as_deref(), Some("acme"));
    assert_eq!(done.groups, ["analyst"]);
    assert_eq!(done.auth_method.as_deref(), Some("jwt"));
    assert_eq!(done.connection.as_deref(), Some("demo"));
    assert_eq!(done.user_agent.as_deref(), Some("bi-tool/1.0"));
    assert_eq!(done.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        done.sql.as_deref(),
        Some("SELECT order_id FROM orders LIMIT 7")
    );
    assert!(
        done.rewritten_sql
            .as_deref()
            .unwrap()
            .contains(r#"WHERE "tenant_id" = $1"#)
    );
    assert_eq!(done.params, ["acme"]);
    assert_eq!(done.tables, ["public.orders"]);
    assert_eq!(done.outcome.as_deref(), Some("ok"));
    assert_eq!(done.rows, Some(7));
    assert!(done.bytes.unwrap() > 0 && done.duration_ms.unwrap() > 0.0);
    assert!(ok[0].seq < ok[1].seq);

    let denied = by("req-denied-1");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].code.as_deref(), Some("policy_denied"));
    assert_eq!(denied[0].reason.as_deref(), Some("unknown_relation"));
    assert_eq!(denied[0].tenant.as_deref(), Some("acme"));

    let failed = by("req-failed-1");
    assert_eq!(
        failed.iter().map(|r| r.event).collect::<Vec<_>>(),
        [Event::QueryAttempt, Event::QueryCompletion]
    );
    assert_eq!(failed[1].outcome.as_deref(), Some("error"));
    assert_eq!(failed[1].code.as_deref(), Some("invalid_query"));
}

#[tokio::test]
async fn a_client_that_leaves_mid_answer_is_audited_as_cancelled() {
    let d = start_with(|c| c.limits.max_result_rows = 5_000_000).await;
    let resp = d
        .post(Some(&d.token("acme")))
        .header("X-Request-Id", "req-leaves")
        .json(&json!({"sql": "SELECT a.order_id, b.order_id FROM orders a CROSS JOIN orders b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    // The completion is written when the server notices; poll the log with a deadline.
    let path = d.data_dir.join(sluice::app::AUDIT_FILE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records = read_settled(
            &open_read_only(&path).unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        if let Some(r) = records
            .iter()
            .find(|r| r.request_id == "req-leaves" && r.event == Event::QueryCompletion)
        {
            assert_eq!(r.outcome.as_deref(), Some("cancelled"));
            assert!(r.rows.unwrap() < 9_000_000);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completion record for a cancelled query"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    d.server.stop().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let d = start().await;
    let c = &d.client;
    let r = c
        .get(format!("{}/healthz", d.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{}/readyz", d.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let r = c
        .get(format!("{}/v1/nope", d.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    let r = c
        .get(format!("{}/v1/query", d.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );
    d.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_query_slower_than_the_request_timeout_gets_504_and_is_audited() {
    let d = start_with(|c| c.server.request_timeout_ms = 100).await;
    let started = std::time::Instant::now();
    let resp = d
        .post(Some(&d.token("acme")))
        .header("X-Request-Id", "req-slow")
        .json(&json!({"sql": "SELECT count(*) FROM orders a CROSS JOIN orders b CROSS JOIN products p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let records = d.stop_and_read_audit().await;
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.request_id == "req-slow")
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!(mine[1].outcome.as_deref(), Some("timeout"));
}

/// A daemon whose queries time out after 300 ms, asked for 9M rows (as `accept`), which take
/// longer than that to stream: the answer starts, then the deadline passes mid-stream.
async fn answer_outliving_its_deadline(accept: &str) -> (Daemon, reqwest::Response) {
    let d = start_with(|c| {
        c.limits.query_timeout_ms = 300;
        c.limits.max_result_rows = 100_000_000;
    })
    .await;
    let resp = d
        .post(Some(&d.token("acme")))
        .header("X-Request-Id", "req-long")
        .header("Accept", accept)
        .json(&json!({"sql": "SELECT a.order_id, b.order_id FROM orders a CROSS JOIN orders b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    (d, resp)
}

#[tokio::test]
async fn a_query_slower_than_the_query_timeout_ends_with_a_timeout_error() {
    let (d, resp) = answer_outliving_its_deadline("application/json").await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{}", body["row_count"]);
    assert!(body["row_count"].as_u64().unwrap() < 9_000_000);
    let records = d.stop_and_read_audit().await;
    let done = records
        .iter()
        .find(|r| r.request_id == "req-long" && r.event == Event::QueryCompletion)
        .unwrap();
    assert_eq!(done.outcome.as_deref(), Some("timeout"));
}

/// A configuration file on disk, CSV tables with paths relative to it, secret from a file.
#[tokio::test]
async fn a_config_file_with_csv_tables_serves_filtered_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    std::fs::write(
        dir.path().join("files/regions.csv"),
        "region_id,name\n1,EMEA\n2,APAC\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("files/sales.csv"),
        "tenant_id,sale_id,region_id,amount,internal_note\nt1,1,1,10.5,x\nt2,2,2,99.0,y\nt1,3,2,7.25,z\n",
    )
    .unwrap();
    let secret = "0123456789abcdef0123456789abcdef-test-secret";
    std::fs::write(dir.path().join("jwt.secret"), format!("{secret}\n")).unwrap();
    let config_path = dir.path().join("sluice.toml");
    std::fs::write(
        &config_path,
        r#"
[server]
data_dir = "state"

[auth.jwt]
algorithm = "HS256"
secret_file = "jwt.secret"
issuer = "host-app"
audience = "sluice-test"

[auth.jwt.claims]
user = "uid"
tenant = "org"
groups = "roles"

[[connections]]
id = "files"
kind = "embedded"

[[connections.tables]]
name = "public.regions"
access = "public"
columns = ["region_id", "name"]
path = "files/regions.csv"
format = "csv"

[[connections.tables]]
name = "sales.sales"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "sale_id", "region_id", "amount"]
path = "files/sales.csv"
format = "csv"
"#,
    )
    .unwrap();
    let config = sluice::config::Config::load(&config_path).unwrap();
    assert_eq!(config.server.data_dir, dir.path().join("state"));
    let app = sluice::app::build(config).await.unwrap();
    let server = RunningServer::start(app, "127.0.0.1:0").await.unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"uid": "u1", "org": "t1", "roles": ["analyst"], "iss": "host-app", "aud": "sluice-test", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let ask = |sql: &str| {
        client
            .post(format!("{}/v1/query", server.url()))
            .bearer_auth(&token)
            .json(&json!({ "sql": sql }))
            .send()
    };
    let body: Value = ask("SELECT s.sale_id, r.name, s.amount FROM sales.sales s JOIN regions r USING (region_id) ORDER BY 1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["rows"],
        json!([[1, "EMEA", 10.5], [3, "APAC", 7.25]]),
        "{body}"
    );
    // An undeclared column is not readable even though it is in the file.
    let resp = ask("SELECT internal_note FROM sales.sales").await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // `*` means the declared columns.
    let body: Value = ask("SELECT * FROM sales.sales LIMIT 1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["columns"].as_array().unwrap().len(), 4);
    // The default schema is public: a one-part name does not find sales.sales.
    let resp = ask("SELECT * FROM sales").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    server.stop().await.unwrap();
    assert!(dir.path().join("state/audit.sqlite").exists());
}

#[tokio::test]
async fn an_empty_answer_is_well_formed_in_every_format() {
    let d = start().await;
    let sql = json!({"sql": "SELECT order_id, status FROM orders WHERE tenant_id = 'globex'"});
    let token = d.token("acme");
    let body: Value = d
        .post(Some(&token))
        .json(&sql)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["rows"], json!([]));
    assert_eq!(body["row_count"], 0);
    assert_eq!(body["columns"].as_array().unwrap().len(), 2);
    let csv = d
        .post(Some(&token))
        .header("Accept", "text/csv")
        .json(&sql)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.text().await.unwrap(), "order_id,status\n");
    let arrow = d
        .post(Some(&token))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .json(&sql)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
    assert_eq!(reader.schema().fields().len(), 2);
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 0);
    d.server.stop().await.unwrap();
}

/// Arrow and CSV answers have no place for a row count, so it comes as HTTP trailers to clients
/// that accept them (`TE: trailers`), after the last chunk of a chunked body.
#[tokio::test]
async fn csv_answers_end_with_row_count_trailers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = start_with(|c| c.limits.max_result_rows = 10).await;
    let body = json!({"sql": "SELECT order_id FROM orders"}).to_string();
    let request = format!(
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Accept: text/csv\r\nTE: trailers\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        d.token("acme"),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(d.server.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{raw}");
    assert!(lower.contains("\r\n0\r\nsluice-row-count: 10\r\n"), "{raw}");
    assert!(lower.contains("sluice-truncated: true\r\n"), "{raw}");
    d.server.stop().await.unwrap();
}

/// A CSV answer that fails mid-stream is aborted, so a client cannot take it for complete.
#[tokio::test]
async fn a_csv_answer_failing_mid_stream_is_aborted_not_cut_short() {
    let (d, resp) = answer_outliving_its_deadline("text/csv").await;
    assert!(
        resp.text().await.is_err(),
        "the transfer must fail, not end cleanly"
    );
    d.server.stop().await.unwrap();
}
