//! The HTTP front door through the router without a socket (`router(state).oneshot(..)`): the
//! handlers translate requests into engine calls and errors into problem+json; the engine
//! (embedded demo data) audits every way out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice::app::AppState;
use sluice_audit::{AuditRecord, Event};
use tower::ServiceExt;

struct Demo {
    state: Arc<AppState>,
    data_dir: std::path::PathBuf,
    _writer: sluice_audit::AuditWriter,
    _dir: tempfile::TempDir,
}

async fn demo() -> Demo {
    demo_with(|_| {}).await
}

async fn demo_with(edit: impl FnOnce(&mut sluice::config::Config)) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    edit(&mut config);
    let app = sluice::app::build(config).await.unwrap();
    Demo {
        state: app.state,
        data_dir,
        _writer: app.audit_writer,
        _dir: dir,
    }
}

impl Demo {
    fn token(&self, tenant: &str) -> String {
        sluice::demo::token(&self.data_dir, "alice", tenant, &["analyst".into()]).unwrap()
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, String, Value) {
        let resp = sluice::http::router(Arc::clone(&self.state))
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, body)
    }

    fn post(&self, path: &str, tenant: Option<&str>, body: Value) -> Request<Body> {
        let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = tenant {
            r = r.header(header::AUTHORIZATION, format!("Bearer {}", self.token(t)));
        }
        r.body(Body::from(body.to_string())).unwrap()
    }

    fn audit(&self) -> Vec<AuditRecord> {
        let conn =
            sluice_audit::open_read_only(&self.data_dir.join(sluice::app::AUDIT_FILE)).unwrap();
        sluice_audit::read_settled(&conn, std::time::Duration::from_secs(5)).unwrap()
    }
}

