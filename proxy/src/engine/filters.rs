//! The row filters and policy parameters of a rewrite as the audit log records them (the
//! single-connection engine and every federated sub-query alike).

use sluice_audit::RowFilterUse;
use sluice_policy::RewrittenQuery;

/// The policy's parameters as the audit log shows them: the tenant as it is, attribute values
/// as JSON text, or `?` where literals are redacted (an attribute can be as telling as a
/// literal; the tenant is in the record anyway).
pub(crate) fn policy_params(r: &RewrittenQuery, redact: bool) -> Vec<String> {
    r.params
        .iter()
        .map(|p| match (&p.source, redact) {
            (sluice_policy::ParamSource::Attribute { .. }, true) => "?".to_string(),
            _ => p.value.shown(),
        })
        .collect()
}

/// The row filters of a rewrite, each with its attribute's value (`"?"` when redacted).
pub(crate) fn row_filters(r: &RewrittenQuery, redact: bool) -> Vec<RowFilterUse> {
    r.filters
        .iter()
        .map(|f| RowFilterUse {
            table: f.table.to_string(),
            filter: f.filter.clone(),
            attribute: f.attribute.clone(),
            value: f.value.as_ref().map(|v| match redact {
                true => serde_json::Value::String("?".into()),
                false => v.to_json(),
            }),
        })
        .collect()
}
