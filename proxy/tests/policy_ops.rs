//! Operating the policy: `sluice policy explain`, `POST /v1/policy/explain`, and reloading the
//! policy on SIGHUP without a restart (queries keep working throughout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Daemon};
use serde_json::{Value, json};

const SECRET: &str = "policy-ops-secret-0123456789abcdef0123";

fn write_config(dir: &Path, extra_grants: &str) -> std::path::PathBuf {
    std::fs::write(
        dir.join("sales.csv"),
        "tenant_id,sale_id,amount,email\nt1,1,10.5,a@x\nt2,2,99.0,b@y\nt1,3,7.25,c@z\n",
    )
    .unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[auth.jwt]
algorithm = "HS256"
secret_env = "OPS_SECRET"
issuer = "ops"
audience = "sluice"

[limits.group_max_rows]
analyst = 1

[[connections]]
id = "files"
kind = "embedded"

[[connections.tables]]
name = "public.sales"
access = "protected"
tenant_column = "tenant_id"
columns = ["tenant_id", "sale_id", "amount", "email"]
path = "sales.csv"
format = "csv"
[connections.tables.masks]
email = {{ mask = "hash", except = ["support"] }}
{extra_grants}
"#
        ),
    )
    .unwrap();
    path
}

fn token(groups: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "tenant": "t1", "groups": groups, "iss": "ops", "aud": "sluice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `sluice policy explain` on `config` for tenant t1 of the `files` connection: its JSON answer
/// (the command exits zero for an allow and a reject alike).
fn explain(config: &std::path::Path, sql: &str, groups: &str) -> Value {
    let out = Command::new(BIN)
        .args(["policy", "explain", "--config"])
        .arg(config)
        .args([
            "--connection",
            "files",
            "--tenant",
            "t1",
            "--groups",
            groups,
            "--sql",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()
}

#[test]
fn the_cli_explains_allow_and_reject_and_exits_zero_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let v = explain(&config, "SELECT sale_id, email FROM sales", "analyst");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["params"], json!(["t1"]));
    assert_eq!(v["manifest"]["tables"], json!(["public.sales"]));
    assert_eq!(
        v["manifest"]["columns"],
        json!(["public.sales.email", "public.sales.sale_id"])
    );
    let sql = v["sql"].as_str().unwrap();
    assert!(
        sql.contains(r#"md5(CAST("email" AS TEXT)) AS "email""#),
        "{sql}"
    );
    assert!(sql.ends_with("LIMIT 1"), "{sql}");
    let v = explain(&config, "DELETE FROM sales", "analyst");
    assert_eq!(v["decision"], "reject");
    assert_eq!(v["code"], "statement_not_allowed");
    assert!(v["message"].as_str().unwrap().contains("DELETE"));
    // A usage error is the only non-zero exit.
    let out = Command::new(BIN)
        .args(["policy", "explain", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_cli_explains_row_filters_with_the_attributes_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[connections.tables.row_filters]]\nfilter = \"sale_id IN attr.sales\"\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[limits.group_max_rows]",
            "[auth.jwt.claims]\nattributes = [\"sales\"]\n[auth.attributes]\nsales = \"integer[]\"\n[limits.group_max_rows]",
        );
    std::fs::write(&config, text).unwrap();
    let run = |attributes: &str| {
        let out = Command::new(BIN)
            .args(["policy", "explain", "--config"])
            .arg(&config)
            .args([
                "--connection",
                "files",
                "--tenant",
                "t1",
                "--groups",
                "analyst",
            ])
            .args([
                "--attributes",
                attributes,
                "--sql",
                "SELECT sale_id FROM sales",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default(),
        )
    };
    let (ok, v) = run(r#"{"sales": [3, 4]}"#);
    assert!(ok);
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(v["params"], json!(["t1", 3, 4]));
    assert_eq!(v["row_filters"][0]["value"], json!([3, 4]));
    assert!(
        v["sql"]
            .as_str()
            .unwrap()
            .contains(r#"("sale_id" IN ($2, $3))"#),
        "{v}"
    );
    let (ok, v) = run("{}");
    assert!(ok);
    assert_eq!(v["code"], "attribute_missing", "{v}");
    // A value of another type than declared is a usage error.
    let (ok, _) = run(r#"{"sales": "3"}"#);
    assert!(!ok);
}

#[test]
fn the_cli_refuses_deep_input_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // (One command-line argument holds at most 128 KiB.)
    let mut chain = String::from("SELECT sale_id FROM sales WHERE 1");
    for _ in 0..30_000 {
        chain.push_str(" + 1");
    }
    let parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    for sql in [chain, parens] {
        let v = explain(&config, &sql, "analyst");
        assert_eq!(v["decision"], "reject");
        assert_eq!(v["code"], "query_too_complex", "{v}");
    }
}

#[tokio::test]
async fn explain_over_http_and_policy_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let daemon = Daemon::start(&config, &dir.path().join("data"), &[("OPS_SECRET", SECRET)]);
    let client = reqwest::Client::new();
    let post = |path: &str, groups: &[&str], sql: &str| {
        client
            .post(format!("{}{path}", daemon.url))
            .bearer_auth(token(groups))
            .json(&json!({ "sql": sql }))
            .send()
    };
    let hup = || {
        let pid = daemon.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let finance_amounts = || async {
        let resp = post(
            "/v1/query",
            &["finance"],
            "SELECT amount FROM sales ORDER BY 1",
        );
        resp.await.unwrap().json::<Value>().await.unwrap()["rows"].clone()
    };

    let v: Value = post(
        "/v1/policy/explain",
        &["support"],
        "SELECT email FROM sales",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["decision"], "allow");
    assert!(
        v["sql"].as_str().unwrap().contains(r#""email" FROM"#),
        "support sees the raw value: {v}"
    );

    // Masks apply in the answer; the group row limit caps it.
    let v: Value = post(
        "/v1/query",
        &["analyst"],
        "SELECT email FROM sales ORDER BY sale_id",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["row_count"], 1);
    assert_eq!(
        v["rows"][0][0].as_str().unwrap().len(),
        32,
        "an md5 hex digest: {v}"
    );
    let v: Value = post(
        "/v1/query",
        &["support"],
        "SELECT email FROM sales ORDER BY sale_id",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["rows"], json!([["a@x"], ["c@z"]]));

    // Restrict `amount` to a group and reload: the running daemon applies it.
    write_config(
        dir.path(),
        "[connections.tables.grants]\namount = [\"finance\"]\n",
    );
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = post("/v1/query", &["support"], "SELECT amount FROM sales")
            .await
            .unwrap();
        if resp.status() == 403 {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["reason"], "column_not_granted");
            break;
        }
        assert!(Instant::now() < deadline, "the reload was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(finance_amounts().await, json!([[7.25], [10.5]]));

    // A broken file is refused and the running policy stays.
    std::fs::write(&config, "this is not toml [").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finance_amounts().await, json!([[7.25], [10.5]]));
}
