//! The rewrite cache: a hit is exactly the uncached rewrite (with the caller's own tenant),
//! parses nothing, is never shared across different grants, row limits or parameter counts,
//! and the cache stays within its bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use sluice_policy::{Caller, Catalog, Dialect, ParamStyle, PolicyError, RewriteCache};

mod support;
use support::table;

fn world(style: ParamStyle) -> Catalog {
    let mut orders = table(
        "orders",
        Some("tenant_id"),
        &["id", "tenant_id", "customer_id", "amount", "status"],
    );
    // `amount` only for finance.
    orders.column_groups = BTreeMap::from([("amount".to_string(), vec!["finance".to_string()])]);
    Catalog::new(
        Dialect::Postgres,
        style,
        None,
        "public".into(),
        vec![
            table("countries", None, &["code", "name"]),
            orders,
            table("customers", Some("tenant_id"), &["id", "tenant_id", "name"]),
        ],
    )
    .unwrap()
}

fn caller<'a>(tenant: &'a str, groups: &'a [String], row_limit: Option<u64>) -> Caller<'a> {
    Caller {
        tenant,
        groups,
        row_limit,
        attributes: &sluice_policy::NO_ATTRIBUTES,
    }
}

const QUERIES: &[&str] = &[
    "SELECT id, status FROM orders WHERE id = $1",
    "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT count(*) FROM orders",
    "SELECT name FROM countries",
    "WITH x AS (SELECT id FROM orders) SELECT * FROM x",
];

