//! Golden rewrites per dialect: name resolution (folding, quoting, default catalog and schema,
//! one- to three-part names), parameter style, and each dialect's own refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_policy::{Caller, Catalog, Dialect, PolicyError, TableName, TableRule};

fn catalog(
    d: Dialect,
    cat: &str,
    schema: &str,
    orders: &str,
    tenant: &str,
    cols: &[&str],
) -> Catalog {
    let name = TableName {
        catalog: Some(cat.into()),
        schema: schema.into(),
        table: orders.into(),
    };
    let rule = TableRule::protected(name, tenant, cols.iter().map(|c| c.to_string()).collect());
    Catalog::new(
        d,
        d.default_param_style(),
        Some(cat.into()),
        schema.into(),
        vec![rule],
    )
    .unwrap()
}

fn snowflake() -> Catalog {
    catalog(
        Dialect::Snowflake,
        "ANALYTICS",
        "PUBLIC",
        "ORDERS",
        "TENANT_ID",
        &["ID", "TENANT_ID", "AMOUNT"],
    )
}
fn bigquery() -> Catalog {
    catalog(
        Dialect::BigQuery,
        "proj",
        "sales",
        "orders",
        "tenant_id",
        &["id", "tenant_id", "amount"],
    )
}
fn databricks() -> Catalog {
    catalog(
        Dialect::Databricks,
        "main",
        "sales",
        "orders",
        "tenant_id",
        &["id", "tenant_id", "amount"],
    )
}
fn datafusion() -> Catalog {
    catalog(
        Dialect::DataFusion,
        "datafusion",
        "public",
        "orders",
        "tenant_id",
        &["id", "tenant_id", "amount"],
    )
}

fn run(c: &Catalog, sql: &str) -> Result<String, PolicyError> {
    let groups = vec!["analyst".to_string()];
    sluice_policy::rewrite(
        sql,
        c,
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit: None,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
    )
    .map(|r| {
        assert_eq!(r.params.len(), 1);
        assert_eq!(
            r.params[0].value,
            sluice_policy::BoundValue::Tenant("A".into())
        );
        r.sql
    })
}

const SF: &str = r#"(SELECT "ID", "TENANT_ID", "AMOUNT" FROM "ANALYTICS"."PUBLIC"."ORDERS" WHERE "TENANT_ID" = :1)"#;
const BQ: &str = "(SELECT `id`, `tenant_id`, `amount` FROM `proj`.`sales`.`orders` WHERE `tenant_id` = @sluice_tenant)";
const DBX: &str = "(SELECT `id`, `tenant_id`, `amount` FROM `main`.`sales`.`orders` WHERE `tenant_id` = :sluice_tenant)";
const DF: &str = r#"(SELECT "id", "tenant_id", "amount" FROM "datafusion"."public"."orders" WHERE "tenant_id" = $1)"#;

