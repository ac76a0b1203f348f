//! Golden rewrites and refusals for the PostgreSQL dialect over the security world's schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_policy::{
    Caller, Catalog, Dialect, MaskKind, MaskRule, ParamStyle, PolicyError, RewrittenQuery,
};

mod support;
use support::table;

const ANALYST: &[&str] = &["analyst"];

fn rewrite(sql: &str, catalog: &Catalog, tenant: &str) -> Result<RewrittenQuery, PolicyError> {
    let groups: Vec<String> = ANALYST.iter().map(|g| g.to_string()).collect();
    sluice_policy::rewrite(
        sql,
        catalog,
        &Caller {
            tenant,
            groups: &groups,
            row_limit: None,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
    )
}

fn world(style: ParamStyle) -> Catalog {
    Catalog::new(
        Dialect::Postgres,
        style,
        None,
        "public".into(),
        vec![
            table("countries", None, &["code", "name"]),
            table(
                "orders",
                Some("tenant_id"),
                &["id", "tenant_id", "customer_id", "amount", "status"],
            ),
            table("customers", Some("tenant_id"), &["id", "tenant_id", "name"]),
        ],
    )
    .unwrap()
}

const W_ORDERS: &str = r#"(SELECT "id", "tenant_id", "customer_id", "amount", "status" FROM "public"."orders" WHERE "tenant_id" = $1 OFFSET 0)"#;
const W_CUSTOMERS: &str = r#"(SELECT "id", "tenant_id", "name" FROM "public"."customers" WHERE "tenant_id" = $1 OFFSET 0)"#;

fn ok(sql: &str) -> String {
    let out = rewrite(sql, &world(ParamStyle::DollarNumbered), "A")
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(
        out.params.len(),
        usize::from(out.sql.contains("$1")),
        "{}",
        out.sql
    );
    out.sql
}

fn err(sql: &str) -> PolicyError {
    match rewrite(sql, &world(ParamStyle::DollarNumbered), "A") {
        Ok(r) => panic!("{sql} was allowed as {}", r.sql),
        Err(e) => e,
    }
}

#[test]
fn plain_select_is_wrapped_under_the_same_name() {
    assert_eq!(
        ok("SELECT id, amount FROM orders WHERE status = 'paid'"),
        format!(
            "SELECT \"id\", \"amount\" FROM {} AS \"orders\"",
            W_ORDERS.replace(
                "WHERE \"tenant_id\" = $1 OFFSET 0",
                "WHERE (\"tenant_id\" = $1) AND (\"status\" = 'paid') OFFSET 0"
            )
        )
    );
}

#[test]
fn leakproof_outer_comparisons_are_copied_inside_the_fence_and_nothing_else() {
    // A column of the wrapped table against a constant: copied next to the tenant predicate
    // (so PostgreSQL can use an index), and kept outside too.
    let sql = ok(
        "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id \
                  WHERE o.id = 5 AND 100 < o.amount AND c.name = 'x' AND o.status <> 'void'",
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("id" = 5) AND ("amount" > 100) AND ("status" <> 'void') OFFSET 0"#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("name" = 'x') OFFSET 0"#),
        "{sql}"
    );
    // Moved, not copied: neither side of the inner join is ever null-extended, so the outer
    // WHERE keeps nothing (a conjunct left there too would count twice in the row estimates).
    assert!(
        sql.ends_with(r#"AS "c" ON "c"."id" = "o"."customer_id""#),
        "{sql}"
    );
    // On the null-extended side of a LEFT JOIN it is copied: the outer WHERE keeps it (it
    // removes the null-extended rows), and so does the preserved side.
    let sql = ok(
        "SELECT o.id FROM orders o LEFT JOIN customers c ON c.id = o.customer_id \
                  WHERE c.name = 'x' AND o.id = 5",
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("name" = 'x') OFFSET 0"#),
        "{sql}"
    );
    assert!(sql.ends_with(r#"WHERE "c"."name" = 'x'"#), "{sql}");
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("id" = 5) OFFSET 0"#),
        "{sql}"
    );
    let sql = ok(
        "SELECT o.id FROM orders o RIGHT JOIN customers c ON c.id = o.customer_id \
                  WHERE o.id = 5",
    );
    assert!(sql.ends_with(r#"WHERE "o"."id" = 5"#), "{sql}");
    let sql = ok(
        "SELECT o.id FROM orders o FULL JOIN customers c ON c.id = o.customer_id \
                  WHERE o.id = 5 AND c.name = 'x'",
    );
    assert!(
        sql.ends_with(r#"WHERE ("o"."id" = 5) AND ("c"."name" = 'x')"#),
        "{sql}"
    );
    // Not copied: expressions that can raise an error, functions, OR, column-to-column,
    // unqualified names beside a join, parameters.
    for outer in [
        "1 / (o.amount - 5) = 1",
        "upper(o.status) = 'X'",
        "o.id = 5 OR o.id = 6",
        "o.id = o.customer_id",
        "id = 5",
        "o.amount::int = 3",
        "o.id NOT BETWEEN 1 AND 9",
        "o.id BETWEEN 1 AND o.customer_id",
    ] {
        let sql = ok(&format!(
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE {outer}"
        ));
        assert!(
            sql.contains(&format!("{W_ORDERS} AS \"o\"")),
            "{outer}: {sql}"
        );
    }
}

#[test]
fn masked_columns_are_never_compared_inside_the_fence() {
    // card_number is shown masked (last 4) to billing: its raw value must not filter rows.
    let out = as_groups(
        "SELECT id FROM orders WHERE card_number = '4111111111111111' AND id = 3",
        &["billing"],
        None,
    )
    .unwrap();
    assert!(
        out.sql
            .contains(r#"("tenant_id" = $1) AND ("id" = 3) OFFSET 0"#),
        "{}",
        out.sql
    );
    let (inside, _) = out.sql.split_once("OFFSET 0").unwrap();
    assert!(!inside.contains(r#""card_number" = '4111"#), "{}", out.sql);
}

#[test]
fn alias_is_kept_and_joins_are_wrapped_on_both_sides() {
    assert_eq!(
        ok(
            "SELECT c.name, o.amount FROM public.orders o LEFT JOIN customers AS c ON c.id = o.customer_id"
        ),
        format!(
            r#"SELECT "c"."name", "o"."amount" FROM {W_ORDERS} AS "o" LEFT JOIN {W_CUSTOMERS} AS "c" ON "c"."id" = "o"."customer_id""#
        )
    );
}

#[test]
fn public_tables_are_qualified_not_filtered() {
    // Wrapped to their declared columns (a column the table has but the policy does not declare
    // stays unreadable, also through `*` or a whole-row reference), with no tenant predicate and
    // no fence: every row is visible to everyone.
    assert_eq!(
        ok("SELECT code FROM countries"),
        r#"SELECT "code" FROM (SELECT "code", "name" FROM "public"."countries") AS "countries""#
    );
    assert_eq!(
        ok("SELECT * FROM countries c"),
        r#"SELECT * FROM (SELECT "code", "name" FROM "public"."countries") AS "c""#
    );
}

#[test]
fn subqueries_everywhere_are_wrapped() {
    let out = ok(
        "SELECT id, (SELECT max(amount) FROM orders) AS top FROM customers \
                  WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id) \
                  ORDER BY (SELECT count(*) FROM orders)",
    );
    assert_eq!(out.matches(W_ORDERS).count(), 3, "{out}");
    assert_eq!(out.matches(W_CUSTOMERS).count(), 1, "{out}");
}

#[test]
fn set_operations_and_derived_tables_are_wrapped() {
    let out = ok("SELECT id FROM orders UNION ALL SELECT id FROM (SELECT id FROM customers) x");
    assert!(out.contains(&format!("{W_ORDERS} AS \"orders\"")), "{out}");
    assert!(
        out.contains(&format!("{W_CUSTOMERS} AS \"customers\"")),
        "{out}"
    );
}

#[test]
fn cte_named_like_a_table_still_reads_the_filtered_table() {
    let out = ok("WITH orders AS (SELECT * FROM public.orders) SELECT * FROM orders");
    assert_eq!(
        out,
        format!(
            r#"WITH "orders" AS (SELECT * FROM {W_ORDERS} AS "orders") SELECT * FROM "orders""#
        )
    );
}

#[test]
fn non_recursive_cte_body_does_not_see_itself() {
    // Inside its own body `orders` is the base table, which must be wrapped.
    let out = ok("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders");
    assert!(out.contains(W_ORDERS), "{out}");
}

#[test]
fn later_sibling_cte_is_not_in_scope() {
    let out = ok("WITH a AS (SELECT * FROM orders), orders AS (SELECT 1 AS id) SELECT * FROM a");
    assert!(out.contains(W_ORDERS), "{out}");
}

#[test]
fn cte_scope_ends_at_its_subquery() {
    let out = ok(
        "SELECT * FROM (WITH orders AS (SELECT 1 AS id) SELECT * FROM orders) AS a CROSS JOIN orders AS b",
    );
    assert!(
        out.ends_with(&format!("CROSS JOIN {W_ORDERS} AS \"b\"")),
        "{out}"
    );
}

#[test]
fn recursive_cte_sees_itself() {
    let out = ok(
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    );
    assert!(out.contains(r#"FROM "r" WHERE"#), "{out}");
}

#[test]
fn quoted_identifiers_follow_postgres_folding() {
    assert!(matches!(
        err(r#"SELECT * FROM "Orders""#),
        PolicyError::UnknownRelation(_)
    ));
    assert!(ok(r#"SELECT * FROM "orders""#).contains(W_ORDERS));
    assert!(ok("SELECT * FROM ORDERS").contains(W_ORDERS));
}

#[test]
fn refusals_have_precise_codes() {
    let cases = [
        ("", "empty_query"),
        ("   -- just a comment", "empty_query"),
        ("SELECT 1; SELECT 2", "multiple_statements"),
        ("SELEC 1", "sql_parse_error"),
        ("INSERT INTO orders VALUES (1)", "statement_not_allowed"),
        ("DELETE FROM orders", "statement_not_allowed"),
        ("SET search_path = archive", "statement_not_allowed"),
        ("EXPLAIN SELECT * FROM orders", "statement_not_allowed"),
        (
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
            "statement_not_allowed",
        ),
        ("SELECT * FROM pg_catalog.pg_user", "policy_denied"),
        ("SELECT * FROM information_schema.tables", "policy_denied"),
        ("SELECT * FROM archive.orders", "policy_denied"),
        ("SELECT * FROM orders_summary", "policy_denied"),
        ("SELECT * FROM pg_ls_dir('.')", "policy_denied"),
        (
            "SELECT * FROM pg_catalog.generate_series(1, 3)",
            "policy_denied",
        ),
        ("SELECT pg_read_file('/etc/passwd')", "policy_denied"),
        ("SELECT pg_catalog.count(*) FROM orders", "policy_denied"),
        ("SELECT * INTO stolen FROM orders", "policy_denied"),
        ("SELECT * FROM orders FOR UPDATE", "policy_denied"),
        ("SELECT * FROM orders WHERE tenant_id = $1", "policy_denied"),
        ("SELECT 'x'::regclass", "policy_denied"),
        (
            "SELECT * FROM orders, LATERAL pg_ls_dir(orders.status)",
            "policy_denied",
        ),
    ];
    for (sql, code) in cases {
        assert_eq!(err(sql).code(), code, "{sql}");
    }
}

#[test]
fn inline_literal_style_escapes_through_the_ast() {
    let out = rewrite(
        "SELECT id FROM orders",
        &world(ParamStyle::InlineLiteral),
        "A-1",
    )
    .unwrap();
    assert!(
        out.sql.contains(r#"WHERE "tenant_id" = 'A-1' OFFSET 0)"#),
        "{}",
        out.sql
    );
    assert!(out.params.is_empty());
    assert!(matches!(
        rewrite(
            "SELECT 1",
            &world(ParamStyle::InlineLiteral),
            "A' OR '1'='1"
        ),
        Err(PolicyError::InvalidTenant)
    ));
}

#[test]
fn manifest_lists_resolved_tables() {
    let out = rewrite(
        "SELECT * FROM orders o JOIN countries c ON true",
        &world(ParamStyle::DollarNumbered),
        "A",
    )
    .unwrap();
    let names: Vec<String> = out.manifest.tables.iter().map(|t| t.to_string()).collect();
    assert_eq!(names, ["public.countries", "public.orders"]);
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(err(&sql).code(), "query_too_complex");
    // Within the depth bound, the parser's own recursion limit still answers.
    let sql = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
    assert_eq!(err(&sql).code(), "sql_parse_error");
}

/// The world of the security corpus: customers hide email and ssn from analysts, orders hide
/// card_number, and a support group sees email hashed.
fn graded() -> Catalog {
    let mut customers = table(
        "customers",
        Some("tenant_id"),
        &["id", "tenant_id", "name", "email", "ssn"],
    );
    customers
        .column_groups
        .insert("email".into(), vec!["support".into()]);
    customers
        .column_groups
        .insert("ssn".into(), vec!["compliance".into()]);
    customers.masks.insert(
        "email".into(),
        MaskRule {
            kind: MaskKind::Hash,
            except: vec!["admin".into()],
        },
    );
    let mut orders = table(
        "orders",
        Some("tenant_id"),
        &["id", "tenant_id", "amount", "card_number"],
    );
    orders
        .column_groups
        .insert("card_number".into(), vec!["billing".into()]);
    orders.masks.insert(
        "card_number".into(),
        MaskRule {
            kind: MaskKind::Last4,
            except: vec![],
        },
    );
    let mut payroll = table("payroll", Some("tenant_id"), &["id", "tenant_id", "salary"]);
    payroll.readers = Some(vec!["hr".into()]);
    Catalog::new(
        Dialect::Postgres,
        ParamStyle::DollarNumbered,
        None,
        "public".into(),
        vec![customers, orders, payroll],
    )
    .unwrap()
}

fn as_groups(
    sql: &str,
    groups: &[&str],
    limit: Option<u64>,
) -> Result<RewrittenQuery, PolicyError> {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    sluice_policy::rewrite(
        sql,
        &graded(),
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit: limit,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
    )
}

#[test]
fn ungranted_columns_are_refused_by_name_wherever_they_appear() {
    for sql in [
        "SELECT card_number FROM orders",
        "SELECT id FROM orders WHERE card_number LIKE '4%'",
        "SELECT id FROM orders ORDER BY card_number",
        "SELECT count(DISTINCT email) FROM customers",
        "SELECT o.id FROM orders o JOIN customers c ON c.email = 'x' AND c.id = o.id",
        "SELECT upper(c.ssn) FROM customers c",
        "SELECT id FROM customers GROUP BY email",
    ] {
        match as_groups(sql, &["analyst"], None) {
            Err(PolicyError::ColumnNotGranted { column, .. }) => {
                assert!(
                    ["card_number", "email", "ssn"].contains(&column.as_str()),
                    "{sql}"
                )
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn wildcards_expand_to_granted_columns_and_masks_apply_inside_the_wrapper() {
    let out = as_groups("SELECT * FROM customers", &["analyst"], None).unwrap();
    assert!(
        out.sql
            .contains(r#"(SELECT "id", "tenant_id", "name" FROM "public"."customers""#),
        "{}",
        out.sql
    );
    let out = as_groups(
        "SELECT * FROM customers WHERE email = 'x'",
        &["support"],
        None,
    )
    .unwrap();
    assert!(
        out.sql.contains(r#"md5(CAST("email" AS TEXT)) AS "email""#),
        "{}",
        out.sql
    );
    assert!(!out.sql.contains("ssn"), "{}", out.sql);
    let out = as_groups("SELECT email FROM customers", &["support", "admin"], None).unwrap();
    assert!(out.sql.contains(r#""name", "email" FROM"#), "{}", out.sql);
    let out = as_groups("SELECT card_number FROM orders", &["billing"], None).unwrap();
    assert!(
        out.sql
            .contains(r#"concat('****', right(CAST("card_number" AS TEXT), 4)) AS "card_number""#),
        "{}",
        out.sql
    );
}

#[test]
fn an_alias_named_like_a_hidden_column_is_not_the_column() {
    as_groups(
        "SELECT name AS email FROM customers ORDER BY email",
        &["analyst"],
        None,
    )
    .unwrap();
}

#[test]
fn table_access_follows_groups() {
    assert!(matches!(
        as_groups("SELECT id FROM payroll", &["analyst"], None),
        Err(PolicyError::TableNotGranted(_))
    ));
    as_groups("SELECT id FROM payroll", &["hr"], None).unwrap();
}

#[test]
fn manifest_lists_columns_read() {
    let out = as_groups(
        "SELECT o.id, sum(amount) FROM orders o GROUP BY o.id",
        &["analyst"],
        None,
    )
    .unwrap();
    assert_eq!(
        out.manifest.columns,
        ["public.orders.amount", "public.orders.id"]
    );
    let out = as_groups("SELECT * FROM orders", &["analyst"], None).unwrap();
    assert_eq!(
        out.manifest.columns,
        [
            "public.orders.amount",
            "public.orders.id",
            "public.orders.tenant_id"
        ]
    );
}

#[test]
fn the_row_limit_caps_the_outermost_query() {
    let out = as_groups("SELECT id FROM orders", &["analyst"], Some(100)).unwrap();
    assert!(out.sql.ends_with("LIMIT 100"), "{}", out.sql);
    let out = as_groups("SELECT id FROM orders LIMIT 10", &["analyst"], Some(100)).unwrap();
    assert!(out.sql.ends_with("LIMIT 10"), "{}", out.sql);
    let out = as_groups(
        "SELECT id FROM orders LIMIT 1000 OFFSET 5",
        &["analyst"],
        Some(100),
    )
    .unwrap();
    assert!(out.sql.ends_with("LIMIT 100 OFFSET 5"), "{}", out.sql);
    let out = as_groups(
        "SELECT id FROM orders FETCH FIRST 500 ROWS ONLY",
        &["analyst"],
        Some(100),
    )
    .unwrap();
    assert!(out.sql.contains("FETCH FIRST 100 ROWS ONLY"), "{}", out.sql);
    assert!(
        as_groups(
            "SELECT id FROM orders LIMIT (SELECT 5)",
            &["analyst"],
            Some(100)
        )
        .is_err()
    );
}

#[test]
fn literals_are_redacted_for_the_audit_log() {
    let out = sluice_policy::redact_literals(
        "SELECT id FROM orders WHERE note = 'secret' AND amount > 42 AND x = $1",
        Dialect::Postgres,
    );
    assert_eq!(
        out,
        "SELECT id FROM orders WHERE note = ? AND amount > ? AND x = $1"
    );
    assert!(
        !sluice_policy::redact_literals("SELEC 'secret'", Dialect::Postgres).contains("secret")
    );
}

fn with_params(
    sql: &str,
    catalog: &Catalog,
    n: usize,
    row_limit: Option<u64>,
) -> Result<RewrittenQuery, PolicyError> {
    let groups: Vec<String> = ANALYST.iter().map(|g| g.to_string()).collect();
    sluice_policy::rewrite_with_params(
        sql,
        catalog,
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
        n,
    )
}

#[test]
fn caller_parameters_keep_their_placeholders_and_the_tenant_follows_them() {
    let c = world(ParamStyle::DollarNumbered);
    let r = with_params(
        "SELECT id FROM orders WHERE status = $2 AND id > $1 AND $2 <> 'x'",
        &c,
        2,
        None,
    )
    .unwrap();
    assert!(r.sql.contains(r#""tenant_id" = $3"#), "{}", r.sql);
    assert!(
        r.sql.contains(r#""status" = $2"#) && r.sql.contains(r#""id" > $1"#),
        "{}",
        r.sql
    );
    assert!(!r.sql.contains("$1 OFFSET"), "{}", r.sql);
    // The tenant only, in `params`: the caller binds its own values.
    assert_eq!(r.params.len(), 1);
    assert_eq!(
        r.params[0].value,
        sluice_policy::BoundValue::Tenant("A".into())
    );
    // Copied inside the fence like constants (a caller parameter is bound once per query), so
    // a prepared point lookup uses the index; the outer WHERE keeps them. Only a parameter
    // that occurs once: `$2` occurs twice, and stays outside.
    let inside = &r.sql[r.sql.find("WHERE").unwrap()..r.sql.find("OFFSET 0").unwrap()];
    assert!(inside.contains(r#""id" > $1"#), "{}", r.sql);
    assert!(!inside.contains("$2"), "{}", r.sql);
    assert!(!inside.contains("'x'"), "{}", r.sql);
    // A parameter whose type another occurrence fixes before the fence is analyzed (a CTE, an
    // earlier FROM item, an outer select list) would cast the column inside the fence, which
    // can fail on another tenant's row: never copied.
    for sql in [
        "WITH p AS (SELECT CAST($1 AS float8) AS v) SELECT id FROM orders WHERE amount > $1",
        "SELECT o.id FROM (SELECT CAST($1 AS real) AS v) AS p, orders AS o WHERE o.amount > $1",
        "SELECT CAST($1 AS float8) AS v, id FROM orders WHERE amount > $1",
    ] {
        let r = with_params(sql, &c, 1, None).unwrap();
        let fence = r.sql.find(r#"FROM "public"."orders""#).unwrap();
        let inside = &r.sql[fence..fence + r.sql[fence..].find("OFFSET 0").unwrap()];
        assert!(!inside.contains("$1"), "{sql}: {}", r.sql);
    }
    // Not an expression of a parameter, nor a column against the tenant's placeholder.
    let r = with_params(
        "SELECT id FROM orders WHERE id = $1 + 1 AND id BETWEEN $1 AND $1 * 2",
        &c,
        1,
        None,
    )
    .unwrap();
    let inside = &r.sql[r.sql.find("WHERE").unwrap()..r.sql.find("OFFSET 0").unwrap()];
    assert!(!inside.contains("$1"), "{}", r.sql);
    let r = with_params(
        "SELECT id FROM orders WHERE id BETWEEN $1 AND $2",
        &c,
        2,
        None,
    )
    .unwrap();
    let inside = &r.sql[r.sql.find("WHERE").unwrap()..r.sql.find("OFFSET 0").unwrap()];
    assert!(inside.contains(r#""id" BETWEEN $1 AND $2"#), "{}", r.sql);
}

#[test]
fn caller_parameters_must_match_what_was_sent() {
    let c = world(ParamStyle::DollarNumbered);
    let code = |sql: &str, n: usize, limit: Option<u64>| {
        let e = with_params(sql, &c, n, limit).unwrap_err();
        (e.code(), e.to_string())
    };
    // Too few sent (the query uses $2), too many sent ($2 unused), none sent.
    let (c1, m1) = code("SELECT id FROM orders WHERE id = $1 OR id = $3", 1, None);
    assert_eq!(c1, "invalid_parameters");
    assert!(m1.contains("use $1"), "{m1}");
    // $2 is the tenant's when one is sent: a policy refusal.
    let (c5, m5) = code(
        "SELECT id FROM orders WHERE id = $1 OR tenant_id = $2",
        1,
        None,
    );
    assert_eq!(c5, "policy_denied");
    assert!(m5.contains("tenant"), "{m5}");
    let (c2, m2) = code("SELECT id FROM orders WHERE id = $1", 2, None);
    assert_eq!(c2, "invalid_parameters");
    assert!(m2.contains("does not use $2"), "{m2}");
    let (c3, m3) = code("SELECT id FROM orders WHERE id = $2", 0, None);
    assert_eq!(c3, "invalid_parameters");
    assert!(m3.contains("no parameters were sent"), "{m3}");
    // Another style's placeholder, a leading zero: not one of the parameters sent.
    assert_eq!(
        code("SELECT id FROM orders WHERE id = :1", 1, None).0,
        "invalid_parameters"
    );
    assert_eq!(
        code("SELECT id FROM orders WHERE id = $01", 1, None).0,
        "invalid_parameters"
    );
    // A position the policy cannot check: the LIMIT of a query under a row limit.
    let (c4, m4) = code("SELECT id FROM orders LIMIT $1", 1, Some(10));
    assert_eq!(c4, "invalid_parameters");
    assert!(m4.contains("LIMIT"), "{m4}");
    // Without a row limit, a parameter LIMIT is the caller's business.
    assert!(with_params("SELECT id FROM orders LIMIT $1", &c, 1, None).is_ok());
    // A catalog that binds the tenant inline takes no parameters.
    let inline = world(ParamStyle::InlineLiteral);
    assert_eq!(
        with_params("SELECT id FROM orders WHERE id = $1", &inline, 1, None)
            .unwrap_err()
            .code(),
        "invalid_parameters"
    );
}

/// Metabase qualifies every column with the table's full name; the wrapper that replaces the
/// table is aliased by the table's own name, so those references are rewritten to it.
#[test]
fn columns_qualified_by_the_full_table_name_refer_to_the_wrapper() {
    assert_eq!(
        ok(
            r#"SELECT "public"."orders"."status" AS "status", count(*) AS "count" FROM "public"."orders" GROUP BY "public"."orders"."status" ORDER BY "public"."orders"."status" ASC"#
        ),
        format!(
            r#"SELECT "orders"."status" AS "status", count(*) AS "count" FROM {W_ORDERS} AS "orders" GROUP BY "orders"."status" ORDER BY "orders"."status" ASC"#
        )
    );
    // A table named without its schema, a column with it; a qualified star; a correlated
    // sub-query one level down; pushdown still sees the column.
    assert_eq!(
        ok(
            r#"SELECT public.orders.*, (SELECT max(public.customers.name) FROM public.customers WHERE public.customers.id = public.orders.customer_id) AS c FROM orders WHERE public.orders.id = 5"#
        ),
        format!(
            r#"SELECT "orders".*, (SELECT max("customers"."name") FROM {W_CUSTOMERS} AS "customers" WHERE "customers"."id" = "orders"."customer_id") AS "c" FROM {} AS "orders""#,
            W_ORDERS.replace(
                "WHERE \"tenant_id\" = $1 OFFSET 0",
                "WHERE (\"tenant_id\" = $1) AND (\"id\" = 5) OFFSET 0"
            )
        )
    );
    // Metabase's joins alias the joined table; its own name keeps qualifying the source table.
    let sql = ok(
        r#"SELECT "public"."orders"."id" AS "id", "Customers"."name" AS "Customers__name" FROM "public"."orders" LEFT JOIN "public"."customers" AS "Customers" ON "public"."orders"."customer_id" = "Customers"."id" LIMIT 2000"#,
    );
    assert!(
        sql.starts_with(r#"SELECT "orders"."id" AS "id", "Customers"."name""#)
            && sql.contains(r#"ON "orders"."customer_id" = "Customers"."id""#),
        "{sql}"
    );
    // A prefix that is not a declared table read without an alias is left alone, and a
    // reference of three parts is then refused by the verifier (PostgreSQL would fail it too).
    err(r#"SELECT public.o.id FROM public.orders AS o"#);
    err(r#"SELECT public.orders.id FROM public.orders AS o"#);
}

/// If a nearer FROM item has the wrapper's name, the rewritten reference would read it instead
/// of the table the caller meant: refused, naming the fix.
#[test]
fn a_full_table_name_shadowed_by_a_nearer_item_is_refused() {
    let e = err(
        r#"SELECT (SELECT public.orders.amount FROM customers AS orders LIMIT 1) FROM public.orders"#,
    );
    assert!(
        matches!(&e, PolicyError::Unsupported(m) if m.contains("give the table an alias")),
        "{e}"
    );
    // The same name at the level itself is the table's own alias, not a shadow.
    ok(r#"SELECT public.orders.amount FROM public.orders WHERE public.orders.status = 'paid'"#);
}

/// Set-returning functions in FROM (with or without LATERAL), ARRAY sub-queries and LATERAL
/// derived tables are accepted: what they read is filtered like any other reference.
#[test]
fn set_returning_functions_and_lateral_items_read_only_filtered_rows() {
    assert_eq!(
        ok("SELECT g FROM generate_series(1, (SELECT max(amount) FROM orders)) AS g"),
        format!(
            r#"SELECT "g" FROM generate_series(1, (SELECT max("amount") FROM {W_ORDERS} AS "orders")) AS "g""#
        )
    );
    // unnest over a column in scope, written three ways, printed one way.
    let want = format!(
        r#"SELECT "o"."id", "t"."w" FROM {W_ORDERS} AS "o" CROSS JOIN unnest(string_to_array("o"."status", ' ')) WITH ORDINALITY AS "t" ("w", "n")"#
    );
    for sql in [
        "SELECT o.id, t.w FROM orders o CROSS JOIN LATERAL unnest(string_to_array(o.status, ' ')) WITH ORDINALITY AS t(w, n)",
        "SELECT o.id, t.w FROM orders o CROSS JOIN unnest(string_to_array(o.status, ' ')) WITH ORDINALITY AS t(w, n)",
    ] {
        assert_eq!(ok(sql), want, "{sql}");
    }
    // A LATERAL derived table reads the table through its wrapper.
    let sql = ok(
        "SELECT c.id, x.n FROM customers c LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders o WHERE o.customer_id = c.id) x ON true",
    );
    assert!(
        sql.contains(&format!(
            r#"LEFT JOIN LATERAL (SELECT count(*) AS "n" FROM {W_ORDERS} AS "o""#
        )),
        "{sql}"
    );
    // ARRAY(sub-query), unnest and generate_series in the select list.
    assert!(ok("SELECT ARRAY(SELECT id FROM orders ORDER BY id) AS ids").contains(W_ORDERS));
    assert!(ok("SELECT unnest(ARRAY[amount, amount * 2]) FROM orders").contains(W_ORDERS));
    // The negative twins: what a function reads is still the caller's rows only, a column
    // the caller may not see stays refused inside it, and a function outside the list (or
    // qualified) is refused whatever its arguments.
    assert!(
        ok("SELECT * FROM customers c, unnest(ARRAY(SELECT o.amount FROM orders o)) AS a")
            .contains(W_ORDERS)
    );
    for sql in [
        "SELECT * FROM generate_series(1, 3) AS g, LATERAL pg_ls_dir('.')",
        "SELECT * FROM public.unnest(ARRAY[1])",
        "SELECT * FROM json_to_record('{}') AS x(a int)",
        "SELECT * FROM unnest(ARRAY(SELECT id FROM archive.orders)) AS a",
        "SELECT * FROM generate_series(1, 3) AS g(v) WHERE v IN (SELECT id FROM pg_catalog.pg_class)",
    ] {
        err(sql);
    }
}

/// `TABLESAMPLE BERNOULLI (p)` samples the caller's rows: the clause moves inside the wrapper,
/// under the tenant predicate. Sampling that depends on the shared table's physical layout
/// (`SYSTEM` pages, `REPEATABLE` seeds) is refused, as is a sample of anything but a table.
#[test]
fn bernoulli_samples_move_inside_the_wrapper_and_other_samples_are_refused() {
    assert_eq!(
        ok("SELECT count(*) FROM orders o TABLESAMPLE BERNOULLI (10)"),
        format!(
            "SELECT count(*) FROM {} AS \"o\"",
            W_ORDERS.replace(
                "FROM \"public\".\"orders\" WHERE",
                "FROM \"public\".\"orders\" TABLESAMPLE BERNOULLI (10) WHERE"
            )
        )
    );
    assert!(
        ok("SELECT * FROM countries TABLESAMPLE BERNOULLI (50.5)")
            .contains(r#"FROM "public"."countries" TABLESAMPLE BERNOULLI (50.5))"#)
    );
    for sql in [
        "SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
        "SELECT * FROM orders TABLESAMPLE BERNOULLI (10) REPEATABLE (42)",
        "SELECT * FROM orders TABLESAMPLE BERNOULLI ((SELECT 10))",
        "WITH o AS (SELECT * FROM orders) SELECT * FROM o TABLESAMPLE BERNOULLI (10)",
        "SELECT * FROM (SELECT * FROM orders) AS o TABLESAMPLE BERNOULLI (10)",
    ] {
        err(sql);
    }
}

/// The world with declared column types: `orders (id int4, tenant_id text, customer_id int8,
/// amount numeric, status text)`, `customers (id int4, tenant_id text, name text)`, and
/// `notes (id int4, tenant_id text, body text)` with `body` masked for everyone.
fn typed_world() -> Catalog {
    use sluice_policy::ColumnType as T;
    let mut orders = table(
        "orders",
        Some("tenant_id"),
        &["id", "tenant_id", "customer_id", "amount", "status"],
    );
    for (c, t) in [
        ("id", T::Integer),
        ("tenant_id", T::Text),
        ("customer_id", T::Integer),
        ("amount", T::Other),
        ("status", T::Text),
    ] {
        orders.types.insert(c.into(), t);
    }
    let mut customers = table("customers", Some("tenant_id"), &["id", "tenant_id", "name"]);
    for (c, t) in [
        ("id", T::Integer),
        ("tenant_id", T::Text),
        ("name", T::Text),
    ] {
        customers.types.insert(c.into(), t);
    }
    let mut notes = table("notes", Some("tenant_id"), &["id", "tenant_id", "body"]);
    for (c, t) in [
        ("id", T::Integer),
        ("tenant_id", T::Text),
        ("body", T::Text),
    ] {
        notes.types.insert(c.into(), t);
    }
    notes.masks.insert(
        "body".into(),
        MaskRule {
            kind: MaskKind::Null,
            except: vec![],
        },
    );
    // `untyped` has no declared types.
    let untyped = table("untyped", Some("tenant_id"), &["id", "tenant_id", "ref"]);
    let mut events = table(
        "events",
        Some("tenant_id"),
        &["id", "tenant_id", "day", "at", "seen"],
    );
    for (c, t) in [
        ("day", T::Date),
        ("at", T::Timestamp),
        ("seen", T::TimestampTz),
    ] {
        events.types.insert(c.into(), t);
    }
    Catalog::new(
        Dialect::Postgres,
        ParamStyle::DollarNumbered,
        None,
        "public".into(),
        vec![orders, customers, notes, untyped, events],
    )
    .unwrap()
}

fn typed(sql: &str) -> String {
    rewrite(sql, &typed_world(), "A")
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .sql
}

/// The text of the wrapper of `table` (the first one) up to its fence.
fn inside<'s>(sql: &'s str, table: &str) -> &'s str {
    let from = sql
        .find(&format!("FROM \"public\".\"{table}\" WHERE"))
        .unwrap_or_else(|| panic!("no wrapper of {table}: {sql}"));
    let rest = &sql[from..];
    &rest[..rest.find("OFFSET 0").unwrap()]
}

#[test]
fn correlated_comparisons_of_typed_columns_are_copied_inside_the_fence() {
    // A correlated scalar sub-query, qualified on both sides: the outer column named by its
    // item, the correlation moved inside the fence.
    let sql = typed(
        "SELECT c.name, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id \
         AND o.status = 'open') FROM customers c",
    );
    assert_eq!(
        inside(&sql, "orders"),
        r#"FROM "public"."orders" WHERE ("tenant_id" = $1) AND ("customer_id" = "c"."id") AND ("status" = 'open') "#,
        "{sql}"
    );
    assert!(sql.contains(r#"OFFSET 0) AS "o") FROM"#), "{sql}");
    // Unqualified on both sides (TPC-H style), the outer item a table read without alias;
    // written either way round.
    let sql = typed(
        "SELECT name, (SELECT count(*) FROM orders WHERE customer_id = customers.id) FROM customers \
         WHERE id > (SELECT min(customer_id) FROM orders WHERE name <> status)",
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("customer_id" = "customers"."id") OFFSET 0"#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("status" <> "customers"."name") OFFSET 0"#),
        "{sql}"
    );
    // Two levels out, past a level that has no such item.
    let sql = typed(
        "SELECT c.name, (SELECT max(n.id) FROM notes n WHERE n.id = c.id \
         AND n.id < (SELECT sum(o.id) FROM orders o WHERE o.customer_id >= c.id)) FROM customers c",
    );
    assert!(
        inside(&sql, "orders").contains(r#"("customer_id" >= "c"."id")"#),
        "{sql}"
    );
    assert!(
        inside(&sql, "notes").contains(r#"("id" = "c"."id")"#),
        "{sql}"
    );
    // Not into the sub-query of an EXISTS or an IN, which PostgreSQL makes a semi-join (a
    // correlation inside the fence would force a sub-plan per outer row).
    for sql in [
        "SELECT c.name FROM customers c WHERE EXISTS \
         (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.status = 'open')",
        "SELECT c.name FROM customers c WHERE NOT EXISTS \
         (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
        "SELECT c.name FROM customers c WHERE c.name IN \
         (SELECT o.status FROM orders o WHERE o.customer_id = c.id)",
    ] {
        let out = typed(sql);
        let (_, inner) = inside(&out, "orders").split_once("WHERE").unwrap();
        assert!(!inner.contains("\"c\""), "{sql}: {out}");
        assert!(
            out.contains(r#""o"."customer_id" = "c"."id""#),
            "{sql}: {out}"
        );
    }
}

#[test]
fn comparisons_that_could_raise_or_read_the_wrong_row_stay_outside() {
    for sql in [
        // numeric's operators are not leakproof.
        "SELECT c.id, (SELECT count(*) FROM orders o WHERE o.amount = c.id) FROM customers c",
        // int4 against text: a cast, never copied.
        "SELECT c.id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.name) FROM customers c",
        // A column without a declared type, on either side.
        "SELECT c.id, (SELECT count(*) FROM untyped u WHERE u.id = c.id) FROM customers c",
        "SELECT u.id, (SELECT count(*) FROM orders o WHERE o.customer_id = u.id) FROM untyped u",
        // A masked outer column: its value is the mask's, not the column's.
        "SELECT n.id, (SELECT count(*) FROM orders o WHERE o.status = n.body) FROM notes n",
        // The outer item has the name of the table inside the wrapper: from inside, that name
        // is the raw table.
        "SELECT orders.id, (SELECT count(*) FROM orders o WHERE o.customer_id = orders.id) FROM customers AS orders",
        // A nearer level has an item of the same name (without that column): the qualified
        // copy would reach it.
        "SELECT c.id, (SELECT count(*) FROM notes c WHERE c.id > \
         (SELECT count(*) FROM orders o WHERE o.status = name)) FROM customers c",
        // Same level: a join condition, not a correlation (no LATERAL wrapper).
        "SELECT o.id FROM orders o, customers c WHERE o.customer_id = c.id",
        // An outer item whose columns are not known (a derived table, a CTE).
        "SELECT d.id, (SELECT count(*) FROM orders o WHERE o.customer_id = d.id) FROM (SELECT id FROM customers) d",
        "WITH d AS (SELECT id FROM customers) SELECT d.id, \
         (SELECT count(*) FROM orders o WHERE o.customer_id = d.id) FROM d",
        // Under OR, or inside an expression.
        "SELECT c.id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id OR o.id = 1) FROM customers c",
        "SELECT c.id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id + 1) FROM customers c",
    ] {
        let out = typed(sql);
        let table = if sql.contains("FROM untyped u WHERE") {
            "untyped"
        } else {
            "orders"
        };
        let (_, inner) = inside(&out, table).split_once("WHERE").unwrap();
        assert!(
            !inner.contains("\".\""),
            "{sql}: copied a correlated comparison: {out}"
        );
    }
    // The same-level join: `c.id` stays a join condition.
    let out = typed("SELECT o.id FROM orders o, customers c WHERE o.customer_id = c.id");
    assert!(
        out.ends_with(r#"WHERE "o"."customer_id" = "c"."id""#),
        "{out}"
    );
}

#[test]
fn a_closed_in_sub_query_is_copied_inside_the_fence() {
    // TPC-H q20's shape: `ps_partkey IN (SELECT p_partkey FROM part WHERE …)`.
    let sql = typed(
        "SELECT c.name FROM customers c WHERE c.id IN \
         (SELECT customer_id FROM orders WHERE status = 'open' AND upper(status) <> 'X')",
    );
    let w_orders = r#"(SELECT "id", "tenant_id", "customer_id", "amount", "status" FROM "public"."orders" WHERE ("tenant_id" = $1) AND ("status" = 'open') OFFSET 0) AS "orders""#;
    assert!(
        sql.contains(&format!(
            r#"FROM "public"."customers" WHERE ("tenant_id" = $1) AND ("id" IN (SELECT "orders"."customer_id" FROM {w_orders} WHERE upper("orders"."status") <> 'X')) OFFSET 0"#
        )),
        "{sql}"
    );
    // Moved (the customers wrapper is never null-extended): nothing stays outside.
    assert!(sql.ends_with(r#"OFFSET 0) AS "c""#), "{sql}");
    // Nested: the inner IN moves into the orders wrapper, and what is left is closed too.
    let sql = typed(
        "SELECT c.name FROM customers c WHERE c.id IN \
         (SELECT customer_id FROM orders WHERE id IN (SELECT id FROM notes))",
    );
    assert!(
        sql.contains(r#"WHERE ("tenant_id" = $1) AND ("id" IN (SELECT "orders"."customer_id" FROM (SELECT "id", "tenant_id", "customer_id", "amount", "status" FROM "public"."orders" WHERE ("tenant_id" = $1) AND ("id" IN (SELECT "notes"."id" FROM "#),
        "{sql}"
    );
    for sql in [
        // Correlated: it reads the row being filtered.
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE status = c.name)",
        // A join, a GROUP BY, a LIMIT, a sub-query, an expression selected.
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT o.customer_id FROM orders o JOIN notes n ON n.id = o.id)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders GROUP BY customer_id)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders LIMIT 3)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id + 1 FROM orders)",
        // Types: numeric, text against int, an undeclared type.
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT amount FROM orders)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT status FROM orders)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT id FROM untyped)",
        // A masked column selected.
        "SELECT c.name FROM customers c WHERE c.name IN (SELECT body FROM notes)",
        // NOT IN, and under OR.
        "SELECT c.name FROM customers c WHERE c.id NOT IN (SELECT customer_id FROM orders)",
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders) OR c.id = 1",
    ] {
        let out = typed(sql);
        let (_, inner) = inside(&out, "customers").split_once("WHERE").unwrap();
        assert!(!inner.contains("SELECT"), "{sql}: copied: {out}");
    }
    // A caller parameter in it (its type would be fixed where PostgreSQL first meets it).
    let groups: Vec<String> = vec![];
    let out = sluice_policy::rewrite_with_params(
        "SELECT c.name FROM customers c WHERE c.id IN (SELECT customer_id FROM orders WHERE status = $1)",
        &typed_world(),
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit: None,
            attributes: &sluice_policy::NO_ATTRIBUTES,
        },
        1,
    )
    .unwrap();
    let (_, inner) = inside(&out.sql, "customers").split_once("WHERE").unwrap();
    assert!(!inner.contains("SELECT"), "copied: {}", out.sql);
}

#[test]
fn relying_on_row_security_drops_the_fence_and_copies_nothing() {
    let catalog = typed_world().relying_on_row_security();
    let out = rewrite(
        "SELECT c.name, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) \
         FROM customers c WHERE c.id = 5",
        &catalog,
        "A",
    )
    .unwrap();
    assert_eq!(
        out.sql,
        r#"SELECT "c"."name", (SELECT count(*) FROM (SELECT "id", "tenant_id", "customer_id", "amount", "status" FROM "public"."orders" WHERE "tenant_id" = $1) AS "o" WHERE "o"."customer_id" = "c"."id") FROM (SELECT "id", "tenant_id", "name" FROM "public"."customers" WHERE "tenant_id" = $1) AS "c" WHERE "c"."id" = 5"#
    );
}

#[test]
fn typed_date_and_time_literals_move_next_to_columns_of_their_type() {
    let sql = typed(
        "SELECT id FROM events WHERE day >= DATE '1994-01-01' AND at < TIMESTAMP '2024-01-01 08:00:00' \
         AND seen > TIMESTAMP WITH TIME ZONE '2024-01-01 08:00:00+00' \
         AND day BETWEEN DATE '1990-01-01' AND DATE '2000-01-01'",
    );
    assert_eq!(
        inside(&sql, "events"),
        r#"FROM "public"."events" WHERE ("tenant_id" = $1) AND ("day" >= (DATE '1994-01-01')) AND ("at" < (TIMESTAMP '2024-01-01 08:00:00')) AND ("seen" > (TIMESTAMP WITH TIME ZONE '2024-01-01 08:00:00+00')) AND ("day" BETWEEN (DATE '1990-01-01') AND (DATE '2000-01-01')) "#,
        "{sql}"
    );
    // Another type's literal (a conversion), an untyped column, an expression: stay outside.
    for sql in [
        "SELECT id FROM events WHERE day < TIMESTAMP '2024-01-01 08:00:00'",
        "SELECT id FROM events WHERE at >= DATE '1994-01-01'",
        "SELECT id FROM events WHERE id >= DATE '1994-01-01'",
        "SELECT id FROM events WHERE day < DATE '1994-01-01' + INTERVAL '1' YEAR",
    ] {
        let out = typed(sql);
        assert!(
            out.contains(r#"FROM "public"."events" WHERE "tenant_id" = $1 OFFSET 0"#),
            "{sql}: {out}"
        );
    }
}
