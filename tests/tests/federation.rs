//! Federated queries: a join of the local PostgreSQL (each user's own login, from the vault)
//! with the embedded engine (CSV), as two users of two tenants, through the daemon over HTTP.
//! Shows: correct answers per tenant; each source's sub-query carries that tenant's filter and
//! returns only that tenant's rows; PostgreSQL sees each user's own login (a table only one
//! user's login may read); the sub-queries in the audit log; explain; the per-source row cap
//! and the workspace's memory limit as `resource_exhausted`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::config::VaultConfig;
use sluice::http::server::RunningServer;
use sluice_connectors::Connector;

fn psql(db: &str, sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
        ])
        .arg(sql)
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "PostgreSQL at 127.0.0.1:5432 is required: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database, dropped (with the test's roles) when this guard is.
struct Db(String);

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

const CONNECTIONS: &str = r#"
[auth]
[[connections]]
id = "pg"
kind = "postgres"
url_env = "SLUICE_FEDERATION_TEST_UNUSED"
credential = "password"
[[connections.tables]]
name = "public.stock"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "qty"]
[[connections.tables.row_filters]]
filter = "product_id IN attr.products"
groups = ["regional"]
[[connections.tables]]
name = "public.pricing"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "price"]

[[connections]]
id = "emb"
kind = "embedded"
[[connections.tables]]
name = "public.sales"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "amount"]
path = "SALES"
format = "csv"
[[connections.tables.row_filters]]
filter = "product_id IN attr.products"
groups = ["regional"]
[[connections.tables]]
name = "public.events"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "note"]
path = "EVENTS"
format = "csv"
[[connections.tables]]
name = "public.blobs"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "product_id", "note"]
path = "BLOBS"
format = "csv"
"#;

