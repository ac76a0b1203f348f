//! Helpers shared by the policy's integration tests.
#![allow(dead_code)]

use sluice_policy::{TableName, TableRule};

/// `public.<name>`: protected by `tenant` when given (else public), with these columns.
pub fn table(name: &str, tenant: Option<&str>, cols: &[&str]) -> TableRule {
    let name = TableName {
        catalog: None,
        schema: "public".into(),
        table: name.into(),
    };
    let cols = cols.iter().map(|c| c.to_string()).collect();
    match tenant {
        Some(t) => TableRule::protected(name, t, cols),
        None => TableRule::public(name, cols),
    }
}
