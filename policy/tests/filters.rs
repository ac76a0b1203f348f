//! Row filters from the caller's attributes: the SQL each dialect gets, the parameters bound,
//! who is exempt, and every way a caller without the right attribute is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_policy::{
    AttributeType, AttributeValue, Attributes, BoundValue, Caller, Catalog, Dialect, ParamSource,
    PolicyError, RewriteCache, RewrittenQuery, RowFilter, TableName, TableRule,
};

fn types(name: &str) -> Option<AttributeType> {
    Some(match name {
        "region" => AttributeType::Text,
        "level" => AttributeType::Integer,
        "accounts" => AttributeType::IntegerList,
        "codes" => AttributeType::TextList,
        _ => return None,
    })
}

fn filter(text: &str, groups: Option<&[&str]>, except: &[&str]) -> RowFilter {
    let mut f = RowFilter::parse(text, &types).unwrap();
    f.groups = groups.map(|g| g.iter().map(|s| s.to_string()).collect());
    f.except = except.iter().map(|s| s.to_string()).collect();
    f
}

/// `orders (id, tenant_id, region, account_id, status, amount)`, filtered on the region for
/// everyone but managers, on the accounts for everyone, and to shipped orders for interns.
fn catalog(d: Dialect, row_security: bool) -> Catalog {
    let (cat, schema) = match d {
        Dialect::Snowflake => ("ANALYTICS", "PUBLIC"),
        Dialect::BigQuery => ("proj", "sales"),
        Dialect::Databricks => ("main", "sales"),
        Dialect::DataFusion => ("datafusion", "public"),
        Dialect::Postgres => ("db", "public"),
    };
    // Snowflake folds unquoted names to upper case: its tables are declared so.
    let up = |s: &str| match d {
        Dialect::Snowflake => s.to_uppercase(),
        _ => s.to_string(),
    };
    let name = TableName {
        catalog: (d != Dialect::Postgres).then(|| cat.to_string()),
        schema: schema.into(),
        table: up("orders"),
    };
    let mut rule = TableRule::protected(
        name,
        &up("tenant_id"),
        [
            "id",
            "tenant_id",
            "region",
            "account_id",
            "status",
            "amount",
        ]
        .iter()
        .map(|c| up(c))
        .collect(),
    );
    rule.filters = vec![
        filter(
            &format!("{} = attr.region", up("region")),
            None,
            &["managers"],
        ),
        filter(&format!("{} IN attr.accounts", up("account_id")), None, &[]),
        filter(
            &format!("{} IN ('shipped', 'paid')", up("status")),
            Some(&["interns"]),
            &[],
        ),
    ];
    let customers = TableRule::protected(
        TableName {
            catalog: None,
            schema: schema.into(),
            table: up("customers"),
        },
        &up("tenant_id"),
        vec![up("id"), up("tenant_id"), up("name")],
    );
    let c = Catalog::new(
        d,
        d.default_param_style(),
        (d != Dialect::Postgres).then(|| cat.to_string()),
        schema.into(),
        vec![rule, customers],
    )
    .unwrap();
    if row_security {
        c.relying_on_row_security()
    } else {
        c
    }
}

fn attrs(region: Option<&str>, accounts: Option<&[i64]>) -> Attributes {
    let mut a = Attributes::new();
    if let Some(r) = region {
        a.insert("region".into(), AttributeValue::Text(r.into()));
    }
    if let Some(l) = accounts {
        a.insert("accounts".into(), AttributeValue::IntegerList(l.to_vec()));
    }
    a
}

fn run_with(
    c: &Catalog,
    sql: &str,
    groups: &[&str],
    attributes: &Attributes,
    params: usize,
) -> Result<RewrittenQuery, PolicyError> {
    let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    sluice_policy::rewrite_with_params(
        sql,
        c,
        &Caller {
            tenant: "A",
            groups: &groups,
            row_limit: None,
            attributes,
        },
        params,
    )
}

fn run(c: &Catalog, sql: &str, groups: &[&str], a: &Attributes) -> RewrittenQuery {
    run_with(c, sql, groups, a, 0).unwrap()
}

fn values(r: &RewrittenQuery) -> Vec<BoundValue> {
    r.params.iter().map(|p| p.value.clone()).collect()
}

