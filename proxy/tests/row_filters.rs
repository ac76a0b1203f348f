//! Row filters from the caller's attributes, against the real PostgreSQL server: every answer
//! equals the same query run on a copy holding only the rows that caller may see, and every way
//! of holding the wrong attributes is refused (never all rows).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Daemon, TestDb};
use serde_json::{Value, json};

const SECRET: &str = "row-filter-secret-for-tests-only-0123456789";

/// 240 sales over two tenants, three regions and ten accounts.
const SQL: &str = "
CREATE TABLE sales (id int PRIMARY KEY, tenant_id text NOT NULL, region text NOT NULL,
                    account_id int NOT NULL, amount int NOT NULL);
INSERT INTO sales SELECT i, CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END,
       (ARRAY['emea', 'apac', 'amer'])[1 + i % 3], 1 + i % 10, (i * 37) % 101
FROM generate_series(1, 240) AS i;
INSERT INTO sales VALUES (1000, 'A', 'emea'' OR ''1''=''1', 1, 5);
";

const CONFIG: &str = r#"
[server]
data_dir = "data"

[auth.jwt]
algorithm = "HS256"
secret_env = "RF_JWT_SECRET"
issuer = "rf-idp"
audience = "sluice-rf"

[auth.jwt.claims]
attributes = ["region", "accounts"]

[auth.attributes]
region = "text"
accounts = "integer[]"

[[connections]]
id = "pg"
kind = "postgres"
url_env = "RF_PG_URL"
default_schema = "public"

[[connections.tables]]
name = "public.sales"
access = "protected"
tenant_column = "tenant_id"
columns = ["id", "tenant_id", "region", "account_id", "amount"]

[[connections.tables.row_filters]]
filter = "region = attr.region"
except = ["managers"]

[[connections.tables.row_filters]]
filter = "account_id IN attr.accounts"

[[connections.tables.row_filters]]
filter = "amount IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50)"
groups = ["interns"]
"#;

fn token(claims: Value) -> String {
    let mut c = json!({"aud": "sluice-rf", "iss": "rf-idp", "sub": "u", "tenant": "A", "groups": ["analyst"]});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    common::sign_hs256(SECRET, c)
}