#[test]
fn snowflake_folds_unquoted_names_to_upper_case() {
    let c = snowflake();
    for sql in [
        "SELECT id FROM orders",
        "SELECT id FROM public.orders",
        "SELECT id FROM Analytics.Public.Orders",
        r#"SELECT id FROM "ORDERS""#,
    ] {
        let out = run(&c, sql).unwrap();
        assert!(out.contains(SF), "{sql} -> {out}");
    }
    // Quoted names are exact: "orders" is another table.
    assert!(matches!(
        run(&c, r#"SELECT id FROM "orders""#),
        Err(PolicyError::UnknownRelation(_))
    ));
    assert!(matches!(
        run(&c, "SELECT id FROM other_db.public.orders"),
        Err(PolicyError::UnknownRelation(_))
    ));
}

#[test]
fn snowflake_refusals() {
    let c = snowflake();
    for sql in [
        "SELECT * FROM orders AT(OFFSET => -3600)",
        "SELECT * FROM orders BEFORE(STATEMENT => '8e5d0ca9-005e-44e6-b858-a8f5b37c5726')",
        "SELECT * FROM IDENTIFIER('orders')",
        "SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))",
        "SELECT SYSTEM$WHITELIST()",
        "SELECT * FROM snowflake.account_usage.query_history",
        "SELECT * FROM orders, LATERAL FLATTEN(input => orders.amount)",
        "EXECUTE IMMEDIATE 'SELECT 1'",
        "SELECT id FROM orders WHERE tenant_id = :1",
    ] {
        assert!(run(&c, sql).is_err(), "{sql} was allowed");
    }
}

#[test]
fn bigquery_resolves_project_dataset_table_case_sensitively() {
    let c = bigquery();
    for sql in [
        "SELECT id FROM orders",
        "SELECT id FROM sales.orders",
        "SELECT id FROM `proj.sales.orders`",
        "SELECT id FROM `proj`.sales.orders",
    ] {
        let out = run(&c, sql).unwrap();
        assert!(out.contains(BQ), "{sql} -> {out}");
    }
    assert!(matches!(
        run(&c, "SELECT id FROM Sales.Orders"),
        Err(PolicyError::UnknownRelation(_))
    ));
}

#[test]
fn bigquery_refusals() {
    let c = bigquery();
    for sql in [
        "SELECT * FROM `proj.sales.orders_*` WHERE _TABLE_SUFFIX = '2024'",
        "SELECT * FROM sales.orders FOR SYSTEM_TIME AS OF TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)",
        "SELECT * FROM EXTERNAL_QUERY('conn', 'SELECT 1')",
        "SELECT EXTERNAL_QUERY('conn', 'SELECT 1')",
        "SELECT IF(amount > 1, ERROR('x'), 1) FROM sales.orders",
        "SELECT @@project_id",
        "SELECT id FROM sales.orders WHERE tenant_id = @sluice_tenant",
        "SELECT * FROM region-us.INFORMATION_SCHEMA.JOBS",
        "EXECUTE IMMEDIATE 'SELECT 1'",
    ] {
        assert!(run(&c, sql).is_err(), "{sql} was allowed");
    }
}

#[test]
fn databricks_is_case_insensitive() {
    let c = databricks();
    for sql in [
        "SELECT id FROM orders",
        "SELECT id FROM SALES.ORDERS",
        "SELECT id FROM `Main`.`Sales`.`Orders`",
    ] {
        let out = run(&c, sql).unwrap();
        assert!(out.contains(DBX), "{sql} -> {out}");
    }
}

#[test]
fn databricks_refusals() {
    let c = databricks();
    for sql in [
        "SELECT * FROM delta.`/mnt/lake/sales/orders`",
        "SELECT * FROM main.sales.orders VERSION AS OF 3",
        "SELECT * FROM main.sales.orders TIMESTAMP AS OF '2024-01-01'",
        "DESCRIBE HISTORY main.sales.orders",
        "SELECT * FROM read_files('/mnt/x')",
        "SELECT * FROM system.access.audit",
    ] {
        assert!(run(&c, sql).is_err(), "{sql} was allowed");
    }
}

#[test]
fn datafusion_folds_like_postgres_and_refuses_file_reads() {
    let c = datafusion();
    assert!(run(&c, "SELECT id FROM ORDERS").unwrap().contains(DF));
    assert!(
        run(&c, "SELECT id FROM datafusion.public.orders")
            .unwrap()
            .contains(DF)
    );
    for sql in [
        "SELECT * FROM 'orders.parquet'",
        "SELECT * FROM read_csv('x.csv')",
        "SELECT * FROM information_schema.tables",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY orders TO '/tmp/x.csv'",
    ] {
        assert!(run(&c, sql).is_err(), "{sql} was allowed");
    }
}

fn run_params(c: &Catalog, sql: &str, n: usize) -> Result<String, PolicyError> {
    let groups = vec!["analyst".to_string()];
    sluice_policy::rewrite_with_params(
        sql,
        c,
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit: None,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
        n,
    )
    .map(|r| r.sql)
}

#[test]
fn caller_parameters_in_each_dialects_own_syntax() {
    // Snowflake: `:1` … numbered, the tenant's `:n+1` after them.
    let out = run_params(&snowflake(), "SELECT ID FROM ORDERS WHERE ID > :1", 1).unwrap();
    assert!(
        out.contains("\"TENANT_ID\" = :2") && out.contains("\"ID\" > :1"),
        "{out}"
    );
    // BigQuery: `@p1` …; the tenant keeps `@sluice_tenant`.
    let out = run_params(&bigquery(), "SELECT id FROM orders WHERE id > @p1", 1).unwrap();
    assert!(
        out.contains("@sluice_tenant") && out.contains("`id` > @p1"),
        "{out}"
    );
    // Databricks: `:p1` ….
    let out = run_params(&databricks(), "SELECT id FROM orders WHERE id > :p1", 1).unwrap();
    assert!(
        out.contains(":sluice_tenant") && out.contains("`id` > :p1"),
        "{out}"
    );
    // DataFusion: `$1` …, the tenant's `$n+1`.
    let out = run_params(&datafusion(), "SELECT id FROM orders WHERE id > $1", 1).unwrap();
    assert!(out.contains("\"tenant_id\" = $2"), "{out}");
    // A parameter is an expression, never a name: not an alias, a table alias or a window.
    for sql in [
        "SELECT id AS @p1 FROM orders WHERE id > @p1",
        "SELECT @p1.id FROM orders AS @p1",
        "SELECT id FROM orders WHERE tenant_id = @sluice_tenant",
    ] {
        assert!(
            run_params(&bigquery(), sql, 1).is_err(),
            "{sql} was allowed"
        );
    }
    // Another style's placeholder, or the other dialect's, is refused.
    for (c, sql) in [
        (bigquery(), "SELECT id FROM orders WHERE id > :p1"),
        (databricks(), "SELECT id FROM orders WHERE id > :1"),
        (snowflake(), "SELECT ID FROM ORDERS WHERE ID > :P1"),
    ] {
        assert!(run_params(&c, sql, 1).is_err(), "{sql} was allowed");
    }
}

/// A star's modifiers, where the warehouse has them: Snowflake's EXCLUDE and REPLACE,
/// BigQuery's EXCEPT and REPLACE, Databricks' EXCEPT. The named columns are references like
/// any other, a REPLACE expression reads the wrapper's columns, and each dialect refuses the
/// modifiers it does not have (and every dialect ILIKE and RENAME).
#[test]
fn star_modifiers_in_each_dialect() {
    let sf = run(
        &snowflake(),
        "SELECT * EXCLUDE (tenant_id) REPLACE (amount * 2 AS amount) FROM orders",
    )
    .unwrap();
    assert_eq!(
        sf,
        format!(
            r#"SELECT * EXCLUDE ("TENANT_ID") REPLACE ("AMOUNT" * 2 AS "AMOUNT") FROM {SF} AS "ORDERS""#
        )
    );
    let bq = run(
        &bigquery(),
        "SELECT o.* EXCEPT (tenant_id) REPLACE (amount + 1 AS amount) FROM orders AS o",
    )
    .unwrap();
    assert_eq!(
        bq,
        format!(
            "SELECT `o`.* EXCEPT (`tenant_id`) REPLACE (`amount` + 1 AS `amount`) FROM {BQ} AS `o`"
        )
    );
    let dbx = run(&databricks(), "SELECT * EXCEPT (tenant_id, id) FROM orders").unwrap();
    assert_eq!(
        dbx,
        format!("SELECT * EXCEPT (`tenant_id`, `id`) FROM {DBX} AS `orders`")
    );
    // A sub-query inside REPLACE reads through a wrapper too.
    let sub = run(
        &snowflake(),
        "SELECT * REPLACE ((SELECT max(amount) FROM orders) AS amount) FROM orders",
    )
    .unwrap();
    assert_eq!(sub.matches(SF).count(), 2, "{sub}");
    for (c, sql) in [
        (
            snowflake(),
            "SELECT * EXCLUDE (orders.tenant_id) FROM orders",
        ),
        (snowflake(), "SELECT * RENAME (id AS x) FROM orders"),
        (snowflake(), "SELECT * ILIKE '%id' FROM orders"),
        (
            snowflake(),
            "SELECT * EXCLUDE (metadata$filename) FROM orders",
        ),
        (
            bigquery(),
            "SELECT * REPLACE (pg_sleep(1) AS amount) FROM orders",
        ),
        (databricks(), "SELECT * REPLACE (amount AS id) FROM orders"),
        (datafusion(), "SELECT * EXCLUDE (tenant_id) FROM orders"),
    ] {
        assert!(run(&c, sql).is_err(), "{sql} was allowed");
    }
}
