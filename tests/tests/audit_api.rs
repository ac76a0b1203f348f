//! The compliance officer's API over real HTTP, roles, and fail-closed auditing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::http::server::RunningServer;

struct Daemon {
    server: RunningServer,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.auth.roles.compliance = vec!["auditors".into()];
    for t in &mut config.connections[0].tables {
        if t.name == "public.customers" {
            t.tags = vec!["phi".into()];
        }
    }
    let app = sluice::app::build(config).await.unwrap();
    let server = RunningServer::start(app, "127.0.0.1:0").await.unwrap();
    Daemon {
        server,
        data_dir,
        _dir: dir,
    }
}

impl Daemon {
    fn token(&self, user: &str, tenant: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        sluice::demo::token(&self.data_dir, user, tenant, &groups).unwrap()
    }

    async fn query(&self, token: &str, sql: &str) -> StatusCode {
        reqwest::Client::new()
            .post(format!("{}/v1/query", self.server.url()))
            .bearer_auth(token)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.server.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn compliance_officers_query_the_log_and_only_they_can() {
    let d = start().await;
    let alice = d.token("alice", "acme", &["analyst"]);
    let carol = d.token("carol", "acme", &["auditors"]);
    assert_eq!(
        d.query(&alice, "SELECT count(*) FROM orders").await,
        StatusCode::OK
    );
    assert_eq!(
        d.query(&alice, "SELECT c.name FROM customers c").await,
        StatusCode::OK
    );
    assert_eq!(
        d.query(&alice, "SELECT * FROM pg_catalog.pg_user").await,
        StatusCode::FORBIDDEN
    );

    // Roles: an analyst cannot read the log; a compliance principal cannot run data queries.
    let r = d.get(&alice, "/v1/audit/records").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "forbidden_role");
    assert_eq!(
        d.query(&carol, "SELECT count(*) FROM orders").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        d.get(&alice, "/v1/audit/records?bogus=1").await.status(),
        StatusCode::FORBIDDEN
    );

    let v: Value = d
        .get(&carol, "/v1/audit/records?user=alice&event=query_attempt")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
    let v: Value = d
        .get(&carol, "/v1/audit/records?table=customers")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tables"] == json!(["public.customers"]))
    );
    let v: Value = d
        .get(&carol, "/v1/audit/records?denied_or_failed=true")
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<(&str, &str)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    // alice's refused calls to the audit API are recorded too (`auth_denied`).
    assert_eq!(
        codes,
        [
            ("query_denied", "policy_denied"),
            ("auth_denied", "forbidden_role"),
            ("query_denied", "forbidden_role"),
            ("auth_denied", "forbidden_role"),
        ],
        "{v}"
    );
    let v: Value = d
        .get(&carol, "/v1/audit/records?column=customers.name")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        d.get(&carol, "/v1/audit/records?since=yesterday")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        d.get(&carol, "/v1/audit/records?bogus=1").await.status(),
        StatusCode::BAD_REQUEST
    );

    let v: Value = d
        .get(&carol, "/v1/audit/access?table=orders&days=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["accessors"][0]["user"], "alice");
    assert_eq!(v["accessors"][0]["queries"], 1);
    let v: Value = d
        .get(&carol, "/v1/audit/anomalies?days=7")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "first_access"),
        "{v}"
    );
    let v: Value = d
        .get(&carol, "/v1/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["first_bad_seq"], Value::Null);

    // GDPR export: everything about alice, with the checkpoint that covers it.
    let r = d.get(&carol, "/v1/audit/export/subject?user=alice").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["sluice-audit-checkpoint"]
            .to_str()
            .unwrap()
            .starts_with("seq=")
    );
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["export"], "gdpr_subject_access");
    let covered = lines[0]["checkpoint"]["seq"].as_u64().unwrap();
    assert_eq!(
        lines.len() - 1,
        7,
        "2 attempts, 2 completions, 1 query denial, 2 refused audit-API calls: {text}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|r| r["user"] == "alice" && r["seq"].as_u64().unwrap() <= covered)
    );
    // HIPAA-style: every access to tables tagged phi (customers).
    let text = d
        .get(&carol, "/v1/audit/export/phi?format=csv")
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("# {\"export\":\"hipaa_phi_access\""),
        "{text}"
    );
    assert_eq!(
        rows.len(),
        3,
        "comment, header, the one customers read: {text}"
    );
    assert!(rows[2].contains("public.customers"));
    d.server.stop().await.unwrap();
}

#[tokio::test]
async fn when_the_log_cannot_be_written_queries_are_refused_and_readyz_says_so() {
    let d = start().await;
    let alice = d.token("alice", "acme", &["analyst"]);
    assert_eq!(
        d.query(&alice, "SELECT count(*) FROM orders").await,
        StatusCode::OK
    );
    // Another writer holds the database's write lock longer than the writer waits.
    let blocker = rusqlite::Connection::open(d.data_dir.join("audit.sqlite")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/query", d.server.url()))
        .bearer_auth(&alice)
        .json(&json!({"sql": "SELECT count(*) FROM orders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "audit_unavailable"
    );
    assert_eq!(
        d.get(&alice, "/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        d.query(&alice, "SELECT count(*) FROM orders").await,
        StatusCode::OK
    );
    assert_eq!(d.get(&alice, "/readyz").await.status(), StatusCode::OK);
    d.server.stop().await.unwrap();
}
