//! Parse + rewrite + verify on arbitrary input, in every dialect, over the security world's
//! schema with masks and grants. Must never panic, overflow the stack or hang; anything it
//! accepts has passed the verifier. Run: see the README ("Fuzzing").
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_policy::{Caller, Catalog, Dialect, MaskKind, MaskRule, TableName, TableRule};

fn catalog(d: Dialect) -> Catalog {
    let t = |name: &str| TableName { catalog: None, schema: "public".into(), table: name.into() };
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut customers = TableRule::protected(
        t("customers"),
        "tenant_id",
        cols(&["id", "tenant_id", "name", "country", "credit_limit", "email", "ssn"]),
    );
    customers.column_groups.insert("ssn".into(), vec!["pii".into()]);
    customers.masks.insert("email".into(), MaskRule { kind: MaskKind::Hash, except: vec![] });
    let mut orders = TableRule::protected(
        t("orders"),
        "tenant_id",
        cols(&["id", "tenant_id", "customer_id", "amount", "status", "note", "card_number"]),
    );
    orders.masks.insert("card_number".into(), MaskRule { kind: MaskKind::Last4, except: vec![] });
    // PostgreSQL: declared types, so that correlated comparisons, closed `IN` sub-queries and
    // typed literals are moved inside the fence (and verified) as well.
    if d == Dialect::Postgres {
        use sluice_policy::ColumnType as T;
        for (c, ty) in [("id", T::Integer), ("name", T::Text), ("country", T::Text), ("email", T::Text)] {
            customers.types.insert(c.into(), ty);
        }
        for (c, ty) in [("id", T::Integer), ("customer_id", T::Integer), ("amount", T::Other), ("status", T::Text)] {
            orders.types.insert(c.into(), ty);
        }
    }
    let rules = vec![
        TableRule::public(t("countries"), cols(&["code", "name"])),
        customers,
        orders,
        TableRule::protected(t("invoices"), "tenant_id", cols(&["id", "tenant_id", "order_id", "total"])),
    ];
    match Catalog::new(d, d.default_param_style(), None, "public".into(), rules) {
        Ok(c) => c,
        Err(e) => panic!("fuzz catalog: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let groups = vec!["analyst".to_string()];
    for (i, d) in [Dialect::Postgres, Dialect::DataFusion, Dialect::Snowflake, Dialect::BigQuery, Dialect::Databricks]
        .into_iter()
        .enumerate()
    {
        let caller = Caller { tenant: "A", groups: &groups, row_limit: (i % 2 == 0).then_some(1000), attributes: &sluice_policy::NO_ATTRIBUTES };
        let _ = sluice_policy::rewrite(sql, &catalog(d), &caller);
    }
});
