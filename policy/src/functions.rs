//! Function allow-lists per dialect. A function not listed here is refused (default deny):
//! no `dblink`, `pg_read_file`, `query_to_xml`, `set_config`, `pg_sleep`, `SYSTEM$...`,
//! `EXTERNAL_QUERY`, `read_csv`, nor any schema-qualified function.

use crate::dialect::Dialect;

/// Aggregate, window and scalar functions safe in every supported dialect: pure computations
/// over their arguments, with no access to other relations, files, the network or session state.
const COMMON: &[&str] = &[
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bool_and",
    "bool_or",
    "every",
    "corr",
    "covar_pop",
    "covar_samp",
    "median",
    "percentile_cont",
    "percentile_disc",
    "approx_distinct",
    "array_agg",
    "string_agg",
    "listagg",
    "any_value",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // conditional
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "ifnull",
    "nvl",
    // numeric
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "mod",
    "power",
    "pow",
    "sqrt",
    "exp",
    "ln",
    "log",
    "log10",
    "log2",
    "sign",
    "div",
    "random",
    // strings
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "trim",
    "ltrim",
    "rtrim",
    "btrim",
    "substr",
    "substring",
    "left",
    "right",
    "concat",
    "concat_ws",
    "replace",
    "reverse",
    "lpad",
    "rpad",
    "repeat",
    "split_part",
    "strpos",
    "starts_with",
    "ends_with",
    "initcap",
    "md5",
    "sha256",
    "regexp_replace",
    "regexp_like",
    "translate",
    "position",
    "to_hex",
    // date and time
    "now",
    "current_date",
    "current_timestamp",
    "current_time",
    "localtime",
    "localtimestamp",
    "date_trunc",
    "date_part",
    "extract",
    "to_char",
    "to_date",
    "to_timestamp",
    "make_date",
    "date_add",
    "date_diff",
    "datediff",
    "dateadd",
    // json
    "json_extract_path_text",
    "jsonb_extract_path_text",
    // casts expressed as functions
    "cast",
    "try_cast",
    // GROUPING(...) of GROUPING SETS / ROLLUP / CUBE
    "grouping",
];

/// PostgreSQL only. `date(x)` is the cast Looker writes; `array(SELECT ...)` an ARRAY
/// sub-query (its query is rewritten like any other); the set-returning functions expand only
/// their arguments (columns already filtered, constants), in the select list or in FROM.
const POSTGRES: &[&str] = &[
    "date",
    "array",
    "string_to_array",
    "array_to_string",
    "array_length",
    "cardinality",
    "unnest",
    "generate_series",
    "regexp_split_to_table",
    "regexp_split_to_array",
];

/// The set-returning functions a FROM clause may call (each also in its dialect's list above).
pub(crate) const TABLE_FUNCTIONS: &[&str] = &["unnest", "generate_series", "regexp_split_to_table"];

/// Extra functions of specific dialects.
const DATAFUSION: &[&str] = &[
    "date_bin",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "arrow_typeof",
];
const SNOWFLAKE: &[&str] = &[
    "iff",
    "zeroifnull",
    "nullifzero",
    "to_varchar",
    "date_from_parts",
];
const BIGQUERY: &[&str] = &[
    "array",
    "safe_divide",
    "format_date",
    "timestamp_trunc",
    "countif",
    "if",
];
const DATABRICKS: &[&str] = &["if", "nvl2", "date_format", "count_if"];

/// Whether `name` (already lower-cased) may be called in `dialect`.
pub(crate) fn is_allowed(dialect: Dialect, name: &str) -> bool {
    if COMMON.contains(&name) {
        return true;
    }
    match dialect {
        Dialect::Postgres => POSTGRES.contains(&name),
        Dialect::DataFusion => DATAFUSION.contains(&name),
        Dialect::Snowflake => SNOWFLAKE.contains(&name),
        Dialect::BigQuery => BIGQUERY.contains(&name),
        Dialect::Databricks => DATABRICKS.contains(&name),
    }
}

/// The name a warehouse resolves the function name `ident` to, if it is allowed: unquoted names
/// fold as the warehouse folds them (ASCII only); a quoted name is taken exactly as written in
/// PostgreSQL and DataFusion (`"COUNT"` is not `count` there), refused in Snowflake (where a
/// quoted lower-case name is not the built-in), and case-insensitive in BigQuery and
/// Databricks. The result is the lower-case name, printed unquoted.
pub(crate) fn resolve(dialect: Dialect, ident: &sqlparser::ast::Ident) -> Option<String> {
    let name = match (dialect, ident.quote_style) {
        (_, None) | (Dialect::BigQuery | Dialect::Databricks, Some(_)) => {
            ident.value.to_ascii_lowercase()
        }
        (Dialect::Postgres | Dialect::DataFusion, Some(_)) => ident.value.clone(),
        (Dialect::Snowflake, Some(_)) => return None,
    };
    is_allowed(dialect, &name).then_some(name)
}
