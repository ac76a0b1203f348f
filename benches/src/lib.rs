//! Shared fixtures of the benchmarks: the 22 TPC-H queries (PostgreSQL dialect, from
//! `../shared/tpch/queries`) and a catalog declaring the TPC-H schema for the policy.

use sluice_policy::{Catalog, Dialect, TableName, TableRule};

/// The 22 TPC-H queries: (name, SQL).
pub const TPCH: [(&str, &str); 22] = [
    ("q01", include_str!("../../../shared/tpch/queries/q01.sql")),
    ("q02", include_str!("../../../shared/tpch/queries/q02.sql")),
    ("q03", include_str!("../../../shared/tpch/queries/q03.sql")),
    ("q04", include_str!("../../../shared/tpch/queries/q04.sql")),
    ("q05", include_str!("../../../shared/tpch/queries/q05.sql")),
    ("q06", include_str!("../../../shared/tpch/queries/q06.sql")),
    ("q07", include_str!("../../../shared/tpch/queries/q07.sql")),
    ("q08", include_str!("../../../shared/tpch/queries/q08.sql")),
    ("q09", include_str!("../../../shared/tpch/queries/q09.sql")),
    ("q10", include_str!("../../../shared/tpch/queries/q10.sql")),
    ("q11", include_str!("../../../shared/tpch/queries/q11.sql")),
    ("q12", include_str!("../../../shared/tpch/queries/q12.sql")),
    ("q13", include_str!("../../../shared/tpch/queries/q13.sql")),
    ("q14", include_str!("../../../shared/tpch/queries/q14.sql")),
    ("q15", include_str!("../../../shared/tpch/queries/q15.sql")),
    ("q16", include_str!("../../../shared/tpch/queries/q16.sql")),
    ("q17", include_str!("../../../shared/tpch/queries/q17.sql")),
    ("q18", include_str!("../../../shared/tpch/queries/q18.sql")),
    ("q19", include_str!("../../../shared/tpch/queries/q19.sql")),
    ("q20", include_str!("../../../shared/tpch/queries/q20.sql")),
    ("q21", include_str!("../../../shared/tpch/queries/q21.sql")),
    ("q22", include_str!("../../../shared/tpch/queries/q22.sql")),
];

/// The TPC-H tables and their columns; the first four are protected by a `tenant_id` column
/// added for the benchmark (the SQL is never executed).
const TABLES: &[(&str, bool, &[&str])] = &[
    (
        "lineitem",
        true,
        &[
            "l_orderkey",
            "l_partkey",
            "l_suppkey",
            "l_linenumber",
            "l_quantity",
            "l_extendedprice",
            "l_discount",
            "l_tax",
            "l_returnflag",
            "l_linestatus",
            "l_shipdate",
            "l_commitdate",
            "l_receiptdate",
            "l_shipinstruct",
            "l_shipmode",
            "l_comment",
        ],
    ),
    (
        "orders",
        true,
        &[
            "o_orderkey",
            "o_custkey",
            "o_orderstatus",
            "o_totalprice",
            "o_orderdate",
            "o_orderpriority",
            "o_clerk",
            "o_shippriority",
            "o_comment",
        ],
    ),
    (
        "customer",
        true,
        &[
            "c_custkey",
            "c_name",
            "c_address",
            "c_nationkey",
            "c_phone",
            "c_acctbal",
            "c_mktsegment",
            "c_comment",
        ],
    ),
    (
        "partsupp",
        true,
        &[
            "ps_partkey",
            "ps_suppkey",
            "ps_availqty",
            "ps_supplycost",
            "ps_comment",
        ],
    ),
    (
        "part",
        false,
        &[
            "p_partkey",
            "p_name",
            "p_mfgr",
            "p_brand",
            "p_type",
            "p_size",
            "p_container",
            "p_retailprice",
            "p_comment",
        ],
    ),
    (
        "supplier",
        false,
        &[
            "s_suppkey",
            "s_name",
            "s_address",
            "s_nationkey",
            "s_phone",
            "s_acctbal",
            "s_comment",
        ],
    ),
    (
        "nation",
        false,
        &["n_nationkey", "n_name", "n_regionkey", "n_comment"],
    ),
    ("region", false, &["r_regionkey", "r_name", "r_comment"]),
];

/// The TPC-H catalog for PostgreSQL.
pub fn tpch_catalog() -> Catalog {
    let rules = TABLES
        .iter()
        .map(|(t, protected, cols)| {
            let name = TableName {
                catalog: None,
                schema: "public".into(),
                table: t.to_string(),
            };
            let mut cols: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
            if *protected {
                cols.push("tenant_id".into());
                TableRule::protected(name, "tenant_id", cols)
            } else {
                TableRule::public(name, cols)
            }
        })
        .collect();
    match Catalog::new(
        Dialect::Postgres,
        Dialect::Postgres.default_param_style(),
        None,
        "public".into(),
        rules,
    ) {
        Ok(c) => c,
        Err(e) => unreachable!("the TPC-H catalog is valid: {e}"),
    }
}