#[tokio::test]
async fn a_query_answers_through_the_router_and_is_audited() {
    let d = demo().await;
    let (status, ct, body) = d
        .call(d.post(
            "/v1/query",
            Some("acme"),
            json!({"sql": "SELECT DISTINCT tenant_id FROM orders"}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ct, "application/json");
    assert_eq!(body["rows"], json!([["acme"]]));
    let records = d.audit();
    let kinds: Vec<Event> = records.iter().map(|r| r.event).collect();
    assert_eq!(kinds, [Event::QueryAttempt, Event::QueryCompletion]);
    assert_eq!(records[1].outcome.as_deref(), Some("ok"));
    assert_eq!(records[1].rows, Some(1));
}

#[tokio::test]
async fn caller_parameters_on_the_embedded_engine() {
    let d = demo().await;
    let sql = "SELECT order_id, tenant_id FROM orders WHERE order_id BETWEEN $1 AND $2 \
               ORDER BY order_id";
    let (status, _, body) = d
        .call(d.post(
            "/v1/query",
            Some("acme"),
            json!({"sql": sql, "params": [1, 5]}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{body}");
    assert!(
        rows.iter()
            .all(|r| r[1] == "acme" && (1..=5).contains(&r[0].as_i64().unwrap()))
    );
    // Text as a parameter is a value: another tenant's id filters within the caller's rows.
    let (status, _, body) = d
        .call(d.post(
            "/v1/query",
            Some("acme"),
            json!({"sql": "SELECT count(*) FROM orders WHERE tenant_id = $1", "params": ["globex"]}),
        ))
        .await;
    assert_eq!(
        (status, body["rows"].clone()),
        (StatusCode::OK, json!([[0]])),
        "{body}"
    );
    // Refusals: too many, the tenant's placeholder, a non-scalar, a wrong type.
    for (sql, params, status, code) in [
        (
            "SELECT 1 FROM orders WHERE order_id = $1",
            json!([1, 2]),
            400,
            "invalid_parameters",
        ),
        (
            "SELECT 1 FROM orders WHERE tenant_id = $2",
            json!(["x"]),
            403,
            "policy_denied",
        ),
        (
            "SELECT 1 FROM orders WHERE order_id = $1",
            json!([{"a": 1}]),
            400,
            "invalid_parameter",
        ),
        (
            "SELECT 1 FROM orders WHERE order_id = $1",
            json!([u64::MAX]),
            400,
            "invalid_parameter",
        ),
        (
            "SELECT 1 FROM orders WHERE order_id = $1",
            json!(vec![1; 1_001]),
            400,
            "too_many_parameters",
        ),
        (
            "SELECT 1 FROM orders WHERE order_id = $1",
            json!(["abc"]),
            400,
            "invalid_parameter",
        ),
    ] {
        let (s, _, body) = d
            .call(d.post(
                "/v1/query",
                Some("acme"),
                json!({"sql": sql, "params": params}),
            ))
            .await;
        assert_eq!(
            (s.as_u16(), body["code"].as_str()),
            (status, Some(code)),
            "{sql}: {body}"
        );
    }
    // Every one audited: the policy's refusals as denials (no attempt); the value of the wrong
    // type is found by the engine that infers the types, so it was attempted and failed.
    let records = d.audit();
    let denied = records
        .iter()
        .filter(|r| r.event == Event::QueryDenied)
        .count();
    assert_eq!(denied, 5);
    assert!(records.iter().any(
        |r| r.event == Event::QueryCompletion && r.code.as_deref() == Some("invalid_parameter")
    ));
    let attempt = records
        .iter()
        .find(|r| r.event == Event::QueryAttempt)
        .unwrap();
    assert_eq!(attempt.params, ["1", "5", "acme"]);
}

#[tokio::test]
async fn explain_is_audited_like_a_query_and_refusals_are_documents() {
    let d = demo().await;
    let (status, _, body) = d
        .call(d.post(
            "/v1/policy/explain",
            Some("acme"),
            json!({"sql": "SELECT order_id FROM orders WHERE order_id = $1", "params": [3]}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["caller_params"], json!([3]));
    assert_eq!(body["params"], json!(["acme"]));
    let (status, _, body) = d
        .call(d.post(
            "/v1/policy/explain",
            Some("acme"),
            json!({"sql": "DELETE FROM orders"}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["decision"].as_str(), body["code"].as_str()),
        (Some("reject"), Some("statement_not_allowed"))
    );
    let records = d.audit();
    let kinds: Vec<(Event, Option<&str>)> = records
        .iter()
        .map(|r| (r.event, r.outcome.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Event::QueryAttempt, None),
            (Event::QueryCompletion, Some("explained")),
            (Event::QueryDenied, None),
        ]
    );
}

#[tokio::test]
async fn errors_are_problem_documents_with_their_status() {
    let d = demo().await;
    // No credential.
    let (status, ct, body) = d
        .call(d.post("/v1/query", None, json!({"sql": "SELECT 1"})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["code"], "unauthenticated");
    // Not JSON.
    let req = Request::post("/v1/query")
        .header(header::AUTHORIZATION, format!("Bearer {}", d.token("acme")))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("SELECT 1"))
        .unwrap();
    let (status, _, body) = d.call(req).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    // Unknown connection; a policy refusal.
    let (status, _, body) = d
        .call(d.post(
            "/v1/query",
            Some("acme"),
            json!({"sql": "SELECT 1", "connection": "nope"}),
        ))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_connection"))
    );
    let (status, _, body) = d
        .call(d.post(
            "/v1/query",
            Some("acme"),
            json!({"sql": "DROP TABLE orders"}),
        ))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("statement_not_allowed"))
    );
    // Each refusal is one denied record.
    let records = d.audit();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.event == Event::QueryDenied));
    assert_eq!(records[0].auth_method.as_deref(), Some("none"));
}

#[tokio::test]
async fn redacted_audit_records_carry_no_literals_or_parameter_values_on_any_path() {
    let d = demo_with(|c| c.audit.redact_literals = true).await;
    for params in [json!([7]), json!([[7]])] {
        let (status, _, body) = d
            .call(d.post(
                "/v1/query",
                Some("acme"),
                json!({"sql": "SELECT 'secret-literal' AS s FROM orders WHERE order_id = $1",
                       "params": params}),
            ))
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    let records = d.audit();
    assert_eq!(records.len(), 3, "an attempt, a completion, a denial");
    for r in &records {
        let text = serde_json::to_string(r).unwrap();
        assert!(!text.contains("secret-literal"), "{text}");
        assert!(!r.params.iter().any(|p| p == "7"), "{text}");
        assert!(r.sql.as_deref().is_some_and(|s| s.contains('?')), "{text}");
    }
}

#[tokio::test]
async fn no_answer_is_kept_by_a_shared_cache() {
    let d = demo().await;
    let requests = [
        d.post(
            "/v1/policy/explain",
            Some("acme"),
            json!({"sql": "SELECT 1"}),
        ),
        d.post("/v1/query", None, json!({"sql": "SELECT 1"})),
        Request::get("/v1/connections")
            .header(header::AUTHORIZATION, format!("Bearer {}", d.token("acme")))
            .body(Body::empty())
            .unwrap(),
        Request::get("/v1/audit/records")
            .body(Body::empty())
            .unwrap(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    ];
    for req in requests {
        let path = req.uri().path().to_string();
        let resp = sluice::http::router(Arc::clone(&d.state))
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(
            resp.headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path}"
        );
    }
}

/// A log writer the test can read.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_header_value_cannot_forge_fields_of_a_text_log_line() {
    let d = demo().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let req = Request::post("/v1/query")
        .header(header::ORIGIN, "https://evil.example code=ok user=admin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"sql": "SELECT 1"}).to_string()))
        .unwrap();
    let (status, _, _) = d.call(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(r#"origin="https://evil.example code=ok user=admin""#),
        "{text}"
    );
    assert!(!text.contains("origin=https://evil.example"), "{text}");
}

/// The same text from two tenants and two roles: the second tenant's query is a rewrite-cache
/// hit, and each caller still gets only their own tenant's rows (the tenant is the cached
/// rewrite's parameter, never part of its text); a reload starts an empty cache.
#[tokio::test]
async fn a_cached_rewrite_serves_each_tenant_its_own_rows() {
    let d = demo().await;
    let sql = "SELECT DISTINCT tenant_id FROM orders";
    for tenant in ["acme", "globex", "acme", "globex"] {
        let (status, _, body) = d
            .call(d.post("/v1/query", Some(tenant), json!({ "sql": sql })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rows"], json!([[tenant]]), "{tenant}");
    }
    let stats = d.state.engine.policy().cache.stats();
    assert_eq!((stats.misses, stats.hits), (1, 3), "{stats:?}");
    let records = d.audit();
    let attempts: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == Event::QueryAttempt)
        .collect();
    assert_eq!(attempts.len(), 4);
    for a in &attempts {
        // Each attempt records its own caller's tenant as the bound parameter.
        assert_eq!(a.params, vec![a.tenant.clone().unwrap()], "{a:?}");
    }
    // A reloaded policy is a new snapshot with an empty cache.
    let config = sluice::demo::config(&d.data_dir, "127.0.0.1:0").unwrap();
    d.state
        .engine
        .set_policy(sluice::engine::policy::Policy::from_config(&config).unwrap());
    assert_eq!(d.state.engine.policy().cache.stats().entries, 0);
    let (status, _, body) = d
        .call(d.post("/v1/query", Some("globex"), json!({ "sql": sql })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([["globex"]]));
}