struct Env {
    base: String,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
    server: RunningServer,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn post(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn query(&self, token: &str, sql: &str) -> (u16, Value) {
        let r = self.post(token, "/v1/query", json!({ "sql": sql })).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn records(&self) -> Vec<sluice_audit::AuditRecord> {
        sluice_audit::read_settled(
            &sluice_audit::open_read_only(&self.data_dir.join(sluice::app::AUDIT_FILE)).unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
    }
}

async fn start(db_url: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    // The embedded source: 20 products' sales per tenant, and 40 large events per tenant.
    let sales = dir.path().join("sales.csv");
    let mut csv = String::from("tenant_id,product_id,amount\n");
    for p in 1..=20 {
        csv.push_str(&format!("A,{p},{}\nB,{p},{}\n", p * 10, p * 10 + 5000));
    }
    std::fs::write(&sales, csv).unwrap();
    // 60 small events per tenant (more than the 50 rows a source may return here), and 40
    // blobs of 200 kB per tenant (more than the 4 MB workspace can hold).
    let events = dir.path().join("events.csv");
    let mut csv = String::from("tenant_id,product_id,note\n");
    for p in 0..60 {
        csv.push_str(&format!("A,{},e\nB,{},e\n", p % 20 + 1, p % 20 + 1));
    }
    std::fs::write(&events, csv).unwrap();
    let blobs = dir.path().join("blobs.csv");
    let mut csv = String::from("tenant_id,product_id,note\n");
    let note = "n".repeat(200_000);
    for p in 0..40 {
        csv.push_str(&format!(
            "A,{},{note}\nB,{},{note}\n",
            p % 20 + 1,
            p % 20 + 1
        ));
    }
    std::fs::write(&blobs, csv).unwrap();

    let data_dir = dir.path().join("data");
    let key = dir.path().join("vault.key");
    std::fs::write(&key, sluice::vault::crypto::new_key().unwrap()).unwrap();
    let mut config = sluice::demo::config(&data_dir, "127.0.0.1:0").unwrap();
    config.vault = Some(VaultConfig {
        key_env: None,
        key_file: Some(key),
        previous_key_files: vec![],
        previous_key_envs: vec![],
        refresh_at_percent: 80,
        refresh_check_ms: 1000,
        max_concurrent_refreshes: 4,
    });
    config.federation.max_source_rows = 50;
    config.federation.memory_limit_mb = 4;
    let toml = CONNECTIONS
        .replace("SALES", &sales.display().to_string())
        .replace("EVENTS", &events.display().to_string())
        .replace("BLOBS", &blobs.display().to_string());
    config.connections = sluice::config::Config::parse(&toml).unwrap().connections;
    // Callers of the group `regional` see only the products their token lists, in both sources.
    config.auth.attributes = BTreeMap::from([("products".into(), "integer[]".into())]);
    if let Some(jwt) = &mut config.auth.jwt {
        jwt.claims.attributes = vec!["products".into()];
    }
    config.validate().unwrap();
    // The PostgreSQL connector is given the test database's URL directly (no environment).
    let pg: Arc<dyn Connector> = Arc::new(
        sluice_connectors::postgres::PostgresConnector::new(
            &sluice_connectors::postgres::PostgresOptions {
                url: db_url.to_string(),
                statement_timeout: Duration::from_secs(30),
            },
        )
        .unwrap(),
    );
    let app =
        sluice::app::build_with_connectors(config, None, BTreeMap::from([("pg".to_string(), pg)]))
            .await
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = RunningServer::start_on(app, listener).unwrap();
    Env {
        base,
        http: reqwest::Client::new(),
        data_dir,
        server,
        _dir: dir,
    }
}

#[tokio::test]
async fn federated_joins_of_postgres_and_the_embedded_engine_per_tenant() {
    let db = Db(format!("sluice_test_federation_{}", std::process::id()));
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.0),
    );
    psql("postgres", &format!("CREATE DATABASE {}", db.0));
    // Each user logs in to PostgreSQL as themselves; only fed_alice may read pricing.
    psql(
        &db.0,
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fed_alice') THEN
             CREATE ROLE fed_alice LOGIN PASSWORD 'alice-pw'; END IF;
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fed_bob') THEN
             CREATE ROLE fed_bob LOGIN PASSWORD 'bob-pw'; END IF;
         END $$;
         CREATE TABLE stock (tenant_id text, product_id int, qty int);
         INSERT INTO stock SELECT 'A', p, p FROM generate_series(1, 20) p;
         INSERT INTO stock SELECT 'B', p, 100 + p FROM generate_series(1, 20) p;
         CREATE TABLE pricing (tenant_id text, product_id int, price int);
         INSERT INTO pricing SELECT t, p, p * 3 FROM generate_series(1, 20) p, (VALUES ('A'), ('B')) v(t);
         GRANT SELECT ON stock TO fed_alice, fed_bob;
         GRANT SELECT ON pricing TO fed_alice;",
    );
    // Each query logs in as its user (credential = "password"); the URL's own login, never used
    // for a query, is the least-privilege reader rather than the superuser.
    let url = format!("postgres://sluice_reader@127.0.0.1:5432/{}", db.0);
    let env = start(&url).await;
    let alice = sluice::demo::token(&env.data_dir, "fed_alice", "A", &["analyst".into()]).unwrap();
    let bob = sluice::demo::token(&env.data_dir, "fed_bob", "B", &["analyst".into()]).unwrap();

    // Without their own PostgreSQL password, a federated query touching pg is refused.
    let sql = "SELECT s.product_id, s.amount, k.qty \
               FROM emb.public.sales s JOIN pg.public.stock k ON k.product_id = s.product_id \
               WHERE s.product_id <= 3 ORDER BY s.product_id";
    let (status, body) = env.query(&alice, sql).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("reauth_required")),
        "{body}"
    );
    for (token, password) in [(&alice, "alice-pw"), (&bob, "bob-pw")] {
        let r = env
            .http
            .put(format!("{}/v1/connections/pg/credential", env.base))
            .bearer_auth(token)
            .json(&json!({ "password": password }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    // 1. The same join as two users of two tenants: each sees only their tenant's rows.
    let (status, body) = env.query(&alice, sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        json!([[1, 10, 1], [2, 20, 2], [3, 30, 3]]),
        "{body}"
    );
    let (status, body) = env.query(&bob, sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        json!([[1, 5010, 101], [2, 5020, 102], [3, 5030, 103]])
    );

    // 2. The audit log lists each sub-query: its source, the SQL as sent (the tenant filter
    // bound as a parameter, the product filter pushed down), the rows it returned.
    let records = env.records();
    let alice_done = records
        .iter()
        .rfind(|r| {
            r.event == sluice_audit::Event::QueryCompletion
                && r.user.as_deref() == Some("fed_alice")
                && r.outcome.as_deref() == Some("ok")
        })
        .unwrap();
    assert_eq!(alice_done.connection.as_deref(), Some("federated"));
    assert_eq!(
        alice_done.tables,
        vec![
            "emb.public.sales".to_string(),
            "pg.public.stock".to_string()
        ]
    );
    let subs = &alice_done.sub_queries;
    assert_eq!(subs.len(), 2, "{subs:?}");
    for s in subs {
        assert!(
            s.sql.contains("$1"),
            "the tenant is a bound parameter: {}",
            s.sql
        );
        assert!(!s.sql.contains("'A'"), "{}", s.sql);
        // Each source returned at most tenant A's 20 rows (each table holds 40).
        assert!(s.rows.is_some_and(|n| n <= 20), "{s:?}");
    }
    let sales_sub = subs.iter().find(|s| s.connection == "emb").unwrap();
    assert!(
        sales_sub.sql.contains("<= 3"),
        "filter pushed down: {}",
        sales_sub.sql
    );
    assert_eq!(sales_sub.rows, Some(3));
    assert!(subs.iter().any(|s| s.connection == "pg"));
    // The attempt came first, and lists the sources too.
    assert!(records.iter().any(|r| {
        r.event == sluice_audit::Event::QueryAttempt
            && r.user.as_deref() == Some("fed_alice")
            && r.tables.len() == 2
    }));

    // 3. PostgreSQL sees each user's own login: pricing is granted to fed_alice only.
    let priced = "SELECT s.product_id, p.price FROM emb.public.sales s \
                  JOIN pg.public.pricing p ON p.product_id = s.product_id \
                  WHERE s.product_id = 2";
    let (status, body) = env.query(&alice, priced).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[2, 6]]));
    let (status, body) = env.query(&bob, priced).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "warehouse_error");
    assert_eq!(body["warehouse_code"], "42501", "{body}");

    // 4. Explain: each source's sub-query and where the join runs.
    let r = env
        .post(&alice, "/v1/policy/explain", json!({ "sql": sql }))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(v["connection"], "federated");
    assert_eq!(v["sub_queries"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["plan"].as_str().unwrap().contains("HashJoinExec"), "{v}");

    // 5. One connection only: the query goes to that warehouse whole, in its dialect.
    let (status, body) = env
        .query(
            &alice,
            "SELECT count(*) AS n, sum(qty) AS q FROM pg.public.stock",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[20, 210]]));
    let last = env.records().pop().unwrap();
    assert_eq!(last.connection.as_deref(), Some("pg"));
    assert!(last.sub_queries.is_empty());

    // 6. Default deny and naming: undeclared tables and unqualified names are refused.
    let (status, body) = env
        .query(
            &alice,
            "SELECT * FROM emb.public.sales s JOIN pg.public.secrets x ON true",
        )
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("unknown_relation")),
        "{body}"
    );
    let (status, body) = env.query(&alice, "SELECT * FROM stock").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("connection_required")),
        "{body}"
    );
    let (status, body) = env.query(&alice, "DELETE FROM pg.public.stock").await;
    assert_eq!(status, 403, "{body}");

    // 7. Limits: a source returning more than max_source_rows (50; events holds 60 rows per
    // tenant), and a join whose build side exceeds the 4 MB workspace.
    let (status, body) = env
        .query(
            &alice,
            "SELECT e.product_id, k.qty FROM emb.public.events e \
             JOIN pg.public.stock k ON k.product_id = e.product_id",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "resource_exhausted", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("more than 50 rows"),
        "{body}"
    );
    let (status, body) = env
        .query(
            &alice,
            "SELECT length(a.note) + length(b.note) AS n FROM emb.public.blobs a \
             JOIN emb.public.blobs b ON a.product_id = b.product_id \
             JOIN pg.public.stock k ON k.product_id = a.product_id",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "resource_exhausted", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("memory"),
        "{body}"
    );

    // 8. Row filters apply in every source's sub-query: a regional caller of tenant A sees
    // the products its token lists, both sources filtered (bound, never spliced), and the audit
    // log keeps each sub-query's filters with their values.
    let secret = sluice::demo::secret(&env.data_dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let regional = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "fed_alice", "tenant": "A", "groups": ["analyst", "regional"],
                "products": [2, 3, 9], "iss": sluice::demo::ISSUER, "aud": sluice::demo::AUDIENCE,
                "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    let joined = "SELECT s.product_id, s.amount, k.qty \
                  FROM emb.public.sales s JOIN pg.public.stock k ON k.product_id = s.product_id \
                  ORDER BY s.product_id";
    let (status, body) = env.query(&regional, joined).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        json!([[2, 20, 2], [3, 30, 3], [9, 90, 9]]),
        "{body}"
    );
    // Without the attribute, the regional caller is refused; the analyst is not filtered.
    let (status, body) = env
        .query(
            &sluice::demo::token(
                &env.data_dir,
                "fed_alice",
                "A",
                &["analyst".into(), "regional".into()],
            )
            .unwrap(),
            joined,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("attribute_missing")),
        "{body}"
    );
    let done = env
        .records()
        .into_iter()
        .rfind(|r| {
            r.event == sluice_audit::Event::QueryCompletion
                && r.outcome.as_deref() == Some("ok")
                && r.connection.as_deref() == Some("federated")
        })
        .unwrap();
    assert_eq!(done.sub_queries.len(), 2, "{:?}", done.sub_queries);
    for s in &done.sub_queries {
        assert_eq!(s.row_filters.len(), 1, "{s:?}");
        assert_eq!(s.row_filters[0].value, Some(json!([2, 3, 9])), "{s:?}");
        assert!(!s.sql.contains("2, 3, 9"), "bound, not spliced: {}", s.sql);
        assert_eq!(s.rows, Some(3), "{s:?}");
    }

    env.server.stop().await.unwrap();
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.0),
    );
    psql(
        "postgres",
        "DROP ROLE IF EXISTS fed_alice; DROP ROLE IF EXISTS fed_bob;",
    );
}
