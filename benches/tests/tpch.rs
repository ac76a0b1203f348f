//! Every TPC-H query passes the policy (the allow-lists cover real analytical SQL), and every
//! protected table in it is wrapped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_benches::{TPCH, tpch_catalog};
use sluice_policy::Caller;

#[test]
fn all_22_tpch_queries_are_accepted_and_filtered() {
    let catalog = tpch_catalog();
    let groups = vec!["analyst".to_string()];
    let caller = Caller {
        tenant: "t1",
        groups: &groups,
        row_limit: None,
        attributes: &sluice_policy::NO_ATTRIBUTES,
    };
    for (name, sql) in TPCH {
        let out = sluice_policy::rewrite(sql, &catalog, &caller)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let protected = ["lineitem", "orders", "customer", "partsupp"];
        for t in protected {
            let reads = out.manifest.tables.iter().any(|n| n.table == t);
            // The tenant predicate first; leakproof outer comparisons may follow it inside the
            // fence (`policy/src/pushdown.rs`).
            let sql = &out.sql;
            let wrapped = (sql
                .contains(&format!("FROM \"public\".\"{t}\" WHERE \"tenant_id\" = $1"))
                || sql.contains(&format!(
                    "FROM \"public\".\"{t}\" WHERE (\"tenant_id\" = $1)"
                )))
                && sql.contains("OFFSET 0");
            assert_eq!(reads, wrapped, "{name}: {t}\n{}", out.sql);
        }
    }
}