#[test]
fn a_hit_is_the_uncached_rewrite_for_the_callers_own_tenant_and_parses_nothing() {
    let catalog = world(ParamStyle::DollarNumbered);
    let cache = RewriteCache::new(1000, 1 << 20);
    let analyst = vec!["analyst".to_string()];
    for sql in QUERIES {
        let params = usize::from(sql.contains("$1"));
        for tenant in ["A", "B", "tenant with 'quote"] {
            let c = caller(tenant, &analyst, None);
            let uncached = sluice_policy::rewrite_with_params(sql, &catalog, &c, params).unwrap();
            let before = sluice_policy::parses_on_this_thread();
            let cached = cache.rewrite("a", sql, &catalog, &c, params).unwrap();
            let parsed = sluice_policy::parses_on_this_thread() - before;
            assert_eq!(cached, uncached, "{sql} for {tenant}");
            if tenant != "A" {
                assert_eq!(parsed, 0, "a hit parsed: {sql}");
            }
            assert!(
                cached
                    .params
                    .iter()
                    .all(|p| p.value == sluice_policy::BoundValue::Tenant(tenant.to_string())),
                "{sql}: {:?}",
                cached.params
            );
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.misses, QUERIES.len() as u64);
    assert_eq!(stats.hits, 2 * QUERIES.len() as u64);
}

#[test]
fn never_shared_across_grants_row_limits_parameters_or_connections() {
    let catalog = world(ParamStyle::DollarNumbered);
    let cache = RewriteCache::new(1000, 1 << 20);
    let analyst = vec!["analyst".to_string()];
    let finance = vec!["analyst".to_string(), "finance".to_string()];
    let sql = "SELECT * FROM orders";
    // Finance sees `amount`; the analyst must not get finance's cached rewrite, nor the reverse.
    let f = cache
        .rewrite("a", sql, &catalog, &caller("A", &finance, None), 0)
        .unwrap();
    let a = cache
        .rewrite("a", sql, &catalog, &caller("A", &analyst, None), 0)
        .unwrap();
    assert!(f.sql.contains("\"amount\""), "{}", f.sql);
    assert!(!a.sql.contains("\"amount\""), "{}", a.sql);
    assert_eq!(
        a,
        sluice_policy::rewrite(sql, &catalog, &caller("A", &analyst, None)).unwrap()
    );
    // A column the analyst may not read stays refused after finance's query was cached.
    let refused = cache.rewrite(
        "a",
        "SELECT amount FROM orders",
        &catalog,
        &caller("A", &analyst, None),
        0,
    );
    assert!(matches!(refused, Err(PolicyError::ColumnNotGranted { .. })));
    cache
        .rewrite(
            "a",
            "SELECT amount FROM orders",
            &catalog,
            &caller("A", &finance, None),
            0,
        )
        .unwrap();
    let refused = cache.rewrite(
        "a",
        "SELECT amount FROM orders",
        &catalog,
        &caller("A", &analyst, None),
        0,
    );
    assert!(matches!(refused, Err(PolicyError::ColumnNotGranted { .. })));
    // A row limit is part of the rewrite.
    let limited = cache
        .rewrite("a", sql, &catalog, &caller("A", &analyst, Some(10)), 0)
        .unwrap();
    assert!(limited.sql.ends_with("LIMIT 10"), "{}", limited.sql);
    let unlimited = cache
        .rewrite("a", sql, &catalog, &caller("A", &analyst, None), 0)
        .unwrap();
    assert!(!unlimited.sql.contains("LIMIT"), "{}", unlimited.sql);
    // So is the number of caller parameters: the tenant's placeholder follows them.
    let sql = "SELECT id FROM orders WHERE id = $1";
    cache
        .rewrite("a", sql, &catalog, &caller("A", &analyst, None), 1)
        .unwrap();
    assert!(
        cache
            .rewrite("a", sql, &catalog, &caller("A", &analyst, None), 0)
            .is_err()
    );
    // And the connection: another catalog, another entry.
    let other = Catalog::new(
        Dialect::Postgres,
        ParamStyle::DollarNumbered,
        None,
        "public".into(),
        vec![table("orders", None, &["id"])],
    )
    .unwrap();
    let o = cache
        .rewrite("b", sql, &other, &caller("A", &analyst, None), 1)
        .unwrap();
    assert!(
        o.params.is_empty() && !o.sql.contains("tenant_id"),
        "{}",
        o.sql
    );
}

#[test]
fn an_inline_tenant_is_part_of_the_key() {
    let catalog = world(ParamStyle::InlineLiteral);
    let cache = RewriteCache::new(1000, 1 << 20);
    let analyst = vec!["analyst".to_string()];
    let a = cache
        .rewrite(
            "a",
            "SELECT id FROM orders",
            &catalog,
            &caller("A", &analyst, None),
            0,
        )
        .unwrap();
    let b = cache
        .rewrite(
            "a",
            "SELECT id FROM orders",
            &catalog,
            &caller("B", &analyst, None),
            0,
        )
        .unwrap();
    assert!(a.sql.contains("'A'") && !a.sql.contains("'B'"), "{}", a.sql);
    assert!(b.sql.contains("'B'") && !b.sql.contains("'A'"), "{}", b.sql);
    assert_eq!(cache.stats().misses, 2);
    // The tenant's form is checked on every call, hits included.
    assert!(matches!(
        cache.rewrite(
            "a",
            "SELECT id FROM orders",
            &catalog,
            &caller("A'--", &analyst, None),
            0
        ),
        Err(PolicyError::InvalidTenant)
    ));
}

#[test]
fn the_cache_stays_within_its_entries_and_bytes() {
    let catalog = world(ParamStyle::DollarNumbered);
    let analyst = vec!["analyst".to_string()];
    let c = caller("A", &analyst, None);
    let small = RewriteCache::new(4, 1 << 20);
    for i in 0..200 {
        let sql = format!("SELECT id FROM orders WHERE id = {i}");
        small.rewrite("a", &sql, &catalog, &c, 0).unwrap();
        assert!(small.stats().entries <= 4, "{:?}", small.stats());
    }
    let bytes = 64 * 1024;
    let tight = RewriteCache::new(100_000, bytes);
    for i in 0..2_000 {
        let sql = format!("SELECT id, status FROM orders WHERE id = {i} AND status <> 'x{i}'");
        tight.rewrite("a", &sql, &catalog, &c, 0).unwrap();
        let s = tight.stats();
        assert!(s.bytes <= bytes, "{s:?}");
    }
    assert!(tight.stats().entries > 10, "{:?}", tight.stats());
    // The most recently used entries stay.
    let last = "SELECT id, status FROM orders WHERE id = 1999 AND status <> 'x1999'";
    let before = tight.stats().hits;
    tight.rewrite("a", last, &catalog, &c, 0).unwrap();
    assert_eq!(tight.stats().hits, before + 1);
    // Turned off: every call is a miss, nothing is kept.
    let off = RewriteCache::new(0, 0);
    off.rewrite("a", last, &catalog, &c, 0).unwrap();
    assert_eq!(off.stats().entries, 0);
}