async fn query(d: &Daemon, token: &str, sql: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/query", d.url))
        .bearer_auth(token)
        .json(&json!({"sql": sql, "connection": "pg"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A JSON cell as PostgreSQL's text.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const QUERIES: [&str; 6] = [
    "SELECT count(*), sum(amount) FROM sales",
    "SELECT region, account_id, count(*) FROM sales GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT a.id, b.id FROM sales a JOIN sales b ON a.account_id = b.account_id AND a.id < b.id ORDER BY 1, 2 LIMIT 50",
    "SELECT id FROM sales WHERE id IN (SELECT id FROM sales WHERE amount > 50) ORDER BY id",
    "SELECT max(amount) FROM sales WHERE region = 'apac' OR region = 'emea'",
    "SELECT id, rank() OVER (PARTITION BY region ORDER BY amount, id) FROM sales ORDER BY id LIMIT 40",
];

#[tokio::test]
async fn each_caller_sees_exactly_their_rows_and_a_wrong_attribute_is_refused() {
    let db = TestDb::create("row_filters", SQL).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rf.toml");
    std::fs::write(&config, CONFIG).unwrap();
    db.grant_reader().await;
    let url = db.reader_url();
    let d = Daemon::start(
        &config,
        &dir.path().join("data"),
        &[("RF_JWT_SECRET", SECRET), ("RF_PG_URL", url.as_str())],
    );
    let admin = common::connect(&db.conn_str()).await;

    // Each caller, and the rows they may see (the oracle's predicate).
    let callers = [
        (
            "regional",
            json!({"region": "emea", "accounts": [1, 2, 3]}),
            "tenant_id = 'A' AND region = 'emea' AND account_id IN (1, 2, 3)",
        ),
        (
            "other_region",
            json!({"region": "apac", "accounts": [2, 4, 6, 8, 10]}),
            "tenant_id = 'A' AND region = 'apac' AND account_id IN (2, 4, 6, 8, 10)",
        ),
        (
            "manager",
            json!({"groups": ["analyst", "managers"], "accounts": [1, 5, 9]}),
            "tenant_id = 'A' AND account_id IN (1, 5, 9)",
        ),
        (
            "intern",
            json!({"groups": ["interns"], "region": "amer", "accounts": [1, 2, 3, 4, 5, 6]}),
            "tenant_id = 'A' AND region = 'amer' AND account_id IN (1, 2, 3, 4, 5, 6) AND amount BETWEEN 1 AND 50",
        ),
        (
            "other_tenant",
            json!({"tenant": "B", "region": "emea", "accounts": [1, 3, 5, 7, 9]}),
            "tenant_id = 'B' AND region = 'emea' AND account_id IN (1, 3, 5, 7, 9)",
        ),
        (
            "no_accounts",
            json!({"region": "emea", "accounts": []}),
            "false",
        ),
        (
            "hostile",
            json!({"region": "emea' OR '1'='1", "accounts": [1]}),
            "tenant_id = 'A' AND region = 'emea'' OR ''1''=''1' AND account_id = 1",
        ),
    ];
    for (who, claims, visible) in callers {
        // A copy holding only this caller's rows.
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {who}; CREATE TABLE {who}.sales AS SELECT * FROM public.sales WHERE {visible};"
            ))
            .await
            .unwrap();
        let t = token(claims);
        for sql in QUERIES {
            let (s, b) = query(&d, &t, sql).await;
            assert_eq!(s, 200, "{who}: {sql}: {b}");
            let got: Vec<Vec<String>> = b["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(text).collect())
                .collect();
            let want: Vec<Vec<String>> = admin
                .simple_query(&format!("SET search_path = {who}; {sql}"))
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            assert_eq!(got, want, "{who}: {sql}");
        }
    }
    // The hostile value matched its one row, bound as a value.
    let (_, b) = query(
        &d,
        &token(json!({"region": "emea' OR '1'='1", "accounts": [1]})),
        "SELECT id FROM sales",
    )
    .await;
    assert_eq!(b["rows"], json!([[1000]]));

    // Refused, never all rows: a token without the attribute, an exempt group the token does
    // not carry (asking for it changes nothing), a value of another type.
    let (s, b) = query(
        &d,
        &token(json!({"accounts": [1]})),
        "SELECT count(*) FROM sales",
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("attribute_missing")),
        "{b}"
    );
    let (s, b) = query(
        &d,
        &token(json!({"region": "emea"})),
        "SELECT count(*) FROM sales",
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (403, Some("attribute_missing")),
        "{b}"
    );
    for bad in [
        json!({"region": "emea", "accounts": "1"}),
        json!({"region": "emea", "accounts": [1, "2"]}),
        json!({"region": 5, "accounts": [1]}),
        json!({"region": "", "accounts": [1]}),
        json!({"region": "emea", "accounts": (0..1001).collect::<Vec<i64>>()}),
    ] {
        let (s, b) = query(&d, &token(bad.clone()), "SELECT count(*) FROM sales").await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("invalid_claims")),
            "{bad}: {b}"
        );
    }

    // Explain shows the filters and their values; the audit log keeps them.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/policy/explain", d.url))
        .bearer_auth(token(json!({"region": "emea", "accounts": [2]})))
        .json(&json!({"sql": "SELECT id FROM sales", "connection": "pg"}))
        .send()
        .await
        .unwrap();
    let doc: Value = r.json().await.unwrap();
    assert_eq!(
        doc["row_filters"],
        json!([
            {"table": "public.sales", "filter": "region = attr.region", "attribute": "region", "value": "emea"},
            {"table": "public.sales", "filter": "account_id IN attr.accounts", "attribute": "accounts", "value": [2]},
        ]),
        "{doc}"
    );
    assert!(
        doc["sql"]
            .as_str()
            .unwrap()
            .contains(r#"("region" = $2) AND ("account_id" = ANY ($3)) OFFSET 0"#),
        "{doc}"
    );
    drop(d);
    let records = sluice_audit::read_settled(
        &sluice_audit::open_read_only(&dir.path().join("data").join("audit.sqlite")).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let filtered = records.iter().filter(|r| !r.row_filters.is_empty()).count();
    assert!(filtered >= 7 * QUERIES.len(), "{filtered}");
    let last = records
        .iter()
        .rev()
        .find(|r| !r.row_filters.is_empty())
        .unwrap();
    assert_eq!(last.row_filters[1].value, Some(json!([2])));
    assert_eq!(last.row_filters[0].attribute.as_deref(), Some("region"));
}
