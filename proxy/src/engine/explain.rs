//! The explain document: what the policy would send for a query, without running it.
//! `{"decision":"allow","sql",..,"params",..,"manifest":{..}}` or
//! `{"decision":"reject","code",..,"reason",..,"message",..}`.

use serde_json::{Value, json};
use sluice_policy::{Caller, Catalog, RewrittenQuery};

/// The document of an allowed query.
pub fn allowed(r: &RewrittenQuery) -> Value {
    json!({
        "decision": "allow",
        "sql": r.sql,
        "params": r.params.iter().map(|p| p.value.to_json()).collect::<Vec<_>>(),
        "manifest": {
            "tables": r.manifest.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "columns": r.manifest.columns,
        },
        "row_filters": r.filters.iter().map(|f| json!({
            "table": f.table.to_string(),
            "filter": f.filter,
            "attribute": f.attribute,
            "value": f.value.as_ref().map(sluice_policy::AttributeValue::to_json),
        })).collect::<Vec<_>>(),
    })
}

/// The document for `sql` against one catalog, for a caller (`sluice policy explain`).
pub fn document(catalog: &Catalog, caller: &Caller<'_>, sql: &str) -> Value {
    match sluice_policy::rewrite(sql, catalog, caller) {
        Ok(r) => allowed(&r),
        Err(e) => json!({
            "decision": "reject",
            "code": e.code(),
            "reason": e.reason(),
            "message": e.to_string(),
        }),
    }
}
