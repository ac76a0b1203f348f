//! Caller parameters: positional values a caller sends beside the SQL, bound as parameters all
//! the way to the warehouse, never spliced into SQL text.

use sluice_connectors::Param;
use sluice_policy::{Caller, Catalog, RewriteCache, RewrittenQuery};

use crate::error::Error;

/// Most parameters one query may carry.
pub const MAX_PARAMS: usize = 1_000;
/// Longest text parameter (bytes).
pub const MAX_PARAM_BYTES: usize = 64 * 1024;

/// One caller parameter: a JSON scalar.
pub use sluice_connectors::ParamValue;

/// A JSON value as a parameter: scalars only.
fn one(i: usize, v: &serde_json::Value) -> Result<ParamValue, Error> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => ParamValue::Null,
        J::Bool(b) => ParamValue::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ParamValue::Int(i),
            (None, Some(f)) if f.is_finite() && n.as_u64().is_none() => ParamValue::Float(f),
            _ => {
                return Err(Error::request(
                    "invalid_parameter",
                    format!("params[{i}]: the number does not fit a 64-bit integer"),
                ));
            }
        },
        J::String(s) if s.len() > MAX_PARAM_BYTES => {
            return Err(Error::request(
                "invalid_parameter",
                format!("params[{i}] is longer than {MAX_PARAM_BYTES} bytes"),
            ));
        }
        J::String(s) => ParamValue::Text(s.clone()),
        J::Array(_) | J::Object(_) => {
            return Err(Error::request(
                "invalid_parameter",
                format!("params[{i}] must be a string, number, boolean or null"),
            ));
        }
    })
}

/// A caller's parameters from JSON.
pub fn from_json(values: &[serde_json::Value]) -> Result<Vec<ParamValue>, Error> {
    if values.len() > MAX_PARAMS {
        return Err(Error::request(
            "too_many_parameters",
            format!("a query may carry at most {MAX_PARAMS} parameters"),
        ));
    }
    values.iter().enumerate().map(|(i, v)| one(i, v)).collect()
}

/// A rewritten query and every parameter it binds, as the connector takes them.
pub(crate) struct Bound {
    pub(crate) rewritten: RewrittenQuery,
    /// The caller's parameters (`$1` … or `p1` … by name), then the tenant's.
    pub(crate) params: Vec<Param>,
}

/// The policy's rewrite (from the snapshot's cache when the text was seen before), with the caller's parameters bound: positional ones first, the
/// tenant's after them (numbered styles), or each under its name (named styles).
pub(crate) fn rewrite(
    cache: &RewriteCache,
    connection: &str,
    sql: &str,
    catalog: &Catalog,
    caller: &Caller<'_>,
    params: &[ParamValue],
) -> Result<Bound, Error> {
    let rewritten = cache.rewrite(connection, sql, catalog, caller, params.len())?;
    let style = catalog.param_style();
    let mut bound: Vec<Param> = params
        .iter()
        .enumerate()
        .map(|(i, v)| Param {
            name: sluice_policy::caller_param_name(style, i + 1),
            value: v.clone(),
        })
        .collect();
    bound.extend(crate::engine::connection::bind(&rewritten.params));
    Ok(Bound {
        rewritten,
        params: bound,
    })
}

/// A parameter as the audit log and explain show it: JSON text (`"text"`, `5`, `null`).
pub(crate) fn shown(v: &ParamValue) -> String {
    match v {
        ParamValue::Null => "null".into(),
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(f) => format!("{f:?}"),
        ParamValue::Text(s) | ParamValue::Tenant(s) | ParamValue::Attribute(s) => {
            serde_json::Value::String(s.clone()).to_string()
        }
        ParamValue::TextList(l) => serde_json::json!(l).to_string(),
        ParamValue::IntList(l) => serde_json::json!(l).to_string(),
    }
}

/// Parameters in a federated query are refused: the workspace plans the query itself.
pub(crate) fn not_in_federated() -> Error {
    Error::request(
        "parameters_not_supported",
        "parameters are not supported in federated queries (tables of several connections)",
    )
}