#[test]
fn postgres_binds_scalars_and_whole_lists_after_the_tenant() {
    let c = catalog(Dialect::Postgres, false);
    let r = run(
        &c,
        "SELECT id FROM orders",
        &["analysts"],
        &attrs(Some("emea"), Some(&[7, 9])),
    );
    assert_eq!(
        r.sql,
        r#"SELECT "id" FROM (SELECT "id", "tenant_id", "region", "account_id", "status", "amount" FROM "public"."orders" WHERE ("tenant_id" = $1) AND ("region" = $2) AND ("account_id" = ANY ($3)) OFFSET 0) AS "orders""#
    );
    assert_eq!(
        values(&r),
        vec![
            BoundValue::Tenant("A".into()),
            BoundValue::Text("emea".into()),
            BoundValue::IntegerList(vec![7, 9])
        ]
    );
    assert_eq!(
        r.params[1].source,
        ParamSource::Attribute {
            name: "region".into(),
            element: None
        }
    );
    let applied: Vec<&str> = r.filters.iter().map(|f| f.filter.as_str()).collect();
    assert_eq!(
        applied,
        ["region = attr.region", "account_id IN attr.accounts"]
    );
    // The caller's own parameters come first, the tenant's next, the attributes' last; a
    // table read twice binds each attribute once.
    let r = run_with(
        &c,
        "SELECT o.id FROM orders o JOIN orders p ON p.id = o.id WHERE o.amount > $1",
        &[],
        &attrs(Some("emea"), Some(&[])),
        1,
    )
    .unwrap();
    assert_eq!(
        r.sql
            .matches(r#"("region" = $3) AND ("account_id" = ANY ($4))"#)
            .count(),
        2
    );
    assert_eq!(values(&r)[2], BoundValue::IntegerList(vec![]));
    assert_eq!(r.filters.len(), 2, "{:?}", r.filters);
}

#[test]
fn groups_choose_the_filters_and_exemptions_are_only_the_credentials() {
    let c = catalog(Dialect::Postgres, false);
    let a = attrs(Some("emea"), Some(&[7]));
    // Managers see every region of their tenant (and carry no region at all).
    let r = run(
        &c,
        "SELECT id FROM orders",
        &["managers"],
        &attrs(None, Some(&[7])),
    );
    assert!(!r.sql.contains("region\" ="), "{}", r.sql);
    assert!(r.sql.contains(r#"("account_id" = ANY ($2))"#), "{}", r.sql);
    // Interns carry a fixed filter too, written as constants.
    let r = run(&c, "SELECT id FROM orders", &["interns"], &a);
    assert!(
        r.sql
            .contains(r#"AND ("status" IN ('shipped', 'paid')) OFFSET 0"#),
        "{}",
        r.sql
    );
    // A caller cannot exempt itself: the group comes from the credential, and a query that
    // names a group, a role or the exemption changes nothing.
    for sql in [
        "SELECT id FROM orders WHERE 'managers' = 'managers'",
        "SELECT id FROM orders WHERE region = region OR true",
    ] {
        let r = run(&c, sql, &["analysts"], &a);
        assert!(r.sql.contains(r#"("region" = $2)"#), "{}", r.sql);
    }
    // The other table has no filter.
    let r = run(&c, "SELECT name FROM customers", &[], &NO);
    assert_eq!(values(&r), vec![BoundValue::Tenant("A".into())]);
    assert!(r.filters.is_empty());
}

const NO: Attributes = Attributes::new();

#[test]
fn a_missing_or_mistyped_attribute_is_refused_never_all_rows() {
    let c = catalog(Dialect::Postgres, false);
    let e = run_with(
        &c,
        "SELECT id FROM orders",
        &[],
        &attrs(None, Some(&[1])),
        0,
    )
    .unwrap_err();
    assert_eq!(e.code(), "attribute_missing");
    assert!(e.to_string().contains("\"region\""), "{e}");
    let e = run_with(
        &c,
        "SELECT id FROM orders",
        &[],
        &attrs(Some("emea"), None),
        0,
    )
    .unwrap_err();
    assert_eq!(e.code(), "attribute_missing");
    let mut wrong = attrs(Some("emea"), None);
    wrong.insert("accounts".into(), AttributeValue::Text("7".into()));
    let e = run_with(&c, "SELECT id FROM orders", &[], &wrong, 0).unwrap_err();
    assert_eq!(e.code(), "attribute_invalid");
    let mut wrong = attrs(None, Some(&[1]));
    wrong.insert("region".into(), AttributeValue::Text(String::new()));
    let e = run_with(&c, "SELECT id FROM orders", &[], &wrong, 0).unwrap_err();
    assert_eq!(e.code(), "attribute_invalid");
    // Every path to the table: a sub-query, a CTE, a set operation.
    for sql in [
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM orders)",
        "WITH o AS (SELECT * FROM orders) SELECT count(*) FROM o",
        "SELECT id FROM customers UNION ALL SELECT id FROM orders",
    ] {
        let e = run_with(&c, sql, &[], &attrs(None, Some(&[1])), 0).unwrap_err();
        assert_eq!(e.code(), "attribute_missing", "{sql}");
    }
}

#[test]
fn hostile_values_travel_as_parameters_and_leave_the_sql_alone() {
    let c = catalog(Dialect::Postgres, false);
    let plain = run(
        &c,
        "SELECT id FROM orders",
        &[],
        &attrs(Some("emea"), Some(&[1])),
    );
    for hostile in [
        "x' OR '1'='1",
        "emea'; DROP TABLE orders; --",
        "a */ OR 1=1 /*",
        "$$ OR true $$",
        "\u{2019} OR 1=1",
    ] {
        let r = run(
            &c,
            "SELECT id FROM orders",
            &[],
            &attrs(Some(hostile), Some(&[1])),
        );
        assert_eq!(r.sql, plain.sql, "{hostile}");
        assert_eq!(r.params[1].value, BoundValue::Text(hostile.into()));
    }
    // A thousand accounts are one array parameter; the SQL does not grow.
    let many: Vec<i64> = (0..1000).collect();
    let r = run(
        &c,
        "SELECT id FROM orders",
        &[],
        &attrs(Some("emea"), Some(&many)),
    );
    assert_eq!(r.sql, plain.sql);
    // Over the bound, the value is not one the policy accepts.
    let too_many: Vec<i64> = (0..1001).collect();
    let e = run_with(
        &c,
        "SELECT id FROM orders",
        &[],
        &attrs(Some("emea"), Some(&too_many)),
        0,
    )
    .unwrap_err();
    assert_eq!(e.code(), "attribute_invalid");
}

#[test]
fn the_callers_query_cannot_write_an_attribute_placeholder() {
    for d in [
        Dialect::Postgres,
        Dialect::Snowflake,
        Dialect::BigQuery,
        Dialect::Databricks,
        Dialect::DataFusion,
    ] {
        let c = catalog(d, false);
        let a = attrs(Some("emea"), Some(&[1, 2]));
        for p in [
            "$2",
            "$3",
            ":2",
            ":3",
            "@sluice_a1",
            "@sluice_a2_1",
            ":sluice_a1",
        ] {
            let sql = format!("SELECT id FROM orders WHERE region = {p}");
            if let Ok(r) = run_with(&c, &sql, &[], &a, 0) {
                panic!("{d:?}: {sql} was accepted as {}", r.sql);
            }
        }
    }
}

#[test]
fn other_dialects_bind_lists_element_by_element_and_an_empty_one_matches_nothing() {
    let a = attrs(Some("emea"), Some(&[7, 9]));
    let empty = attrs(Some("emea"), Some(&[]));
    let cases = [
        (
            Dialect::Snowflake,
            r#"WHERE ("TENANT_ID" = :1) AND ("REGION" = :2) AND ("ACCOUNT_ID" IN (:3, :4)))"#,
            vec![None, None, None, None],
        ),
        (
            Dialect::BigQuery,
            "WHERE (`tenant_id` = @sluice_tenant) AND (`region` = @sluice_a1) AND (`account_id` IN (@sluice_a2_1, @sluice_a2_2)))",
            vec![
                Some("sluice_tenant"),
                Some("sluice_a1"),
                Some("sluice_a2_1"),
                Some("sluice_a2_2"),
            ],
        ),
        (
            Dialect::Databricks,
            "WHERE (`tenant_id` = :sluice_tenant) AND (`region` = :sluice_a1) AND (`account_id` IN (:sluice_a2_1, :sluice_a2_2)))",
            vec![
                Some("sluice_tenant"),
                Some("sluice_a1"),
                Some("sluice_a2_1"),
                Some("sluice_a2_2"),
            ],
        ),
        (
            Dialect::DataFusion,
            r#"WHERE ("tenant_id" = $1) AND ("region" = $2) AND ("account_id" IN ($3, $4)))"#,
            vec![None, None, None, None],
        ),
    ];
    for (d, tail, names) in cases {
        let c = catalog(d, false);
        let r = run(&c, "SELECT id FROM orders", &[], &a);
        assert!(
            r.sql.ends_with(&format!("{tail} AS {}", alias(d))),
            "{d:?}: {}",
            r.sql
        );
        let got: Vec<Option<&str>> = r.params.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(got, names, "{d:?}");
        assert_eq!(
            values(&r)[1..],
            [
                BoundValue::Text("emea".into()),
                BoundValue::Integer(7),
                BoundValue::Integer(9)
            ]
        );
        let r = run(&c, "SELECT id FROM orders", &[], &empty);
        assert!(r.sql.contains("AND FALSE)"), "{d:?}: {}", r.sql);
        assert_eq!(r.params.len(), 2, "{d:?}");
    }
}

fn alias(d: Dialect) -> &'static str {
    match d {
        Dialect::BigQuery | Dialect::Databricks => "`orders`",
        Dialect::Snowflake => "\"ORDERS\"",
        _ => "\"orders\"",
    }
}

#[test]
fn a_filtered_table_keeps_its_fence_where_row_security_stands_in_for_the_tenants() {
    let c = catalog(Dialect::Postgres, true);
    let a = attrs(Some("emea"), Some(&[1]));
    let r = run(&c, "SELECT id FROM orders WHERE id = 5", &[], &a);
    assert!(r.sql.contains(" OFFSET 0) AS \"orders\""), "{}", r.sql);
    // And with the fence, the leakproof comparison is copied in after the filters.
    assert!(
        r.sql
            .contains(r#"AND ("account_id" = ANY ($3)) AND ("id" = 5) OFFSET 0"#),
        "{}",
        r.sql
    );
    // A manager is filtered on the accounts still; a table without filters has no fence.
    let r = run(&c, "SELECT name FROM customers", &[], &a);
    assert!(!r.sql.contains("OFFSET"), "{}", r.sql);
}

#[test]
fn the_cache_rebinds_each_callers_values_and_keys_on_their_shape() {
    let cache = RewriteCache::new(100, 1 << 20);
    let groups: Vec<String> = vec![];
    for d in [Dialect::Postgres, Dialect::Snowflake] {
        let c = catalog(d, false);
        let go = |a: &Attributes| {
            cache.rewrite(
                "c",
                "SELECT id FROM orders",
                &c,
                &Caller {
                    tenant: "A",
                    groups: &groups,
                    row_limit: None,
                    attributes: a,
                },
                0,
            )
        };
        let first = go(&attrs(Some("emea"), Some(&[1, 2]))).unwrap();
        let second = go(&attrs(Some("apac"), Some(&[3, 4]))).unwrap();
        assert_eq!(first.sql, second.sql);
        assert_eq!(values(&second)[1], BoundValue::Text("apac".into()));
        assert_eq!(
            values(&second)[2..],
            match d {
                Dialect::Postgres => vec![BoundValue::IntegerList(vec![3, 4])],
                _ => vec![BoundValue::Integer(3), BoundValue::Integer(4)],
            }
        );
        // Another length is another text where elements are bound one by one.
        let third = go(&attrs(Some("apac"), Some(&[3, 4, 5]))).unwrap();
        assert_eq!(
            third.sql == first.sql,
            d == Dialect::Postgres,
            "{}",
            third.sql
        );
        assert_eq!(third, go(&attrs(Some("apac"), Some(&[3, 4, 5]))).unwrap());
        // A missing or mistyped attribute is refused on every call, not served from the cache.
        for bad in [attrs(None, Some(&[1, 2])), {
            let mut a = attrs(Some("emea"), None);
            a.insert(
                "accounts".into(),
                AttributeValue::TextList(vec!["1".into(), "2".into()]),
            );
            a
        }] {
            let e = go(&bad).unwrap_err();
            assert!(e.code().starts_with("attribute_"), "{e}");
        }
        let mut blank = attrs(Some("emea"), Some(&[1, 2]));
        blank.insert("region".into(), AttributeValue::Text("a\u{0}".into()));
        assert_eq!(go(&blank).unwrap_err().code(), "attribute_invalid");
    }
}

#[test]
fn filters_are_declared_on_protected_tables_and_their_own_columns() {
    let name = TableName {
        catalog: None,
        schema: "public".into(),
        table: "t".into(),
    };
    let mut public = TableRule::public(name.clone(), vec!["id".into(), "region".into()]);
    public.filters = vec![filter("region = attr.region", None, &[])];
    let e = Catalog::new(
        Dialect::Postgres,
        Dialect::Postgres.default_param_style(),
        None,
        "public".into(),
        vec![public],
    )
    .unwrap_err();
    assert!(e.to_string().contains("protected tables"), "{e}");
    let mut rule = TableRule::protected(name, "tenant_id", vec!["id".into(), "tenant_id".into()]);
    rule.filters = vec![filter("region = attr.region", None, &[])];
    let e = Catalog::new(
        Dialect::Postgres,
        Dialect::Postgres.default_param_style(),
        None,
        "public".into(),
        vec![rule.clone()],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not among the declared columns"),
        "{e}"
    );
    rule.filters = vec![filter("id = attr.level", None, &[])];
    let e = Catalog::new(
        Dialect::Postgres,
        sluice_policy::ParamStyle::InlineLiteral,
        None,
        "public".into(),
        vec![rule],
    )
    .unwrap_err();
    assert!(e.to_string().contains("bind parameters"), "{e}");
}
